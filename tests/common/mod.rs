//! Harness for end-to-end tests of the `cncopgetprofile` binary: a throwaway
//! install root, the local cncop network (`tests/localnet/net.rs`), profile
//! makers, and a raw HTTPS client for testing the network itself.
//!
//! Each test crate uses a subset of this module, hence `allow(dead_code)`.
#![allow(dead_code)]

#[path = "../localnet/genprofile.rs"]
pub mod genprofile;
pub use genprofile::xml_escape;
#[path = "../localnet/net.rs"]
pub mod net;
/// The operators' signing tool (`cargo run --example localnet -- sign`).
#[path = "../localnet/sign.rs"]
pub mod sign;

#[allow(unused_imports)]
pub use net::trust::{
    Authority, Build, FAR, Key, MANIFEST_HEADER, ManifestLie, RoleKeys, Roles, SIGNATURE_HEADER,
    Signed, hex, manifest, release_xml, root_xml, sha256, timestamp_xml, unix_now, utc, write_root,
};
#[allow(unused_imports)]
pub use net::{
    DEFAULT_BASE_PATH, DEFAULT_DEVICE, Fault, Leaf, NetOptions, Pki, Recorded, ServerCert,
    TestNetwork, TlsVersions, base64_decode, crc32, etag_for, http_date, random_hex,
};

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The agent binary cargo built for this host. Tests never spawn it
/// directly: [`agent_command`] (and friends) start whichever agent is under
/// test, through the runner when there is one.
pub const AGENT: &str = env!("CARGO_BIN_EXE_cncopgetprofile");

/// Device id and key that [`Install::ini_for`] writes and [`standard_net`]
/// registers.
pub const DEVICE_ID: &str = DEFAULT_DEVICE;
pub const DEVICE_KEY: &str = "k3y-0f-NAS-00042-for-tests";

/// A network with [`DEVICE_ID`]/[`DEVICE_KEY`] registered (no profile yet).
pub fn standard_net(opts: NetOptions) -> TestNetwork {
    let net = TestNetwork::start(opts);
    net.add_device(DEVICE_ID, DEVICE_KEY);
    net
}

/// A network with the standard device and `profile` served under its
/// content ETag ([`etag_for`]).
pub fn net_with_profile(opts: NetOptions, profile: Vec<u8>) -> TestNetwork {
    let net = standard_net(opts);
    let etag = etag_for(&profile);
    net.set_profile(DEVICE_ID, profile, Some(etag));
    net
}

/// Platforms a test release lists builds for: the agent under test's own
/// (when known), the host's and the four appliance targets, so the agent
/// always finds its own triple.
pub fn release_platforms() -> Vec<String> {
    let mut all: Vec<String> = expected_triple().into_iter().collect();
    for t in [
        env!("CNCOP_TARGET"),
        "armv7-unknown-linux-musleabihf",
        "aarch64-unknown-linux-musl",
        "mipsel-unknown-linux-musl",
        "mips-unknown-linux-musl",
    ] {
        if !all.iter().any(|a| a == t) {
            all.push(t.to_string());
        }
    }
    all
}

/// A build of `version` for every platform of [`release_platforms`].
pub fn builds(version: &str) -> Vec<Build> {
    release_platforms()
        .iter()
        .map(|p| Build::new(p, version))
        .collect()
}

/// `[version]` for updates announced to `port` on 127.0.0.1, installed 3.4.0.
pub fn update_ini(port: u32, autoupdate: &str) -> String {
    format!(
        "[version]\nautoupdate = {autoupdate}\ninstalled = 3.4.0\nupdater_host = 127.0.0.1\nupdater_port = {port}\n"
    )
}

/// The trust section of the agent's state file as kept on disk, if written.
pub fn trust_state_bytes(inst: &Install) -> Option<Vec<u8>> {
    let bytes = std::fs::read(inst.path("Config/cncopgetprofile.state")).ok()?;
    let sections = cncopgetprofile::state::decode(&bytes)
        .unwrap_or_else(|e| panic!("the state file does not decode: {e}"));
    sections.get("trust").cloned()
}

/// Rotates `vendor`'s root `times` times, each to fresh root and timestamp
/// keys (publish with `publish_roots`).
pub fn rotate_keys(vendor: &mut Authority, times: usize) {
    for _ in 0..times {
        let mut roles = vendor.roles.clone();
        roles.root = RoleKeys::one(&Key::generate());
        roles.timestamp = RoleKeys::one(&Key::generate());
        vendor.rotate(roles);
    }
}

