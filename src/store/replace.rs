//! A profile replacement: [`Replacement`], made by `JobStore::begin_replace`,
//! fed the new profile (it is the parser's `ProfileSink`), then `finish`ed;
//! dropped unfinished, it is abandoned and the live store stays as it was.
//!
//! Flash writes (README "Reliability"):
//! - While every record so far is the stored one at the same position and
//!   the profile may still turn out unchanged, nothing is written: the new
//!   file is created at the first difference, starting with a copy of the
//!   stored jobs and endpoints before it. An unchanged profile creates no
//!   file at all.
//! - Every table is filled in key order (document positions; the id index
//!   in sorted runs, `index.rs`), so that redb, whose write buffer holds a
//!   few pages, writes each page about once.

use super::blocks;
use super::dry_run::DryRunSink;
use super::index::{self, LookupError, id_hash};
use super::old::{OldJobs, compare, duplicate};
use super::reader::{storage_error, storage_failure};
use super::seen::Seen;
use super::tables::{ENDPOINTS, JOB_IDS, JOBS, META, position_key};
use super::{Change, Diff, JobStore, ReplaceOptions, Replaced, STORE_SCHEMA, StoreMeta, record};
use crate::error::{Error, Result};
use crate::files::{self, create_private, remove_leftover};
use crate::profile::{Endpoint, Header, Job, ProfileSink, Summary};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Jobs per durable commit while a new store file is written (see
/// `NewFile::commit_step`).
const COMMIT_EVERY: u32 = 8192;
/// redb's cache for the new file. redb writes the pages of a transaction
/// again at its commit (to store their checksums) if its write buffer,
/// half of this, had to spill them before; and it spills pages of no
/// particular age, the ones still being filled among them. Measured with
/// `store::tests` on store schema 5 (first profiles of twelve sizes from
/// 1 000 to 100 000 jobs): 128 KiB wrote up to 1.55 times the store,
/// 256 KiB up to 1.29 (at 40 000 jobs). (Schema 3, 2 000 / 5 000 to
/// 40 000 / 100 000 jobs: 128 KiB 1.40 / - / 1.31, 192 KiB 1.16 / 1.33 to
/// 1.37 / 1.02, 256 KiB 1.07 / 1.18 to 1.21 / 0.92.)
const NEW_FILE_CACHE_BYTES: usize = 256 * 1024;
/// New jobs are held back and written a batch at a time, as blocks
/// (`blocks.rs`), the `jobs` table opened and the transaction committed
/// once per batch. A batch ends at this many jobs or bytes of records (or
/// one bigger job); the last, unfilled block of a batch waits for the next
/// one.
const BATCH_JOBS: usize = 256;
const BATCH_BYTES: usize = 32 * 1024;
/// Room beyond `BATCH_BYTES` for the job that ends a batch: a bigger one
/// (rare) grows the buffer.
const BATCH_SLACK: usize = 4 * 1024;

/// A replacement of the stored profile under way (see the module header).
pub struct Replacement<'s> {
    sink: Sink<'s>,
}

enum Sink<'s> {
    Write(Box<Writer<'s>>),
    DryRun(Box<DryRunSink<'s>>),
}

impl<'s> Replacement<'s> {
    pub(super) fn new(
        store: &'s mut JobStore,
        opts: &ReplaceOptions,
        on_change: &'s mut dyn FnMut(Change<'_>),
    ) -> Result<Replacement<'s>> {
        let sink = if opts.dry_run {
            Sink::DryRun(Box::new(DryRunSink::new(store, opts.force, on_change)?))
        } else {
            Sink::Write(Box::new(Writer::new(store, opts, on_change)?))
        };
        Ok(Replacement { sink })
    }

    /// Ends the replacement with the parser's verdict on the whole document:
    /// on `Ok`, a changed (or forced) profile becomes the store; on `Err`,
    /// nothing changes and the error is returned (or the error of an
    /// earlier write of a job held back in a batch, which happened first).
    pub fn finish(self, parsed: Result<Summary>) -> Result<Replaced> {
        match self.sink {
            Sink::Write(w) => w.finish(parsed),
            Sink::DryRun(d) => d.finish(parsed?),
        }
    }
}

