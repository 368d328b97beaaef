//! TLS refusals, client certificates and secrets of `cncopgetprofile`
//! (PROTOCOL sections 1, 2 and 7): the real binary against the project's
//! local cncop network (real TLS on 127.0.0.1) and, where rustls cannot play
//! the server, a raw TCP server on 127.0.0.1.
//!
//! A refused connection must exit 3 with one clear line, leave the store
//! byte-identical, and never have sent the device's credentials. Secrets
//! (`[device] key`, job passwords) never appear in any output or log, also
//! when a run fails. No test asserts on timing; every run is bounded by
//! small timeouts in the INI and by [`Install::run`]'s limit.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::process::{Command, Output};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};
use support::*;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// After this run the network serves 50 generated jobs, so that only a
/// failure leaves the store as it is.
fn serve_another_profile(net: &TestNetwork) {
    let v2 = profile_xml(DEVICE_ID, 50);
    net.set_profile(DEVICE_ID, v2.clone(), Some(etag_for(&v2)));
}

/// A good network with two jobs and an install after one good run with
/// [`FAST`] network settings plus `extra_ini`.
fn good_install(opts: NetOptions, extra_ini: &str) -> (Install, TestNetwork) {
    let net = net_with_profile(opts, two_jobs());
    let inst = Install::appliance();
    inst.setup(&net, &format!("{FAST}{extra_ini}"));
    run_ok(&inst, &[]);
    assert_eq!(stored_ids(&inst), id_set(&["1001", "1002"]));
    (inst, net)
}

/// Waits (bounded, not measured) until `net` has recorded a TLS handshake
/// failure, and returns them.
fn handshake_failures(net: &TestNetwork) -> Vec<String> {
    let end = Instant::now() + Duration::from_secs(10);
    while net.tls_errors().is_empty() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    net.tls_errors()
}

/// A good run against a valid network, then a run against a second network
/// with the same CA presenting `cert`, reached as `host`: expects exit 3,
/// the store untouched, one stderr line (returned), and that the second
/// network never got an HTTP request (so never the device's credentials).
fn refused_certificate(cert: ServerCert, host: &str) -> String {
    let (inst, good) = good_install(NetOptions::default(), "");
    let bad = net_with_profile(
        NetOptions {
            pki: Some(good.pki().clone()),
            server_cert: cert.clone(),
            ..NetOptions::default()
        },
        profile_xml(DEVICE_ID, 50),
    );
    inst.setup(&bad, &format!("{FAST}url = {}\n", bad.url_with_host(host)));
    let what = format!("server certificate {cert:?}, connecting to {host}");
    let line = failing_run(&inst, 3, &what);
    assert!(
        bad.requests().is_empty(),
        "{what}: no HTTP request may follow a refused certificate: {:?}",
        bad.requests()
    );
    assert!(
        !handshake_failures(&bad).is_empty(),
        "{what}: the server saw the handshake fail"
    );
    assert_says(&line, &["tls"], &what);
    line
}

// ---------------------------------------------------------------------------
// Server certificates
// ---------------------------------------------------------------------------

#[test]
fn a_certificate_from_another_ca_is_refused() {
    let line = refused_certificate(ServerCert::OtherCa, "127.0.0.1");
    assert_says(&line, &["issuer"], "another CA");
    // What to do about it: the network's own CA goes in [network] ca_file.
    assert_says(&line, &["set [network] ca_file"], "another CA");
}

#[test]
fn an_expired_certificate_is_refused() {
    let line = refused_certificate(ServerCert::Expired, "127.0.0.1");
    assert_says(&line, &["expired"], "expired");
    assert!(
        !line.contains("clock is wrong"),
        "the device clock is right; only the certificate is old: {line}"
    );
}

#[test]
fn a_certificate_for_another_host_name_is_refused() {
    // The leaf is for wrong.cncop.invalid only; neither the address nor the
    // name `localhost` may accept it.
    for host in ["127.0.0.1", "localhost"] {
        let line = refused_certificate(ServerCert::WrongHost, host);
        assert_says(&line, &["not valid for name"], host);
        assert!(line.contains(host), "names the host it wanted: {line}");
    }
}

