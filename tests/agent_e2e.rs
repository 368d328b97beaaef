//! End-to-end tests of the `cncopgetprofile` binary against the local cncop
//! network (real TLS on 127.0.0.1, real files, the real binary): PROTOCOL
//! sections 1 (identity, transport), 2 (the profile request), 3 (the job
//! store) and 7 (install root, logs, exit codes).
//!
//! Every test has its own install root and its own network, so they run in
//! parallel. No test asserts on timing.

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use support::*;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// `--list --json`: exit 0, the JSON.
#[track_caller]
fn list_json(inst: &Install) -> (String, Output) {
    let o = inst.run(&["--list", "--json"]);
    assert_exit(&o, 0, "--list --json");
    (stdout_of(&o), o)
}

/// The row of job `id` in a `--list` listing.
fn listed_row<'a>(listing: &'a str, id: &str) -> Option<&'a str> {
    listing
        .lines()
        .find(|l| l.split_whitespace().next() == Some(id))
}

/// A network serving `profile` (under its content ETag) and an install set
/// up for it (INI merged with `extra_ini`), after one successful run.
fn first_run(profile: Vec<u8>, extra_ini: &str) -> (Install, TestNetwork) {
    let net = net_with_profile(NetOptions::default(), profile);
    let inst = Install::appliance();
    inst.setup(&net, extra_ini);
    run_ok(&inst, &[]);
    assert!(inst.db_path().exists(), "the first run wrote no store");
    (inst, net)
}

/// The store's mode bits.
fn store_mode(inst: &Install) -> u32 {
    std::fs::metadata(inst.db_path())
        .expect("the store exists")
        .permissions()
        .mode()
        & 0o777
}

/// `YYYYMMDD` (UTC) of `t`: the day stamp of the agent's log file names
/// (the library's formatter, itself checked against known dates).
fn day_stamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
    cncopgetprofile::internals::clock::day_stamp(secs)
}

/// The day's log files that may hold a run that happened between `before`
/// and now (two names if the run crossed midnight UTC).
fn todays_logs(inst: &Install, before: SystemTime) -> Vec<PathBuf> {
    let mut names = vec![
        format!("gp{}.log", day_stamp(before)),
        format!("gp{}.log", day_stamp(SystemTime::now())),
    ];
    names.dedup();
    names
        .into_iter()
        .map(|n| inst.path("Spool/Logs").join(n))
        .filter(|p| p.exists())
        .collect()
}

fn read_all(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| String::from_utf8_lossy(&std::fs::read(p).expect("read log")).into_owned())
        .collect()
}

/// Starts the agent in the background (as [`Install::run`] would), its
/// stderr captured in a temp file.
fn spawn_agent(inst: &Install, args: &[&str]) -> (Child, File) {
    let err = tempfile::tempfile().expect("temp file");
    let child = agent_command()
        .args(args)
        .env("CNCOP_HOME", inst.root())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err.try_clone().expect("dup"))
        .spawn()
        .expect("start the agent");
    (child, err)
}

