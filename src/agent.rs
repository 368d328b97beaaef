//! One run of the agent, step by step: config -> lock -> store -> fetch ->
//! parse into the store -> side tasks. Each step is owned by its module; this
//! one only decides the order and what a result means for the next step.

use crate::clock;
use crate::config::Config;
use crate::error::Result;
use crate::fetch;
use crate::install_root::InstallRoot;
use crate::lock::RunLock;
use crate::logs;
use crate::state::StateFile;
use crate::status::{ProfileStatus, RunStatus};
use crate::store::{JobStore, StoreMeta};
use crate::trust::{self, Trust};
use crate::{download, firewall, reporter, update};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

pub use crate::download::Outcome;
pub use crate::update::UpdateChoice;

/// What the command line asked for.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// `-d`: debug lines in the day's log.
    pub debug: bool,
    /// `-c`: the INI file, relative to the working directory.
    pub config: Option<PathBuf>,
    /// `--noupdate`, `--update` or neither.
    pub update: UpdateChoice,
    /// `--recreate`: rebuild the store from a full download.
    pub recreate: bool,
    /// `--dry-run`: fetch and compare, write nothing.
    pub dry_run: bool,
}

/// What a run did: the profile step's result, and the first configuration
/// error a later step found (which turns a successful run's exit code to 2);
/// and what `--status` shows of it.
#[derive(Debug)]
pub struct Report {
    /// The profile step's result.
    pub profile: Result<Outcome>,
    /// The first configuration error a step after the profile found.
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
    // README "What a run does", 1 and 2.
    let mut run = match prepare(root, opts) {
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
    splay(&run.cfg);
    if let Some(t) = run.trust.as_mut() {
        t.rotate(&run.client, &mut run.state);
    }
    // 3 and 4.
    let flags = download::Flags {
        recreate: opts.recreate,
        dry_run: opts.dry_run,
    };
    let profile = download::run(
        &run.cfg,
        flags,
        &mut run.store,
        &mut run.state,
        &run.client,
        run.trust.as_ref(),
        run.now,
    );
    // 5, which a dry run leaves out: it writes and sends nothing.
    let (blocked, later_config_error) = if opts.dry_run {
        (None, None)
    } else {
        side_tasks(&mut run, opts)
    };
    Report {
        profile,
        later_config_error,
        stored: Some(run.store.meta().cloned()),
        blocked,
        trust: run.trust.as_ref().map(Trust::status),
    }
}

/// The update check, the firewall check and cncopreporter, each whatever
/// the others did. Returns the endpoints the firewall check found blocked
/// (`None`: it probed nothing) and the first configuration error a step
/// found.
fn side_tasks(run: &mut Run, opts: &RunOptions) -> (Option<Vec<String>>, Option<crate::Error>) {
    update::run(
        &run.steps.update,
        opts.update,
        run.trust.as_mut(),
        &run.client,
        &mut run.state,
    );
    let firewall = firewall::run(
        &run.steps.firewall,
        &run.store,
        &mut run.state,
        &run.client,
        run.now,
    );
    let later_config_error = logged("firewall check", firewall.result);
    reporter::run(run.steps.reporter.as_ref(), run.cfg.ini.path(), opts.debug);
    let blocked = firewall
        .blocked
        .map(|keys| keys.iter().map(ToString::to_string).collect());
    (blocked, later_config_error)
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
            crate::Error::Store(crate::error::Reason::caused_by(
                format!(
                    "cannot create {}: {}",
                    config_dir.display(),
                    crate::error::io_reason(&e)
                ),
                e,
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
