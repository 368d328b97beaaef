//! Crash consistency (PROTOCOL section 3: "A crash, power cut or kill at any
//! moment leaves either the old or the new profile, never a mix").
//!
//! The real agent binary replaces a stored profile A with a profile B served
//! by the local cncop network (real TLS on 127.0.0.1) and is killed with
//! SIGKILL at many moments spread over the whole run: the download and the
//! streaming into `backupjobs.db.new`, its commits, the rename, the firewall
//! check and its write of the firewall state, cncopreporter. After each kill
//! the test checks what a user (or another program of the suite) would: no
//! agent left running, the run lock free, the store opens (with the library
//! the suite's programs read it with), `--list --json` works and shows
//! exactly A or exactly B (with the ETag that came with it, or, killed
//! between the store and the state file, none), and the next normal run
//! needs no manual step, exits 0 and stores B. The same holds in a second
//! scenario for the firewall state, kept in the agent's state file
//! `Config/cncopgetprofile.state` (decoded with the library: a kill while
//! it is written leaves the old or the new state, never neither); a third
//! checks that a leftover `backupjobs.db.new` goes away even when the next
//! run has nothing to write.
//!
//! The kill moments are derived from measured runs, never asserted on: most
//! are stratified over the whole run (one random point in each of N equal
//! slices of it), the others follow the moment the network receives the
//! firewall report, which is just before the firewall state is written. A
//! second scenario serves an unchanged profile while endpoints change state,
//! so the only write of the run is that firewall write, to the state file.
//!
//! The two sweeps take minutes, so `cargo test` leaves them out (`#[ignore]`)
//! and CI runs them as a step of their own: `cargo test --test crash_kill --
//! --ignored`. The counts (old, new, mixed) are printed; see them with
//! `--nocapture`.
//! `CRASH_KILL_JOBS` and `CRASH_KILL_SEED` change the profile size and the
//! random kill moments (for a longer run by hand, or to replay one).

use cncopgetprofile::internals::firewall::{States as FirewallStates, decode_states};
use cncopgetprofile::internals::state::{Section, StateFile};
use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use support::*;

/// Kill points of the profile replacement (A -> B) scenario.
const REPLACE_KILL_POINTS: usize = 100;
/// Kill points of the firewall-only scenario (same jobs, firewall changes).
const FIREWALL_KILL_POINTS: usize = 110;
const _: () = assert!(REPLACE_KILL_POINTS + FIREWALL_KILL_POINTS >= 200);
/// Of each scenario's kill points, one in this many follows the firewall
/// report instead of being spread over the whole run.
const AFTER_REPORT_EVERY: usize = 4;
/// Jobs in each profile by default, as the issue asks: a 10 000-job store
/// replaced by a different 10 000-job profile. (Dependencies are optimised in
/// the test profile, so the debug binary replaces them in well under a
/// second.)
const DEFAULT_JOBS: usize = 10_000;
/// Firewall check on, with short probes; every endpoint is on 127.0.0.0/8.
const FIREWALL_ON: &str = "[firewall]\nenabled = On\nprobe_timeout = 1\nbudget = 20\n";
/// The clock of every run of the firewall scenario (`CNCOP_NOW`), so that
/// the firewall state a run writes is the same bytes every time.
const FIXED_NOW: u64 = 1_795_000_000;

fn jobs() -> usize {
    std::env::var("CRASH_KILL_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_JOBS)
}

// ---------------------------------------------------------------------------
// Small tools
// ---------------------------------------------------------------------------

fn seed() -> u64 {
    std::env::var("CRASH_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                ^ u64::from(std::process::id())
        })
}

/// A `--list --json` document, parsed; `None` when it is not one JSON
/// document.
fn listing_doc(json: &str) -> Option<serde_json::Value> {
    serde_json::from_str(json).ok()
}

/// `--list --json` with the `accepted` time (the clock of the run that
/// stored it) and the ETag (checked on its own) blanked out; everything else
/// must match exactly. A document that does not parse is kept as it is (so
/// it matches no listing that does).
fn masked(json: &str) -> String {
    let Some(mut doc) = listing_doc(json) else {
        return json.to_string();
    };
    for key in ["accepted", "etag"] {
        if let Some(v) = doc.get_mut(key) {
            *v = "*".into();
        }
    }
    doc.to_string()
}

/// The ETag a `--list --json` document shows (`None` for `null`).
fn listed_etag(json: &str) -> Option<String> {
    Some(listing_doc(json)?.get("etag")?.as_str()?.to_string())
}

