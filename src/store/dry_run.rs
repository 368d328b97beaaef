//! `--dry-run`: the diff between the stored profile and a new one, computed
//! as the document streams, writing nothing at all (a dry run on flash must
//! not cost a store's worth of writes, and it works on a read-only `Config/`).
//!
//! Memory stays bounded without a new file to hold the ids: an id the store
//! already has is marked in a bitmap of stored positions (one bit a job), so
//! a second sighting is a duplicate and an unmarked position at the end is a
//! removed job; only ids the store lacks are remembered, as 128-bit hashes
//! (16 bytes a new job; collisions are beyond reach at 100 000 jobs).

use super::old::{OldJobs, compare, duplicate, read_error};
use super::{Change, Diff, JobStore, Replaced, record};
use crate::error::{Error, Result};
use crate::profile::{Endpoint, Header, Job, ProfileSink, Summary};
use redb::ReadableTable;
use std::collections::HashSet;

/// Runs `parse` against a sink that only compares, and says what a real run
/// would do: `Unchanged` (same content, not forced) or `DryRun` with the diff.
pub(super) fn diff(
    store: &JobStore,
    force: bool,
    on_change: &mut dyn FnMut(Change<'_>),
    parse: impl FnOnce(&mut dyn ProfileSink) -> Result<Summary>,
) -> Result<Replaced> {
    let old = OldJobs::open(store)?;
    let stored_jobs = old.as_ref().map_or(0, |o| o.count);
    let mut sink = DryRunSink {
        seen_old: vec![0; usize::try_from(stored_jobs.div_ceil(64)).unwrap_or(0)],
        old,
        new_ids: HashSet::new(),
        buf: Vec::new(),
        old_buf: Vec::new(),
        diff: Diff::default(),
        on_change,
    };
    let summary = parse(&mut sink)?;
    sink.report_removed()?;
    let unchanged = match &mut sink.old {
        Some(old) => !force && old.unchanged()?,
        None => false,
    };
    Ok(if unchanged {
        Replaced::Unchanged(summary)
    } else {
        Replaced::DryRun(summary, sink.diff)
    })
}

struct DryRunSink<'a> {
    old: Option<OldJobs>,
    /// One bit per stored document position: seen in the new profile.
    seen_old: Vec<u64>,
    /// Hashes of the new profile's ids that the store does not have.
    new_ids: HashSet<[u8; 16]>,
    buf: Vec<u8>,
    old_buf: Vec<u8>,
    diff: Diff,
    on_change: &'a mut dyn FnMut(Change<'_>),
}

impl DryRunSink<'_> {
    /// Marks a stored position as seen; `false` if it already was.
    fn mark_old(&mut self, position: u32) -> bool {
        let (word, bit) = (position as usize / 64, 1u64 << (position % 64));
        match self.seen_old.get_mut(word) {
            Some(w) if *w & bit == 0 => {
                *w |= bit;
                true
            }
            Some(_) => false,
            // A position past the stored count: the index is damaged; the
            // job then counts as seen, which is the harmless answer.
            None => true,
        }
    }

    /// Every stored job whose position was never marked, in document order.
    fn report_removed(&mut self) -> Result<()> {
        let Some(jobs) = self.old.as_ref().and_then(|o| o.jobs.as_ref()) else {
            return Ok(());
        };
        for (position, entry) in jobs.iter().map_err(read_error)?.enumerate() {
            let (_, rec) = entry.map_err(read_error)?;
            let seen = self
                .seen_old
                .get(position / 64)
                .is_some_and(|w| w & (1u64 << (position % 64)) != 0);
            if seen {
                continue;
            }
            let Some(job) = record::decode_job(rec.value()) else {
                return Err(Error::Store(format!(
                    "the current store has a damaged job record at position {position}"
                )));
            };
            self.diff.removed += 1;
            (self.on_change)(Change::Removed { id: &job.id });
        }
        Ok(())
    }
}

impl ProfileSink for DryRunSink<'_> {
    fn header(&mut self, _: &Header) -> Result<()> {
        Ok(())
    }

    fn endpoint(&mut self, endpoint: &Endpoint) -> Result<()> {
        record::encode_endpoint(endpoint, &mut self.buf);
        match &mut self.old {
            Some(old) => old.endpoint(&self.buf),
            None => Ok(()),
        }
    }

    fn job(&mut self, job: &Job) -> Result<()> {
        record::encode_job(job, &mut self.buf);
        let position = match &mut self.old {
            Some(old) => old.find(&job.id, &self.buf, &mut self.old_buf)?,
            None => None,
        };
        let first_sighting = match position {
            Some(p) => self.mark_old(p),
            None => {
                let hash = ring::digest::digest(&ring::digest::SHA256, job.id.as_bytes());
                let mut key = [0u8; 16];
                key.copy_from_slice(&hash.as_ref()[..16]);
                self.new_ids.insert(key)
            }
        };
        if !first_sighting {
            return Err(duplicate(&job.id));
        }
        let old = position.map(|_| self.old_buf.as_slice());
        if let Some(c) = compare(&mut self.diff, job, old, &self.buf) {
            (self.on_change)(c);
        }
        Ok(())
    }
}
