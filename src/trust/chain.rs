//! The root of trust (PROTOCOL 8.2): which root a run starts from (the one
//! kept in the agent's state, else the shipped `[trust] root`, which must be
//! signed by a threshold of its own root keys), and the rotation chain
//! N -> N+1, each next root signed by a threshold of the old root keys and
//! of its own, its version exactly N+1.
//!
//! When a new root changes the timestamp or release keys, the kept versions
//! of those documents are forgotten (what the old keys signed says nothing
//! about what the new ones will). An expired root still verifies the next
//! root; the other checks refuse it.

use super::document::MAX_METADATA_BYTES;
use super::kept::Kept;
use super::root::{Role, Root};
use super::signature::Signatures;
use super::{Clock, Saved, Trust, TrustConfig};
use crate::error::io_reason;
use crate::error::{Error, Result};
use std::path::Path;

/// Rotations accepted in one run; the next run goes on from there.
pub const MAX_ROTATIONS: u32 = 32;

pub fn open(cfg: &TrustConfig, saved: Saved, clock: Clock) -> Result<Option<Trust>> {
    let (kept, damage) = kept_root(saved);
    let shipped = shipped_root(cfg, kept.is_some())?;
    let update_block = damage.map(|why| {
        format!(
            "the trust state kept in the agent's state was damaged ({why}): it was re-read from \
             [trust] root, and update checks resume at the next run"
        )
    });
    if let Some(why) = &update_block {
        log::error!("{why}");
    }
    let trust = match (kept, shipped) {
        (None, None) => {
            let where_ = match &cfg.root {
                Some(p) => format!("[trust] root {} is missing", p.display()),
                None => "[trust] root is set empty".to_string(),
            };
            log::info!(
                "no trusted root ({where_}): profiles are accepted on TLS alone and there is no \
                 software update check"
            );
            return Ok(None);
        }
        (Some((root, kept)), None) => Trust {
            root,
            kept,
            clock,
            update_block,
        },
        (None, Some((root, bytes))) => Trust {
            root,
            kept: Kept {
                root: bytes,
                ..Kept::default()
            },
            clock,
            update_block,
        },
        (Some((root, kept)), Some((shipped, bytes))) => {
            let mut trust = Trust {
                root,
                kept,
                clock,
                update_block,
            };
            // A firmware update may ship a newer root than the one kept.
            if shipped.version > trust.root.version {
                log::info!(
                    "the shipped root (version {}) is newer than the kept one (version {}): trusting it",
                    shipped.version,
                    trust.root.version
                );
                replace_root(&mut trust, shipped, bytes);
            }
            trust
        }
    };
    log::debug!(
        "trusted root version {} (expires {})",
        trust.root.version,
        crate::clock::rfc3339(trust.root.expires)
    );
    Ok(Some(trust))
}

/// The root kept in the agent's state and what else was kept with it;
/// `None` with the reason when it was damaged (or `None, None`: nothing kept).
fn kept_root(saved: Saved) -> (Option<(Root, Kept)>, Option<String>) {
    let (kept, damage) = match saved {
        Saved::None => (None, None),
        Saved::Damaged => (None, Some("the state file failed its checksum".to_string())),
        Saved::Bytes(bytes) => match Kept::decode(&bytes) {
            Ok(k) => (Some(k), None),
            Err(why) => (None, Some(why)),
        },
    };
    match kept.map(|k| (Root::parse("the kept root", &k.root), k)) {
        Some((Ok(root), k)) => (Some((root, k)), damage),
        Some((Err(why), _)) => (None, Some(why)),
        None => (None, damage),
    }
}

/// The shipped `[trust] root`, when it exists and checks out. One that does
/// not is a configuration error, unless a root is `kept` from earlier runs.
fn shipped_root(cfg: &TrustConfig, kept: bool) -> Result<Option<(Root, Vec<u8>)>> {
    let Some(path) = cfg.root.as_deref().filter(|p| p.exists()) else {
        return Ok(None);
    };
    match read_shipped(path) {
        Ok(s) => Ok(Some(s)),
        // A root kept from earlier runs goes on; without one the device
        // cannot check anything, which must not pass for "no trust".
        Err(why) if kept => {
            log::warn!("{why}; going on with the trusted root kept in the agent's state");
            Ok(None)
        }
        Err(why) => Err(Error::Config(why.into())),
    }
}

/// The shipped root and its `.sig` file, checked against its own root keys.
fn read_shipped(path: &Path) -> std::result::Result<(Root, Vec<u8>), String> {
    let name = format!("[trust] root {}", path.display());
    let read = |p: &Path| {
        let len = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        if len > MAX_METADATA_BYTES as u64 {
            return Err(format!(
                "{} is larger than {MAX_METADATA_BYTES} bytes",
                p.display()
            ));
        }
        std::fs::read(p).map_err(|e| format!("cannot read {}: {}", p.display(), io_reason(&e)))
    };
    let bytes = read(path).map_err(|e| format!("{name}: {e}"))?;
    let mut sig_path = path.as_os_str().to_owned();
    sig_path.push(".sig");
    let sig_path = Path::new(&sig_path);
    let sig_text = read(sig_path).map_err(|e| format!("{name}: {e} (its signatures)"))?;
    let sigs = std::str::from_utf8(&sig_text)
        .map_err(|_| format!("{} is not text", sig_path.display()))
        .and_then(Signatures::from_sig_file)
        .map_err(|e| format!("{name}: {}: {e}", sig_path.display()))?;
    let root = Root::parse(&name, &bytes)?;
    root.verify(Role::Root, &bytes, &sigs).map_err(|e| {
        format!(
            "{name} (version {}) is not signed by its own root keys: {e}",
            root.version
        )
    })?;
    Ok((root, bytes))
}

