//! Running cncopreporter after the profile work (PROTOCOL 6): the
//! `[reporter]` settings, the child process with its time limit, and its
//! output, which goes line by line into the agent's log.
//!
//! The command is one path, executed directly: never a shell, never split
//! into arguments, never looked up in `PATH`. Its result never changes the
//! agent's exit code: [`run`] logs it. An empty `command` turns the step off.

use crate::config::Ini;
use crate::error::Result;
use crate::logs;
use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Below the install root.
const DEFAULT_COMMAND: &str = "bin/cncopreporter";
const DEFAULT_TIMEOUT_SECS: u64 = 300;
/// How often a running reporter is checked on: first after a millisecond,
/// then twice as long each time, up to `POLL_MAX`. A reporter with nothing
/// to upload ends within milliseconds, and a fixed 50 ms poll made every
/// run of the agent that much longer.
const POLL_FIRST: Duration = Duration::from_millis(1);
const POLL_MAX: Duration = Duration::from_millis(50);
/// How long to wait for the last output once the reporter has ended. Output
/// can outlive it when it left a background child holding the pipe; the
/// agent does not wait for that child.
const OUTPUT_GRACE: Duration = Duration::from_secs(2);
/// Longer output lines are logged in pieces of this many bytes.
const MAX_LINE: usize = 4096;

/// `[reporter]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReporterConfig {
    pub command: PathBuf,
    pub timeout: Duration,
}

impl ReporterConfig {
    /// `None` when `command` is set but empty: the step is off (PROTOCOL 6).
    pub fn from_ini(ini: &Ini, root: &Path) -> Result<Option<ReporterConfig>> {
        let sec = ini.section("reporter");
        let timeout = sec.seconds("timeout", DEFAULT_TIMEOUT_SECS, 1..=86_400)?;
        let command = match sec.get("command") {
            Some("") => return Ok(None),
            Some(path) => root.join(path),
            None => root.join(DEFAULT_COMMAND),
        };
        Ok(Some(ReporterConfig { command, timeout }))
    }
}

/// How the reporter run ended.
#[derive(Debug)]
enum Outcome {
    /// It ran and exited (successfully or not).
    Exited(ExitStatus),
    /// It was still running at the time limit and was killed.
    TimedOut,
    /// There is no file at the command's path.
    Missing,
    /// It could not be started or waited for; the text says why.
    Failed(String),
}

impl Outcome {
    pub fn is_success(&self) -> bool {
        matches!(self, Outcome::Exited(s) if s.success())
    }

    /// One log line naming the command.
    pub fn describe(&self, cfg: &ReporterConfig) -> String {
        let cmd = cfg.command.display();
        match self {
            Outcome::Exited(s) if s.success() => format!("reporter {cmd} finished"),
            Outcome::Exited(s) => format!("reporter {cmd} {}", exit_text(s)),
            Outcome::TimedOut => format!(
                "reporter {cmd} was still running after {} s and was stopped ([reporter] timeout)",
                cfg.timeout.as_secs()
            ),
            Outcome::Missing => format!(
                "reporter {cmd} not found, reports are not sent (install it or set [reporter] command)"
            ),
            Outcome::Failed(why) => format!("reporter {cmd} {why}"),
        }
    }
}

#[cfg(unix)]
fn exit_text(s: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(sig)) => format!("was killed by signal {sig}"),
        (None, None) => format!("ended: {s}"),
    }
}

#[cfg(not(unix))]
fn exit_text(s: &ExitStatus) -> String {
    match s.code() {
        Some(code) => format!("exited with code {code}"),
        None => format!("ended: {s}"),
    }
}

/// PROTOCOL 6: the reporter step of a run (`cfg` `None`: it is off). A
/// reporter that is not installed is a line in the day's log, not on
/// stderr: busybox cron would mail it every hour.
pub fn run(cfg: Option<&ReporterConfig>, config_path: &Path, debug: bool) {
    let Some(cfg) = cfg else {
        log::debug!("cncopreporter off ([reporter] command is empty)");
        return;
    };
    let outcome = execute(cfg, config_path, debug);
    let line = outcome.describe(cfg);
    match outcome {
        Outcome::Exited(_) if outcome.is_success() => log::debug!("{line}"),
        Outcome::Missing => log::info!(target: logs::DAY_LOG, "{line}"),
        _ => log::warn!("{line}"),
    }
}