/// Jobs in a `--list --json` document.
fn json_jobs(json: &str) -> usize {
    job_objects(json).len()
}

/// The library's store reader swaps the process-wide panic hook while redb
/// opens a file; the two tests of this file read stores one at a time.
static LIBRARY: Mutex<()> = Mutex::new(());

/// The firewall state the state file holds, read with the library, after
/// checking that the store opens with it as the suite's other programs
/// would: `Err` when either does not read.
fn firewall_state(inst: &Install) -> Result<FirewallStates, String> {
    let _one = LIBRARY.lock().unwrap_or_else(|p| p.into_inner());
    let reader = cncopgetprofile::StoreReader::open(&inst.db_path())
        .map_err(|e| e.to_string())?
        .ok_or("there is no store file")?;
    reader.meta().map_err(|e| e.to_string())?;
    let state = StateFile::open(&inst.state_path(), false, 0);
    if state.was_damaged() {
        return Err("the state file does not read".to_string());
    }
    match state.get(Section::FIREWALL) {
        None => Ok(FirewallStates::new()),
        Some(bytes) => decode_states(bytes)
            .ok_or_else(|| "the firewall section of the state file does not decode".to_string()),
    }
}

/// Agent processes still running for this install root (their environment
/// names it in `CNCOP_HOME`).
fn agents_running(root: &Path) -> Vec<u32> {
    let exe = agent_process_exe();
    let needle = format!("CNCOP_HOME={}\0", root.display()).into_bytes();
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if std::fs::read_link(e.path().join("exe")).ok().as_deref() != Some(exe.as_path()) {
            continue;
        }
        let env = std::fs::read(e.path().join("environ")).unwrap_or_default();
        if env.windows(needle.len()).any(|w| w == needle.as_slice()) {
            pids.push(pid);
        }
    }
    pids
}

/// Processes that have `path` open (from `/proc/*/fd`), with their command
/// lines.
fn holders(path: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if !e
            .file_name()
            .to_string_lossy()
            .bytes()
            .all(|b| b.is_ascii_digit())
        {
            continue;
        }
        let fds = std::fs::read_dir(e.path().join("fd"))
            .into_iter()
            .flatten()
            .flatten();
        if fds
            .filter_map(|fd| std::fs::read_link(fd.path()).ok())
            .any(|t| t == path)
        {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            out.push(format!(
                "{} ({})",
                e.file_name().to_string_lossy(),
                String::from_utf8_lossy(&cmd).replace('\0', " ").trim()
            ));
        }
    }
    out
}

