//! Test support of `cncopgetprofile`: the local cncop network, fixtures, and
//! the agent under test run as a real process. A dev-dependency of the
//! agent's package only (its integration tests and the `localnet` example);
//! nothing here reaches the appliance binary.
//!
//! | module | owns |
//! | --- | --- |
//! | [`net`] | the local cncop network: TLS server on 127.0.0.1, devices, faults, signed metadata |
//! | [`genprofile`] | synthetic profiles of any size, deterministic for a seed |
//! | [`sign`] | the operators' signing tool (`cargo run --example localnet -- sign`) |
//! | [`agent`] | the agent under test (host build or an emulated appliance binary) and running it |
//! | [`install`] | throwaway install roots, their INI, the store as a user sees it |
//! | [`fixtures`] | the standard device, networks, profiles and releases the tests share |
//! | [`checks`] | reading and asserting on a run's exit code, output and listing |
//! | [`client`] | a raw HTTP(S) client, for testing the network itself |
//! | [`rng`] | a seeded generator whose runs replay from their printed seed |
//! | [`sockets`] | UDP receive, a dead TCP port, endpoints of their own on loopback |
//! | [`xml`] | the tests' own XML escaping and attribute reading |
//!
//! Test files take it all with `use support::*;`.

pub mod agent;
pub mod checks;
pub mod client;
pub mod fixtures;
pub mod genprofile;
pub mod install;
pub mod net;
pub mod rng;
pub mod sign;
pub mod sockets;
pub mod xml;

pub use agent::*;
pub use checks::*;
pub use client::*;
pub use fixtures::*;
pub use install::*;
pub use net::trust::{
    Authority, Build, FAR, Key, MANIFEST_HEADER, ManifestLie, RoleKeys, Roles, SIGNATURE_HEADER,
    Signed, hex, manifest, release_xml, root_xml, sha256, timestamp_xml, unix_now, utc, write_root,
};
pub use net::{
    DEFAULT_BASE_PATH, DEFAULT_DEVICE, Fault, Leaf, NetOptions, Pki, Recorded, ServerCert,
    TestNetwork, TlsVersions, base64_decode, crc32, etag_for, http_date, random_hex,
};
pub use rng::Rng;
pub use sockets::*;
pub use xml::*;
