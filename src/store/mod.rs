//! The local job store `Config/backupjobs.db` (PROTOCOL section 3).
//!
//! Invariants kept here:
//! - The live file is only ever replaced whole: a new profile is written into
//!   a fresh file beside it (`backupjobs.db.new`), committed, and renamed over
//!   the old one. A kill at any moment leaves the old file or the new one,
//!   never a mix, and readers holding the old file keep a consistent view.
//! - An unchanged profile (304, or a 200 whose records are byte for byte the
//!   stored ones, in the same order) never touches the live file: not its
//!   bytes, not its mtime (flash wear).
//! - Files are created with mode 0600: the store holds credentials.

mod dry_run;
pub mod etag;
mod old;
pub mod reader;
pub mod record;
mod seen;
mod tables;

pub use reader::{Jobs, StoreReader};
pub use tables::{STORE_SCHEMA, StoreMeta};

use crate::error::{Error, Result};
use crate::files::{self, create_private, io_error, remove_leftover};
use crate::profile::{Endpoint, Header, Job, ProfileSink, Summary};
use crate::state::{Section, StateFile};
use old::{OldJobs, compare, duplicate, read_error};
use reader::{OpenError, storage_error};
use redb::ReadableTable;
use std::ops::Range;
use std::path::{Path, PathBuf};
use tables::{ENDPOINTS, JOB_IDS, JOBS, META, position_key};

/// Jobs per transaction while a new store file is written.
const COMMIT_EVERY: u32 = 8192;
/// New jobs are held back and written a batch at a time, each table opened
/// once per batch: opening one (and writing its root back when it is
/// dropped) costs about as much as two inserts. A batch ends at this many
/// jobs or bytes of records (or one bigger job).
const BATCH_JOBS: usize = 64;
const BATCH_BYTES: usize = 32 * 1024;
/// redb's default cache is 1 GiB; the agent's memory budget is a few MiB.
/// Dirty pages beyond this spill to the new file before commit.
const WRITE_CACHE_BYTES: usize = 64 * 1024;

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
}