/// Runs `command -c <config_path> [-d]` with stdin closed, logging each line
/// it writes to stdout or stderr as `cncopreporter: <line>`, and kills it at
/// the time limit.
fn execute(cfg: &ReporterConfig, config_path: &Path, debug: bool) -> Outcome {
    let (program, mut command) = command(cfg, config_path, debug);
    let mut child = match spawn(&mut command) {
        Ok(child) => child,
        Err(e) if e.kind() == ErrorKind::NotFound && !program.exists() => {
            return Outcome::Missing;
        }
        Err(e) => return Outcome::Failed(spawn_error(&e)),
    };
    let (done, readers) = match log_output(&mut child) {
        Ok(readers) => readers,
        // Without a reader a chatty reporter would block on a full pipe
        // and be killed at the time limit: better not to run it at all.
        Err(e) => {
            stop(&mut child);
            return Outcome::Failed(format!("not run: cannot start an output reader ({e})"));
        }
    };
    let outcome = wait(&mut child, cfg.timeout);
    let grace_end = Instant::now() + OUTPUT_GRACE;
    for _ in 0..readers {
        let left = grace_end.saturating_duration_since(Instant::now());
        if done.recv_timeout(left).is_err() {
            log::debug!("cncopreporter: not waiting for output still open after it ended");
            break;
        }
    }
    outcome
}

/// The program to start and its command line.
fn command(cfg: &ReporterConfig, config_path: &Path, debug: bool) -> (PathBuf, Command) {
    // A bare file name would be searched in PATH; the setting means a file
    // relative to the working directory (the root already joined in).
    let program = if cfg.command.components().count() == 1 && cfg.command.is_relative() {
        Path::new(".").join(&cfg.command)
    } else {
        cfg.command.clone()
    };
    let mut command = Command::new(&program);
    command
        .arg("-c")
        .arg(config_path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if debug {
        command.arg("-d");
    }
    (program, command)
}

/// Starts a thread per output pipe of `child` that logs its lines. Returns
/// the channel each says it is done on and how many there are.
fn log_output(child: &mut Child) -> std::io::Result<(mpsc::Receiver<()>, usize)> {
    let (done_tx, done_rx) = mpsc::channel();
    let mut readers = 0;
    let outputs: [Option<Box<dyn Read + Send>>; 2] = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ];
    for (n, output) in outputs.into_iter().enumerate() {
        let Some(output) = output else { continue };
        let done = done_tx.clone();
        std::thread::Builder::new()
            .name(format!("reporter-out-{n}"))
            .spawn(move || {
                pump(output, |line| log::info!("cncopreporter: {line}"));
                let _ = done.send(());
            })?;
        readers += 1;
    }
    Ok((done_rx, readers))
}

/// Spawns, retrying briefly on "text file busy": the file may be being
/// replaced (an update), or another thread of this process may have forked
/// while holding it open for writing.
fn spawn(command: &mut Command) -> std::io::Result<Child> {
    let mut tries = 0;
    loop {
        match command.spawn() {
            Err(e) if e.kind() == ErrorKind::ExecutableFileBusy && tries < 5 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            other => return other,
        }
    }
}

fn spawn_error(e: &std::io::Error) -> String {
    match e.kind() {
        // The file exists, so execve's ENOENT is about its interpreter.
        ErrorKind::NotFound => {
            "cannot be started: its interpreter (#! line) or loader was not found".to_string()
        }
        ErrorKind::PermissionDenied => {
            "cannot be started: permission denied (is it an executable file?)".to_string()
        }
        _ => format!("cannot be started: {e}"),
    }
}

fn wait(child: &mut Child, timeout: Duration) -> Outcome {
    // A caller's huge timeout must not panic: cap it at a day.
    let deadline = Instant::now() + timeout.min(Duration::from_secs(86_400));
    let mut poll = POLL_FIRST;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Outcome::Exited(status),
            Ok(None) if Instant::now() >= deadline => {
                stop(child);
                return Outcome::TimedOut;
            }
            Ok(None) => {
                std::thread::sleep(poll);
                poll = (poll * 2).min(POLL_MAX);
            }
            Err(e) => {
                stop(child);
                return Outcome::Failed(format!("could not be waited for: {e}"));
            }
        }
    }
}