/// Whether nobody holds the run lock (flock, as the agent takes it). A
/// process the killed agent was starting (cncopreporter between fork and
/// exec) may hold it for a moment; a lock still held a few seconds later,
/// when every such process has gone, is stale. `Ok(true)` when the lock
/// was free only after waiting.
fn lock_is_free(config: &Path) -> Result<bool, String> {
    let path = config.join("cncopgetprofile.lock");
    let f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(format!("cannot open {}: {e}", path.display())),
    };
    let end = Instant::now() + Duration::from_secs(5);
    let mut waited = false;
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(waited),
            Err(e) if Instant::now() > end => {
                return Err(format!(
                    "{} is still locked ({e}); processes holding it: {:?}",
                    path.display(),
                    holders(&path)
                ));
            }
            Err(_) => {
                if !waited {
                    eprintln!(
                        "{} held after the kill by: {:?}",
                        path.display(),
                        holders(&path)
                    );
                }
                waited = true;
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Names in `Config/`, sorted.
fn config_names(inst: &Install) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(inst.path("Config"))
        .expect("read Config/")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Files an install may have in `Config/` between runs.
const CONFIG_FILES: &[&str] = &[
    "backupjobs.db",
    "ca.pem",
    "cncop3.ini",
    "cncopgetprofile.lock",
    "cncopgetprofile.state",
];
/// What a killed run may also leave (the next run removes them).
const LEFTOVERS: &[&str] = &["backupjobs.db.new", "cncopgetprofile.state.new"];

// ---------------------------------------------------------------------------
// One scenario: an install, a network, the old and the new state
// ---------------------------------------------------------------------------

/// What the store shows: the masked listing, and (in the firewall scenario)
/// the firewall state of the state file.
#[derive(Clone, PartialEq, Eq)]
struct Seen {
    listing: String,
    firewall: Option<FirewallStates>,
}

/// Where a kill point is put.
#[derive(Clone, Copy, Debug)]
enum At {
    /// This fraction of the run's measured duration after the start.
    Fraction(f64),
    /// This fraction of the measured time from the network receiving the
    /// firewall report to the end of the run, after the report arrives.
    AfterReport(f64),
}

#[derive(Default, Debug)]
struct Counts {
    old: usize,
    new: usize,
    mixed: usize,
    unreadable: usize,
    /// The agent had exited before the signal: not a kill point.
    finished: usize,
    /// Kill points after which `backupjobs.db.new` was left behind.
    leftover_new: usize,
    /// Kill points after which `cncopgetprofile.state.new` was left behind.
    leftover_state_new: usize,
    /// Kill points between the store's replacement and the state file's:
    /// the new profile listed without an ETag (so the next run does not
    /// send the old one, and downloads in full).
    etag_unsent: usize,
    /// Kill points placed after the firewall report that hit a running agent.
    killed_after_report: usize,
    /// Kill points after which a copy of the agent (a child it was
    /// starting) was alive for a moment.
    child_briefly: usize,
    /// Kill points after which the run lock was free only after a moment
    /// (a process the agent was starting still held it).
    lock_held_briefly: usize,
}

impl Counts {
    fn killed(&self) -> usize {
        self.old + self.new + self.mixed + self.unreadable
    }
}

struct Scenario {
    name: &'static str,
    inst: Install,
    net: TestNetwork,
    /// `CNCOP_NOW` for every agent run.
    now: Option<u64>,
    /// Copies of the old store file and state file, restored before each
    /// kill point.
    saved_old: PathBuf,
    saved_state: PathBuf,
    old: Seen,
    new: Seen,
    /// The ETags the old and the new profile came with.
    old_etag: Option<String>,
    new_etag: Option<String>,
    /// Whether the firewall state is part of what must be old or new.
    track_firewall: bool,
    /// Durations of complete runs from the old store, and of their
    /// report-to-exit tails.
    runs: Vec<Duration>,
    tails: Vec<Duration>,
}

/// How a run of [`Scenario::timed_run`] ended.
struct Timed {
    status: ExitStatus,
    took: Duration,
    /// From the network receiving a firewall report to the agent's exit.
    tail: Option<Duration>,
    stderr: String,
}

fn median(v: &[Duration]) -> Duration {
    let mut s = v.to_vec();
    s.sort();
    s[s.len() / 2]
}

impl Scenario {
    fn new(
        name: &'static str,
        inst: Install,
        net: TestNetwork,
        now: Option<u64>,
        track_firewall: bool,
    ) -> Scenario {
        let nothing = Seen {
            listing: String::new(),
            firewall: None,
        };
        Scenario {
            name,
            inst,
            net,
            now,
            saved_old: PathBuf::new(),
            saved_state: PathBuf::new(),
            old: nothing.clone(),
            new: nothing,
            old_etag: None,
            new_etag: None,
            track_firewall,
            runs: Vec::new(),
            tails: Vec::new(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = agent_command();
        cmd.args(args).env("CNCOP_HOME", self.inst.root());
        if let Some(now) = self.now {
            cmd.env("CNCOP_NOW", now.to_string());
        }
        cmd
    }

    fn spawn(&self, stderr: &std::fs::File) -> Child {
        self.command(&[])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr.try_clone().expect("dup"))
            .spawn()
            .expect("start the agent")
    }

    /// A normal run, measured: the time to the agent's exit, and from the
    /// network receiving the firewall report to the exit.
    fn timed_run(&self) -> Timed {
        let err = tempfile::tempfile().expect("temp file");
        let reports = self.net.firewall_reports().len();
        let start = Instant::now();
        let mut child = self.spawn(&err);
        let mut reported = None;
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait for the agent") {
                break st;
            }
            if reported.is_none() && self.net.firewall_reports().len() > reports {
                reported = Some(Instant::now());
            }
            if start.elapsed() > RUN_LIMIT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{}: a run took longer than {RUN_LIMIT:?}", self.name);
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        let end = Instant::now();
        Timed {
            status,
            took: end - start,
            tail: reported.map(|r| end - r),
            stderr: read_all(err),
        }
    }

    /// Saves the store and the state file as the old ones.
    fn save_old(&mut self) {
        self.saved_old = self.inst.path("saved-old.db");
        self.saved_state = self.inst.path("saved-old.state");
        std::fs::copy(self.inst.db_path(), &self.saved_old).expect("save the old store");
        std::fs::copy(self.inst.state_path(), &self.saved_state).expect("save the old state");
    }

    fn restore_old(&self) {
        for (saved, live) in [
            (&self.saved_old, self.inst.db_path()),
            (&self.saved_state, self.inst.state_path()),
        ] {
            std::fs::copy(saved, &live).expect("restore the old file");
            std::fs::set_permissions(&live, std::fs::Permissions::from_mode(0o600))
                .expect("chmod the restored file");
        }
    }

    /// What the store and the state file show now, and the ETag listed;
    /// `Err` (with the reason) when they cannot be read or listed.
    fn seen(&self) -> Result<(Seen, Option<String>), String> {
        let firewall = firewall_state(&self.inst);
        let o = exec(self.command(&["--list", "--json"]), RUN_LIMIT);
        match firewall {
            Ok(f) if o.status.code() == Some(0) => Ok((
                Seen {
                    listing: masked(&stdout_of(&o)),
                    firewall: self.track_firewall.then_some(f),
                },
                listed_etag(&stdout_of(&o)),
            )),
            Ok(_) => Err(format!(
                "--list --json exits {:?}: {}",
                o.status.code(),
                stderr_of(&o).trim()
            )),
            Err(e) => Err(format!(
                "the store or the state does not read ({e}); --list --json exits {:?}",
                o.status.code()
            )),
        }
    }

    /// Starts a run from the old store and kills it at `at`; checks the
    /// aftermath, then that the next normal run stores the new state. The
    /// problems found, if any, are returned (one line each).
    fn kill_point(&mut self, at: At, counts: &mut Counts) -> Vec<String> {
        let mut problems = Vec::new();
        self.restore_old();
        let err = tempfile::tempfile().expect("temp file");
        let reports = self.net.firewall_reports().len();
        let run = median(&self.runs);
        let tail = median(&self.tails);
        let start = Instant::now();
        let mut child = self.spawn(&err);
        let kill_at = match at {
            At::Fraction(f) => start + run.mul_f64(f),
            At::AfterReport(f) => loop {
                if self.net.firewall_reports().len() > reports {
                    break Instant::now() + tail.mul_f64(f);
                }
                if child.try_wait().expect("wait").is_some() || start.elapsed() > RUN_LIMIT {
                    break Instant::now();
                }
                std::thread::sleep(Duration::from_micros(100));
            },
        };
        if let Some(d) = kill_at.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        let _ = child.kill();
        let status = child.wait().expect("reap the agent");
        if status.signal() != Some(9) {
            // Not a kill point: the run had ended.
            counts.finished += 1;
            if status.code() != Some(0) {
                problems.push(format!(
                    "the run ended by itself with {status:?}: {}",
                    read_all(err).trim()
                ));
            }
            return problems;
        }
        if matches!(at, At::AfterReport(_)) {
            counts.killed_after_report += 1;
        }

        // Nothing of the run is left running, and its lock is free.
        // A process the agent was starting (cncopreporter, between fork and
        // exec) is still a copy of the agent for a moment; one still there
        // seconds later is a leftover.
        let end = Instant::now() + Duration::from_secs(5);
        let mut running = agents_running(self.inst.root());
        if !running.is_empty() {
            counts.child_briefly += 1;
            eprintln!(
                "{}: {at:?}: copies of the agent alive after the kill: {running:?}",
                self.name
            );
        }
        while !running.is_empty() && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
            running = agents_running(self.inst.root());
        }
        if !running.is_empty() {
            problems.push(format!("agent processes still running: {running:?}"));
        }
        match lock_is_free(&self.inst.path("Config")) {
            Ok(true) => counts.lock_held_briefly += 1,
            Ok(false) => {}
            Err(e) => problems.push(e),
        }
        let names = config_names(&self.inst);
        if names.iter().any(|n| n == "backupjobs.db.new") {
            counts.leftover_new += 1;
        }
        if names.iter().any(|n| n == "cncopgetprofile.state.new") {
            counts.leftover_state_new += 1;
        }
        let strays: Vec<&String> = names
            .iter()
            .filter(|n| !CONFIG_FILES.contains(&n.as_str()) && !LEFTOVERS.contains(&n.as_str()))
            .collect();
        if !strays.is_empty() {
            problems.push(format!("unexpected files in Config/: {strays:?}"));
        }
        for (what, path) in [
            ("the store", self.inst.db_path()),
            ("the state file", self.inst.state_path()),
        ] {
            match std::fs::metadata(&path) {
                Err(e) => problems.push(format!("{what} is gone: {e}")),
                Ok(m) if m.permissions().mode() & 0o777 != 0o600 => problems.push(format!(
                    "{what}'s mode is {:o}, not 600",
                    m.permissions().mode() & 0o777
                )),
                Ok(_) => {}
            }
        }

        // The store is the old one or the new one, whole, and so is the
        // state file; the ETag listed is the one that came with the
        // content listed, or none (killed between the store and the state
        // file: the next run then downloads in full).
        let etag_of = |listed: &Option<String>, expected: &Option<String>, counts: &mut Counts| {
            if listed.is_none() && expected.is_some() {
                counts.etag_unsent += 1;
            } else if listed != expected {
                return Some(format!(
                    "the ETag listed is {listed:?}, not the one that came with the content ({expected:?})"
                ));
            }
            None
        };
        let landed_old = match self.seen() {
            Err(e) => {
                counts.unreadable += 1;
                problems.push(e);
                false
            }
            Ok((s, etag)) if s == self.old => {
                counts.old += 1;
                problems.extend(etag_of(&etag, &self.old_etag, counts));
                true
            }
            Ok((s, etag)) if s == self.new => {
                counts.new += 1;
                problems.extend(etag_of(&etag, &self.new_etag, counts));
                false
            }
            Ok((s, _)) => {
                counts.mixed += 1;
                problems.push(format!(
                    "the store is neither the old nor the new one: {}",
                    self.describe_mix(&s)
                ));
                false
            }
        };

        // The next run needs no manual step and stores the new state.
        let next = self.timed_run();
        if next.status.code() != Some(0) {
            problems.push(format!(
                "the next run failed ({:?}): {}",
                next.status,
                next.stderr.trim()
            ));
        }
        match self.seen() {
            Ok((s, etag)) if s == self.new && etag == self.new_etag => {}
            Ok((s, etag)) if s == self.new => problems.push(format!(
                "the next run listed the ETag {etag:?}, not {:?}",
                self.new_etag
            )),
            Ok((s, _)) => problems.push(format!(
                "the next run did not store the new state: {}",
                self.describe_mix(&s)
            )),
            Err(e) => problems.push(format!("after the next run, {e}")),
        }
        let extra: Vec<String> = config_names(&self.inst)
            .into_iter()
            .filter(|n| !CONFIG_FILES.contains(&n.as_str()))
            .collect();
        if !extra.is_empty() {
            problems.push(format!("after the next run Config/ still holds {extra:?}"));
        }
        if landed_old && problems.is_empty() {
            // A whole run from the old store: refine the measurements.
            self.runs.push(next.took);
            if self.runs.len() > 9 {
                self.runs.remove(0);
            }
            if let Some(t) = next.tail {
                self.tails.push(t);
                if self.tails.len() > 9 {
                    self.tails.remove(0);
                }
            }
        }
        problems
    }

    fn describe_mix(&self, s: &Seen) -> String {
        let mut out = format!(
            "{} jobs listed (old {}, new {})",
            json_jobs(&s.listing),
            json_jobs(&self.old.listing),
            json_jobs(&self.new.listing)
        );
        let old_jobs: HashSet<String> = job_objects(&self.old.listing).into_iter().collect();
        let new_jobs: HashSet<String> = job_objects(&self.new.listing).into_iter().collect();
        let jobs = job_objects(&s.listing);
        let like_old = jobs.iter().filter(|j| old_jobs.contains(*j)).count();
        let like_new = jobs.iter().filter(|j| new_jobs.contains(*j)).count();
        out.push_str(&format!(
            "; {like_old} jobs as in the old store, {like_new} as in the new"
        ));
        if s.listing == self.old.listing || s.listing == self.new.listing {
            out.push_str(&format!(
                "; the jobs are the {} ones, the firewall state is {}",
                if s.listing == self.old.listing {
                    "old"
                } else {
                    "new"
                },
                describe_firewall(&s.firewall, &self.old.firewall, &self.new.firewall)
            ));
        }
        out
    }

    /// Runs `planned` kill points, then more (stratified over the run
    /// again) until `planned` runs were really killed: a run that ended
    /// before its kill point does not count. Failures are collected, not
    /// fatal, so that the counts cover every point.
    fn run_points(&mut self, planned: usize, rng: &mut Rng) -> (Counts, Vec<String>) {
        let mut counts = Counts::default();
        let mut failures = Vec::new();
        let mut points = kill_points(planned, rng);
        let mut tried = 0;
        while counts.killed() < planned && tried < 2 * planned {
            let at = match points.pop() {
                Some(at) => at,
                None => {
                    points = kill_points(planned - counts.killed(), rng);
                    continue;
                }
            };
            tried += 1;
            let problems = self.kill_point(at, &mut counts);
            if !problems.is_empty() {
                let line = format!(
                    "{} kill point {tried} ({at:?}): {}",
                    self.name,
                    problems.join("; ")
                );
                eprintln!("{line}");
                failures.push(line);
            }
        }
        (counts, failures)
    }
}

