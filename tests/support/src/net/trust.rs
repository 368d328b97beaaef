//! Signed metadata on the local network (PROTOCOL 8): Ed25519 keys made at
//! run time with ring, the vendor's root chain with its rotations, the
//! timestamp and release documents, signed profile manifests, and the
//! switches that make the network lie in every way a device must refuse.
//!
//! An [`Authority`] is what a vendor keeps offline (root and release keys)
//! and online (timestamp and profile keys). It makes documents; the network
//! serves what is published to it ([`TestNetwork::publish`]) and, once
//! [`TestNetwork::sign_profiles`] gave it the profile key, signs every
//! profile answer's manifest itself, honestly unless a [`ManifestLie`] says
//! otherwise.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use ring::rand::SystemRandom;
use ring::signature::{Ed25519KeyPair, KeyPair};

use super::devices::ProfileBody;
use super::http::Response;
use super::{State, TestNetwork};

/// The response header of one signature.
pub const SIGNATURE_HEADER: &str = "Cncop-Signature";
/// The profile manifest header.
pub const MANIFEST_HEADER: &str = "Cncop-Profile";
/// A far expiry for documents that are not about expiry.
pub const FAR: u64 = 4_102_444_800; // 2100-01-01

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// Seconds since the epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `2026-11-28T07:00:00Z`
pub fn utc(t: u64) -> String {
    cncopgetprofile::internals::clock::rfc3339(t)
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref());
    out
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An Ed25519 key pair.
pub struct Key {
    pair: Ed25519KeyPair,
    pkcs8: Vec<u8>,
    /// Lowercase hex SHA-256 of the public key.
    pub id: String,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", &self.id[..16])
    }
}

impl Key {
    pub fn generate() -> Arc<Key> {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
            .expect("ring makes an Ed25519 key");
        Arc::new(Key::from_pkcs8(pkcs8.as_ref()).expect("a key ring just made"))
    }

    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<Key, String> {
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8)
            .map_err(|e| format!("not an Ed25519 PKCS#8 key: {e}"))?;
        let id = hex(&sha256(pair.public_key().as_ref()));
        Ok(Key {
            pair,
            pkcs8: pkcs8.to_vec(),
            id,
        })
    }

    /// The private key as one line of base64 PKCS#8 (the signing tool's key file).
    pub fn to_base64(&self) -> String {
        b64().encode(&self.pkcs8)
    }

    pub fn from_base64(text: &str) -> Result<Key, String> {
        let der = b64()
            .decode(text.trim())
            .map_err(|e| format!("not base64: {e}"))?;
        Key::from_pkcs8(&der)
    }

    pub fn public_base64(&self) -> String {
        b64().encode(self.pair.public_key().as_ref())
    }

    /// A `Cncop-Signature` value over `cncop-v3-<role>\n` + `body`.
    pub fn sign(&self, role: &str, body: &[u8]) -> String {
        let mut message = format!("cncop-v3-{role}\n").into_bytes();
        message.extend_from_slice(body);
        format!(
            "ed25519 {} {}",
            self.id,
            b64().encode(self.pair.sign(&message).as_ref())
        )
    }
}

/// A document and its signature header values.
#[derive(Clone, Debug, Default)]
pub struct Signed {
    pub body: Vec<u8>,
    pub signatures: Vec<String>,
}

impl Signed {
    /// `body` signed for `role` by each of `keys`.
    pub fn new(role: &str, body: impl Into<Vec<u8>>, keys: &[&Key]) -> Signed {
        let body = body.into();
        let signatures = keys.iter().map(|k| k.sign(role, &body)).collect();
        Signed { body, signatures }
    }

    /// The `.sig` file shipped beside a root: one header line per signature.
    pub fn sig_file(&self) -> String {
        self.signatures
            .iter()
            .map(|s| format!("{SIGNATURE_HEADER}: {s}\n"))
            .collect()
    }
}

/// The keys and threshold of one role.
#[derive(Clone, Debug)]
pub struct RoleKeys {
    pub keys: Vec<Arc<Key>>,
    pub threshold: usize,
}