impl ProfileSink for Replacement<'_> {
    fn header(&mut self, header: &Header) -> Result<()> {
        match &mut self.sink {
            Sink::Write(w) => w.header(header),
            Sink::DryRun(d) => d.header(header),
        }
    }

    fn endpoint(&mut self, endpoint: &Endpoint) -> Result<()> {
        match &mut self.sink {
            Sink::Write(w) => w.endpoint(endpoint),
            Sink::DryRun(d) => d.endpoint(endpoint),
        }
    }

    fn job(&mut self, job: &Job) -> Result<()> {
        match &mut self.sink {
            Sink::Write(w) => w.job(job),
            Sink::DryRun(d) => d.job(job),
        }
    }
}

/// Compares the new profile with the stored one and writes it, from its
/// first difference on, into the new file.
struct Writer<'s> {
    store: &'s mut JobStore,
    tmp: PathBuf,
    opts: ReplaceOptions,
    on_change: &'s mut dyn FnMut(Change<'_>),
    old: Option<OldJobs>,
    /// The profile is unchanged if its records all are the stored ones: a
    /// profile is stored, not forced, and under the same manifest.
    may_be_unchanged: bool,
    /// The new file; `None` until the first difference.
    new: Option<NewFile>,
    /// New jobs whose id is in the stored profile.
    matched: u64,
    next_job: u32,
    next_endpoint: u32,
    header: Option<Header>,
    diff: Diff,
    buf: Vec<u8>,
    old_buf: Vec<u8>,
}

impl<'s> Writer<'s> {
    fn new(
        store: &'s mut JobStore,
        opts: &ReplaceOptions,
        on_change: &'s mut dyn FnMut(Change<'_>),
    ) -> Result<Writer<'s>> {
        let old = OldJobs::open(store)?;
        let may_be_unchanged = old.is_some()
            && !opts.force
            && store
                .meta
                .as_ref()
                .is_some_and(|m| (m.version, m.sha256) == (opts.version, opts.sha256));
        Ok(Writer {
            tmp: store.path.with_extension("db.new"),
            store,
            opts: opts.clone(),
            on_change,
            old,
            may_be_unchanged,
            new: None,
            matched: 0,
            next_job: 0,
            next_endpoint: 0,
            header: None,
            diff: Diff::default(),
            buf: Vec::new(),
            old_buf: Vec::new(),
        })
    }

    /// True while nothing needs writing: every record so far is the stored
    /// one at its position, and that may still make the profile unchanged.
    fn unchanged_so_far(&self) -> bool {
        self.new.is_none() && self.may_be_unchanged && self.old.as_ref().is_some_and(OldJobs::same)
    }

    /// The new file, created at the first call with a copy of the stored
    /// jobs and endpoints so far (equal to the new ones, see `job`).
    fn new_file(&mut self) -> Result<&mut NewFile> {
        // Called for every record: `take` and `insert` would move the
        // whole `NewFile` twice each time.
        if self.new.is_none() {
            let mut file = NewFile::create(&self.tmp)?;
            if let Some(old) = &self.old {
                file.copy_prefix(old, self.next_job, self.next_endpoint)?;
            }
            self.new = Some(file);
        }
        self.new.as_mut().ok_or_else(|| broken(&self.tmp))
    }

    fn finish(mut self, parsed: Result<Summary>) -> Result<Replaced> {
        let summary = match parsed {
            Ok(s) => s,
            // A write that failed for a job held back in the batch
            // happened before whatever the parser found after it.
            Err(e) => {
                return Err(match &mut self.new {
                    Some(new) => new.flush(true).err().unwrap_or(e),
                    None => e,
                });
            }
        };
        let mut unchanged = self.unchanged_so_far();
        if let Some(old) = &mut self.old {
            if self.matched < old.count {
                self.diff.removed = old.report_removed(self.on_change)?;
            }
            unchanged &= old.unchanged()?;
        }
        if unchanged {
            return Ok(Replaced::Unchanged(summary));
        }
        let header = self.header.take().unwrap_or_default();
        let meta = StoreMeta {
            schema: STORE_SCHEMA,
            device: header.device.to_string(),
            generated: header.generated.to_string(),
            accepted: self.opts.now,
            id: new_id(&self.tmp)?,
            jobs: summary.jobs as u64,
            endpoints: summary.endpoints as u64,
            version: self.opts.version,
            sha256: self.opts.sha256,
        };
        self.new_file()?.commit(&meta)?;
        // The stored profile's tables must be let go before the rename.
        self.old = None;
        self.store.install(&self.tmp)?;
        Ok(Replaced::Written(summary, self.diff))
    }
}