impl JobStore {
    /// Opens the store at `path` for a run. A damaged file is moved aside to
    /// `backupjobs.db.corrupt-<UTC time>` (logged as an error) and the run
    /// starts from an empty store; with `may_write` false (dry runs) it is
    /// left in place and treated as empty. With `may_write`, a temporary
    /// file an interrupted run left beside the store is removed first.
    pub fn open(path: &Path, may_write: bool, now: u64) -> Result<JobStore> {
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

    /// Streams a new profile into a fresh file via `parse` (which drives the
    /// sink), then, if it is complete and differs from the store (or `force`),
    /// makes it the store. Any error leaves the live file as it was.
    /// `on_change` hears every job-level difference as it is found.
    /// A dry run writes nothing at all: it only compares (`dry_run.rs`).
    pub fn replace(
        &mut self,
        opts: &ReplaceOptions,
        on_change: &mut dyn FnMut(Change<'_>),
        parse: impl FnOnce(&mut dyn ProfileSink) -> Result<Summary>,
    ) -> Result<Replaced> {
        if opts.dry_run {
            return dry_run::diff(self, opts.force, on_change, parse);
        }
        let tmp = self.path.with_extension("db.new");
        let result = self.write_new(&tmp, opts, on_change, parse);
        let keep = matches!(result, Ok(Replaced::Written(..)));
        if !keep {
            // Best effort: a leftover is removed by the next run anyway.
            let _ = files::remove(&tmp);
            return result;
        }
        self.install(&tmp)?;
        result
    }

    fn reopen(&mut self) -> Result<()> {
        self.current = match StoreReader::open_checked(&self.path) {
            Ok(r) => r,
            Err(OpenError::Failed(e)) => return Err(e),
            Err(_) => {
                return Err(Error::Store(format!(
                    "{} cannot be read back after it was written",
                    self.path.display()
                )));
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

    fn write_new(
        &self,
        tmp: &Path,
        opts: &ReplaceOptions,
        on_change: &mut dyn FnMut(Change<'_>),
        parse: impl FnOnce(&mut dyn ProfileSink) -> Result<Summary>,
    ) -> Result<Replaced> {
        remove_leftover(tmp)?;
        let file = create_private(tmp)?;
        let db = redb::Builder::new()
            .set_cache_size(WRITE_CACHE_BYTES)
            .create_with_backend(
                files::store_backend(file, tmp)
                    .map_err(|e| storage_error(tmp, "cannot create", e))?,
            )
            .map_err(|e| storage_error(tmp, "cannot create", e))?;
        let werr = |e: redb::TableError| write_err(tmp, e);
        let old = OldJobs::open(self)?;
        let (txn, summary, header, mut diff, same) = {
            let mut sink = StoreSink {
                path: tmp,
                db: &db,
                txn: Some(db.begin_write().map_err(|e| write_err(tmp, e))?),
                in_batch: 0,
                old,
                matched: 0,
                seen: seen::Seen::new(),
                pending: Vec::new(),
                pending_bytes: Vec::new(),
                buf: Vec::new(),
                old_buf: Vec::new(),
                next_job: 0,
                next_endpoint: 0,
                header: None,
                diff: Diff::default(),
                on_change,
            };
            let summary = match parse(&mut sink) {
                // A write that failed for a job held back in the batch
                // happened before whatever the parser found after it.
                Err(e) => return Err(sink.flush().err().unwrap_or(e)),
                Ok(s) => s,
            };
            sink.flush()?;
            let removed = sink.find_removed()?;
            sink.diff.removed = removed;
            let same = match &mut sink.old {
                Some(old) => old.unchanged()?,
                None => false,
            };
            let Some(txn) = sink.txn.take() else {
                return Err(Error::Store(format!(
                    "{}: an earlier write failed",
                    tmp.display()
                )));
            };
            (txn, summary, sink.header.take(), sink.diff, same)
        };
        if self.meta.is_none() {
            diff.removed = 0;
        }
        let unchanged = !opts.force
            && same
            && self
                .meta
                .as_ref()
                .is_some_and(|m| (m.version, m.sha256) == (opts.version, opts.sha256));
        if unchanged {
            return Ok(Replaced::Unchanged(summary));
        }
        let header = header.unwrap_or_default();
        let meta = StoreMeta {
            schema: STORE_SCHEMA,
            device: header.device.to_string(),
            generated: header.generated.to_string(),
            accepted: opts.now,
            id: new_id(tmp)?,
            jobs: summary.jobs as u64,
            endpoints: summary.endpoints as u64,
            version: opts.version,
            sha256: opts.sha256,
        };
        {
            let mut table = txn.open_table(META).map_err(werr)?;
            meta.write(&mut table).map_err(|e| write_err(tmp, e))?;
        }
        txn.commit().map_err(|e| write_err(tmp, e))?;
        drop(db);
        Ok(Replaced::Written(summary, diff))
    }
}

/// A new store's random id (`StoreMeta::id`).
fn new_id(path: &Path) -> Result<[u8; 16]> {
    use ring::rand::SecureRandom;
    let mut id = [0; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut id)
        .map_err(|_| storage_error(path, "cannot make an id", "no random numbers"))?;
    Ok(id)
}

/// redb repairs a file that was not closed cleanly when it is opened for
/// writing; the repair is its own crash-safe commit.
fn repair(path: &Path) -> std::result::Result<(), OpenError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| OpenError::Failed(io_error(path, "cannot open for repair", &e)))?;
    reader::guarded(|| {
        let backend =
            files::store_backend(file, path).map_err(|e| OpenError::Corrupt(e.to_string()))?;
        redb::Builder::new()
            .set_cache_size(WRITE_CACHE_BYTES)
            .create_with_backend(backend)
            .map(drop)
            .map_err(|e| OpenError::Corrupt(e.to_string()))
    })
}

/// Receives the parsed profile and writes it into the new store file.
pub struct StoreSink<'a> {
    path: &'a Path,
    db: &'a redb::Database,
    txn: Option<redb::WriteTransaction>,
    /// Jobs written since `txn` began.
    in_batch: u32,
    old: Option<OldJobs>,
    /// New jobs whose id is in the stored profile.
    matched: u64,
    /// The ids of the new jobs, written or pending.
    seen: seen::Seen,
    /// Jobs not yet written: position, then ranges of id and record in
    /// `pending_bytes`.
    pending: Vec<(u32, Range<usize>, Range<usize>)>,
    pending_bytes: Vec<u8>,
    buf: Vec<u8>,
    old_buf: Vec<u8>,
    next_job: u32,
    next_endpoint: u32,
    header: Option<Header>,
    diff: Diff,
    on_change: &'a mut dyn FnMut(Change<'_>),
}

/// A failed write into the new store file. redb hands back the I/O error
/// itself, so a full disk is told by its kind (`files::io_error`), not by
/// matching message text, which differs between platforms and libcs.
fn write_err(path: &Path, e: impl Into<redb::Error>) -> Error {
    match e.into() {
        redb::Error::Io(io) => crate::files::io_error(path, "cannot write", &io),
        other => storage_error(path, "cannot write", other),
    }
}

impl StoreSink<'_> {
    /// Commits the jobs so far into the new file and starts the next
    /// transaction. redb tracks every page a transaction allocates, so one
    /// transaction for 100 000 jobs would grow memory with the profile; the
    /// new file is invisible until it is renamed, so these intermediate
    /// commits change nothing for readers or for crash safety.
    fn commit_batch(&mut self) -> Result<()> {
        if let Some(txn) = self.txn.take() {
            txn.commit().map_err(|e| write_err(self.path, e))?;
        }
        self.txn = Some(self.db.begin_write().map_err(|e| write_err(self.path, e))?);
        self.in_batch = 0;
        Ok(())
    }

    /// The open transaction; gone only after a failed batch commit, which
    /// already ended the replacement with an error.
    fn txn(&self) -> Result<&redb::WriteTransaction> {
        self.txn.as_ref().ok_or_else(|| {
            Error::Store(format!("{}: an earlier write failed", self.path.display()))
        })
    }

    /// Old ids that the new profile does not have. Ids are unique in both
    /// profiles, so their number is known without a look at each.
    fn find_removed(&mut self) -> Result<u64> {
        let Some(OldJobs {
            ids: Some(old_ids),
            count,
            ..
        }) = &self.old
        else {
            return Ok(0);
        };
        if *count <= self.matched {
            return Ok(0);
        }
        let read = read_error;
        let Some(txn) = &self.txn else {
            return Err(Error::Store(format!(
                "{}: an earlier write failed",
                self.path.display()
            )));
        };
        let new_ids = txn
            .open_table(JOB_IDS)
            .map_err(|e| write_err(self.path, e))?;
        let mut removed = 0;
        for entry in old_ids.iter().map_err(read)? {
            let (id, _) = entry.map_err(read)?;
            let id = id.value();
            if new_ids.get(id).map_err(read)?.is_none() {
                let id = String::from_utf8_lossy(id);
                removed += 1;
                (self.on_change)(Change::Removed { id: &id });
            }
        }
        Ok(removed)
    }
}

impl StoreSink<'_> {
    /// Writes the pending jobs, each table opened once. After an error
    /// they are gone (the whole replacement failed), so a second call does
    /// not write them again.
    fn flush(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut pending = std::mem::take(&mut self.pending);
        let mut bytes = std::mem::take(&mut self.pending_bytes);
        self.write_pending(&pending, &bytes)?;
        self.in_batch += pending.len() as u32;
        // Kept for their capacity.
        pending.clear();
        bytes.clear();
        self.pending = pending;
        self.pending_bytes = bytes;
        Ok(())
    }

