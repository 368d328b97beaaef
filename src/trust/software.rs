//! The update metadata (PROTOCOL 4 and 8.2): the timestamp, then the release
//! it names, each verified for its role, never of a lower version than what
//! is kept, never past its expiry, against a clock that is believed.
//!
//! `check` keeps nothing; `accept` keeps what a successful check verified,
//! so a failed check leaves the kept state as it was.

use super::document::MAX_METADATA_BYTES;
use super::release::{self, Release};
use super::root::Role;
use super::signature::Signatures;
use super::timestamp::{self, Timestamp};
use super::{Trust, short_hex};
use crate::update::Version;

/// A verified timestamp and release, not yet kept.
pub struct ReleaseCheck {
    timestamp: Timestamp,
    release: Release,
    release_bytes: Vec<u8>,
}

impl ReleaseCheck {
    pub fn release(&self) -> &Release {
        &self.release
    }
}

pub fn check(trust: &Trust, client: &crate::fetch::Client) -> Result<ReleaseCheck, String> {
    if let Some(why) = &trust.update_block {
        return Err(why.clone());
    }
    let clock = trust.clock;
    if !clock.believed {
        return Err(format!("not done: {}", clock.describe()));
    }
    let root = &trust.root;
    clock.check_expiry("the trusted root", root.version, root.expires)?;
    let ts = fetch_timestamp(trust, client)?;
    let (release, release_bytes) = fetch_release(trust, client, &ts)?;
    Ok(ReleaseCheck {
        timestamp: ts,
        release,
        release_bytes,
    })
}

/// `GET {url}/v3/software/timestamp.xml`, verified for its role, not lower
/// than the kept version and not naming a lower release, not expired.
fn fetch_timestamp(trust: &Trust, client: &crate::fetch::Client) -> Result<Timestamp, String> {
    let (root, kept) = (&trust.root, &trust.kept);
    let got = client
        .get_signed("v3/software/timestamp.xml", MAX_METADATA_BYTES as u64)
        .map_err(|e| format!("{}: {e}", timestamp::NAME))?;
    if got.status != 200 {
        return Err(format!(
            "{}: the network answered HTTP {}",
            timestamp::NAME,
            got.status
        ));
    }
    let sigs = Signatures::parse(got.signatures.iter().map(String::as_str))
        .map_err(|e| format!("{}: {e}", timestamp::NAME))?;
    root.verify(Role::Timestamp, &got.body, &sigs)
        .map_err(|e| format!("{} (root version {}): {e}", timestamp::NAME, root.version))?;
    let ts = Timestamp::parse(&got.body)?;
    if ts.version < kept.timestamp {
        return Err(format!(
            "{} version {} is lower than the version {} already accepted (a rollback)",
            timestamp::NAME,
            ts.version,
            kept.timestamp
        ));
    }
    trust
        .clock
        .check_expiry(timestamp::NAME, ts.version, ts.expires)?;
    if ts.release_version < kept.release {
        return Err(format!(
            "{} version {} names release version {}, lower than the version {} already accepted (a rollback)",
            timestamp::NAME,
            ts.version,
            ts.release_version,
            kept.release
        ));
    }
    Ok(ts)
}

/// The release `ts` names and its bytes: the kept document when it is that
/// version (it was verified when kept), else `GET`. Either way exactly the
/// size and digest `ts` says; a fetched one verified for its role; not
/// expired.
fn fetch_release(
    trust: &Trust,
    client: &crate::fetch::Client,
    ts: &Timestamp,
) -> Result<(Release, Vec<u8>), String> {
    let (root, kept) = (&trust.root, &trust.kept);
    let m = ts.release_version;
    let name = release::name(m);
    let (bytes, fetched) = if m == kept.release && !kept.release_doc.is_empty() {
        (kept.release_doc.clone(), None)
    } else {
        let got = client
            .get_signed(&format!("v3/software/{name}"), ts.release_size)
            .map_err(|e| format!("{name} (timestamp version {}): {e}", ts.version))?;
        if got.status != 200 {
            return Err(format!("{name}: the network answered HTTP {}", got.status));
        }
        (got.body, Some(got.signatures))
    };
    let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
    if bytes.len() as u64 != ts.release_size || digest.as_ref() != ts.release_sha256 {
        return Err(format!(
            "{name} is {} bytes with sha256 {}; {} version {} says {} bytes with sha256 {}",
            bytes.len(),
            short_hex(digest.as_ref()),
            timestamp::NAME,
            ts.version,
            ts.release_size,
            short_hex(&ts.release_sha256)
        ));
    }
    if let Some(signatures) = fetched {
        let sigs = Signatures::parse(signatures.iter().map(String::as_str))
            .map_err(|e| format!("{name}: {e}"))?;
        root.verify(Role::Release, &bytes, &sigs)
            .map_err(|e| format!("{name} (root version {}): {e}", root.version))?;
    }
    let rel = Release::parse(m, &bytes)?;
    if rel.version != m {
        return Err(format!(
            "{name} has version {}, the timestamp named {m}",
            rel.version
        ));
    }
    trust.clock.check_expiry(&name, rel.version, rel.expires)?;
    Ok((rel, bytes))
}

pub fn accept(trust: &mut Trust, check: ReleaseCheck, announced: Option<&Version>) {
    let kept = &mut trust.kept;
    kept.timestamp = check.timestamp.version;
    kept.release = check.release.version;
    kept.release_doc = check.release_bytes;
    if let Some(v) = announced {
        let higher = kept
            .announced
            .as_deref()
            .and_then(|a| Version::parse(a).ok())
            .is_none_or(|a| *v > a);
        if higher {
            kept.announced = Some(v.to_string());
        }
    }
}
