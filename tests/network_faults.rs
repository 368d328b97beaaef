//! Resilience of `cncopgetprofile` against a misbehaving network (PROTOCOL
//! sections 1, 2 and 7): the real binary against the project's local cncop
//! network (real TLS on 127.0.0.1), one scripted fault per case.
//!
//! Every failing case first has a good run, then serves a different profile
//! (so a success would change the store) and applies the fault; it checks
//! what a user would: the documented exit code, the old store byte-identical
//! and still listed, and one clear line on stderr. The INI sets small
//! timeouts and `retries = 0` (or 1 where the retry is the point), so every
//! fault ends within seconds; [`Install::run`] bounds each run too. No test
//! asserts on how long anything took.

use std::time::{Duration, SystemTime};
use support::*;

/// Faults these tests apply, one entry per distinct case (the README quotes
/// "faults tried"); `faults_tried` prints the count.
const FAULTS: &[&str] = &[
    "connection refused (nothing listening)",
    "connection closed before any answer, then a good answer (retried)",
    "an answer that is not HTTP",
    "answer headers later than read_timeout",
    "connection closed mid-body, gzip body with Content-Length",
    "connection closed mid-body, identity body with Content-Length",
    "body stalls longer than read_timeout",
    "body dripped past [network] timeout",
    "Content-Length longer than the body, gzip",
    "Content-Length longer than the body, identity",
    "chunked body (no Content-Length) over max_profile_bytes",
    "gzip body inflating past max_profile_bytes (real deflate)",
    "redirect to plain http://",
    "redirect loop between two paths",
    "429 with Retry-After as an HTTP date",
    "503 with Retry-After as an HTTP date",
    "Retry-After: 3600 (seconds), too long",
    "Retry-After an HTTP date an hour away, too long",
    "Retry-After an HTTP date whose hour overflows (ignored: the backoff applies)",
];