/// A vendor whose root version 1 is shipped in `inst`'s `Config/`, whose
/// release of `version` (for every platform) is published on `net`, and
/// whose profile key signs `net`'s profile manifests.
pub fn signed_release(net: &TestNetwork, inst: &Install, version: &str) -> Authority {
    let mut vendor = Authority::new();
    vendor
        .ship(&inst.path("Config"))
        .unwrap_or_else(|e| panic!("cannot ship the root: {e}"));
    net.sign_profiles(vendor.profile_key());
    vendor.publish_release(net, &builds(version), FAR);
    vendor
}

// ---------------------------------------------------------------------------
// The agent under test, and how it is started
// ---------------------------------------------------------------------------
//
// By default the tests run the host build ([`AGENT`]). Environment
// variables run them against another build, e.g. an appliance binary under
// qemu-user (`targets/test` sets all three):
//
// - `CNCOP_TEST_AGENT`: the agent binary (default [`AGENT`]);
// - `CNCOP_TEST_RUNNER`: a program every agent process is started through,
//   `RUNNER AGENT args...` (e.g. `qemu-mips`; a name found on `PATH`, or a
//   path);
// - `CNCOP_TEST_EXPECT_TRIPLE`: the target triple the agent must announce
//   (User-Agent, `platform=`); see [`expected_triple`].