/// Kills and reaps, so no zombie is left. An error means it already ended.
fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Calls `emit` with each line of `output`: without its line end, control
/// characters shown as `?` (they would garble the log), invalid UTF-8
/// replaced, blank lines skipped, overlong lines cut into `MAX_LINE` pieces.
fn pump(output: impl Read, mut emit: impl FnMut(&str)) {
    let mut reader = BufReader::new(output);
    let mut buf = Vec::with_capacity(256);
    loop {
        buf.clear();
        match (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut buf)
        {
            Ok(0) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&buf);
                let line: String = text
                    .trim_end_matches(['\n', '\r'])
                    .chars()
                    .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
                    .collect();
                if !line.trim().is_empty() {
                    emit(&line);
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Cursor;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, body).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// Records its arguments, one a line, in `args` next to itself.
    const RECORDER: &str = "#!/bin/sh\nout=\"$(dirname \"$0\")/args\"\n: > \"$out\"\nfor a in \"$@\"; do printf '%s\\n' \"$a\" >> \"$out\"; done\necho to stdout\necho to stderr >&2\nexit 0\n";

    fn cfg(command: PathBuf, secs: u64) -> ReporterConfig {
        ReporterConfig {
            command,
            timeout: Duration::from_secs(secs),
        }
    }

    #[test]
    fn config_defaults_and_relative_paths() {
        let ini = |t: &str| Ini::parse(Path::new("/r/Config/cncop3.ini"), t).unwrap();
        let root = Path::new("/opt/cncop");
        let c = ReporterConfig::from_ini(&ini("[device]\nid = X\n"), root).unwrap();
        assert_eq!(
            c,
            Some(cfg(PathBuf::from("/opt/cncop/bin/cncopreporter"), 300))
        );
        let c = ReporterConfig::from_ini(
            &ini("[reporter]\ncommand = tools/rep\ntimeout = 10\n"),
            root,
        )
        .unwrap();
        assert_eq!(c, Some(cfg(PathBuf::from("/opt/cncop/tools/rep"), 10)));
        let c =
            ReporterConfig::from_ini(&ini("[reporter]\ncommand = /usr/bin/rep\n"), root).unwrap();
        assert_eq!(c.map(|c| c.command), Some(PathBuf::from("/usr/bin/rep")));
        let e = ReporterConfig::from_ini(&ini("[reporter]\ntimeout = soon\n"), root).unwrap_err();
        assert!(e.to_string().contains("[reporter] timeout: 'soon'"), "{e}");
        let off = ReporterConfig::from_ini(&ini("[reporter]\ncommand =\n"), root).unwrap();
        assert_eq!(off, None, "an empty command turns the step off");
        let e = ReporterConfig::from_ini(&ini("[reporter]\ncommand =\ntimeout = 0\n"), root);
        assert!(
            e.is_err(),
            "a bad timeout is an error even when the step is off"
        );
    }

    #[test]
    fn runs_with_config_and_debug_arguments() {
        let dir = tempfile::tempdir().unwrap();
        let rep = script(dir.path(), "cncopreporter", RECORDER);
        let config = dir.path().join("My Config").join("cncop3.ini");
        let args = dir.path().join("args");

        let out = execute(&cfg(rep.clone(), 30), &config, true);
        assert!(out.is_success(), "{out:?}");
        let want = format!("-c\n{}\n-d\n", config.display());
        assert_eq!(fs::read_to_string(&args).unwrap(), want);

        let out = execute(&cfg(rep, 30), &config, false);
        assert!(out.is_success(), "{out:?}");
        let want = format!("-c\n{}\n", config.display());
        assert_eq!(fs::read_to_string(&args).unwrap(), want);
    }

    #[test]
    fn exit_codes_are_reported_and_chatty_output_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        // Far more than a pipe buffer on both streams.
        let body = "#!/bin/sh\ni=0\nwhile [ $i -lt 4000 ]; do\n  echo \"line $i of output that is long enough to fill a pipe buffer quickly, xxxxxxxxxxxxxxxxxxxx\"\n  echo \"err $i of output that is long enough to fill a pipe buffer quickly, xxxxxxxxxxxxxxxxxxxx\" >&2\n  i=$((i+1))\ndone\nexit 3\n";
        let rep = script(dir.path(), "chatty", body);
        let c = cfg(rep, 60);
        let out = execute(&c, Path::new("/dev/null"), false);
        assert!(
            matches!(&out, Outcome::Exited(s) if s.code() == Some(3)),
            "{out:?}"
        );
        assert!(!out.is_success());
        assert!(
            out.describe(&c).ends_with("chatty exited with code 3"),
            "{}",
            out.describe(&c)
        );
    }

    #[test]
    fn is_killed_at_the_time_limit() {
        let dir = tempfile::tempdir().unwrap();
        let rep = script(
            dir.path(),
            "slow",
            "#!/bin/sh\necho starting\nsleep 30\necho never\n",
        );
        let c = cfg(rep, 1);
        let out = execute(&c, Path::new("/dev/null"), false);
        assert!(matches!(out, Outcome::TimedOut), "{out:?}");
        assert!(out.describe(&c).contains("after 1 s and was stopped"));
    }

    #[test]
    fn a_missing_command_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(dir.path().join("bin").join("cncopreporter"), 5);
        let out = execute(&c, Path::new("/dev/null"), false);
        assert!(matches!(out, Outcome::Missing), "{out:?}");
        assert!(out.describe(&c).contains("not found"));
    }

    #[test]
    fn never_runs_through_a_shell() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::create_dir(&victim).unwrap();
        let pwned = dir.path().join("pwned");
        let stub = script(dir.path(), "stub", RECORDER);
        let injected = format!(
            "{}; rm -rf {}; touch {}",
            stub.display(),
            victim.display(),
            pwned.display()
        );
        let out = execute(
            &cfg(PathBuf::from(&injected), 5),
            Path::new("/dev/null"),
            false,
        );
        assert!(
            matches!(out, Outcome::Missing | Outcome::Failed(_)),
            "{out:?}"
        );
        assert!(victim.is_dir() && !pwned.exists());
        assert!(
            !dir.path().join("args").exists(),
            "the stub must not have run"
        );

        // A file really named like that is run as the file it is.
        let odd = script(dir.path(), "rep; touch pwned", RECORDER);
        let out = execute(&cfg(odd, 5), Path::new("/dev/null"), false);
        assert!(out.is_success(), "{out:?}");
        assert!(!pwned.exists() && !Path::new("pwned").exists());
        assert!(dir.path().join("args").exists());
    }

    #[test]
    fn unstartable_commands_are_failures_not_missing() {
        let dir = tempfile::tempdir().unwrap();
        let no_interp = script(dir.path(), "a", "#!/nonexistent/interpreter\n");
        let out = execute(&cfg(no_interp, 5), Path::new("/dev/null"), false);
        assert!(
            matches!(&out, Outcome::Failed(w) if w.contains("interpreter")),
            "{out:?}"
        );

        let not_exec = dir.path().join("b");
        fs::write(&not_exec, "#!/bin/sh\n").unwrap();
        fs::set_permissions(&not_exec, fs::Permissions::from_mode(0o644)).unwrap();
        let out = execute(&cfg(not_exec, 5), Path::new("/dev/null"), false);
        // root may execute a file without x bits only if some x bit is set,
        // so this is refused for every user.
        assert!(
            matches!(&out, Outcome::Failed(w) if w.contains("permission denied")),
            "{out:?}"
        );
    }

    #[test]
    fn output_lines_are_cleaned_and_bounded() {
        let mut input = b"one\r\n\n  \ntwo\x1b[31m\tred\n\xff\xfebad\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE + 10));
        input.extend(b"\nlast without newline");
        let mut lines = Vec::new();
        pump(Cursor::new(input), |l| lines.push(l.to_string()));
        assert_eq!(lines[..3], ["one", "two?[31m\tred", "\u{fffd}\u{fffd}bad"]);
        assert_eq!(lines[3].len(), MAX_LINE);
        assert_eq!(lines[4], "x".repeat(10));
        assert_eq!(lines[5], "last without newline");
        assert_eq!(lines.len(), 6);
    }
}