#[test]
fn faults_tried() {
    eprintln!(
        "network faults tried: {} ({})",
        FAULTS.len(),
        FAULTS.join("; ")
    );
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The profile served after the good run: 50 generated jobs (large enough
/// that a body fault hits its middle).
fn second_profile() -> Vec<u8> {
    profile_xml(DEVICE_ID, 50)
}

/// A network serving two jobs, an install set up for it with `FAST` plus
/// `extra_ini`, after one good run; then the network serves
/// [`second_profile`], so that only a failure leaves the store as it is.
fn after_a_good_run(net_opts: NetOptions, extra_ini: &str) -> (Install, TestNetwork) {
    let net = net_with_profile(net_opts, two_jobs());
    let inst = Install::appliance();
    inst.setup(&net, &format!("{FAST}{extra_ini}"));
    run_ok(&inst, &[]);
    assert_eq!(stored_ids(&inst), id_set(&["1001", "1002"]));
    let v2 = second_profile();
    net.set_profile(DEVICE_ID, v2.clone(), Some(etag_for(&v2)));
    (inst, net)
}

/// Statuses the network answered to profile requests, from the `skip`th on.
fn profile_statuses(net: &TestNetwork, skip: usize) -> Vec<u16> {
    net.profile_requests()
        .iter()
        .skip(skip)
        .map(|r| r.status)
        .collect()
}

/// Path of the standard device's profile on `net` (full URL).
fn profile_url(net: &TestNetwork) -> String {
    format!("{}/v3/devices/{DEVICE_ID}/profile", net.url())
}

// ---------------------------------------------------------------------------
// Connections
// ---------------------------------------------------------------------------

#[test]
fn connection_refused_exits_3() {
    let (inst, net) = after_a_good_run(NetOptions::default(), "");
    let port = dead_port();
    inst.setup(
        &net,
        &format!("{FAST}url = https://127.0.0.1:{port}/cncop\n"),
    );
    let line = failing_run(&inst, 3, "nothing listening");
    assert_says(&line, &["connection refused"], "nothing listening");
    assert!(
        line.contains(&port.to_string()),
        "names the address it tried: {line}"
    );
}

#[test]
fn a_connection_closed_before_the_answer_is_retried() {
    let (inst, net) = after_a_good_run(NetOptions::default(), "[network]\nretries = 1\n");
    net.push_fault("/profile", Fault::CloseNoResponse);
    let o = inst.run(&[]);
    assert_exit(&o, 0, "one dropped connection, then the profile");
    assert_stdout_empty(&o, "retried run");
    assert_eq!(
        profile_statuses(&net, 1),
        [0, 200],
        "the dropped request, then one retry\n{}",
        show(&o)
    );
    assert_eq!(
        stored_ids(&inst).len(),
        50,
        "the retried download is stored"
    );
    let err = stderr_of(&o).to_ascii_lowercase();
    assert!(
        err.contains("retry"),
        "the retry is announced as a warning\n{}",
        show(&o)
    );
}

#[test]
fn an_answer_that_is_not_http_exits_3() {
    let (inst, net) = after_a_good_run(NetOptions::default(), "");
    net.push_fault(
        "/profile",
        Fault::RawBytes {
            bytes: b"SSH-2.0-OpenSSH_9.2\r\nthis is not HTTP\r\n\r\n".to_vec(),
            close: true,
        },
    );
    let line = failing_run(&inst, 3, "a non-HTTP answer");
    assert!(line.contains("/profile"), "names the request: {line}");
    assert_says(&line, &["protocol", "parse"], "a non-HTTP answer");
}

#[test]
fn answer_headers_later_than_read_timeout_exit_3_timed_out() {
    let (inst, net) = after_a_good_run(NetOptions::default(), "[network]\nread_timeout = 1\n");
    net.push_fault(
        "/profile",
        Fault::Delay {
            for_: Duration::from_secs(30),
        },
    );
    let line = failing_run(&inst, 3, "headers delayed past read_timeout");
    assert_says(&line, &["timed out"], "headers delayed");
}

// ---------------------------------------------------------------------------
// Bodies cut short, stalled, dripped, lying about their length
// ---------------------------------------------------------------------------

// A body cut short is a network failure (exit 3) when the transport knows it
// was cut, i.e. fewer bytes arrived than Content-Length announced: the
// agent's ProfileBody turns the transport's error into `Error::Network`
// before the XML parser could call the document "cut short" (exit 5, which
// is for a body that arrived whole but is not a complete document; see
// agent_e2e `rejects_a_profile_cut_short`).

fn closed_mid_body(gzip: bool) {
    let (inst, net) = after_a_good_run(NetOptions::default(), "");
    net.set_gzip(gzip);
    let half = second_profile().len() as u64 / 2;
    net.push_fault("/profile", Fault::CloseMidBody { after_bytes: half });
    let what = format!("connection closed mid-body (gzip {gzip})");
    let line = failing_run(&inst, 3, &what);
    assert_eq!(
        net.profile_requests().last().unwrap().fault,
        Some("CloseMidBody")
    );
    assert_says(
        &line,
        &["ended before", "closed", "cut short", "incomplete"],
        &what,
    );
}

#[test]
fn connection_closed_mid_body_gzip_exits_3() {
    closed_mid_body(true);
}

#[test]
fn connection_closed_mid_body_identity_exits_3() {
    closed_mid_body(false);
}

#[test]
fn a_body_that_stops_arriving_exits_3_timed_out() {
    let (inst, net) = after_a_good_run(NetOptions::default(), "[network]\nread_timeout = 1\n");
    net.push_fault(
        "/profile",
        Fault::Stall {
            after_bytes: 1000,
            for_: Duration::from_secs(60),
        },
    );
    let line = failing_run(&inst, 3, "a stalled body");
    assert_says(&line, &["timed out"], "a stalled body");
}

#[test]
fn a_body_dripped_past_the_total_timeout_exits_3() {
    // Each piece comes well within read_timeout = 2; only the total limit
    // ([network] timeout = 2) can end this download (it would take minutes).
    let (inst, net) = after_a_good_run(NetOptions::default(), "[network]\ntimeout = 2\n");
    assert!(second_profile().len() > 20_000);
    net.push_fault(
        "/profile",
        Fault::Drip {
            bytes_per_tick: 64,
            tick: Duration::from_millis(100),
        },
    );
    let line = failing_run(&inst, 3, "a dripped body");
    assert_says(&line, &["timed out", "timeout"], "a dripped body");
}

fn content_length_too_long(gzip: bool) {
    let (inst, net) = after_a_good_run(NetOptions::default(), "");
    net.set_gzip(gzip);
    net.push_fault("/profile", Fault::ContentLengthTooLong { extra: 100 });
    let what = format!("Content-Length 100 bytes longer than the body (gzip {gzip})");
    let line = failing_run(&inst, 3, &what);
    assert_says(
        &line,
        &["ended before", "closed", "cut short", "incomplete"],
        &what,
    );
}

#[test]
fn a_content_length_longer_than_the_gzip_body_exits_3() {
    content_length_too_long(true);
}

#[test]
fn a_content_length_longer_than_the_identity_body_exits_3() {
    content_length_too_long(false);
}

// ---------------------------------------------------------------------------
// max_profile_bytes without a Content-Length, and after decoding
// ---------------------------------------------------------------------------

/// HTTP/1.1 chunked transfer coding of `body`, in 1000-byte chunks.
fn chunked(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for c in body.chunks(1000) {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

#[test]
fn a_chunked_body_without_content_length_over_the_limit_exits_5() {
    // agent_e2e checks bodies with a Content-Length over the limit; here the
    // length is unknown until the body has been read, so only the limit on
    // the stream itself can stop it.
    let (inst, net) = after_a_good_run(
        NetOptions::default(),
        "[network]\nmax_profile_bytes = 4096\n",
    );
    let big = second_profile();
    assert!(big.len() > 4 * 4096 && two_jobs().len() < 4096);
    net.push_fault(
        "/profile",
        Fault::RawBody {
            status: 200,
            headers: vec![
                ("Content-Type".into(), "application/xml".into()),
                ("Transfer-Encoding".into(), "chunked".into()),
                ("ETag".into(), etag_for(&big)),
            ],
            body: chunked(&big),
        },
    );
    let line = failing_run(&inst, 5, "a chunked body over max_profile_bytes");
    assert!(
        line.contains("max_profile_bytes"),
        "names the setting: {line}"
    );
}

/// A real compressed gzip member of `head`, then `unit` repeated `times`,
/// then `tail` (flate2, as any server would make it): the repeats shrink
/// hundreds of times. Returns (gzip bytes, decoded bytes).
fn gzip_repeats(head: &[u8], unit: &[u8], times: usize, tail: &[u8]) -> (Vec<u8>, Vec<u8>) {
    use std::io::Write;
    let mut plain = Vec::with_capacity(head.len() + unit.len() * times + tail.len());
    plain.extend_from_slice(head);
    for _ in 0..times {
        plain.extend_from_slice(unit);
    }
    plain.extend_from_slice(tail);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&plain).expect("gzip into memory");
    (gz.finish().expect("gzip into memory"), plain)
}

/// A valid one-job profile padded with `comments` XML comments (17 bytes
/// each) inside `<jobs>`, gzip-compressed for real.
fn padded_profile_gzip(comments: usize) -> (Vec<u8>, Vec<u8>) {
    let doc = String::from_utf8(small_profile(DEVICE_ID, &[("3001", "CCS")])).unwrap();
    let (head, tail) = doc.split_at(doc.find("</jobs>").expect("a </jobs>"));
    gzip_repeats(
        head.as_bytes(),
        b"<!-- padding -->\n",
        comments,
        tail.as_bytes(),
    )
}

fn gzip_fault(gz: Vec<u8>, decoded: &[u8]) -> Fault {
    Fault::RawBody {
        status: 200,
        headers: vec![
            ("Content-Type".into(), "application/xml".into()),
            ("Content-Encoding".into(), "gzip".into()),
            ("ETag".into(), etag_for(decoded)),
        ],
        body: gz,
    }
}

#[test]
fn a_gzip_body_that_inflates_past_the_limit_exits_5() {
    const MIB: usize = 1024 * 1024;
    let (inst, net) = after_a_good_run(
        NetOptions::default(),
        &format!("[network]\nmax_profile_bytes = {}\n", 4 * MIB),
    );

    // Control: the hand-made compressed profile is valid and, at 1.5 MB
    // decoded (under the 4 MiB limit), accepted. So the refusal below is the
    // limit's doing, not a broken stream.
    let (gz, plain) = padded_profile_gzip(3 * MIB / 2 / 17);
    assert!(gz.len() * 20 < plain.len(), "the stream really compresses");
    net.push_fault("/profile", gzip_fault(gz, &plain));
    let o = inst.run(&[]);
    assert_exit(&o, 0, "a compressed 1.5 MB profile under a 4 MiB limit");
    assert_eq!(stored_ids(&inst), id_set(&["3001"]));

    // 5 MB decoded from a few KB on the wire, limit 1 MiB: the wire size
    // is far under the limit, the decoded size is not.
    inst.setup(&net, &format!("{FAST}max_profile_bytes = {}\n", MIB));
    let (gz, plain) = padded_profile_gzip(5 * MIB / 17);
    assert!(gz.len() < MIB / 4 && plain.len() > 4 * MIB);
    net.push_fault("/profile", gzip_fault(gz, &plain));
    age_store(&inst);
    let before = snap(&inst);
    let o = inst.run(&[]);
    assert_exit(&o, 5, "a gzip body inflating to 5 MB, limit 1 MiB");
    assert_stdout_empty(&o, "gzip bomb");
    assert_store_untouched(&before, &inst, "after a gzip bomb");
    assert_eq!(stored_ids(&inst), id_set(&["3001"]));
    let lines = err_lines(&o);
    assert_eq!(lines.len(), 1, "one line on stderr\n{}", show(&o));
    assert!(
        lines[0].contains("max_profile_bytes"),
        "names the setting: {}",
        lines[0]
    );
}

// ---------------------------------------------------------------------------
// Redirects
// ---------------------------------------------------------------------------

#[test]
fn a_redirect_to_plain_http_is_refused() {
    let (inst, net) = after_a_good_run(NetOptions::default(), "");
    // A real plain-http network serving the profile: following the redirect
    // would work, and would send the device key in clear.
    let plain = net_with_profile(
        NetOptions {
            plain_http: true,
            ..NetOptions::default()
        },
        second_profile(),
    );
    let location = profile_url(&plain);
    assert!(location.starts_with("http://"));
    net.push_fault(
        "/profile",
        Fault::Redirect {
            location: location.clone(),
            code: 302,
        },
    );
    let line = failing_run(&inst, 3, "a redirect to http://");
    assert!(
        line.contains("redirect") && line.contains(&location),
        "names the refused redirect and where it pointed: {line}"
    );
    assert!(
        plain.requests().is_empty(),
        "the plain-http server must not be contacted: {:?}",
        plain.requests()
    );
}

#[test]
fn a_redirect_loop_exits_3_too_many_redirects() {
    let (inst, net) = after_a_good_run(NetOptions::default(), "");
    let a = profile_url(&net);
    let b = format!("{}/v3/elsewhere/loop-b", net.url());
    for _ in 0..8 {
        net.push_fault(
            "/profile",
            Fault::Redirect {
                location: b.clone(),
                code: 307,
            },
        );
        net.push_fault(
            "/loop-b",
            Fault::Redirect {
                location: a.clone(),
                code: 302,
            },
        );
    }
    let line = failing_run(&inst, 3, "a redirect loop");
    assert_says(&line, &["too many redirects"], "a redirect loop");
    let hops = net.requests().len() - 1;
    assert!(
        (2..=12).contains(&hops),
        "the loop is followed a few times, then abandoned ({hops} requests)"
    );
    net.clear_faults();
}

// ---------------------------------------------------------------------------
// Retry-After
// ---------------------------------------------------------------------------

/// The wait the agent announced in its retry warning ("... in 4.0 s").
fn announced_wait(stderr: &str) -> Option<f64> {
    let line = stderr.lines().find(|l| l.contains("retry"))?;
    let before_s = line.rsplit_once(" s")?.0;
    before_s.rsplit(' ').next()?.parse().ok()
}

/// One `code` answer carrying `Retry-After: value`, then the profile: the
/// run succeeds on its retry. Returns the wait the agent announced, and the
/// run for messages.
fn retried_once_after(code: u16, value: &str) -> (f64, std::process::Output) {
    let (inst, net) = after_a_good_run(NetOptions::default(), "[network]\nretries = 1\n");
    net.push_fault("/profile", status_fault(code, Some(value)));
    let o = inst.run(&[]);
    assert_exit(&o, 0, &format!("{code} with Retry-After: {value}"));
    assert_stdout_empty(&o, "retried run");
    assert_eq!(profile_statuses(&net, 1), [code, 200], "{}", show(&o));
    assert_eq!(
        stored_ids(&inst).len(),
        50,
        "the retried download is stored"
    );
    let wait = announced_wait(&stderr_of(&o))
        .unwrap_or_else(|| panic!("no retry warning naming its wait\n{}", show(&o)));
    (wait, o)
}

fn retry_after_date_honoured(code: u16) {
    let at = http_date(SystemTime::now() + Duration::from_secs(6));
    let (wait, o) = retried_once_after(code, &at);
    // Without the date the first wait would be the backoff, at most 1 s; the
    // date asks for about 6 s (some of it spent before the agent read it).
    assert!(
        wait >= 2.0,
        "the retry waits for the Retry-After date, not the backoff: {wait} s\n{}",
        show(&o)
    );
}

#[test]
fn status_429_with_retry_after_as_an_http_date_is_honoured() {
    retry_after_date_honoured(429);
}

#[test]
fn status_503_with_retry_after_as_an_http_date_is_honoured() {
    retry_after_date_honoured(503);
}

fn retry_after_too_long(value: &str) -> String {
    let (inst, net) = after_a_good_run(NetOptions::default(), "[network]\nretries = 1\n");
    net.push_fault("/profile", status_fault(429, Some(value)));
    net.push_fault("/profile", status_fault(429, Some(value)));
    let what = format!("429 with Retry-After: {value}");
    let line = failing_run(&inst, 3, &what);
    assert_eq!(
        profile_statuses(&net, 1),
        [429],
        "gives up at once instead of waiting an hour"
    );
    assert!(line.contains("429"), "names the answer: {line}");
    assert_says(&line, &["giving up", "gives up"], &what);
    net.clear_faults();
    line
}

#[test]
fn retry_after_of_an_hour_in_seconds_gives_up_at_once() {
    let line = retry_after_too_long("3600");
    assert!(line.contains("3600 s"), "names the wait asked for: {line}");
}

#[test]
fn retry_after_of_an_hour_as_a_date_gives_up_at_once() {
    let at = http_date(SystemTime::now() + Duration::from_secs(3600));
    let line = retry_after_too_long(&at);
    assert!(
        line.contains("359") || line.contains("3600 s"),
        "names the wait asked for (about 3600 s): {line}"
    );
}

#[test]
fn retry_after_with_an_absurd_date_field_is_ignored_not_overflowed() {
    // The hour field once overflowed the date arithmetic: a panic (debug) or
    // a wrapped-around wait (release). Now the header is ignored and the
    // agent's own backoff applies.
    let value = "Sun, 06 Nov 1994 99999999999999999:49:37 GMT";
    let (wait, o) = retried_once_after(503, value);
    assert!(
        wait <= 1.5,
        "the first backoff (at most 1 s plus jitter) applies: {wait} s\n{}",
        show(&o)
    );
}