/// A non-empty environment variable.
fn env_nonempty(name: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

/// The agent binary under test: `CNCOP_TEST_AGENT` (made absolute: some
/// runs start in `/`), else [`AGENT`].
pub fn agent_path() -> PathBuf {
    match env_nonempty("CNCOP_TEST_AGENT") {
        Some(p) => std::path::absolute(&p).unwrap_or_else(|_| PathBuf::from(p)),
        None => PathBuf::from(AGENT),
    }
}

/// `CNCOP_TEST_RUNNER`: what every agent process is started through (a
/// qemu-user emulator), if anything.
pub fn agent_runner() -> Option<std::ffi::OsString> {
    env_nonempty("CNCOP_TEST_RUNNER")
}

/// The argv that starts the agent at `exe`: `[RUNNER, exe]` or `[exe]`.
pub fn agent_argv_at(exe: &Path) -> Vec<std::ffi::OsString> {
    let mut v = Vec::with_capacity(2);
    if let Some(r) = agent_runner() {
        v.push(r);
    }
    v.push(exe.as_os_str().to_os_string());
    v
}

/// The one place a `Command` for the agent under test is made
/// (`[RUNNER] AGENT`); add its arguments and environment.
pub fn agent_command() -> Command {
    agent_command_at(&agent_path())
}

/// [`agent_command`] for a copy of the agent at `exe` (`[RUNNER] exe`).
pub fn agent_command_at(exe: &Path) -> Command {
    agent_command_via_at(&[], exe)
}

/// The agent started through other programs first: `prefix... [RUNNER]
/// AGENT` (e.g. `setpriv ...`, `faketime DATE`, `sh -c 'umask 000 && exec
/// "$0" "$@"'`). An empty `prefix` is [`agent_command`].
pub fn agent_command_via(prefix: &[&str]) -> Command {
    agent_command_via_at(prefix, &agent_path())
}

/// [`agent_command_via`] for the agent at `exe` (e.g. a copy of it).
pub fn agent_command_via_at(prefix: &[&str], exe: &Path) -> Command {
    let mut argv: Vec<std::ffi::OsString> = prefix.iter().map(Into::into).collect();
    argv.extend(agent_argv_at(exe));
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    cmd
}

/// What `/proc/<pid>/exe` names for a running agent process: the runner
/// (resolved on `PATH`) when there is one, else the agent binary;
/// canonicalized.
pub fn agent_process_exe() -> PathBuf {
    let exe = match agent_runner() {
        None => agent_path(),
        Some(r) => {
            let r = PathBuf::from(r);
            if r.components().count() > 1 {
                r
            } else {
                std::env::var_os("PATH")
                    .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                    .unwrap_or_default()
                    .into_iter()
                    .map(|d| d.join(&r))
                    .find(|c| c.is_file())
                    .unwrap_or(r)
            }
        }
    };
    std::fs::canonicalize(&exe).unwrap_or_else(|e| panic!("{}: {e}", exe.display()))
}

/// The target triple the agent under test must announce in its User-Agent
/// and as the update `platform=`: `CNCOP_TEST_EXPECT_TRIPLE` when set; else,
/// for the host build, the triple it was built for; else (another agent, no
/// expectation given) `None`.
pub fn expected_triple() -> Option<String> {
    if let Some(t) = env_nonempty("CNCOP_TEST_EXPECT_TRIPLE") {
        return Some(t.to_string_lossy().into_owned());
    }
    if env_nonempty("CNCOP_TEST_AGENT").is_none() {
        return Some(env!("CNCOP_TARGET").to_string());
    }
    None
}

// ---------------------------------------------------------------------------
// Install root
// ---------------------------------------------------------------------------

/// A throwaway install root with `Config/`, `Spool/Logs/`, `bin/`.
pub struct Install {
    pub dir: tempfile::TempDir,
}

impl Default for Install {
    fn default() -> Self {
        Install::new()
    }
}

impl Install {
    pub fn new() -> Install {
        Install::new_in(&std::env::temp_dir())
    }

    /// [`Install::new`] in a folder of the caller's choice (e.g. a small
    /// file system mounted for a test).
    pub fn new_in(parent: &Path) -> Install {
        let dir = tempfile::Builder::new()
            .prefix("cncop-install-")
            .tempdir_in(parent)
            .expect("temp dir");
        for sub in ["Config", "Spool/Logs", "bin"] {
            std::fs::create_dir_all(dir.path().join(sub)).expect("create install folders");
        }
        Install { dir }
    }

    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// `root/rel`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn ini_path(&self) -> PathBuf {
        self.path("Config/cncop3.ini")
    }

    /// Writes `Config/cncop3.ini`.
    pub fn write_ini(&self, text: &str) {
        std::fs::write(self.ini_path(), text).expect("write cncop3.ini");
    }

    /// Writes the network's CA as `Config/ca.pem` and returns a valid INI for
    /// it (device [`DEVICE_ID`]/[`DEVICE_KEY`], `ca_file = Config/ca.pem`,
    /// `splay = 0`, `retries = 1`, autoupdate and firewall Off; for a plain
    /// HTTP network also `allow_insecure_http = On`), merged with
    /// `extra_sections` (INI text: a key given there replaces the base one in
    /// the same section, new keys and sections are added, and a line `-key`
    /// removes `key` from the current section).
    pub fn ini_for(&self, net: &TestNetwork, extra_sections: &str) -> String {
        net.write_ca(&self.path("Config")).expect("write ca.pem");
        let mut base = vec![
            (
                "device".to_string(),
                vec![
                    ("id", DEVICE_ID.to_string()),
                    ("key", DEVICE_KEY.to_string()),
                ],
            ),
            (
                "network".to_string(),
                vec![
                    ("url", net.url()),
                    ("ca_file", "Config/ca.pem".to_string()),
                    ("splay", "0".to_string()),
                    ("retries", "1".to_string()),
                ],
            ),
            (
                "version".to_string(),
                vec![("autoupdate", "Off".to_string())],
            ),
            ("firewall".to_string(), vec![("enabled", "Off".to_string())]),
        ]
        .into_iter()
        .map(|(s, kv)| {
            (
                s,
                kv.into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect::<Vec<_>>(),
            )
        })
        .collect::<Vec<_>>();
        if net.is_plain() {
            base[1]
                .1
                .push(("allow_insecure_http".to_string(), "On".to_string()));
        }
        merge_ini(&mut base, extra_sections);
        render_ini(&base)
    }

    /// `write_ini(ini_for(net, extra_sections))`.
    pub fn setup(&self, net: &TestNetwork, extra_sections: &str) {
        let ini = self.ini_for(net, extra_sections);
        self.write_ini(&ini);
    }

    /// Runs the agent with the test's environment plus `CNCOP_HOME=root`,
    /// stdin null; panics if it runs longer than [`RUN_LIMIT`].
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_limited(args, RUN_LIMIT)
    }

    /// [`Install::run`] with a chosen time limit (the agent is killed and the
    /// test panics, showing its stderr, when it is exceeded).
    pub fn run_limited(&self, args: &[&str], limit: Duration) -> Output {
        let mut cmd = agent_command();
        cmd.args(args).env("CNCOP_HOME", self.root());
        exec(cmd, limit)
    }

    /// Runs the agent as busybox cron would: empty environment except
    /// `CNCOP_HOME`, working directory `/`, stdin null.
    pub fn run_cron_like(&self, args: &[&str]) -> Output {
        let mut cmd = agent_command();
        cmd.args(args)
            .env_clear()
            .env("CNCOP_HOME", self.root())
            .current_dir("/");
        exec(cmd, RUN_LIMIT)
    }

    /// Runs the agent without `CNCOP_HOME`, from a copy placed in
    /// `root/bin/` (so the root is found as the binary's grandparent).
    pub fn run_installed_copy(&self, args: &[&str]) -> Output {
        let exe = self.path("bin/cncopgetprofile");
        if !exe.exists() {
            std::fs::copy(agent_path(), &exe).expect("copy agent into bin/");
        }
        let mut cmd = agent_command_at(&exe);
        cmd.args(args).env_remove("CNCOP_HOME").current_dir("/");
        exec(cmd, RUN_LIMIT)
    }

    pub fn db_path(&self) -> PathBuf {
        self.path("Config/backupjobs.db")
    }

    /// Bytes of `Config/backupjobs.db`, if it exists.
    pub fn db_bytes(&self) -> Option<Vec<u8>> {
        std::fs::read(self.db_path()).ok()
    }

    /// Modification time of `Config/backupjobs.db`, if it exists.
    pub fn db_mtime(&self) -> Option<SystemTime> {
        std::fs::metadata(self.db_path())
            .and_then(|m| m.modified())
            .ok()
    }

    /// Files in `Spool/Logs/`, sorted.
    pub fn log_files(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(self.path("Spool/Logs"))
            .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// All of `Spool/Logs/`, concatenated (lossy UTF-8).
    pub fn read_logs(&self) -> String {
        let mut s = String::new();
        for p in self.log_files() {
            if let Ok(b) = std::fs::read(&p) {
                s.push_str(&String::from_utf8_lossy(&b));
            }
        }
        s
    }
}

