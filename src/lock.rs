//! One run at a time: an advisory `flock` on `Config/cncopgetprofile.lock`.
//!
//! The kernel drops the lock when the process dies, however it dies, so a
//! killed run never leaves a stale lock behind. The file's content is never
//! written: an unchanged run writes nothing to `Config/`.

use crate::error::{Error, Result};
use std::fs::File;
use std::path::Path;

pub const LOCK_FILE: &str = "cncopgetprofile.lock";

/// Held for the whole run; dropping it releases the lock.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Takes the lock in `config_dir` or fails at once with `Error::Locked`.
    pub fn acquire(config_dir: &Path) -> Result<RunLock> {
        let path = config_dir.join(LOCK_FILE);
        let mut opts = std::fs::OpenOptions::new();
        opts.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let file = opts.open(&path).map_err(|e| {
            Error::Store(format!(
                "cannot open the lock file {}: {}",
                path.display(),
                crate::config::io_reason(&e)
            ))
        })?;
        match file.try_lock() {
            Ok(()) => Ok(RunLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked(format!(
                "another cncopgetprofile run holds {}; this run exits without doing anything",
                path.display()
            ))),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(Error::Store(format!("cannot lock {}: {e}", path.display())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = RunLock::acquire(dir.path()).unwrap();
        let second = RunLock::acquire(dir.path()).unwrap_err();
        assert_eq!(second.exit_code(), crate::error::exit::LOCKED);
        drop(first);
        RunLock::acquire(dir.path()).unwrap();
    }
}