/// The JSON objects of a listing's jobs, as (compact) strings, in order.
fn job_objects(json: &str) -> Vec<String> {
    listing_doc(json)
        .as_ref()
        .and_then(|doc| doc.get("jobs")?.as_array())
        .map(|jobs| jobs.iter().map(|j| j.to_string()).collect())
        .unwrap_or_default()
}

fn describe_firewall(
    s: &Option<FirewallStates>,
    old: &Option<FirewallStates>,
    new: &Option<FirewallStates>,
) -> String {
    let (Some(s), Some(old), Some(new)) = (s, old, new) else {
        return "not tracked".into();
    };
    let (mut as_old, mut as_new, mut other) = (0, 0, 0);
    for (k, v) in s {
        if old.get(k) == Some(v) {
            as_old += 1;
        } else if new.get(k) == Some(v) {
            as_new += 1;
        } else {
            other += 1;
        }
    }
    format!("{as_old} entries as before, {as_new} as after, {other} neither")
}

fn read_all(mut f: std::fs::File) -> String {
    use std::io::{Read, Seek};
    let mut s = Vec::new();
    let _ = f.rewind();
    let _ = f.read_to_end(&mut s);
    String::from_utf8_lossy(&s).into_owned()
}

/// `n` kill points: most stratified over the run (one at a random moment
/// in each of its equal slices), every [`AFTER_REPORT_EVERY`]th after the
/// firewall report; in random order, so that a changing machine load
/// spreads over all of them.
fn kill_points(n: usize, rng: &mut Rng) -> Vec<At> {
    let after = n / AFTER_REPORT_EVERY;
    let spread = n - after;
    let mut v: Vec<At> = Vec::with_capacity(n);
    for i in 0..spread {
        v.push(At::Fraction((i as f64 + rng.unit()) / spread as f64));
    }
    for i in 0..after {
        v.push(At::AfterReport((i as f64 + rng.unit()) / after as f64));
    }
    rng.shuffle(&mut v);
    v
}