/// Waits (bounded, not measured) until `cond` holds.
#[track_caller]
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < end, "gave up waiting for: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits (bounded) for `child` to exit.
fn wait_child(child: &mut Child, what: &str) -> ExitStatus {
    let end = Instant::now() + RUN_LIMIT;
    loop {
        if let Some(st) = child.try_wait().expect("wait") {
            return st;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {RUN_LIMIT:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn read_file_all(f: &mut File) -> String {
    use std::io::{Read, Seek};
    let mut s = Vec::new();
    f.rewind().expect("rewind");
    f.read_to_end(&mut s).expect("read");
    String::from_utf8_lossy(&s).into_owned()
}

/// The stored profile's ETag as the network sent it.
fn served_etag(net: &TestNetwork) -> String {
    net.etag(DEVICE_ID).expect("the network has an ETag")
}

/// `v` as a JSON string.
fn json_string(v: &str) -> String {
    serde_json::Value::from(v).to_string()
}

/// The state file's bytes, mtime and inode: any write shows.
fn state_snap(inst: &Install) -> (Vec<u8>, SystemTime, u64) {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(inst.state_path()).expect("the state file exists");
    (
        std::fs::read(inst.state_path()).expect("read the state file"),
        meta.modified().expect("mtime"),
        meta.ino(),
    )
}

/// The `etag:` line of `--list`.
fn listed_etag(inst: &Install) -> String {
    list_stdout(inst)
        .lines()
        .find_map(|l| l.strip_prefix("etag:"))
        .map(|v| v.trim().to_string())
        .expect("--list shows an etag: line")
}

// ---------------------------------------------------------------------------
// 1. First run, listing
// ---------------------------------------------------------------------------

#[test]
fn first_run_is_silent_and_stores_every_job_privately() {
    let profile = profile_xml(DEVICE_ID, 50);
    let passwords = attr_values(&profile, "password");
    assert!(
        !passwords.is_empty() && passwords.iter().all(|p| p.starts_with("pw<&>")),
        "genprofile gave no credentials: {passwords:?}"
    );
    let net = net_with_profile(NetOptions::default(), profile);
    let inst = Install::appliance();
    inst.setup(&net, "");

    let run = run_ok(&inst, &[]);
    assert!(
        inst.db_path().is_file(),
        "Config/backupjobs.db was not written"
    );
    assert_eq!(
        store_mode(&inst),
        0o600,
        "the store holds credentials and must be mode 0600"
    );
    let statuses: Vec<u16> = net.profile_requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200], "one profile request, answered 200");

    let listing = list_stdout(&inst);
    assert_eq!(
        listed_ids(&listing),
        gen_ids(50),
        "--list must show every job of the profile:\n{listing}"
    );
    let etag = served_etag(&net);
    assert!(
        listing.contains(&etag),
        "--list must show the ETag {etag}:\n{listing}"
    );
    assert!(
        listing.contains("2026-11-27T07:00:00Z"),
        "--list must show the profile's generated time:\n{listing}"
    );

    let (json, json_run) = list_json(&inst);
    if let Err(e) = check_json(json.trim_end()) {
        panic!("--list --json is not valid JSON: {e}\n{json}");
    }
    assert!(json.starts_with('{'), "JSON output starts with {{: {json}");
    assert!(json.contains("\"jobs\":["), "JSON has a jobs array: {json}");
    assert!(
        json.contains(&format!("\"etag\":{}", json_string(&etag))),
        "JSON has the ETag: {json}"
    );
    // Without a trusted root the profile has no signed version or digest.
    assert!(
        json.contains("\"version\":null,\"sha256\":null"),
        "JSON has the profile's version and digest: {json}"
    );
    for line in ["version:   -", "sha256:    -"] {
        assert!(
            listing.lines().any(|l| l == line),
            "--list shows `{line}`:\n{listing}"
        );
    }
    for id in gen_ids(50) {
        assert!(
            json.contains(&format!("\"id\":\"{id}\"")),
            "JSON lacks job {id}"
        );
    }
    assert_eq!(
        json.matches("\"password\":\"***\"").count(),
        passwords.len(),
        "every credential's password must show as \"***\" in the JSON"
    );

    for (what, o) in [
        ("the run", &run),
        ("--list --json", &json_run),
        ("--list", &inst.run(&["--list"])),
    ] {
        let all = format!("{}{}", stdout_of(o), stderr_of(o));
        for pw in &passwords {
            assert!(
                !all.contains(pw.as_str()) && !all.contains(&xml_escape(pw)),
                "{what} printed a job password"
            );
        }
        assert!(!all.contains(DEVICE_KEY), "{what} printed the device key");
    }
}

#[test]
fn list_before_any_profile_says_so() {
    let inst = Install::appliance();
    let o = inst.run(&["--list"]);
    assert_exit(&o, 0, "--list on an empty install");
    let text = stdout_of(&o);
    assert!(listed_ids(&text).is_empty(), "no jobs listed: {text}");
    let (json, _) = list_json(&inst);
    if let Err(e) = check_json(json.trim_end()) {
        panic!("--list --json is not valid JSON: {e}\n{json}");
    }
    assert!(json.contains("\"jobs\":[]"), "no jobs in the JSON: {json}");
}

// ---------------------------------------------------------------------------
// 2, 3. Unchanged profiles write nothing
// ---------------------------------------------------------------------------

#[test]
fn second_run_sends_the_etag_gets_304_and_writes_nothing() {
    let (inst, net) = first_run(profile_xml(DEVICE_ID, 50), "");
    let etag = served_etag(&net);
    let first = &net.profile_requests()[0];
    assert_eq!(
        first.header("if-none-match"),
        None,
        "a fresh store must not send If-None-Match"
    );
    age_store(&inst);
    let before = snap(&inst);
    let state_before = state_snap(&inst);
    let config_before = config_files(&inst, "");

    run_ok(&inst, &[]);
    let reqs = net.profile_requests();
    assert_eq!(reqs.len(), 2, "one profile request per run");
    assert_eq!(
        reqs[1].header("if-none-match"),
        Some(etag.as_str()),
        "the second run must send If-None-Match with the stored ETag"
    );
    assert_eq!(reqs[1].status, 304);
    assert_store_untouched(&before, &inst, "after a 304");
    assert!(
        state_snap(&inst) == state_before,
        "a 304 run must not write the state file"
    );
    assert_eq!(
        config_files(&inst, ""),
        config_before,
        "a 304 run creates or removes nothing in Config/"
    );
    assert_eq!(stored_ids(&inst), gen_ids(50));
    assert_eq!(listed_etag(&inst), etag, "--list shows the ETag");
}

#[test]
fn same_content_under_another_etag_writes_only_a_few_bytes_of_state() {
    let profile = profile_xml(DEVICE_ID, 50);
    let (inst, net) = first_run(profile.clone(), "");
    age_store(&inst);
    let before = snap(&inst);
    let state_before = state_snap(&inst);

    net.set_profile(DEVICE_ID, profile.clone(), Some("\"another-etag\"".into()));
    run_ok(&inst, &[]);
    assert_eq!(net.profile_requests().last().unwrap().status, 200);
    assert_store_untouched(&before, &inst, "after a 200 with the same content");
    let state_after = state_snap(&inst);
    assert!(
        state_after.2 != state_before.2,
        "the state file is replaced"
    );
    assert!(
        state_after.0.len() < 200,
        "the state file is small: {} bytes",
        state_after.0.len()
    );
    assert_eq!(listed_etag(&inst), "\"another-etag\"");

    // The next hour: the new ETag is sent, the profile is not downloaded.
    run_ok(&inst, &[]);
    let last = net.profile_requests().pop().unwrap();
    assert_eq!(last.header("if-none-match"), Some("\"another-etag\""));
    assert_eq!(last.status, 304, "the same content is not downloaded again");
    assert!(state_snap(&inst) == state_after, "a 304 writes no state");

    net.set_profile(DEVICE_ID, profile, None);
    run_ok(&inst, &[]);
    assert_eq!(net.profile_requests().last().unwrap().status, 200);
    assert_store_untouched(
        &before,
        &inst,
        "after a 200 with the same content and no ETag",
    );
    assert_eq!(listed_etag(&inst), "-", "no ETag came with it");
    run_ok(&inst, &[]);
    assert_eq!(
        net.profile_requests()
            .last()
            .unwrap()
            .header("if-none-match"),
        None,
        "no ETag is sent when none came with the content"
    );
    assert_eq!(stored_ids(&inst), gen_ids(50));
}

#[test]
fn the_same_jobs_in_another_order_or_one_endpoint_more_are_written() {
    let jobs = [("1001", "CCS"), ("1002", "MSSQL"), ("1003", "FTP")];
    let (inst, net) = first_run(small_profile(DEVICE_ID, &jobs), "");
    // Every job as stored, only their order differs: the store keeps the
    // document's order, so this is a new profile.
    let moved = [jobs[2], jobs[0], jobs[1]];
    net.set_profile(DEVICE_ID, small_profile(DEVICE_ID, &moved), None);
    age_store(&inst);
    let before = snap(&inst);
    run_ok(&inst, &[]);
    assert_ne!(
        snap(&inst).ino,
        before.ino,
        "a reordered profile is written"
    );
    let order: Vec<String> = list_stdout(&inst)
        .lines()
        .skip_while(|l| l.split_whitespace().next() != Some("ID"))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect();
    assert_eq!(
        order,
        ["1003", "1001", "1002"],
        "--list shows the new order"
    );

    // The same jobs in the same order with one firewall endpoint more.
    let text = String::from_utf8(small_profile(DEVICE_ID, &moved)).unwrap();
    let with_endpoint = text.replacen(
        "<jobs>",
        "<firewall><endpoint host=\"127.0.0.1\" port=\"1\"/></firewall><jobs>",
        1,
    );
    assert_ne!(with_endpoint, text);
    net.set_profile(DEVICE_ID, with_endpoint.into_bytes(), None);
    age_store(&inst);
    let before = snap(&inst);
    run_ok(&inst, &["--noupdate"]);
    assert_ne!(snap(&inst).ino, before.ino, "a new endpoint is written");
}

#[test]
fn an_empty_profile_sent_again_writes_nothing() {
    let empty = small_profile(DEVICE_ID, &[]);
    let (inst, net) = first_run(empty.clone(), "");
    assert!(stored_ids(&inst).is_empty());
    age_store(&inst);
    let before = snap(&inst);
    net.set_profile(DEVICE_ID, empty, Some("\"another-etag\"".into()));
    run_ok(&inst, &[]);
    assert_eq!(net.profile_requests().last().unwrap().status, 200);
    assert_store_untouched(&before, &inst, "after the same empty profile");
}

/// A state file whose ETag came with other content than the store holds
/// (as a kill between replacing the store and writing the state leaves it)
/// must not be sent: a server that went back to that content would answer
/// 304 and the device would keep a profile the server no longer serves.
#[test]
fn an_etag_that_came_with_other_content_is_not_sent() {
    let a = small_profile(DEVICE_ID, &[("1001", "CCS")]);
    let b = small_profile(DEVICE_ID, &[("2001", "FTP")]);
    let (inst, net) = first_run(a.clone(), "");
    let etag_a = served_etag(&net);
    let state_of_a = std::fs::read(inst.state_path()).unwrap();
    net.set_profile(DEVICE_ID, b.clone(), Some(etag_for(&b)));
    run_ok(&inst, &[]);
    assert_eq!(stored_ids(&inst), id_set(&["2001"]));

    std::fs::write(inst.state_path(), &state_of_a).unwrap();
    assert_eq!(listed_etag(&inst), "-", "A's ETag is not B's");
    net.set_profile(DEVICE_ID, a, Some(etag_a));
    run_ok(&inst, &[]);
    let last = net.profile_requests().pop().unwrap();
    assert_eq!(
        last.header("if-none-match"),
        None,
        "the ETag of A must not be sent for a store holding B"
    );
    assert_eq!(last.status, 200);
    assert_eq!(stored_ids(&inst), id_set(&["1001"]), "A is stored again");
}

// ---------------------------------------------------------------------------
// 4. A changed profile, and --dry-run
// ---------------------------------------------------------------------------

/// A dry run keeps no new store file to find repeated ids in, yet refuses
/// them as a real run does: an id the store has (seen twice in the stored
/// positions) and an id it lacks (seen twice among the new ids).
#[test]
fn dry_run_refuses_duplicate_ids_like_a_real_run() {
    let v1 = small_profile(DEVICE_ID, &[("1001", "CCS"), ("1002", "FTP")]);
    let (inst, net) = first_run(v1, "");
    for (what, dup) in [("a stored id twice", "1002"), ("a new id twice", "1009")] {
        let v2 = small_profile_generated(
            DEVICE_ID,
            "2026-11-28T07:00:00Z",
            &[
                ("1001", "CCS"),
                (dup, "SFTP"),
                ("1003", "FTP"),
                (dup, "RSYNC"),
            ],
        );
        net.set_profile(DEVICE_ID, v2.clone(), Some(etag_for(&v2)));
        let before = snap(&inst);
        let o = inst.run(&["--dry-run"]);
        assert_exit(&o, 5, what);
        let err = stderr_of(&o);
        assert!(
            err.contains(&format!("job \"{dup}\" appears more than once")),
            "{what}: names the repeated id\n{}",
            show(&o)
        );
        assert_store_untouched(&before, &inst, what);
    }
}

#[test]
fn changed_profile_dry_run_then_update() {
    let v1 = small_profile(
        DEVICE_ID,
        &[("1001", "CCS"), ("1002", "MSSQL"), ("1003", "FTP")],
    );
    let (inst, net) = first_run(v1, "");
    let v1_etag = served_etag(&net);
    // 1001 unchanged, 1002 changed (type), 1003 removed, 1004 added.
    let v2 = small_profile_generated(
        DEVICE_ID,
        "2026-11-28T07:00:00Z",
        &[("1001", "CCS"), ("1002", "SFTP"), ("1004", "RSYNC")],
    );
    let v2_etag = etag_for(&v2);
    net.set_profile(DEVICE_ID, v2, Some(v2_etag.clone()));
    age_store(&inst);
    let before = snap(&inst);

    let dry = inst.run(&["--dry-run"]);
    assert_exit(&dry, 0, "--dry-run");
    let text = stdout_of(&dry);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let (last, changes) = lines.split_last().expect("--dry-run printed nothing");
    assert!(
        last.starts_with("dry run:"),
        "the last line of --dry-run must start with 'dry run:'\n{text}"
    );
    let got: BTreeSet<&str> = changes.iter().copied().collect();
    let want: BTreeSet<&str> = [
        "add     1004  Job 1004",
        "change  1002  Job 1002",
        "remove  1003",
    ]
    .into_iter()
    .collect();
    assert_eq!(got, want, "--dry-run change lines\n{text}");
    assert_eq!(changes.len(), 3, "one line per change\n{text}");
    assert_store_untouched(&before, &inst, "after --dry-run");
    assert_eq!(
        config_files(&inst, "backupjobs.db."),
        Vec::<PathBuf>::new(),
        "--dry-run must leave no files beside the store"
    );
    let listing = list_stdout(&inst);
    assert_eq!(listed_ids(&listing), id_set(&["1001", "1002", "1003"]));
    assert!(
        listing.contains(&v1_etag),
        "after --dry-run the old ETag stays"
    );

    run_ok(&inst, &[]);
    let listing = list_stdout(&inst);
    assert_eq!(
        listed_ids(&listing),
        id_set(&["1001", "1002", "1004"]),
        "--list after the update:\n{listing}"
    );
    let row = listed_row(&listing, "1002").expect("job 1002 listed");
    assert!(
        row.split_whitespace().nth(1) == Some("SFTP"),
        "job 1002 must now be SFTP: {row}"
    );
    assert!(
        listing.contains(&v2_etag),
        "--list shows the new ETag:\n{listing}"
    );
    assert!(
        listing.contains("2026-11-28T07:00:00Z"),
        "--list shows the new generated time:\n{listing}"
    );
    assert_eq!(store_mode(&inst), 0o600, "the new store is mode 0600 too");
}

#[test]
fn empty_jobs_profile_empties_the_store() {
    let (inst, net) = first_run(two_jobs(), "");
    let empty = small_profile(DEVICE_ID, &[]);
    net.set_profile(DEVICE_ID, empty.clone(), Some(etag_for(&empty)));
    run_ok(&inst, &[]);
    let listing = list_stdout(&inst);
    assert!(
        listed_ids(&listing).is_empty(),
        "a profile with <jobs/> empty must empty the store:\n{listing}"
    );
    assert!(listing.contains(&etag_for(&empty)), "{listing}");
}

// ---------------------------------------------------------------------------
// 5. Every status of PROTOCOL section 2
// ---------------------------------------------------------------------------

/// A first run, then a run that `setup` makes fail: expects exit `code`,
/// one stderr line, the store byte-identical; returns that line.
fn refused_run(code: i32, extra_ini: &str, setup: impl FnOnce(&TestNetwork)) -> String {
    let (inst, net) = first_run(two_jobs(), "");
    // A success would now change the store.
    let v2 = small_profile(DEVICE_ID, &[("2001", "CCS")]);
    net.set_profile(DEVICE_ID, v2.clone(), Some(etag_for(&v2)));
    if !extra_ini.is_empty() {
        inst.setup(&net, extra_ini);
    }
    setup(&net);
    age_store(&inst);
    let before = snap(&inst);
    let o = inst.run(&[]);
    assert_exit(&o, code, "refused run");
    assert_stdout_empty(&o, "refused run");
    assert_store_untouched(&before, &inst, "after a refused run");
    assert_eq!(
        stored_ids(&inst),
        id_set(&["1001", "1002"]),
        "the old jobs stay"
    );
    let lines = err_lines(&o);
    assert_eq!(
        lines.len(),
        1,
        "a refusal is one line on stderr\n{}",
        show(&o)
    );
    lines.into_iter().next().unwrap()
}

#[test]
fn status_401_wrong_key_exits_4_and_keeps_the_store() {
    let line = refused_run(4, "[device]\nkey = not-the-right-key", |_| {});
    assert!(line.contains("401"), "names the status: {line}");
    assert!(
        line.contains("key"),
        "tells to check the device key: {line}"
    );
    assert!(!line.contains("not-the-right-key"), "no secret: {line}");
}

#[test]
fn status_403_disabled_device_exits_4() {
    let line = refused_run(4, "", |net| net.set_device_disabled(DEVICE_ID, true));
    assert!(line.contains("403"), "names the status: {line}");
    assert!(
        line.contains("disabled"),
        "says the device is disabled: {line}"
    );
}

#[test]
fn status_404_unknown_device_exits_4() {
    let line = refused_run(4, "", |net| net.remove_device(DEVICE_ID));
    assert!(line.contains("404"), "names the status: {line}");
    assert!(
        line.contains("regist") || line.contains("[device] id"),
        "tells to check registration / [device] id: {line}"
    );
}

/// One transient answer with `Retry-After: 1`, then the profile.
fn transient_then_success(code: u16) {
    let net = net_with_profile(NetOptions::default(), two_jobs());
    net.push_fault("/profile", status_fault(code, Some("1")));
    let inst = Install::appliance();
    inst.setup(&net, "");
    let o = run_ok(&inst, &[]);
    let statuses: Vec<u16> = net.profile_requests().iter().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        [code, 200],
        "one retry after {code}\n{}",
        show(&o)
    );
    assert_eq!(stored_ids(&inst), id_set(&["1001", "1002"]));
}

#[test]
fn status_429_with_retry_after_is_retried() {
    transient_then_success(429);
}

#[test]
fn status_503_with_retry_after_is_retried() {
    transient_then_success(503);
}

#[test]
fn status_500_past_the_retries_exits_3_and_keeps_the_store() {
    let (inst, net) = first_run(two_jobs(), "");
    let v2 = small_profile(DEVICE_ID, &[("2001", "CCS")]);
    net.set_profile(DEVICE_ID, v2.clone(), Some(etag_for(&v2)));
    // retries = 1: two attempts; a third 500 is queued in case it tries more.
    for _ in 0..3 {
        net.push_fault("/profile", status_fault(500, None));
    }
    age_store(&inst);
    let before = snap(&inst);
    let o = inst.run(&[]);
    assert_exit(&o, 3, "500 on every attempt");
    assert_stdout_empty(&o, "500 on every attempt");
    assert_store_untouched(&before, &inst, "after repeated 500");
    let statuses: Vec<u16> = net.profile_requests()[1..]
        .iter()
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [500, 500], "1 try + retries = 1");
    let lines = err_lines(&o);
    let last = lines.last().expect("an error on stderr");
    assert!(last.contains("500"), "the final error names 500: {last}");
    assert_eq!(stored_ids(&inst), id_set(&["1001", "1002"]));
}

