//! A real cncop network on loopback, for tests and the `localnet` example.
//!
//! It speaks the server side of `shared/PROTOCOL.md` (device protocol v3):
//! HTTPS (HTTP/1.1 over rustls, ring provider) or, on request, plain HTTP,
//! on `127.0.0.1` only, one thread per connection, keep-alive. Its PKI (a CA,
//! the server leaf and the bad certificates TLS-negative tests need) is made
//! at run time with rcgen.
//!
//! This file is included twice: by `tests/common/mod.rs` (integration tests)
//! and by `tests/localnet/main.rs` (the example). It depends on std, rustls and
//! rcgen only, and never panics on I/O errors of a connection: those are
//! logged to stderr at most.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig, ServerConnection, SupportedProtocolVersion};

/// The device id the demo and most tests use.
pub const DEFAULT_DEVICE: &str = "NAS-00042";
/// Base path of the network's URL (`https://127.0.0.1:PORT/cncop`).
pub const DEFAULT_BASE_PATH: &str = "/cncop";

/// How often blocked socket calls wake up to look at the stop flag.
const POLL: Duration = Duration::from_millis(100);
/// Largest request head (request line + headers) accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest request body accepted (firewall reports are small).
const MAX_REQUEST_BODY: usize = 64 * 1024 * 1024;
/// A partial request must complete within this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A write that makes no progress for this long drops the connection.
const WRITE_STALL_LIMIT: Duration = Duration::from_secs(60);
/// The TLS handshake must complete within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// Size of the plaintext pieces a body is sent in.
const CHUNK: usize = 64 * 1024;

// ---------------------------------------------------------------------------
// PKI
// ---------------------------------------------------------------------------

/// A certificate and its private key (PKCS#8), DER and PEM.
#[derive(Clone, Debug)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: Vec<u8>,
    pub key_der: Vec<u8>,
}

impl Leaf {
    /// Writes `<stem>.pem` (certificate) and `<stem>.key` (key) into `dir`,
    /// returning both paths.
    pub fn write(&self, dir: &Path, stem: &str) -> io::Result<(PathBuf, PathBuf)> {
        std::fs::create_dir_all(dir)?;
        let cert = dir.join(format!("{stem}.pem"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, &self.cert_pem)?;
        std::fs::write(&key, &self.key_pem)?;
        Ok((cert, key))
    }
}

/// A throwaway certificate authority: the network's own CA (the one the
/// agent pins with `ca_file`) and the server leaf it signed for `localhost`
/// and `127.0.0.1`, plus makers of the certificates TLS-negative tests need.
pub struct Pki {
    ca_pem: String,
    ca_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
    server: Leaf,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki").finish_non_exhaustive()
    }
}

fn pki_err(e: rcgen::Error) -> io::Error {
    io::Error::other(format!("rcgen: {e}"))
}

fn new_ca(cn: &str) -> Result<(Vec<u8>, String, Issuer<'static, KeyPair>), rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "cncop localnet");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok((cert.der().to_vec(), cert.pem(), Issuer::new(params, key)))
}

/// What kind of leaf to make.
#[derive(Clone, Copy)]
enum LeafKind {
    Server,
    Client,
}

fn leaf_params(
    names: &[&str],
    cn: &str,
    kind: LeafKind,
) -> Result<CertificateParams, rcgen::Error> {
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.is_ca = IsCa::ExplicitNoCa;
    params.use_authority_key_identifier_extension = true;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![match kind {
        LeafKind::Server => ExtendedKeyUsagePurpose::ServerAuth,
        LeafKind::Client => ExtendedKeyUsagePurpose::ClientAuth,
    }];
    Ok(params)
}

fn sign_leaf(
    params: &CertificateParams,
    issuer: Option<&Issuer<'_, KeyPair>>,
) -> Result<Leaf, rcgen::Error> {
    let key = KeyPair::generate()?;
    let cert = match issuer {
        Some(issuer) => params.signed_by(&key, issuer)?,
        None => params.self_signed(&key)?,
    };
    Ok(Leaf {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        cert_der: cert.der().to_vec(),
        key_der: key.serialize_der(),
    })
}

/// Names the good server leaf is valid for.
const SERVER_NAMES: &[&str] = &["localhost", "127.0.0.1"];

impl Pki {
    /// Makes a new CA and a server leaf signed by it for `localhost` and
    /// `127.0.0.1`.
    pub fn generate() -> io::Result<Pki> {
        let (ca_der, ca_pem, issuer) = new_ca("cncop localnet test CA").map_err(pki_err)?;
        let params = leaf_params(SERVER_NAMES, "localhost", LeafKind::Server).map_err(pki_err)?;
        let server = sign_leaf(&params, Some(&issuer)).map_err(pki_err)?;
        Ok(Pki {
            ca_pem,
            ca_der,
            issuer,
            server,
        })
    }

    /// The CA certificate, PEM.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The CA certificate, DER.
    pub fn ca_der(&self) -> &[u8] {
        &self.ca_der
    }

    /// Writes the CA certificate as `dir/ca.pem` and returns that path.
    pub fn write_ca(&self, dir: &Path) -> io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("ca.pem");
        std::fs::write(&path, &self.ca_pem)?;
        Ok(path)
    }

    /// The good server leaf (signed by the CA, for `localhost` and `127.0.0.1`).
    pub fn server_leaf(&self) -> &Leaf {
        &self.server
    }

    /// A server leaf for the right names, signed by another, freshly made CA.
    pub fn leaf_other_ca(&self) -> io::Result<Leaf> {
        let (_, _, other) = new_ca("some other CA").map_err(pki_err)?;
        let params = leaf_params(SERVER_NAMES, "localhost", LeafKind::Server).map_err(pki_err)?;
        sign_leaf(&params, Some(&other)).map_err(pki_err)
    }

    /// A server leaf signed by the CA for the right names, valid only in
    /// 2000 (long expired).
    pub fn leaf_expired(&self) -> io::Result<Leaf> {
        let mut params =
            leaf_params(SERVER_NAMES, "localhost", LeafKind::Server).map_err(pki_err)?;
        params.not_before = rcgen::date_time_ymd(2000, 1, 1);
        params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        sign_leaf(&params, Some(&self.issuer)).map_err(pki_err)
    }

    /// A server leaf signed by the CA, but for `wrong.cncop.invalid` only
    /// (neither `localhost` nor `127.0.0.1`).
    pub fn leaf_wrong_host(&self) -> io::Result<Leaf> {
        let params = leaf_params(
            &["wrong.cncop.invalid"],
            "wrong.cncop.invalid",
            LeafKind::Server,
        )
        .map_err(pki_err)?;
        sign_leaf(&params, Some(&self.issuer)).map_err(pki_err)
    }

    /// A self-signed server leaf for the right names.
    pub fn leaf_self_signed(&self) -> io::Result<Leaf> {
        let params = leaf_params(SERVER_NAMES, "localhost", LeafKind::Server).map_err(pki_err)?;
        sign_leaf(&params, None).map_err(pki_err)
    }

    /// A TLS client certificate (ClientAuth) for `cn`, signed by the CA.
    pub fn client_leaf(&self, cn: &str) -> io::Result<Leaf> {
        let params = leaf_params(&[], cn, LeafKind::Client).map_err(pki_err)?;
        sign_leaf(&params, Some(&self.issuer)).map_err(pki_err)
    }

    /// A TLS client certificate for `cn` signed by another CA.
    pub fn client_leaf_other_ca(&self, cn: &str) -> io::Result<Leaf> {
        let (_, _, other) = new_ca("some other client CA").map_err(pki_err)?;
        let params = leaf_params(&[], cn, LeafKind::Client).map_err(pki_err)?;
        sign_leaf(&params, Some(&other)).map_err(pki_err)
    }
}

