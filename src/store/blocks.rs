//! The `jobs` table's blocks: consecutive job records packed into one
//! value, keyed by the document position of the first.
//!
//! redb pays a tree descent, a leaf rewrite and often a page allocation
//! per insert, whatever the value's size: one job per key cost a first
//! ingest 17 instructions a profile byte. A block is one insert for about
//! twenty jobs.
//!
//! Format: each record preceded by its length (u32, little-endian). A
//! block holds at least one record and, unless that one record alone is
//! larger, at most `BLOCK_BYTES` bytes, so that a block and its key fill
//! one 4 KiB leaf page (a bigger value gets pages of its own). Blocks
//! follow one another without gaps: a block's key is the position after
//! the last record of the block before it. Where a writer cuts blocks is
//! its own choice (`replace.rs`); a reader only relies on the above.

use super::tables::position_key;
use redb::{ReadableTable, StorageError};

/// At most this many bytes in a block of more than one record: with its
/// 4-byte key and redb's 12 bytes of leaf header and offsets, one block
/// fills a 4 KiB page.
pub const BLOCK_BYTES: usize = 4096 - 4 - 12;

/// Why a block could not be read.
#[derive(Debug)]
pub enum LookupError {
    Storage(StorageError),
    /// A block that is not whole records, or a position with no job where
    /// the index or the blocks' keys say there is one.
    Damaged,
}

impl From<StorageError> for LookupError {
    fn from(e: StorageError) -> LookupError {
        LookupError::Storage(e)
    }
}

/// True when a record of `len` bytes may join a block of `block_len` bytes
/// so far.
pub fn fits(block_len: usize, len: usize) -> bool {
    block_len == 0 || block_len + 4 + len <= BLOCK_BYTES
}

/// Appends the record `rec` to `block`.
pub fn push(block: &mut Vec<u8>, rec: &[u8]) {
    // A record is far below 4 GiB: the profile's own limits bound it.
    let len = u32::try_from(rec.len()).unwrap_or(u32::MAX);
    block.extend_from_slice(&len.to_le_bytes());
    block.extend_from_slice(rec);
}

/// A record and the bytes after it.
type Split<'a> = (&'a [u8], &'a [u8]);

/// The first record of `block` and the rest; `Err` if damaged, `Ok(None)`
/// at its end.
fn split(block: &[u8]) -> Result<Option<Split<'_>>, LookupError> {
    if block.is_empty() {
        return Ok(None);
    }
    let (len, rest) = block.split_first_chunk::<4>().ok_or(LookupError::Damaged)?;
    let len = usize::try_from(u32::from_le_bytes(*len)).map_err(|_| LookupError::Damaged)?;
    if len > rest.len() {
        return Err(LookupError::Damaged);
    }
    Ok(Some(rest.split_at(len)))
}

/// The record of the job at `position` in `jobs`, copied into `into`;
/// false when the table has no such job.
pub fn get<T: ReadableTable<&'static [u8], &'static [u8]>>(
    jobs: &T,
    position: u32,
    into: &mut Vec<u8>,
) -> Result<bool, LookupError> {
    let key = position_key(position);
    // The block that holds `position` starts at or before it.
    let Some(block) = jobs.range::<&[u8]>(..=key.as_slice())?.next_back() else {
        return Ok(false);
    };
    match Records::from(std::iter::once(block), position).next_record()? {
        Some((_, rec)) => {
            into.clear();
            into.extend_from_slice(rec);
            Ok(true)
        }
        None => Ok(false),
    }
}

fn first_position(key: &[u8]) -> Result<u32, LookupError> {
    let key: [u8; 4] = key.try_into().map_err(|_| LookupError::Damaged)?;
    Ok(u32::from_be_bytes(key))
}

/// A value redb hands out: a borrowed or a reference-counted guard.
pub trait Bytes {
    fn bytes(&self) -> &[u8];
}

impl Bytes for redb::AccessGuard<'_, &'static [u8]> {
    fn bytes(&self) -> &[u8] {
        self.value()
    }
}

impl Bytes for redb::OwnedAccessGuard<&'static [u8]> {
    fn bytes(&self) -> &[u8] {
        self.value()
    }
}