// ---------------------------------------------------------------------------
// 6. Rejected profiles keep the old store
// ---------------------------------------------------------------------------

/// A first run with two jobs, then `bad` is served: expects exit 5, the store
/// byte-identical, the old jobs listed; returns stderr.
fn assert_rejected(bad: Vec<u8>, extra_ini: &str) -> String {
    let (inst, net) = first_run(two_jobs(), extra_ini);
    net.set_profile(DEVICE_ID, bad.clone(), Some(etag_for(&bad)));
    age_store(&inst);
    let before = snap(&inst);
    let o = inst.run(&[]);
    assert_exit(&o, 5, "rejected profile");
    assert_stdout_empty(&o, "rejected profile");
    assert_store_untouched(&before, &inst, "after a rejected profile");
    assert_eq!(
        stored_ids(&inst),
        id_set(&["1001", "1002"]),
        "the old jobs stay"
    );
    assert_eq!(
        net.profile_requests().last().unwrap().status,
        200,
        "the profile was served"
    );
    let err = stderr_of(&o);
    assert!(
        !err.trim().is_empty(),
        "a rejection is reported on stderr\n{}",
        show(&o)
    );
    err
}

fn profile_with_jobs_xml(schema: &str, device: &str, jobs_xml: &str) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <profile schema=\"{schema}\" device=\"{device}\" generated=\"2026-11-27T07:00:00Z\">\n\
         <jobs>\n{jobs_xml}</jobs>\n</profile>\n"
    )
    .into_bytes()
}

