//! Tests of the local cncop network itself (tests/support/src/net.rs), with a
//! raw rustls client, so the agent's end-to-end tests can trust it.

use std::time::{Duration, Instant};
use support::*;

fn auth() -> String {
    basic_auth(DEVICE_ID, DEVICE_KEY)
}

fn get_profile(c: &mut RawClient, extra: &[(&str, &str)]) -> RawResponse {
    let auth = auth();
    let mut headers = vec![
        ("Authorization", auth.as_str()),
        ("Accept", "application/xml"),
    ];
    headers.extend_from_slice(extra);
    c.request("GET", &profile_path(DEVICE_ID), &headers, b"")
        .expect("profile request")
}

fn small() -> Vec<u8> {
    small_profile(DEVICE_ID, &[("1001", "CCS"), ("1002", "MSSQL")])
}

#[test]
fn base64_roundtrip() {
    for s in [
        "",
        "a",
        "ab",
        "abc",
        "abcd",
        "NAS-00042:k3y",
        "\u{e9}\u{5199}:x",
    ] {
        let enc = base64_encode(s.as_bytes());
        assert_eq!(base64_decode(&enc).as_deref(), Some(s.as_bytes()), "{s:?}");
    }
    assert_eq!(
        base64_encode(b"NAS-00042:secret"),
        "TkFTLTAwMDQyOnNlY3JldA=="
    );
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    assert_eq!(
        http_date(std::time::UNIX_EPOCH + Duration::from_secs(784_111_777)),
        "Sun, 06 Nov 1994 08:49:37 GMT"
    );
}

#[test]
fn url_is_loopback_https_with_base_path() {
    let net = standard_net(NetOptions::default());
    assert_eq!(net.url(), format!("https://127.0.0.1:{}/cncop", net.port()));
    assert!(net.addr().ip().is_loopback());
}

