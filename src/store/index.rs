//! The job-id index (`job_ids`): a job's document position by its id, for
//! `StoreReader::job`, for the diff (a job that moved) and for refusing a
//! repeated id while a new store is written.
//!
//! Written so that it is appended in key order, each page written once:
//! the ids of every `RUN_JOBS` consecutive jobs (a "run") are held in
//! memory, sorted by `id_hash` then position, and written as chunks of
//! `CHUNK_ENTRIES` entries. A chunk's key is `run ++ hash ++ position` of
//! its first entry (u32, u64, u32, big-endian); its value is its entries,
//! `hash ++ position` each (u64, u32, little-endian). Every run's keys sort
//! after the earlier runs', so the table only ever grows at its end.
//! (Keyed by id, inserts landed all over the tree and the same pages were
//! written again and again. One key per job, schema 3, cost redb an insert
//! per job into leaves of small variable-width entries, each insert moving
//! every entry after it: 20 instructions a profile byte. A chunk is one
//! insert per 256 jobs.) A lookup reads, in each run, the chunk whose range
//! holds the hash (and the ones before it while they end in that hash);
//! the hash only narrows the search: the job's record at each position
//! found is compared by id, so two ids of one hash stay apart.
//!
//! Invariants: run `r` holds exactly the jobs at positions
//! `r * RUN_JOBS .. (r + 1) * RUN_JOBS`, cut into chunks of
//! `CHUNK_ENTRIES` in sorted order (the last one shorter), so a store's
//! index is a function of its jobs alone; `id_hash`, `RUN_JOBS` and
//! `CHUNK_ENTRIES` are part of the format (change one and bump
//! `STORE_SCHEMA`).

use super::blocks;
pub use super::blocks::LookupError;
use super::record;
use redb::{ReadableTable, StorageError};

/// Jobs per run: 4096 entries of 16 bytes (64 KiB) held while a run fills.
/// At the 100 000-job limit a lookup reads 25 chunks.
pub const RUN_JOBS: u32 = 4096;
/// Entries per chunk: 3 KiB, so that a chunk and its key fill most of one
/// 4 KiB leaf page.
pub const CHUNK_ENTRIES: usize = 256;
/// Bytes of one entry in a chunk.
const ENTRY: usize = 12;

/// The on-disk hash of a job id: FNV-1a (64-bit), then splitmix64's
/// finalizer to spread its bits. Fixed forever since schema 3: a golden test
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

/// The `job_ids` key of a chunk whose first entry is the job at `position`,
/// whose id hashes to `hash`.
fn key(run: u32, hash: u64, position: u32) -> [u8; 16] {
    let mut k = [0; 16];
    k[..4].copy_from_slice(&run.to_be_bytes());
    k[4..12].copy_from_slice(&hash.to_be_bytes());
    k[12..].copy_from_slice(&position.to_be_bytes());
    k
}

/// The run and first hash a `job_ids` key names; `None` if damaged.
fn parts(key: &[u8]) -> Option<(u32, u64)> {
    let k: &[u8; 16] = key.try_into().ok()?;
    let (run, rest) = k.split_first_chunk::<4>()?;
    let (hash, _) = rest.split_first_chunk::<8>()?;
    Some((u32::from_be_bytes(*run), u64::from_be_bytes(*hash)))
}

/// The hash and position of a chunk's entry.
fn entry(chunk: &[u8], i: usize) -> Option<(u64, u32)> {
    let e = chunk.get(i * ENTRY..(i + 1) * ENTRY)?;
    let (hash, position) = e.split_first_chunk::<8>()?;
    let position: &[u8; 4] = position.try_into().ok()?;
    Some((u64::from_le_bytes(*hash), u32::from_le_bytes(*position)))
}

/// The positions in `chunk` of the entries of hash `hash`; an error if the
/// chunk is damaged (empty, or not whole entries).
fn positions_in(chunk: &[u8], hash: u64) -> Result<impl Iterator<Item = u32> + '_, LookupError> {
    if chunk.is_empty() || !chunk.len().is_multiple_of(ENTRY) {
        return Err(LookupError::Damaged);
    }
    let n = chunk.len() / ENTRY;
    // Entries are sorted by hash: a binary search over their hashes.
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match entry(chunk, mid) {
            Some((h, _)) if h < hash => lo = mid + 1,
            _ => hi = mid,
        }
    }
    Ok((lo..n)
        .map_while(move |i| entry(chunk, i))
        .take_while(move |&(h, _)| h == hash)
        .map(|(_, position)| position))
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
        let (from, to) = (key(run, 0, 0), key(run, hash, u32::MAX));
        // Backwards from the last chunk that starts at or before `hash`:
        // the entries of one hash may spread over the end of earlier ones.
        for chunk in ids.range::<&[u8]>(from.as_slice()..=to.as_slice())?.rev() {
            let (k, v) = chunk?;
            let (_, first) = parts(k.value()).ok_or(LookupError::Damaged)?;
            for position in positions_in(v.value(), hash)? {
                if !blocks::get(jobs, position, into)? {
                    return Err(LookupError::Damaged);
                }
                if record::job_id(into) == Some(id) {
                    return Ok(Some(position));
                }
            }
            if first < hash {
                break;
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

    /// Writes the sorted run into `ids` (the `job_ids` table), a chunk at
    /// a time.
    pub fn write(&self, ids: &mut redb::Table<&[u8], &[u8]>) -> Result<(), StorageError> {
        let mut value = Vec::with_capacity(CHUNK_ENTRIES * ENTRY);
        for chunk in self.entries.chunks(CHUNK_ENTRIES) {
            let Some(&(hash, position)) = chunk.first() else {
                continue;
            };
            value.clear();
            for &(h, p) in chunk {
                value.extend_from_slice(&h.to_le_bytes());
                value.extend_from_slice(&p.to_le_bytes());
            }
            let k = key(position / RUN_JOBS, hash, position);
            ids.insert(k.as_slice(), value.as_slice())?;
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
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
        assert_eq!(parts(&key(3, 7, 12_345)), Some((3, 7)));
        assert_eq!(parts(&[0; 15]), None);
    }

    #[test]
    fn a_chunk_gives_every_position_of_a_hash_and_refuses_damage() {
        let mut chunk = Vec::new();
        for (h, p) in [(1u64, 9u32), (5, 2), (5, 7), (5, 8), (9, 1)] {
            chunk.extend_from_slice(&h.to_le_bytes());
            chunk.extend_from_slice(&p.to_le_bytes());
        }
        let of = |h| positions_in(&chunk, h).map(|p| p.collect::<Vec<_>>()).ok();
        assert_eq!(of(5), Some(vec![2, 7, 8]));
        assert_eq!(of(1), Some(vec![9]));
        assert_eq!(of(9), Some(vec![1]));
        assert_eq!(of(4), Some(vec![]));
        assert_eq!(of(10), Some(vec![]));
        assert!(positions_in(&chunk[..13], 5).is_err());
        assert!(positions_in(&[], 5).is_err());
    }
}
