//! The last run's outcome, `Spool/cncopgetprofile.status` (PROTOCOL 3), and
//! `--status [--json]`, which shows it.
//!
//! Every run (except `--dry-run` and a run refused by the lock, whose holder
//! will write its own) replaces the file atomically: written beside, synced,
//! renamed. It lives under `Spool/`, never `Config/`: a run that finds
//! nothing changed writes nothing under `Config/`. Reading it takes no lock
//! and needs no network, so monitoring scripts and vendor web UIs may call
//! `--status` as often as they like.
//!
//! The file is in the INI syntax the rest of the suite reads (and
//! `config::Ini` parses), one fact per line, so `cat` explains it too.
//! Models: Puppet's `last_run_summary.yaml`, `mender show-artifact`.

use crate::agent::{Report, RunOptions};
use crate::clock::{self, UnixTime};
use crate::config::Ini;
use crate::error::io_reason;
use crate::error::{Error, Result, exit::NO_RUN_RECORDED};
use crate::install_root::InstallRoot;
use crate::json::{Object, array, json_str};
use crate::lock;
use crate::logs::Logs;
use std::io::Write;
use std::path::Path;

/// One run's outcome, as recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunStatus {
    /// The agent that ran: version and target triple.
    pub agent_version: String,
    pub agent_target: String,
    pub started: UnixTime,
    pub duration_ms: u64,
    pub exit_code: u8,
    /// The run's summary line (as in the day's log).
    pub summary: String,
    /// When a run last ended with exit 0 (this one or an earlier one).
    pub last_success: Option<UnixTime>,
    /// What the job store held after the run (or, if the run did not reach
    /// the store, what the previous record said).
    pub profile: Option<ProfileStatus>,
    /// Endpoints the firewall check found blocked; `None` when it did not run.
    pub blocked: Option<Vec<String>>,
    /// PROTOCOL 8 (signed metadata): the trusted versions, once that is on.
    pub trust: Option<TrustStatus>,
    /// PROTOCOL 8: the highest software version ever announced to ccs3updater.
    pub software_announced: Option<String>,
}

/// The stored profile.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProfileStatus {
    /// The profile's `generated` attribute, as sent.
    pub generated: String,
    /// When this device accepted it.
    pub accepted: UnixTime,
    pub jobs: u64,
    /// PROTOCOL 8: the signed manifest's profile version.
    pub version: Option<u64>,
}

/// PROTOCOL 8: versions of the trusted metadata.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustStatus {
    pub root: u64,
    pub timestamp: Option<u64>,
    pub release: Option<u64>,
}

impl RunStatus {
    /// Whether the run succeeded (exit 0).
    pub fn succeeded(&self) -> bool {
        self.exit_code == 0
    }

    /// The file's text.
    fn to_ini(&self) -> String {
        let mut out = String::from(
            "; How the last cncopgetprofile run ended; replaced by every run.\n\
             ; Read it with `cncopgetprofile --status` (or --status --json).\n",
        );
        let mut section = |name: &str, keys: &[(&str, String)]| {
            out.push_str(&format!("\n[{name}]\n"));
            for (k, v) in keys {
                // One physical line per value: the INI reader would take an
                // indented next line as a continuation.
                let v: String = v
                    .chars()
                    .map(|c| if c.is_control() { ' ' } else { c })
                    .collect();
                out.push_str(&format!("{k} = {}\n", v.trim()));
            }
        };
        let mut run = vec![
            ("agent", self.agent_version.clone()),
            ("target", self.agent_target.clone()),
            ("started", clock::rfc3339(self.started)),
            ("duration_ms", self.duration_ms.to_string()),
            ("exit_code", self.exit_code.to_string()),
            ("summary", self.summary.clone()),
        ];
        if let Some(t) = self.last_success {
            run.push(("last_success", clock::rfc3339(t)));
        }
        section("run", &run);
        if let Some(p) = &self.profile {
            let mut keys = vec![
                ("generated", p.generated.clone()),
                ("accepted", clock::rfc3339(p.accepted)),
                ("jobs", p.jobs.to_string()),
            ];
            if let Some(v) = p.version {
                keys.push(("version", v.to_string()));
            }
            section("profile", &keys);
        }
        if let Some(b) = &self.blocked {
            section("firewall", &[("blocked", b.join(" "))]);
        }
        if let Some(t) = &self.trust {
            let mut keys = vec![("root", t.root.to_string())];
            if let Some(v) = t.timestamp {
                keys.push(("timestamp", v.to_string()));
            }
            if let Some(v) = t.release {
                keys.push(("release", v.to_string()));
            }
            section("trust", &keys);
        }
        if let Some(v) = &self.software_announced {
            section("software", &[("announced", v.clone())]);
        }
        out
    }

