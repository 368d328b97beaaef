//! The stored profile as a new one streams past it: each new job is found
//! by id to tell added, changed and unchanged jobs, and every record is
//! compared with the stored one at its position to tell an unchanged
//! profile, so the writing run and the dry run agree on what "unchanged"
//! and "changed" mean.
//!
//! Profiles mostly change in place, so the stored job at the new job's
//! position is tried first: the stored jobs are then read in one pass in key
//! order, a leaf page at a time, and the id index is only consulted for a
//! job that moved (two B-tree lookups, each reading its pages afresh).
//! Comparing the records themselves, where they are read anyway, replaced a
//! SHA-256 over every record (about 14 instructions a profile byte).

use super::tables::{ENDPOINTS, JOB_IDS, JOBS, position_key, position_value};
use super::{Change, Diff, JobStore};
use crate::error::{Error, Result};
use crate::profile::Job;
use redb::ReadableTableMetadata;

type ByteTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;
type Entries = redb::Range<'static, &'static [u8], &'static [u8]>;

/// The stored profile; absent when there is nothing to compare against (no
/// profile stored, or a store of another schema that is being rebuilt). Its
/// tables are absent when it holds no job or endpoint.
pub(super) struct OldJobs {
    pub(super) ids: Option<ByteTable>,
    pub(super) jobs: Option<ByteTable>,
    /// Stored jobs, in document order.
    pub(super) count: u64,
    /// The stored jobs, then endpoints, read alongside the new ones.
    in_order: Option<Entries>,
    next_position: u32,
    endpoints: Option<Entries>,
    /// Every new record so far is the stored one at the same position.
    same: bool,
}

pub(super) fn read_error(e: redb::StorageError) -> Error {
    Error::Store(format!("cannot read the current store: {e}"))
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
        Ok(Some(OldJobs {
            count: match &jobs {
                Some(t) => t.len().map_err(read_error)?,
                None => 0,
            },
            in_order: range(&jobs)?,
            endpoints: range(&r.table(ENDPOINTS)?)?,
            ids: r.table(JOB_IDS)?,
            jobs,
            next_position: 0,
            same: true,
        }))
    }

    /// The stored record of the job whose new record is `new` (id `id`),
    /// copied into `into`, and its document position; `None` if the stored
    /// profile has no such job. Call once per new job, in document order.
    pub(super) fn find(&mut self, id: &str, new: &[u8], into: &mut Vec<u8>) -> Result<Option<u32>> {
        let position = self.next_position;
        self.next_position = position.saturating_add(1);
        if let Some(rec) = next(&mut self.in_order)?
            && super::record::same_job_id(rec.value(), new)
        {
            into.clear();
            into.extend_from_slice(rec.value());
            self.same &= into.as_slice() == new;
            return Ok(Some(position));
        }
        self.same = false;
        self.get(id, into)
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
        Ok(
            self.same
                && next(&mut self.in_order)?.is_none()
                && next(&mut self.endpoints)?.is_none(),
        )
    }

    /// Looks job `id` up by its id (see `find`).
    fn get(&self, id: &str, into: &mut Vec<u8>) -> Result<Option<u32>> {
        let (Some(ids), Some(jobs)) = (&self.ids, &self.jobs) else {
            return Ok(None);
        };
        let Some(seq) = ids.get(id.as_bytes()).map_err(read_error)? else {
            return Ok(None);
        };
        let Some(seq) = position_value(seq.value()) else {
            return Ok(None);
        };
        let Some(rec) = jobs.get(position_key(seq).as_slice()).map_err(read_error)? else {
            return Ok(None);
        };
        into.clear();
        into.extend_from_slice(rec.value());
        Ok(Some(seq))
    }
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
    Error::Profile(format!(
        "job \"{id}\" appears more than once; job ids must be unique"
    ))
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