/// Longest an agent run may take in [`Install::run`] and friends.
pub const RUN_LIMIT: Duration = Duration::from_secs(120);

/// Runs `cmd` with stdin null and stdout/stderr captured (through anonymous
/// temp files, so no pipe can fill up), killing it after `limit`.
pub fn exec(mut cmd: Command, limit: Duration) -> Output {
    use std::io::Seek;
    let mut out = tempfile::tempfile().expect("temp file");
    let mut err = tempfile::tempfile().expect("temp file");
    // A binary a test has just copied (an installed copy of the agent) may
    // still be open for writing in a child that another test thread forked
    // meanwhile and that has not exec'd yet: exec fails with ETXTBSY until
    // it has. That is the test harness's race, not the agent's, so retry.
    let mut busy_tries = 0;
    let mut child = loop {
        let spawned = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(err.try_clone().expect("dup"))
            .spawn();
        match spawned {
            Ok(child) => break child,
            Err(e) if e.kind() == io::ErrorKind::ExecutableFileBusy && busy_tries < 100 => {
                busy_tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("cannot run {cmd:?}: {e}"),
        }
    };
    let start = std::time::Instant::now();
    let (status, timed_out) = loop {
        if let Some(st) = child.try_wait().expect("wait for the agent") {
            break (st, false);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            break (child.wait().expect("wait for the agent"), true);
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let read = |f: &mut std::fs::File| {
        let mut v = Vec::new();
        f.rewind().expect("rewind");
        f.read_to_end(&mut v).expect("read captured output");
        v
    };
    let output = Output {
        status,
        stdout: read(&mut out),
        stderr: read(&mut err),
    };
    if timed_out {
        panic!(
            "{cmd:?} still running after {limit:?}; killed. stderr:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    output
}

fn merge_ini(base: &mut Vec<(String, Vec<(String, String)>)>, extra: &str) {
    let mut section: Option<usize> = None;
    for line in extra.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
            continue;
        }
        if let Some(name) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            let name = name.trim();
            let idx = match base.iter().position(|(s, _)| s == name) {
                Some(i) => i,
                None => {
                    base.push((name.to_string(), Vec::new()));
                    base.len() - 1
                }
            };
            section = Some(idx);
            continue;
        }
        let Some(idx) = section else {
            panic!("ini_for: line {t:?} outside any [section]");
        };
        let keys = &mut base[idx].1;
        if let Some(k) = t.strip_prefix('-') {
            let k = k.trim();
            keys.retain(|(key, _)| !key.eq_ignore_ascii_case(k));
            continue;
        }
        let (k, v) = t
            .split_once('=')
            .or_else(|| t.split_once(':'))
            .map(|(k, v)| (k.trim(), v.trim()))
            .unwrap_or((t, ""));
        match keys.iter_mut().find(|(key, _)| key.eq_ignore_ascii_case(k)) {
            Some(slot) => slot.1 = v.to_string(),
            None => keys.push((k.to_string(), v.to_string())),
        }
    }
}

fn render_ini(sections: &[(String, Vec<(String, String)>)]) -> String {
    let mut s = String::new();
    for (name, keys) in sections {
        s.push_str(&format!("[{name}]\n"));
        for (k, v) in keys {
            s.push_str(&format!("{k} = {v}\n"));
        }
        s.push('\n');
    }
    s
}

// ---------------------------------------------------------------------------
// Profiles
// ---------------------------------------------------------------------------

/// A profile of `n_jobs` jobs for `device`, made by
/// `tests/localnet/genprofile.rs` (deterministic, seed 1).
pub fn profile_xml(device: &str, n_jobs: usize) -> Vec<u8> {
    profile_xml_with(device, n_jobs, 1, "2026-11-27T07:00:00Z")
}

/// `localnet genprofile --jobs N --device D --seed S --generated G`.
pub fn profile_xml_with(device: &str, n_jobs: usize, seed: u64, generated: &str) -> Vec<u8> {
    genprofile::profile(&genprofile::GenOptions {
        jobs: n_jobs,
        device: device.to_string(),
        seed,
        generated: generated.to_string(),
    })
}

/// A small hand-written profile: one job per `(id, type)`, named
/// `Job <id>`, enabled, with one source and a loopback target.
pub fn small_profile(device: &str, jobs: &[(&str, &str)]) -> Vec<u8> {
    small_profile_generated(device, "2026-11-27T07:00:00Z", jobs)
}

/// [`small_profile`] with a chosen `generated` time.
pub fn small_profile_generated(device: &str, generated: &str, jobs: &[(&str, &str)]) -> Vec<u8> {
    let mut s = String::new();
    s.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    s.push_str(&format!(
        "<profile schema=\"3\" device=\"{}\" generated=\"{}\">\n",
        xml_escape(device),
        xml_escape(generated)
    ));
    s.push_str("  <jobs>\n");
    for (id, ty) in jobs {
        let id = xml_escape(id);
        let ty = xml_escape(ty);
        s.push_str(&format!(
            "    <job id=\"{id}\" name=\"Job {id}\" type=\"{ty}\" enabled=\"yes\" \
             schedule=\"0 30 1 * * *\" retries=\"1\">\n"
        ));
        s.push_str(&format!("      <source path=\"/share/job{id}\"/>\n"));
        s.push_str("      <target host=\"127.0.1.1\" port=\"443\"/>\n");
        s.push_str("    </job>\n");
    }
    s.push_str("  </jobs>\n</profile>\n");
    s.into_bytes()
}

// ---------------------------------------------------------------------------
// A raw HTTP(S) client, for testing the network itself
// ---------------------------------------------------------------------------

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `Basic <base64(user:password)>`.
pub fn basic_auth(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64_encode(format!("{user}:{password}").as_bytes())
    )
}

/// A client config (ring provider) trusting only `ca_der`, optionally with
/// a client certificate.
pub fn client_config(ca_der: &[u8], client: Option<&Leaf>) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from(ca_der.to_vec()))
        .expect("add CA");
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_root_certificates(roots);
    let cfg = match client {
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from(leaf.cert_der.clone())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf.key_der.clone())),
            )
            .expect("client cert"),
        None => builder.with_no_client_auth(),
    };
    Arc::new(cfg)
}