    /// Reads the file's text back; `path` names it in errors.
    fn from_ini(path: &Path, text: &str) -> Result<RunStatus> {
        let ini = Ini::parse(path, text)?;
        let run = ini.section("run");
        let time = |sec: crate::config::Section<'_>, key: &str| -> Result<UnixTime> {
            let v = sec.required(key)?;
            clock::parse_rfc3339(v)
                .ok_or_else(|| sec.error(key, format!("'{v}' is not a UTC time")))
        };
        let profile = if ini.has_section("profile") {
            let p = ini.section("profile");
            Some(ProfileStatus {
                generated: p.required("generated")?.to_string(),
                accepted: time(p, "accepted")?,
                jobs: p.number("jobs", 0, 0..=u64::MAX)?,
                version: p
                    .optional("version")
                    .map(|_| p.number("version", 0, 0..=u64::MAX))
                    .transpose()?,
            })
        } else {
            None
        };
        let blocked = ini.has_section("firewall").then(|| {
            ini.section("firewall")
                .get("blocked")
                .unwrap_or("")
                .split_ascii_whitespace()
                .map(str::to_string)
                .collect()
        });
        let trust = if ini.has_section("trust") {
            let t = ini.section("trust");
            let opt = |k: &str| {
                t.optional(k)
                    .map(|_| t.number(k, 0, 0..=u64::MAX))
                    .transpose()
            };
            Some(TrustStatus {
                root: t.number("root", 0, 0..=u64::MAX)?,
                timestamp: opt("timestamp")?,
                release: opt("release")?,
            })
        } else {
            None
        };
        Ok(RunStatus {
            agent_version: run.required("agent")?.to_string(),
            agent_target: run.optional("target").unwrap_or("").to_string(),
            started: time(run, "started")?,
            duration_ms: run.number("duration_ms", 0, 0..=u64::MAX)?,
            exit_code: run.number("exit_code", 0, 0..=255)?,
            summary: run.optional("summary").unwrap_or("").to_string(),
            last_success: run
                .optional("last_success")
                .map(|_| time(run, "last_success"))
                .transpose()?,
            profile,
            blocked,
            trust,
            software_announced: ini
                .section("software")
                .optional("announced")
                .map(str::to_string),
        })
    }

    /// The `--status --json` document's `last_run` object.
    fn to_json(&self, s: &mut String) {
        let time = |t: UnixTime| clock::rfc3339(t);
        let num = |n: Option<u64>| n.map_or_else(|| "null".to_string(), |n| n.to_string());
        let mut o = Object::open(s);
        let mut agent = Object::open(o.key("agent"));
        agent.str("version", &self.agent_version);
        agent.str("target", &self.agent_target);
        agent.close();
        o.str("started", &time(self.started));
        o.raw("duration_ms", &self.duration_ms.to_string());
        o.raw("exit_code", &self.exit_code.to_string());
        o.raw("succeeded", if self.succeeded() { "true" } else { "false" });
        o.str("summary", &self.summary);
        o.opt_str("last_success", self.last_success.map(time).as_deref());
        match &self.profile {
            None => o.raw("profile", "null"),
            Some(p) => {
                let mut profile = Object::open(o.key("profile"));
                profile.str("generated", &p.generated);
                profile.str("accepted", &time(p.accepted));
                profile.raw("jobs", &p.jobs.to_string());
                profile.raw("version", &num(p.version));
                profile.close();
            }
        }
        match &self.blocked {
            None => o.raw("blocked_endpoints", "null"),
            Some(b) => array(o.key("blocked_endpoints"), b.iter(), |s, e| json_str(s, e)),
        }
        match &self.trust {
            None => o.raw("trust", "null"),
            Some(t) => {
                let mut trust = Object::open(o.key("trust"));
                trust.raw("root", &t.root.to_string());
                trust.raw("timestamp", &num(t.timestamp));
                trust.raw("release", &num(t.release));
                trust.close();
            }
        }
        o.opt_str("software_announced", self.software_announced.as_deref());
        o.close();
    }
}

/// The previous record, if there is a readable one.
pub fn read(root: &InstallRoot) -> Result<Option<RunStatus>> {
    let path = root.status_file();
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::Store(crate::error::Reason::caused_by(
                format!("cannot read {}: {}", path.display(), io_reason(&e)),
                e,
            )));
        }
    };
    let text = String::from_utf8(text)
        .map_err(|_| Error::Store(format!("{} is not UTF-8 text", path.display()).into()))?;
    RunStatus::from_ini(&path, &text).map(Some)
}

