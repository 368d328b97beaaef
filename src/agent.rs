//! One run of the agent, step by step: config -> lock -> store -> fetch ->
//! parse into the store -> side tasks. Each step is owned by its module; this
//! one only decides the order and what a result means for the next step.

use crate::clock;
use crate::config::Config;
use crate::error::Result;
use crate::fetch::{self, ProfileBody, ProfileResponse};
use crate::install_root::InstallRoot;
use crate::lock::RunLock;
use crate::logs;
use crate::profile;
use crate::state::StateFile;
use crate::status::{ProfileStatus, RunStatus};
use crate::store::{Change, Diff, JobStore, ReplaceOptions, Replaced, StoreMeta};
use crate::trust::{self, Trust};
use crate::{firewall, reporter, update};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub use crate::update::UpdateChoice;

/// What the command line asked for.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub debug: bool,
    /// `-c`: the INI file, relative to the working directory.
    pub config: Option<PathBuf>,
    pub update: UpdateChoice,
    pub recreate: bool,
    pub dry_run: bool,
}

/// How a successful run ended; its `Display` is the run's summary line.
#[derive(Debug)]
pub enum Outcome {
    /// 304: the stored profile is current.
    NotModified { jobs: u64 },
    /// 200 with the same records as stored: nothing written.
    Unchanged { jobs: usize, bytes: u64 },
    /// A new profile is stored.
    Updated {
        jobs: usize,
        endpoints: usize,
        bytes: u64,
        diff: Diff,
        millis: u128,
    },
    /// `--dry-run`: nothing written.
    DryRun {
        jobs: usize,
        diff: Diff,
        not_modified: bool,
    },
}

impl Outcome {
    /// A 304, with `jobs` stored.
    fn not_modified(jobs: u64, dry_run: bool) -> Outcome {
        if dry_run {
            Outcome::DryRun {
                jobs: jobs as usize,
                diff: Diff::default(),
                not_modified: true,
            }
        } else {
            Outcome::NotModified { jobs }
        }
    }

    /// A 200 of `bytes` the store took as `replaced`, `millis` after the
    /// request.
    fn of(replaced: Replaced, bytes: u64, millis: u128) -> Outcome {
        match replaced {
            Replaced::Unchanged(s) => Outcome::Unchanged {
                jobs: s.jobs,
                bytes,
            },
            Replaced::Written(s, diff) => Outcome::Updated {
                jobs: s.jobs,
                endpoints: s.endpoints,
                bytes,
                diff,
                millis,
            },
            Replaced::DryRun(s, diff) => Outcome::DryRun {
                jobs: s.jobs,
                diff,
                not_modified: false,
            },
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::NotModified { jobs } => {
                write!(f, "profile unchanged (304); {jobs} jobs stored")
            }
            Outcome::Unchanged { jobs, bytes } => write!(
                f,
                "profile unchanged (same content, {bytes} bytes); {jobs} jobs stored, store not written"
            ),
            Outcome::Updated {
                jobs,
                endpoints,
                bytes,
                diff,
                millis,
            } => write!(
                f,
                "profile updated: {jobs} jobs ({diff}), {endpoints} endpoints, {bytes} bytes in {millis} ms"
            ),
            Outcome::DryRun {
                not_modified: true, ..
            } => write!(f, "dry run: profile unchanged (304); nothing written"),
            Outcome::DryRun { jobs, diff, .. } => write!(
                f,
                "dry run: the profile of {jobs} jobs is valid and would change: {diff}; nothing written"
            ),
        }
    }
}

/// Most job ids the debug log names one by one, per kind of change.
const DIFF_LOG_LIMIT: u64 = 100;

