//! cncopgetprofile: the cncop suite's device-side profile agent.
//!
//! One run flows one way: `config` (install root, INI) -> `fetch` (HTTPS to
//! the cncop network) -> `profile` (streaming parse) -> `store` (the redb job
//! store) -> side tasks. `agent` wires the steps together; `main.rs` only
//! parses arguments, sets up `logs` and maps the result to an exit code.

#![forbid(unsafe_code)]

pub mod agent;
pub mod clock;
pub mod config;
pub mod error;
pub mod fetch;
mod files;
pub mod firewall;
mod install_root;
pub mod listing;
pub mod lock;
pub mod logs;
pub mod profile;
pub mod reporter;
pub mod state;
pub mod status;
pub mod store;
pub mod trust;
pub mod update;
#[doc(hidden)]
pub mod write_tap;

pub use error::{Error, Result};
pub use install_root::InstallRoot;