impl ProfileSink for Writer<'_> {
    fn header(&mut self, header: &Header) -> Result<()> {
        self.header = Some(header.clone());
        Ok(())
    }

    fn endpoint(&mut self, endpoint: &Endpoint) -> Result<()> {
        record::encode_endpoint(endpoint, &mut self.buf);
        if let Some(old) = &mut self.old {
            old.endpoint(&self.buf)?;
        }
        if !self.unchanged_so_far() {
            let position = self.next_endpoint;
            let buf = std::mem::take(&mut self.buf);
            let written = self.new_file().and_then(|f| f.add_endpoint(position, &buf));
            self.buf = buf;
            written?;
        }
        self.next_endpoint += 1;
        Ok(())
    }

    fn job(&mut self, job: &Job) -> Result<()> {
        let id = job.id.as_bytes();
        let hash = id_hash(id);
        record::encode_job(job, &mut self.buf);
        let found = match &mut self.old {
            Some(old) => old.find(&job.id, hash, &self.buf, &mut self.old_buf)?,
            None => None,
        };
        // A job equal to the stored one at its position cannot repeat an
        // id: the ones before it are the stored ones before it, and stored
        // ids are unique.
        if !self.unchanged_so_far() {
            let position = self.next_job;
            let buf = std::mem::take(&mut self.buf);
            let written = self.new_file().and_then(|f| {
                if f.holds(id, hash)? {
                    return Err(duplicate(&job.id));
                }
                f.add_job(position, id, hash, &buf)
            });
            self.buf = buf;
            written?;
        }
        self.next_job += 1;
        if let (Some(p), Some(old)) = (found, &mut self.old) {
            old.mark(p);
            self.matched += 1;
        }
        let old = found.map(|_| self.old_buf.as_slice());
        if let Some(c) = compare(&mut self.diff, job, old, &self.buf) {
            (self.on_change)(c);
        }
        Ok(())
    }
}

/// The new store file being written (`backupjobs.db.new`); removed when
/// dropped before `commit`.
struct NewFile {
    path: PathBuf,
    /// The open transaction; gone only after a failed commit, which already
    /// ended the replacement with an error. Declared before `db`: dropped
    /// (aborted) first.
    txn: Option<redb::WriteTransaction>,
    db: Option<redb::Database>,
    /// True until the last commit (`files::new_store_backend`).
    syncs_held: Arc<AtomicBool>,
    /// Jobs written since the last durable commit.
    in_batch: u32,
    /// The ids of the new jobs, written or pending.
    seen: Seen,
    /// The id index run being filled.
    run: index::Run,
    /// Jobs not yet written: position, then ranges of id and record in
    /// `pending_bytes`.
    pending: Vec<(u32, Range<usize>, Range<usize>)>,
    pending_bytes: Vec<u8>,
    /// The block being written.
    block: Vec<u8>,
    scratch: Vec<u8>,
    committed: bool,
}

/// A failed write into the new store file. redb hands back the I/O error
/// itself, so a full disk is told by its kind (`files::io_error`), not by
/// matching message text, which differs between platforms and libcs.
fn write_err(path: &Path, e: impl Into<redb::Error>) -> Error {
    match e.into() {
        redb::Error::Io(io) => crate::files::io_error(path, "cannot write", &io),
        other => storage_failure(path, "cannot write", other),
    }
}

/// A failed lookup in the new file; `Damaged` means its index or blocks
/// read back other than they were written.
fn lookup_err(path: &Path, e: LookupError) -> Error {
    match e {
        LookupError::Storage(e) => write_err(path, e),
        LookupError::Damaged => Error::Store(
            format!(
                "{}: the id index being written is inconsistent",
                path.display()
            )
            .into(),
        ),
    }
}

/// The new file after a failed commit, which already ended the
/// replacement with an error.
fn broken(path: &Path) -> Error {
    Error::Store(format!("{}: an earlier write failed", path.display()).into())
}

impl NewFile {
    fn create(path: &Path) -> Result<NewFile> {
        remove_leftover(path)?;
        let file = create_private(path)?;
        let syncs_held = Arc::new(AtomicBool::new(true));
        let backend = files::new_store_backend(file, path, Arc::clone(&syncs_held))
            .map_err(|e| storage_failure(path, "cannot create", e))?;
        // From here on, dropping `NewFile` removes the file.
        let mut new = NewFile {
            path: path.to_path_buf(),
            txn: None,
            db: None,
            syncs_held,
            in_batch: 0,
            seen: Seen::new(),
            run: index::Run::new(),
            pending: Vec::new(),
            // Taken whole: growing it by doubling as the batch fills would
            // hold the old and the new buffer at once.
            pending_bytes: Vec::with_capacity(BATCH_BYTES + BATCH_SLACK),
            block: Vec::with_capacity(blocks::BLOCK_BYTES),
            scratch: Vec::new(),
            committed: false,
        };
        let db = redb::Builder::new()
            .set_cache_size(NEW_FILE_CACHE_BYTES)
            .create_with_backend(backend)
            .map_err(|e| storage_failure(path, "cannot create", e))?;
        new.txn = Some(db.begin_write().map_err(|e| write_err(path, e))?);
        new.db = Some(db);
        Ok(new)
    }

