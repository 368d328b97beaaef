//! Signed metadata (PROTOCOL 8): what the device trusts, and the checks that
//! let it announce only release-signed software and store only profiles
//! signed for it.
//!
//! Owns: the `[trust]` setting, the trusted root (shipped file, rotations,
//! the copy kept in the agent's state), the clock's credibility, the update
//! metadata (timestamp -> release) and the profile manifest. The state file
//! itself is `state`'s: this module reads the `trust` section back
//! (`Saved::from_state`) and keeps its bytes there (`Trust::keep`).
//!
//! Invariant: a signature is checked on a document's exact bytes before any
//! of its fields is believed, and nothing is kept from a failed check.

mod body;
mod chain;
mod document;
mod kept;
mod manifest;
mod release;
mod root;
mod signature;
mod software;
mod timestamp;

pub use body::CheckedBody;
pub use kept::Kept;
pub use manifest::{HEADER as MANIFEST_HEADER, Manifest, Stored};
pub use release::Release;
pub use root::{Role, Root};
pub use signature::{HEADER as SIGNATURE_HEADER, Signatures};
pub use software::ReleaseCheck;
pub use timestamp::Timestamp;

use crate::clock::{self, UnixTime};
use crate::config::Ini;
use crate::error::{Error, Result, Shown};
use crate::state::{Section, StateFile};
use std::path::{Path, PathBuf};

/// `[trust] root` when unset.
pub const DEFAULT_ROOT: &str = "Config/cncop-root.xml";

/// `[trust]`: where the shipped root is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustConfig {
    /// The shipped root document; its signatures are in `<root>.sig`.
    /// `None`: `[trust] root` is set empty (signed metadata off).
    pub root: Option<PathBuf>,
}

impl TrustConfig {
    pub fn from_ini(ini: &Ini, install_root: &Path) -> TrustConfig {
        let value = ini
            .section("trust")
            .optional("root")
            .unwrap_or(DEFAULT_ROOT);
        TrustConfig {
            root: (!value.trim().is_empty()).then(|| install_root.join(value.trim())),
        }
    }
}

/// The device clock, and whether it can be believed: not when it is before
/// the agent's build time.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    pub now: UnixTime,
    pub believed: bool,
}

impl Clock {
    pub fn new(now: UnixTime) -> Clock {
        Clock {
            now,
            believed: now >= clock::build_time(),
        }
    }

    fn describe(&self) -> String {
        if self.believed {
            format!("clock {}", clock::rfc3339(self.now))
        } else {
            format!(
                "clock {} is before this agent was built ({}): the clock is wrong, fix NTP/the time",
                clock::rfc3339(self.now),
                clock::rfc3339(clock::build_time())
            )
        }
    }

    /// Refuses a document whose `expires` is not later than now.
    fn check_expiry(
        &self,
        doc: &str,
        version: u64,
        expires: UnixTime,
    ) -> std::result::Result<(), String> {
        if self.believed && expires <= self.now {
            return Err(format!(
                "{doc} version {version} expired at {} ({})",
                clock::rfc3339(expires),
                self.describe()
            ));
        }
        Ok(())
    }
}

/// The trust of one run: the trusted root and what was kept.
pub struct Trust {
    root: Root,
    kept: Kept,
    clock: Clock,
    /// Why update checks fail this run whatever the server says (the kept
    /// state was damaged and re-read from the shipped root).
    update_block: Option<String>,
}

/// What the state file held of the trust section at the start of the run.
#[derive(Clone, Debug, Default)]
pub enum Saved {
    /// Never written (a fresh device, or state written before trust).
    #[default]
    None,
    Bytes(Vec<u8>),
    /// The state file (or this section) failed its checksum.
    Damaged,
}

impl Saved {
    /// What `state` holds of the trust section.
    pub fn from_state(state: &StateFile) -> Saved {
        match (state.was_damaged(), state.get(Section::TRUST)) {
            (true, _) => Saved::Damaged,
            (false, Some(bytes)) => Saved::Bytes(bytes.to_vec()),
            (false, None) => Saved::None,
        }
    }
}

impl Trust {
    /// The run's trust: the kept root, or the shipped one when nothing is
    /// kept, the kept state is damaged or the shipped root is newer.
    /// `Ok(None)`: no trusted root at all (said once in the log).
    pub fn open(cfg: &TrustConfig, saved: Saved, clock: Clock) -> Result<Option<Trust>> {
        chain::open(cfg, saved, clock)
    }