#[test]
fn the_right_certificate_is_accepted_by_name_too() {
    // Control for the host name checks above: the good leaf (for localhost
    // and 127.0.0.1) works when reached as `localhost`.
    let net = net_with_profile(NetOptions::default(), two_jobs());
    let inst = Install::appliance();
    inst.setup(
        &net,
        &format!("{FAST}url = {}\n", net.url_with_host("localhost")),
    );
    run_ok(&inst, &[]);
    assert_eq!(stored_ids(&inst), id_set(&["1001", "1002"]));
}

#[test]
fn a_self_signed_certificate_is_refused() {
    let line = refused_certificate(ServerCert::SelfSigned, "127.0.0.1");
    assert_says(
        &line,
        &["issuer", "self-signed", "self signed"],
        "self-signed",
    );
}

#[test]
fn tls_1_2_only_and_tls_1_3_only_servers_both_work() {
    for versions in [TlsVersions::Tls12Only, TlsVersions::Tls13Only] {
        let net = net_with_profile(
            NetOptions {
                tls_versions: versions,
                ..NetOptions::default()
            },
            two_jobs(),
        );
        let inst = Install::appliance();
        inst.setup(&net, FAST);
        run_ok(&inst, &[]);
        assert_eq!(stored_ids(&inst), id_set(&["1001", "1002"]), "{versions:?}");
    }
}

// ---------------------------------------------------------------------------
// Servers that speak only TLS 1.0 or 1.1
// ---------------------------------------------------------------------------

// rustls cannot serve TLS 1.0/1.1 at all, so these servers are emulated: a
// raw TCP server on 127.0.0.1 reads the agent's ClientHello and answers as
// an old server would: either with a `protocol_version` alert in a TLS 1.0
// record (what OpenSSL sends when the client's versions and its own do not
// meet), or with a TLS 1.1 ServerHello. The agent must give up (exit 3),
// and its ClientHello must offer TLS 1.2 and 1.3 only.

/// `protocol_version` fatal alert, TLS 1.0 record: type 21, version 3.1,
/// length 2, level 2 (fatal), description 70.
const ALERT_PROTOCOL_VERSION: &[u8] = &[0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 0x46];

/// A TLS 1.1 ServerHello (record version 3.2, server_version 3.2,
/// TLS_RSA_WITH_AES_128_CBC_SHA, no extensions).
fn server_hello_tls11() -> Vec<u8> {
    let mut body = vec![0x03, 0x02];
    body.extend_from_slice(&[0x5a; 32]); // random
    body.push(0); // no session id
    body.extend_from_slice(&[0x00, 0x2f]); // cipher suite
    body.push(0); // null compression
    let mut hs = vec![0x02, 0, 0, body.len() as u8];
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x02, 0, hs.len() as u8];
    rec.extend_from_slice(&hs);
    rec
}

/// A one-connection raw TCP server on 127.0.0.1: reads one TLS record (the
/// ClientHello), writes `answer`, reads until the client closes, and returns
/// the ClientHello record (None if no client came within 30 s).
fn old_tls_server(answer: Vec<u8>) -> (u16, JoinHandle<Option<Vec<u8>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let handle = std::thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(30);
        let mut sock = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < end => {
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => return None,
            }
        };
        sock.set_nonblocking(false).ok()?;
        sock.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        let mut head = [0u8; 5];
        sock.read_exact(&mut head).ok()?;
        let len = usize::from(u16::from_be_bytes([head[3], head[4]]));
        let mut hello = head.to_vec();
        hello.resize(5 + len, 0);
        sock.read_exact(&mut hello[5..]).ok()?;
        sock.write_all(&answer).ok()?;
        let mut sink = [0u8; 1024];
        while matches!(sock.read(&mut sink), Ok(n) if n > 0) {}
        Some(hello)
    });
    (port, handle)
}