impl RoleKeys {
    pub fn one(key: &Arc<Key>) -> RoleKeys {
        RoleKeys {
            keys: vec![key.clone()],
            threshold: 1,
        }
    }

    fn refs(&self) -> Vec<&Key> {
        self.keys.iter().map(|k| &**k).collect()
    }
}

/// The four roles of a root.
#[derive(Clone, Debug)]
pub struct Roles {
    pub root: RoleKeys,
    pub timestamp: RoleKeys,
    pub release: RoleKeys,
    pub profile: RoleKeys,
}

/// The text of a root document.
pub fn root_xml(version: u64, expires: u64, roles: &Roles) -> String {
    let named = [
        ("root", &roles.root),
        ("timestamp", &roles.timestamp),
        ("release", &roles.release),
        ("profile", &roles.profile),
    ];
    let mut xml = format!(
        "<root version=\"{version}\" expires=\"{}\">\n",
        utc(expires)
    );
    let mut declared: Vec<&str> = Vec::new();
    for (_, role) in named {
        for k in &role.keys {
            if !declared.contains(&k.id.as_str()) {
                declared.push(&k.id);
                xml += &format!(
                    "  <key id=\"{}\" ed25519=\"{}\"/>\n",
                    k.id,
                    k.public_base64()
                );
            }
        }
    }
    for (name, role) in named {
        xml += &format!("  <role name=\"{name}\" threshold=\"{}\">", role.threshold);
        for k in &role.keys {
            xml += &format!("<key id=\"{}\"/>", k.id);
        }
        xml += "</role>\n";
    }
    xml + "</root>\n"
}

/// One `<software>` entry of a release.
#[derive(Clone, Debug)]
pub struct Build {
    pub platform: String,
    pub version: String,
    pub url: String,
    pub sha256: String,
    pub size: u64,
}

impl Build {
    /// A build of `version` for `platform`, with a made-up package digest.
    pub fn new(platform: &str, version: &str) -> Build {
        Build {
            platform: platform.to_string(),
            version: version.to_string(),
            url: format!("https://127.0.0.1/cncopgetprofile-{version}-{platform}.tar"),
            sha256: hex(&sha256(format!("{platform} {version}").as_bytes())),
            size: 1_948_368,
        }
    }

    /// The datagram PROTOCOL 4 prescribes for this build.
    pub fn datagram(&self) -> String {
        format!(
            "CCS3UPDATE version={} platform={} sha256={} size={} url={}\n",
            self.version, self.platform, self.sha256, self.size, self.url
        )
    }
}

pub fn release_xml(version: u64, expires: u64, builds: &[Build]) -> String {
    let mut xml = format!(
        "<release version=\"{version}\" expires=\"{}\">\n",
        utc(expires)
    );
    for b in builds {
        xml += &format!(
            "  <software platform=\"{}\" version=\"{}\" url=\"{}\" sha256=\"{}\" size=\"{}\"/>\n",
            b.platform, b.version, b.url, b.sha256, b.size
        );
    }
    xml + "</release>\n"
}

pub fn timestamp_xml(version: u64, expires: u64, release_version: u64, release: &[u8]) -> String {
    format!(
        "<timestamp version=\"{version}\" expires=\"{}\">\n  <release version=\"{release_version}\" sha256=\"{}\" size=\"{}\"/>\n</timestamp>\n",
        utc(expires),
        hex(&sha256(release)),
        release.len()
    )
}

/// The vendor's keys and root chain. Version 1 has one key per role; each
/// [`Authority::rotate`] makes the next root, signed by the old and the new
/// root keys.
pub struct Authority {
    pub roles: Roles,
    /// Root documents, version 1 first.
    pub roots: Vec<Signed>,
    pub root_expires: u64,
    /// Versions of the last published timestamp and release.
    pub timestamp_version: u64,
    pub release_version: u64,
}