/// An HTTP response as read by [`RawClient`].
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    /// Names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The body ended before `Content-Length` (connection closed).
    pub truncated: bool,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of header `name`, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .filter(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

enum RawIo {
    Plain(TcpStream),
    Tls(Box<TlsStream>),
}

impl Read for RawIo {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            RawIo::Plain(s) => s.read(buf),
            RawIo::Tls(s) => s.read(buf),
        }
    }
}

impl Write for RawIo {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            RawIo::Plain(s) => s.write(buf),
            RawIo::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            RawIo::Plain(s) => s.flush(),
            RawIo::Tls(s) => s.flush(),
        }
    }
}

/// One keep-alive connection to a [`TestNetwork`], speaking just enough
/// HTTP/1.1 (Content-Length bodies) to test it.
pub struct RawClient {
    io: RawIo,
    buf: Vec<u8>,
}

impl RawClient {
    /// Connects to `net` (TLS trusting the net's CA, server name
    /// `127.0.0.1`; or plain).
    pub fn connect(net: &TestNetwork) -> io::Result<RawClient> {
        Self::connect_with(net, None, "127.0.0.1")
    }

    /// Connects with an optional client certificate and a chosen server name
    /// (`127.0.0.1` or `localhost`); TLS errors come back as `io::Error`.
    pub fn connect_with(
        net: &TestNetwork,
        client: Option<&Leaf>,
        server_name: &str,
    ) -> io::Result<RawClient> {
        let sock = TcpStream::connect(net.addr())?;
        sock.set_read_timeout(Some(Duration::from_secs(20)))?;
        sock.set_write_timeout(Some(Duration::from_secs(20)))?;
        if net.is_plain() {
            return Ok(RawClient {
                io: RawIo::Plain(sock),
                buf: Vec::new(),
            });
        }
        let cfg = client_config(net.pki().ca_der(), client);
        let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let conn = rustls::ClientConnection::new(cfg, name).map_err(io::Error::other)?;
        let mut stream = rustls::StreamOwned::new(conn, sock);
        // Drive the handshake now, so certificate errors surface here.
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(RawClient {
            io: RawIo::Tls(Box::new(stream)),
            buf: Vec::new(),
        })
    }

