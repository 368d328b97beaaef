//! `--version`, and `--status [--json]` with the run record
//! `Spool/cncopgetprofile.status` it reads (PROTOCOL 3 and 7), end to end.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use support::*;

fn status_file(inst: &Install) -> PathBuf {
    inst.path("Spool/cncopgetprofile.status")
}

/// `--status` (with `extra` flags): its output and exit code.
fn status(inst: &Install, extra: &[&str]) -> (String, Option<i32>) {
    let mut args = vec!["--status"];
    args.extend_from_slice(extra);
    let o = inst.run(&args);
    assert!(
        o.stderr.is_empty(),
        "--status prints nothing on stderr\n{}",
        show(&o)
    );
    (stdout_of(&o), o.status.code())
}

/// The value after `"key":` in a one-line JSON document (a string without
/// its quotes, or a number/literal/object start), for simple checks.
fn json_field<'a>(doc: &'a str, key: &str) -> Option<&'a str> {
    let at = doc.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = &doc[at..];
    if let Some(s) = rest.strip_prefix('"') {
        return s.find('"').map(|end| &s[..end]);
    }
    let end = rest.find([',', '}', ']']).unwrap_or(rest.len());
    Some(&rest[..end])
}

/// One JSON document on one line.
#[track_caller]
fn assert_one_json_document(doc: &str) {
    let doc = doc.strip_suffix('\n').unwrap_or(doc);
    assert!(!doc.contains('\n'), "one line: {doc}");
    assert!(doc.starts_with('{'), "an object: {doc}");
    if let Err(e) = check_json(doc) {
        panic!("not JSON: {e}\n{doc}");
    }
}

#[test]
fn version_names_the_version_and_the_target() {
    let inst = Install::bare();
    let o = inst.run(&["--version"]);
    assert_exit(&o, 0, "--version");
    assert!(o.stderr.is_empty(), "{}", show(&o));
    let out = stdout_of(&o);
    let version = env!("CARGO_PKG_VERSION");
    match expected_triple() {
        Some(t) => assert_eq!(out, format!("cncopgetprofile {version} ({t})\n")),
        None => assert!(
            out.starts_with(&format!("cncopgetprofile {version} (")) && out.ends_with(")\n"),
            "{out}"
        ),
    }
    assert!(!status_file(&inst).exists(), "--version records no run");
    assert!(
        std::fs::read_dir(inst.path("Config"))
            .unwrap()
            .next()
            .is_none(),
        "--version writes nothing under Config/"
    );
}

#[test]
fn status_before_any_run_exits_8_and_creates_nothing() {
    let inst = Install::bare();
    let (out, code) = status(&inst, &[]);
    assert_eq!(code, Some(8), "no run recorded: exit 8\n{out}");
    assert!(out.contains("no run recorded"), "{out}");
    let (doc, code) = status(&inst, &["--json"]);
    assert_eq!(code, Some(8));
    assert_one_json_document(&doc);
    assert_eq!(json_field(&doc, "last_run"), Some("null"), "{doc}");
    assert_eq!(json_field(&doc, "running"), Some("false"), "{doc}");
    assert!(!status_file(&inst).exists());
    assert!(
        !inst.path("Config/cncopgetprofile.lock").exists(),
        "--status does not create the lock file"
    );
}

#[test]
fn a_damaged_record_is_named_and_exits_8_until_the_next_run_replaces_it() {
    let (_net, inst) = two_jobs_on_appliance("");
    std::fs::write(
        status_file(&inst),
        "[run]\nagent = 3.4.0\nstarted = yesterday\n",
    )
    .unwrap();
    let (out, code) = status(&inst, &[]);
    assert_eq!(code, Some(8), "{out}");
    assert!(
        out.contains("cncopgetprofile.status") && out.contains("started"),
        "names the file and the bad field\n{out}"
    );
    let (doc, code) = status(&inst, &["--json"]);
    assert_eq!(code, Some(8));
    assert_one_json_document(&doc);
    assert_eq!(json_field(&doc, "last_run"), Some("null"), "{doc}");
    assert!(
        json_field(&doc, "problem").is_some_and(|p| p.contains("started")),
        "{doc}"
    );
    run_ok(&inst, &[]);
    let (out, code) = status(&inst, &[]);
    assert_eq!(code, Some(0), "the run replaced the damaged record\n{out}");
}