impl Authority {
    pub fn new() -> Authority {
        let root = Key::generate();
        let roles = Roles {
            root: RoleKeys::one(&root),
            timestamp: RoleKeys::one(&Key::generate()),
            release: RoleKeys::one(&Key::generate()),
            profile: RoleKeys::one(&Key::generate()),
        };
        let xml = root_xml(1, FAR, &roles);
        let first = Signed::new("root", xml, &roles.root.refs());
        Authority {
            roles,
            roots: vec![first],
            root_expires: FAR,
            timestamp_version: 0,
            release_version: 0,
        }
    }

    pub fn root_version(&self) -> u64 {
        self.roots.len() as u64
    }

    /// The next root with `roles`, signed by the current root keys and by
    /// its own; it becomes the current one.
    pub fn rotate(&mut self, roles: Roles) -> Signed {
        let version = self.root_version() + 1;
        let xml = root_xml(version, self.root_expires, &roles);
        let mut signers = self.roles.root.refs();
        for k in roles.root.refs() {
            if !signers.iter().any(|s| s.id == k.id) {
                signers.push(k);
            }
        }
        let doc = Signed::new("root", xml, &signers);
        self.roots.push(doc.clone());
        self.roles = roles;
        doc
    }

    /// The root of `version` (from 1).
    pub fn root(&self, version: u64) -> &Signed {
        &self.roots[(version - 1) as usize]
    }

    /// Writes root version 1 as the device's shipped root:
    /// `<dir>/cncop-root.xml` and `<dir>/cncop-root.xml.sig`.
    pub fn ship(&self, config_dir: &Path) -> std::io::Result<PathBuf> {
        write_root(config_dir, self.root(1))
    }

    /// A release of `builds`, signed by the release keys, and the timestamp
    /// naming it, both with the next versions, expiring at `expires`.
    pub fn release(&mut self, builds: &[Build], expires: u64) -> (Signed, Signed) {
        self.release_version += 1;
        self.timestamp_version += 1;
        let release = Signed::new(
            "release",
            release_xml(self.release_version, expires, builds),
            &self.roles.release.refs(),
        );
        let ts = self.timestamp_for(&release, self.release_version, expires);
        (release, ts)
    }

    /// A new timestamp (next version) naming `release`.
    pub fn timestamp_for(
        &mut self,
        release: &Signed,
        release_version: u64,
        expires: u64,
    ) -> Signed {
        Signed::new(
            "timestamp",
            timestamp_xml(
                self.timestamp_version,
                expires,
                release_version,
                &release.body,
            ),
            &self.roles.timestamp.refs(),
        )
    }

    /// Publishes a release of `builds` (and its timestamp) on `net`.
    pub fn publish_release(&mut self, net: &TestNetwork, builds: &[Build], expires: u64) {
        let (release, ts) = self.release(builds, expires);
        net.publish(
            &format!("software/release/{}.xml", self.release_version),
            release,
        );
        net.publish("software/timestamp.xml", ts);
    }

    /// Publishes every root after version 1 on `net`.
    pub fn publish_roots(&self, net: &TestNetwork) {
        for (i, doc) in self.roots.iter().enumerate().skip(1) {
            net.publish(&format!("trust/root/{}.xml", i + 1), doc.clone());
        }
    }

    /// The current profile key.
    pub fn profile_key(&self) -> Arc<Key> {
        self.roles.profile.keys[0].clone()
    }
}

impl Default for Authority {
    fn default() -> Self {
        Authority::new()
    }
}

/// Writes a root document and its `.sig` file into `dir`.
pub fn write_root(dir: &Path, doc: &Signed) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("cncop-root.xml");
    std::fs::write(&path, &doc.body)?;
    std::fs::write(dir.join("cncop-root.xml.sig"), doc.sig_file())?;
    Ok(path)
}

/// The `Cncop-Profile` value for a profile body.
pub fn manifest(device: &str, version: u64, body: &[u8], expires: u64) -> String {
    format!(
        "device={device} version={version} size={} sha256={} expires={}",
        body.len(),
        hex(&sha256(body)),
        utc(expires)
    )
}