    /// Copies the stored profile's first `jobs` jobs and `endpoints`
    /// endpoints, which the new profile starts with.
    fn copy_prefix(&mut self, old: &OldJobs, jobs: u32, endpoints: u32) -> Result<()> {
        let mut position = 0;
        old.each_job(jobs, |rec| {
            let id = record::job_id(rec).ok_or_else(|| {
                Error::Store(
                    format!("the current store has a damaged job record at position {position}")
                        .into(),
                )
            })?;
            self.add_job(position, id, id_hash(id), rec)?;
            position += 1;
            Ok(())
        })?;
        let mut position = 0;
        old.each_endpoint(endpoints, |rec| {
            self.add_endpoint(position, rec)?;
            position += 1;
            Ok(())
        })
    }

    /// The open transaction (see `txn`).
    fn txn(&self) -> Result<&redb::WriteTransaction> {
        self.txn.as_ref().ok_or_else(|| broken(&self.path))
    }

    /// Commits what was inserted so far (a batch of jobs, or a step of an
    /// index run) and starts the next transaction. redb writes the pages of
    /// a transaction again at its commit (to store their checksums) when
    /// its write buffer had to spill them before: a step must fit in that
    /// buffer (`NEW_FILE_CACHE_BYTES`) for each page to be written about
    /// once. Steps are non-durable commits; every `COMMIT_EVERY` jobs one
    /// is durable, because redb remembers the pages of non-durable commits
    /// until a durable one, memory that would grow with the profile. (A
    /// durable commit for each step wrote more: it flushes the pages still
    /// being filled.) None of them syncs (`syncs_held`): the new file is
    /// invisible until it is renamed, so these intermediate commits change
    /// nothing for readers or for crash safety.
    fn commit_step(&mut self) -> Result<()> {
        let durable = self.in_batch >= COMMIT_EVERY;
        if let Some(mut txn) = self.txn.take() {
            if !durable {
                txn.set_durability(redb::Durability::None)
                    .map_err(|e| storage_failure(&self.path, "cannot write", e))?;
            }
            txn.commit().map_err(|e| write_err(&self.path, e))?;
        }
        let db = self.db.as_ref().ok_or_else(|| broken(&self.path))?;
        self.txn = Some(db.begin_write().map_err(|e| write_err(&self.path, e))?);
        if durable {
            self.in_batch = 0;
        }
        Ok(())
    }

    /// True when a job with id `id` (hash `hash`) is already written or
    /// pending: for most ids the Bloom filter says no; a "maybe" looks in
    /// the run being filled, then in the runs written.
    fn holds(&mut self, id: &[u8], hash: u64) -> Result<bool> {
        if !self.seen.may_hold(hash) {
            return Ok(false);
        }
        let path = self.path.as_path();
        for position in self.run.positions(hash) {
            if let Some((_, at, _)) = self.pending.iter().find(|(p, ..)| *p == position) {
                if self.pending_bytes.get(at.clone()) == Some(id) {
                    return Ok(true);
                }
                continue;
            }
            let txn = self.txn.as_ref().ok_or_else(|| broken(path))?;
            let jobs = txn.open_table(JOBS).map_err(|e| write_err(path, e))?;
            let found =
                blocks::get(&jobs, position, &mut self.scratch).map_err(|e| lookup_err(path, e))?;
            if found && record::job_id(&self.scratch) == Some(id) {
                return Ok(true);
            }
        }
        let txn = self.txn.as_ref().ok_or_else(|| broken(path))?;
        let ids = txn.open_table(JOB_IDS).map_err(|e| write_err(path, e))?;
        let jobs = txn.open_table(JOBS).map_err(|e| write_err(path, e))?;
        index::find(&ids, &jobs, id, hash, &mut self.scratch)
            .map(|found| found.is_some())
            .map_err(|e| lookup_err(path, e))
    }

