//! A real cncop network on loopback, for tests and the `localnet` example.
//!
//! It speaks the server side of `docs/protocol.md` (device protocol v3):
//! HTTPS (HTTP/1.1 over rustls, ring provider) or, on request, plain HTTP,
//! on `127.0.0.1` only, one thread per connection, keep-alive. Its PKI (a CA,
//! the server leaf and the bad certificates TLS-negative tests need) is made
//! at run time with rcgen.
//!
//! Used by the integration tests and by the `localnet` example
//! (`tests/localnet/cli.rs`). It never panics on I/O errors of a connection:
//! those are logged to stderr at most.
//!
//! This file holds the network's options, its shared state and its life
//! cycle (start, URL, request records, stop). The rest, one concern a file
//! in `net/`:
//!
//! | file | owns |
//! | --- | --- |
//! | `pki.rs` | the CA, the server leaf, bad certificates, the TLS server config |
//! | `connection.rs` | a connection: TLS handshake, timeouts, answering requests |
//! | `http.rs` | HTTP/1.1 requests read and responses written |
//! | `faults.rs` | scripted misbehaviours and the body sender that applies them |
//! | `devices.rs` | registered devices, their profiles (ETag, gzip), authentication |
//! | `endpoints.rs` | URL routing, the firewall and software endpoints |
//! | `trust.rs` | signed metadata: keys, roots, timestamp/release, profile manifests, lies |
//! | `util.rs` | base64, CRC-32, ETags, random hex, HTTP dates |
//!
//! A new concern (say, signed metadata) is a new file declared below, its
//! state a field of [`State`], its routes a line of `endpoints::route`.
mod connection;
mod devices;
mod endpoints;
mod faults;
mod http;
mod pki;
pub mod trust;
mod util;

pub use faults::Fault;
pub(crate) use http::header_values;
pub use pki::{Leaf, Pki};
pub use util::{base64_decode, crc32, etag_for, http_date, random_hex};

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustls::ServerConfig;

use connection::serve_connection;
use devices::Device;
use pki::server_config;

/// The device id the demo and most tests use.
pub const DEFAULT_DEVICE: &str = "NAS-00042";
/// Base path of the network's URL (`https://127.0.0.1:PORT/cncop`).
pub const DEFAULT_BASE_PATH: &str = "/cncop";

// ---------------------------------------------------------------------------
// Options and records
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
    /// Answer `Accept-Encoding: gzip` with a gzip body (flate2, stored
    /// blocks: the size on the wire stays about the profile's). Changeable
    /// later with [`TestNetwork::set_gzip`].
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
        http::header_values(&self.headers, name).next()
    }

    /// All values of header `name` (any case).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        http::header_values(&self.headers, name).collect()
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

struct State {
    devices: Vec<(String, Device)>,
    published: trust::Published,
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
                published: trust::Published::default(),
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

    /// Serve gzip to clients that accept it (or not).
    pub fn set_gzip(&self, on: bool) {
        self.shared.state().gzip = on;
    }

    /// Allow several requests per connection (or close after each).
    pub fn set_keep_alive(&self, on: bool) {
        self.shared.state().keep_alive = on;
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