// ---------------------------------------------------------------------------
// Options, faults, records
// ---------------------------------------------------------------------------

/// Which certificate the server presents.
#[derive(Clone, Debug, Default)]
pub enum ServerCert {
    /// The good leaf signed by the network's CA.
    #[default]
    Valid,
    /// Right names, signed by another CA.
    OtherCa,
    /// Signed by the CA, expired.
    Expired,
    /// Signed by the CA, for another host name.
    WrongHost,
    /// Self-signed, right names.
    SelfSigned,
    /// Any leaf (presented alone, without chain).
    Custom(Leaf),
}

/// Which TLS versions the server accepts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlsVersions {
    #[default]
    Both,
    Tls12Only,
    Tls13Only,
}

/// How to start a [`TestNetwork`].
#[derive(Clone, Debug)]
pub struct NetOptions {
    /// Serve plain HTTP instead of HTTPS (for `allow_insecure_http` tests).
    pub plain_http: bool,
    /// Require a TLS client certificate signed by the network's CA.
    pub require_client_cert: bool,
    /// The certificate to present.
    pub server_cert: ServerCert,
    pub tls_versions: TlsVersions,
    /// Reuse this PKI (e.g. to restart a network with the same CA); else a
    /// new one is made.
    pub pki: Option<Arc<Pki>>,
    /// Port on 127.0.0.1; 0 for an ephemeral one.
    pub port: u16,
    /// Base path of the URL.
    pub base_path: String,
    /// Answer `Accept-Encoding: gzip` with a gzip body (stored deflate
    /// blocks, so no compression crate is needed). Changeable later with
    /// [`TestNetwork::set_gzip`].
    pub gzip: bool,
    /// Allow more than one request per connection.
    pub keep_alive: bool,
    /// Close a keep-alive connection idle for this long.
    pub keep_alive_idle: Duration,
    /// Print one line per request to stderr.
    pub verbose: bool,
}

impl Default for NetOptions {
    fn default() -> Self {
        NetOptions {
            plain_http: false,
            require_client_cert: false,
            server_cert: ServerCert::Valid,
            tls_versions: TlsVersions::Both,
            pki: None,
            port: 0,
            base_path: DEFAULT_BASE_PATH.to_string(),
            gzip: true,
            keep_alive: true,
            keep_alive_idle: Duration::from_secs(30),
            verbose: false,
        }
    }
}

/// A scripted misbehaviour, consumed by the next request whose path (without
/// query) ends with the suffix it was pushed with.
///
/// `Status`, `Redirect`, `RawBody`, `RawBytes` and `CloseNoResponse` replace
/// the route's answer (no auth check). `Delay` waits, then the route answers.
/// The body faults (`CloseMidBody`, `Stall`, `Drip`, `ContentLengthTooLong`)
/// change how the route's own answer is sent; their byte counts are counted
/// in body bytes as sent on the wire (after gzip, if any).
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer `code` with `body` (text/plain) and, if set, `Retry-After`.
    Status {
        code: u16,
        retry_after: Option<String>,
        body: Vec<u8>,
    },
    /// Send the headers with the full `Content-Length`, then `after_bytes`
    /// of the body, then close the connection (TLS close_notify, then FIN).
    CloseMidBody { after_bytes: u64 },
    /// Send `after_bytes` of the body, then nothing for `for_` (socket kept
    /// open), then the rest.
    Stall { after_bytes: u64, for_: Duration },
    /// Send the body `bytes_per_tick` at a time, one piece every `tick`.
    Drip {
        bytes_per_tick: usize,
        tick: Duration,
    },
    /// Announce `extra` more bytes than the body has, send the body, close.
    ContentLengthTooLong { extra: u64 },
    /// Answer `code` (301/302/303/307/308) with `Location: location`.
    Redirect { location: String, code: u16 },
    /// Answer `status` with exactly these headers and body; a
    /// `Content-Length` is added unless `headers` has one.
    RawBody {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Write these bytes as the whole answer, then close when `close`.
    RawBytes { bytes: Vec<u8>, close: bool },
    /// Close the connection without answering.
    CloseNoResponse,
    /// Wait `for_` before answering normally.
    Delay { for_: Duration },
}

impl Fault {
    fn name(&self) -> &'static str {
        match self {
            Fault::Status { .. } => "Status",
            Fault::CloseMidBody { .. } => "CloseMidBody",
            Fault::Stall { .. } => "Stall",
            Fault::Drip { .. } => "Drip",
            Fault::ContentLengthTooLong { .. } => "ContentLengthTooLong",
            Fault::Redirect { .. } => "Redirect",
            Fault::RawBody { .. } => "RawBody",
            Fault::RawBytes { .. } => "RawBytes",
            Fault::CloseNoResponse => "CloseNoResponse",
            Fault::Delay { .. } => "Delay",
        }
    }
}

/// One request as the network saw it.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Connection number, from 1, in accept order.
    pub conn: u64,
    /// Request number on that connection, from 1.
    pub seq_on_conn: u64,
    pub method: String,
    /// Path without the query, as sent (not percent-decoded).
    pub path: String,
    /// The query without `?`, if any.
    pub query: Option<String>,
    /// Header names lower-cased, values as sent (trimmed), in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Status answered (0 when a fault answered with no status line).
    pub status: u16,
    /// Name of the fault that applied, if any.
    pub fault: Option<&'static str>,
    /// Over TLS.
    pub tls: bool,
    /// A TLS client certificate was presented on this connection.
    pub client_cert: bool,
}

impl Recorded {
    /// First value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// All values of header `name` (any case).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The value of query parameter `key` (not percent-decoded).
    pub fn query_param(&self, key: &str) -> Option<&str> {
        self.query.as_deref()?.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == key).then_some(v)
        })
    }

    /// Is this a profile request (`.../profile`)?
    pub fn is_profile(&self) -> bool {
        self.path.ends_with("/profile")
    }
}

// ---------------------------------------------------------------------------
// Shared state
// ---------------------------------------------------------------------------

struct ProfileBody {
    bytes: Vec<u8>,
    crc: OnceLock<u32>,
}

impl ProfileBody {
    fn crc(&self) -> u32 {
        *self.crc.get_or_init(|| crc32(&self.bytes))
    }
}

struct Device {
    key: String,
    disabled: bool,
    profile: Option<(Arc<ProfileBody>, Option<String>)>,
}

