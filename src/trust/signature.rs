//! Ed25519 signatures of PROTOCOL 8.1: key ids, `Cncop-Signature` header
//! values, and the threshold check of one role over one document.
//!
//! Invariant: a document counts as signed for a role only when signatures
//! from at least `threshold` *distinct* keys that the trusted root lists for
//! that role verify over `cncop-v3-<role>\n` + the exact bytes. Nothing of
//! the document is looked at before that.

use base64::Engine as _;
use ring::signature::{ED25519, UnparsedPublicKey};
use std::fmt;

/// The response header that carries one signature.
pub const HEADER: &str = "Cncop-Signature";
/// Signature headers looked at per document; more are refused, so a server
/// cannot make the agent verify without bound.
pub const MAX_SIGNATURES: usize = 32;

/// The lowercase hex SHA-256 of a 32-byte Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u8; 32]);

impl KeyId {
    pub fn of(public_key: &[u8; 32]) -> KeyId {
        let digest = ring::digest::digest(&ring::digest::SHA256, public_key);
        let mut id = [0; 32];
        id.copy_from_slice(digest.as_ref());
        KeyId(id)
    }

    /// Parses 64 lowercase hex digits (the only spelling PROTOCOL 8.1 allows).
    pub fn parse(text: &str) -> Option<KeyId> {
        let mut id = [0; 32];
        crate::trust::hex_decode(text, &mut id).then_some(KeyId(id))
    }

    /// The first 16 hex digits: enough to tell keys apart in a log line.
    pub fn short(&self) -> String {
        self.to_string()[..16].to_string()
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({})", self.short())
    }
}

/// A public key the trusted root lists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicKey {
    pub id: KeyId,
    pub bytes: [u8; 32],
}

impl PublicKey {
    /// From the base64 of 32 bytes.
    pub fn from_base64(text: &str) -> Option<PublicKey> {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()?;
        let bytes: [u8; 32] = raw.try_into().ok()?;
        Some(PublicKey {
            id: KeyId::of(&bytes),
            bytes,
        })
    }
}

/// One `Cncop-Signature: ed25519 <key id> <base64>` value.
#[derive(Clone, Debug)]
pub struct Signature {
    pub key: KeyId,
    bytes: [u8; 64],
}

impl Signature {
    pub fn parse(value: &str) -> Result<Signature, String> {
        let mut parts = value.split_ascii_whitespace();
        let (Some(scheme), Some(key), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err("is not 'ed25519 <key id> <base64 signature>'".to_string());
        };
        if scheme != "ed25519" {
            return Err(format!(
                "has scheme '{}', only ed25519 is known",
                crate::error::Shown::bare(scheme)
            ));
        }
        let key = KeyId::parse(key).ok_or("has a key id that is not 64 lowercase hex digits")?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(sig)
            .ok()
            .and_then(|b| <[u8; 64]>::try_from(b).ok())
            .ok_or_else(|| format!("from key {} is not the base64 of 64 bytes", key.short()))?;
        Ok(Signature { key, bytes })
    }
}

/// The signatures a response carried, with the header values that were not
/// signatures at all (kept to be named when the threshold is not reached).
#[derive(Clone, Debug, Default)]
pub struct Signatures {
    pub valid_form: Vec<Signature>,
    pub malformed: Vec<String>,
}

impl Signatures {
    /// From the header values (or the `.sig` file's lines, prefix removed).
    pub fn parse<'a>(values: impl IntoIterator<Item = &'a str>) -> Result<Signatures, String> {
        let mut out = Signatures::default();
        for (i, value) in values.into_iter().enumerate() {
            if i >= MAX_SIGNATURES {
                return Err(format!("more than {MAX_SIGNATURES} {HEADER} headers"));
            }
            match Signature::parse(value) {
                Ok(s) => out.valid_form.push(s),
                Err(why) => out.malformed.push(format!("a signature {why}")),
            }
        }
        Ok(out)
    }

    /// The lines of a `.sig` file: `Cncop-Signature: ...` each; blank lines
    /// and `#` comments are skipped.
    pub fn from_sig_file(text: &str) -> Result<Signatures, String> {
        let mut values = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let value = line
                .split_once(':')
                .filter(|(name, _)| name.trim().eq_ignore_ascii_case(HEADER))
                .map(|(_, v)| v.trim())
                .ok_or_else(|| format!("line {} is not '{HEADER}: ...'", n + 1))?;
            values.push(value);
        }
        Signatures::parse(values)
    }

    pub fn is_empty(&self) -> bool {
        self.valid_form.is_empty() && self.malformed.is_empty()
    }
}

/// The keys and threshold of one role, as the trusted root lists them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleKeys {
    pub threshold: usize,
    pub keys: Vec<PublicKey>,
}

