//! The store's tables and its meta record.
//!
//! Layout (bump `STORE_SCHEMA` on any change; an agent that finds another
//! schema rebuilds the store from a full download):
//! - `meta`: name -> value, the facts below, integers little-endian;
//! - `jobs`: document position -> job record (`record.rs`), so a read in key
//!   order is the profile's order;
//! - `job_ids`: job id -> document position, for lookups and for refusing
//!   duplicate ids without holding a set in memory;
//! - `endpoints`: document position -> endpoint record;
//! - `firewall`: endpoint key -> state record (owned by the firewall step).
//!
//! Every table is bytes to bytes: redb's B-tree code is generic over key and
//! value types, and each extra pair of types compiles another copy of it into
//! a binary that must fit an appliance's flash. Positions are big-endian keys
//! (byte order is numeric order), little-endian values.

use redb::{ReadableTable, TableDefinition};

pub const STORE_SCHEMA: u32 = 1;

pub type Table = TableDefinition<'static, &'static [u8], &'static [u8]>;

pub const META: Table = TableDefinition::new("meta");
pub const JOBS: Table = TableDefinition::new("jobs");
pub const JOB_IDS: Table = TableDefinition::new("job_ids");
pub const ENDPOINTS: Table = TableDefinition::new("endpoints");
pub const FIREWALL: Table = TableDefinition::new("firewall");

/// The key of a document position in `jobs` and `endpoints`.
pub fn position_key(position: u32) -> [u8; 4] {
    position.to_be_bytes()
}

/// A document position stored as a `job_ids` value; `None` if damaged.
pub fn position_value(bytes: &[u8]) -> Option<u32> {
    bytes.try_into().ok().map(u32::from_le_bytes)
}

/// What the store knows about the profile it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreMeta {
    pub schema: u32,
    pub device: String,
    /// The server's ETag of the stored profile, if it sent one.
    pub etag: Option<String>,
    /// The profile's `generated` attribute, as sent.
    pub generated: String,
    /// When this agent accepted the profile (Unix seconds, UTC).
    pub accepted: u64,
    pub jobs: u64,
    pub endpoints: u64,
    /// The signed manifest's profile version (PROTOCOL 8.2), if signed.
    pub version: Option<u64>,
    /// The signed manifest's SHA-256 of the profile bytes, if signed.
    pub sha256: Option<[u8; 32]>,
}

impl StoreMeta {
    pub(super) fn read(
        table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    ) -> Result<Option<StoreMeta>, String> {
        let get = |key: &str| -> Result<Option<Vec<u8>>, String> {
            table
                .get(key.as_bytes())
                .map(|v| v.map(|g| g.value().to_vec()))
                .map_err(|e| e.to_string())
        };
        let Some(schema) = get("schema")? else {
            return Ok(None);
        };
        let schema = u32::from_le_bytes(schema.try_into().map_err(|_| "schema")?);
        let text = |key: &str| -> Result<Option<String>, String> {
            get(key)?
                .map(|v| String::from_utf8(v).map_err(|_| key.to_string()))
                .transpose()
        };
        let u64_of = |key: &str| -> Result<u64, String> {
            let v = get(key)?.ok_or(key)?;
            Ok(u64::from_le_bytes(
                v.try_into().map_err(|_| key.to_string())?,
            ))
        };
        // A store of another schema is only ever asked for its schema: its
        // other entries may have another layout.
        if schema != STORE_SCHEMA {
            return Ok(Some(StoreMeta {
                schema,
                device: String::new(),
                etag: None,
                generated: String::new(),
                accepted: 0,
                jobs: 0,
                endpoints: 0,
                version: None,
                sha256: None,
            }));
        }
        Ok(Some(StoreMeta {
            schema,
            device: text("device")?.unwrap_or_default(),
            etag: text("etag")?,
            generated: text("generated")?.unwrap_or_default(),
            accepted: u64_of("accepted")?,
            jobs: u64_of("jobs")?,
            endpoints: u64_of("endpoints")?,
            version: get("version")?
                .map(|v| v.try_into().map(u64::from_le_bytes).map_err(|_| "version"))
                .transpose()?,
            sha256: get("sha256")?
                .map(|v| v.try_into().map_err(|_| "sha256"))
                .transpose()?,
        }))
    }

    pub(super) fn write(
        &self,
        table: &mut redb::Table<&[u8], &[u8]>,
    ) -> Result<(), redb::StorageError> {
        table.insert(b"schema".as_slice(), self.schema.to_le_bytes().as_slice())?;
        table.insert(b"device".as_slice(), self.device.as_bytes())?;
        if let Some(etag) = &self.etag {
            table.insert(b"etag".as_slice(), etag.as_bytes())?;
        }
        table.insert(b"generated".as_slice(), self.generated.as_bytes())?;
        table.insert(
            b"accepted".as_slice(),
            self.accepted.to_le_bytes().as_slice(),
        )?;
        table.insert(b"jobs".as_slice(), self.jobs.to_le_bytes().as_slice())?;
        table.insert(
            b"endpoints".as_slice(),
            self.endpoints.to_le_bytes().as_slice(),
        )?;
        if let Some(v) = self.version {
            table.insert(b"version".as_slice(), v.to_le_bytes().as_slice())?;
        }
        if let Some(d) = &self.sha256 {
            table.insert(b"sha256".as_slice(), d.as_slice())?;
        }
        Ok(())
    }
}