struct State {
    devices: Vec<(String, Device)>,
    software: Option<Vec<u8>>,
    software_status: Option<u16>,
    firewall_status: u16,
    firewall_reports: Vec<Vec<u8>>,
    faults: VecDeque<(String, Fault)>,
    requests: Vec<Recorded>,
    tls_errors: Vec<String>,
    gzip: bool,
    keep_alive: bool,
}

impl State {
    fn device(&self, id: &str) -> Option<&Device> {
        self.devices.iter().find(|(k, _)| k == id).map(|(_, d)| d)
    }
    fn device_mut(&mut self, id: &str) -> Option<&mut Device> {
        self.devices
            .iter_mut()
            .find(|(k, _)| k == id)
            .map(|(_, d)| d)
    }
}

struct Shared {
    stop: AtomicBool,
    connections: AtomicU64,
    state: Mutex<State>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    base_path: String,
    keep_alive_idle: Duration,
    verbose: bool,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
    /// Sleeps `d`, waking early when the network stops; false if it did.
    fn nap(&self, d: Duration) -> bool {
        let end = Instant::now() + d;
        loop {
            if self.stopping() {
                return false;
            }
            let now = Instant::now();
            if now >= end {
                return true;
            }
            std::thread::sleep((end - now).min(Duration::from_millis(20)));
        }
    }
}

// ---------------------------------------------------------------------------
// The network
// ---------------------------------------------------------------------------

/// A running local cncop network. Stops (and joins its threads) on drop.
pub struct TestNetwork {
    shared: Arc<Shared>,
    addr: SocketAddr,
    pki: Arc<Pki>,
    plain: bool,
    acceptor: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for TestNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNetwork")
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

impl TestNetwork {
    /// Starts a network; panics (with the reason) if it cannot.
    pub fn start(opts: NetOptions) -> TestNetwork {
        match TestNetwork::try_start(opts) {
            Ok(net) => net,
            Err(e) => panic!("cannot start the local cncop network: {e}"),
        }
    }

