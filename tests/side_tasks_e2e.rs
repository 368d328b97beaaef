//! End-to-end tests of the agent's side tasks, run by the real binary against
//! the local cncop network (real TLS on 127.0.0.1): software updates
//! (PROTOCOL 4 over signed metadata: the requests, and the one UDP datagram
//! to ccs3updater, caught by a real UDP socket; the attacks on the metadata
//! are in `signed_metadata.rs`), the open-firewall check (PROTOCOL 5: real TCP
//! probes of loopback endpoints, the report, the state kept in the agent's
//! state file) and cncopreporter (PROTOCOL 6: a real child process).
//!
//! Every test has its own install root, network, UDP socket and loopback
//! addresses (127.x.y.z, never anything else), so they run in parallel. Time
//! only enters through `CNCOP_NOW`; no test asserts on timing.

use std::collections::BTreeSet;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::process::Output;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::*;

// ---------------------------------------------------------------------------
// Running the agent
// ---------------------------------------------------------------------------

/// Runs the agent with its clock set to `now` (Unix seconds, `CNCOP_NOW`).
fn run_at(inst: &Install, args: &[&str], now: u64) -> Output {
    let mut cmd = agent_command();
    cmd.args(args)
        .env("CNCOP_HOME", inst.root())
        .env("CNCOP_NOW", now.to_string());
    exec(cmd, RUN_LIMIT)
}

/// [`run_at`], expecting exit 0 and an empty stdout.
#[track_caller]
fn run_ok_at(inst: &Install, args: &[&str], now: u64) -> Output {
    let o = run_at(inst, args, now);
    let what = format!("CNCOP_NOW={now} cncopgetprofile {}", args.join(" "));
    assert_success(&o, &what);
    o
}

/// Writes `bin/cncopreporter` (mode 0755) with `body`.
fn write_reporter(inst: &Install, body: &str) {
    let path = inst.path("bin/cncopreporter");
    std::fs::write(&path, body).expect("write bin/cncopreporter");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .expect("chmod bin/cncopreporter");
}

/// A reporter that writes its arguments, one a line, to `root/args.txt`,
/// and `marker` to its stdout.
fn recording_reporter(inst: &Install, marker: &str) {
    let args = inst.path("args.txt");
    write_reporter(
        inst,
        &format!(
            "#!/bin/sh\nprintf '%s\\n' \"$@\" > '{}'\necho '{marker}'\nexit 0\n",
            args.display()
        ),
    );
}

/// Makes the next profile requests fail with 503 (`Retry-After: 0`, so the
/// retries do not wait): more than `retries = 1` allows.
fn fail_profile_with_503(net: &TestNetwork) {
    for _ in 0..3 {
        net.push_fault("/profile", status_fault(503, Some("0")));
    }
}

/// Unix seconds now.
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

/// `2026-11-27T07:00:05Z` for Unix time `t` (the library's formatter, itself
/// checked against known dates).
fn rfc3339(t: u64) -> String {
    cncopgetprofile::internals::clock::rfc3339(t)
}

/// `YYYY-MM-DDTHH:MM:SSZ`?
fn is_utc_stamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b'T',
            13 | 16 => *c == b':',
            19 => *c == b'Z',
            _ => c.is_ascii_digit(),
        })
}

// ---------------------------------------------------------------------------
// The store file as a user sees it
// ---------------------------------------------------------------------------

// ---------------------------------------------------------------------------
// ccs3updater stand-in
// ---------------------------------------------------------------------------

/// How long to wait for a datagram that should come. The agent sends it
/// before it exits, so it is normally queued already.
const DATAGRAM_WAIT: Duration = Duration::from_secs(5);
/// How long to listen for a datagram that should not come (after the agent
/// exited, anything it sent is already queued).
const QUIET_WAIT: Duration = Duration::from_millis(300);

/// A real UDP socket on 127.0.0.1 standing in for ccs3updater.
struct Updater {
    sock: UdpSocket,
}

impl Updater {
    fn new() -> Updater {
        Updater {
            sock: UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket on 127.0.0.1"),
        }
    }

    fn port(&self) -> u16 {
        self.sock.local_addr().expect("UDP local address").port()
    }

    /// The next datagram, whole, waiting at most `wait`.
    fn recv(&self, wait: Duration) -> Option<Vec<u8>> {
        let (datagram, from) = recv_datagram(&self.sock, wait)?;
        assert!(from.ip().is_loopback(), "datagram from {from}");
        Some(datagram)
    }

    #[track_caller]
    fn assert_none(&self, what: &str) {
        if let Some(d) = self.recv(QUIET_WAIT) {
            panic!(
                "{what}: ccs3updater got a datagram it should not have: {:?}",
                String::from_utf8_lossy(&d)
            );
        }
    }
}

/// The update checks so far (each starts with the timestamp).
fn software_requests(net: &TestNetwork) -> Vec<Recorded> {
    net.requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/software/timestamp.xml"))
        .collect()
}

/// The triple in `cncopgetprofile/<v> (<triple>)`.
fn ua_triple(ua: &str) -> &str {
    ua.split_once(" (")
        .and_then(|(_, r)| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("User-Agent {ua:?} is not `cncopgetprofile/<v> (<triple>)`"))
}

/// The datagram PROTOCOL 4 prescribes for the release's `version` build.
fn expected_datagram(version: &str, platform: &str) -> String {
    Build::new(platform, version).datagram()
}