#[test]
fn rejects_a_profile_cut_short() {
    let mut body = profile_xml(DEVICE_ID, 50);
    body.truncate(body.len() / 2);
    assert_rejected(body, "");
}

#[test]
fn rejects_a_profile_for_another_device() {
    let err = assert_rejected(small_profile("NAS-99999", &[("3001", "CCS")]), "");
    assert!(
        err.contains("NAS-99999"),
        "names the profile's device: {err}"
    );
}

#[test]
fn rejects_schema_4_naming_both_versions() {
    let body = profile_with_jobs_xml(
        "4",
        DEVICE_ID,
        "<job id=\"3001\" name=\"J\" type=\"CCS\"/>\n",
    );
    let err = assert_rejected(body, "");
    let line = err
        .lines()
        .find(|l| l.contains("schema"))
        .unwrap_or_else(|| panic!("no line names the schema: {err}"));
    assert!(
        line.contains('4') && line.contains('3'),
        "names both versions (4 and 3): {line}"
    );
}

#[test]
fn rejects_a_job_over_a_limit_naming_job_and_field() {
    let long = format!("/share/{}", "a".repeat(5000));
    let jobs = format!(
        "<job id=\"1001\" name=\"Ok\" type=\"CCS\"><source path=\"/ok\"/></job>\n\
         <job id=\"big-7\" name=\"Big\" type=\"CCS\"><source path=\"{long}\"/></job>\n"
    );
    let err = assert_rejected(profile_with_jobs_xml("3", DEVICE_ID, &jobs), "");
    assert!(err.contains("big-7"), "names the job id: {err}");
    assert!(
        err.contains("source") && err.contains("path"),
        "names the field (source path): {err}"
    );
}

