//! What the tests share to set a run up: the standard device and its
//! network, profiles (generated or small hand-written ones), releases signed
//! by a vendor, network settings and faults.

use std::net::Ipv4Addr;

use crate::genprofile;
use crate::install::Install;
use crate::net::trust::{Authority, Build, FAR, Key, RoleKeys};
use crate::net::{DEFAULT_DEVICE, Fault, NetOptions, TestNetwork, etag_for};
use crate::{expected_triple, xml_escape};

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

/// A network serving [`two_jobs`] and an appliance install set up for it
/// with `extra_sections` ([`Install::ini_for`]).
pub fn two_jobs_on_appliance(extra_sections: &str) -> (TestNetwork, Install) {
    let net = net_with_profile(NetOptions::default(), two_jobs());
    let inst = Install::appliance();
    inst.setup(&net, extra_sections);
    (net, inst)
}

/// Platforms a test release lists builds for: the agent under test's own
/// (when known), the host's and the four appliance targets, so the agent
/// always finds its own triple.
pub fn release_platforms() -> Vec<String> {
    let mut all: Vec<String> = expected_triple().into_iter().collect();
    for t in [
        crate::agent::HOST_TRIPLE,
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

/// `Fault::Status` with a short text body and an optional `Retry-After`.
pub fn status_fault(code: u16, retry_after: Option<&str>) -> Fault {
    Fault::Status {
        code,
        retry_after: retry_after.map(str::to_string),
        body: format!("status {code} from the test").into_bytes(),
    }
}

/// `[network]` settings that end every network fault within seconds: no
/// retries, 2 s per connect and per read, 20 s in all.
pub const FAST: &str =
    "[network]\nretries = 0\nconnect_timeout = 2\nread_timeout = 2\ntimeout = 20\n";

/// A profile of `n_jobs` jobs for `device`, made by
/// `genprofile.rs` (deterministic, seed 1).
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

/// Two jobs, 1001 (CCS) and 1002 (MSSQL).
pub fn two_jobs() -> Vec<u8> {
    small_profile(DEVICE_ID, &[("1001", "CCS"), ("1002", "MSSQL")])
}

/// The ids [`genprofile`] gives `n` jobs: 1000, 1001, ...
pub fn gen_ids(n: usize) -> std::collections::BTreeSet<String> {
    (0..n).map(|i| (1000 + i).to_string()).collect()
}

pub fn id_set(ids: &[&str]) -> std::collections::BTreeSet<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// `xml` (a genprofile profile) with its `<firewall>` block replaced by one
/// `prime` TCP endpoint per `(ip, port)`.
pub fn with_firewall_endpoints(xml: Vec<u8>, endpoints: &[(Ipv4Addr, u16)]) -> Vec<u8> {
    let xml = String::from_utf8(xml).expect("genprofile writes UTF-8");
    let start = xml
        .find("<firewall>")
        .expect("genprofile writes <firewall>")
        + "<firewall>".len();
    let end = xml
        .find("</firewall>")
        .expect("genprofile writes </firewall>");
    let mut block = String::from("\n");
    for (ip, port) in endpoints {
        block.push_str(&format!(
            "    <endpoint host=\"{ip}\" port=\"{port}\" proto=\"tcp\" purpose=\"prime\"/>\n"
        ));
    }
    block.push_str("  ");
    format!("{}{block}{}", &xml[..start], &xml[end..]).into_bytes()
}