    /// The trust section's bytes, to be kept in the state file.
    pub fn encode(&self) -> Vec<u8> {
        self.kept.encode()
    }

    /// Keeps the trust section in `state` (written only when it changed).
    pub fn keep(&self, state: &mut StateFile) -> Result<bool> {
        state.put(Section::TRUST, Some(self.encode()))
    }

    #[cfg(test)]
    pub fn root_version(&self) -> u64 {
        self.root.version
    }

    /// For the run record: the trusted versions, and the highest software
    /// version announced.
    pub fn status(&self) -> (crate::status::TrustStatus, Option<String>) {
        let k = &self.kept;
        (
            crate::status::TrustStatus {
                root: self.root.version,
                timestamp: (k.timestamp > 0).then_some(k.timestamp),
                release: (k.release > 0).then_some(k.release),
            },
            k.announced.clone(),
        )
    }

    /// PROTOCOL 8.2, before anything else of signed metadata:
    /// `GET {url}/v3/trust/root/<N+1>.xml` and on, up to 32 a run, accepting
    /// each next root signed by the old and the new root keys, then keeps
    /// the trust state in `state` (also the first trusted root a device reads
    /// from `[trust] root`). A refused root is an error line; the trusted one
    /// stays.
    pub fn rotate(&mut self, client: &crate::fetch::Client, state: &mut StateFile) {
        if let Err(why) = chain::rotate(self, client) {
            log::error!("trusted root update refused: {why}");
        }
        if let Err(e) = self.keep(state) {
            log::error!("the trust state could not be kept: {e}");
        }
    }

    /// The timestamp and the release it names, verified.
    pub fn check_release(
        &self,
        client: &crate::fetch::Client,
    ) -> std::result::Result<ReleaseCheck, String> {
        software::check(self, client)
    }

    /// Keeps what `check` accepted, and `announced` as the highest software
    /// version ever announced when it is higher.
    pub fn accept(&mut self, check: ReleaseCheck, announced: Option<&crate::update::Version>) {
        software::accept(self, check, announced)
    }

    /// The highest software version ever announced, if any.
    pub fn announced(&self) -> Option<crate::update::Version> {
        self.kept
            .announced
            .as_deref()
            .and_then(|v| crate::update::Version::parse(v).ok())
    }

    /// Verifies a profile response's `Cncop-Profile` header (`value`) and its
    /// signatures for `device`; the one-line refusal names the check.
    pub fn verify_manifest<'a>(
        &self,
        device: &str,
        value: Option<&str>,
        signatures: impl IntoIterator<Item = &'a str>,
    ) -> std::result::Result<Manifest, String> {
        let doc = format!("the {} header", manifest::HEADER);
        if self.clock.believed {
            self.clock
                .check_expiry("the trusted root", self.root.version, self.root.expires)?;
        }
        let value = value.ok_or_else(|| format!("{doc} is missing"))?;
        let sigs = Signatures::parse(signatures).map_err(|e| format!("{doc}: {e}"))?;
        self.root
            .verify(Role::Profile, value.as_bytes(), &sigs)
            .map_err(|e| format!("{doc} (root version {}): {e}", self.root.version))?;
        let m = Manifest::parse(value).map_err(|e| format!("{doc} {e}"))?;
        if m.device != device {
            return Err(format!(
                "{doc} is for device {}, this device is {device}",
                Shown::bare(&m.device)
            ));
        }
        self.clock
            .check_expiry("the profile manifest", m.version, m.expires)?;
        Ok(m)
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The first 16 hex digits of a digest, for log lines.
fn short_hex(bytes: &[u8]) -> String {
    let mut h = hex(bytes);
    h.truncate(16);
    h
}

/// Decodes exactly `out.len()` bytes of lowercase hex.
fn hex_decode(text: &str, out: &mut [u8]) -> bool {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    if text.len() != out.len() * 2 {
        return false;
    }
    for (o, pair) in out.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
        match (digit(pair[0]), digit(pair[1])) {
            (Some(h), Some(l)) => *o = h << 4 | l,
            _ => return false,
        }
    }
    true
}

/// A failed trust step as the run's error: refused profiles exit 5.
pub fn profile_refused(why: String) -> Error {
    Error::Profile(
        format!("signed metadata check failed: {why}; the store keeps the previous profile").into(),
    )
}
