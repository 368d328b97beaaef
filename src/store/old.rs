//! The stored profile as a new one streams past it: each new job is found
//! by id to tell added, changed and unchanged jobs, and every record is
//! compared with the stored one at its position to tell an unchanged
//! profile, so the writing run and the dry run agree on what "unchanged"
//! and "changed" mean.
//!
//! Profiles mostly change in place, so the stored job after the last one
//! found is tried first: the stored jobs are then read in one pass in key
//! order, a leaf page at a time, and the id index is only consulted for a
//! job that moved (a key range per index run, `index.rs`). A job found by
//! the index moves the pass to the stored job after it, so a job added or
//! removed near the top costs one or two lookups, not one per job after it.
//! Comparing the records themselves, where they are read anyway, replaced a
//! SHA-256 over every record (about 14 instructions a profile byte).

use super::blocks::{self, Records, TableRecords};
use super::index::{self, LookupError};
use super::tables::{ENDPOINTS, JOB_IDS, JOBS, position_key};
use super::{Change, Diff, JobStore, record};
use crate::error::{Error, Result};
use crate::profile::Job;
use redb::ReadableTable;

type ByteTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;
type Entries = redb::Range<'static, &'static [u8], &'static [u8]>;

/// The stored profile; absent when there is nothing to compare against (no
/// profile stored, or a store of another schema that is being rebuilt). Its
/// tables are absent when it holds no job or endpoint.
pub(super) struct OldJobs {
    ids: Option<ByteTable>,
    jobs: Option<ByteTable>,
    endpoint_table: Option<ByteTable>,
    /// Stored jobs, in document order.
    pub(super) count: u64,
    /// The stored jobs, then endpoints, read alongside the new ones.
    in_order: Option<TableRecords>,
    endpoints: Option<Entries>,
    /// Every new record so far is the stored one at the same position.
    same: bool,
    /// The pass in document order met a damaged block: the stored profile
    /// is not the new one, whatever else matched (the new store replaces
    /// the damaged one, as it does a damaged index entry).
    damaged: bool,
    /// One bit per stored document position: found by a new job.
    found: Vec<u64>,
}

pub(super) fn read_error(e: redb::StorageError) -> Error {
    let text = format!("cannot read the current store: {e}");
    Error::Store(crate::error::Reason::caused_by(text, redb::Error::from(e)))
}

fn damaged_job() -> Error {
    Error::Store("the current store has a damaged job record".into())
}

/// A failed read of the stored jobs' blocks.
fn block_error(e: LookupError) -> Error {
    match e {
        LookupError::Storage(e) => read_error(e),
        LookupError::Damaged => damaged_job(),
    }
}

impl OldJobs {
    pub(super) fn open(store: &JobStore) -> Result<Option<OldJobs>> {
        let r = match &store.current {
            Some(r) if !store.needs_rebuild() && store.meta.is_some() => r,
            _ => return Ok(None),
        };
        let jobs = r.table(JOBS)?;
        let range = |t: &Option<ByteTable>| {
            t.as_ref()
                .map(|t| t.range::<&[u8]>(..).map_err(read_error))
                .transpose()
        };
        let endpoint_table = r.table(ENDPOINTS)?;
        // A block holds many jobs: the count is the meta record's.
        let count = match (&jobs, &store.meta) {
            (Some(_), Some(meta)) => meta.jobs,
            _ => 0,
        };
        Ok(Some(OldJobs {
            count,
            in_order: range(&jobs)?.map(Records::new),
            endpoints: range(&endpoint_table)?,
            endpoint_table,
            ids: r.table(JOB_IDS)?,
            jobs,
            same: true,
            damaged: false,
            found: vec![0; usize::try_from(count.div_ceil(64)).unwrap_or(0)],
        }))
    }

    /// True while every new record so far is the stored one at the same
    /// position.
    pub(super) fn same(&self) -> bool {
        self.same
    }

    /// The stored record of the job whose new record is `new` (id `id`,
    /// whose `index::id_hash` is `hash`), copied into `into`, and its
    /// document position; `None` if the stored profile has no such job.
    /// Call once per new job, in document order.
    pub(super) fn find(
        &mut self,
        id: &str,
        hash: u64,
        new: &[u8],
        into: &mut Vec<u8>,
    ) -> Result<Option<u32>> {
        if let Some((position, rec)) = next_job(&mut self.in_order, &mut self.damaged)?
            && record::same_job_id(rec, new)
        {
            into.clear();
            into.extend_from_slice(rec);
            self.same &= into.as_slice() == new;
            return Ok(Some(position));
        }
        self.same = false;
        let found = self.get(id, hash, into)?;
        if let (Some(p), Some(jobs)) = (found, &self.jobs) {
            // The pass goes on after the job found (`same` is false for
            // good: the pass need not stay at the new job's position).
            let after = p.saturating_add(1);
            self.in_order = Some(blocks::records_from(jobs, after).map_err(read_error)?);
        }
        Ok(found)
    }

    /// Marks the stored job at `position` as found in the new profile;
    /// false if it already was (its id is repeated).
    pub(super) fn mark(&mut self, position: u32) -> bool {
        let (word, bit) = (position as usize / 64, 1u64 << (position % 64));
        match self.found.get_mut(word) {
            Some(w) if *w & bit == 0 => {
                *w |= bit;
                true
            }
            Some(_) => false,
            // A position past the stored count: the index is damaged; the
            // job then counts as found, which is the harmless answer.
            None => true,
        }
    }