/// What a run did: the profile step's result, and the first configuration
/// error a later step found (which turns a successful run's exit code to 2);
/// and what `--status` shows of it.
#[derive(Debug)]
pub struct Report {
    pub profile: Result<Outcome>,
    pub later_config_error: Option<crate::Error>,
    /// The store's profile after the run; `None` when the run did not get
    /// as far as opening the store, `Some(None)` when it holds none.
    pub stored: Option<Option<StoreMeta>>,
    /// Endpoints the firewall check found blocked, if it ran.
    pub blocked: Option<Vec<String>>,
    /// The trusted metadata versions and the highest software announced,
    /// when there is a trusted root.
    pub trust: Option<(crate::status::TrustStatus, Option<String>)>,
}

impl Report {
    /// PROTOCOL 7: the profile work's code, unless it succeeded and a later
    /// step found a configuration error.
    pub fn exit_code(&self) -> u8 {
        match (&self.profile, &self.later_config_error) {
            (Err(e), _) => e.exit_code(),
            (Ok(_), Some(e)) => e.exit_code(),
            (Ok(_), None) => crate::error::exit::OK,
        }
    }

    /// The run's one summary line.
    pub fn summary(&self) -> String {
        match (&self.profile, &self.later_config_error) {
            (Ok(outcome), None) => outcome.to_string(),
            (Ok(outcome), Some(e)) => format!("{outcome}; then (exit {}): {e}", e.exit_code()),
            (Err(e), _) => format!("run failed (exit {}): {e}", e.exit_code()),
        }
    }

    /// Whether the run is one `Spool/cncopgetprofile.status` records: not a
    /// run refused by the lock (the holder records its own).
    pub fn is_recorded(&self) -> bool {
        !matches!(self.profile, Err(crate::Error::Locked(_)))
    }

    /// The record of this run for `--status`.
    pub fn status(&self, started: u64, duration_ms: u64) -> RunStatus {
        RunStatus {
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            agent_target: fetch::target_triple().to_string(),
            started,
            duration_ms,
            exit_code: self.exit_code(),
            summary: self.summary(),
            last_success: (self.exit_code() == crate::error::exit::OK).then_some(started),
            profile: self.stored.clone().flatten().map(|m| ProfileStatus {
                generated: m.generated,
                accepted: m.accepted,
                jobs: m.jobs,
                version: m.version,
            }),
            blocked: self.blocked.clone(),
            trust: self.trust.as_ref().map(|(t, _)| t.clone()),
            software_announced: self.trust.as_ref().and_then(|(_, a)| a.clone()),
        }
    }
}

/// Runs the agent for the install root `root`: the profile, then the update
/// check, the firewall check and cncopreporter. The later steps run even when
/// the profile step failed on the network (a blocked network is exactly when
/// the firewall report matters), each failure logged without stopping the
/// others. A configuration or lock failure before the profile stops the run.
pub fn run(root: &InstallRoot, opts: &RunOptions) -> Report {
    let Run {
        cfg,
        steps,
        _lock,
        mut store,
        mut state,
        client,
        now,
        mut trust,
    } = match prepare(root, opts) {
        Ok(run) => run,
        Err(e) => {
            return Report {
                profile: Err(e),
                later_config_error: None,
                stored: None,
                blocked: None,
                trust: None,
            };
        }
    };
    splay(&cfg);
    if let Some(t) = trust.as_mut() {
        t.rotate(&client, &mut state);
    }
    let profile = profile_step(
        &cfg,
        opts,
        &mut store,
        &mut state,
        &client,
        trust.as_ref(),
        now,
    );
    let mut report = Report {
        profile,
        later_config_error: None,
        stored: None,
        blocked: None,
        trust: None,
    };
    if !opts.dry_run {
        update::run(
            &steps.update,
            opts.update,
            trust.as_mut(),
            &client,
            &mut state,
        );
        let firewall = firewall::run(&steps.firewall, &store, &mut state, &client, now);
        report.blocked = firewall
            .blocked
            .map(|keys| keys.iter().map(ToString::to_string).collect());
        report.later_config_error = logged("firewall check", firewall.result);
        reporter::run(steps.reporter.as_ref(), cfg.ini.path(), opts.debug);
    }
    report.stored = Some(store.meta().cloned());
    report.trust = trust.as_ref().map(Trust::status);
    report
}