/// Replaces the record the way every file of the agent is replaced
/// (`files::replace_with_bytes`: `cncopgetprofile.status.new` written,
/// synced, renamed over, `Spool/` synced), so a power cut leaves the old
/// record or the new one, whole. Mode 0644: it holds no secret, and
/// monitoring reads it.
pub fn write(root: &InstallRoot, status: &RunStatus) -> Result<()> {
    let path = root.status_file();
    let tmp = path.with_extension("status.new");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| crate::files::io_error(dir, "cannot create the folder", &e))?;
    }
    crate::files::replace_with_bytes(
        &path,
        &tmp,
        status.to_ini().as_bytes(),
        crate::files::Access::Public,
    )
}

/// Records a run: carries over what this run did not learn (the last
/// success, the stored profile when the run did not reach the store) from
/// the previous record. A failure is logged, never fatal: the record serves
/// monitoring, it must not change the run's outcome.
pub fn record(root: &InstallRoot, mut status: RunStatus, reached_store: bool) {
    let previous = read(root).ok().flatten();
    if !status.succeeded() {
        status.last_success = previous.as_ref().and_then(|p| p.last_success);
    }
    if !reached_store && status.profile.is_none() {
        status.profile = previous.and_then(|p| p.profile);
    }
    if let Err(e) = write(root, &status) {
        log::warn!("{e}; --status will show an older run");
    }
}

/// One run as the command line makes it, after logging is set up: the
/// run, its error and summary line in the logs (the day's file synced),
/// then its record. The order matters to a power cut: once the record
/// shows a run, that run's log lines are durable.
pub fn run_and_record(root: &InstallRoot, opts: &RunOptions, logs: &mut Logs) -> Report {
    let started = (clock::now(), std::time::Instant::now());
    let report = crate::agent::run(root, opts);
    let code = report.exit_code();
    if let Err(e) = &report.profile {
        log::error!("{e}");
    }
    logs.summary(&report.summary(), code);
    if report.is_recorded() && !opts.dry_run {
        let millis = u64::try_from(started.1.elapsed().as_millis()).unwrap_or(u64::MAX);
        let reached_store = report.stored.is_some();
        record(root, report.status(started.0, millis), reached_store);
    }
    report
}

/// `--status [--json]`: the last run and whether one is running now, on
/// `out`. Returns its exit code: 0 when the last run succeeded, else that
/// run's code; [`NO_RUN_RECORDED`] when there is none (or it cannot be read).
pub fn show(root: &InstallRoot, json: bool, out: &mut impl Write) -> std::io::Result<u8> {
    let running = lock::is_held(&root.lock_file());
    let path = root.status_file();
    let (last, problem) = match read(root) {
        Ok(last) => (last, None),
        Err(e) => (
            None,
            Some(format!(
                "{}; the next run replaces {}",
                e.detail(),
                path.display()
            )),
        ),
    };
    let exit_code = last.as_ref().map_or(NO_RUN_RECORDED, |l| l.exit_code);
    if json {
        write_json(&path, running, last.as_ref(), problem.as_deref(), out)?;
        return Ok(exit_code);
    }
    if running == Some(true) {
        writeln!(out, "running:      yes, a run is in progress now")?;
    }
    let Some(l) = last else {
        match problem {
            Some(p) => writeln!(out, "no readable run record: {p}")?,
            None => writeln!(out, "no run recorded ({} does not exist)", path.display())?,
        }
        return Ok(exit_code);
    };
    l.write_text(out)?;
    Ok(exit_code)
}

/// `--status --json`: one object, one line.
fn write_json(
    path: &std::path::Path,
    running: Option<bool>,
    last: Option<&RunStatus>,
    problem: Option<&str>,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let mut s = String::new();
    let mut o = Object::open(&mut s);
    o.str("status_file", &path.display().to_string());
    o.raw(
        "running",
        match running {
            Some(true) => "true",
            Some(false) => "false",
            None => "null",
        },
    );
    match last {
        Some(l) => l.to_json(o.key("last_run")),
        None => o.raw("last_run", "null"),
    }
    o.opt_str("problem", problem);
    o.close();
    s.push('\n');
    out.write_all(s.as_bytes())
}