    /// Sends `METHOD path` (path includes the base path and query) with
    /// `Host` and these headers; adds Content-Length for a body.
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<()> {
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() || method == "POST" {
            req.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        req.push_str("\r\n");
        self.io.write_all(req.as_bytes())?;
        self.io.write_all(body)?;
        self.io.flush()
    }

    /// Writes raw bytes on the connection.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.io.write_all(bytes)?;
        self.io.flush()
    }

    fn fill(&mut self) -> io::Result<usize> {
        let mut tmp = [0u8; 64 * 1024];
        match self.io.read(&mut tmp) {
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                Ok(n)
            }
            // A server that closes without close_notify.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
            Err(e) => Err(e),
        }
    }

    /// Reads one response (to a request of `method`).
    pub fn read_response(&mut self, method: &str) -> io::Result<RawResponse> {
        let head_end = loop {
            if let Some(p) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break p;
            }
            if self.fill()? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed before a response head",
                ));
            }
        };
        let head: Vec<u8> = self.buf.drain(..head_end + 4).collect();
        let head = String::from_utf8_lossy(&head[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or("");
        let status: u16 = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| io::Error::other(format!("bad status line {status_line:?}")))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut resp = RawResponse {
            status,
            headers,
            body: Vec::new(),
            truncated: false,
        };
        if method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status) {
            return Ok(resp);
        }
        let len: Option<usize> = resp.header("content-length").and_then(|v| v.parse().ok());
        match len {
            Some(len) => {
                while self.buf.len() < len {
                    if self.fill()? == 0 {
                        resp.truncated = true;
                        break;
                    }
                }
                let n = len.min(self.buf.len());
                resp.body = self.buf.drain(..n).collect();
            }
            None => {
                while self.fill()? != 0 {}
                resp.body = std::mem::take(&mut self.buf);
            }
        }
        Ok(resp)
    }

    /// `send` then `read_response`.
    pub fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<RawResponse> {
        self.send(method, path, headers, body)?;
        self.read_response(method)
    }

    /// Bytes of a received response body so far when the peer stops
    /// sending: reads until `n` bytes are buffered or EOF/timeout.
    pub fn read_raw(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if self.fill()? == 0 {
                break;
            }
        }
        let k = n.min(self.buf.len());
        Ok(self.buf.drain(..k).collect())
    }

    /// Sets the socket read timeout.
    pub fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        match &self.io {
            RawIo::Plain(s) => s.set_read_timeout(d),
            RawIo::Tls(s) => s.sock.set_read_timeout(d),
        }
    }
}