/// (legacy_version, supported_versions) of a ClientHello record.
fn offered_versions(rec: &[u8]) -> (u16, Vec<u16>) {
    let u16_at = |b: &[u8], i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
    assert_eq!(rec[0], 0x16, "a handshake record");
    let hs = &rec[5..];
    assert_eq!(hs[0], 1, "a ClientHello");
    let body = &hs[4..];
    let legacy = u16_at(body, 0);
    let mut i = 2 + 32;
    i += 1 + usize::from(body[i]); // session id
    i += 2 + usize::from(u16_at(body, i)); // cipher suites
    i += 1 + usize::from(body[i]); // compression methods
    let end = i + 2 + usize::from(u16_at(body, i));
    i += 2;
    let mut supported = Vec::new();
    while i + 4 <= end {
        let (ty, len) = (u16_at(body, i), usize::from(u16_at(body, i + 2)));
        let data = &body[i + 4..i + 4 + len];
        if ty == 0x002b {
            supported = data[1..].chunks(2).map(|v| u16_at(v, 0)).collect();
        }
        i += 4 + len;
    }
    (legacy, supported)
}

fn old_server_is_refused(answer: Vec<u8>, what: &str) -> String {
    let (inst, net) = good_install(NetOptions::default(), "");
    serve_another_profile(&net);
    let (port, server) = old_tls_server(answer);
    inst.setup(
        &net,
        &format!("{FAST}url = https://127.0.0.1:{port}/cncop\n"),
    );
    let line = failing_run(&inst, 3, what);
    let hello = server
        .join()
        .expect("the raw server thread")
        .unwrap_or_else(|| panic!("{what}: the agent never sent a ClientHello"));
    let (legacy, supported) = offered_versions(&hello);
    assert_eq!(
        legacy, 0x0303,
        "{what}: ClientHello legacy_version is TLS 1.2"
    );
    assert!(
        !supported.is_empty() && supported.iter().all(|v| [0x0303, 0x0304].contains(v)),
        "{what}: the agent offers TLS 1.2 and 1.3 only: {supported:04x?}"
    );
    assert_says(&line, &["tls"], what);
    line
}

#[test]
fn a_server_answering_with_a_protocol_version_alert_is_refused() {
    let line = old_server_is_refused(ALERT_PROTOCOL_VERSION.to_vec(), "TLS 1.0-only server");
    assert_says(&line, &["protocolversion", "protocol version"], "alert");
}

#[test]
fn a_server_answering_with_tls_1_1_is_refused() {
    let line = old_server_is_refused(server_hello_tls11(), "TLS 1.1 ServerHello");
    assert_says(&line, &["tls12or13", "version"], "TLS 1.1");
}

// ---------------------------------------------------------------------------
// Certificates not yet valid, and a device clock that is wrong
// ---------------------------------------------------------------------------

/// A CA of the test's own (PEM) and a server leaf it signed for localhost
/// and 127.0.0.1, valid from `from` to `until` (y, m, d).
fn own_ca_and_leaf(from: (i32, u8, u8), until: (i32, u8, u8)) -> (String, Leaf) {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
        KeyPair, KeyUsagePurpose,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "cncop clock test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().unwrap();
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(ca, ca_key);

    let mut p =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, "localhost");
    p.is_ca = IsCa::ExplicitNoCa;
    p.use_authority_key_identifier_extension = true;
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.not_before = rcgen::date_time_ymd(from.0, from.1, from.2);
    p.not_after = rcgen::date_time_ymd(until.0, until.1, until.2);
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &issuer).unwrap();
    let leaf = Leaf {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        cert_der: cert.der().to_vec(),
        key_der: key.serialize_der(),
    };
    (ca_pem, leaf)
}

/// A network presenting `leaf` alone.
fn net_with_leaf(leaf: Leaf, profile: Vec<u8>) -> TestNetwork {
    net_with_profile(
        NetOptions {
            server_cert: ServerCert::Custom(leaf),
            ..NetOptions::default()
        },
        profile,
    )
}

/// `[network]` for `net` trusting `Config/own-ca.pem` (written from `ca_pem`).
fn own_ca_ini(inst: &Install, net: &TestNetwork, ca_pem: &str) -> String {
    std::fs::write(inst.path("Config/own-ca.pem"), ca_pem).unwrap();
    format!("{FAST}url = {}\nca_file = Config/own-ca.pem\n", net.url())
}