/// Makes `root` the trusted root, forgetting the timestamp and release
/// versions when their keys changed.
fn replace_root(trust: &mut Trust, root: Root, bytes: Vec<u8>) {
    for role in [Role::Timestamp, Role::Release] {
        if !root.role(role).same_as(trust.root.role(role)) && trust.kept.timestamp != 0 {
            log::info!(
                "root version {} changes the {} keys: the kept timestamp (version {}) and release \
                 (version {}) are forgotten",
                root.version,
                role.name(),
                trust.kept.timestamp,
                trust.kept.release
            );
            trust.kept.timestamp = 0;
            trust.kept.release = 0;
            trust.kept.release_doc = Vec::new();
        }
    }
    trust.root = root;
    trust.kept.root = bytes;
}

pub fn rotate(
    trust: &mut Trust,
    client: &crate::fetch::Client,
) -> std::result::Result<u32, String> {
    let mut accepted = 0;
    while accepted < MAX_ROTATIONS {
        let next = trust.root.version.saturating_add(1);
        let name = format!("root/{next}.xml");
        let got = client
            .get_signed(
                &format!("v3/trust/root/{next}.xml"),
                MAX_METADATA_BYTES as u64,
            )
            .map_err(|e| format!("{name}: {e}"))?;
        match got.status {
            404 => break,
            200 => {}
            other => return Err(format!("{name}: the network answered HTTP {other}")),
        }
        let sigs = Signatures::parse(got.signatures.iter().map(String::as_str))
            .map_err(|e| format!("{name}: {e}"))?;
        // The old keys first: nothing of the document is read before they
        // vouched for it.
        trust
            .root
            .verify(Role::Root, &got.body, &sigs)
            .map_err(|e| {
                format!(
                    "{name} is not signed by the trusted root's (version {}) root keys: {e}",
                    trust.root.version
                )
            })?;
        let new = Root::parse(&name, &got.body)?;
        if new.version != next {
            return Err(format!(
                "{name} has version {}, expected exactly {next} (trusted root version {})",
                new.version, trust.root.version
            ));
        }
        new.verify(Role::Root, &got.body, &sigs).map_err(|e| {
            format!("{name} (version {next}) is not signed by its own root keys: {e}")
        })?;
        log::info!(
            "accepted root version {next} (expires {}), signed by root versions {} and {next}",
            crate::clock::rfc3339(new.expires),
            trust.root.version
        );
        replace_root(trust, new, got.body);
        accepted += 1;
    }
    Ok(accepted)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trust::root::tests::root_xml;
    use crate::trust::signature::tests::TestKey;

    fn ship(dir: &Path, xml: &str, signers: &[&TestKey]) -> TrustConfig {
        let path = dir.join("cncop-root.xml");
        std::fs::write(&path, xml).expect("write");
        let sig: String = signers
            .iter()
            .map(|k| format!("Cncop-Signature: {}\n", k.sign("root", xml.as_bytes())))
            .collect();
        std::fs::write(dir.join("cncop-root.xml.sig"), sig).expect("write");
        TrustConfig { root: Some(path) }
    }

    #[test]
    fn the_shipped_root_must_be_self_signed() {
        let dir = tempfile::tempdir().expect("tmp");
        let (r, other) = (TestKey::new(), TestKey::new());
        let xml = root_xml(1, "2031-01-01T00:00:00Z", [&[&r], &[&r], &[&r], &[&r]]);
        let clock = Clock::new(crate::clock::now());

        let cfg = ship(dir.path(), &xml, &[&r]);
        let t = Trust::open(&cfg, Saved::None, clock)
            .expect("open")
            .expect("trust");
        assert_eq!(t.root_version(), 1);

        let cfg = ship(dir.path(), &xml, &[&other]);
        let err = Trust::open(&cfg, Saved::None, clock)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("not signed by its own root keys")
                && err.contains(&other.public.id.short()),
            "{err}"
        );

        // Kept trust goes on when the shipped file is broken.
        let kept = Saved::Bytes(t.encode());
        assert!(Trust::open(&cfg, kept, clock).expect("open").is_some());

        let none = TrustConfig {
            root: Some(dir.path().join("absent.xml")),
        };
        assert!(
            Trust::open(&none, Saved::None, clock)
                .expect("open")
                .is_none()
        );
    }

    #[test]
    fn a_damaged_state_reads_the_shipped_root_and_blocks_update_checks() {
        let dir = tempfile::tempdir().expect("tmp");
        let r = TestKey::new();
        let xml = root_xml(1, "2031-01-01T00:00:00Z", [&[&r], &[&r], &[&r], &[&r]]);
        let cfg = ship(dir.path(), &xml, &[&r]);
        let clock = Clock::new(crate::clock::now());
        let t = Trust::open(&cfg, Saved::Damaged, clock)
            .expect("open")
            .expect("trust");
        assert!(t.update_block.is_some());
        let t = Trust::open(&cfg, Saved::Bytes(b"CNT1xx".to_vec()), clock)
            .expect("open")
            .expect("trust");
        assert!(t.update_block.is_some());
    }
}