/// Path of the standard device's profile on `net` (base path included).
pub fn profile_path(device: &str) -> String {
    format!("{DEFAULT_BASE_PATH}/v3/devices/{device}/profile")
}

// ---------------------------------------------------------------------------
// Assertions and set-ups shared by the end-to-end test files
// ---------------------------------------------------------------------------

pub fn stdout_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Non-empty stderr lines.
pub fn err_lines(o: &Output) -> Vec<String> {
    stderr_of(o)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// Exit code, stdout and stderr of a run, for failure messages.
pub fn show(o: &Output) -> String {
    format!(
        "exit status: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        o.status.code(),
        stdout_of(o),
        stderr_of(o)
    )
}

#[track_caller]
pub fn assert_exit(o: &Output, want: i32, what: &str) {
    assert_eq!(
        o.status.code(),
        Some(want),
        "{what}: expected exit code {want}\n{}",
        show(o)
    );
}

#[track_caller]
pub fn assert_stdout_empty(o: &Output, what: &str) {
    assert!(
        o.stdout.is_empty(),
        "{what}: stdout must be empty (cron mails any output)\n{}",
        show(o)
    );
}

/// Runs the agent with `args`; expects exit 0 and an empty stdout.
#[track_caller]
pub fn run_ok(inst: &Install, args: &[&str]) -> Output {
    let o = inst.run(args);
    let what = format!("cncopgetprofile {}", args.join(" "));
    assert_exit(&o, 0, &what);
    assert_stdout_empty(&o, &what);
    o
}

/// A fresh install root with a do-nothing `bin/cncopreporter`, as on a real
/// appliance (a missing reporter is a warning on every run, PROTOCOL 6).
pub fn new_install() -> Install {
    new_install_in(&std::env::temp_dir())
}

/// [`new_install`] in a folder of the caller's choice.
pub fn new_install_in(parent: &Path) -> Install {
    use std::os::unix::fs::PermissionsExt;
    let inst = Install::new_in(parent);
    let reporter = inst.path("bin/cncopreporter");
    std::fs::write(&reporter, "#!/bin/sh\nexit 0\n").expect("write the stub reporter");
    std::fs::set_permissions(&reporter, std::fs::Permissions::from_mode(0o755))
        .expect("chmod the stub reporter");
    inst
}

/// Two jobs, 1001 (CCS) and 1002 (MSSQL).
pub fn two_jobs() -> Vec<u8> {
    small_profile(DEVICE_ID, &[("1001", "CCS"), ("1002", "MSSQL")])
}

/// The job ids of a `--list` listing: the first column of the rows under
/// the `ID ...` header.
pub fn listed_ids(listing: &str) -> std::collections::BTreeSet<String> {
    let mut rows = false;
    let mut ids = std::collections::BTreeSet::new();
    for line in listing.lines() {
        if rows {
            if let Some(id) = line.split_whitespace().next() {
                ids.insert(id.to_string());
            }
        } else if line.split_whitespace().next() == Some("ID") {
            rows = true;
        }
    }
    ids
}

/// Runs `--list` (expects exit 0) and returns the listed job ids.
#[track_caller]
pub fn stored_ids(inst: &Install) -> std::collections::BTreeSet<String> {
    let o = inst.run(&["--list"]);
    assert_exit(&o, 0, "--list");
    listed_ids(&stdout_of(&o))
}

pub fn id_set(ids: &[&str]) -> std::collections::BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// The ids [`genprofile`] gives `n` jobs: 1000, 1001, ...
pub fn gen_ids(n: usize) -> std::collections::BTreeSet<String> {
    (0..n).map(|i| (1000 + i).to_string()).collect()
}

/// Files in the install's `Config/` whose name starts with `prefix`, sorted.
pub fn config_files(inst: &Install, prefix: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(inst.path("Config"))
        .expect("read Config/")
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(prefix))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// What a user can see of the store file.
pub struct Snap {
    pub bytes: Vec<u8>,
    pub mtime: SystemTime,
    pub ino: u64,
}

pub fn snap(inst: &Install) -> Snap {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(inst.db_path()).expect("the store exists");
    Snap {
        bytes: inst.db_bytes().expect("read the store"),
        mtime: meta.modified().expect("mtime"),
        ino: meta.ino(),
    }
}

/// Sets the store's mtime far in the past (without writing to it), so that
/// any later write shows.
pub fn age_store(inst: &Install) {
    let f = std::fs::File::options()
        .write(true)
        .open(inst.db_path())
        .expect("open the store");
    f.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000))
        .expect("set mtime");
}