#[test]
fn status_shows_the_last_run_and_keeps_the_last_success_through_a_failure() {
    let profile = small_profile_generated(
        DEVICE_ID,
        "2026-11-20T06:30:00Z",
        &[("1001", "CCS"), ("1002", "MSSQL")],
    );
    let net = net_with_profile(NetOptions::default(), profile);
    let inst = Install::appliance();
    inst.setup(&net, "");
    run_ok(&inst, &[]);
    assert!(status_file(&inst).is_file(), "a run writes its record");

    let (out, code) = status(&inst, &[]);
    assert_eq!(code, Some(0), "the last run succeeded\n{out}");
    assert!(out.contains("succeeded"), "{out}");
    assert!(
        out.contains("profile updated: 2 jobs"),
        "the summary line\n{out}"
    );
    assert!(
        out.contains("2 jobs") && out.contains("generated 2026-11-20T06:30:00Z"),
        "the stored profile\n{out}"
    );
    assert!(out.lines().count() <= 10, "a few lines\n{out}");
    let (doc, _) = status(&inst, &["--json"]);
    assert_one_json_document(&doc);
    let first_start = json_field(&doc, "started").expect("started").to_string();
    assert_eq!(json_field(&doc, "exit_code"), Some("0"), "{doc}");
    assert_eq!(json_field(&doc, "last_success"), Some(first_start.as_str()));
    assert_eq!(json_field(&doc, "jobs"), Some("2"), "{doc}");
    assert_eq!(json_field(&doc, "generated"), Some("2026-11-20T06:30:00Z"));
    if let Some(t) = expected_triple() {
        assert_eq!(json_field(&doc, "target"), Some(t.as_str()), "{doc}");
    }

    // The network now refuses the device: exit 4, recorded as such, the last
    // success and the stored profile kept.
    net.push_fault("/profile", status_fault(401, None));
    let o = inst.run_limited(&["--noupdate"], RUN_LIMIT);
    assert_exit(&o, 4, "401");
    let (out, code) = status(&inst, &[]);
    assert_eq!(
        code,
        Some(4),
        "--status exits with the last run's code\n{out}"
    );
    assert!(out.contains("FAILED, exit 4"), "{out}");
    assert!(
        out.contains(&format!("last success: {first_start}")),
        "{out}"
    );
    assert!(
        out.contains("2 jobs"),
        "the stored profile is still shown\n{out}"
    );
    let (doc, code) = status(&inst, &["--json"]);
    assert_eq!(code, Some(4));
    assert_one_json_document(&doc);
    assert_eq!(json_field(&doc, "exit_code"), Some("4"), "{doc}");
    assert_eq!(json_field(&doc, "succeeded"), Some("false"), "{doc}");
    assert_eq!(json_field(&doc, "last_success"), Some(first_start.as_str()));
    let summary = json_field(&doc, "summary").expect("summary");
    assert!(summary.starts_with("run failed (exit 4)"), "{doc}");
}

#[test]
fn an_unchanged_run_replaces_the_record_and_writes_nothing_under_config() {
    let (_net, inst) = two_jobs_on_appliance("");
    run_ok(&inst, &[]);
    let before = snap(&inst);
    let config_before = dir_listing(&inst.path("Config"));
    let record_before = std::fs::read_to_string(status_file(&inst)).unwrap();
    std::thread::sleep(Duration::from_millis(1100)); // a later "started" second
    run_ok(&inst, &[]);
    assert_store_untouched(&before, &inst, "304 run");
    assert_eq!(
        dir_listing(&inst.path("Config")),
        config_before,
        "an unchanged run writes nothing under Config/"
    );
    let record = std::fs::read_to_string(status_file(&inst)).unwrap();
    assert_ne!(record, record_before, "the record is replaced");
    assert!(record.contains("profile unchanged (304)"), "{record}");
    assert!(
        !inst.path("Spool/cncopgetprofile.status.new").exists(),
        "no temporary file is left"
    );
    assert_eq!(mode_of(&status_file(&inst)) & 0o777, 0o644);
}

/// File names, sizes and modification times in `dir`.
fn dir_listing(dir: &std::path::Path) -> Vec<(String, u64, std::time::SystemTime)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            let m = e.metadata().unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                m.len(),
                m.modified().unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_configuration_error_is_recorded_with_the_profile_still_shown() {
    let (net, inst) = two_jobs_on_appliance("");
    run_ok(&inst, &[]);
    inst.setup(&net, "[network]\nretries = lots");
    let o = inst.run(&[]);
    assert_exit(&o, 2, "bad retries");
    let (out, code) = status(&inst, &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("retries"), "the summary names the key\n{out}");
    assert!(
        out.contains("2 jobs"),
        "the store's profile, from the last record\n{out}"
    );
}