/// Logs a later step's failure; a configuration error is also returned, as
/// it turns a successful run's exit code to 2.
fn logged(step: &str, result: Result<()>) -> Option<crate::Error> {
    let e = result.err()?;
    log::error!("{step}: {e}");
    matches!(e, crate::Error::Config(_)).then_some(e)
}

/// What every step of a run shares.
struct Run {
    cfg: Config,
    steps: StepSettings,
    /// Held until the run ends (a dry run may find no lock file to hold).
    _lock: Option<RunLock>,
    store: JobStore,
    /// The agent's own state file (PROTOCOL 3): ETag, firewall and trust
    /// state.
    state: StateFile,
    client: fetch::Client,
    now: u64,
    /// `None`: no trusted root (PROTOCOL 8.2: TLS alone, no update check).
    trust: Option<Trust>,
}

/// The settings of the steps after the profile, each parsed by its module.
struct StepSettings {
    update: update::UpdateConfig,
    firewall: firewall::FirewallConfig,
    /// `None`: the step is off.
    reporter: Option<reporter::ReporterConfig>,
}

/// Everything before the first request: the whole INI and the files it
/// names, then the run lock, old logs, the store, the state file. Any
/// failure here ends the run; a configuration error ends it before anything
/// is done (no lock, no store, no request).
fn prepare(root: &InstallRoot, opts: &RunOptions) -> Result<Run> {
    log_head(root.path());
    let cfg = Config::load(root, opts.config.as_deref())?;
    logs::set_cap(cfg.max_log_bytes);
    for line in cfg.describe() {
        log::debug!("{line}");
    }
    for warning in cfg.ini.near_misses(crate::config::KNOWN_KEYS) {
        log::warn!("{warning}");
    }
    let steps = StepSettings {
        update: update::UpdateConfig::from_ini(&cfg.ini)?,
        firewall: firewall::FirewallConfig::from_ini(&cfg.ini)?,
        reporter: reporter::ReporterConfig::from_ini(&cfg.ini, cfg.root.path())?,
    };
    let client = fetch::Client::new(&cfg)?;
    let config_dir = cfg.root.config_dir();
    // A dry run writes nothing under Config/, not even the folder or the
    // lock file, so it also works where Config/ is read-only.
    let lock = if opts.dry_run {
        RunLock::acquire_read_only(&cfg.root.lock_file())?
    } else {
        std::fs::create_dir_all(config_dir).map_err(|e| {
            crate::Error::Store(format!(
                "cannot create {}: {}",
                config_dir.display(),
                crate::error::io_reason(&e)
            ))
        })?;
        Some(RunLock::acquire(&cfg.root.lock_file())?)
    };
    let now = clock::now();
    let removed = logs::remove_old(&cfg.root.logs_dir(), cfg.days_of_logs, now);
    if removed > 0 {
        log::debug!(
            "removed {removed} log files older than {} days",
            cfg.days_of_logs
        );
    }
    let store = JobStore::open(&cfg.root.store(), !opts.dry_run, now)?;
    let state = StateFile::open(&cfg.root.state_file(), !opts.dry_run, now);
    let tcfg = trust::TrustConfig::from_ini(&cfg.ini, cfg.root.path());
    let saved = trust::Saved::from_state(&state);
    let trust = Trust::open(&tcfg, saved, trust::Clock::new(now))?;
    Ok(Run {
        cfg,
        steps,
        _lock: lock,
        store,
        state,
        client,
        now,
        trust,
    })
}