/// The job records of a run of blocks, in document order, with their
/// positions.
pub struct Records<I, G> {
    blocks: I,
    block: Option<G>,
    /// Offset of the next record's length in `block`.
    at: usize,
    /// The next record's position.
    position: u32,
    /// Records before this position are skipped (`records_from`).
    skip: u32,
    /// An error was returned: the iteration is over.
    failed: bool,
}

impl<I, G> Records<I, G>
where
    I: Iterator<Item = Result<(G, G), StorageError>>,
    G: Bytes,
{
    /// The records of `blocks`, an iteration over a whole `jobs` table in
    /// key order.
    pub fn new(blocks: I) -> Records<I, G> {
        Records::from(blocks, 0)
    }

    /// The records of `blocks`, whose first block holds position
    /// `position`, from that position on.
    fn from(blocks: I, position: u32) -> Records<I, G> {
        Records {
            blocks,
            block: None,
            at: 0,
            position: 0,
            skip: position,
            failed: false,
        }
    }

    /// The next record and its position; `None` after the last, and
    /// after an error (a reader that goes on past one does not meet it
    /// again and again).
    pub fn next_record(&mut self) -> Result<Option<(u32, &[u8])>, LookupError> {
        if self.failed {
            return Ok(None);
        }
        match self.step() {
            Ok(Some((position, start))) => {
                let block = self.block.as_ref().map(Bytes::bytes).unwrap_or_default();
                let rec = block.get(start..self.at).ok_or(LookupError::Damaged)?;
                Ok(Some((position, rec)))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                self.failed = true;
                Err(e)
            }
        }
    }

    /// Moves to the next record: its position and where it starts in
    /// `block` (it ends at `at`).
    fn step(&mut self) -> Result<Option<(u32, usize)>, LookupError> {
        loop {
            let len = match &self.block {
                Some(block) => {
                    let rest = block.bytes().get(self.at..).ok_or(LookupError::Damaged)?;
                    split(rest)?.map(|(rec, _)| rec.len())
                }
                None => None,
            };
            if let Some(len) = len {
                let (position, start) = (self.position, self.at + 4);
                self.at = start + len;
                self.position = position.checked_add(1).ok_or(LookupError::Damaged)?;
                if position < self.skip {
                    continue;
                }
                return Ok(Some((position, start)));
            }
            let Some(entry) = self.blocks.next() else {
                return Ok(None);
            };
            let (key, block) = entry?;
            let first = first_position(key.bytes())?;
            // Blocks follow one another without gaps; the first one starts
            // at or before the position asked for.
            let expected = match self.block {
                Some(_) => first == self.position,
                None => first <= self.skip,
            };
            if !expected {
                return Err(LookupError::Damaged);
            }
            self.position = first;
            self.block = Some(block);
            self.at = 0;
        }
    }
}

/// The records of a read-only `jobs` table from `position` on.
pub type TableRecords = Records<
    redb::Range<'static, &'static [u8], &'static [u8]>,
    redb::AccessGuard<'static, &'static [u8]>,
>;

/// The records of a read-only `jobs` table, each block's guard holding the
/// transaction open (`StoreReader::jobs`).
pub type OwnedRecords =
    Records<redb::OwnedRange<&'static [u8], &'static [u8]>, redb::OwnedAccessGuard<&'static [u8]>>;