/// How the network's profile manifests lie (all `None`/false: honest).
#[derive(Clone, Debug, Default)]
pub struct ManifestLie {
    /// No `Cncop-Profile` header at all.
    pub missing: bool,
    /// The header without any signature.
    pub unsigned: bool,
    /// Signed by this key instead of the profile key.
    pub signed_by: Option<Arc<Key>>,
    /// A signature over other bytes than the header value.
    pub bad_signature: bool,
    pub device: Option<String>,
    pub version: Option<u64>,
    pub size: Option<u64>,
    pub sha256: Option<[u8; 32]>,
    pub expires: Option<u64>,
}

/// What the network needs to sign profile manifests.
pub(super) struct ProfileSigning {
    key: Arc<Key>,
    lie: ManifestLie,
    /// Manifests expire this long after the answer.
    lifetime: u64,
}

/// The signed documents the network serves, by path below `v3/`.
#[derive(Default)]
pub(super) struct Published {
    documents: Vec<(String, Signed)>,
    signing: Option<ProfileSigning>,
}

impl TestNetwork {
    /// Serves `doc` at `{url}/v3/<path>` (e.g. `software/timestamp.xml`),
    /// with one `Cncop-Signature` header per signature; replaces an earlier one.
    pub fn publish(&self, path: &str, doc: Signed) {
        let mut st = self.shared.state();
        let docs = &mut st.published.documents;
        docs.retain(|(p, _)| p != path);
        docs.push((path.to_string(), doc));
    }

    /// Stops serving `path` (404).
    pub fn unpublish(&self, path: &str) {
        self.shared
            .state()
            .published
            .documents
            .retain(|(p, _)| p != path);
    }

    /// Signs every profile answer's manifest with `key` (versions count
    /// each `set_profile` of the device), expiring a day after the answer.
    pub fn sign_profiles(&self, key: Arc<Key>) {
        self.shared.state().published.signing = Some(ProfileSigning {
            key,
            lie: ManifestLie::default(),
            lifetime: 86_400,
        });
    }

    /// Makes the manifests lie (or tell the truth again with the default).
    pub fn set_manifest_lie(&self, lie: ManifestLie) {
        if let Some(s) = self.shared.state().published.signing.as_mut() {
            s.lie = lie;
        }
    }
}

/// The answer to `GET {url}/v3/<path>` for a published document, if any.
pub(super) fn document(st: &State, path: &str) -> Option<Response> {
    let (_, doc) = st.published.documents.iter().find(|(p, _)| p == path)?;
    let mut r = Response::new(200);
    r.header("Content-Type", "application/xml");
    for s in &doc.signatures {
        r.header(SIGNATURE_HEADER, s);
    }
    r.body = super::http::Body::Bytes(doc.body.clone());
    Some(r)
}

/// Adds the manifest headers of `device`'s profile `body` to a 200 or 304
/// answer, when the network signs profiles.
pub(super) fn sign_profile_answer(st: &State, r: &mut Response, device: &str, body: &ProfileBody) {
    let Some(s) = &st.published.signing else {
        return;
    };
    let lie = &s.lie;
    if lie.missing {
        return;
    }
    let expires = lie.expires.unwrap_or_else(|| unix_now() + s.lifetime);
    let value = format!(
        "device={} version={} size={} sha256={} expires={}",
        lie.device.as_deref().unwrap_or(device),
        lie.version.unwrap_or(body.version),
        lie.size.unwrap_or(body.bytes.len() as u64),
        hex(&lie.sha256.unwrap_or(body.sha256)),
        utc(expires)
    );
    r.header(MANIFEST_HEADER, &value);
    if lie.unsigned {
        return;
    }
    let key = lie.signed_by.as_ref().unwrap_or(&s.key);
    let signed = if lie.bad_signature {
        format!("{value} ")
    } else {
        value.clone()
    };
    r.header(SIGNATURE_HEADER, &key.sign("profile", signed.as_bytes()));
}