/// The first lines of a `-d` log: what explains the device when one log
/// file is all a technician pulled from it.
fn log_head(root: &Path) {
    let built = clock::build_time();
    log::debug!(
        "cncopgetprofile {} ({}), built {}",
        env!("CARGO_PKG_VERSION"),
        fetch::target_triple(),
        clock::rfc3339(built)
    );
    let system = clock::system_now();
    let mut clock_note = String::new();
    if system < built {
        clock_note.push_str(" (earlier than the build time: the clock is wrong)");
    }
    if clock::now() != system {
        clock_note.push_str(&format!(
            ", the run's time {} ({})",
            clock::rfc3339(clock::now()),
            clock::NOW_VAR
        ));
    }
    log::debug!(
        "install root {}, clock {}{clock_note}, pid {}",
        root.display(),
        clock::rfc3339(system),
        std::process::id()
    );
}

/// Fetches the profile and, if it changed, makes it the store; remembers
/// the ETag it came with in the state file.
fn profile_step(
    cfg: &Config,
    opts: &RunOptions,
    store: &mut JobStore,
    state: &mut StateFile,
    client: &fetch::Client,
    trust: Option<&Trust>,
    now: u64,
) -> Result<Outcome> {
    let rebuild = opts.recreate || store.needs_rebuild();
    if store.needs_rebuild() {
        log::warn!(
            "{} has another store schema; rebuilding it from a full download",
            store.path().display()
        );
    }
    let stored = signed_stored(store);
    // With a trusted root, a 304 must name a signed stored profile: a store
    // of an unsigned one is downloaded whole once.
    let etag = if rebuild || (trust.is_some() && stored.is_none()) {
        None
    } else {
        store.etag(state).map(str::to_string)
    };
    let device = cfg.device.id.as_str();
    let started = Instant::now();
    let Some(mut new) = fetch_profile(client, trust, device, etag.as_deref(), stored.as_ref())?
    else {
        let jobs = store.meta().map_or(0, |m| m.jobs);
        return Ok(Outcome::not_modified(jobs, opts.dry_run));
    };
    let manifest = new.manifest.as_ref();
    // Same content under a new signed version still rewrites the store, so
    // that it names the version the next 304 will.
    let resigned = manifest
        .is_some_and(|m| stored.is_none_or(|s| (s.version, s.sha256) != (m.version, m.sha256)));
    let replace = ReplaceOptions {
        force: rebuild || resigned,
        dry_run: opts.dry_run,
        now,
        version: manifest.map(|m| m.version),
        sha256: manifest.map(|m| m.sha256),
    };
    let replaced = ingest(store, &replace, device, &mut new.body, manifest)?;
    let bytes = new.body.bytes_read();
    log::debug!(
        "read {bytes} bytes of profile in {} ms",
        started.elapsed().as_millis()
    );
    if !opts.dry_run {
        // After the store: a kill between the two leaves an ETag that names
        // the old content, which is then not sent (one full download).
        store.keep_etag(state, new.etag.as_deref())?;
    }
    Ok(Outcome::of(replaced, bytes, started.elapsed().as_millis()))
}

/// The signed version and digest the store names, if it holds a signed
/// profile.
fn signed_stored(store: &JobStore) -> Option<trust::Stored> {
    store.meta().and_then(|m| match (m.version, m.sha256) {
        (Some(version), Some(sha256)) => Some(trust::Stored { version, sha256 }),
        _ => None,
    })
}

/// A 200 answer to the profile request, its manifest checked.
struct NewProfile {
    etag: Option<String>,
    body: ProfileBody,
    /// `None` without a trusted root.
    manifest: Option<trust::Manifest>,
}