#[test]
fn blocked_endpoints_are_recorded() {
    let closed = dead_port();
    let profile = format!(
        "<?xml version=\"1.0\"?>\n<profile schema=\"3\" device=\"{DEVICE_ID}\" generated=\"2026-11-27T07:00:00Z\">\n\
         <jobs><job id=\"1\" name=\"one\" type=\"CCS\" enabled=\"yes\" schedule=\"0 30 1 * * *\">\
         <source path=\"/share/1\"/><target host=\"127.0.0.1\" port=\"{closed}\"/></job></jobs>\n</profile>\n"
    );
    let net = net_with_profile(NetOptions::default(), profile.into_bytes());
    let inst = Install::appliance();
    inst.setup(
        &net,
        "[firewall]\nenabled = On\nprobe_timeout = 1\nbudget = 20\n",
    );
    run_ok(&inst, &[]);
    let (out, code) = status(&inst, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("1 blocked: 127.0.0.1:{closed}")),
        "names the blocked endpoint\n{out}"
    );
    let (doc, _) = status(&inst, &["--json"]);
    assert!(
        doc.contains(&format!("\"blocked_endpoints\":[\"127.0.0.1:{closed}\"]")),
        "{doc}"
    );
}

fn spawn_agent(inst: &Install) -> Child {
    agent_command()
        .env("CNCOP_HOME", inst.root())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the agent")
}

#[test]
fn status_during_a_run_says_one_is_in_progress() {
    let (net, inst) = two_jobs_on_appliance("");
    run_ok(&inst, &[]);
    let v2 = small_profile(DEVICE_ID, &[("2001", "CCS")]);
    net.set_profile(DEVICE_ID, v2.clone(), Some(etag_for(&v2)));
    net.push_fault(
        "/profile",
        Fault::Stall {
            after_bytes: 10,
            for_: Duration::from_secs(300),
        },
    );
    let mut agent = spawn_agent(&inst);
    let end = Instant::now() + Duration::from_secs(60);
    while !net
        .profile_requests()
        .iter()
        .any(|r| r.fault == Some("Stall"))
    {
        assert!(Instant::now() < end, "the run never asked for its profile");
        std::thread::sleep(Duration::from_millis(10));
    }
    let (out, code) = status(&inst, &[]);
    let (doc, _) = status(&inst, &["--json"]);
    // The run goes on: --status took the lock only for a moment.
    let still_running = agent.try_wait().expect("wait").is_none();
    agent.kill().expect("kill the stalled run");
    let _ = agent.wait();
    assert!(still_running, "--status did not disturb the run");
    assert!(out.contains("a run is in progress"), "{out}");
    assert_eq!(code, Some(0), "the last finished run succeeded\n{out}");
    assert_eq!(json_field(&doc, "running"), Some("true"), "{doc}");
    let (out, _) = status(&inst, &[]);
    assert!(
        !out.contains("in progress"),
        "the killed run holds nothing\n{out}"
    );
}

#[test]
fn a_dry_run_and_a_locked_out_run_record_nothing() {
    let (_net, inst) = two_jobs_on_appliance("");
    let o = inst.run(&["--dry-run"]);
    assert_exit(&o, 0, "--dry-run");
    assert!(!status_file(&inst).exists(), "a dry run records nothing");
    // A run refused by the lock (held here as a run would hold it) leaves the
    // holder's record alone.
    let lock = std::fs::File::create(inst.path("Config/cncopgetprofile.lock")).unwrap();
    lock.lock().expect("flock");
    let o = inst.run(&[]);
    assert_exit(&o, 7, "locked");
    assert!(
        !status_file(&inst).exists(),
        "the refused run records nothing"
    );
    let (out, code) = status(&inst, &[]);
    assert_eq!(code, Some(8));
    assert!(out.contains("a run is in progress"), "{out}");
    drop(lock);
}

#[test]
fn json_and_status_flags_combine_only_as_documented() {
    let inst = Install::bare();
    for args in [
        &["--status", "--list"][..],
        &["--status", "--dry-run"],
        &["--json"],
    ] {
        let o = inst.run(args);
        assert_exit(&o, 2, &args.join(" "));
    }
}