#[test]
fn profile_200_with_etag_and_exact_body_then_304() {
    let body = small();
    let net = net_with_profile(NetOptions::default(), body.clone());
    let etag = net.etag(DEVICE_ID).unwrap();
    let mut c = RawClient::connect(&net).unwrap();
    let r = get_profile(&mut c, &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert_eq!(r.header("content-type"), Some("application/xml"));
    assert_eq!(r.body, body);
    assert!(!r.truncated);

    let r = get_profile(&mut c, &[("If-None-Match", &etag)]);
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag"), Some(etag.as_str()));

    let r = get_profile(&mut c, &[("If-None-Match", "\"something-else\"")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, body);

    let reqs = net.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[1].header("if-none-match"), Some(etag.as_str()));
    assert_eq!(reqs[0].header("accept"), Some("application/xml"));
    assert_eq!(reqs[0].header("Authorization"), Some(auth().as_str()));
    assert_eq!(net.statuses(), vec![200, 304, 200]);
    assert!(reqs.iter().all(|r| r.tls && r.is_profile()));
}

#[test]
fn auth_failures() {
    let net = net_with_profile(NetOptions::default(), small());
    let mut c = RawClient::connect(&net).unwrap();
    let path = profile_path(DEVICE_ID);

    let wrong = basic_auth(DEVICE_ID, "not-the-key");
    let r = c
        .request("GET", &path, &[("Authorization", &wrong)], b"")
        .unwrap();
    assert_eq!(r.status, 401);
    assert!(r.header("www-authenticate").unwrap().starts_with("Basic"));

    let r = c.request("GET", &path, &[], b"").unwrap();
    assert_eq!(r.status, 401, "no credentials");

    let other_user = basic_auth("NAS-99999", DEVICE_KEY);
    let r = c
        .request("GET", &path, &[("Authorization", &other_user)], b"")
        .unwrap();
    assert_eq!(r.status, 401, "credentials of another id");

    let unknown = basic_auth("NAS-99999", "x");
    let r = c
        .request(
            "GET",
            &profile_path("NAS-99999"),
            &[("Authorization", &unknown)],
            b"",
        )
        .unwrap();
    assert_eq!(r.status, 404);

    net.set_device_disabled(DEVICE_ID, true);
    let r = get_profile(&mut c, &[]);
    assert_eq!(r.status, 403);
    net.set_device_disabled(DEVICE_ID, false);
    assert_eq!(get_profile(&mut c, &[]).status, 200);

    let r = c.request("GET", "/cncop/v3/nothing", &[], b"").unwrap();
    assert_eq!(r.status, 404);
    let r = c.request("GET", "/elsewhere", &[], b"").unwrap();
    assert_eq!(r.status, 404);
}

#[test]
fn keep_alive_one_connection_number_per_connection() {
    let net = net_with_profile(NetOptions::default(), small());
    let mut c = RawClient::connect(&net).unwrap();
    assert_eq!(get_profile(&mut c, &[]).status, 200);
    assert_eq!(get_profile(&mut c, &[]).status, 200);
    let mut c2 = RawClient::connect(&net).unwrap();
    assert_eq!(get_profile(&mut c2, &[]).status, 200);
    let reqs = net.requests();
    assert_eq!(reqs.len(), 3);
    assert_eq!(reqs[0].conn, reqs[1].conn);
    assert_eq!((reqs[0].seq_on_conn, reqs[1].seq_on_conn), (1, 2));
    assert_ne!(reqs[0].conn, reqs[2].conn);
    assert_eq!(net.connections(), 2);
}

#[test]
fn connection_close_is_honoured() {
    let net = net_with_profile(NetOptions::default(), small());
    let mut c = RawClient::connect(&net).unwrap();
    let r = get_profile(&mut c, &[("Connection", "close")]);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    let err = c
        .request(
            "GET",
            &profile_path(DEVICE_ID),
            &[("Authorization", &auth())],
            b"",
        )
        .err();
    assert!(
        err.is_some(),
        "server kept the connection open after Connection: close"
    );
}

#[test]
fn scripted_503_with_retry_after_is_served_once() {
    let net = net_with_profile(NetOptions::default(), small());
    net.push_fault(
        "/profile",
        Fault::Status {
            code: 503,
            retry_after: Some("2".into()),
            body: b"busy".to_vec(),
        },
    );
    // A fault for another path is not consumed by a profile request.
    net.push_fault(
        "/firewall",
        Fault::Status {
            code: 500,
            retry_after: None,
            body: vec![],
        },
    );
    let mut c = RawClient::connect(&net).unwrap();
    let r = get_profile(&mut c, &[]);
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("2"));
    assert_eq!(r.body, b"busy");
    let r = get_profile(&mut c, &[]);
    assert_eq!(r.status, 200);
    assert_eq!(r.body, small());
    assert_eq!(net.pending_faults(), 1);
    let reqs = net.requests();
    assert_eq!(reqs[0].fault, Some("Status"));
    assert_eq!(reqs[1].fault, None);
}

#[test]
fn redirect_sends_location() {
    let net = net_with_profile(NetOptions::default(), small());
    let to = format!("{}/v3/devices/{DEVICE_ID}/profile-moved", net.url());
    net.push_fault(
        "/profile",
        Fault::Redirect {
            location: to.clone(),
            code: 302,
        },
    );
    let mut c = RawClient::connect(&net).unwrap();
    let r = get_profile(&mut c, &[]);
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some(to.as_str()));
    assert_eq!(get_profile(&mut c, &[]).status, 200);
}

#[test]
fn close_mid_body_truncates() {
    let body = profile_xml(DEVICE_ID, 50);
    let net = net_with_profile(NetOptions::default(), body.clone());
    net.push_fault("/profile", Fault::CloseMidBody { after_bytes: 1000 });
    let mut c = RawClient::connect(&net).unwrap();
    let r = get_profile(&mut c, &[]);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-length"),
        Some(body.len().to_string().as_str())
    );
    assert!(r.truncated);
    assert_eq!(r.body, body[..1000]);
}