#[test]
fn a_certificate_valid_only_in_the_future_is_refused_without_blaming_a_right_clock() {
    let today = civil_date(SystemTime::now());
    let (ca_pem, good_leaf) = own_ca_and_leaf((today.0 - 1, 1, 1), (today.0 + 1, 12, 31));
    let good = net_with_leaf(good_leaf, two_jobs());
    let inst = Install::appliance();
    let ini = own_ca_ini(&inst, &good, &ca_pem);
    inst.setup(&good, &ini);
    run_ok(&inst, &[]);

    // A leaf valid from 2090 (from a CA the INI then trusts): this device's
    // clock is right (after the agent's build time), so the certificate is
    // what is wrong.
    let (ca_pem_future, future_leaf) = own_ca_and_leaf((2090, 1, 1), (2091, 1, 1));
    let future = net_with_leaf(future_leaf, profile_xml(DEVICE_ID, 50));
    let ini = own_ca_ini(&inst, &future, &ca_pem_future);
    inst.setup(&future, &ini);
    let line = failing_run(&inst, 3, "a certificate valid from 2090");
    assert_says(
        &line,
        &["not valid", "notvalidyet", "not yet valid"],
        "2090",
    );
    assert!(
        !line.contains("clock is wrong"),
        "the clock is after the build time, so it is not blamed: {line}"
    );
    assert!(future.requests().is_empty(), "no request after the refusal");
}

/// `faketime` works here: a faked date reaches a child process.
fn faketime_works(date: &str) -> bool {
    Command::new("faketime")
        .args([date, "date", "+%Y"])
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "2021")
}

#[test]
#[ignore = "needs libfaketime (Debian package `faketime`): CI installs it and runs the ignored tests"]
fn a_device_clock_before_the_build_time_is_named_as_the_cause() {
    // The agent's wrong-clock hint is for a SYSTEM clock before the binary's
    // build time, which only a faked clock can show: libfaketime (Debian
    // package `faketime`) makes the agent's process see 2021-01-01.
    const FAKE: &str = "2021-01-01 00:00:00";
    assert!(
        faketime_works(FAKE),
        "`faketime` must be installed and work for this test (apt-get install faketime)"
    );
    let build: u64 = env!("CNCOP_BUILD_UNIX").parse().unwrap();
    assert!(
        build > 1_609_459_200,
        "the agent was built after 2021-01-01 (build time {build})"
    );
    let today = civil_date(SystemTime::now());
    // Valid from the start of this year: fine for the real clock, "not yet
    // valid" for a clock in 2021.
    let (ca_pem, leaf) = own_ca_and_leaf((today.0, 1, 1), (today.0 + 1, 12, 31));
    let net = net_with_leaf(leaf, two_jobs());
    let inst = Install::appliance();
    let ini = own_ca_ini(&inst, &net, &ca_pem);
    inst.setup(&net, &ini);
    run_ok(&inst, &[]);
    serve_another_profile(&net);

    age_store(&inst);
    let before = snap(&inst);
    let mut cmd = agent_command_via(&["faketime", FAKE]);
    cmd.env("CNCOP_HOME", inst.root())
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    let o = exec(cmd, RUN_LIMIT);
    assert_exit(&o, 3, "a run whose clock says 2021");
    assert_stdout_empty(&o, "wrong clock");
    assert_store_untouched(&before, &inst, "wrong clock");
    let lines = err_lines(&o);
    assert_eq!(lines.len(), 1, "one line on stderr\n{}", show(&o));
    eprintln!("wrong clock: {}", lines[0]);
    assert!(
        lines[0].contains("clock is wrong") && lines[0].contains("2021-01-01"),
        "says the device clock (2021-01-01) is wrong: {}",
        lines[0]
    );
    assert_eq!(stored_ids(&inst), id_set(&["1001", "1002"]));
}

// ---------------------------------------------------------------------------
// Client certificates
// ---------------------------------------------------------------------------

