//! The local job store `Config/backupjobs.db` (PROTOCOL section 3).
//!
//! Invariants kept here:
//! - The live file is only ever replaced whole: a new profile is written into
//!   a fresh file beside it (`backupjobs.db.new`), committed, and renamed over
//!   the old one. A kill at any moment leaves the old file or the new one,
//!   never a mix, and readers holding the old file keep a consistent view.
//! - An unchanged profile (304, or a 200 whose records are byte for byte the
//!   stored ones, in the same order) never touches the live file: not its
//!   bytes, not its mtime (flash wear); nor does it create a new one
//!   (`replace.rs` writes nothing before the first difference).
//! - Files are created with mode 0600: the store holds credentials.

mod blocks;
mod damage;
mod dry_run;
pub mod etag;
mod index;
mod old;
pub mod reader;
pub mod record;
mod replace;
mod seen;
mod tables;

pub use damage::exit_on_store_damage;
pub use reader::{Jobs, StoreReader};
pub use replace::Replacement;
pub use tables::{STORE_SCHEMA, StoreMeta};

use crate::error::{Error, Result};
use crate::files::{self, io_error};
use crate::profile::Summary;
use crate::state::{Section, StateFile};
use damage::Watch;
use reader::OpenError;
use std::path::{Path, PathBuf};

/// redb's default cache is 1 GiB; the agent's memory budget is a few MiB.
/// This one is for a repair (a new file has its own, `replace.rs`).
const REPAIR_CACHE_BYTES: usize = 64 * 1024;

/// One job-level difference between the stored profile and a new one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change<'a> {
    Added { id: &'a str, name: &'a str },
    Changed { id: &'a str, name: &'a str },
    Removed { id: &'a str },
}

/// Counts of job-level differences.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Diff {
    pub added: u64,
    pub changed: u64,
    pub removed: u64,
    pub unchanged: u64,
}

impl std::fmt::Display for Diff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} added, {} changed, {} removed, {} unchanged",
            self.added, self.changed, self.removed, self.unchanged
        )
    }
}

/// How a profile replacement ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replaced {
    /// Same records as the store: nothing was written.
    Unchanged(Summary),
    /// The new profile is the store now.
    Written(Summary, Diff),
    /// A dry run: the profile is valid, nothing was written.
    DryRun(Summary, Diff),
}

/// What to do with a valid new profile.
#[derive(Clone, Debug, Default)]
pub struct ReplaceOptions {
    /// The signed manifest's `version` and `sha256` (PROTOCOL 8.2), kept in
    /// the store's meta; `None` without a trusted root. A profile whose
    /// records are unchanged but whose manifest differs is written.
    pub version: Option<u64>,
    pub sha256: Option<[u8; 32]>,
    /// Write even when the content is unchanged (`--recreate`, schema change).
    pub force: bool,
    pub dry_run: bool,
    /// Unix time the profile is accepted at.
    pub now: u64,
}

/// The job store of one run.
pub struct JobStore {
    path: PathBuf,
    current: Option<StoreReader>,
    meta: Option<StoreMeta>,
    /// A writing run moves the store aside if redb finds it damaged.
    _watch: Watch,
}

impl JobStore {
    /// Opens the store at `path` for a run. A damaged file is moved aside to
    /// `backupjobs.db.corrupt-<UTC time>` (logged as an error) and the run
    /// starts from an empty store; with `may_write` false (dry runs) it is
    /// left in place and treated as empty. With `may_write`, a temporary
    /// file an interrupted run left beside the store is removed first.
    pub fn open(path: &Path, may_write: bool, now: u64) -> Result<JobStore> {
        let watch = damage::watch(path, may_write.then_some(now));
        if may_write {
            // A killed run leaves its temporary file; remove it now, not only
            // when a new profile comes (a 304 run would keep it for good).
            // The caller holds the run lock: no other run is writing it.
            // (`.db.dryrun`: older agents wrote one for each dry run.)
            for suffix in ["new", "dryrun"] {
                let tmp = path.with_extension(format!("db.{suffix}"));
                match files::remove(&tmp) {
                    Ok(true) => log::debug!("removed {} left by an interrupted run", tmp.display()),
                    Ok(false) => {}
                    Err(e) => log::warn!("cannot remove {}: {e}", tmp.display()),
                }
            }
        }
        let mut attempt = StoreReader::open_checked(path);
        if matches!(attempt, Err(OpenError::NeedsRepair)) && may_write {
            log::warn!("{} was not closed cleanly; repairing it", path.display());
            attempt = repair(path).and_then(|()| StoreReader::open_checked(path));
        }
        let current = match attempt {
            Ok(r) => r,
            Err(OpenError::Failed(e)) => return Err(e),
            Err(OpenError::NeedsRepair) => {
                log::warn!(
                    "{} needs a repair; a dry run treats it as empty",
                    path.display()
                );
                None
            }
            Err(OpenError::Corrupt(why)) if may_write => {
                let aside = files::move_aside(path, now)?;
                log::error!(
                    "{} was damaged ({why}); moved it to {} and rebuilding from a full download",
                    path.display(),
                    aside.display()
                );
                None
            }
            Err(OpenError::Corrupt(why)) => {
                log::warn!(
                    "{} is damaged ({why}); a dry run treats it as empty",
                    path.display()
                );
                None
            }
        };
        let meta = match &current {
            Some(r) => r.meta()?,
            None => None,
        };
        Ok(JobStore {
            path: path.to_path_buf(),
            current,
            meta,
            _watch: watch,
        })
    }

