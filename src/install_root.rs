//! The install root's layout: every path the agent and the suite's store
//! readers use under it, named in one place and built once per run.
//!
//! ```text
//! <root>/Config/cncop3.ini              the INI (unless -c names another)
//! <root>/Config/backupjobs.db           the job store (redb)
//! <root>/Config/cncopgetprofile.state   the agent's own state (PROTOCOL 3)
//! <root>/Config/cncopgetprofile.lock    one run at a time
//! <root>/Spool/cncopgetprofile.status   the last run's outcome
//! <root>/Spool/Logs/                    the -d logs
//! ```

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// The environment variable that names the install root.
pub const HOME_VAR: &str = "CNCOP_HOME";
/// The job store's file name under `Config/`.
pub const STORE_FILE: &str = "backupjobs.db";
/// The agent's state file's name under `Config/` (PROTOCOL 3).
pub const STATE_FILE: &str = "cncopgetprofile.state";
/// The run lock's file name under `Config/`.
pub const LOCK_FILE: &str = "cncopgetprofile.lock";
/// The last run's record's file name under `Spool/`.
pub const STATUS_FILE: &str = "cncopgetprofile.status";
/// The INI file's name under `Config/`, when `-c` is not given.
pub const INI_FILE: &str = "cncop3.ini";

/// The paths under one install root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallRoot {
    root: PathBuf,
    config_dir: PathBuf,
    spool_dir: PathBuf,
}

impl InstallRoot {
    /// The layout under `root`.
    pub fn new(root: impl Into<PathBuf>) -> InstallRoot {
        let root = root.into();
        InstallRoot {
            config_dir: root.join("Config"),
            spool_dir: root.join("Spool"),
            root,
        }
    }

    /// The install root of this installation: `CNCOP_HOME` when set, else
    /// the parent of the folder the running binary is in (the suite installs
    /// its binaries in `<root>/bin`).
    pub fn locate() -> Result<InstallRoot> {
        if let Some(home) = std::env::var_os(HOME_VAR).filter(|h| !h.is_empty()) {
            return Ok(InstallRoot::new(home));
        }
        let exe = std::env::current_exe().map_err(|e| {
            Error::Config(format!(
                "cannot find the install root: {HOME_VAR} is not set and the binary's own path is unknown ({e})"
            ).into())
        })?;
        exe.parent()
            .and_then(Path::parent)
            .map(InstallRoot::new)
            .ok_or_else(|| {
                Error::Config(
                    format!(
                        "cannot find the install root from {}; set {HOME_VAR}",
                        exe.display()
                    )
                    .into(),
                )
            })
    }

    /// The root itself: INI paths that are not absolute are relative to it.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// `Config/`: the INI, the store, the state file and the lock.
    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    /// `Config/cncop3.ini`, the INI when `-c` is not given.
    pub fn default_ini(&self) -> PathBuf {
        self.config_dir.join(INI_FILE)
    }

    /// `Config/backupjobs.db`, the job store.
    pub fn store(&self) -> PathBuf {
        self.config_dir.join(STORE_FILE)
    }

    /// `Config/cncopgetprofile.state`, the agent's own state.
    pub fn state_file(&self) -> PathBuf {
        self.config_dir.join(STATE_FILE)
    }

    /// `Config/cncopgetprofile.lock`, held by the running agent.
    pub fn lock_file(&self) -> PathBuf {
        self.config_dir.join(LOCK_FILE)
    }

    /// `Spool/cncopgetprofile.status`, the last run's outcome.
    pub fn status_file(&self) -> PathBuf {
        self.spool_dir.join(STATUS_FILE)
    }

    /// `Spool/Logs/`, where `-d` writes its logs.
    pub fn logs_dir(&self) -> PathBuf {
        self.spool_dir.join("Logs")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_is_the_suites() {
        let r = InstallRoot::new("/opt/cncop");
        assert_eq!(r.path(), Path::new("/opt/cncop"));
        assert_eq!(r.config_dir(), Path::new("/opt/cncop/Config"));
        assert_eq!(r.default_ini(), Path::new("/opt/cncop/Config/cncop3.ini"));
        assert_eq!(r.store(), Path::new("/opt/cncop/Config/backupjobs.db"));
        assert_eq!(
            r.state_file(),
            Path::new("/opt/cncop/Config/cncopgetprofile.state")
        );
        assert_eq!(
            r.lock_file(),
            Path::new("/opt/cncop/Config/cncopgetprofile.lock")
        );
        assert_eq!(
            r.status_file(),
            Path::new("/opt/cncop/Spool/cncopgetprofile.status")
        );
        assert_eq!(r.logs_dir(), Path::new("/opt/cncop/Spool/Logs"));
    }
}