#[test]
fn an_unusable_client_certificate_or_key_exits_2_naming_the_key() {
    let (inst, net) = good_install(NetOptions::default(), "");
    serve_another_profile(&net);
    let leaf = net.pki().client_leaf(DEVICE_ID).unwrap();
    let (cert, key) = leaf.write(&inst.path("Config"), "device").unwrap();
    let cert = cert.file_name().unwrap().to_string_lossy().into_owned();
    let key = key.file_name().unwrap().to_string_lossy().into_owned();
    let cases = [
        (
            "missing certificate file",
            "Config/nothere.pem".to_string(),
            format!("Config/{key}"),
            "client_cert",
            "nothere.pem",
        ),
        (
            "missing key file",
            format!("Config/{cert}"),
            "Config/nothere.key".to_string(),
            "client_key",
            "nothere.key",
        ),
        (
            "key file without a key",
            format!("Config/{cert}"),
            format!("Config/{cert}"),
            "client_key",
            "no private key",
        ),
        (
            "certificate file without a certificate",
            format!("Config/{key}"),
            format!("Config/{key}"),
            "client_cert",
            "no certificate",
        ),
    ];
    let requests = net.requests().len();
    for (what, cert, key, names, says) in cases {
        inst.setup(
            &net,
            &format!("{FAST}client_cert = {cert}\nclient_key = {key}\n"),
        );
        let line = failing_run(&inst, 2, what);
        assert!(
            line.contains(&format!("[network] {names}")),
            "{what}: names [network] {names}: {line}"
        );
        assert!(line.contains(says), "{what}: says {says:?}: {line}");
    }
    assert_eq!(
        net.requests().len(),
        requests,
        "a configuration error contacts no one"
    );
}

#[test]
fn a_network_requiring_a_client_certificate() {
    let net = net_with_profile(
        NetOptions {
            require_client_cert: true,
            ..NetOptions::default()
        },
        two_jobs(),
    );
    let inst = Install::appliance();
    let leaf = net.pki().client_leaf(DEVICE_ID).unwrap();
    leaf.write(&inst.path("Config"), "device").unwrap();
    let with_cert =
        format!("{FAST}client_cert = Config/device.pem\nclient_key = Config/device.key\n");
    inst.setup(&net, &with_cert);
    run_ok(&inst, &[]);
    assert_eq!(stored_ids(&inst), id_set(&["1001", "1002"]));
    let reqs = net.requests();
    assert_eq!(reqs.len(), 1);
    assert!(reqs[0].client_cert, "the certificate was presented");
    serve_another_profile(&net);

    // Without a certificate.
    inst.setup(&net, &format!("{FAST}-client_cert\n-client_key\n"));
    let line = failing_run(&inst, 3, "no client certificate");
    assert_says(&line, &["tls"], "no client certificate");
    assert_says(&line, &["certificate"], "no client certificate");

    // With a certificate from another CA.
    let other = net.pki().client_leaf_other_ca(DEVICE_ID).unwrap();
    other.write(&inst.path("Config"), "other").unwrap();
    inst.setup(
        &net,
        &format!("{FAST}client_cert = Config/other.pem\nclient_key = Config/other.key\n"),
    );
    let line = failing_run(&inst, 3, "a client certificate from another CA");
    assert_says(&line, &["tls"], "client certificate from another CA");
    assert_eq!(
        net.requests().len(),
        1,
        "no HTTP request without an accepted client certificate"
    );
}

// ---------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------

/// `base` (a generated profile) with one more job before `</jobs>`.
fn with_extra_job(base: &[u8], job: &str) -> Vec<u8> {
    let text = String::from_utf8(base.to_vec()).unwrap();
    let at = text.find("</jobs>").expect("</jobs>");
    format!("{}{job}\n{}", &text[..at], &text[at..]).into_bytes()
}