#[track_caller]
pub fn assert_store_untouched(before: &Snap, inst: &Install, what: &str) {
    let now = snap(inst);
    assert!(
        now.bytes == before.bytes,
        "{what}: the store's bytes changed ({} bytes before, {} now)",
        before.bytes.len(),
        now.bytes.len()
    );
    assert_eq!(now.mtime, before.mtime, "{what}: the store's mtime changed");
    assert_eq!(
        now.ino, before.ino,
        "{what}: the store file was replaced (new inode)"
    );
}

/// `Fault::Status` with a short text body and an optional `Retry-After`.
pub fn status_fault(code: u16, retry_after: Option<&str>) -> Fault {
    Fault::Status {
        code,
        retry_after: retry_after.map(str::to_string),
        body: format!("status {code} from the test").into_bytes(),
    }
}

/// Permission bits of `path`.
pub fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Whether `s` is one JSON document (RFC 8259), by serde_json's parser.
pub fn check_json(s: &str) -> Result<(), String> {
    serde_json::from_str::<serde_json::Value>(s)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// The next datagram on `sock` within `wait`, and who sent it; `None` when
/// none came. A signal can cut a timed receive short (EINTR even under
/// SA_RESTART, signal(7)): that is waited out, never taken for "nothing came".
pub fn recv_datagram(
    sock: &std::net::UdpSocket,
    wait: std::time::Duration,
) -> Option<(Vec<u8>, std::net::SocketAddr)> {
    use std::io::ErrorKind;
    let deadline = std::time::Instant::now() + wait;
    let mut buf = vec![0u8; 65_536];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return None;
        }
        sock.set_read_timeout(Some(left))
            .expect("set a read timeout");
        match sock.recv_from(&mut buf) {
            Ok((n, from)) => {
                buf.truncate(n);
                return Some((buf, from));
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None;
            }
            Err(e) => panic!("receiving a datagram on {:?}: {e}", sock.local_addr()),
        }
    }
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
pub fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a TCP port");
    let port = l.local_addr().expect("local address").port();
    drop(l);
    port
}

/// `[network]` settings that end every network fault within seconds: no
/// retries, 2 s per connect and per read, 20 s in all.
pub const FAST: &str =
    "[network]\nretries = 0\nconnect_timeout = 2\nread_timeout = 2\ntimeout = 20\n";

/// Runs the agent once more, after a good run: expects exit `code`, an empty
/// stdout, the store byte-identical (bytes, mtime, inode) with the same jobs
/// listed, and exactly one line on stderr, which it returns (and prints).
#[track_caller]
pub fn failing_run(inst: &Install, code: i32, what: &str) -> String {
    let jobs_before = stored_ids(inst);
    age_store(inst);
    let before = snap(inst);
    let o = inst.run(&[]);
    assert_exit(&o, code, what);
    assert_stdout_empty(&o, what);
    assert_store_untouched(&before, inst, what);
    assert_eq!(
        stored_ids(inst),
        jobs_before,
        "{what}: the old jobs stay listed"
    );
    let lines = err_lines(&o);
    assert_eq!(lines.len(), 1, "{what}: one line on stderr\n{}", show(&o));
    eprintln!("{what}: {}", lines[0]);
    lines.into_iter().next().unwrap()
}

/// `line`, lower-cased, contains one of `words`.
#[track_caller]
pub fn assert_says(line: &str, words: &[&str], what: &str) {
    let l = line.to_ascii_lowercase();
    assert!(
        words.iter().any(|w| l.contains(w)),
        "{what}: the message should say one of {words:?}: {line}"
    );
}

/// (year, month, day) in UTC of `t`, by the agent's own calendar.
pub fn civil_date(t: SystemTime) -> (i32, u8, u8) {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    // 2026-11-27T07:00:05Z
    let stamp = cncopgetprofile::clock::rfc3339(secs);
    let part = |r: std::ops::Range<usize>| stamp[r].parse::<i32>().expect("rfc3339 digits");
    (part(0..4), part(5..7) as u8, part(8..10) as u8)
}