#[test]
fn content_length_too_long_then_close() {
    let body = small();
    let net = net_with_profile(NetOptions::default(), body.clone());
    net.push_fault("/profile", Fault::ContentLengthTooLong { extra: 10 });
    let mut c = RawClient::connect(&net).unwrap();
    let r = get_profile(&mut c, &[]);
    assert_eq!(
        r.header("content-length"),
        Some((body.len() + 10).to_string().as_str())
    );
    assert!(r.truncated);
    assert_eq!(r.body, body);
}

#[test]
fn stall_and_drip_are_slow_but_complete() {
    let body = small();
    let net = net_with_profile(NetOptions::default(), body.clone());
    net.push_fault(
        "/profile",
        Fault::Stall {
            after_bytes: 100,
            for_: Duration::from_millis(400),
        },
    );
    let mut c = RawClient::connect(&net).unwrap();
    let t = Instant::now();
    let r = get_profile(&mut c, &[]);
    assert!(
        t.elapsed() >= Duration::from_millis(350),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(r.body, body);

    net.push_fault(
        "/profile",
        Fault::Drip {
            bytes_per_tick: body.len() / 4 + 1,
            tick: Duration::from_millis(100),
        },
    );
    let t = Instant::now();
    let r = get_profile(&mut c, &[]);
    assert!(
        t.elapsed() >= Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(r.body, body);
    // The connection is still usable.
    assert_eq!(get_profile(&mut c, &[]).status, 200);
}

#[test]
fn stall_blocks_a_client_with_a_short_timeout() {
    let net = net_with_profile(NetOptions::default(), small());
    net.push_fault(
        "/profile",
        Fault::Stall {
            after_bytes: 10,
            for_: Duration::from_secs(30),
        },
    );
    let mut c = RawClient::connect(&net).unwrap();
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let err = c
        .request(
            "GET",
            &profile_path(DEVICE_ID),
            &[("Authorization", &auth())],
            b"",
        )
        .expect_err("a stalled body must time the client out");
    assert!(matches!(
        err.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ));
    // Dropping the network must not wait for the 30 s stall.
    let t = Instant::now();
    drop(net);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

#[test]
fn raw_body_and_close_no_response() {
    let net = net_with_profile(NetOptions::default(), small());
    net.push_fault(
        "/profile",
        Fault::RawBody {
            status: 200,
            headers: vec![("Content-Type".into(), "application/xml".into())],
            body: b"<profile".to_vec(),
        },
    );
    net.push_fault("/profile", Fault::CloseNoResponse);
    let mut c = RawClient::connect(&net).unwrap();
    let r = get_profile(&mut c, &[]);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"<profile"[..]));
    assert!(
        c.request(
            "GET",
            &profile_path(DEVICE_ID),
            &[("Authorization", &auth())],
            b""
        )
        .is_err()
    );
    let mut c = RawClient::connect(&net).unwrap();
    assert_eq!(get_profile(&mut c, &[]).status, 200);
}

#[test]
fn gzip_is_valid_and_only_when_accepted() {
    let body = profile_xml(DEVICE_ID, 300); // several stored blocks
    assert!(body.len() > 70_000, "{}", body.len());
    let net = net_with_profile(NetOptions::default(), body.clone());
    let mut c = RawClient::connect(&net).unwrap();
    let r = get_profile(&mut c, &[("Accept-Encoding", "gzip")]);
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_ne!(r.body, body);
    // Decode with gzip(1) (Debian: essential), an implementation of its own.
    let dir = tempfile::tempdir().unwrap();
    let gz = dir.path().join("p.gz");
    std::fs::write(&gz, &r.body).unwrap();
    let out = std::process::Command::new("gzip")
        .arg("-dc")
        .arg(&gz)
        .output()
        .expect("run gzip -dc");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, body);

    let r = get_profile(&mut c, &[("Accept-Encoding", "gzip;q=0, identity")]);
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.body, body);
    net.set_gzip(false);
    let r = get_profile(&mut c, &[("Accept-Encoding", "gzip")]);
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.body, body);
}

#[test]
fn large_body_streams() {
    let body: Vec<u8> = (0..20_000_000u32).map(|i| (i % 251) as u8).collect();
    let net = net_with_profile(NetOptions::default(), body.clone());
    let mut c = RawClient::connect(&net).unwrap();
    let r = get_profile(&mut c, &[]);
    assert_eq!(r.body.len(), body.len());
    assert!(r.body == body);
}

