//! The read API of `Config/backupjobs.db`, for `--list` and for the suite's
//! other Rust programs, so none of them needs to know redb or the record
//! format.
//!
//! Opening is read-only and never modifies the file: reading the store of an
//! unchanged run must not wear the flash.

use super::blocks::{OwnedRecords, Records};
use super::damage::{Watch, watch};
use super::index::{self, LookupError};
use super::record;
use super::tables::{ENDPOINTS, JOB_IDS, JOBS, META, STORE_SCHEMA, StoreMeta, Table};
use crate::error::{Error, Reason, Result};
use crate::profile::job::{Endpoint, Job};
use redb::{ReadOnlyDatabase, ReadableDatabase, ReadableTable};
use std::path::{Path, PathBuf};

/// Cache for reads: enough for the B-tree's upper levels; records are read once.
const READ_CACHE_BYTES: usize = 64 * 1024;

/// Why a store file could not be opened.
pub enum OpenError {
    /// The file is not a store this agent can read (damaged, truncated,
    /// another format, unreadable record): move it aside and rebuild.
    Corrupt(String),
    /// The file was not closed cleanly by a writer (redb needs its repair).
    NeedsRepair,
    /// Reading failed for a reason the file is not to blame for
    /// (permissions, I/O): keep the file and stop.
    Failed(Error),
}

/// An open, read-only job store.
pub struct StoreReader {
    path: PathBuf,
    db: ReadOnlyDatabase,
    _watch: Watch,
}

impl std::fmt::Debug for StoreReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreReader")
            .field("path", &self.path)
            .finish()
    }
}

pub(super) fn storage_error(path: &Path, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Store(format!("{}: {what}: {e}", path.display()).into())
}

/// [`storage_error`] for a redb error, which stays the error's `source()`
/// as one type, `redb::Error` (each boxed type costs the binary its
/// `Debug`), while the message shows the error as redb gave it.
pub(super) fn storage_failure<E>(path: &Path, what: &str, e: E) -> Error
where
    E: std::fmt::Display + Into<redb::Error>,
{
    let text = format!("{}: {what}: {e}", path.display());
    Error::Store(Reason::caused_by(text, e.into()))
}

/// redb reports "not a database" as InvalidData and damage as Corrupted;
/// both mean the file, not the machine, is at fault.
fn classify(path: &Path, e: redb::DatabaseError) -> OpenError {
    use redb::{DatabaseError as D, StorageError as S};
    match e {
        D::RepairAborted => OpenError::NeedsRepair,
        D::Storage(S::Io(io)) if io.kind() == std::io::ErrorKind::InvalidData => {
            OpenError::Corrupt(io.to_string())
        }
        D::Storage(S::Io(io)) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            OpenError::Corrupt("the file is truncated".to_string())
        }
        D::Storage(S::Io(io)) => OpenError::Failed(Error::Store(
            format!(
                "cannot read {}: {}",
                path.display(),
                crate::error::io_reason(&io)
            )
            .into(),
        )),
        D::Storage(S::Corrupted(m)) => OpenError::Corrupt(m),
        D::UpgradeRequired(v) => {
            OpenError::Corrupt(format!("written in an old redb file format ({v})"))
        }
        D::DatabaseAlreadyOpen => OpenError::Failed(Error::Store(
            format!("{} is open for writing by another program", path.display()).into(),
        )),
        other => OpenError::Corrupt(other.to_string()),
    }
}

impl StoreReader {
    /// Opens the store at `path`; `Ok(None)` when there is no file.
    pub fn open(path: &Path) -> Result<Option<StoreReader>> {
        match StoreReader::open_checked(path) {
            Ok(r) => Ok(r),
            Err(OpenError::Failed(e)) => Err(e),
            Err(OpenError::Corrupt(m)) => Err(Error::Store(format!(
                "{} is damaged ({m}); the next run of cncopgetprofile moves it aside and rebuilds it",
                path.display()
            ).into())),
            Err(OpenError::NeedsRepair) => Err(Error::Store(format!(
                "{} was not closed cleanly; the next run of cncopgetprofile repairs it",
                path.display()
            ).into())),
        }
    }