fn report(name: &str, c: &Counts, took: Duration) {
    eprintln!(
        "{name}: {} kill points survived of {} killed: {} old, {} new, {} mixed, {} unreadable \
         ({} after the firewall report; {} left backupjobs.db.new and {} \
         cncopgetprofile.state.new for the next run; {} between the store and the state \
         file, listing no ETag; for a moment {} left a starting child alive and {} the lock \
         held; {} runs had ended before the kill) in {:.0} s",
        c.old + c.new,
        c.killed(),
        c.old,
        c.new,
        c.mixed,
        c.unreadable,
        c.killed_after_report,
        c.leftover_new,
        c.leftover_state_new,
        c.etag_unsent,
        c.child_briefly,
        c.lock_held_briefly,
        c.finished,
        took.as_secs_f64()
    );
}

#[track_caller]
fn check(name: &str, planned: usize, counts: &Counts, failures: &[String]) {
    assert!(
        failures.is_empty(),
        "{name}: {} of {} kill points failed ({} mixed, {} unreadable stores); the first:\n{}",
        failures.len(),
        counts.killed() + counts.finished,
        counts.mixed,
        counts.unreadable,
        failures[0]
    );
    assert_eq!(
        counts.mixed + counts.unreadable,
        0,
        "{name}: damaged stores"
    );
    assert!(
        counts.killed() >= planned,
        "{name}: only {} of {planned} runs could be killed before they ended",
        counts.killed()
    );
}

