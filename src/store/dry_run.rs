//! `--dry-run`: the diff between the stored profile and a new one, computed
//! as the document streams, writing nothing at all (a dry run on flash must
//! not cost a store's worth of writes, and it works on a read-only `Config/`).
//!
//! Memory stays bounded without a new file to hold the ids: an id the store
//! already has is marked in a bitmap of stored positions (one bit a job,
//! `OldJobs::mark`), so
//! a second sighting is a duplicate and an unmarked position at the end is a
//! removed job; only ids the store lacks are remembered, as 128-bit hashes
//! (16 bytes a new job; collisions are beyond reach at 100 000 jobs).

use super::index::id_hash;
use super::old::{OldJobs, compare, duplicate};
use super::{Change, Diff, JobStore, Replaced, record};
use crate::error::Result;
use crate::profile::{Endpoint, Header, Job, ProfileSink, Summary};
use std::collections::HashSet;

/// A sink that only compares: what a real run would do, with `finish`.
pub(super) struct DryRunSink<'a> {
    old: Option<OldJobs>,
    /// Hashes of the new profile's ids that the store does not have.
    new_ids: HashSet<[u8; 16]>,
    buf: Vec<u8>,
    old_buf: Vec<u8>,
    diff: Diff,
    force: bool,
    on_change: &'a mut dyn FnMut(Change<'_>),
}

impl<'a> DryRunSink<'a> {
    pub(super) fn new(
        store: &JobStore,
        force: bool,
        on_change: &'a mut dyn FnMut(Change<'_>),
    ) -> Result<DryRunSink<'a>> {
        Ok(DryRunSink {
            old: OldJobs::open(store)?,
            new_ids: HashSet::new(),
            buf: Vec::new(),
            old_buf: Vec::new(),
            diff: Diff::default(),
            force,
            on_change,
        })
    }

    /// After the whole profile: `Unchanged` (same content, not forced) or
    /// `DryRun` with the diff.
    pub(super) fn finish(mut self, summary: Summary) -> Result<Replaced> {
        let unchanged = match &mut self.old {
            Some(old) => {
                self.diff.removed = old.report_removed(self.on_change)?;
                !self.force && old.unchanged()?
            }
            None => false,
        };
        Ok(if unchanged {
            Replaced::Unchanged(summary)
        } else {
            Replaced::DryRun(summary, self.diff)
        })
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
            Some(old) => old.find(
                &job.id,
                id_hash(job.id.as_bytes()),
                &self.buf,
                &mut self.old_buf,
            )?,
            None => None,
        };
        let first_sighting = match (position, &mut self.old) {
            (Some(p), Some(old)) => old.mark(p),
            _ => {
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
