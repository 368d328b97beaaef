//! cncopgetprofile: the cncop suite's device-side profile agent, and the
//! read API of the job store it keeps for the suite's other programs.
//!
//! Reading the store (with or without the default `agent` feature):
//!
//! ```no_run
//! use cncopgetprofile::{InstallRoot, StoreReader};
//! # fn main() -> cncopgetprofile::Result<()> {
//! let root = InstallRoot::locate()?;
//! if let Some(store) = StoreReader::open(&root.store())? {
//!     for job in store.jobs()? {
//!         let job = job?;
//!         println!("{} {}", job.id, job.name);
//!     }
//! }
//! # Ok(())
//! # }
//! ```
//!
//! A program that only reads the store depends on this crate with
//! `default-features = false`: it then compiles redb and the job model, not
//! the agent's HTTPS client, TLS, XML parser or logging.
//!
//! The agent (feature `agent`): one run flows one way: `config` (the INI)
//! -> `fetch` (HTTPS to the cncop network) -> `profile` (streaming parse)
//! -> `store` (the redb job store) -> side tasks. `agent` orders the steps;
//! `main.rs` only parses arguments, sets up `logs` and maps the result to an
//! exit code.

#![forbid(unsafe_code)]
// The store reader's surface is documented item by item (CI lints the
// build without the agent with -D warnings).
#![cfg_attr(not(feature = "agent"), warn(missing_docs))]

mod error;
mod install_root;

#[cfg(feature = "agent")]
mod profile;
/// Without the agent only the job model of `profile` is compiled: the store
/// reader decodes records into it; the parser is the agent's.
#[cfg(not(feature = "agent"))]
#[allow(dead_code)] // the model's helpers for the parser and the encoder
mod profile {
    pub mod job;
}

#[cfg(feature = "agent")]
mod store;
/// Without the agent only the read side of `store` is compiled.
#[cfg(not(feature = "agent"))]
#[allow(dead_code)] // the record encoders and the tables' writers
mod store {
    mod blocks;
    mod damage;
    mod index;
    pub mod reader;
    pub mod record;
    mod tables;

    pub use reader::{Jobs, StoreReader};
    pub use tables::StoreMeta;
}

#[cfg(feature = "agent")]
mod agent;
#[cfg(feature = "agent")]
mod clock;
#[cfg(feature = "agent")]
mod config;
#[cfg(feature = "agent")]
mod download;
#[cfg(feature = "agent")]
mod fetch;
#[cfg(feature = "agent")]
mod files;
#[cfg(feature = "agent")]
mod firewall;
#[cfg(feature = "agent")]
mod json;
#[cfg(feature = "agent")]
mod listing;
#[cfg(feature = "agent")]
mod lock;
#[cfg(feature = "agent")]
mod logs;
#[cfg(feature = "agent")]
mod reporter;
#[cfg(feature = "agent")]
mod state;
#[cfg(feature = "agent")]
mod status;
#[cfg(feature = "agent")]
mod trust;
#[cfg(feature = "agent")]
mod update;
#[cfg(feature = "agent")]
mod write_tap;

// What the suite's store readers use.
pub use error::{Error, Reason, Result, exit};
pub use install_root::InstallRoot;
pub use profile::job::{
    Child, ChildKind, Children, Credential, EmailWhen, Endpoint, Job, JobType, Target,
};
pub use store::{Jobs, StoreMeta, StoreReader};

// The agent, as `main.rs` drives it.
#[cfg(feature = "agent")]
pub use agent::{Report, RunOptions, UpdateChoice, run};
#[cfg(feature = "agent")]
pub use clock::now;
#[cfg(feature = "agent")]
pub use fetch::target_triple;
#[cfg(feature = "agent")]
pub use listing::write as write_listing;
#[cfg(feature = "agent")]
pub use logs::Logs;
#[cfg(feature = "agent")]
pub use status::{run_and_record, show as show_status};
#[cfg(feature = "agent")]
pub use store::exit_on_store_damage;

/// Not part of the library's surface: the parts the project's own
/// integration tests, benchmarks and fuzz targets check directly. It may
/// change with any commit; the suite's programs use the items above.
#[doc(hidden)]
#[cfg(feature = "agent")]
pub mod internals {
    pub mod clock {
        pub use crate::clock::{day_stamp, parse_retry_after, parse_rfc3339, rfc3339};
    }
    pub mod config {
        pub use crate::config::{Config, Ini};
    }
    pub mod firewall {
        pub use crate::firewall::{States, decode_states};
    }
    pub mod profile {
        pub use crate::profile::{Header, ProfileSink, Summary, parse};
    }
    pub mod state {
        pub use crate::state::{Section, Sections, StateFile, decode, encode};
    }
    pub mod store {
        pub use crate::store::{JobStore, etag, record};
    }
    pub mod trust {
        pub use crate::trust::{Kept, Manifest, Release, Role, Root, Signatures, Timestamp, hex};
    }
    pub mod write_tap {
        pub use crate::write_tap::{Event, Tap, install};
    }
    pub mod logs {
        pub use crate::logs::file_name;
    }
    pub mod status {
        pub use crate::status::read;
    }
}