    /// Opens and reads the meta table, so that a file that opens but cannot
    /// be read is reported as corrupt here rather than half-way through a run.
    pub(super) fn open_checked(path: &Path) -> std::result::Result<Option<StoreReader>, OpenError> {
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                let reason = crate::error::io_reason(&e);
                let text = format!("{}: cannot read: {reason}", path.display());
                return Err(OpenError::Failed(Error::Store(Reason::caused_by(text, e))));
            }
            Ok(_) => {}
        }
        // Damage redb cannot read makes it panic: `damage` reports it.
        let watch = watch(path, None);
        let db = redb::Builder::new()
            .set_cache_size(READ_CACHE_BYTES)
            .open_read_only(path)
            .map_err(|e| classify(path, e))?;
        let reader = StoreReader {
            path: path.to_path_buf(),
            db,
            _watch: watch,
        };
        reader
            .meta()
            .map_err(|e| OpenError::Corrupt(e.to_string()))?;
        Ok(Some(reader))
    }

    /// The store file this reader reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn read_txn(&self) -> Result<redb::ReadTransaction> {
        self.db
            .begin_read()
            .map_err(|e| storage_failure(&self.path, "cannot read", e))
    }

    /// The store's meta data; `None` if no profile was ever accepted.
    pub fn meta(&self) -> Result<Option<StoreMeta>> {
        let txn = self.read_txn()?;
        let table = match txn.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(storage_failure(&self.path, "cannot read the meta table", e)),
        };
        StoreMeta::read(&table).map_err(|m| storage_error(&self.path, "damaged meta table", m))
    }

    pub(super) fn table(
        &self,
        def: Table,
    ) -> Result<Option<redb::ReadOnlyTable<&'static [u8], &'static [u8]>>> {
        match self.read_txn()?.open_table(def) {
            Ok(t) => Ok(Some(t)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(storage_failure(&self.path, "cannot open a table", e)),
        }
    }

    /// Refuses a store of another schema: its tables are laid out
    /// otherwise (`tables.rs`), and read as this schema's they would give
    /// garbage or "damaged" records.
    fn same_schema(&self) -> Result<()> {
        match self.meta()? {
            Some(m) if m.schema != STORE_SCHEMA => Err(storage_error(
                &self.path,
                &format!("store schema {}", m.schema),
                format!(
                    "this program reads store schema {STORE_SCHEMA}; the next run of cncopgetprofile rebuilds the store"
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Every job, in the order of the profile document.
    pub fn jobs(&self) -> Result<Jobs> {
        self.same_schema()?;
        let range = match self.table(JOBS)? {
            Some(t) => Some(
                t.range_owned::<&[u8]>(..)
                    .map_err(|e| storage_failure(&self.path, "cannot read jobs", e))?,
            ),
            None => None,
        };
        Ok(Jobs {
            path: self.path.clone(),
            records: range.map(Records::new),
        })
    }

    /// One job by id.
    pub fn job(&self, id: &str) -> Result<Option<Job>> {
        self.same_schema()?;
        let (Some(ids), Some(jobs)) = (self.table(JOB_IDS)?, self.table(JOBS)?) else {
            return Ok(None);
        };
        let mut rec = Vec::new();
        let id_bytes = id.as_bytes();
        match index::find(&ids, &jobs, id_bytes, index::id_hash(id_bytes), &mut rec) {
            Ok(None) => Ok(None),
            Ok(Some(_)) => record::decode_job(&rec)
                .map(Some)
                .ok_or_else(|| storage_error(&self.path, "damaged job record", id)),
            Err(LookupError::Damaged) => Err(storage_error(&self.path, "damaged job index", id)),
            Err(LookupError::Storage(e)) => Err(storage_failure(&self.path, "cannot read jobs", e)),
        }
    }

    /// The number of jobs stored.
    pub fn job_count(&self) -> Result<u64> {
        Ok(self.meta()?.map_or(0, |m| m.jobs))
    }

    /// The profile's firewall endpoints, in document order.
    pub fn endpoints(&self) -> Result<Vec<Endpoint>> {
        self.same_schema()?;
        let Some(t) = self.table(ENDPOINTS)? else {
            return Ok(Vec::new());
        };
        let read = |e| storage_failure(&self.path, "cannot read endpoints", e);
        let mut out = Vec::new();
        for entry in t.iter().map_err(read)? {
            let (_, v) = entry.map_err(read)?;
            out.push(
                record::decode_endpoint(v.value())
                    .ok_or_else(|| storage_error(&self.path, "damaged endpoint record", ""))?,
            );
        }
        Ok(out)
    }
}

/// Iterator over the stored jobs in document order.
pub struct Jobs {
    path: PathBuf,
    records: Option<OwnedRecords>,
}

impl Iterator for Jobs {
    type Item = Result<Job>;

    fn next(&mut self) -> Option<Result<Job>> {
        let path = &self.path;
        Some(match self.records.as_mut()?.next_record() {
            Ok(None) => return None,
            Ok(Some((position, rec))) => record::decode_job(rec).ok_or_else(|| {
                storage_error(
                    path,
                    "damaged job record",
                    format!("at position {position}"),
                )
            }),
            Err(LookupError::Damaged) => Err(storage_error(
                path,
                "damaged job record",
                "a block of records",
            )),
            Err(LookupError::Storage(e)) => Err(storage_failure(path, "cannot read jobs", e)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn a_store_that_cannot_be_reached_keeps_the_io_error_as_its_source() {
        let dir = tempfile::tempdir().unwrap();
        let not_a_folder = dir.path().join("Config");
        std::fs::write(&not_a_folder, b"a file, not a folder").unwrap();
        let path = not_a_folder.join("backupjobs.db");
        let e = StoreReader::open(&path).unwrap_err();
        let io = e.source().and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(
            io.map(|io| io.kind()),
            Some(std::io::ErrorKind::NotADirectory),
            "{e}"
        );
        assert!(e.to_string().starts_with("job store error: "), "{e}");
        assert!(e.to_string().contains(": cannot read: "), "{e}");
    }
}