// ---------------------------------------------------------------------------
// The scenarios
// ---------------------------------------------------------------------------

/// A (seed 1) is stored with three firewall endpoints open; they are then
/// closed and the network serves B (seed 2, every job different), so a
/// full run writes a new store file, renames it over A, then reports the
/// endpoints blocked and writes their state to the state file.
#[test]
#[ignore = "long kill sweep (minutes on 2 cores): CI runs it as its own step, `cargo test --test crash_kill -- --ignored`"]
fn killed_while_replacing_the_profile_leaves_the_old_or_the_new_one() {
    let started = Instant::now();
    let n = jobs();
    let seed_used = seed();
    let mut rng = Rng::new(seed_used | 1);
    let listeners: Vec<(TcpListener, Ipv4Addr, u16)> = (0..3).map(|_| open_endpoint()).collect();
    let endpoints: Vec<(Ipv4Addr, u16)> =
        listeners.iter().map(|(_, ip, port)| (*ip, *port)).collect();
    let a = with_firewall_endpoints(
        profile_xml_with(DEVICE_ID, n, 1, "2026-11-27T07:00:00Z"),
        &endpoints,
    );
    let b = with_firewall_endpoints(
        profile_xml_with(DEVICE_ID, n, 2, "2026-11-28T07:00:00Z"),
        &endpoints,
    );

    let net = net_with_profile(NetOptions::default(), a);
    let inst = Install::appliance();
    inst.setup(&net, FIREWALL_ON);
    run_ok(&inst, &[]);
    let mut sc = Scenario::new("replace", inst, net, None, false);
    sc.save_old();
    (sc.old, sc.old_etag) = sc.seen().expect("A lists");
    assert_eq!(json_jobs(&sc.old.listing), n, "A is stored whole");
    assert_eq!(sc.old_etag, sc.net.etag(DEVICE_ID), "A's ETag is kept");

    // The endpoints go away, B is served: measure a full replacement run.
    drop(listeners);
    sc.net.set_profile(DEVICE_ID, b.clone(), Some(etag_for(&b)));
    for _ in 0..3 {
        sc.restore_old();
        let t = sc.timed_run();
        assert_eq!(t.status.code(), Some(0), "A -> B run\n{}", t.stderr);
        sc.runs.push(t.took);
        sc.tails
            .push(t.tail.expect("the run reports the closed endpoints"));
    }
    (sc.new, sc.new_etag) = sc.seen().expect("B lists");
    assert_eq!(json_jobs(&sc.new.listing), n, "B is stored whole");
    assert_eq!(sc.new_etag, Some(etag_for(&b)), "B's ETag is kept");
    let a_jobs: HashSet<String> = job_objects(&sc.old.listing).into_iter().collect();
    let b_jobs = job_objects(&sc.new.listing);
    assert_eq!(b_jobs.len(), n, "B's listing splits into its jobs");
    assert!(
        b_jobs.iter().all(|j| !a_jobs.contains(j)),
        "every job of B differs from A's"
    );
    eprintln!(
        "replace: {n} jobs; a full A -> B run takes {:?} (report to exit {:?}); CRASH_KILL_SEED={seed_used}",
        median(&sc.runs),
        median(&sc.tails)
    );

    let loop_start = Instant::now();
    let (counts, failures) = sc.run_points(REPLACE_KILL_POINTS, &mut rng);
    report("replace", &counts, loop_start.elapsed());
    eprintln!(
        "replace: whole test {:.0} s",
        started.elapsed().as_secs_f64()
    );
    check("replace", REPLACE_KILL_POINTS, &counts, &failures);
}