impl RunStatus {
    /// The run record's lines of `--status`.
    fn write_text(&self, out: &mut impl Write) -> std::io::Result<()> {
        let result = if self.succeeded() {
            "succeeded".to_string()
        } else {
            format!("FAILED, exit {}", self.exit_code)
        };
        writeln!(
            out,
            "last run:     {} ({result}, {:.1} s)",
            clock::rfc3339(self.started),
            self.duration_ms as f64 / 1000.0
        )?;
        writeln!(out, "summary:      {}", self.summary)?;
        let success = self
            .last_success
            .map_or_else(|| "never".to_string(), clock::rfc3339);
        writeln!(out, "last success: {success}")?;
        match &self.profile {
            Some(p) => {
                let version = p
                    .version
                    .map(|v| format!("version {v}, "))
                    .unwrap_or_default();
                writeln!(
                    out,
                    "profile:      {} jobs, {version}generated {}, accepted {}",
                    p.jobs,
                    p.generated,
                    clock::rfc3339(p.accepted)
                )?
            }
            None => writeln!(out, "profile:      none stored")?,
        }
        match &self.blocked {
            None => writeln!(out, "firewall:     not checked")?,
            Some(b) if b.is_empty() => writeln!(out, "firewall:     no endpoint blocked")?,
            Some(b) => writeln!(out, "firewall:     {} blocked: {}", b.len(), b.join(", "))?,
        }
        if let Some(t) = &self.trust {
            let opt = |v: Option<u64>| v.map_or_else(|| "-".to_string(), |v| v.to_string());
            writeln!(
                out,
                "trust:        root {}, timestamp {}, release {}",
                t.root,
                opt(t.timestamp),
                opt(t.release)
            )?;
        }
        if let Some(v) = &self.software_announced {
            writeln!(out, "software:     {v} announced to ccs3updater")?;
        }
        writeln!(
            out,
            "agent:        cncopgetprofile {} ({})",
            self.agent_version, self.agent_target
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RunStatus {
        RunStatus {
            agent_version: "3.4.0".into(),
            agent_target: "mips-unknown-linux-musl".into(),
            started: 1_795_762_805,
            duration_ms: 210,
            exit_code: 3,
            summary: "run failed (exit 3): network error: a = b; \"quoted\"\nsecond".into(),
            last_success: Some(1_795_759_205),
            profile: Some(ProfileStatus {
                generated: "2026-11-27T07:00:00Z".into(),
                accepted: 1_795_759_205,
                jobs: 1000,
                version: Some(1234),
            }),
            blocked: Some(vec!["127.0.0.1:9".into(), "[::1]:22".into()]),
            trust: Some(TrustStatus {
                root: 2,
                timestamp: Some(912),
                release: None,
            }),
            software_announced: Some("3.5.0".into()),
        }
    }

    #[test]
    fn the_file_round_trips_every_field() {
        let s = sample();
        let back = RunStatus::from_ini(Path::new("x"), &s.to_ini()).unwrap();
        let mut expect = s.clone();
        expect.summary = expect.summary.replace('\n', " ");
        assert_eq!(back, expect);
        let bare = RunStatus {
            profile: None,
            blocked: None,
            trust: None,
            software_announced: None,
            last_success: None,
            ..s
        };
        let back = RunStatus::from_ini(Path::new("x"), &bare.to_ini()).unwrap();
        assert_eq!(back.blocked, None);
        assert_eq!(back.profile, None);
        let none_blocked = RunStatus {
            blocked: Some(Vec::new()),
            ..bare
        };
        let back = RunStatus::from_ini(Path::new("x"), &none_blocked.to_ini()).unwrap();
        assert_eq!(back.blocked, Some(Vec::new()));
    }

    #[test]
    fn a_damaged_file_is_an_error_naming_it() {
        let e = RunStatus::from_ini(
            Path::new("/r/Spool/s"),
            "[run]\nagent = 1\nstarted = soon\n",
        )
        .unwrap_err();
        assert!(e.to_string().contains("/r/Spool/s [run] started"), "{e}");
    }

    #[test]
    fn json_is_one_document_with_escaped_strings() {
        let mut s = String::new();
        sample().to_json(&mut s);
        assert!(s.starts_with('{') && s.ends_with('}'), "{s}");
        assert!(
            s.contains(
                r#""summary":"run failed (exit 3): network error: a = b; \"quoted\"\nsecond""#
            ),
            "{s}"
        );
        assert!(
            s.contains(r#""blocked_endpoints":["127.0.0.1:9","[::1]:22"]"#),
            "{s}"
        );
        assert!(
            s.contains(r#""trust":{"root":2,"timestamp":912,"release":null}"#),
            "{s}"
        );
    }
}