    /// Adds the job at `position` (the next one), id `id` of hash `hash`,
    /// whose record is `rec`.
    fn add_job(&mut self, position: u32, id: &[u8], hash: u64, rec: &[u8]) -> Result<()> {
        self.seen.insert(hash);
        let at = self.pending_bytes.len();
        self.pending_bytes.extend_from_slice(id);
        self.pending_bytes.extend_from_slice(rec);
        let end = self.pending_bytes.len();
        self.pending
            .push((position, at..at + id.len(), at + id.len()..end));
        if self.pending.len() >= BATCH_JOBS || end >= BATCH_BYTES {
            self.flush(false)?;
        }
        if self.run.push(hash, position) {
            // The jobs first: a lookup in a written run reads their records.
            self.flush(true)?;
            self.write_run()?;
        }
        Ok(())
    }

    fn add_endpoint(&mut self, position: u32, rec: &[u8]) -> Result<()> {
        let path = self.path.as_path();
        self.txn()?
            .open_table(ENDPOINTS)
            .map_err(|e| write_err(path, e))?
            .insert(position_key(position).as_slice(), rec)
            .map_err(|e| write_err(path, e))?;
        Ok(())
    }

    /// Writes the pending jobs as blocks, the table opened once, and
    /// commits; the jobs of the last block stay pending unless `all`.
    /// After an error they are gone (the whole replacement failed), so a
    /// second call does not write them again.
    fn flush(&mut self, all: bool) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let mut pending = std::mem::take(&mut self.pending);
        let mut bytes = std::mem::take(&mut self.pending_bytes);
        let mut block = std::mem::take(&mut self.block);
        let path = self.path.as_path();
        let written = self.txn().and_then(|txn| {
            let mut jobs = txn.open_table(JOBS).map_err(|e| write_err(path, e))?;
            let mut insert = |first: usize, block: &[u8]| {
                let position = pending.get(first).map_or(0, |p| p.0);
                jobs.insert(position_key(position).as_slice(), block)
                    .map(drop)
                    .map_err(|e| write_err(path, e))
            };
            // Index in `pending` of the block's first job.
            let mut first = 0;
            block.clear();
            for (i, (_, _, rec)) in pending.iter().enumerate() {
                let rec = bytes.get(rec.clone()).unwrap_or_default();
                if !blocks::fits(block.len(), rec.len()) {
                    insert(first, &block)?;
                    block.clear();
                    first = i;
                }
                blocks::push(&mut block, rec);
            }
            if all {
                insert(first, &block)?;
                first = pending.len();
            }
            Ok(first)
        });
        let written = written?;
        self.in_batch += written as u32;
        // The jobs not written move to the front; the buffers are kept for
        // their capacity.
        let from = pending.get(written).map_or(bytes.len(), |p| p.1.start);
        pending.drain(..written);
        bytes.drain(..from);
        for (_, id, rec) in &mut pending {
            *id = id.start - from..id.end - from;
            *rec = rec.start - from..rec.end - from;
        }
        self.pending = pending;
        self.pending_bytes = bytes;
        self.block = block;
        self.commit_step()
    }

    /// Writes the run being filled into `job_ids`: 48 KiB of chunks, one
    /// step.
    fn write_run(&mut self) -> Result<()> {
        if self.run.is_empty() {
            return Ok(());
        }
        self.run.sort();
        let path = self.path.as_path();
        let txn = self.txn.as_ref().ok_or_else(|| broken(path))?;
        let mut ids = txn.open_table(JOB_IDS).map_err(|e| write_err(path, e))?;
        self.run.write(&mut ids).map_err(|e| write_err(path, e))?;
        drop(ids);
        self.commit_step()?;
        self.run.clear();
        Ok(())
    }

    /// Writes what is held back and `meta`, and commits: the file is
    /// complete, ready to be renamed into place.
    fn commit(&mut self, meta: &StoreMeta) -> Result<()> {
        self.flush(true)?;
        self.write_run()?;
        let path = self.path.as_path();
        let txn = self.txn.take().ok_or_else(|| broken(path))?;
        {
            let mut table = txn.open_table(META).map_err(|e| write_err(path, e))?;
            meta.write(&mut table).map_err(|e| write_err(path, e))?;
        }
        self.syncs_held.store(false, Ordering::Release);
        txn.commit().map_err(|e| write_err(path, e))?;
        self.db = None;
        self.committed = true;
        Ok(())
    }
}

impl Drop for NewFile {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        self.txn = None;
        self.db = None;
        // Best effort: a leftover is removed by the next run anyway.
        let _ = files::remove(&self.path);
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