    /// What the store holds; `None` if no profile was ever accepted.
    pub fn meta(&self) -> Option<&StoreMeta> {
        self.meta.as_ref()
    }

    /// The ETag to send as `If-None-Match`: the state's, only when it came
    /// with the content this store holds (see `etag`).
    pub fn etag<'s>(&self, state: &'s StateFile) -> Option<&'s str> {
        etag::current(self.meta(), state)
    }

    /// Remembers `etag` (`None`: none was sent) as the one of the content the
    /// store now holds. Writes the state file only when that changes it: a
    /// few bytes when the same content comes under a new ETag.
    pub fn keep_etag(&self, state: &mut StateFile, etag: Option<&str>) -> Result<()> {
        let section = etag::section(self.meta(), etag);
        if section.is_none() && etag.is_some() {
            log::debug!("the ETag sent with the profile cannot be sent back; not kept");
        }
        state.put(Section::ETAG, section).map(drop)
    }

    /// True when the store is of another schema and must be rebuilt.
    pub fn needs_rebuild(&self) -> bool {
        self.meta.as_ref().is_some_and(|m| m.schema != STORE_SCHEMA)
    }

    pub fn reader(&self) -> Option<&StoreReader> {
        self.current.as_ref()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts replacing the stored profile: feed the new one to the
    /// returned `Replacement` (a `ProfileSink`), then `finish` it; dropped
    /// unfinished, it changes nothing. A changed profile (or with `force`)
    /// is written into a fresh file beside the store and renamed over it;
    /// until the first job or endpoint that differs from the stored one,
    /// nothing is written. `on_change` hears every job-level difference as
    /// it is found. A dry run writes nothing at all (`dry_run.rs`).
    pub fn begin_replace<'s>(
        &'s mut self,
        opts: &ReplaceOptions,
        on_change: &'s mut dyn FnMut(Change<'_>),
    ) -> Result<Replacement<'s>> {
        Replacement::new(self, opts, on_change)
    }

    fn reopen(&mut self) -> Result<()> {
        self.current = match StoreReader::open_checked(&self.path) {
            Ok(r) => r,
            Err(OpenError::Failed(e)) => return Err(e),
            Err(_) => {
                return Err(Error::Store(
                    format!(
                        "{} cannot be read back after it was written",
                        self.path.display()
                    )
                    .into(),
                ));
            }
        };
        self.meta = match &self.current {
            Some(r) => r.meta()?,
            None => None,
        };
        Ok(())
    }

    /// Makes the committed file `tmp` the store: the one atomic step of
    /// every change to the store.
    fn install(&mut self, tmp: &Path) -> Result<()> {
        // The reader of the old file must go before the rename: afterwards
        // it would read a file that is no longer the store.
        self.current = None;
        files::rename_into_place(tmp, &self.path)?;
        self.reopen()
    }
}

/// redb repairs a file that was not closed cleanly when it is opened for
/// writing; the repair is its own crash-safe commit.
fn repair(path: &Path) -> std::result::Result<(), OpenError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| OpenError::Failed(io_error(path, "cannot open for repair", &e)))?;
    let backend =
        files::store_backend(file, path).map_err(|e| OpenError::Corrupt(e.to_string()))?;
    redb::Builder::new()
        .set_cache_size(REPAIR_CACHE_BYTES)
        .create_with_backend(backend)
        .map(drop)
        .map_err(|e| OpenError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests;