/// The records of `jobs` from `position` on.
pub fn records_from(
    jobs: &redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    position: u32,
) -> Result<TableRecords, StorageError> {
    let key = position_key(position);
    // The block that holds `position` starts at or before it.
    let start = match jobs.range::<&[u8]>(..=key.as_slice())?.next_back() {
        Some(entry) => entry?.0.value().to_vec(),
        None => Vec::new(),
    };
    Ok(Records::from(
        jobs.range::<&[u8]>(start.as_slice()..)?,
        position,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableDatabase;

    #[test]
    fn a_block_splits_back_into_its_records_and_refuses_damage() {
        let mut block = Vec::new();
        for rec in [b"one".as_slice(), b"", b"three"] {
            assert!(fits(block.len(), rec.len()));
            push(&mut block, rec);
        }
        assert_eq!(&block[..7], &[3, 0, 0, 0, b'o', b'n', b'e']);
        let mut rest = block.as_slice();
        let mut got = Vec::new();
        while let Some((rec, after)) = split(rest).unwrap() {
            got.push(rec.to_vec());
            rest = after;
        }
        assert_eq!(got, [b"one".to_vec(), vec![], b"three".to_vec()]);
        // A record cut short.
        assert!(split(&block[..6]).is_err());
        assert!(split(&[1, 0, 0]).is_err());
    }

    /// A block of the given records.
    fn block_of(recs: &[&[u8]]) -> Vec<u8> {
        let mut block = Vec::new();
        for rec in recs {
            push(&mut block, rec);
        }
        block
    }

    /// A `jobs` table of the given blocks, each keyed by its first position.
    fn table_of(
        dir: &std::path::Path,
        blocks: &[(u32, Vec<u8>)],
    ) -> (
        redb::Database,
        redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    ) {
        let db = redb::Database::create(dir.join("t.db")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(super::super::tables::JOBS).unwrap();
            for (position, block) in blocks {
                t.insert(position_key(*position).as_slice(), block.as_slice())
                    .unwrap();
            }
        }
        txn.commit().unwrap();
        let t = db
            .begin_read()
            .unwrap()
            .open_table(super::super::tables::JOBS)
            .unwrap();
        (db, t)
    }

    fn all(mut r: TableRecords) -> Result<Vec<(u32, Vec<u8>)>, LookupError> {
        let mut out = Vec::new();
        while let Some((p, rec)) = r.next_record()? {
            out.push((p, rec.to_vec()));
        }
        Ok(out)
    }

    #[test]
    fn records_are_read_across_blocks_from_any_position() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let (_db, t) = table_of(
            dir,
            &[
                (0, block_of(&[b"a", b"b"])),
                (2, block_of(&[b"c"])),
                (3, block_of(&[b"d", b"e", b"f"])),
            ],
        );
        let names = |v: Vec<(u32, Vec<u8>)>| -> Vec<(u32, String)> {
            v.into_iter()
                .map(|(p, r)| (p, String::from_utf8(r).unwrap()))
                .collect()
        };
        let whole = all(Records::new(t.range::<&[u8]>(..).unwrap())).unwrap();
        assert_eq!(
            names(whole),
            [(0, "a"), (1, "b"), (2, "c"), (3, "d"), (4, "e"), (5, "f")]
                .map(|(p, s)| (p, s.to_string()))
        );
        for from in 0..8u32 {
            let got = names(all(records_from(&t, from).unwrap()).unwrap());
            assert_eq!(got.first().map(|g| g.0), (from < 6).then_some(from));
            assert_eq!(got.len(), 6usize.saturating_sub(from as usize));
        }
        let mut rec = Vec::new();
        assert!(get(&t, 4, &mut rec).unwrap());
        assert_eq!(rec, b"e");
        assert!(!get(&t, 6, &mut rec).unwrap());
    }

    #[test]
    fn a_gap_between_blocks_or_a_record_cut_short_is_damage_told_once() {
        let tmp = tempfile::tempdir().unwrap();
        let cut_short = vec![5, 0, 0, 0, b'x'];
        for (blocks, what) in [
            (vec![(0, block_of(&[b"a"])), (2, block_of(&[b"c"]))], "gap"),
            (vec![(0, block_of(&[b"a"])), (1, cut_short)], "cut short"),
        ] {
            let dir = tmp.path().join(what);
            std::fs::create_dir(&dir).unwrap();
            let (_db, t) = table_of(&dir, &blocks);
            let mut r = Records::new(t.range::<&[u8]>(..).unwrap());
            assert_eq!(
                r.next_record().unwrap(),
                Some((0, b"a".as_slice())),
                "{what}"
            );
            assert!(
                matches!(r.next_record(), Err(LookupError::Damaged)),
                "{what}"
            );
            // Once: a reader that goes on is told the end, not the error
            // again and again.
            assert_eq!(r.next_record().unwrap(), None, "{what}");
        }
    }

    #[test]
    fn a_block_is_cut_before_it_outgrows_a_page_unless_one_record_is_bigger() {
        assert!(fits(0, 100_000));
        assert!(fits(BLOCK_BYTES - 104, 100));
        assert!(!fits(BLOCK_BYTES - 103, 100));
    }
}