    /// Starts a network on `127.0.0.1:opts.port`.
    pub fn try_start(opts: NetOptions) -> io::Result<TestNetwork> {
        let pki = match &opts.pki {
            Some(p) => p.clone(),
            None => Arc::new(Pki::generate()?),
        };
        let tls = if opts.plain_http {
            None
        } else {
            Some(server_config(&pki, &opts)?)
        };
        let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, opts.port))?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            connections: AtomicU64::new(0),
            state: Mutex::new(State {
                devices: Vec::new(),
                software: None,
                software_status: None,
                firewall_status: 202,
                firewall_reports: Vec::new(),
                faults: VecDeque::new(),
                requests: Vec::new(),
                tls_errors: Vec::new(),
                gzip: opts.gzip,
                keep_alive: opts.keep_alive,
            }),
            workers: Mutex::new(Vec::new()),
            base_path: opts.base_path.trim_end_matches('/').to_string(),
            keep_alive_idle: opts.keep_alive_idle,
            verbose: opts.verbose,
        });
        let sh = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name(format!("localnet-accept-{}", addr.port()))
            .spawn(move || accept_loop(sh, listener, tls))?;
        Ok(TestNetwork {
            shared,
            addr,
            pki,
            plain: opts.plain_http,
            acceptor: Some(acceptor),
        })
    }

    /// `https://127.0.0.1:PORT/cncop` (`http://` when plain).
    pub fn url(&self) -> String {
        self.url_with_host("127.0.0.1")
    }

    /// The URL with another host part (e.g. `localhost`; never anything
    /// that needs DNS).
    pub fn url_with_host(&self, host: &str) -> String {
        let scheme = if self.plain { "http" } else { "https" };
        format!(
            "{scheme}://{host}:{}{}",
            self.addr.port(),
            self.shared.base_path
        )
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn is_plain(&self) -> bool {
        self.plain
    }

    pub fn pki(&self) -> &Arc<Pki> {
        &self.pki
    }

    /// Writes the network's CA as `dir/ca.pem`.
    pub fn write_ca(&self, dir: &Path) -> io::Result<PathBuf> {
        self.pki.write_ca(dir)
    }

    /// Registers (or re-keys and re-enables) a device.
    pub fn add_device(&self, id: &str, key: &str) {
        let mut st = self.shared.state();
        match st.device_mut(id) {
            Some(d) => {
                d.key = key.to_string();
                d.disabled = false;
            }
            None => st.devices.push((
                id.to_string(),
                Device {
                    key: key.to_string(),
                    disabled: false,
                    profile: None,
                },
            )),
        }
    }

    /// Forgets a device (its requests then get 404).
    pub fn remove_device(&self, id: &str) {
        self.shared.state().devices.retain(|(k, _)| k != id);
    }

    /// Marks a device disabled (403) or enabled again.
    pub fn set_device_disabled(&self, id: &str, disabled: bool) {
        if let Some(d) = self.shared.state().device_mut(id) {
            d.disabled = disabled;
        }
    }

    /// Sets the profile served to device `id` (which must have been added)
    /// and its ETag, sent verbatim (so give it quoted: `"\"v1\""`; see
    /// [`etag_for`]). A device without a profile gets 404.
    pub fn set_profile(&self, id: &str, body: Vec<u8>, etag: Option<String>) {
        let mut st = self.shared.state();
        match st.device_mut(id) {
            Some(d) => {
                d.profile = Some((
                    Arc::new(ProfileBody {
                        bytes: body,
                        crc: OnceLock::new(),
                    }),
                    etag,
                ))
            }
            None => panic!("set_profile: device {id:?} was not added (add_device first)"),
        }
    }

    /// Removes the profile of device `id` (its profile requests then get 404).
    pub fn clear_profile(&self, id: &str) {
        if let Some(d) = self.shared.state().device_mut(id) {
            d.profile = None;
        }
    }

    /// The current ETag of device `id`'s profile.
    pub fn etag(&self, id: &str) -> Option<String> {
        let st = self.shared.state();
        st.device(id)
            .and_then(|d| d.profile.as_ref())
            .and_then(|(_, e)| e.clone())
    }

    /// `software/latest`: `None` -> 204 (the default), `Some(body)` -> 200.
    pub fn set_software(&self, body: Option<Vec<u8>>) {
        self.shared.state().software = body;
    }

    /// Makes `software/latest` answer this status (with an empty body)
    /// whatever `set_software` said; `None` restores the normal behaviour.
    pub fn set_software_status(&self, status: Option<u16>) {
        self.shared.state().software_status = status;
    }

    /// Status answered to firewall reports (default 202).
    pub fn set_firewall_status(&self, status: u16) {
        self.shared.state().firewall_status = status;
    }

    /// Bodies of all firewall reports received (whatever was answered).
    pub fn firewall_reports(&self) -> Vec<Vec<u8>> {
        self.shared.state().firewall_reports.clone()
    }

    /// Serve gzip to clients that accept it (or not).
    pub fn set_gzip(&self, on: bool) {
        self.shared.state().gzip = on;
    }

    /// Allow several requests per connection (or close after each).
    pub fn set_keep_alive(&self, on: bool) {
        self.shared.state().keep_alive = on;
    }

    /// Queues a one-shot fault for the next request whose path ends with
    /// `path_suffix` (`""` matches any). Faults are matched in FIFO order.
    pub fn push_fault(&self, path_suffix: &str, fault: Fault) {
        self.shared
            .state()
            .faults
            .push_back((path_suffix.to_string(), fault));
    }

    /// Faults not yet consumed.
    pub fn pending_faults(&self) -> usize {
        self.shared.state().faults.len()
    }

    pub fn clear_faults(&self) {
        self.shared.state().faults.clear();
    }

    /// Every request so far, in order of arrival.
    pub fn requests(&self) -> Vec<Recorded> {
        self.shared.state().requests.clone()
    }

    /// Requests whose path ends with `/profile`.
    pub fn profile_requests(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(Recorded::is_profile)
            .collect()
    }

    /// Statuses answered, in order.
    pub fn statuses(&self) -> Vec<u16> {
        self.shared
            .state()
            .requests
            .iter()
            .map(|r| r.status)
            .collect()
    }

    pub fn clear_requests(&self) {
        self.shared.state().requests.clear();
    }

    /// TCP connections accepted so far (including failed TLS handshakes).
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// TLS handshake failures seen, one message each (e.g. the alert a client
    /// sent when it refused the server's certificate).
    pub fn tls_errors(&self) -> Vec<String> {
        self.shared.state().tls_errors.clone()
    }

    /// Stops accepting, closes every connection and joins all threads.
    /// Idempotent; also done on drop.
    pub fn stop(&mut self) {
        let Some(acceptor) = self.acceptor.take() else {
            return;
        };
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept() with a connection of our own.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        let _ = acceptor.join();
        let workers = std::mem::take(
            &mut *self
                .shared
                .workers
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        for w in workers {
            let _ = w.join();
        }
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        self.stop();
    }
}

fn server_config(pki: &Pki, opts: &NetOptions) -> io::Result<Arc<ServerConfig>> {
    let tls_err = |e: rustls::Error| io::Error::other(format!("rustls: {e}"));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&'static SupportedProtocolVersion] = match opts.tls_versions {
        TlsVersions::Both => rustls::DEFAULT_VERSIONS,
        TlsVersions::Tls12Only => &[&rustls::version::TLS12],
        TlsVersions::Tls13Only => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(tls_err)?;
    let builder = if opts.require_client_cert {
        let mut roots = RootCertStore::empty();
        roots
            .add(CertificateDer::from(pki.ca_der.clone()))
            .map_err(tls_err)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .map_err(|e| io::Error::other(format!("client verifier: {e}")))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let leaf = match &opts.server_cert {
        ServerCert::Valid => pki.server.clone(),
        ServerCert::OtherCa => pki.leaf_other_ca()?,
        ServerCert::Expired => pki.leaf_expired()?,
        ServerCert::WrongHost => pki.leaf_wrong_host()?,
        ServerCert::SelfSigned => pki.leaf_self_signed()?,
        ServerCert::Custom(l) => l.clone(),
    };
    let chain = vec![CertificateDer::from(leaf.cert_der)];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_der));
    let mut cfg = builder.with_single_cert(chain, key).map_err(tls_err)?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

fn accept_loop(shared: Arc<Shared>, listener: TcpListener, tls: Option<Arc<ServerConfig>>) {
    for stream in listener.incoming() {
        if shared.stopping() {
            break;
        }
        let sock = match stream {
            Ok(s) => s,
            Err(e) => {
                eprintln!("[localnet] accept: {e}");
                if !shared.nap(Duration::from_millis(20)) {
                    break;
                }
                continue;
            }
        };
        let conn_no = shared.connections.fetch_add(1, Ordering::SeqCst) + 1;
        let sh = shared.clone();
        let tls = tls.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("localnet-conn-{conn_no}"))
            .spawn(move || serve_connection(sh, sock, conn_no, tls));
        match spawned {
            Ok(handle) => {
                let mut workers = shared.workers.lock().unwrap_or_else(|e| e.into_inner());
                let (done, running): (Vec<_>, Vec<_>) =
                    workers.drain(..).partition(|h| h.is_finished());
                *workers = running;
                workers.push(handle);
                drop(workers);
                for h in done {
                    let _ = h.join();
                }
            }
            Err(e) => eprintln!("[localnet] cannot spawn a connection thread: {e}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Connection I/O (plain or TLS) with stop-aware timeouts
// ---------------------------------------------------------------------------

enum Io {
    Plain(TcpStream),
    Tls {
        conn: Box<ServerConnection>,
        sock: TcpStream,
        eof: bool,
    },
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

fn is_benign(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::BrokenPipe
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::UnexpectedEof
            | ErrorKind::NotConnected
    )
}

fn stopped() -> io::Error {
    io::Error::new(ErrorKind::ConnectionAborted, "network stopping")
}

impl Io {
    fn sock(&self) -> &TcpStream {
        match self {
            Io::Plain(s) => s,
            Io::Tls { sock, .. } => sock,
        }
    }

    /// One read; a timeout tick comes back as `WouldBlock`/`TimedOut`.
    /// 0 means the peer closed.
    fn read_once(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match self {
            Io::Plain(s) => s.read(out),
            Io::Tls { conn, sock, eof } => loop {
                match conn.reader().read(out) {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) => return Err(e),
                }
                if *eof {
                    return Ok(0);
                }
                match conn.read_tls(sock) {
                    Ok(0) => *eof = true,
                    Ok(_) => {}
                    Err(e) => return Err(e),
                }
                if let Err(e) = conn.process_new_packets() {
                    let _ = write_tls_all(conn, sock, None);
                    return Err(io::Error::new(ErrorKind::InvalidData, e));
                }
                if conn.wants_write() {
                    write_tls_all(conn, sock, None)?;
                }
            },
        }
    }

    /// Writes everything, retrying timeouts until no progress for
    /// [`WRITE_STALL_LIMIT`] or the network stops.
    fn write_all(&mut self, mut data: &[u8], shared: &Shared) -> io::Result<()> {
        match self {
            Io::Plain(s) => {
                let mut last = Instant::now();
                while !data.is_empty() {
                    match s.write(data) {
                        Ok(0) => return Err(ErrorKind::WriteZero.into()),
                        Ok(n) => {
                            data = &data[n..];
                            last = Instant::now();
                        }
                        Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {
                            if shared.stopping() {
                                return Err(stopped());
                            }
                            if last.elapsed() > WRITE_STALL_LIMIT {
                                return Err(ErrorKind::TimedOut.into());
                            }
                        }
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
            Io::Tls { conn, sock, .. } => {
                while !data.is_empty() {
                    let n = conn.writer().write(data)?;
                    data = &data[n..];
                    write_tls_all(conn, sock, Some(shared))?;
                }
                Ok(())
            }
        }
    }

    fn flush(&mut self, shared: &Shared) -> io::Result<()> {
        match self {
            Io::Plain(s) => s.flush(),
            Io::Tls { conn, sock, .. } => write_tls_all(conn, sock, Some(shared)),
        }
    }

    /// Orderly close: TLS close_notify, then FIN both ways.
    fn close(&mut self, shared: &Shared) {
        if let Io::Tls { conn, sock, .. } = self {
            conn.send_close_notify();
            let _ = write_tls_all(conn, sock, Some(shared));
        }
        let _ = self.sock().shutdown(Shutdown::Both);
    }
}

fn write_tls_all(
    conn: &mut ServerConnection,
    sock: &mut TcpStream,
    shared: Option<&Shared>,
) -> io::Result<()> {
    let mut last = Instant::now();
    while conn.wants_write() {
        match conn.write_tls(sock) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(_) => last = Instant::now(),
            Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {
                if shared.is_some_and(Shared::stopping) {
                    return Err(stopped());
                }
                let limit = if shared.is_some() {
                    WRITE_STALL_LIMIT
                } else {
                    HANDSHAKE_TIMEOUT
                };
                if last.elapsed() > limit {
                    return Err(ErrorKind::TimedOut.into());
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn handshake(conn: &mut ServerConnection, sock: &mut TcpStream, shared: &Shared) -> io::Result<()> {
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    while conn.is_handshaking() {
        if conn.wants_write() {
            write_tls_all(conn, sock, Some(shared))?;
            continue;
        }
        match conn.read_tls(sock) {
            Ok(0) => {
                return Err(io::Error::new(
                    ErrorKind::UnexpectedEof,
                    "peer closed during the TLS handshake",
                ));
            }
            Ok(_) => {
                if let Err(e) = conn.process_new_packets() {
                    // Send our alert, if any, before giving up.
                    let _ = write_tls_all(conn, sock, Some(shared));
                    return Err(io::Error::new(ErrorKind::InvalidData, e));
                }
            }
            Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {
                if shared.stopping() {
                    return Err(stopped());
                }
                if Instant::now() > deadline {
                    return Err(io::Error::new(
                        ErrorKind::TimedOut,
                        "TLS handshake timed out",
                    ));
                }
            }
            Err(e) => return Err(e),
        }
    }
    write_tls_all(conn, sock, Some(shared))
}

// ---------------------------------------------------------------------------
// HTTP/1.1
// ---------------------------------------------------------------------------

struct Request {
    method: String,
    path: String,
    query: Option<String>,
    http10: bool,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn has_token(&self, header: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(k, _)| k == header)
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    fn wants_close(&self) -> bool {
        if self.has_token("connection", "close") {
            return true;
        }
        self.http10 && !self.has_token("connection", "keep-alive")
    }

    fn accepts_gzip(&self) -> bool {
        self.headers
            .iter()
            .filter(|(k, _)| k == "accept-encoding")
            .flat_map(|(_, v)| v.split(','))
            .any(|item| {
                let mut parts = item.split(';');
                let coding = parts.next().unwrap_or("").trim();
                if !coding.eq_ignore_ascii_case("gzip") {
                    return false;
                }
                for p in parts {
                    if let Some((k, v)) = p.split_once('=')
                        && k.trim().eq_ignore_ascii_case("q")
                    {
                        return v.trim().parse::<f32>().map(|q| q > 0.0).unwrap_or(false);
                    }
                }
                true
            })
    }
}

enum ReadOutcome {
    Request(Request),
    /// Peer closed, idle timeout or stop between requests.
    Closed,
    /// Malformed request: answer this status, then close.
    Bad(u16, &'static str),
}

struct Reader {
    buf: Vec<u8>,
}

impl Reader {
    /// Reads more bytes into the buffer. Ok(false) on EOF.
    fn fill(&mut self, io: &mut Io, shared: &Shared, deadline: Instant) -> io::Result<bool> {
        let mut tmp = [0u8; 16 * 1024];
        loop {
            if shared.stopping() {
                return Err(stopped());
            }
            match io.read_once(&mut tmp) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf.extend_from_slice(&tmp[..n]);
                    return Ok(true);
                }
                Err(e) if is_timeout(&e) || e.kind() == ErrorKind::Interrupted => {
                    if Instant::now() >= deadline {
                        return Err(io::Error::new(ErrorKind::TimedOut, "read timed out"));
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn read_request(&mut self, io: &mut Io, shared: &Shared) -> io::Result<ReadOutcome> {
        // Wait for the first byte of a request (keep-alive idle time).
        let idle_deadline = Instant::now() + shared.keep_alive_idle;
        while self.buf.is_empty() {
            match self.fill(io, shared, idle_deadline) {
                Ok(true) => {}
                Ok(false) => return Ok(ReadOutcome::Closed),
                Err(e) if e.kind() == ErrorKind::TimedOut => return Ok(ReadOutcome::Closed),
                Err(e) if e.kind() == ErrorKind::ConnectionAborted && shared.stopping() => {
                    return Ok(ReadOutcome::Closed);
                }
                Err(e) => return Err(e),
            }
        }
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let head_end = loop {
            if let Some(p) = find(&self.buf, b"\r\n\r\n") {
                break p;
            }
            if self.buf.len() > MAX_HEAD {
                return Ok(ReadOutcome::Bad(431, "request head too large"));
            }
            if !self.fill(io, shared, deadline)? {
                return Ok(ReadOutcome::Closed);
            }
        };
        let head: Vec<u8> = self.buf.drain(..head_end + 4).collect();
        let Ok(head) = std::str::from_utf8(&head[..head_end]) else {
            return Ok(ReadOutcome::Bad(400, "request head is not UTF-8"));
        };
        let mut lines = head.split("\r\n");
        let line = lines.next().unwrap_or("");
        let mut parts = line.split(' ');
        let (Some(method), Some(target), Some(version), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Ok(ReadOutcome::Bad(400, "bad request line"));
        };
        let http10 = match version {
            "HTTP/1.1" => false,
            "HTTP/1.0" => true,
            _ => return Ok(ReadOutcome::Bad(505, "HTTP/1.x only")),
        };
        let mut headers = Vec::new();
        for l in lines {
            let Some((k, v)) = l.split_once(':') else {
                return Ok(ReadOutcome::Bad(400, "bad header line"));
            };
            if k.is_empty() || k.contains([' ', '\t']) {
                return Ok(ReadOutcome::Bad(400, "bad header name"));
            }
            headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
        }
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (target.to_string(), None),
        };
        let mut req = Request {
            method: method.to_string(),
            path,
            query,
            http10,
            headers,
            body: Vec::new(),
        };
        if req
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
        {
            io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n", shared)?;
            io.flush(shared)?;
        }
        if req.has_token("transfer-encoding", "chunked") {
            match self.read_chunked(io, shared, deadline)? {
                Some(body) => req.body = body,
                None => return Ok(ReadOutcome::Bad(400, "bad chunked body")),
            }
        } else if let Some(cl) = req.header("content-length") {
            let Ok(len) = cl.parse::<usize>() else {
                return Ok(ReadOutcome::Bad(400, "bad Content-Length"));
            };
            if len > MAX_REQUEST_BODY {
                return Ok(ReadOutcome::Bad(413, "request body too large"));
            }
            while self.buf.len() < len {
                if !self.fill(io, shared, deadline)? {
                    return Ok(ReadOutcome::Closed);
                }
            }
            req.body = self.buf.drain(..len).collect();
        }
        Ok(ReadOutcome::Request(req))
    }

    fn read_line(
        &mut self,
        io: &mut Io,
        shared: &Shared,
        deadline: Instant,
    ) -> io::Result<Option<Vec<u8>>> {
        loop {
            if let Some(p) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..p + 2).take(p).collect();
                return Ok(Some(line));
            }
            if self.buf.len() > MAX_HEAD || !self.fill(io, shared, deadline)? {
                return Ok(None);
            }
        }
    }

    fn read_chunked(
        &mut self,
        io: &mut Io,
        shared: &Shared,
        deadline: Instant,
    ) -> io::Result<Option<Vec<u8>>> {
        let mut body = Vec::new();
        loop {
            let Some(line) = self.read_line(io, shared, deadline)? else {
                return Ok(None);
            };
            let line = String::from_utf8_lossy(&line);
            let size = line.split(';').next().unwrap_or("").trim();
            let Ok(size) = usize::from_str_radix(size, 16) else {
                return Ok(None);
            };
            if size == 0 {
                // Trailers, up to the empty line.
                loop {
                    match self.read_line(io, shared, deadline)? {
                        Some(l) if l.is_empty() => return Ok(Some(body)),
                        Some(_) => {}
                        None => return Ok(None),
                    }
                }
            }
            if body.len() + size > MAX_REQUEST_BODY {
                return Ok(None);
            }
            while self.buf.len() < size + 2 {
                if !self.fill(io, shared, deadline)? {
                    return Ok(None);
                }
            }
            body.extend(self.buf.drain(..size));
            if self.buf.drain(..2).as_slice() != b"\r\n" {
                return Ok(None);
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

enum Body {
    Empty,
    Bytes(Vec<u8>),
    Profile { data: Arc<ProfileBody>, gzip: bool },
}

impl Body {
    fn wire_len(&self) -> u64 {
        match self {
            Body::Empty => 0,
            Body::Bytes(b) => b.len() as u64,
            Body::Profile { data, gzip: false } => data.bytes.len() as u64,
            Body::Profile { data, gzip: true } => gzip_stored_len(data.bytes.len()),
        }
    }
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Body,
}

impl Response {
    fn new(status: u16) -> Response {
        Response {
            status,
            headers: Vec::new(),
            body: Body::Empty,
        }
    }
    fn text(status: u16, text: &str) -> Response {
        let mut r = Response::new(status);
        r.header("Content-Type", "text/plain; charset=utf-8");
        r.body = Body::Bytes(text.as_bytes().to_vec());
        r
    }
    fn header(&mut self, k: &str, v: &str) -> &mut Self {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }
    fn has_header(&self, k: &str) -> bool {
        self.headers.iter().any(|(h, _)| h.eq_ignore_ascii_case(k))
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Status",
    }
}

fn bodyless(status: u16) -> bool {
    status == 204 || status == 304 || (100..200).contains(&status)
}

fn serve_connection(
    shared: Arc<Shared>,
    sock: TcpStream,
    conn_no: u64,
    tls: Option<Arc<ServerConfig>>,
) {
    let _ = sock.set_nodelay(true);
    let _ = sock.set_read_timeout(Some(POLL));
    let _ = sock.set_write_timeout(Some(POLL));
    let mut io = match tls {
        None => Io::Plain(sock),
        Some(cfg) => {
            let mut conn = match ServerConnection::new(cfg) {
                Ok(c) => Box::new(c),
                Err(e) => {
                    eprintln!("[localnet] conn {conn_no}: {e}");
                    return;
                }
            };
            let mut sock = sock;
            if let Err(e) = handshake(&mut conn, &mut sock, &shared) {
                if !shared.stopping() {
                    let msg = format!("conn {conn_no}: TLS handshake failed: {e}");
                    if shared.verbose {
                        eprintln!("[localnet] {msg}");
                    }
                    shared.state().tls_errors.push(msg);
                }
                let _ = sock.shutdown(Shutdown::Both);
                return;
            }
            Io::Tls {
                conn,
                sock,
                eof: false,
            }
        }
    };
    let client_cert = match &io {
        Io::Tls { conn, .. } => conn.peer_certificates().is_some_and(|c| !c.is_empty()),
        Io::Plain(_) => false,
    };
    let mut reader = Reader { buf: Vec::new() };
    let mut seq = 0u64;
    loop {
        let outcome = match reader.read_request(&mut io, &shared) {
            Ok(o) => o,
            Err(e) => {
                if !is_benign(&e) && !shared.stopping() && e.kind() != ErrorKind::TimedOut {
                    eprintln!("[localnet] conn {conn_no}: reading a request: {e}");
                }
                break;
            }
        };
        let req = match outcome {
            ReadOutcome::Request(r) => r,
            ReadOutcome::Closed => break,
            ReadOutcome::Bad(status, why) => {
                let mut resp = Response::text(status, why);
                resp.header("Connection", "close");
                let _ = send_response(&mut io, &shared, &resp, None);
                break;
            }
        };
        seq += 1;
        let ctx = ConnCtx {
            conn_no,
            seq,
            tls: matches!(io, Io::Tls { .. }),
            client_cert,
        };
        match handle(&shared, &mut io, &ctx, req) {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                if !is_benign(&e) && !shared.stopping() {
                    eprintln!("[localnet] conn {conn_no}: answering: {e}");
                }
                let _ = io.sock().shutdown(Shutdown::Both);
                return;
            }
        }
    }
    io.close(&shared);
}

struct ConnCtx {
    conn_no: u64,
    seq: u64,
    tls: bool,
    client_cert: bool,
}

/// Body faults, applied while sending.
enum BodyFault {
    None,
    CloseAfter(u64),
    Stall(u64, Duration),
    Drip(usize, Duration),
    TooLong(u64),
}

/// Answers one request; Ok(false) when the connection must close.
fn handle(shared: &Shared, io: &mut Io, ctx: &ConnCtx, req: Request) -> io::Result<bool> {
    let fault = {
        let mut st = shared.state();
        let pos = st
            .faults
            .iter()
            .position(|(suffix, _)| req.path.ends_with(suffix.as_str()));
        pos.and_then(|p| st.faults.remove(p)).map(|(_, f)| f)
    };
    let fault_name = fault.as_ref().map(Fault::name);
    let keep_alive = shared.state().keep_alive;
    let mut close = req.wants_close() || !keep_alive;

    let mut body_fault = BodyFault::None;
    let mut resp = match fault {
        Some(Fault::Status {
            code,
            retry_after,
            body,
        }) => {
            let mut r = Response::new(code);
            if let Some(ra) = retry_after {
                r.header("Retry-After", &ra);
            }
            if code == 401 {
                r.header("WWW-Authenticate", "Basic realm=\"cncop\"");
            }
            if !bodyless(code) {
                r.header("Content-Type", "text/plain; charset=utf-8");
                r.body = Body::Bytes(body);
            }
            r
        }
        Some(Fault::Redirect { location, code }) => {
            let mut r = Response::new(code);
            r.header("Location", &location);
            r
        }
        Some(Fault::RawBody {
            status,
            headers,
            body,
        }) => Response {
            status,
            headers,
            body: Body::Bytes(body),
        },
        Some(Fault::RawBytes { bytes, close }) => {
            record(shared, ctx, &req, 0, fault_name);
            io.write_all(&bytes, shared)?;
            io.flush(shared)?;
            if close {
                io.close(shared);
            }
            return Ok(!close);
        }
        Some(Fault::CloseNoResponse) => {
            record(shared, ctx, &req, 0, fault_name);
            io.close(shared);
            return Ok(false);
        }
        other => {
            if let Some(Fault::Delay { for_ }) = &other
                && !shared.nap(*for_)
            {
                return Ok(false);
            }
            body_fault = match other {
                Some(Fault::CloseMidBody { after_bytes }) => BodyFault::CloseAfter(after_bytes),
                Some(Fault::Stall { after_bytes, for_ }) => BodyFault::Stall(after_bytes, for_),
                Some(Fault::Drip {
                    bytes_per_tick,
                    tick,
                }) => BodyFault::Drip(bytes_per_tick.max(1), tick),
                Some(Fault::ContentLengthTooLong { extra }) => BodyFault::TooLong(extra),
                _ => BodyFault::None,
            };
            route(shared, &req)
        }
    };
    if matches!(body_fault, BodyFault::CloseAfter(_) | BodyFault::TooLong(_)) {
        close = true;
    }
    if close && !resp.has_header("connection") {
        resp.header("Connection", "close");
    }
    record(shared, ctx, &req, resp.status, fault_name);
    if shared.verbose {
        eprintln!(
            "[localnet] conn {} #{}: {} {}{}{} -> {}{}",
            ctx.conn_no,
            ctx.seq,
            req.method,
            req.path,
            if req.query.is_some() { "?" } else { "" },
            req.query.as_deref().unwrap_or(""),
            resp.status,
            fault_name
                .map(|f| format!(" (fault {f})"))
                .unwrap_or_default()
        );
    }
    let head_only = req.method == "HEAD";
    let keep = send_response(io, shared, &resp, Some((&body_fault, head_only)))?;
    Ok(keep && !close)
}

fn record(shared: &Shared, ctx: &ConnCtx, req: &Request, status: u16, fault: Option<&'static str>) {
    let rec = Recorded {
        conn: ctx.conn_no,
        seq_on_conn: ctx.seq,
        method: req.method.clone(),
        path: req.path.clone(),
        query: req.query.clone(),
        headers: req.headers.clone(),
        body: req.body.clone(),
        status,
        fault,
        tls: ctx.tls,
        client_cert: ctx.client_cert,
    };
    let mut st = shared.state();
    if req.method == "POST" && req.path.ends_with("/firewall") {
        st.firewall_reports.push(req.body.clone());
    }
    st.requests.push(rec);
}

/// Sends a response; Ok(false) if a fault closed the connection.
fn send_response(
    io: &mut Io,
    shared: &Shared,
    resp: &Response,
    fault: Option<(&BodyFault, bool)>,
) -> io::Result<bool> {
    let (fault, head_only) = fault.unwrap_or((&BodyFault::None, false));
    let mut head = format!("HTTP/1.1 {} {}\r\n", resp.status, reason(resp.status));
    let has = |k: &str| resp.has_header(k);
    if !has("date") {
        head.push_str(&format!("Date: {}\r\n", http_date(SystemTime::now())));
    }
    if !has("server") {
        head.push_str("Server: cncop-localnet\r\n");
    }
    for (k, v) in &resp.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    let len = resp.body.wire_len();
    if !bodyless(resp.status) && !has("content-length") && !has("transfer-encoding") {
        let announced = match fault {
            BodyFault::TooLong(extra) => len + extra,
            _ => len,
        };
        head.push_str(&format!("Content-Length: {announced}\r\n"));
    }
    head.push_str("\r\n");
    io.write_all(head.as_bytes(), shared)?;
    if head_only || bodyless(resp.status) {
        io.flush(shared)?;
        return Ok(true);
    }
    let mut sender = Sender {
        io,
        shared,
        sent: 0,
        fault,
        stalled: false,
    };
    let flow = match &resp.body {
        Body::Empty => Flow::Go,
        Body::Bytes(b) => sender.send_pieces(b),
        Body::Profile { data, gzip: false } => sender.send_pieces(&data.bytes),
        Body::Profile { data, gzip: true } => send_gzip(&mut sender, data),
    };
    let flow = match flow {
        Flow::Err(e) => return Err(e),
        f => f,
    };
    io.flush(shared)?;
    if matches!(flow, Flow::Close)
        || matches!(fault, BodyFault::CloseAfter(_) | BodyFault::TooLong(_))
    {
        io.close(shared);
        return Ok(false);
    }
    Ok(true)
}

enum Flow {
    Go,
    Close,
    Err(io::Error),
}

struct Sender<'a> {
    io: &'a mut Io,
    shared: &'a Shared,
    sent: u64,
    fault: &'a BodyFault,
    stalled: bool,
}

impl Sender<'_> {
    fn send_pieces(&mut self, data: &[u8]) -> Flow {
        for piece in data.chunks(CHUNK) {
            match self.send(piece) {
                Flow::Go => {}
                other => return other,
            }
        }
        Flow::Go
    }

    fn send(&mut self, data: &[u8]) -> Flow {
        match self.send_inner(data) {
            Ok(f) => f,
            Err(e) => Flow::Err(e),
        }
    }

    fn send_inner(&mut self, data: &[u8]) -> io::Result<Flow> {
        if self.shared.stopping() {
            return Err(stopped());
        }
        match *self.fault {
            BodyFault::CloseAfter(after) => {
                let room = after.saturating_sub(self.sent);
                if (data.len() as u64) >= room {
                    let room = room as usize;
                    self.io.write_all(&data[..room], self.shared)?;
                    self.sent += room as u64;
                    return Ok(Flow::Close);
                }
            }
            BodyFault::Stall(after, dur) if !self.stalled => {
                let room = after.saturating_sub(self.sent);
                if (data.len() as u64) >= room {
                    let room = room as usize;
                    self.io.write_all(&data[..room], self.shared)?;
                    self.io.flush(self.shared)?;
                    self.sent += room as u64;
                    self.stalled = true;
                    if !self.shared.nap(dur) {
                        return Err(stopped());
                    }
                    return self.send_inner(&data[room..]);
                }
            }
            BodyFault::Drip(per, tick) => {
                for piece in data.chunks(per) {
                    self.io.write_all(piece, self.shared)?;
                    self.io.flush(self.shared)?;
                    self.sent += piece.len() as u64;
                    if !self.shared.nap(tick) {
                        return Err(stopped());
                    }
                }
                return Ok(Flow::Go);
            }
            _ => {}
        }
        self.io.write_all(data, self.shared)?;
        self.sent += data.len() as u64;
        Ok(Flow::Go)
    }
}

// ---------------------------------------------------------------------------
// Routes
// ---------------------------------------------------------------------------

fn route(shared: &Shared, req: &Request) -> Response {
    let Some(rest) = req
        .path
        .strip_prefix(shared.base_path.as_str())
        .and_then(|r| r.strip_prefix("/v3/"))
    else {
        return Response::text(404, "not found");
    };
    let segs: Vec<String> = rest.split('/').map(percent_decode).collect();
    let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
    match segs.as_slice() {
        ["devices", id, "profile"] => {
            if req.method != "GET" && req.method != "HEAD" {
                return method_not_allowed("GET, HEAD");
            }
            profile(shared, req, id)
        }
        ["devices", id, "firewall"] => {
            if req.method != "POST" {
                return method_not_allowed("POST");
            }
            if let Err(r) = authenticate(shared, req, id) {
                return r;
            }
            let status = shared.state().firewall_status;
            if bodyless(status) {
                Response::new(status)
            } else {
                Response::text(status, "")
            }
        }
        ["software", "latest"] => {
            if req.method != "GET" && req.method != "HEAD" {
                return method_not_allowed("GET, HEAD");
            }
            let st = shared.state();
            if let Some(status) = st.software_status {
                return if bodyless(status) {
                    Response::new(status)
                } else {
                    Response::text(status, "")
                };
            }
            match &st.software {
                None => Response::new(204),
                Some(body) => {
                    let mut r = Response::new(200);
                    r.header("Content-Type", "application/xml");
                    r.body = Body::Bytes(body.clone());
                    r
                }
            }
        }
        _ => Response::text(404, "not found"),
    }
}

fn method_not_allowed(allow: &str) -> Response {
    let mut r = Response::text(405, "method not allowed");
    r.header("Allow", allow);
    r
}

/// Unknown device -> 404; missing or wrong Basic credentials -> 401;
/// disabled -> 403.
fn authenticate(shared: &Shared, req: &Request, id: &str) -> Result<(), Response> {
    let st = shared.state();
    let Some(dev) = st.device(id) else {
        return Err(Response::text(404, "device not registered"));
    };
    let creds = req
        .header("authorization")
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("basic").then_some(rest.trim())
        })
        .and_then(base64_decode)
        .and_then(|b| String::from_utf8(b).ok());
    let ok = creds
        .as_deref()
        .and_then(|c| c.split_once(':'))
        .is_some_and(|(user, key)| user == id && key == dev.key);
    if !ok {
        let mut r = Response::text(401, "wrong device id or key");
        r.header("WWW-Authenticate", "Basic realm=\"cncop\"");
        return Err(r);
    }
    if dev.disabled {
        return Err(Response::text(403, "device disabled"));
    }
    Ok(())
}

fn profile(shared: &Shared, req: &Request, id: &str) -> Response {
    if let Err(r) = authenticate(shared, req, id) {
        return r;
    }
    let (data, etag, gzip_on) = {
        let st = shared.state();
        let Some((data, etag)) = st.device(id).and_then(|d| d.profile.clone()) else {
            return Response::text(404, "no profile for this device");
        };
        (data, etag, st.gzip)
    };
    if let Some(inm) = req.header("if-none-match") {
        let matches = inm.split(',').map(str::trim).any(|tag| {
            tag == "*"
                || etag
                    .as_deref()
                    .is_some_and(|e| tag.trim_start_matches("W/") == e.trim_start_matches("W/"))
        });
        if matches {
            let mut r = Response::new(304);
            if let Some(e) = &etag {
                r.header("ETag", e);
            }
            return r;
        }
    }
    let mut r = Response::new(200);
    r.header("Content-Type", "application/xml");
    if let Some(e) = &etag {
        r.header("ETag", e);
    }
    let gzip = gzip_on && req.accepts_gzip();
    if gzip_on {
        r.header("Vary", "Accept-Encoding");
    }
    if gzip {
        r.header("Content-Encoding", "gzip");
    }
    r.body = Body::Profile { data, gzip };
    r
}

// ---------------------------------------------------------------------------
// gzip with stored deflate blocks (no compression, valid gzip)
// ---------------------------------------------------------------------------

const STORED_MAX: usize = 65_535;

fn gzip_stored_len(n: usize) -> u64 {
    let blocks = n.div_ceil(STORED_MAX).max(1);
    (10 + blocks * 5 + n + 8) as u64
}

fn send_gzip(s: &mut Sender<'_>, data: &ProfileBody) -> Flow {
    let crc = data.crc();
    let header = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff];
    if let f @ (Flow::Close | Flow::Err(_)) = s.send(&header) {
        return f;
    }
    let bytes = &data.bytes;
    let n_blocks = bytes.len().div_ceil(STORED_MAX).max(1);
    for i in 0..n_blocks {
        let start = i * STORED_MAX;
        let block = &bytes[start.min(bytes.len())..(start + STORED_MAX).min(bytes.len())];
        let len = block.len() as u16;
        let last = u8::from(i + 1 == n_blocks);
        let bh = [
            last,
            len as u8,
            (len >> 8) as u8,
            !len as u8,
            (!len >> 8) as u8,
        ];
        if let f @ (Flow::Close | Flow::Err(_)) = s.send(&bh) {
            return f;
        }
        if let f @ (Flow::Close | Flow::Err(_)) = s.send(block) {
            return f;
        }
    }
    let mut trailer = [0u8; 8];
    trailer[..4].copy_from_slice(&crc.to_le_bytes());
    trailer[4..].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
    s.send(&trailer)
}

const fn crc_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static CRC_TABLE: [u32; 256] = crc_table();

/// CRC-32 (IEEE), as gzip uses.
pub fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c = CRC_TABLE[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

fn percent_decode(s: &str) -> String {
    fn hex(c: u8) -> Option<u8> {
        (c as char).to_digit(16).map(|d| d as u8)
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Standard base64 (with or without padding); None if malformed.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    fn val(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let s = s.trim_end_matches('=').as_bytes();
    if s.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    for chunk in s.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= val(c)? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    Some(out)
}

/// A quoted strong ETag derived from the content (FNV-1a 64).
pub fn etag_for(body: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in body {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("\"{h:016x}-{}\"", body.len())
}

/// A random hex string of `n` characters (from the OS RNG if readable,
/// else std's randomly keyed hasher).
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n.div_ceil(2)];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .is_ok();
    if !ok {
        for (i, b) in bytes.iter_mut().enumerate() {
            let mut h = RandomState::new().build_hasher();
            h.write_usize(i);
            h.write_u128(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0),
            );
            *b = h.finish() as u8;
        }
    }
    let mut s: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    s.truncate(n);
    s
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), e.g. for `Retry-After`.
pub fn http_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil from days (H. Hinnant).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        WD[days.rem_euclid(7) as usize],
        d,
        MON[(mo - 1) as usize],
        y,
        h,
        m,
        s
    )
}