#[test]
fn failed_runs_leak_no_secrets() {
    // A profile full of credentials (genprofile's passwords look like
    // `pw<&>123`), then -d runs that fail in ways whose messages could quote
    // a password: rejected credentials (an undefined entity, a character
    // reference to NUL, a raw "<", a password over the limit), and a TLS
    // refusal after the device key was loaded; then --list and --list --json.
    let profile = profile_xml(DEVICE_ID, 20);
    let passwords = attr_values(&profile, "password");
    assert!(
        !passwords.is_empty() && passwords.iter().all(|p| p.contains("<&>")),
        "genprofile gave credentials: {passwords:?}"
    );
    let net = net_with_profile(NetOptions::default(), profile.clone());
    let inst = Install::appliance();
    inst.setup(&net, FAST);
    let mut outputs: Vec<(String, Output)> = Vec::new();
    let o = inst.run(&["-d"]);
    assert_exit(&o, 0, "-d good run");
    outputs.push(("-d good run".into(), o));

    let long = format!("LONG-SECRET-{}", "x".repeat(300));
    let bad_passwords = [
        (
            "an undefined entity",
            "UNDEF-SECRET-HEAD&nosuchentity;UNDEF-SECRET-TAIL",
        ),
        ("a reference to NUL", "NUL-SECRET-HEAD&#0;NUL-SECRET-TAIL"),
        ("a raw <", "LT-SECRET-HEAD<LT-SECRET-TAIL"),
        ("over the length limit", long.as_str()),
    ];
    for (i, (what, pw)) in bad_passwords.iter().enumerate() {
        let job = format!(
            "<job id=\"900{i}\" name=\"Bad {i}\" type=\"MSSQL\"><target host=\"127.0.0.1\" port=\"1433\"/>\
             <credential user=\"backup\" password=\"{pw}\"/></job>"
        );
        let bad = with_extra_job(&profile, &job);
        net.set_profile(DEVICE_ID, bad.clone(), Some(etag_for(&bad)));
        age_store(&inst);
        let before = snap(&inst);
        let o = inst.run(&["-d"]);
        assert_exit(&o, 5, &format!("a password with {what}"));
        assert_store_untouched(&before, &inst, what);
        assert!(
            stderr_of(&o).contains("profile rejected"),
            "{what}: the rejection is reported\n{}",
            show(&o)
        );
        eprintln!("password with {what}: {}", stderr_of(&o).trim());
        outputs.push((format!("-d run, password with {what}"), o));
    }

    let other = net_with_profile(
        NetOptions {
            pki: Some(net.pki().clone()),
            server_cert: ServerCert::OtherCa,
            ..NetOptions::default()
        },
        profile.clone(),
    );
    inst.setup(&other, FAST);
    let o = inst.run(&["-d"]);
    assert_exit(&o, 3, "-d run refused by TLS");
    outputs.push(("-d run refused by TLS".into(), o));
    outputs.push(("--list".into(), inst.run(&["--list"])));
    outputs.push(("--list --json".into(), inst.run(&["--list", "--json"])));
    for (what, o) in &outputs[outputs.len() - 2..] {
        assert_exit(o, 0, what);
    }

    let mut secrets: Vec<(String, String)> = vec![
        ("the device key".into(), DEVICE_KEY.into()),
        (
            "the Basic credentials".into(),
            base64_encode(format!("{DEVICE_ID}:{DEVICE_KEY}").as_bytes()),
        ),
        ("part of a rejected password".into(), "nosuchentity".into()),
    ];
    for pw in &passwords {
        secrets.push(("a job password".into(), pw.clone()));
        secrets.push(("a job password (escaped)".into(), xml_escape(pw)));
    }
    for part in ["UNDEF-SECRET", "NUL-SECRET", "LT-SECRET", "LONG-SECRET"] {
        secrets.push(("part of a rejected password".into(), part.into()));
    }
    let mut places: Vec<(String, String)> = Vec::new();
    for (what, o) in &outputs {
        places.push((format!("stdout of {what}"), stdout_of(o)));
        places.push((format!("stderr of {what}"), stderr_of(o)));
    }
    let spool = files_under(&inst.path("Spool"));
    assert!(!spool.is_empty(), "-d wrote no log file");
    let mut log_text = String::new();
    for p in &spool {
        let text = String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned();
        log_text.push_str(&text);
        places.push((p.display().to_string(), text));
    }
    assert!(
        log_text.contains("profile rejected") && log_text.contains("TLS"),
        "the -d log holds the failures it must not leak from:\n{log_text}"
    );
    for (where_, text) in &places {
        for (what, secret) in &secrets {
            assert!(!text.contains(secret.as_str()), "{where_} contains {what}");
        }
    }
}

