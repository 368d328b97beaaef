//! The job-id index (`job_ids`): a job's document position by its id, for
//! `StoreReader::job`, for the diff (a job that moved) and for refusing a
//! repeated id while a new store is written.
//!
//! Written so that it is appended in key order, each page written once:
//! the ids of every `RUN_JOBS` consecutive jobs (a "run") are held in
//! memory, sorted by `id_hash` and written as keys `run ++ hash ++ position`
//! (all big-endian, empty values). Every run's keys sort after the earlier
//! runs', so the table only ever grows at its end. (Keyed by id, inserts
//! land all over the tree: with redb's write buffer bounded to a few pages,
//! the same pages were written again and again, twice the store's size in
//! all.) A lookup reads one key range per run; the hash only narrows the
//! search: the job's record at each position found is compared by id, so
//! two ids of one hash stay apart.
//!
//! Invariants: run `r` holds exactly the jobs at positions
//! `r * RUN_JOBS .. (r + 1) * RUN_JOBS`, so a store's index is a function of
//! its jobs alone; `id_hash` and `RUN_JOBS` are part of the format (change
//! either and bump `STORE_SCHEMA`).

use super::record;
use super::tables::position_key;
use redb::{ReadableTable, StorageError};

/// Jobs per run: 4096 entries of 16 bytes (64 KiB) held while a run fills. At the
/// 100 000-job limit a lookup reads 25 ranges.
pub const RUN_JOBS: u32 = 4096;

/// The on-disk hash of a job id: FNV-1a (64-bit), then splitmix64's
/// finalizer to spread its bits. Fixed forever for schema 3: a golden test
/// pins it.
pub fn id_hash(id: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in id {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^= h >> 31;
    #[cfg(test)]
    let h = h & tests::HASH_MASK.with(std::cell::Cell::get);
    h
}

/// The `job_ids` key of the job at `position` whose id hashes to `hash`.
fn key(run: u32, hash: u64, position: u32) -> [u8; 16] {
    let mut k = [0; 16];
    k[..4].copy_from_slice(&run.to_be_bytes());
    k[4..12].copy_from_slice(&hash.to_be_bytes());
    k[12..].copy_from_slice(&position.to_be_bytes());
    k
}

/// The run and position a `job_ids` key names; `None` if damaged.
fn parts(key: &[u8]) -> Option<(u32, u32)> {
    let k: &[u8; 16] = key.try_into().ok()?;
    let (run, rest) = k.split_first_chunk::<4>()?;
    let (_, position) = rest.split_last_chunk::<4>()?;
    Some((u32::from_be_bytes(*run), u32::from_be_bytes(*position)))
}

/// Why a lookup failed.
#[derive(Debug)]
pub enum LookupError {
    Storage(StorageError),
    /// An index key that is not 16 bytes, or names a position with no job.
    Damaged,
}

impl From<StorageError> for LookupError {
    fn from(e: StorageError) -> LookupError {
        LookupError::Storage(e)
    }
}

/// The position of the job with id `id` (hash `hash`) in the store whose
/// tables are `ids` and `jobs`, and its record copied into `into`; `None`
/// when the store has no such job.
pub fn find<T: ReadableTable<&'static [u8], &'static [u8]>>(
    ids: &T,
    jobs: &T,
    id: &[u8],
    hash: u64,
    into: &mut Vec<u8>,
) -> Result<Option<u32>, LookupError> {
    let Some((last, _)) = ids.last()? else {
        return Ok(None);
    };
    let (runs, _) = parts(last.value()).ok_or(LookupError::Damaged)?;
    for run in 0..=runs {
        let (from, to) = (key(run, hash, 0), key(run, hash, u32::MAX));
        for entry in ids.range::<&[u8]>(from.as_slice()..=to.as_slice())? {
            let (k, _) = entry?;
            let (_, position) = parts(k.value()).ok_or(LookupError::Damaged)?;
            let rec = jobs
                .get(position_key(position).as_slice())?
                .ok_or(LookupError::Damaged)?;
            if record::job_id(rec.value()) == Some(id) {
                into.clear();
                into.extend_from_slice(rec.value());
                return Ok(Some(position));
            }
        }
    }
    Ok(None)
}

/// The run being filled: the ids of the latest jobs, by hash and position,
/// until `RUN_JOBS` of them are written as one run. Its memory is taken
/// once, whole.
pub struct Run {
    entries: Vec<(u64, u32)>,
}

impl Run {
    pub fn new() -> Run {
        Run {
            entries: Vec::with_capacity(RUN_JOBS as usize),
        }
    }

    /// Adds the job at `position` (the next one) with id hash `hash`; true
    /// when the run is full and must be written.
    pub fn push(&mut self, hash: u64, position: u32) -> bool {
        self.entries.push((hash, position));
        position % RUN_JOBS == RUN_JOBS - 1
    }

    /// Positions in this run of the jobs whose id hashes to `hash`.
    pub fn positions(&self, hash: u64) -> impl Iterator<Item = u32> + '_ {
        self.entries
            .iter()
            .filter(move |(h, _)| *h == hash)
            .map(|&(_, p)| p)
    }

    /// Sorts the run by key, to be written.
    pub fn sort(&mut self) {
        self.entries.sort_unstable();
    }

    /// Writes the entries `range` of the sorted run into `ids` (the
    /// `job_ids` table).
    pub fn write(
        &self,
        ids: &mut redb::Table<&[u8], &[u8]>,
        range: std::ops::Range<usize>,
    ) -> Result<(), StorageError> {
        for &(hash, position) in self.entries.get(range).unwrap_or_default() {
            let k = key(position / RUN_JOBS, hash, position);
            ids.insert(k.as_slice(), [].as_slice())?;
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use std::cell::Cell;

    thread_local! {
        /// Bits of `id_hash` kept: a test narrows it to make ids collide.
        pub(in crate::store) static HASH_MASK: Cell<u64> = const { Cell::new(u64::MAX) };
    }

    #[test]
    fn the_id_hash_is_pinned() {
        // Part of the store format: these values must never change. (They
        // were computed by a separate Python transcription of FNV-1a and
        // splitmix64's finalizer, not by this code.)
        assert_eq!(id_hash(b""), 0xf52a_15e9_a9b5_e89b);
        assert_eq!(id_hash(b"1000"), 0xdf38_6a06_c8da_1ade);
        assert_eq!(id_hash("job-é/7".as_bytes()), 0xdd8a_1815_b6d4_ab07);
    }

    #[test]
    fn keys_sort_by_run_then_hash_then_position() {
        assert_eq!(
            key(1, 0x0203_0405_0607_0809, 0x0a0b_0c0d),
            [0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]
        );
        assert!(key(0, u64::MAX, u32::MAX) < key(1, 0, 0));
        assert_eq!(parts(&key(3, 7, 12_345)), Some((3, 12_345)));
        assert_eq!(parts(&[0; 15]), None);
    }
}