/// The agent's triple, from the User-Agent of the one update check so far.
#[track_caller]
fn requested_platform(net: &TestNetwork) -> String {
    let reqs = software_requests(net);
    assert_eq!(reqs.len(), 1, "one update check: {reqs:#?}");
    let ua = reqs[0].header("user-agent").expect("a User-Agent");
    ua_triple(ua).to_string()
}

// ---------------------------------------------------------------------------
// Loopback endpoints
// ---------------------------------------------------------------------------

/// An endpoint nothing listens on (bound, then released): connection refused.
fn closed_endpoint() -> (Ipv4Addr, u16) {
    let (l, ip, port) = open_endpoint();
    drop(l);
    (ip, port)
}

/// Connections the listener received since last asked (a probe connects
/// and closes; the kernel still queues the connection for `accept`).
fn accepted(l: &TcpListener) -> usize {
    l.set_nonblocking(true).expect("non-blocking listener");
    let mut n = 0;
    loop {
        match l.accept() {
            Ok(_) => n += 1,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return n,
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// `[firewall]` on, with short probes.
const FIREWALL_ON: &str = "[firewall]\nenabled = On\nprobe_timeout = 1\nbudget = 20\n";

/// A profile with these `firewall/endpoint`s and jobs `(id, enabled,
/// target)`.
fn fw_profile(endpoints: &[(Ipv4Addr, u16)], jobs: &[(&str, bool, (Ipv4Addr, u16))]) -> Vec<u8> {
    let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    s.push_str(&format!(
        "<profile schema=\"3\" device=\"{DEVICE_ID}\" generated=\"2026-11-27T07:00:00Z\">\n"
    ));
    s.push_str("  <firewall>\n");
    for (ip, port) in endpoints {
        s.push_str(&format!(
            "    <endpoint host=\"{ip}\" port=\"{port}\" proto=\"tcp\" purpose=\"prime\"/>\n"
        ));
    }
    s.push_str("  </firewall>\n  <jobs>\n");
    for (id, enabled, (ip, port)) in jobs {
        let enabled = if *enabled { "yes" } else { "no" };
        s.push_str(&format!(
            "    <job id=\"{id}\" name=\"Job {id}\" type=\"CCS\" enabled=\"{enabled}\" schedule=\"0 30 1 * * *\">\n      <source path=\"/share/{id}\"/>\n      <target host=\"{ip}\" port=\"{port}\"/>\n    </job>\n"
        ));
    }
    s.push_str("  </jobs>\n</profile>\n");
    s.into_bytes()
}

fn firewall_posts(net: &TestNetwork) -> Vec<Recorded> {
    net.requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/firewall"))
        .collect()
}

// ---------------------------------------------------------------------------
// Firewall reports as the network received them
// ---------------------------------------------------------------------------

#[derive(Debug)]
struct FwReport {
    root_attrs: Vec<(String, String)>,
    endpoints: Vec<FwEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FwEntry {
    attrs: Vec<(String, String)>,
}

fn attr<'a>(attrs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

impl FwReport {
    fn device(&self) -> &str {
        attr(&self.root_attrs, "device").unwrap_or("")
    }
    fn time(&self) -> &str {
        attr(&self.root_attrs, "time").unwrap_or("")
    }
    fn entry(&self, ip: Ipv4Addr, port: u16) -> Option<&FwEntry> {
        let (host, port) = (ip.to_string(), port.to_string());
        self.endpoints
            .iter()
            .find(|e| e.get("host") == Some(&host) && e.get("port") == Some(&port))
    }
}

impl FwEntry {
    fn get(&self, name: &str) -> Option<&str> {
        attr(&self.attrs, name)
    }
    fn names(&self) -> BTreeSet<&str> {
        self.attrs.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// A tag read by [`parse_tag`]: name, attributes, whether it is empty
/// (`/>`), and the text after it.
type Tag<'a> = (&'a str, Vec<(String, String)>, bool, &'a str);

/// One tag at the start of `s`.
fn parse_tag(s: &str) -> Result<Tag<'_>, String> {
    let s = s
        .strip_prefix('<')
        .ok_or_else(|| format!("expected a tag at {:?}", &s[..s.len().min(40)]))?;
    let name_end = s
        .find(|c: char| c.is_ascii_whitespace() || c == '/' || c == '>')
        .ok_or("a tag is not closed")?;
    let name = &s[..name_end];
    let mut rest = &s[name_end..];
    let mut attrs: Vec<(String, String)> = Vec::new();
    loop {
        let trimmed = rest.trim_start();
        let spaced = trimmed.len() != rest.len();
        rest = trimmed;
        if let Some(r) = rest.strip_prefix("/>") {
            return Ok((name, attrs, true, r));
        }
        if let Some(r) = rest.strip_prefix('>') {
            return Ok((name, attrs, false, r));
        }
        if !spaced {
            return Err(format!("<{name}>: attributes not separated by white space"));
        }
        let eq = rest
            .find('=')
            .ok_or_else(|| format!("<{name}>: an attribute without a value"))?;
        let key = rest[..eq].trim();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(format!("<{name}>: bad attribute name {key:?}"));
        }
        rest = rest[eq + 1..].trim_start();
        let quote = rest
            .chars()
            .next()
            .filter(|c| *c == '"' || *c == '\'')
            .ok_or_else(|| format!("<{name}> {key}: value not quoted"))?;
        rest = &rest[1..];
        let end = rest
            .find(quote)
            .ok_or_else(|| format!("<{name}> {key}: value not closed"))?;
        let raw = &rest[..end];
        if raw.contains('<') {
            return Err(format!("<{name}> {key}: '<' in a value"));
        }
        if attrs.iter().any(|(k, _)| k == key) {
            return Err(format!("<{name}>: attribute {key} twice"));
        }
        attrs.push((key.to_string(), xml_unescape(raw)?));
        rest = &rest[end + 1..];
    }
}

/// Parses a report of exactly the PROTOCOL 5 shape: an optional XML
/// declaration, then `<firewall-report ...>` holding only empty
/// `<endpoint .../>` elements (and white space), nothing after it.
fn parse_report(body: &[u8]) -> Result<FwReport, String> {
    let text = std::str::from_utf8(body).map_err(|_| "not UTF-8".to_string())?;
    let mut rest = text.trim_start();
    if let Some(r) = rest.strip_prefix("<?xml") {
        let end = r.find("?>").ok_or("XML declaration not closed")?;
        rest = r[end + 2..].trim_start();
    }
    let (name, root_attrs, empty, r) = parse_tag(rest)?;
    if name != "firewall-report" {
        return Err(format!("root element is <{name}>, not <firewall-report>"));
    }
    rest = r;
    let mut endpoints = Vec::new();
    if !empty {
        loop {
            rest = rest.trim_start();
            if let Some(r) = rest.strip_prefix("</firewall-report") {
                rest = r
                    .trim_start()
                    .strip_prefix('>')
                    .ok_or("</firewall-report not closed")?;
                break;
            }
            let (name, attrs, empty, r) = parse_tag(rest)?;
            if name != "endpoint" || !empty {
                return Err(format!(
                    "<firewall-report> may hold only empty <endpoint/>, not <{name}>"
                ));
            }
            endpoints.push(FwEntry { attrs });
            rest = r;
        }
    }
    if !rest.trim().is_empty() {
        return Err(format!("text after the root element: {rest:?}"));
    }
    Ok(FwReport {
        root_attrs,
        endpoints,
    })
}

/// Checks the report's root (device, time) and every entry's attribute set,
/// and returns it parsed.
#[track_caller]
fn report_shape(body: &[u8]) -> FwReport {
    let text = String::from_utf8_lossy(body);
    let r = parse_report(body).unwrap_or_else(|e| panic!("report {text:?}: {e}"));
    let names: BTreeSet<&str> = r.root_attrs.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from(["device", "time"]),
        "root attributes of {text}"
    );
    assert_eq!(r.device(), DEVICE_ID, "report device in {text}");
    assert!(is_utc_stamp(r.time()), "report time in {text}");
    for e in &r.endpoints {
        let want: BTreeSet<&str> = match e.get("state") {
            Some("blocked") => BTreeSet::from(["host", "port", "proto", "state", "since", "error"]),
            Some("cleared") => BTreeSet::from(["host", "port", "proto", "state", "since"]),
            other => panic!("entry state {other:?} in {text}"),
        };
        assert_eq!(e.names(), want, "attributes of an entry in {text}");
        assert_eq!(e.get("proto"), Some("tcp"), "{text}");
        assert!(
            is_utc_stamp(e.get("since").unwrap_or("")),
            "since in {text}"
        );
        assert!(
            e.get("since").unwrap_or("") <= r.time(),
            "since after the report's time in {text}"
        );
        if let Some(err) = e.get("error") {
            assert!(!err.trim().is_empty(), "empty error in {text}");
        }
    }
    r
}

/// The `n`-th report the network received (from 0), checked for shape.
#[track_caller]
fn report(net: &TestNetwork, n: usize) -> FwReport {
    let all = net.firewall_reports();
    let body = all
        .get(n)
        .unwrap_or_else(|| panic!("no report #{n}: only {} received", all.len()));
    report_shape(body)
}

#[track_caller]
fn assert_reports(net: &TestNetwork, want: usize, what: &str) {
    let all = net.firewall_reports();
    assert_eq!(
        all.len(),
        want,
        "{what}: firewall reports received: {:#?}",
        all.iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------
// 1. Updates (PROTOCOL 4)
// ---------------------------------------------------------------------------

/// An updater listening on 127.0.0.1, a network serving two jobs, an
/// appliance whose `[version]` announces updates to it (`autoupdate` On or
/// Off), and a vendor whose release of `version` is published.
fn update_scene(autoupdate: &str, version: &str) -> (Updater, TestNetwork, Install, Authority) {
    let updater = Updater::new();
    let (net, inst) = two_jobs_on_appliance(&update_ini(updater.port().into(), autoupdate));
    let vendor = signed_release(&net, &inst, version);
    (updater, net, inst, vendor)
}

#[test]
fn newer_software_sends_one_exact_datagram_to_ccs3updater() {
    let (updater, net, inst, _vendor) = update_scene("On", "3.10.0");
    run_ok(&inst, &[]);

    let reqs = software_requests(&net);
    assert_eq!(reqs.len(), 1, "one update check: {reqs:#?}");
    let req = &reqs[0];
    assert_eq!((req.method.as_str(), req.status), ("GET", 200));
    let ua = req.header("user-agent").expect("a User-Agent");
    let triple = ua_triple(ua);
    assert_eq!(
        ua,
        format!("cncopgetprofile/{} ({triple})", env!("CARGO_PKG_VERSION")),
        "User-Agent"
    );
    assert!(!triple.is_empty() && !triple.contains(' '), "{ua}");
    if let Some(want) = expected_triple() {
        assert_eq!(triple, want, "the User-Agent names the agent's target");
    }
    let release: Vec<Recorded> = net
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with("/software/release/1.xml"))
        .collect();
    assert_eq!(
        release.len(),
        1,
        "the release the timestamp names was fetched once"
    );

    let got = updater
        .recv(DATAGRAM_WAIT)
        .expect("ccs3updater got no datagram for 3.10.0 > 3.4.0");
    assert_eq!(
        String::from_utf8_lossy(&got),
        expected_datagram("3.10.0", triple),
        "the datagram, byte for byte: the build for the agent's own triple"
    );
    assert!(got.len() <= 1024 && got.is_ascii());
    updater.assert_none("after the one datagram");
}

#[test]
fn same_or_older_software_is_asked_for_but_not_announced() {
    let (updater, net, inst, mut vendor) = update_scene("On", "3.4.0");
    for (i, version) in ["3.4.0", "3.3.9", "3.4"].iter().enumerate() {
        if i > 0 {
            vendor.publish_release(&net, &builds(version), FAR);
        }
        run_ok(&inst, &[]);
        let reqs = software_requests(&net);
        assert_eq!(reqs.len(), i + 1, "{version}: the update check was made");
        assert_eq!(reqs[i].status, 200);
        updater.assert_none(&format!("{version} offered, 3.4.0 installed"));
    }
}

#[test]
fn noupdate_skips_the_update_check() {
    let (updater, net, inst, _vendor) = update_scene("On", "3.10.0");
    run_ok(&inst, &["--noupdate"]);
    assert!(
        software_requests(&net).is_empty(),
        "--noupdate still asked for software: {:#?}",
        software_requests(&net)
    );
    assert_eq!(net.profile_requests().len(), 1, "the profile was fetched");
    updater.assert_none("--noupdate");
}

#[test]
fn autoupdate_off_skips_the_check_unless_update_is_given() {
    let (updater, net, inst, _vendor) = update_scene("Off", "3.10.0");

    run_ok(&inst, &[]);
    assert!(
        software_requests(&net).is_empty(),
        "autoupdate = Off still asked for software"
    );
    updater.assert_none("autoupdate = Off");

    run_ok(&inst, &["--update"]);
    let platform = requested_platform(&net);
    let got = updater
        .recv(DATAGRAM_WAIT)
        .expect("--update with autoupdate = Off: no datagram");
    assert_eq!(
        String::from_utf8_lossy(&got),
        expected_datagram("3.10.0", &platform)
    );
    updater.assert_none("after the one datagram");
}

#[test]
fn a_bad_build_entry_is_an_error_line_not_an_update() {
    let (updater, net, inst, mut vendor) = update_scene("On", "3.4.0");
    for (field, bad) in [("sha256", "0123456789"), ("url", "http://127.0.0.1/x")] {
        let entries: Vec<Build> = builds("3.10.0")
            .into_iter()
            .map(|mut b| {
                match field {
                    "sha256" => b.sha256 = bad.to_string(),
                    _ => b.url = bad.to_string(),
                }
                b
            })
            .collect();
        vendor.publish_release(&net, &entries, FAR);
        let o = run_ok(&inst, &[]);
        updater.assert_none(field);
        assert!(
            err_lines(&o).iter().any(|l| {
                l.contains("update check failed") && l.contains(field) && l.contains(bad)
            }),
            "{field}: no error line naming the release's bad {field}\n{}",
            show(&o)
        );
    }
}

#[test]
fn no_build_for_this_platform_means_no_update_and_no_error() {
    let (updater, net, inst, mut vendor) = update_scene("On", "3.4.0");
    vendor.publish_release(&net, &[Build::new("sparc-sun-solaris", "9.0")], FAR);
    let o = run_ok(&inst, &[]);
    let reqs = software_requests(&net);
    assert_eq!(reqs.len(), 1, "the update check was made");
    assert_eq!(reqs[0].status, 200);
    updater.assert_none("no build for this platform");
    assert!(
        err_lines(&o).is_empty(),
        "no build for this platform is not a problem\n{}",
        show(&o)
    );
}

#[test]
fn the_update_check_follows_the_profile_on_its_connection() {
    let (_updater, net, inst, _vendor) = update_scene("On", "3.4.0");
    run_ok(&inst, &[]);
    let reqs = net.requests();
    let profile = reqs
        .iter()
        .position(Recorded::is_profile)
        .expect("a profile request");
    let sw = reqs
        .iter()
        .position(|r| r.path.ends_with("/software/timestamp.xml"))
        .expect("an update check");
    let root = reqs
        .iter()
        .position(|r| r.path.ends_with("/trust/root/2.xml"))
        .expect("a look for the next root");
    assert!(
        root < profile,
        "the next root is asked for before the profile"
    );
    assert!(sw > profile, "the update check comes after the profile");
    let (p, s) = (&reqs[profile], &reqs[sw]);
    assert_eq!(
        s.path,
        format!("{DEFAULT_BASE_PATH}/v3/software/timestamp.xml"),
        "path"
    );
    assert_eq!(
        s.header("authorization"),
        Some(basic_auth(DEVICE_ID, DEVICE_KEY).as_str()),
        "the update check authenticates as the device"
    );
    assert_eq!(
        s.conn, p.conn,
        "the update check went over another connection than the profile"
    );
    assert!(s.seq_on_conn > p.seq_on_conn);
}

#[test]
fn a_bad_updater_port_exits_2_before_anything_is_done() {
    let (net, inst) = two_jobs_on_appliance(&update_ini(70000, "On"));
    let o = inst.run(&[]);
    assert_exit(&o, 2, "updater_port = 70000");
    assert_stdout_empty(&o, "updater_port = 70000");
    let lines = err_lines(&o);
    assert_eq!(lines.len(), 1, "one line on stderr\n{}", show(&o));
    assert!(
        lines[0].contains("[version] updater_port") && lines[0].contains("70000"),
        "the error names the setting and its value\n{}",
        show(&o)
    );
    assert_eq!(net.connections(), 0, "checked before any request");
    assert!(!inst.db_path().exists(), "no store is written");
    assert!(
        !inst.path("Config/cncopgetprofile.lock").exists(),
        "checked before the run lock"
    );
}

/// A bad setting of a later step is found before the profile request, so
/// the exit code is the configuration's even when the network is down.
#[test]
fn a_bad_updater_port_is_found_before_a_failing_profile_request() {
    let net = net_with_profile(NetOptions::default(), two_jobs());
    fail_profile_with_503(&net);
    let inst = Install::appliance();
    inst.setup(&net, &update_ini(70000, "On"));
    let o = inst.run(&[]);
    assert_exit(&o, 2, "503 would follow, but updater_port = 70000");
    assert_stdout_empty(&o, "updater_port = 70000");
    assert!(net.profile_requests().is_empty(), "no profile request");
}

// ---------------------------------------------------------------------------
// 2. The open-firewall check (PROTOCOL 5)
// ---------------------------------------------------------------------------

#[test]
fn firewall_reports_a_blocked_endpoint_once_then_stays_quiet() {
    let (open, open_ip, open_port) = open_endpoint();
    let closed = closed_endpoint();
    let (off_open, off_open_ip, off_open_port) = open_endpoint();
    let off_closed = closed_endpoint();
    let profile = fw_profile(
        &[(open_ip, open_port)],
        &[
            ("1001", true, closed),
            ("1002", false, off_closed),
            ("1003", false, (off_open_ip, off_open_port)),
        ],
    );
    let net = net_with_profile(NetOptions::default(), profile);
    let inst = Install::appliance();
    inst.setup(&net, FIREWALL_ON);

    run_ok(&inst, &[]);
    let posts = firewall_posts(&net);
    assert_eq!(posts.len(), 1, "one report POSTed: {posts:#?}");
    assert_eq!(posts[0].method, "POST");
    assert_eq!(
        posts[0].path,
        format!("{DEFAULT_BASE_PATH}/v3/devices/{DEVICE_ID}/firewall")
    );
    assert_eq!(posts[0].status, 202);
    let r = report(&net, 0);
    assert_eq!(r.endpoints.len(), 1, "only the blocked endpoint: {r:#?}");
    let e = r
        .entry(closed.0, closed.1)
        .unwrap_or_else(|| panic!("the enabled job's closed target is not reported: {r:#?}"));
    assert_eq!(e.get("state"), Some("blocked"));
    assert!(r.entry(open_ip, open_port).is_none(), "open one reported");
    assert!(
        r.entry(off_closed.0, off_closed.1).is_none(),
        "a disabled job's target was reported"
    );
    assert!(accepted(&open) >= 1, "the open endpoint was not probed");
    assert_eq!(accepted(&off_open), 0, "a disabled job's target was probed");

    age_store(&inst);
    let before = snap(&inst);
    run_ok(&inst, &[]);
    assert_eq!(
        firewall_posts(&net).len(),
        1,
        "nothing changed, yet a report was POSTed: {:#?}",
        net.firewall_reports()
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect::<Vec<_>>()
    );
    assert_store_untouched(&before, &inst, "second run, nothing changed");
    assert!(accepted(&open) >= 1, "the second run did not probe");
    assert_eq!(accepted(&off_open), 0, "a disabled job's target was probed");
}

#[test]
fn a_blocked_endpoint_that_opens_is_reported_cleared() {
    let t0 = unix_now();
    let (ip, port) = closed_endpoint();
    let net = net_with_profile(
        NetOptions::default(),
        fw_profile(&[(ip, port)], &[("1001", true, (ip, port))]),
    );
    let inst = Install::appliance();
    inst.setup(&net, FIREWALL_ON);

    run_ok_at(&inst, &[], t0);
    let r = report(&net, 0);
    assert_eq!(r.endpoints.len(), 1, "{r:#?}");
    let e = r.entry(ip, port).expect("the closed endpoint is reported");
    assert_eq!(e.get("state"), Some("blocked"));
    assert_eq!(e.get("since"), Some(rfc3339(t0).as_str()));
    assert_eq!(r.time(), rfc3339(t0));

    let listener = TcpListener::bind((ip, port))
        .unwrap_or_else(|e| panic!("re-bind the blocked endpoint {ip}:{port}: {e}"));
    let t1 = t0 + 600;
    run_ok_at(&inst, &[], t1);
    assert_reports(&net, 2, "after the endpoint opened");
    let r = report(&net, 1);
    assert_eq!(r.endpoints.len(), 1, "{r:#?}");
    let e = r.entry(ip, port).expect("the opened endpoint is reported");
    assert_eq!(e.get("state"), Some("cleared"), "{r:#?}");
    assert_eq!(e.get("since"), Some(rfc3339(t1).as_str()));
    assert_eq!(r.time(), rfc3339(t1));
    assert!(accepted(&listener) >= 1, "the endpoint was not probed");

    run_ok_at(&inst, &[], t1 + 600);
    assert_reports(&net, 2, "still open: nothing new to report");
}

#[test]
fn an_open_endpoint_that_closes_is_reported_blocked() {
    let t0 = unix_now();
    let (open, ip, port) = open_endpoint();
    let net = net_with_profile(
        NetOptions::default(),
        fw_profile(&[(ip, port)], &[("1001", true, (ip, port))]),
    );
    let inst = Install::appliance();
    inst.setup(&net, FIREWALL_ON);
    run_ok_at(&inst, &[], t0);
    assert_reports(&net, 0, "open endpoint");
    assert!(accepted(&open) >= 1, "the endpoint was not probed");

    drop(open);
    let t1 = t0 + 3600;
    run_ok_at(&inst, &[], t1);
    assert_reports(&net, 1, "the endpoint closed");
    let r = report(&net, 0);
    assert_eq!(r.endpoints.len(), 1, "{r:#?}");
    let e = r.entry(ip, port).expect("the closed endpoint is reported");
    assert_eq!(e.get("state"), Some("blocked"));
    assert_eq!(e.get("since"), Some(rfc3339(t1).as_str()));
}

#[test]
fn a_still_blocked_endpoint_is_reported_again_after_rereport_hours() {
    const HOUR: u64 = 3600;
    let t0 = unix_now();
    let (ip, port) = closed_endpoint();
    let net = net_with_profile(NetOptions::default(), fw_profile(&[(ip, port)], &[]));
    let inst = Install::appliance();
    inst.setup(&net, FIREWALL_ON);

    run_ok_at(&inst, &[], t0);
    assert_reports(&net, 1, "first run");
    let first = report(&net, 0);
    assert_eq!(
        first.entry(ip, port).and_then(|e| e.get("since")),
        Some(rfc3339(t0).as_str())
    );

    run_ok_at(&inst, &[], t0 + 23 * HOUR);
    assert_reports(&net, 1, "23 h later (rereport_hours = 24)");

    let t25 = t0 + 25 * HOUR;
    run_ok_at(&inst, &[], t25);
    assert_reports(&net, 2, "25 h later (rereport_hours = 24)");
    let again = report(&net, 1);
    assert_eq!(again.endpoints.len(), 1, "{again:#?}");
    let e = again.entry(ip, port).expect("the blocked endpoint again");
    assert_eq!(e.get("state"), Some("blocked"));
    assert_eq!(
        e.get("since"),
        Some(rfc3339(t0).as_str()),
        "blocked since the first run"
    );
    assert_eq!(again.time(), rfc3339(t25));

    run_ok_at(&inst, &[], t25 + HOUR);
    assert_reports(&net, 2, "an hour after the re-report");
}

#[test]
fn a_rejected_report_is_sent_again_next_run() {
    let t0 = unix_now();
    let (ip, port) = closed_endpoint();
    let net = net_with_profile(NetOptions::default(), fw_profile(&[(ip, port)], &[]));
    let inst = Install::appliance();
    inst.setup(&net, FIREWALL_ON);

    net.set_firewall_status(500);
    let o = run_at(&inst, &[], t0);
    assert_stdout_empty(&o, "report answered 500");
    assert_reports(&net, 1, "first run");
    assert_eq!(firewall_posts(&net)[0].status, 500);
    let rejected = report(&net, 0);
    let first = rejected
        .entry(ip, port)
        .expect("the blocked endpoint")
        .clone();
    assert_eq!(first.get("since"), Some(rfc3339(t0).as_str()));

    net.set_firewall_status(202);
    let t1 = t0 + 3600;
    run_ok_at(&inst, &[], t1);
    assert_reports(&net, 2, "the rejected report is sent again");
    let resent = report(&net, 1);
    assert_eq!(resent.endpoints.len(), 1, "{resent:#?}");
    assert_eq!(
        resent.entry(ip, port),
        Some(&first),
        "the same entry (same since, error) as the rejected report"
    );
    assert_eq!(resent.time(), rfc3339(t1));

    run_ok_at(&inst, &[], t1 + 3600);
    assert_reports(&net, 2, "accepted: nothing more to send");
}

#[test]
fn firewall_check_off_probes_and_reports_nothing() {
    let (open, ip, port) = open_endpoint();
    let closed = closed_endpoint();
    let net = net_with_profile(
        NetOptions::default(),
        fw_profile(&[(ip, port), closed], &[("1001", true, closed)]),
    );
    let inst = Install::appliance();
    inst.setup(&net, "[firewall]\nenabled = Off\nprobe_timeout = 1\n");
    run_ok(&inst, &[]);
    run_ok(&inst, &[]);
    assert!(firewall_posts(&net).is_empty(), "a report was POSTed");
    assert_reports(&net, 0, "enabled = Off");
    assert_eq!(accepted(&open), 0, "an endpoint was probed");
}

// ---------------------------------------------------------------------------
// 3. cncopreporter (PROTOCOL 6)
// ---------------------------------------------------------------------------

#[test]
fn the_reporter_gets_the_config_and_debug_flag_and_its_output_is_logged() {
    let (_net, inst) = two_jobs_on_appliance("");
    let marker = format!("reporter-output-{}", random_hex(8));
    recording_reporter(&inst, &marker);
    let args = inst.path("args.txt");
    let ini = inst.ini_path();

    run_ok(&inst, &[]);
    assert_eq!(
        std::fs::read_to_string(&args).expect("the reporter ran"),
        format!("-c\n{}\n", ini.display()),
        "arguments of a plain run"
    );
    std::fs::remove_file(&args).expect("remove args.txt");

    run_ok(&inst, &["-d"]);
    assert_eq!(
        std::fs::read_to_string(&args).expect("the reporter ran"),
        format!("-c\n{}\n-d\n", ini.display()),
        "arguments of a -d run"
    );
    let logs = inst.read_logs();
    assert!(
        inst.log_files().iter().any(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with("gp") && name.ends_with(".log")
        }),
        "no gp*.log: {:?}",
        inst.log_files()
    );
    assert!(
        logs.lines().any(|l| l.contains(&marker)),
        "the reporter's output is not in the debug log:\n{logs}"
    );
}

#[test]
fn a_hanging_reporter_is_stopped_at_its_timeout() {
    let (_net, inst) = two_jobs_on_appliance("[reporter]\ntimeout = 1\n");
    write_reporter(&inst, "#!/bin/sh\necho started\nsleep 30\necho never\n");
    let o = inst.run(&[]);
    assert_success(&o, "hanging reporter");
    assert!(
        err_lines(&o).iter().any(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("cncopreporter") && l.contains("timeout")
        }),
        "no warning naming the reporter and its timeout\n{}",
        show(&o)
    );
    assert_eq!(stored_ids(&inst), id_set(&["1001", "1002"]));
}

/// PROTOCOL 6: a reporter that is not installed is one line in the day's
/// log, not on stderr (cron would mail it every hour), and not a failure.
#[test]
fn a_missing_reporter_is_one_line_in_the_days_log_not_on_stderr() {
    let net = net_with_profile(NetOptions::default(), two_jobs());
    let inst = Install::bare();
    inst.setup(&net, "");
    assert!(!inst.path("bin/cncopreporter").exists());
    let o = inst.run(&[]);
    assert_success(&o, "no reporter installed");
    assert!(o.stderr.is_empty(), "nothing on stderr\n{}", show(&o));
    assert_eq!(stored_ids(&inst), id_set(&["1001", "1002"]));
    let log = inst.read_logs();
    let said: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("cncopreporter"))
        .collect();
    assert_eq!(said.len(), 1, "one line about the reporter:\n{log}");
    assert!(
        said[0].contains("not found") && said[0].contains("[reporter] command"),
        "says it is missing and what to set: {}",
        said[0]
    );
}

/// An empty `[reporter] command` turns the step off: the installed
/// reporter does not run and nothing is said about it.
#[test]
fn an_empty_reporter_command_turns_the_step_off() {
    let net = net_with_profile(NetOptions::default(), two_jobs());
    let inst = Install::appliance();
    recording_reporter(&inst, "reporter ran");
    inst.setup(&net, "[reporter]\ncommand =\n");
    let o = inst.run(&["-d"]);
    assert_exit(&o, 0, "[reporter] command =");
    assert!(o.stderr.is_empty(), "nothing on stderr\n{}", show(&o));
    assert!(!inst.path("args.txt").exists(), "the reporter ran");
    let log = inst.read_logs();
    assert!(
        !log.contains("reporter ran"),
        "the reporter's output is in the log:\n{log}"
    );
}

#[test]
fn a_failing_reporter_does_not_change_the_exit_code() {
    let (_net, inst) = two_jobs_on_appliance("");
    write_reporter(&inst, "#!/bin/sh\necho failing on purpose >&2\nexit 3\n");
    let o = inst.run(&[]);
    assert_success(&o, "reporter exits 3");
}

#[test]
fn the_reporter_command_is_one_path_never_a_shell_line() {
    let dir = tempfile::Builder::new()
        .prefix("cncop-pwned-")
        .tempdir()
        .expect("temp dir");
    let pwned = dir.path().join("pwned");
    let p = pwned.display();
    let net = net_with_profile(NetOptions::default(), two_jobs());
    let inst = Install::appliance();
    recording_reporter(&inst, "reporter ran");
    inst.setup(
        &net,
        &format!("[reporter]\ncommand = bin/cncopreporter && touch {p} $(touch {p})\n"),
    );
    let o = inst.run(&[]);
    assert_success(&o, "reporter command with shell syntax");
    assert!(!pwned.exists(), "the reporter command went through a shell");
    assert!(
        !inst.path("args.txt").exists(),
        "the command was split into words: bin/cncopreporter ran"
    );
}

#[test]
fn profile_text_is_stored_and_never_executed() {
    let dir = tempfile::Builder::new()
        .prefix("cncop-pwned-")
        .tempdir()
        .expect("temp dir");
    let pwned = dir.path().join("pwned");
    let p = pwned.display();
    let name = format!("Nightly; touch {p}");
    let pre = format!("/bin/true; touch {p}");
    let post = format!("$(touch {p}) `touch {p}` | touch {p} && touch {p}");
    let option = format!("x; touch {p}");
    let jobs = format!(
        "<job id=\"1001\" name=\"{}\" type=\"CCS\" enabled=\"yes\" schedule=\"0 30 1 * * *\">\
         <source path=\"{}\"/><target host=\"127.0.0.1\" port=\"1\"/>\
         <pre>{}</pre><post>{}</post><option name=\"hook\" value=\"{}\"/></job>",
        xml_escape(&name),
        xml_escape(&format!("/share/a; touch {p}")),
        xml_escape(&pre),
        xml_escape(&post),
        xml_escape(&option),
    );
    let profile = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<profile schema=\"3\" device=\"{DEVICE_ID}\" generated=\"2026-11-27T07:00:00Z\"><jobs>{jobs}</jobs></profile>\n"
    );
    let net = net_with_profile(NetOptions::default(), profile.into_bytes());
    let inst = Install::appliance();
    inst.setup(&net, "");
    run_ok(&inst, &[]);
    run_ok(&inst, &["-d", "--recreate"]);
    assert!(
        !pwned.exists(),
        "{} was created: profile text was executed",
        p
    );

    let o = inst.run(&["--list", "--json"]);
    assert_exit(&o, 0, "--list --json");
    let json = stdout_of(&o);
    assert!(!pwned.exists(), "--list executed profile text");
    assert!(json_strings(&json, "name").contains(&name), "{json}");
    assert_eq!(json_strings(&json, "pre"), [pre], "{json}");
    assert_eq!(json_strings(&json, "post"), [post], "{json}");
    assert_eq!(json_strings(&json, "value"), [option], "{json}");
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("read dir").count(),
        0,
        "something was created in {}",
        dir.path().display()
    );
}