#[test]
fn a_redirect_to_another_host_does_not_carry_the_device_key() {
    // 127.0.0.1 redirects to `localhost` (the same server under another
    // name): the agent may follow, but must not send its Basic credentials
    // to a host it was not configured for. The server then answers 401.
    let (inst, net) = good_install(NetOptions::default(), "");
    serve_another_profile(&net);
    let elsewhere = format!(
        "{}/v3/devices/{DEVICE_ID}/profile",
        net.url_with_host("localhost")
    );
    net.push_fault(
        "/profile",
        Fault::Redirect {
            location: elsewhere,
            code: 302,
        },
    );
    let line = failing_run(&inst, 4, "a redirect to another host, answered 401");
    let followed: Vec<Recorded> = net
        .requests()
        .into_iter()
        .skip(2)
        .filter(|r| r.header("host").is_some_and(|h| h.starts_with("localhost")))
        .collect();
    assert_eq!(followed.len(), 1, "the redirect was followed once");
    assert_eq!(
        followed[0].header("authorization"),
        None,
        "the redirect to localhost must not carry the device's credentials"
    );
    assert_eq!(followed[0].status, 401);
    // The key is right: the message must not send the user to check it.
    assert!(
        line.contains("redirected") && line.contains("localhost"),
        "says the refusal came from the redirect's target: {line}"
    );
    assert_eq!(stored_ids(&inst), id_set(&["1001", "1002"]));
}

#[test]
fn store_lock_and_log_files_are_private_even_with_umask_000() {
    let (net, inst) = two_jobs_on_appliance(FAST);
    let run_umask_000 = |args: &[&str]| {
        let mut cmd = agent_command_via(&["/bin/sh", "-c", "umask 000 && exec \"$0\" \"$@\""]);
        cmd.args(args).env("CNCOP_HOME", inst.root());
        let o = exec(cmd, RUN_LIMIT);
        assert_exit(&o, 0, &format!("umask 000, {args:?}"));
        o
    };
    run_umask_000(&["-d"]);
    // A changed profile writes a new store; --recreate writes it again.
    serve_another_profile(&net);
    run_umask_000(&["-d"]);
    assert_eq!(stored_ids(&inst).len(), 50, "the new profile is stored");
    let check = |when: &str| {
        assert_eq!(
            mode_of(&inst.db_path()),
            0o600,
            "{when}: Config/backupjobs.db is mode 0600"
        );
        let lock = inst.path("Config/cncopgetprofile.lock");
        assert_eq!(mode_of(&lock), 0o600, "{when}: the lock file is mode 0600");
        let logs = inst.log_files();
        assert!(!logs.is_empty(), "{when}: -d wrote a log");
        for log in logs {
            let mode = mode_of(&log);
            assert_eq!(
                mode & 0o007,
                0,
                "{when}: {} is world-accessible (mode {mode:o})",
                log.display()
            );
        }
        for f in std::fs::read_dir(inst.path("Config")).unwrap().flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.starts_with("backupjobs") {
                let mode = mode_of(&f.path());
                assert_eq!(mode & 0o077, 0, "{when}: Config/{name} is mode {mode:o}");
            }
        }
    };
    check("after an update");
    run_umask_000(&["--recreate"]);
    check("after --recreate");
}

#[test]
fn the_update_notice_goes_only_to_the_configured_updater() {
    let net = net_with_profile(NetOptions::default(), two_jobs());
    let updater = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = updater.local_addr().unwrap().port();
    // Same port on another loopback address, another port on the same
    // address, and the default updater port if it is free.
    let mut bystanders = vec![
        UdpSocket::bind(("127.0.0.2", port)).expect("bind 127.0.0.2"),
        UdpSocket::bind("127.0.0.1:0").unwrap(),
    ];
    if let Ok(s) = UdpSocket::bind("127.0.0.1:9998") {
        bystanders.push(s);
    }
    let inst = Install::appliance();
    inst.setup(
        &net,
        &format!(
            "{FAST}[version]\nautoupdate = On\ninstalled = 3.4.0\n\
             updater_host = 127.0.0.1\nupdater_port = {port}\n"
        ),
    );
    signed_release(&net, &inst, "9.9.9");
    run_ok(&inst, &[]);

    let (datagram, _) = recv_datagram(&updater, Duration::from_secs(5))
        .expect("the configured updater gets the notice");
    let got = String::from_utf8_lossy(&datagram).into_owned();
    assert!(got.starts_with("CCS3UPDATE version=9.9.9 "), "{got:?}");
    assert!(!got.contains(DEVICE_KEY), "the notice holds no secret");
    for s in &bystanders {
        let addr = s.local_addr().unwrap();
        if let Some((d, _)) = recv_datagram(s, Duration::from_millis(300)) {
            panic!("{addr} got a datagram: {:?}", String::from_utf8_lossy(&d));
        }
    }
}