    fn write_pending(
        &mut self,
        pending: &[(u32, Range<usize>, Range<usize>)],
        bytes: &[u8],
    ) -> Result<()> {
        if self.in_batch >= COMMIT_EVERY {
            self.commit_batch()?;
        }
        let path = self.path;
        let werr = |e: redb::StorageError| write_err(path, e);
        let txn = self.txn()?;
        let part = |r: &Range<usize>| bytes.get(r.clone()).unwrap_or_default();
        {
            let mut ids = txn.open_table(JOB_IDS).map_err(|e| write_err(path, e))?;
            for (seq, id, _) in pending {
                // `seen` let no repeated id through; this is its backstop.
                if ids
                    .insert(part(id), seq.to_le_bytes().as_slice())
                    .map_err(werr)?
                    .is_some()
                {
                    return Err(duplicate(&String::from_utf8_lossy(part(id))));
                }
            }
        }
        {
            let mut jobs = txn.open_table(JOBS).map_err(|e| write_err(path, e))?;
            for (seq, _, rec) in pending {
                jobs.insert(position_key(*seq).as_slice(), part(rec))
                    .map_err(werr)?;
            }
        }
        Ok(())
    }

    /// True when a job with this id is already written or pending.
    fn holds_id(&mut self, id: &[u8]) -> Result<bool> {
        self.flush()?;
        let table = self
            .txn()?
            .open_table(JOB_IDS)
            .map_err(|e| write_err(self.path, e))?;
        Ok(table
            .get(id)
            .map_err(|e| write_err(self.path, e))?
            .is_some())
    }
}