/// `GET .../profile`, and with a trusted root the signed manifest of the
/// answer: `None` for a 304 it confirms (the store holds the version it
/// names), else the 200 it allows to replace `stored`. A refused manifest
/// refuses the profile.
fn fetch_profile(
    client: &fetch::Client,
    trust: Option<&Trust>,
    device: &str,
    etag: Option<&str>,
    stored: Option<&trust::Stored>,
) -> Result<Option<NewProfile>> {
    let verify = |signed: &fetch::SignedHeaders| -> Result<Option<trust::Manifest>> {
        let Some(t) = trust else {
            return Ok(None);
        };
        let sigs = signed.signatures.iter().map(String::as_str);
        t.verify_manifest(device, signed.manifest.as_deref(), sigs)
            .map(Some)
            .map_err(trust::profile_refused)
    };
    match client.profile(etag)? {
        ProfileResponse::NotModified { signed } => {
            if let Some(m) = verify(&signed)? {
                m.confirms(stored)
                    .map_err(|e| trust::profile_refused(format!("the manifest of a {e}")))?;
                log::debug!("304 confirmed by the signed manifest ({m})");
            }
            Ok(None)
        }
        ProfileResponse::Changed { etag, body, signed } => {
            let manifest = verify(&signed)?;
            if let Some(m) = &manifest {
                m.allows_replacing(stored)
                    .map_err(|e| trust::profile_refused(format!("the signed manifest's {e}")))?;
                log::debug!("signed manifest: {m}");
            }
            Ok(Some(NewProfile {
                etag,
                body,
                manifest,
            }))
        }
    }
}

/// Streams `body` through the profile parser into the store, checked
/// against `manifest` as it streams when there is one. Each change is
/// printed on a dry run and logged otherwise.
fn ingest(
    store: &mut JobStore,
    replace: &ReplaceOptions,
    device: &str,
    body: &mut ProfileBody,
    manifest: Option<&trust::Manifest>,
) -> Result<Replaced> {
    let mut logged = Diff::default();
    let mut stdout = std::io::stdout().lock();
    let mut on_change = |c: Change<'_>| {
        if replace.dry_run {
            print_change(&mut stdout, c);
        } else {
            log_change(&mut logged, c);
        }
    };
    // One reader type and one closure whether or not the body is checked:
    // the profile parser and the store's writer are generic, and a second
    // copy of them would cost the appliance binary tens of KiB.
    let mut checked;
    let reader: &mut dyn std::io::Read = match manifest {
        Some(m) => {
            checked = trust::CheckedBody::new(&mut *body, m);
            &mut checked
        }
        None => body,
    };
    store.replace(replace, &mut on_change, |sink| {
        profile::parse(reader, device, sink)
    })
}

/// `--dry-run`'s line for a change, on stdout: what a script reads.
fn print_change(out: &mut impl Write, c: Change<'_>) {
    // A closed stdout must not fail the check the dry run is for.
    let _ = match c {
        Change::Added { id, name } => writeln!(out, "add     {id}  {name}"),
        Change::Changed { id, name } => writeln!(out, "change  {id}  {name}"),
        Change::Removed { id } => writeln!(out, "remove  {id}"),
    };
}

/// Names the first `DIFF_LOG_LIMIT` changes of each kind in the debug log;
/// the counts are in the summary line.
fn log_change(logged: &mut Diff, c: Change<'_>) {
    let (count, line) = match c {
        Change::Added { id, name } => (&mut logged.added, format!("job {id} added: {name}")),
        Change::Changed { id, name } => (&mut logged.changed, format!("job {id} changed: {name}")),
        Change::Removed { id } => (&mut logged.removed, format!("job {id} removed")),
    };
    *count += 1;
    if *count <= DIFF_LOG_LIMIT {
        log::debug!("{line}");
    } else if *count == DIFF_LOG_LIMIT + 1 {
        log::debug!("(more changes of this kind are not listed; see the summary line)");
    }
}

/// `[network] splay`: a random wait before the first request, so a fleet of
/// appliances started by the same cron minute does not hit the network at
/// once. Not when a person is at the terminal.
fn splay(cfg: &Config) {
    let max = cfg.network.splay;
    if max.is_zero() || std::io::stdin().is_terminal() {
        return;
    }
    let wait = max.mul_f64(fetch::random_unit());
    log::debug!(
        "splay: waiting {:.1} s before the first request",
        wait.as_secs_f64()
    );
    std::thread::sleep(wait);
}