#[test]
fn rejects_duplicate_job_ids() {
    let body = small_profile(
        DEVICE_ID,
        &[("1001", "CCS"), ("5005", "FTP"), ("5005", "FTP")],
    );
    let err = assert_rejected(body, "");
    assert!(err.contains("5005"), "names the duplicate id: {err}");
}

#[test]
fn rejects_a_doctype() {
    let good = String::from_utf8(small_profile(DEVICE_ID, &[("3001", "CCS")])).unwrap();
    let (decl, rest) = good.split_once('\n').unwrap();
    let body = format!("{decl}\n<!DOCTYPE profile [<!ENTITY x \"xxxxxxxxxx\">]>\n{rest}");
    let err = assert_rejected(body.into_bytes(), "");
    assert!(
        err.to_ascii_lowercase().contains("doctype"),
        "says why (DOCTYPE): {err}"
    );
}

#[test]
fn rejects_a_profile_over_max_profile_bytes() {
    let big = profile_xml(DEVICE_ID, 50);
    assert!(big.len() > 4 * 2048, "the profile is well over the limit");
    assert!(two_jobs().len() < 2048, "the first profile fits the limit");
    let err = assert_rejected(big, "[network]\nmax_profile_bytes = 2048");
    assert!(
        err.contains("max_profile_bytes"),
        "names the setting: {err}"
    );
}

#[test]
fn rejects_an_oversized_profile_sent_without_gzip_too() {
    // Same as above with an identity body: the limit holds either way.
    let big = profile_xml(DEVICE_ID, 50);
    let (inst, net) = first_run(two_jobs(), "[network]\nmax_profile_bytes = 2048");
    net.set_gzip(false);
    net.set_profile(DEVICE_ID, big.clone(), Some(etag_for(&big)));
    age_store(&inst);
    let before = snap(&inst);
    let o = inst.run(&[]);
    assert_exit(&o, 5, "oversized identity body");
    assert_store_untouched(&before, &inst, "after an oversized body");
}

// ---------------------------------------------------------------------------
// 7. --recreate
// ---------------------------------------------------------------------------

#[test]
fn recreate_fetches_in_full_and_rewrites_the_store() {
    let (inst, net) = first_run(profile_xml(DEVICE_ID, 50), "");
    age_store(&inst);
    let before = snap(&inst);

    run_ok(&inst, &["--recreate"]);
    let req = net.profile_requests().pop().unwrap();
    assert_eq!(
        req.header("if-none-match"),
        None,
        "--recreate must not send If-None-Match"
    );
    assert_eq!(req.status, 200);
    let after = snap(&inst);
    assert!(
        after.mtime != before.mtime || after.ino != before.ino,
        "--recreate must rewrite the store even when the content is unchanged"
    );
    assert_eq!(store_mode(&inst), 0o600);
    assert_eq!(stored_ids(&inst), gen_ids(50));

    // And the next ordinary run is a 304 again.
    run_ok(&inst, &[]);
    let req = net.profile_requests().pop().unwrap();
    assert_eq!(
        req.header("if-none-match"),
        Some(served_etag(&net).as_str())
    );
    assert_eq!(req.status, 304);
}

// ---------------------------------------------------------------------------
// 8. A corrupt store is moved aside and rebuilt
// ---------------------------------------------------------------------------

fn corrupt_store_is_rebuilt(damage: impl FnOnce(&[u8]) -> Vec<u8>) {
    let (inst, net) = first_run(profile_xml(DEVICE_ID, 50), "");
    let real = inst.db_bytes().unwrap();
    let bad = damage(&real);
    std::fs::write(inst.db_path(), &bad).unwrap();

    let o = inst.run(&[]);
    assert_success(&o, "run over a corrupt store");
    let aside = config_files(&inst, "backupjobs.db.corrupt-");
    assert_eq!(
        aside.len(),
        1,
        "one Config/backupjobs.db.corrupt-* file\n{}",
        show(&o)
    );
    assert!(
        std::fs::read(&aside[0]).unwrap() == bad,
        "the corrupt file keeps the damaged bytes"
    );
    let req = net.profile_requests().pop().unwrap();
    assert_eq!(
        req.header("if-none-match"),
        None,
        "a rebuilt store starts from a full download"
    );
    assert_eq!(req.status, 200);
    assert_eq!(stored_ids(&inst), gen_ids(50), "the store is rebuilt");
    assert_eq!(store_mode(&inst), 0o600);
    let err = stderr_of(&o);
    assert!(
        err.contains("backupjobs.db"),
        "the damage is reported on stderr, naming the file\n{}",
        show(&o)
    );
}

#[test]
fn corrupt_store_of_random_bytes_is_moved_aside_and_rebuilt() {
    corrupt_store_is_rebuilt(|_| {
        let hex = random_hex(2 * 8192);
        (0..hex.len() / 2)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
            .collect()
    });
}

#[test]
fn truncated_store_is_moved_aside_and_rebuilt() {
    corrupt_store_is_rebuilt(|real| real[..real.len() / 3].to_vec());
}