// ---------------------------------------------------------------------------
// 4. Order and isolation
// ---------------------------------------------------------------------------

#[test]
fn side_tasks_run_when_the_profile_fetch_fails() {
    let updater = Updater::new();
    let old_blocked = closed_endpoint();
    let new_blocked = closed_endpoint();
    let v1 = fw_profile(&[old_blocked], &[("1001", true, old_blocked)]);
    let net = net_with_profile(NetOptions::default(), v1);
    let inst = Install::appliance();
    inst.setup(&net, "");
    run_ok(&inst, &[]);
    assert_reports(&net, 0, "first run, firewall check off");

    let v2 = fw_profile(&[new_blocked], &[("2001", true, new_blocked)]);
    net.set_profile(DEVICE_ID, v2.clone(), Some(etag_for(&v2)));
    signed_release(&net, &inst, "3.10.0");
    fail_profile_with_503(&net);
    inst.setup(
        &net,
        &format!("{}{FIREWALL_ON}", update_ini(updater.port().into(), "On")),
    );
    recording_reporter(&inst, "reporter ran");
    net.clear_requests();

    let o = inst.run(&[]);
    assert_exit(&o, 3, "profile 503 past the retries");
    assert_stdout_empty(&o, "profile 503");

    // The update check ran and announced the update.
    let platform = requested_platform(&net);
    let got = updater
        .recv(DATAGRAM_WAIT)
        .expect("no datagram when the profile fetch failed");
    assert_eq!(
        String::from_utf8_lossy(&got),
        expected_datagram("3.10.0", &platform)
    );

    // The firewall check ran on the stored (old) profile's endpoints.
    assert_reports(&net, 1, "firewall check after a failed profile fetch");
    let r = report(&net, 0);
    assert_eq!(
        r.entry(old_blocked.0, old_blocked.1)
            .and_then(|e| e.get("state")),
        Some("blocked"),
        "the stored profile's endpoint: {r:#?}"
    );
    assert!(
        r.entry(new_blocked.0, new_blocked.1).is_none(),
        "an endpoint of the profile that was not accepted was probed: {r:#?}"
    );
    assert_eq!(r.endpoints.len(), 1, "{r:#?}");

    // The reporter ran.
    assert_eq!(
        std::fs::read_to_string(inst.path("args.txt"))
            .expect("the reporter did not run after a failed profile fetch"),
        format!("-c\n{}\n", inst.ini_path().display())
    );

    // The side tasks came after the profile work (the look for a next
    // root comes before it: PROTOCOL 8.2).
    let reqs = net.requests();
    let last_profile = reqs
        .iter()
        .rposition(Recorded::is_profile)
        .expect("profile requests");
    let first_side = reqs
        .iter()
        .position(|r| !r.is_profile() && !r.path.contains("/trust/root/"))
        .expect("side-task requests");
    assert!(
        last_profile < first_side,
        "side-task requests before the profile work ended: {:?}",
        reqs.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    assert_eq!(stored_ids(&inst), id_set(&["1001"]), "old profile kept");
}

/// The firewall state the agent's state file keeps, by endpoint key (read
/// with the library).
fn firewall_keys(inst: &Install) -> BTreeSet<String> {
    use cncopgetprofile::internals::state::{Section, StateFile};
    let state_file = cncopgetprofile::InstallRoot::new(inst.root()).state_file();
    let state = StateFile::open(&state_file, false, 0);
    assert!(!state.was_damaged(), "the state file reads");
    state
        .get(Section::FIREWALL)
        .map(|b| {
            cncopgetprofile::internals::firewall::decode_states(b)
                .expect("the firewall section decodes")
        })
        .unwrap_or_default()
        .into_keys()
        .collect()
}

#[test]
fn an_endpoint_that_leaves_the_profile_is_forgotten_not_reported() {
    let kept = closed_endpoint();
    let dropped = closed_endpoint();
    let net = net_with_profile(NetOptions::default(), fw_profile(&[kept, dropped], &[]));
    let inst = Install::appliance();
    inst.setup(&net, FIREWALL_ON);
    run_ok(&inst, &[]);
    let key = |(ip, port): (Ipv4Addr, u16)| format!("tcp/{ip}:{port}");
    assert_eq!(
        firewall_keys(&inst),
        id_set(&[&key(kept), &key(dropped)]),
        "both blocked endpoints are remembered"
    );
    assert_reports(&net, 1, "both reported blocked");

    net.set_profile(
        DEVICE_ID,
        fw_profile(&[kept], &[]),
        Some("\"second\"".to_string()),
    );
    run_ok(&inst, &[]);
    assert_eq!(
        firewall_keys(&inst),
        id_set(&[&key(kept)]),
        "the endpoint that left the profile is still in the state file"
    );
    assert_reports(&net, 1, "leaving the profile is not a report");
}
