//! The seam where a test watches every change the agent makes to its files
//! (the store and state file in `Config/`, the run record in `Spool/`, the
//! logs in `Spool/Logs/`): `tests/power_loss.rs` records them and rebuilds
//! the states a power cut could leave. `files` reports its operations here
//! and the job store's redb file is written through [`TappedBackend`].
//!
//! Production installs no tap: each report is one thread-local lookup that
//! finds nothing. A tap is installed only through [`install`], from Rust;
//! nothing in the INI or on the command line reaches it. The tap is the
//! installing thread's: a file operation on another thread (a log line a
//! reporter-output or probe thread writes) is not reported to it.

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};
/// redb's I/O error type of a backend (std builds).
type BackendIoError = std::io::Error;
use std::cell::RefCell;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// One file operation, as the agent hands it to the kernel.
#[derive(Debug)]
pub enum Event<'a> {
    /// A new, empty file.
    Create(&'a Path),
    Write {
        path: &'a Path,
        offset: u64,
        data: &'a [u8],
    },
    SetLen {
        path: &'a Path,
        len: u64,
    },
    /// `fsync`/`fdatasync` of the file.
    Sync(&'a Path),
    Rename {
        from: &'a Path,
        to: &'a Path,
    },
    Remove(&'a Path),
    /// `fsync` of the folder.
    SyncDir(&'a Path),
}

/// What a test installs to hear the agent's file operations.
pub trait Tap {
    fn event(&self, event: &Event<'_>);
}

thread_local! {
    static TAP: RefCell<Option<Rc<dyn Tap>>> = const { RefCell::new(None) };
}

/// Installs `tap` for the calling thread (the thread a run's file changes
/// happen on); `None` removes it.
pub fn install(tap: Option<Rc<dyn Tap>>) {
    TAP.with(|t| *t.borrow_mut() = tap);
}

/// Reports an operation that succeeded.
pub(crate) fn report(event: Event<'_>) {
    let tap = TAP.with(|t| t.borrow().clone());
    if let Some(tap) = tap {
        tap.event(&event);
    }
}

/// redb's `FileBackend` that reports its writes, length changes and syncs.
#[derive(Debug)]
pub(crate) struct TappedBackend {
    inner: FileBackend,
    path: PathBuf,
    /// While this is true, syncs are skipped (`files::new_store_backend`).
    syncs_held: Option<Arc<AtomicBool>>,
}

impl TappedBackend {
    pub(crate) fn new(
        file: std::fs::File,
        path: &Path,
        syncs_held: Option<Arc<AtomicBool>>,
    ) -> Result<TappedBackend, redb::DatabaseError> {
        Ok(TappedBackend {
            inner: FileBackend::new(file)?,
            path: path.to_path_buf(),
            syncs_held,
        })
    }
}

impl StorageBackend for TappedBackend {
    fn len(&self) -> Result<u64, BackendIoError> {
        self.inner.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), BackendIoError> {
        self.inner.read(offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), BackendIoError> {
        self.inner.set_len(len)?;
        report(Event::SetLen {
            path: &self.path,
            len,
        });
        Ok(())
    }

    fn sync_data(&self) -> Result<(), BackendIoError> {
        if self
            .syncs_held
            .as_ref()
            .is_some_and(|held| held.load(Ordering::Acquire))
        {
            return Ok(());
        }
        self.inner.sync_data()?;
        report(Event::Sync(&self.path));
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), BackendIoError> {
        self.inner.write(offset, data)?;
        report(Event::Write {
            path: &self.path,
            offset,
            data,
        });
        Ok(())
    }

    fn close(&self) -> Result<(), BackendIoError> {
        self.inner.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(start, end)
    }
}