/// A page damaged on the flash (zeroed, as a lost block reads) is one redb's
/// B-tree code cannot read: it panics, and the release binary aborts on a
/// panic. Each page of a stored profile is zeroed in turn and a run that
/// reads the whole old store (`--recreate`) is started: it either succeeds
/// (a page nothing reads) or exits 6 with one line naming the file and
/// where it was moved; never a crash. The run after it rebuilds the store
/// from a full download, without manual steps. `--list` on a damaged store
/// exits 6 naming the file and leaves it in place.
#[test]
fn a_zeroed_store_page_is_a_store_error_and_the_next_run_rebuilds() {
    const JOBS: usize = 300;
    const PAGE: usize = 4096;
    let (inst, net) = first_run(profile_xml(DEVICE_ID, JOBS), "");
    let good = inst.db_bytes().unwrap();
    let state = std::fs::read(inst.state_path()).unwrap();
    let mut damaged = 0;
    let mut harmless = 0;
    let mut list_damaged = 0;
    for page in 1..good.len() / PAGE {
        let mut bad = good.clone();
        bad[page * PAGE..(page + 1) * PAGE].fill(0);
        std::fs::write(inst.db_path(), &bad).unwrap();
        std::fs::write(inst.state_path(), &state).unwrap();

        // A reader that may not move the file: it fails naming it, or
        // reads no damaged page.
        let o = inst.run(&["--list"]);
        if o.status.code() != Some(0) {
            list_damaged += 1;
            assert_exit(&o, 6, &format!("--list over zeroed page {page}"));
            let lines = err_lines(&o);
            assert_eq!(lines.len(), 1, "one line\n{}", show(&o));
            assert!(
                lines[0].contains("backupjobs.db is damaged")
                    && lines[0].contains("next run of cncopgetprofile moves it aside"),
                "{}",
                lines[0]
            );
            assert!(
                std::fs::read(inst.db_path()).unwrap() == bad,
                "left in place"
            );
        }

        let o = inst.run(&["--recreate"]);
        if o.status.code() == Some(0) {
            harmless += 1;
            assert_eq!(listed_ids(&list_stdout(&inst)), gen_ids(JOBS));
            continue;
        }
        damaged += 1;
        assert_exit(&o, 6, &format!("--recreate over zeroed page {page}"));
        let lines = err_lines(&o);
        assert_eq!(lines.len(), 1, "one line (page {page})\n{}", show(&o));
        assert!(
            lines[0].contains("backupjobs.db is damaged") && lines[0].contains("moved it to"),
            "the line names the file and where it went: {}",
            lines[0]
        );
        let aside = config_files(&inst, "backupjobs.db.corrupt-");
        assert_eq!(aside.len(), 1, "moved aside (page {page})\n{}", show(&o));
        assert!(std::fs::read(&aside[0]).unwrap() == bad, "with its bytes");
        std::fs::remove_file(&aside[0]).unwrap();

        run_ok(&inst, &[]);
        let req = net.profile_requests().pop().unwrap();
        assert_eq!(req.header("if-none-match"), None, "a full download");
        assert_eq!(listed_ids(&list_stdout(&inst)), gen_ids(JOBS));
    }
    eprintln!(
        "zeroed pages: {damaged} damaged runs, {harmless} harmless, {list_damaged} failed --list"
    );
    assert!(
        damaged > 0 && list_damaged > 0,
        "no zeroed page was read ({harmless} harmless, {list_damaged} by --list): the test checks nothing"
    );
}

/// A damaged state file costs one full download (nothing else: the store is
/// not rewritten for the same content) and is said once on stderr.
#[test]
fn a_damaged_state_file_is_moved_aside_and_costs_one_full_download() {
    let (inst, net) = first_run(profile_xml(DEVICE_ID, 50), "");
    age_store(&inst);
    let before = snap(&inst);
    let mut bad = std::fs::read(inst.state_path()).unwrap();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x20;
    std::fs::write(inst.state_path(), &bad).unwrap();

    let o = inst.run(&[]);
    assert_exit(&o, 0, "run over a damaged state file");
    let aside = config_files(&inst, "cncopgetprofile.state.corrupt-");
    assert_eq!(aside.len(), 1, "one state file moved aside\n{}", show(&o));
    assert!(std::fs::read(&aside[0]).unwrap() == bad, "with its bytes");
    // One line names the file and the damage (the trust step may add its
    // own line about the trust state it kept there).
    let lines: Vec<String> = err_lines(&o)
        .into_iter()
        .filter(|l| l.contains("cncopgetprofile.state"))
        .collect();
    assert_eq!(lines.len(), 1, "one line names the file\n{}", show(&o));
    assert!(
        lines[0].contains("damaged") && lines[0].contains("moved it to"),
        "the line names the damage and where the file went: {}",
        lines[0]
    );
    let req = net.profile_requests().pop().unwrap();
    assert_eq!(req.header("if-none-match"), None, "a full download");
    assert_eq!(req.status, 200);
    assert_store_untouched(&before, &inst, "the same content after a damaged state");
    assert_eq!(
        listed_etag(&inst),
        served_etag(&net),
        "the ETag is kept again"
    );
    assert_eq!(mode_of(&inst.state_path()), 0o600);

    run_ok(&inst, &[]);
    assert_eq!(net.profile_requests().pop().unwrap().status, 304);
}

