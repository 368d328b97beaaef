//! The stored profile as a new one streams past it: each new job is looked
//! up by id to tell added, changed and unchanged jobs, and the records are
//! hashed the same way, so the writing run and the dry run agree on what
//! "unchanged" and "changed" mean.

use super::tables::{JOB_IDS, JOBS, position_key, position_value};
use super::{Change, Diff, JobStore};
use crate::error::{Error, Result};
use crate::profile::Job;

type ByteTable = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

/// The stored profile's job tables; absent when there is nothing to compare
/// against (no store, or a store of another schema that is being rebuilt).
pub(super) struct OldJobs {
    pub(super) ids: ByteTable,
    pub(super) jobs: ByteTable,
}

pub(super) fn read_error(e: redb::StorageError) -> Error {
    Error::Store(format!("cannot read the current store: {e}"))
}

impl OldJobs {
    pub(super) fn open(store: &JobStore) -> Result<Option<OldJobs>> {
        match &store.current {
            Some(r) if !store.needs_rebuild() => Ok(match (r.table(JOB_IDS)?, r.table(JOBS)?) {
                (Some(ids), Some(jobs)) => Some(OldJobs { ids, jobs }),
                _ => None,
            }),
            _ => Ok(None),
        }
    }

    /// The stored record of job `id`, copied into `into`, and its document
    /// position; `None` if the stored profile has no such job.
    pub(super) fn get(&self, id: &str, into: &mut Vec<u8>) -> Result<Option<u32>> {
        let Some(seq) = self.ids.get(id.as_bytes()).map_err(read_error)? else {
            return Ok(None);
        };
        let Some(seq) = position_value(seq.value()) else {
            return Ok(None);
        };
        let Some(rec) = self
            .jobs
            .get(position_key(seq).as_slice())
            .map_err(read_error)?
        else {
            return Ok(None);
        };
        into.clear();
        into.extend_from_slice(rec.value());
        Ok(Some(seq))
    }
}

/// A profile that names one job id twice is refused whole.
pub(super) fn duplicate(id: &str) -> Error {
    Error::Profile(format!(
        "job \"{id}\" appears more than once; job ids must be unique"
    ))
}

/// Adds one record to the content digest that tells an unchanged profile:
/// its kind (`b'J'` job, `b'E'` endpoint), length and bytes.
pub(super) fn digest_record(digest: &mut ring::digest::Context, kind: u8, record: &[u8]) {
    digest.update(&[kind]);
    digest.update(&(record.len() as u32).to_le_bytes());
    digest.update(record);
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
