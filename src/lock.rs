//! One run at a time: an advisory `flock` on `Config/cncopgetprofile.lock`.
//!
//! The kernel drops the lock when the process dies, however it dies, so a
//! killed run never leaves a stale lock behind. The file's content is never
//! written: an unchanged run writes nothing to `Config/`.

use crate::error::{Error, Result};
use std::fs::File;
use std::path::Path;

/// Held for the whole run; dropping it releases the lock.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl RunLock {
    /// Takes the lock file at `path` (`InstallRoot::lock_file`) or fails
    /// at once with `Error::Locked`.
    pub fn acquire(path: &Path) -> Result<RunLock> {
        let mut opts = std::fs::OpenOptions::new();
        opts.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let file = opts.open(path).map_err(|e| {
            Error::Store(crate::error::Reason::caused_by(
                format!(
                    "cannot open the lock file {}: {}",
                    path.display(),
                    crate::error::io_reason(&e)
                ),
                e,
            ))
        })?;
        RunLock::take(file, path)
    }

    /// For a run that writes nothing (`--dry-run`): takes the lock through
    /// a read-only handle, so it works on a read-only `Config/`, and creates
    /// no file. `None` when no run ever made the lock file (then no run has
    /// a store to change under us either).
    pub fn acquire_read_only(path: &Path) -> Result<Option<RunLock>> {
        match File::open(path) {
            Ok(file) => RunLock::take(file, path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Store(crate::error::Reason::caused_by(
                format!(
                    "cannot open the lock file {}: {}",
                    path.display(),
                    crate::error::io_reason(&e)
                ),
                e,
            ))),
        }
    }

    fn take(file: File, path: &Path) -> Result<RunLock> {
        // `--status` (`is_held`) holds a shared lock for a moment; a run
        // that meets it tries again a few times before calling the lock taken.
        let mut tries = 0;
        let taken = loop {
            match file.try_lock() {
                Err(std::fs::TryLockError::WouldBlock) if tries < STATUS_PROBE_RETRIES => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                other => break other,
            }
        };
        match taken {
            Ok(()) => Ok(RunLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked(
                format!(
                    "another cncopgetprofile run holds {}; this run exits without doing anything",
                    path.display()
                )
                .into(),
            )),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::Store(
                format!("cannot lock {}: {e}", path.display()).into(),
            )),
        }
    }
}

/// Tries of a run that finds the lock taken, 20 ms apart.
const STATUS_PROBE_RETRIES: u32 = 5;

/// Whether a run holds the lock file at `path` now (`None`: cannot tell,
/// e.g. the lock file is not readable). Takes a shared lock for the moment
/// of the test and never creates the file.
pub fn is_held(path: &Path) -> Option<bool> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(false),
        Err(_) => return None,
    };
    match file.try_lock_shared() {
        Ok(()) => Some(false),
        Err(std::fs::TryLockError::WouldBlock) => Some(true),
        Err(std::fs::TryLockError::Error(_)) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::install_root::InstallRoot;

    #[test]
    fn a_second_lock_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let lock = InstallRoot::new(dir.path()).lock_file();
        std::fs::create_dir(dir.path().join("Config")).unwrap();
        assert_eq!(is_held(&lock), Some(false), "no lock file yet");
        assert!(!lock.exists(), "is_held creates nothing");
        let first = RunLock::acquire(&lock).unwrap();
        let second = RunLock::acquire(&lock).unwrap_err();
        assert_eq!(second.exit_code(), crate::error::exit::LOCKED);
        assert_eq!(is_held(&lock), Some(true));
        drop(first);
        assert_eq!(is_held(&lock), Some(false));
        RunLock::acquire(&lock).unwrap();
    }

    #[test]
    fn a_read_only_lock_excludes_writers_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let lock = InstallRoot::new(dir.path()).lock_file();
        std::fs::create_dir(dir.path().join("Config")).unwrap();
        assert!(RunLock::acquire_read_only(&lock).unwrap().is_none());
        assert!(!lock.exists());
        drop(RunLock::acquire(&lock).unwrap());
        let reader = RunLock::acquire_read_only(&lock).unwrap().unwrap();
        let writer = RunLock::acquire(&lock).unwrap_err();
        assert_eq!(writer.exit_code(), crate::error::exit::LOCKED);
        drop(reader);
        RunLock::acquire(&lock).unwrap();
    }
}