/// A store of an older schema (1 kept the ETag and the firewall state in
/// the store) is rebuilt from a full download.
#[test]
fn a_store_of_an_older_schema_is_rebuilt_from_a_full_download() {
    let (inst, net) = first_run(profile_xml(DEVICE_ID, 50), "");
    {
        let db = redb::Database::open(inst.db_path()).expect("open the store with redb");
        let txn = db.begin_write().unwrap();
        {
            let meta: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("meta");
            let mut t = txn.open_table(meta).unwrap();
            t.insert(b"schema".as_slice(), 1u32.to_le_bytes().as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let before = snap(&inst);
    let o = inst.run(&[]);
    assert_exit(&o, 0, "run over a schema 1 store");
    assert!(
        stderr_of(&o).contains("another store schema"),
        "the rebuild is said\n{}",
        show(&o)
    );
    let req = net.profile_requests().pop().unwrap();
    assert_eq!(req.header("if-none-match"), None, "a full download");
    assert_eq!(req.status, 200);
    assert!(snap(&inst).ino != before.ino, "the store is rewritten");
    assert_eq!(stored_ids(&inst), gen_ids(50));
    run_ok(&inst, &[]);
    assert_eq!(net.profile_requests().pop().unwrap().status, 304);
}

// ---------------------------------------------------------------------------
// 9. The lock
// ---------------------------------------------------------------------------

#[test]
fn second_run_while_one_is_running_exits_7() {
    let (inst, mut net) = first_run(two_jobs(), "");
    let v1 = inst.db_bytes().unwrap();
    let v2 = profile_xml(DEVICE_ID, 50);
    net.set_profile(DEVICE_ID, v2.clone(), Some(etag_for(&v2)));
    net.push_fault(
        "/profile",
        Fault::Stall {
            after_bytes: 200,
            for_: Duration::from_secs(300),
        },
    );
    let (mut first, mut first_err) = spawn_agent(&inst, &[]);
    wait_until("the first run's profile request", || {
        net.profile_requests()
            .iter()
            .any(|r| r.fault == Some("Stall"))
    });

    let second = inst.run(&[]);
    assert_exit(&second, 7, "a run while another holds the lock");
    assert_stdout_empty(&second, "locked run");
    assert_eq!(
        err_lines(&second).len(),
        1,
        "one line on stderr\n{}",
        show(&second)
    );
    assert_eq!(
        net.profile_requests().len(),
        2,
        "the locked run must not contact the network"
    );

    // End the first run by taking its network away.
    net.stop();
    let st = wait_child(&mut first, "the first run");
    assert!(
        !st.success(),
        "the interrupted run cannot succeed: {st:?}\n{}",
        read_file_all(&mut first_err)
    );
    assert!(
        inst.db_bytes().unwrap() == v1,
        "an interrupted download keeps the old store"
    );

    // The lock is free again.
    let net2 = net_with_profile(NetOptions::default(), v2);
    inst.setup(&net2, "");
    run_ok(&inst, &[]);
    assert_eq!(stored_ids(&inst), gen_ids(50));
}

#[test]
fn a_killed_run_leaves_no_stale_lock() {
    let (inst, net) = first_run(two_jobs(), "");
    let v1 = inst.db_bytes().unwrap();
    let v2 = profile_xml(DEVICE_ID, 50);
    net.set_profile(DEVICE_ID, v2.clone(), Some(etag_for(&v2)));
    net.push_fault(
        "/profile",
        Fault::Stall {
            after_bytes: 200,
            for_: Duration::from_secs(300),
        },
    );
    let (mut agent, _err) = spawn_agent(&inst, &[]);
    wait_until("the run's profile request", || {
        net.profile_requests()
            .iter()
            .any(|r| r.fault == Some("Stall"))
    });
    agent.kill().expect("SIGKILL the agent");
    let _ = agent.wait();

    assert!(
        inst.db_bytes().unwrap() == v1,
        "a run killed mid-download leaves the old store"
    );
    assert_eq!(stored_ids(&inst), id_set(&["1001", "1002"]));
    run_ok(&inst, &[]);
    assert_eq!(stored_ids(&inst), gen_ids(50));
}

// ---------------------------------------------------------------------------
// 10, 11. Logs and secrets
// ---------------------------------------------------------------------------

#[test]
fn debug_logs_keep_no_secrets() {
    let started = SystemTime::now();
    let profile = profile_xml(DEVICE_ID, 50);
    let passwords = attr_values(&profile, "password");
    assert!(!passwords.is_empty());
    let (inst, net) = {
        let net = net_with_profile(NetOptions::default(), profile);
        let inst = Install::appliance();
        inst.setup(&net, "");
        (inst, net)
    };
    let wrong_key = "wr0ng-k3y-for-the-401-test";
    let mut outputs = Vec::new();

    let o = inst.run(&["-d"]);
    assert_success(&o, "-d first run");
    outputs.push(o);
    outputs.push(inst.run(&["--list"]));
    outputs.push(inst.run(&["--list", "--json"]));
    // A 401 with the right key, then the wrong key.
    net.push_fault("/profile", status_fault(401, None));
    let o = inst.run(&["-d"]);
    assert_exit(&o, 4, "-d run answered 401");
    outputs.push(o);
    inst.setup(&net, &format!("[device]\nkey = {wrong_key}"));
    let o = inst.run(&["-d"]);
    assert_exit(&o, 4, "-d run with a wrong key");
    outputs.push(o);
    assert_eq!(
        net.profile_requests()
            .iter()
            .map(|r| r.status)
            .collect::<Vec<_>>(),
        [200, 401, 401]
    );

    let mut secrets: Vec<(String, String)> = vec![
        ("the device key".into(), DEVICE_KEY.into()),
        ("the wrong device key".into(), wrong_key.into()),
        (
            "the Basic credentials".into(),
            base64_encode(format!("{DEVICE_ID}:{DEVICE_KEY}").as_bytes()),
        ),
        (
            "the wrong Basic credentials".into(),
            base64_encode(format!("{DEVICE_ID}:{wrong_key}").as_bytes()),
        ),
    ];
    for pw in &passwords {
        secrets.push(("a job password".into(), pw.clone()));
        secrets.push(("a job password (escaped)".into(), xml_escape(pw)));
    }
    let mut places: Vec<(String, String)> = Vec::new();
    for (i, o) in outputs.iter().enumerate() {
        places.push((format!("stdout of run {i}"), stdout_of(o)));
        places.push((format!("stderr of run {i}"), stderr_of(o)));
    }
    let spool = files_under(&inst.path("Spool"));
    assert!(!spool.is_empty(), "-d wrote no log file");
    for p in &spool {
        places.push((
            p.display().to_string(),
            String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned(),
        ));
    }
    for (where_, text) in &places {
        for (what, secret) in &secrets {
            assert!(!text.contains(secret.as_str()), "{where_} contains {what}");
        }
    }

    let logs = todays_logs(&inst, started);
    assert!(
        !logs.is_empty(),
        "no Spool/Logs/gp<YYYYMMDD>.log for today; files: {spool:?}"
    );
    let log = read_all(&logs);
    let profile_path = format!("/v3/devices/{DEVICE_ID}/profile");
    assert!(
        log.lines()
            .any(|l| l.contains(&profile_path) && l.contains("200")),
        "the -d log names the request and its status 200:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains(&profile_path) && l.contains("401")),
        "the -d log names the request and its status 401:\n{log}"
    );
    assert!(
        log.lines().any(|l| l.contains("50 jobs")),
        "the -d log holds the run's summary (50 jobs):\n{log}"
    );
}

#[test]
fn without_debug_one_summary_line_per_run() {
    let started = SystemTime::now();
    let (inst, net) = first_run(two_jobs(), "");
    run_ok(&inst, &[]);
    let logs = todays_logs(&inst, started);
    assert!(!logs.is_empty(), "no day log file: {:?}", inst.log_files());
    let log = read_all(&logs);
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 2, "two runs, two summary lines:\n{log}");
    assert!(
        lines.iter().all(|l| l.contains("profile")),
        "each summary line mentions the profile:\n{log}"
    );

    // A warning (a retried 503) goes to stderr, not to the log file.
    net.push_fault("/profile", status_fault(503, Some("1")));
    let o = run_ok(&inst, &[]);
    assert!(
        stderr_of(&o).contains("503"),
        "the retry warning is on stderr\n{}",
        show(&o)
    );
    let log = read_all(&todays_logs(&inst, started));
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 3, "one more summary line:\n{log}");
    assert!(
        !log.contains("503"),
        "without -d the warning is not in the log file:\n{log}"
    );

    // An error: on stderr, and the run still leaves one summary line.
    net.set_device_disabled(DEVICE_ID, true);
    let o = inst.run(&[]);
    assert_exit(&o, 4, "disabled device");
    assert!(stderr_of(&o).contains("403"), "{}", show(&o));
    let log = read_all(&todays_logs(&inst, started));
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        4,
        "one summary line for the failed run:\n{log}"
    );
    // Grepping a pulled log for errors finds the failed run, and only it.
    assert!(
        lines[3].contains("[ERROR]") && lines[3].contains("run failed (exit 4)"),
        "the failed run's summary is logged at ERROR: {}",
        lines[3]
    );
    assert!(
        lines[..3].iter().all(|l| l.contains("[INFO]")),
        "successful runs' summaries are INFO:\n{log}"
    );
}