impl RoleKeys {
    pub fn ids(&self) -> impl Iterator<Item = KeyId> + '_ {
        self.keys.iter().map(|k| k.id)
    }

    /// Whether the role's key set and threshold equal `other`'s (in any order).
    pub fn same_as(&self, other: &RoleKeys) -> bool {
        self.threshold == other.threshold
            && self.keys.len() == other.keys.len()
            && self.keys.iter().all(|k| other.keys.contains(k))
    }

    /// Verifies `body` for `role`: Ok with the ids of the distinct role keys
    /// whose signatures verified, once there are `threshold` of them; else a
    /// description of what was found, naming every key id involved.
    pub fn verify(&self, role: &str, body: &[u8], sigs: &Signatures) -> Result<Vec<KeyId>, String> {
        let mut message = Vec::with_capacity(body.len() + 32);
        message.extend_from_slice(b"cncop-v3-");
        message.extend_from_slice(role.as_bytes());
        message.push(b'\n');
        message.extend_from_slice(body);

        let mut good: Vec<KeyId> = Vec::new();
        let mut notes: Vec<String> = Vec::new();
        for sig in &sigs.valid_form {
            let Some(key) = self.keys.iter().find(|k| k.id == sig.key) else {
                notes.push(format!("{} is not a {role} key", sig.key.short()));
                continue;
            };
            if good.contains(&key.id) {
                notes.push(format!("{} signed twice (counted once)", key.id.short()));
                continue;
            }
            match UnparsedPublicKey::new(&ED25519, &key.bytes).verify(&message, &sig.bytes) {
                Ok(()) => good.push(key.id),
                Err(_) => notes.push(format!("{}: signature does not verify", key.id.short())),
            }
        }
        if good.len() >= self.threshold {
            return Ok(good);
        }
        notes.extend(sigs.malformed.iter().cloned());
        let listed: Vec<String> = self.ids().map(|k| k.short()).collect();
        let verified: Vec<String> = good.iter().map(KeyId::short).collect();
        Err(format!(
            "signed by {} of the {} {role} keys needed (verified: [{}]; {role} keys: [{}]; {})",
            good.len(),
            self.threshold,
            verified.join(", "),
            listed.join(", "),
            if sigs.is_empty() {
                "no signatures".to_string()
            } else if notes.is_empty() {
                "no other signatures".to_string()
            } else {
                notes.join("; ")
            }
        ))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ring::rand::SystemRandom;
    use ring::signature::{Ed25519KeyPair, KeyPair};

    pub(crate) struct TestKey {
        pair: Ed25519KeyPair,
        pub public: PublicKey,
    }

    impl TestKey {
        pub(crate) fn new() -> TestKey {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("keygen");
            let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key");
            let bytes: [u8; 32] = pair.public_key().as_ref().try_into().expect("32 bytes");
            TestKey {
                pair,
                public: PublicKey {
                    id: KeyId::of(&bytes),
                    bytes,
                },
            }
        }

        pub(crate) fn base64(&self) -> String {
            base64::engine::general_purpose::STANDARD.encode(self.public.bytes)
        }

        pub(crate) fn sign(&self, role: &str, body: &[u8]) -> String {
            let mut m = format!("cncop-v3-{role}\n").into_bytes();
            m.extend_from_slice(body);
            let sig = self.pair.sign(&m);
            format!(
                "ed25519 {} {}",
                self.public.id,
                base64::engine::general_purpose::STANDARD.encode(sig.as_ref())
            )
        }
    }

    fn role(keys: &[&TestKey], threshold: usize) -> RoleKeys {
        RoleKeys {
            threshold,
            keys: keys.iter().map(|k| k.public.clone()).collect(),
        }
    }

    fn sigs(values: &[String]) -> Signatures {
        Signatures::parse(values.iter().map(String::as_str)).expect("parse")
    }

    #[test]
    fn key_id_is_hex_sha256_of_the_key() {
        let id = KeyId::of(&[0; 32]);
        assert_eq!(
            id.to_string(),
            "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
        );
        assert_eq!(KeyId::parse(&id.to_string()), Some(id));
        assert_eq!(KeyId::parse(&id.to_string().to_uppercase()), None);
    }

    #[test]
    fn threshold_counts_distinct_role_keys_only() {
        let (a, b, c) = (TestKey::new(), TestKey::new(), TestKey::new());
        let body = b"<release/>";
        let r = role(&[&a, &b], 2);
        assert!(
            r.verify(
                "release",
                body,
                &sigs(&[a.sign("release", body), b.sign("release", body)])
            )
            .is_ok()
        );
        // The same key twice is one signature.
        let dup = a.sign("release", body);
        let err = r
            .verify("release", body, &sigs(&[dup.clone(), dup]))
            .unwrap_err();
        assert!(
            err.contains("signed by 1 of the 2") && err.contains("signed twice"),
            "{err}"
        );
        // A key the role does not list does not count.
        let err = r
            .verify(
                "release",
                body,
                &sigs(&[a.sign("release", body), c.sign("release", body)]),
            )
            .unwrap_err();
        assert!(
            err.contains(&format!("{} is not a release key", c.public.id.short())),
            "{err}"
        );
        // A signature for another role never verifies for this one.
        let err = r
            .verify(
                "release",
                body,
                &sigs(&[a.sign("timestamp", body), b.sign("release", body)]),
            )
            .unwrap_err();
        assert!(err.contains("does not verify"), "{err}");
        // Another body.
        assert!(
            r.verify(
                "release",
                b"<release />",
                &sigs(&[a.sign("release", body), b.sign("release", body)])
            )
            .is_err()
        );
    }

    #[test]
    fn malformed_headers_are_named() {
        let err = Signature::parse("rsa 00 AA==").unwrap_err();
        assert!(err.contains("rsa"), "{err}");
        assert!(Signature::parse("ed25519 abc AA==").is_err());
        let a = TestKey::new();
        let cut = format!("ed25519 {} AAAA", a.public.id);
        assert!(Signature::parse(&cut).unwrap_err().contains("64 bytes"));
        let many: Vec<String> = (0..=MAX_SIGNATURES).map(|_| a.sign("root", b"x")).collect();
        assert!(Signatures::parse(many.iter().map(String::as_str)).is_err());
    }

    #[test]
    fn sig_files_hold_header_lines() {
        let a = TestKey::new();
        let text = format!("# shipped root\n{HEADER}: {}\n\n", a.sign("root", b"r"));
        let s = Signatures::from_sig_file(&text).expect("parse");
        assert_eq!(s.valid_form.len(), 1);
        assert!(role(&[&a], 1).verify("root", b"r", &s).is_ok());
        assert!(Signatures::from_sig_file("ed25519 x y\n").is_err());
    }
}