/// The same profile stays served (304) while three endpoints that were open
/// close: the only write of a run is the firewall state, to the state file
/// (the store is not touched). Every run has the same clock, so the new
/// state is the same bytes every time.
#[test]
#[ignore = "long kill sweep (minutes on 2 cores): CI runs it as its own step, `cargo test --test crash_kill -- --ignored`"]
fn killed_while_writing_the_firewall_state_leaves_the_old_or_the_new_one() {
    let started = Instant::now();
    let n = jobs();
    let seed_used = seed();
    let mut rng = Rng::new((seed_used ^ 0x5eed) | 1);
    let listeners: Vec<(TcpListener, Ipv4Addr, u16)> = (0..3).map(|_| open_endpoint()).collect();
    let endpoints: Vec<(Ipv4Addr, u16)> =
        listeners.iter().map(|(_, ip, port)| (*ip, *port)).collect();
    let profile = with_firewall_endpoints(
        profile_xml_with(DEVICE_ID, n, 3, "2026-11-27T07:00:00Z"),
        &endpoints,
    );

    let net = net_with_profile(NetOptions::default(), profile);
    let inst = Install::appliance();
    inst.setup(&net, FIREWALL_ON);
    let mut sc = Scenario::new("firewall", inst, net, Some(FIXED_NOW), true);
    let first = sc.timed_run();
    assert_eq!(first.status.code(), Some(0), "first run\n{}", first.stderr);
    sc.save_old();
    (sc.old, sc.old_etag) = sc.seen().expect("the old store lists");
    assert_eq!(json_jobs(&sc.old.listing), n, "the profile is stored whole");

    drop(listeners);
    for _ in 0..3 {
        sc.restore_old();
        let store_before = snap(&sc.inst);
        let t = sc.timed_run();
        assert_eq!(t.status.code(), Some(0), "firewall-only run\n{}", t.stderr);
        assert_store_untouched(&store_before, &sc.inst, "a firewall-state change");
        sc.runs.push(t.took);
        sc.tails
            .push(t.tail.expect("the run reports the closed endpoints"));
    }
    let statuses: Vec<u16> = sc.net.profile_requests().iter().map(|r| r.status).collect();
    assert_eq!(
        statuses[1..],
        [304, 304, 304],
        "the profile is unchanged (304)"
    );
    (sc.new, sc.new_etag) = sc.seen().expect("the new store lists");
    assert_eq!(sc.new.listing, sc.old.listing, "the jobs do not change");
    assert_eq!(sc.new_etag, sc.old_etag, "the ETag does not change");
    assert!(
        sc.new.firewall != sc.old.firewall,
        "the run changes the firewall state"
    );
    eprintln!(
        "firewall: {n} jobs; a firewall-only run takes {:?} (report to exit {:?}); CRASH_KILL_SEED={seed_used}",
        median(&sc.runs),
        median(&sc.tails)
    );

    let loop_start = Instant::now();
    let (counts, failures) = sc.run_points(FIREWALL_KILL_POINTS, &mut rng);
    report("firewall", &counts, loop_start.elapsed());
    eprintln!(
        "firewall: whole test {:.0} s",
        started.elapsed().as_secs_f64()
    );
    check("firewall", FIREWALL_KILL_POINTS, &counts, &failures);
}