impl ProfileSink for StoreSink<'_> {
    fn header(&mut self, header: &Header) -> Result<()> {
        self.header = Some(header.clone());
        Ok(())
    }

    fn endpoint(&mut self, endpoint: &Endpoint) -> Result<()> {
        let path = self.path;
        record::encode_endpoint(endpoint, &mut self.buf);
        if let Some(old) = &mut self.old {
            old.endpoint(&self.buf)?;
        }
        let seq = self.next_endpoint;
        self.txn()?
            .open_table(ENDPOINTS)
            .map_err(|e| write_err(path, e))?
            .insert(position_key(seq).as_slice(), self.buf.as_slice())
            .map_err(|e| write_err(path, e))?;
        self.next_endpoint += 1;
        Ok(())
    }

    fn job(&mut self, job: &Job) -> Result<()> {
        let id = job.id.as_bytes();
        if self.seen.may_hold(id) && self.holds_id(id)? {
            return Err(duplicate(&job.id));
        }
        self.seen.insert(id);
        record::encode_job(job, &mut self.buf);
        let at = self.pending_bytes.len();
        self.pending_bytes.extend_from_slice(id);
        self.pending_bytes.extend_from_slice(&self.buf);
        let end = self.pending_bytes.len();
        self.pending
            .push((self.next_job, at..at + id.len(), at + id.len()..end));
        self.next_job += 1;
        if self.pending.len() >= BATCH_JOBS || end >= BATCH_BYTES {
            self.flush()?;
        }
        let old = match &mut self.old {
            Some(old) => old
                .find(&job.id, &self.buf, &mut self.old_buf)?
                .map(|_| self.old_buf.as_slice()),
            None => None,
        };
        self.matched += u64::from(old.is_some());
        let change = compare(&mut self.diff, job, old, &self.buf);
        if let Some(c) = change {
            (self.on_change)(c);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROFILE: &str = "<profile schema=\"3\" device=\"D\"><jobs>\
        <job id=\"1\" name=\"a\" type=\"CCS\"/></jobs></profile>";

    fn replace(store: &mut JobStore, version: Option<u64>, sha256: Option<[u8; 32]>) -> Replaced {
        let opts = ReplaceOptions {
            version,
            sha256,
            ..ReplaceOptions::default()
        };
        store
            .replace(&opts, &mut |_| {}, |sink| {
                crate::profile::parse(PROFILE.as_bytes(), "D", sink)
            })
            .unwrap()
    }

    #[test]
    fn the_signed_version_and_digest_are_kept_and_a_new_manifest_is_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backupjobs.db");
        let mut store = JobStore::open(&path, true, 0).unwrap();
        assert!(matches!(
            replace(&mut store, None, None),
            Replaced::Written(..)
        ));
        let meta = store.meta().unwrap();
        assert_eq!((meta.version, meta.sha256), (None, None));
        assert!(matches!(
            replace(&mut store, None, None),
            Replaced::Unchanged(..)
        ));

        // Same records, now signed: the store takes the manifest.
        assert!(matches!(
            replace(&mut store, Some(7), Some([9; 32])),
            Replaced::Written(..)
        ));
        assert!(matches!(
            replace(&mut store, Some(7), Some([9; 32])),
            Replaced::Unchanged(..)
        ));
        let reopened = JobStore::open(&path, false, 0).unwrap();
        let meta = reopened.meta().unwrap();
        assert_eq!((meta.version, meta.sha256), (Some(7), Some([9; 32])));
        assert_eq!(meta.schema, STORE_SCHEMA);
    }
}