#[test]
fn signed_metadata_and_firewall_routes() {
    let net = net_with_profile(NetOptions::default(), small());
    let mut c = RawClient::connect(&net).unwrap();
    let ts = "/cncop/v3/software/timestamp.xml";
    let r = c
        .request("GET", ts, &[("Authorization", &auth())], b"")
        .unwrap();
    assert_eq!(r.status, 404);
    let mut vendor = Authority::new();
    vendor.publish_release(
        &net,
        &[Build::new("x86_64-unknown-linux-musl", "3.5.0")],
        FAR,
    );
    let r = c.request("GET", ts, &[], b"").unwrap();
    assert_eq!(r.status, 200);
    let sigs = r.header_all(SIGNATURE_HEADER);
    assert_eq!(sigs.len(), 1, "{:?}", r.headers);
    assert!(sigs[0].starts_with(&format!("ed25519 {} ", vendor.roles.timestamp.keys[0].id)));
    let r = c
        .request("GET", "/cncop/v3/software/release/1.xml", &[], b"")
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(
        String::from_utf8_lossy(&r.body)
            .contains("platform=\"x86_64-unknown-linux-musl\" version=\"3.5.0\"")
    );
    let r = c
        .request("GET", "/cncop/v3/trust/root/2.xml", &[], b"")
        .unwrap();
    assert_eq!(r.status, 404);

    // Signed profile answers carry a manifest of the body they send.
    net.sign_profiles(vendor.profile_key());
    let r = get_profile(&mut c, &[("Accept-Encoding", "identity")]);
    let m = r.header(MANIFEST_HEADER).expect("a manifest").to_string();
    assert!(
        m.starts_with(&format!(
            "device={DEVICE_ID} version=1 size={} sha256={} ",
            small().len(),
            hex(&sha256(&small()))
        )),
        "{m}"
    );
    assert_eq!(r.header_all(SIGNATURE_HEADER).len(), 1);
    net.set_manifest_lie(ManifestLie {
        missing: true,
        ..ManifestLie::default()
    });
    let r = get_profile(&mut c, &[]);
    assert!(r.header(MANIFEST_HEADER).is_none());

    let fw = format!("/cncop/v3/devices/{DEVICE_ID}/firewall");
    let report = b"<firewall-report device=\"NAS-00042\"/>";
    let r = c
        .request(
            "POST",
            &fw,
            &[
                ("Authorization", &auth()),
                ("Content-Type", "application/xml"),
            ],
            report,
        )
        .unwrap();
    assert_eq!(r.status, 202);
    net.set_firewall_status(500);
    let r = c
        .request("POST", &fw, &[("Authorization", &auth())], report)
        .unwrap();
    assert_eq!(r.status, 500);
    assert_eq!(
        net.firewall_reports(),
        vec![report.to_vec(), report.to_vec()]
    );
    let r = c
        .request("GET", &fw, &[("Authorization", &auth())], b"")
        .unwrap();
    assert_eq!(r.status, 405);
}

