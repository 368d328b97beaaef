//! The agent under test, and how it is started.
//!
//! By default the tests run the host build ([`host_agent`]). Environment
//! variables run them against another build, e.g. an appliance binary under
//! qemu-user (`targets/test` sets all three):
//!
//! - `CNCOP_TEST_AGENT`: the agent binary (default [`host_agent`]);
//! - `CNCOP_TEST_RUNNER`: a program every agent process is started through,
//!   `RUNNER AGENT args...` (e.g. `qemu-mips`; a name found on `PATH`, or a
//!   path);
//! - `CNCOP_TEST_EXPECT_TRIPLE`: the target triple the agent must announce
//!   (User-Agent, `platform=`); see [`expected_triple`].
//!
//! Tests never spawn the agent directly: [`agent_command`] (and friends)
//! start whichever agent is under test, through the runner when there is one.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

/// The target this crate, and so the host agent and the tests, is built for.
pub const HOST_TRIPLE: &str = env!("SUPPORT_TARGET");

/// The agent binary cargo built for this host, which cargo builds before it
/// runs an integration test: `CARGO_BIN_EXE_cncopgetprofile`, which `cargo
/// test` sets at run time, else `cncopgetprofile` in the folder above the
/// test binary's (`target/debug/deps/..`, where cargo puts binaries).
pub fn host_agent() -> PathBuf {
    if let Some(p) = env_nonempty("CARGO_BIN_EXE_cncopgetprofile") {
        return PathBuf::from(p);
    }
    let test_exe = std::env::current_exe().expect("the test binary's path");
    let beside = test_exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("cncopgetprofile"));
    match beside {
        Some(p) if p.is_file() => p,
        _ => panic!(
            "no agent binary found for {}: run the tests with `cargo test`, or name the agent in CNCOP_TEST_AGENT",
            test_exe.display()
        ),
    }
}

/// A non-empty environment variable.
fn env_nonempty(name: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

/// The agent binary under test: `CNCOP_TEST_AGENT` (made absolute: some
/// runs start in `/`), else [`host_agent`].
pub fn agent_path() -> PathBuf {
    match env_nonempty("CNCOP_TEST_AGENT") {
        Some(p) => std::path::absolute(&p).unwrap_or_else(|_| PathBuf::from(p)),
        None => host_agent(),
    }
}

/// `CNCOP_TEST_RUNNER`: what every agent process is started through (a
/// qemu-user emulator), if anything.
pub fn agent_runner() -> Option<std::ffi::OsString> {
    env_nonempty("CNCOP_TEST_RUNNER")
}

/// The argv that starts the agent at `exe`: `[RUNNER, exe]` or `[exe]`.
pub fn agent_argv_at(exe: &Path) -> Vec<std::ffi::OsString> {
    let mut v = Vec::with_capacity(2);
    if let Some(r) = agent_runner() {
        v.push(r);
    }
    v.push(exe.as_os_str().to_os_string());
    v
}

/// The one place a `Command` for the agent under test is made
/// (`[RUNNER] AGENT`); add its arguments and environment.
pub fn agent_command() -> Command {
    agent_command_at(&agent_path())
}

/// [`agent_command`] for a copy of the agent at `exe` (`[RUNNER] exe`).
pub fn agent_command_at(exe: &Path) -> Command {
    agent_command_via_at(&[], exe)
}

/// The agent started through other programs first: `prefix... [RUNNER]
/// AGENT` (e.g. `setpriv ...`, `faketime DATE`, `sh -c 'umask 000 && exec
/// "$0" "$@"'`). An empty `prefix` is [`agent_command`].
pub fn agent_command_via(prefix: &[&str]) -> Command {
    agent_command_via_at(prefix, &agent_path())
}

/// [`agent_command_via`] for the agent at `exe` (e.g. a copy of it).
pub fn agent_command_via_at(prefix: &[&str], exe: &Path) -> Command {
    let mut argv: Vec<std::ffi::OsString> = prefix.iter().map(Into::into).collect();
    argv.extend(agent_argv_at(exe));
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    cmd
}

/// What `/proc/<pid>/exe` names for a running agent process: the runner
/// (resolved on `PATH`) when there is one, else the agent binary;
/// canonicalized.
pub fn agent_process_exe() -> PathBuf {
    let exe = match agent_runner() {
        None => agent_path(),
        Some(r) => {
            let r = PathBuf::from(r);
            if r.components().count() > 1 {
                r
            } else {
                std::env::var_os("PATH")
                    .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                    .unwrap_or_default()
                    .into_iter()
                    .map(|d| d.join(&r))
                    .find(|c| c.is_file())
                    .unwrap_or(r)
            }
        }
    };
    std::fs::canonicalize(&exe).unwrap_or_else(|e| panic!("{}: {e}", exe.display()))
}

/// The target triple the agent under test must announce in its User-Agent
/// and as the update `platform=`: `CNCOP_TEST_EXPECT_TRIPLE` when set; else,
/// for the host build, the triple it was built for; else (another agent, no
/// expectation given) `None`.
pub fn expected_triple() -> Option<String> {
    if let Some(t) = env_nonempty("CNCOP_TEST_EXPECT_TRIPLE") {
        return Some(t.to_string_lossy().into_owned());
    }
    if env_nonempty("CNCOP_TEST_AGENT").is_none() {
        return Some(HOST_TRIPLE.to_string());
    }
    None
}

/// Longest an agent run may take in [`Install::run`] and friends.
pub const RUN_LIMIT: Duration = Duration::from_secs(120);

/// Runs `cmd` with stdin null and stdout/stderr captured (through anonymous
/// temp files, so no pipe can fill up), killing it after `limit`.
pub fn exec(mut cmd: Command, limit: Duration) -> Output {
    use std::io::Seek;
    let mut out = tempfile::tempfile().expect("temp file");
    let mut err = tempfile::tempfile().expect("temp file");
    // A binary a test has just copied (an installed copy of the agent) may
    // still be open for writing in a child that another test thread forked
    // meanwhile and that has not exec'd yet: exec fails with ETXTBSY until
    // it has. That is the test harness's race, not the agent's, so retry.
    let mut busy_tries = 0;
    let mut child = loop {
        let spawned = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(err.try_clone().expect("dup"))
            .spawn();
        match spawned {
            Ok(child) => break child,
            Err(e) if e.kind() == io::ErrorKind::ExecutableFileBusy && busy_tries < 100 => {
                busy_tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("cannot run {cmd:?}: {e}"),
        }
    };
    let start = std::time::Instant::now();
    let (status, timed_out) = loop {
        if let Some(st) = child.try_wait().expect("wait for the agent") {
            break (st, false);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            break (child.wait().expect("wait for the agent"), true);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let read = |f: &mut std::fs::File| {
        let mut v = Vec::new();
        f.rewind().expect("rewind");
        f.read_to_end(&mut v).expect("read captured output");
        v
    };
    let output = Output {
        status,
        stdout: read(&mut out),
        stderr: read(&mut err),
    };
    if timed_out {
        panic!(
            "{cmd:?} still running after {limit:?}; killed. stderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    output
}