#[test]
fn old_logs_are_removed_recent_ones_kept() {
    let (net, inst) = two_jobs_on_appliance("");
    let logs = inst.path("Spool/Logs");
    let recent = format!(
        "gp{}.log",
        day_stamp(SystemTime::now() - Duration::from_secs(5 * 86_400))
    );
    std::fs::write(logs.join("gp20000101.log"), "very old\n").unwrap();
    std::fs::write(logs.join(&recent), "recent\n").unwrap();
    std::fs::write(logs.join("notes.txt"), "not a log\n").unwrap();

    run_ok(&inst, &[]);
    assert!(
        !logs.join("gp20000101.log").exists(),
        "a log from 2000 is removed (days_of_logs = 90)"
    );
    assert_eq!(
        std::fs::read_to_string(logs.join(&recent)).unwrap(),
        "recent\n",
        "a 5-day-old log is kept untouched"
    );
    assert!(logs.join("notes.txt").exists(), "other files are kept");

    // days_of_logs = 3: the 5-day-old one goes too, today's stays.
    inst.setup(&net, "[defaults]\ndays_of_logs = 3");
    run_ok(&inst, &[]);
    assert!(
        !logs.join(&recent).exists(),
        "with days_of_logs = 3 a 5-day-old log is removed"
    );
    assert!(
        !todays_logs(&inst, SystemTime::now() - Duration::from_secs(60)).is_empty(),
        "today's log is kept"
    );
}

// ---------------------------------------------------------------------------
// 13. cron and installed layouts
// ---------------------------------------------------------------------------

#[test]
fn runs_as_busybox_cron_would() {
    let (_net, inst) = two_jobs_on_appliance("");
    let o = inst.run_cron_like(&[]);
    assert_success(&o, "cron-like run");
    assert!(
        inst.db_path().is_file(),
        "the store is written under the root"
    );
    assert_eq!(stored_ids(&inst), id_set(&["1001", "1002"]));
    assert!(
        !inst.log_files().is_empty(),
        "the summary is logged under the root's Spool/Logs"
    );
}

#[test]
fn runs_from_root_bin_without_cncop_home() {
    let (_net, inst) = two_jobs_on_appliance("");
    let o = inst.run_installed_copy(&[]);
    assert_success(&o, "installed copy");
    assert!(
        inst.db_path().is_file(),
        "the store is written under the root"
    );
    assert!(!inst.log_files().is_empty(), "logged under the root");
    let o = inst.run_installed_copy(&["--list"]);
    assert_exit(&o, 0, "installed copy --list");
    assert_eq!(listed_ids(&stdout_of(&o)), id_set(&["1001", "1002"]));
}

// ---------------------------------------------------------------------------
// 14. Request headers, one connection
// ---------------------------------------------------------------------------

#[test]
fn requests_identify_the_agent() {
    let (net, inst) = two_jobs_on_appliance("");
    run_ok(&inst, &[]);
    run_ok(&inst, &[]);

    let reqs = net.requests();
    assert_eq!(reqs.len(), 2, "one request per run: {reqs:?}");
    // The triple this agent was built for: the host's, or the one
    // `targets/test` names for an appliance binary (CNCOP_TEST_EXPECT_TRIPLE),
    // which proves the emulated binary is the one that ran.
    let triple = expected_triple().unwrap_or_else(|| {
        let ua = reqs[0].header("user-agent").expect("a User-Agent");
        let (_, rest) = ua
            .split_once(" (")
            .expect("`cncopgetprofile/<v> (<triple>)`");
        rest.trim_end_matches(')').to_string()
    });
    let ua = format!("cncopgetprofile/{} ({triple})", env!("CARGO_PKG_VERSION"));
    let auth = basic_auth(DEVICE_ID, DEVICE_KEY);
    for r in &reqs {
        assert!(r.tls, "over TLS");
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, profile_path(DEVICE_ID));
        assert_eq!(r.header("user-agent"), Some(ua.as_str()), "User-Agent");
        assert_eq!(r.header("accept"), Some("application/xml"), "Accept");
        assert_eq!(
            r.header("authorization"),
            Some(auth.as_str()),
            "HTTP Basic with the device id and key"
        );
    }
}

#[test]
fn a_retried_request_reuses_the_connection() {
    let net = net_with_profile(NetOptions::default(), two_jobs());
    // Two requests in one run: a 503 (keep-alive, with a body) then the profile.
    net.push_fault("/profile", status_fault(503, Some("1")));
    let inst = Install::appliance();
    inst.setup(&net, "");
    run_ok(&inst, &[]);

    let reqs = net.requests();
    let seen: Vec<(u64, u16)> = reqs.iter().map(|r| (r.conn, r.status)).collect();
    assert_eq!(reqs.len(), 2, "503 then 200: {seen:?}");
    assert!(
        reqs.iter().all(|r| r.header("connection").is_none()),
        "the agent does not ask to close"
    );
    assert_eq!(
        reqs[0].conn, reqs[1].conn,
        "all requests of one run on one keep-alive connection (conn, status): {seen:?}"
    );
    assert_eq!(net.connections(), 1, "one connection for the run");
}

#[test]
fn profile_and_update_check_share_one_connection() {
    let (net, inst) = two_jobs_on_appliance("");
    // A signed setup: the next root is asked for, the profile fetched, and
    // with --update the update metadata (timestamp, release) after it.
    signed_release(&net, &inst, "3.4.0");
    run_ok(&inst, &["--update"]);

    let reqs = net.requests();
    let seen: Vec<(u64, String, u16)> = reqs
        .iter()
        .map(|r| (r.conn, r.path.clone(), r.status))
        .collect();
    assert!(reqs.len() >= 4, "root, profile and update check: {seen:?}");
    assert!(
        reqs.iter().all(|r| r.conn == reqs[0].conn),
        "all requests of one run on one keep-alive connection: {seen:?}"
    );
    assert_eq!(net.connections(), 1, "one connection for the run: {seen:?}");
}

// ---------------------------------------------------------------------------
// 16. Plain http for the lab
// ---------------------------------------------------------------------------

#[test]
fn plain_http_with_allow_insecure_http_works_and_warns_every_run() {
    let net = net_with_profile(
        NetOptions {
            plain_http: true,
            ..NetOptions::default()
        },
        two_jobs(),
    );
    let inst = Install::appliance();
    inst.setup(&net, "");
    assert!(
        std::fs::read_to_string(inst.ini_path())
            .unwrap()
            .contains("allow_insecure_http = On")
    );
    for run in ["first", "second"] {
        let o = run_ok(&inst, &[]);
        let err = stderr_of(&o).to_ascii_lowercase();
        assert!(
            err.contains("insecure") || err.contains("without tls"),
            "the {run} run warns about plain http on stderr\n{}",
            show(&o)
        );
    }
    let statuses: Vec<u16> = net.profile_requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 304]);
    assert!(net.requests().iter().all(|r| !r.tls));
    assert_eq!(stored_ids(&inst), id_set(&["1001", "1002"]));
}