/// A run killed while it streams a new profile into `backupjobs.db.new`
/// leaves that file behind. The next run needs no manual step and removes
/// it, also when it has nothing to write (the network answers 304): a
/// partial store must not keep the appliance's flash space.
#[test]
fn a_leftover_new_store_file_is_removed_by_the_next_run_even_when_nothing_changed() {
    let a = profile_xml(DEVICE_ID, 200);
    let net = net_with_profile(NetOptions::default(), a.clone());
    let inst = Install::appliance();
    inst.setup(&net, "");
    run_ok(&inst, &[]);
    let before = snap(&inst);

    // B is cut off (stalled) after 200 kB, so the run stays in the middle of
    // writing it until it is killed.
    let b = profile_xml_with(DEVICE_ID, 2000, 2, "2026-11-28T07:00:00Z");
    net.set_profile(DEVICE_ID, b.clone(), Some(etag_for(&b)));
    net.push_fault(
        "/profile",
        Fault::Stall {
            after_bytes: 200_000,
            for_: Duration::from_secs(300),
        },
    );
    let mut child = agent_command()
        .env("CNCOP_HOME", inst.root())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the agent");
    let leftover = inst.path("Config/backupjobs.db.new");
    let end = Instant::now() + Duration::from_secs(60);
    while !(leftover.exists()
        && net
            .profile_requests()
            .iter()
            .any(|r| r.fault == Some("Stall")))
    {
        if Instant::now() > end || child.try_wait().expect("wait").is_some() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the run never got to writing backupjobs.db.new");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().expect("SIGKILL the agent");
    child.wait().expect("reap the agent");
    assert!(leftover.exists(), "the killed run left backupjobs.db.new");
    assert_store_untouched(&before, &inst, "a run killed mid-download");

    // The network serves A again: the next run gets 304.
    net.set_profile(DEVICE_ID, a.clone(), Some(etag_for(&a)));
    run_ok(&inst, &[]);
    assert_eq!(
        net.profile_requests().last().map(|r| r.status),
        Some(304),
        "the next run is told nothing changed"
    );
    assert_store_untouched(&before, &inst, "an unchanged run after the kill");
    assert!(
        !leftover.exists(),
        "the next run removes the partial backupjobs.db.new ({} bytes left on the disk)",
        std::fs::metadata(&leftover).map_or(0, |m| m.len())
    );
    assert_eq!(stored_ids(&inst), gen_ids(200));
}
