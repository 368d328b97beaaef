//! The store's tables and its meta record.
//!
//! Layout (bump `STORE_SCHEMA` on any change; an agent that finds another
//! schema rebuilds the store from a full download):
//! - `meta`: name -> value, the facts below, integers little-endian;
//! - `jobs`: document position of a block's first job -> a block of
//!   consecutive job records (`blocks.rs`, `record.rs`), so a read in key
//!   order is the profile's order;
//! - `job_ids`: the id index (`index.rs`): sorted chunks of `id hash ++
//!   document position` entries, keyed by their first, for lookups by id
//!   and for refusing duplicate ids without holding a set in memory;
//! - `endpoints`: document position -> endpoint record.
//!
//! The agent's own bookkeeping (the ETag, the firewall state) is not here but
//! in its state file (`crate::state`): changing it must not copy the store.
//!
//! Schema 2 dropped schema 1's `etag` and `digest` meta entries and its
//! `firewall` table, and added the store's random `id` and the `version` and
//! `sha256` entries of a signed profile. Schema 3 replaced `job_ids`' keys
//! (the ids themselves, with positions as values, inserted in id order) by
//! sorted runs appended in key order, to write each index page once.
//! Schema 4 packed each run's keys into chunks of 256 entries, an insert
//! per chunk rather than per job (never released: main held it for an
//! hour), and schema 5 packed the job records into blocks of a leaf page.
//! Every table is bytes to bytes: redb's B-tree code is generic over key and
//! value types, and each extra pair of types compiles another copy of it into
//! a binary that must fit an appliance's flash. Integers in keys are
//! big-endian (byte order is numeric order), in values little-endian.

use redb::{ReadableTable, TableDefinition};

pub const STORE_SCHEMA: u32 = 5;

pub type Table = TableDefinition<'static, &'static [u8], &'static [u8]>;

pub const META: Table = TableDefinition::new("meta");
pub const JOBS: Table = TableDefinition::new("jobs");
pub const JOB_IDS: Table = TableDefinition::new("job_ids");
pub const ENDPOINTS: Table = TableDefinition::new("endpoints");

/// The key of a document position in `jobs` and `endpoints`.
pub fn position_key(position: u32) -> [u8; 4] {
    position.to_be_bytes()
}

/// What the store knows about the profile it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreMeta {
    /// The store's layout version, `STORE_SCHEMA` when this agent wrote it.
    pub schema: u32,
    /// The device the profile is for.
    pub device: String,
    /// The profile's `generated` attribute, as sent.
    pub generated: String,
    /// When this agent accepted the profile (Unix seconds, UTC).
    pub accepted: u64,
    /// Random, new for every store file written: names the stored content
    /// (the state file ties the ETag to it, `store::etag`).
    pub id: [u8; 16],
    /// Jobs stored.
    pub jobs: u64,
    /// Firewall endpoints stored.
    pub endpoints: u64,
    /// The signed profile manifest's `version` (PROTOCOL 8.2); `None` for a
    /// profile accepted without a trusted root.
    pub version: Option<u64>,
    /// The signed manifest's `sha256` of the profile's exact XML bytes;
    /// `None` as for `version`.
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
        let u64_in = |v: Vec<u8>, key: &str| -> Result<u64, String> {
            Ok(u64::from_le_bytes(
                v.try_into().map_err(|_| key.to_string())?,
            ))
        };
        let u64_of = |key: &str| -> Result<u64, String> { u64_in(get(key)?.ok_or(key)?, key) };
        let digest_in = |v: Vec<u8>, key: &str| -> Result<[u8; 32], String> {
            v.try_into().map_err(|_| key.to_string())
        };
        // A store of another schema is only ever asked for its schema: its
        // other entries may have another layout.
        if schema != STORE_SCHEMA {
            return Ok(Some(StoreMeta {
                schema,
                device: String::new(),
                generated: String::new(),
                accepted: 0,
                id: [0; 16],
                jobs: 0,
                endpoints: 0,
                version: None,
                sha256: None,
            }));
        }
        Ok(Some(StoreMeta {
            schema,
            device: text("device")?.unwrap_or_default(),
            generated: text("generated")?.unwrap_or_default(),
            accepted: u64_of("accepted")?,
            id: get("id")?.ok_or("id")?.try_into().map_err(|_| "id")?,
            jobs: u64_of("jobs")?,
            endpoints: u64_of("endpoints")?,
            version: get("version")?.map(|v| u64_in(v, "version")).transpose()?,
            sha256: get("sha256")?.map(|v| digest_in(v, "sha256")).transpose()?,
        }))
    }

    pub(super) fn write(
        &self,
        table: &mut redb::Table<&[u8], &[u8]>,
    ) -> Result<(), redb::StorageError> {
        table.insert(b"schema".as_slice(), self.schema.to_le_bytes().as_slice())?;
        table.insert(b"device".as_slice(), self.device.as_bytes())?;
        table.insert(b"generated".as_slice(), self.generated.as_bytes())?;
        table.insert(
            b"accepted".as_slice(),
            self.accepted.to_le_bytes().as_slice(),
        )?;
        table.insert(b"id".as_slice(), self.id.as_slice())?;
        table.insert(b"jobs".as_slice(), self.jobs.to_le_bytes().as_slice())?;
        table.insert(
            b"endpoints".as_slice(),
            self.endpoints.to_le_bytes().as_slice(),
        )?;
        if let Some(version) = self.version {
            table.insert(b"version".as_slice(), version.to_le_bytes().as_slice())?;
        }
        if let Some(sha256) = &self.sha256 {
            table.insert(b"sha256".as_slice(), sha256.as_slice())?;
        }
        Ok(())
    }
}