    /// Tells `on_change` every stored job no new job was found for, in
    /// document order; returns their number.
    pub(super) fn report_removed(&self, on_change: &mut dyn FnMut(Change<'_>)) -> Result<u64> {
        let Some(jobs) = &self.jobs else {
            return Ok(0);
        };
        let mut removed = 0;
        let mut records = Records::new(jobs.iter().map_err(read_error)?);
        loop {
            let (position, rec) = match records.next_record() {
                Ok(Some(next)) => next,
                Ok(None) => break,
                // The jobs after a damaged block cannot be named; the new
                // store replaces them all the same.
                Err(LookupError::Damaged) => {
                    log::warn!(
                        "the current store has a damaged block of job records; jobs removed after it are not listed"
                    );
                    break;
                }
                Err(LookupError::Storage(e)) => return Err(read_error(e)),
            };
            let position = position as usize;
            let found = self
                .found
                .get(position / 64)
                .is_some_and(|w| w & (1u64 << (position % 64)) != 0);
            if found {
                continue;
            }
            let Some(job) = record::decode_job(rec) else {
                return Err(Error::Store(
                    format!("the current store has a damaged job record at position {position}")
                        .into(),
                ));
            };
            removed += 1;
            on_change(Change::Removed { id: &job.id });
        }
        Ok(removed)
    }

    /// Hands `f` the first `count` stored job records, in document order.
    pub(super) fn each_job(
        &self,
        count: u32,
        mut f: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let Some(jobs) = &self.jobs else {
            return Ok(());
        };
        let mut records = Records::new(jobs.range::<&[u8]>(..).map_err(read_error)?);
        // Not one record further: the block after the prefix may be the
        // damaged one that ended the pass (`next_job`).
        for _ in 0..count {
            match records.next_record().map_err(block_error)? {
                Some((_, rec)) => f(rec)?,
                None => break,
            }
        }
        Ok(())
    }

    /// Hands `f` the first `count` stored endpoint records, in order.
    pub(super) fn each_endpoint(
        &self,
        count: u32,
        f: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        each(&self.endpoint_table, count, f)
    }

    /// Compares the new endpoint record `new` with the stored one at its
    /// position. Call once per new endpoint, in document order.
    pub(super) fn endpoint(&mut self, new: &[u8]) -> Result<()> {
        let equal = next(&mut self.endpoints)?.is_some_and(|rec| rec.value() == new);
        self.same &= equal;
        Ok(())
    }

    /// After the whole new profile: true when its records are the stored
    /// ones, in the same order, and no more.
    pub(super) fn unchanged(&mut self) -> Result<bool> {
        Ok(self.same
            && next_job(&mut self.in_order, &mut self.damaged)?.is_none()
            && !self.damaged
            && next(&mut self.endpoints)?.is_none())
    }

    /// Looks job `id` up by its id (see `find`). A damaged index entry
    /// counts as no such job: the new store replaces the damaged one.
    fn get(&self, id: &str, hash: u64, into: &mut Vec<u8>) -> Result<Option<u32>> {
        let (Some(ids), Some(jobs)) = (&self.ids, &self.jobs) else {
            return Ok(None);
        };
        match index::find(ids, jobs, id.as_bytes(), hash, into) {
            Ok(found) => Ok(found),
            Err(LookupError::Damaged) => Ok(None),
            Err(LookupError::Storage(e)) => Err(read_error(e)),
        }
    }
}

/// The next stored job record in document order and its position, `None`
/// after the last, and after a damaged block (`damaged` is then set: the
/// pass ends there, and the blocks are fused, so it stays ended).
fn next_job<'r>(
    records: &'r mut Option<TableRecords>,
    damaged: &mut bool,
) -> Result<Option<(u32, &'r [u8])>> {
    let Some(r) = records else {
        return Ok(None);
    };
    match r.next_record() {
        Ok(next) => Ok(next),
        Err(LookupError::Damaged) => {
            *damaged = true;
            Ok(None)
        }
        Err(LookupError::Storage(e)) => Err(read_error(e)),
    }
}

/// Hands `f` the first `count` records of `table` in key order.
fn each(
    table: &Option<ByteTable>,
    count: u32,
    mut f: impl FnMut(&[u8]) -> Result<()>,
) -> Result<()> {
    let Some(table) = table else {
        return Ok(());
    };
    let end = position_key(count);
    for entry in table.range::<&[u8]>(..end.as_slice()).map_err(read_error)? {
        let (_, rec) = entry.map_err(read_error)?;
        f(rec.value())?;
    }
    Ok(())
}

/// The next entry's value in key order, `None` after the last.
fn next(
    entries: &mut Option<Entries>,
) -> Result<Option<redb::AccessGuard<'static, &'static [u8]>>> {
    match entries.as_mut().and_then(Iterator::next) {
        Some(Ok((_, value))) => Ok(Some(value)),
        Some(Err(e)) => Err(read_error(e)),
        None => Ok(None),
    }
}

/// A profile that names one job id twice is refused whole.
pub(super) fn duplicate(id: &str) -> Error {
    Error::Profile(format!("job \"{id}\" appears more than once; job ids must be unique").into())
}

/// Counts the new job whose record is `new` against its stored record `old`
/// (if any) and says what changed, for the caller to report.
pub(super) fn compare<'a>(
    diff: &mut Diff,
    job: &'a Job,
    old: Option<&[u8]>,
    new: &[u8],
) -> Option<Change<'a>> {
    let (id, name) = (job.id.as_str(), job.name.as_str());
    match old {
        Some(old) if old == new => {
            diff.unchanged += 1;
            None
        }
        Some(_) => {
            diff.changed += 1;
            Some(Change::Changed { id, name })
        }
        None => {
            diff.added += 1;
            Some(Change::Added { id, name })
        }
    }
}