#[test]
fn chunked_request_body_is_decoded() {
    let net = net_with_profile(NetOptions::default(), small());
    let mut c = RawClient::connect(&net).unwrap();
    let fw = format!("/cncop/v3/devices/{DEVICE_ID}/firewall");
    let auth = auth();
    c.send(
        "PUT", // send() adds no Content-Length for PUT without body
        &fw,
        &[("Authorization", &auth), ("Transfer-Encoding", "chunked")],
        b"",
    )
    .unwrap();
    c.send_raw(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        .unwrap();
    let r = c.read_response("PUT").unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(net.requests()[0].body, b"hello world");
}

#[test]
fn plain_http_mode() {
    let net = net_with_profile(
        NetOptions {
            plain_http: true,
            ..Default::default()
        },
        small(),
    );
    assert!(net.url().starts_with("http://127.0.0.1:"));
    let mut c = RawClient::connect(&net).unwrap();
    let r = get_profile(&mut c, &[]);
    assert_eq!((r.status, r.body), (200, small()));
    assert!(!net.requests()[0].tls);
}

#[test]
fn bad_server_certificates_are_refused_by_a_pinning_client() {
    for cert in [
        ServerCert::OtherCa,
        ServerCert::Expired,
        ServerCert::WrongHost,
        ServerCert::SelfSigned,
    ] {
        let label = format!("{cert:?}");
        let net = standard_net(NetOptions {
            server_cert: cert,
            ..Default::default()
        });
        let err = RawClient::connect(&net).err();
        assert!(err.is_some(), "{label}: handshake succeeded");
        // The server saw the failed handshake.
        let t = Instant::now();
        while net.tls_errors().is_empty() && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(net.tls_errors().len(), 1, "{label}");
        assert!(net.requests().is_empty());
    }
    // The good leaf is valid for both names.
    let net = standard_net(NetOptions::default());
    assert!(RawClient::connect_with(&net, None, "localhost").is_ok());
    assert!(RawClient::connect_with(&net, None, "127.0.0.1").is_ok());
    assert!(RawClient::connect_with(&net, None, "other.invalid").is_err());
}

#[test]
fn client_certificate_required() {
    let net = net_with_profile(
        NetOptions {
            require_client_cert: true,
            ..Default::default()
        },
        small(),
    );
    let good = net.pki().client_leaf(DEVICE_ID).unwrap();
    let mut c = RawClient::connect_with(&net, Some(&good), "127.0.0.1").unwrap();
    let r = get_profile(&mut c, &[]);
    assert_eq!(r.status, 200);
    assert!(net.requests()[0].client_cert);

    // Without a certificate (or with one of another CA) the server refuses;
    // with TLS 1.3 the client learns it on its first read.
    let bad = net.pki().client_leaf_other_ca(DEVICE_ID).unwrap();
    for leaf in [None, Some(&bad)] {
        let ok = RawClient::connect_with(&net, leaf, "127.0.0.1").and_then(|mut c| {
            c.request(
                "GET",
                &profile_path(DEVICE_ID),
                &[("Authorization", &auth())],
                b"",
            )
        });
        assert!(ok.is_err(), "{:?}", ok.map(|r| r.status));
    }
    assert_eq!(net.requests().len(), 1);
}

#[test]
fn pki_writes_pem_files() {
    let pki = Pki::generate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ca = pki.write_ca(dir.path()).unwrap();
    assert_eq!(ca, dir.path().join("ca.pem"));
    let pem = std::fs::read_to_string(&ca).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
    let (cert, key) = pki
        .client_leaf("NAS-00042")
        .unwrap()
        .write(dir.path(), "client")
        .unwrap();
    assert!(
        std::fs::read_to_string(cert)
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    assert!(
        std::fs::read_to_string(key)
            .unwrap()
            .contains("BEGIN PRIVATE KEY")
    );
    for leaf in [
        pki.leaf_other_ca().unwrap(),
        pki.leaf_expired().unwrap(),
        pki.leaf_wrong_host().unwrap(),
        pki.leaf_self_signed().unwrap(),
    ] {
        assert!(leaf.cert_pem.contains("BEGIN CERTIFICATE"));
    }
}

#[test]
fn drop_stops_the_network() {
    let net = net_with_profile(NetOptions::default(), small());
    let addr = net.addr();
    let c = RawClient::connect(&net).unwrap(); // an idle keep-alive connection
    let t = Instant::now();
    drop(net);
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(std::net::TcpStream::connect(addr).is_err());
    drop(c);
}

#[test]
fn install_and_ini() {
    let net = standard_net(NetOptions::default());
    let inst = Install::bare();
    for d in ["Config", "Spool/Logs", "bin"] {
        assert!(inst.path(d).is_dir(), "{d}");
    }
    let ini = inst.ini_for(
        &net,
        "[network]\nretries = 3\n-splay\n[reporter]\ncommand = bin/none\n",
    );
    assert!(inst.path("Config/ca.pem").is_file());
    assert!(ini.contains(&format!("url = {}\n", net.url())));
    assert!(ini.contains("retries = 3\n") && !ini.contains("retries = 1"));
    assert!(!ini.contains("splay"));
    assert!(ini.contains("[reporter]\ncommand = bin/none\n"));
    assert_eq!(ini.matches("[network]").count(), 1);
    inst.write_ini(&ini);
    assert_eq!(std::fs::read_to_string(inst.ini_path()).unwrap(), ini);
    assert!(inst.db_bytes().is_none());
    assert!(inst.log_files().is_empty());
}

#[test]
fn genprofile_makes_the_requested_jobs() {
    let p = String::from_utf8(profile_xml("NAS-00007", 12)).unwrap();
    assert!(p.contains("device=\"NAS-00007\""));
    assert_eq!(p.matches("<job ").count(), 12);
    assert_eq!(
        profile_xml("NAS-00007", 12),
        p.into_bytes(),
        "deterministic"
    );
    let s = String::from_utf8(small()).unwrap();
    assert_eq!(s.matches("<job ").count(), 2);
}

/// The generated profile has what the tests rely on: ids 1000.., every
/// type, escaped names, credentials, hooks, mails, disabled jobs, and only
/// loopback endpoints; another seed gives other content, the same ids.
#[test]
fn genprofile_writes_what_the_tests_rely_on() {
    let p = String::from_utf8(profile_xml_with(DEVICE_ID, 40, 7, "2026-01-02T03:04:05Z")).unwrap();
    assert!(p.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<profile schema=\"3\""));
    assert!(p.contains("generated=\"2026-01-02T03:04:05Z\""));
    let ids: Vec<String> = p
        .split("<job id=\"")
        .skip(1)
        .map(|t| t[..t.find('"').unwrap()].to_string())
        .collect();
    assert_eq!(ids, (1000..1040).map(|i| i.to_string()).collect::<Vec<_>>());
    for t in [
        "CCS", "CIFS", "FTP", "FTPS", "MSSQL", "SFTP", "RSYNC", "WIMG",
    ] {
        assert!(p.contains(&format!("type=\"{t}\"")), "type {t}");
    }
    assert_eq!(p.matches("enabled=\"no\"").count(), 3, "jobs 0, 17, 34");
    assert_eq!(p.matches("<pre>").count(), 8, "every 5th job");
    assert_eq!(p.matches("<email ").count(), 14, "every 3rd job");
    assert_eq!(
        p.matches("<credential ").count(),
        25,
        "CIFS FTP FTPS MSSQL SFTP"
    );
    assert!(
        p.contains("password=\"pw&lt;&amp;&gt;"),
        "passwords need escaping"
    );
    assert!(p.contains("&amp;&amp; sync</pre>"));
    // Nothing raw that needs escaping: every `&` starts an entity, no `<`
    // inside an attribute value.
    for (i, _) in p.match_indices('&') {
        let rest = &p[i..];
        assert!(
            ["&amp;", "&lt;", "&gt;", "&quot;"]
                .iter()
                .any(|e| rest.starts_with(e)),
            "raw & at {i}: {}",
            &rest[..rest.len().min(20)]
        );
    }
    let hosts: Vec<&str> = p
        .split("host=\"")
        .skip(1)
        .map(|t| &t[..t.find('"').unwrap()])
        .collect();
    assert_eq!(
        hosts.len(),
        41,
        "one target per job and one firewall endpoint"
    );
    assert!(
        hosts
            .iter()
            .all(|h| h.starts_with("127.0.1.") || h.starts_with("127.0.2.")),
        "loopback only: {hosts:?}"
    );
    assert!(p.contains("<endpoint host=\"127.0.1.3\" port=\"443\""));
    assert!(!p.is_ascii(), "non-ASCII names");

    let other =
        String::from_utf8(profile_xml_with(DEVICE_ID, 40, 8, "2026-01-02T03:04:05Z")).unwrap();
    assert_ne!(p, other, "the seed changes the content");
    assert_eq!(other.matches("<job id=\"10").count(), 40);
}
