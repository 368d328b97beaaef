//! Faults of the disk and of the host (PROTOCOL sections 3 and 7): a full
//! disk, a file size limit, a read-only or missing `Config/`, a missing or
//! impossible `Spool/Logs/`, a store the agent may not read, stores of
//! another format, another program of the suite holding the store open, and
//! the modes of the files the agent creates.
//!
//! The real agent binary runs against the local cncop network (real TLS on
//! 127.0.0.1) with real files, a real `RLIMIT_FSIZE`, a real full tmpfs, a
//! real read-only bind mount and a real unprivileged user. Tests run as root
//! here, and root ignores permission bits, so the permission cases run the
//! agent as `nobody` through `setpriv` when the test is root. The three
//! cases that mount file systems need root: they are `#[ignore]`d, and CI
//! (root) runs them with `cargo test -- --ignored`. No case skips itself: one
//! that cannot be set up fails, rather than pass having checked nothing.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use support::*;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The unprivileged user and group the permission cases run the agent as.
const NOBODY: u32 = 65534;

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Whether `setpriv` (util-linux) is here.
fn have_setpriv() -> bool {
    Command::new("setpriv")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `prefix... [RUNNER] AGENT args...` with `CNCOP_HOME` set to the install root.
fn run_via(inst: &Install, prefix: &[&str], args: &[&str]) -> Output {
    let mut cmd = agent_command_via(prefix);
    cmd.args(args).env("CNCOP_HOME", inst.root());
    exec(cmd, RUN_LIMIT)
}

/// Runs a shell line, panicking with its output if it fails.
#[track_caller]
fn sh(line: &str) {
    let o = Command::new("sh")
        .args(["-c", line])
        .output()
        .expect("run sh");
    assert!(o.status.success(), "`{line}` failed\n{}", show(&o));
}

/// Runs a shell line; `Err` with its stderr when it fails.
fn try_sh(line: &str) -> Result<(), String> {
    let o = Command::new("sh")
        .args(["-c", line])
        .output()
        .map_err(|e| e.to_string())?;
    if o.status.success() {
        Ok(())
    } else {
        Err(stderr_of(&o).trim().to_string())
    }
}

fn quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

/// Gives `path` and everything under it to `uid`:`gid`.
fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    if path.is_dir() && !path.is_symlink() {
        for e in std::fs::read_dir(path).expect("read_dir").flatten() {
            chown_tree(&e.path(), uid, gid);
        }
    }
}

/// How the permission cases run the agent: the prefix that drops
/// privileges (empty when the test is not root) and the binary to run.
struct Unprivileged {
    prefix: Vec<&'static str>,
    exe: PathBuf,
}

/// As `nobody` via `setpriv` when the test is root (the install root is
/// given to `nobody` first; when `nobody` cannot reach the built agent, a
/// folder on its path being private, a copy in the install root's `bin/`
/// runs, as on an appliance), else directly as the test's own unprivileged
/// user. Root without `setpriv` (util-linux) is a failure, not a skip.
fn unprivileged(inst: &Install) -> Unprivileged {
    if !is_root() {
        return Unprivileged {
            prefix: Vec::new(),
            exe: agent_path(),
        };
    }
    assert!(
        have_setpriv(),
        "running as root, the permission cases need setpriv (Debian package util-linux)"
    );
    let prefix = vec![
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
    ];
    let can_run = agent_command_via(&prefix)
        .arg("--help")
        .output()
        .is_ok_and(|o| o.status.success());
    let exe = if can_run {
        agent_path()
    } else {
        let copy = inst.path("bin/cncopgetprofile");
        std::fs::copy(agent_path(), &copy).expect("copy the agent into bin/");
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755))
            .expect("chmod the agent copy");
        copy
    };
    chown_tree(inst.root(), NOBODY, NOBODY);
    Unprivileged { prefix, exe }
}

/// Runs the agent as `how` says, with `CNCOP_HOME` set to the install root.
fn run_as(inst: &Install, how: &Unprivileged, args: &[&str]) -> Output {
    let mut cmd = agent_command_via_at(&how.prefix, &how.exe);
    cmd.args(args).env("CNCOP_HOME", inst.root());
    exec(cmd, RUN_LIMIT)
}

/// A mount made by a test, undone when dropped.
struct Mounted {
    dir: PathBuf,
}

impl Mounted {
    /// `mount -t tmpfs -o size=SIZE tmpfs DIR`.
    fn tmpfs(dir: &Path, size: &str) -> Result<Mounted, String> {
        try_sh(&format!(
            "mount -t tmpfs -o size={size} tmpfs {}",
            quote(dir)
        ))?;
        Ok(Mounted {
            dir: dir.to_path_buf(),
        })
    }

    /// `DIR` bound onto itself, read-only.
    fn read_only(dir: &Path) -> Result<Mounted, String> {
        try_sh(&format!("mount --bind {0} {0}", quote(dir)))?;
        let m = Mounted {
            dir: dir.to_path_buf(),
        };
        try_sh(&format!("mount -o remount,ro,bind {}", quote(dir)))?;
        Ok(m)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let d = quote(&self.dir);
        if try_sh(&format!("umount {d}")).is_err() {
            let _ = try_sh(&format!("umount -l {d}"));
        }
    }
}

/// A second, bigger profile (2000 jobs, another seed).
fn bigger_profile() -> Vec<u8> {
    profile_xml_with(DEVICE_ID, 2000, 2, "2026-11-28T07:00:00Z")
}

/// An install that stored 50 genprofile jobs; the network then serves
/// `next` (so a successful run would change the store).
fn stored_then_serving(next: Vec<u8>) -> (Install, TestNetwork) {
    let net = net_with_profile(NetOptions::default(), profile_xml(DEVICE_ID, 50));
    let inst = Install::appliance();
    inst.setup(&net, "");
    run_ok(&inst, &[]);
    net.set_profile(DEVICE_ID, next.clone(), Some(etag_for(&next)));
    (inst, net)
}

/// A refused run: exit 6, nothing on stdout, exactly one line on stderr,
/// which it returns.
#[track_caller]
fn one_line_exit_6(o: &Output, what: &str) -> String {
    assert_exit(o, 6, what);
    assert_stdout_empty(o, what);
    let lines = err_lines(o);
    assert_eq!(lines.len(), 1, "{what}: one line on stderr\n{}", show(o));
    eprintln!("{what}: {}", lines[0]);
    lines[0].clone()
}

/// The old store is still there, byte for byte, and `--list` shows it.
#[track_caller]
fn old_store_kept(before: &Snap, inst: &Install, what: &str) {
    assert_store_untouched(before, inst, what);
    assert_eq!(
        stored_ids(inst),
        gen_ids(50),
        "{what}: --list shows the old jobs"
    );
    assert!(
        config_files(inst, "backupjobs.db.").is_empty(),
        "{what}: no other store file is left in Config/ (a partial new store would keep \
         the disk full): {:?}",
        config_files(inst, "backupjobs.db.")
    );
}

#[track_caller]
fn says_disk_full(line: &str, what: &str) {
    let l = line.to_lowercase();
    assert!(
        l.contains("backupjobs.db"),
        "{what}: the error names the store: {line}"
    );
    assert!(
        l.contains("disk is full") || l.contains("no space left") || l.contains("file too large"),
        "{what}: the error says the disk is full: {line}"
    );
}

// ---------------------------------------------------------------------------
// Disk full and write errors
// ---------------------------------------------------------------------------

/// `RLIMIT_FSIZE` of 128 KiB: writing the new store past it fails with
/// EFBIG (SIGXFSZ is ignored, so the write returns the error).
#[test]
fn a_write_past_the_file_size_limit_exits_6_and_keeps_the_old_store() {
    let (inst, _net) = stored_then_serving(bigger_profile());
    let before = snap(&inst);
    let limited = [
        "sh",
        "-c",
        "trap '' XFSZ; ulimit -f 256; exec \"$0\" \"$@\"",
    ];
    let o = run_via(&inst, &limited, &[]);
    let line = one_line_exit_6(&o, "a run under ulimit -f 256");
    says_disk_full(&line, "file size limit");
    old_store_kept(&before, &inst, "file size limit");

    run_ok(&inst, &[]);
    assert_eq!(
        stored_ids(&inst),
        gen_ids(2000),
        "without the limit, B is stored"
    );
}

/// The install root on a 512 KiB tmpfs: the new store (4000 jobs, about
/// 1 MB) does not fit (ENOSPC).
/// Once the file system has room, the next run stores the new profile.
#[test]
#[ignore = "needs root (mounts a tmpfs): CI runs the ignored tests as root"]
fn a_full_file_system_exits_6_and_keeps_the_old_store() {
    let case = "a full file system";
    assert!(is_root(), "{case}: mounting a tmpfs needs root");
    let mnt = tempfile::tempdir().expect("temp dir");
    let mounted = Mounted::tmpfs(mnt.path(), "512k")
        .unwrap_or_else(|e| panic!("{case}: cannot mount a tmpfs: {e}"));
    let net = net_with_profile(NetOptions::default(), profile_xml(DEVICE_ID, 50));
    let inst = Install::appliance_in(mnt.path());
    inst.setup(&net, "");
    run_ok(&inst, &[]);
    let next = profile_xml_with(DEVICE_ID, 4000, 2, "2026-11-28T07:00:00Z");
    net.set_profile(DEVICE_ID, next.clone(), Some(etag_for(&next)));
    let before = snap(&inst);

    let o = inst.run(&[]);
    let line = one_line_exit_6(&o, "a run on a full file system");
    says_disk_full(&line, case);
    old_store_kept(&before, &inst, case);

    sh(&format!("mount -o remount,size=32m {}", quote(mnt.path())));
    run_ok(&inst, &[]);
    assert_eq!(stored_ids(&inst), gen_ids(4000), "with room, B is stored");
    drop(inst);
    drop(mounted);
}

// ---------------------------------------------------------------------------
// Config/ read-only or missing
// ---------------------------------------------------------------------------

/// `chmod 0555 Config` (the agent runs unprivileged): the new store cannot
/// be created beside the old one.
#[test]
fn a_read_only_config_folder_exits_6_and_keeps_the_store() {
    let case = "read-only Config/ (mode 0555)";
    let (inst, _net) = stored_then_serving(bigger_profile());
    let how = unprivileged(&inst);
    let config = inst.path("Config");
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o555)).unwrap();
    let before = snap(&inst);

    let o = run_as(&inst, &how, &[]);
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o755)).unwrap();
    let line = one_line_exit_6(&o, case);
    assert!(
        line.contains(&config.display().to_string()),
        "{case}: the error names the folder or a file in it: {line}"
    );
    assert!(
        line.to_lowercase().contains("permission denied"),
        "{case}: the error says why: {line}"
    );
    old_store_kept(&before, &inst, case);

    let o = run_as(&inst, &how, &[]);
    assert_exit(&o, 0, "the same run once Config/ is writable");
    assert_eq!(stored_ids(&inst), gen_ids(2000));
}

/// An install that stored 50 jobs, the network now serving 2000, and its
/// `Config/` then bound read-only onto itself (root only); the snapshot is
/// from before the mount.
fn read_only_config_after_a_run(case: &str) -> (Install, TestNetwork, Snap, Mounted) {
    assert!(is_root(), "{case}: a read-only bind mount needs root");
    let (inst, net) = stored_then_serving(bigger_profile());
    let config = inst.path("Config");
    let before = snap(&inst);
    let mounted = Mounted::read_only(&config)
        .unwrap_or_else(|e| panic!("{case}: cannot bind-mount read-only: {e}"));
    assert!(
        std::fs::write(config.join("probe"), b"x").is_err(),
        "{case}: the bind mount is read-only"
    );
    (inst, net, before, mounted)
}

/// `Config/` on a read-only file system (a read-only bind mount, as flash
/// remounted read-only after errors looks to a program).
#[test]
#[ignore = "needs root (a read-only bind mount): CI runs the ignored tests as root"]
fn config_on_a_read_only_file_system_exits_6_and_keeps_the_store() {
    let case = "Config/ on a read-only file system";
    let (inst, _net, before, mounted) = read_only_config_after_a_run(case);
    let config = inst.path("Config");

    let o = inst.run(&[]);
    let line = one_line_exit_6(&o, case);
    assert!(
        line.contains(&config.display().to_string()),
        "{case}: the error names the folder or a file in it: {line}"
    );
    assert!(
        line.to_lowercase().contains("read-only"),
        "{case}: the error says the file system is read-only: {line}"
    );
    assert_eq!(
        stored_ids(&inst),
        gen_ids(50),
        "--list works on the read-only store"
    );
    drop(mounted);
    old_store_kept(&before, &inst, case);

    run_ok(&inst, &[]);
    assert_eq!(stored_ids(&inst), gen_ids(2000));
}

/// `--dry-run` writes nothing under `Config/`: not a store-sized scratch
/// file, not the lock file. On a read-only `Config/` it still reports the
/// whole diff (a dry run that needed to write would fail there with exit 6).
#[test]
#[ignore = "needs root (a read-only bind mount): CI runs the ignored tests as root"]
fn dry_run_on_a_read_only_config_reports_the_diff_and_writes_nothing() {
    let case = "--dry-run with Config/ on a read-only file system";
    let (inst, _net, before, mounted) = read_only_config_after_a_run(case);
    let o = inst.run(&["--dry-run"]);
    assert_exit(&o, 0, case);
    let text = stdout_of(&o);
    let added: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("add     "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    let want: std::collections::BTreeSet<String> =
        gen_ids(2000).difference(&gen_ids(50)).cloned().collect();
    assert_eq!(added, want, "{case}: every new job is an add line");
    assert!(
        !text.lines().any(|l| l.starts_with("remove")),
        "{case}: no stored job is removed\n{text}"
    );
    let last = text.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("dry run:") && last.contains("1950 added"),
        "{case}: the summary counts the adds: {last}"
    );
    drop(mounted);
    old_store_kept(&before, &inst, case);
    assert_eq!(
        config_files(&inst, "backupjobs.db."),
        Vec::<PathBuf>::new(),
        "{case}: no files beside the store"
    );
}

/// No `Config/` at all, the INI given with `-c` elsewhere: the agent makes
/// the folder and stores the profile there.
#[test]
fn a_missing_config_folder_is_created() {
    let net = net_with_profile(NetOptions::default(), two_jobs());
    let inst = Install::appliance();
    let etc = inst.path("etc");
    net.write_ca(&etc).expect("write the CA");
    let ini = inst.ini_for(&net, "[network]\nca_file = etc/ca.pem\n");
    let ini_path = etc.join("cncop3.ini");
    std::fs::write(&ini_path, ini).unwrap();
    std::fs::remove_dir_all(inst.path("Config")).unwrap();

    run_ok(&inst, &["-c", ini_path.to_str().unwrap()]);
    assert!(inst.path("Config").is_dir(), "Config/ is created");
    assert_eq!(stored_ids(&inst), id_set(&["1001", "1002"]));
    assert_eq!(mode_of(&inst.db_path()), 0o600);
}

/// No `Spool/` at all: with `-d` the log folder and the day's log appear.
#[test]
fn a_missing_log_folder_is_created() {
    let (_net, inst) = two_jobs_on_appliance("");
    std::fs::remove_dir_all(inst.path("Spool")).unwrap();

    run_ok(&inst, &["-d"]);
    let logs = inst.log_files();
    assert_eq!(logs.len(), 1, "one log file in Spool/Logs/: {logs:?}");
    let name = logs[0].file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("gp") && name.ends_with(".log"),
        "the day's log: {name}"
    );
    assert!(
        inst.read_logs().contains("profile updated"),
        "the run is logged\n{}",
        inst.read_logs()
    );
    assert_eq!(stored_ids(&inst), id_set(&["1001", "1002"]));
}

/// `Spool/Logs` is a file, so it cannot be the log folder: logs are
/// diagnostics, so the run still succeeds, with one warning on stderr.
#[test]
fn a_log_folder_that_is_a_file_warns_once_and_the_run_succeeds() {
    let (inst, _net) = stored_then_serving(two_jobs());
    let logs = inst.path("Spool/Logs");
    std::fs::remove_dir_all(&logs).unwrap();
    std::fs::write(&logs, b"not a folder\n").unwrap();

    for args in [&[][..], &["-d"][..]] {
        let what = format!("cncopgetprofile {} with Spool/Logs a file", args.join(" "));
        let o = inst.run(args);
        assert_success(&o, &what);
        let lines = err_lines(&o);
        assert_eq!(
            lines.len(),
            1,
            "{what}: one warning on stderr\n{}",
            show(&o)
        );
        assert!(
            lines[0].contains("Spool/Logs"),
            "{what}: the warning names the log folder: {}",
            lines[0]
        );
        assert_eq!(std::fs::read(&logs).unwrap(), b"not a folder\n");
    }
    assert_eq!(stored_ids(&inst), id_set(&["1001", "1002"]));
}

// ---------------------------------------------------------------------------
// A store the agent may not read
// ---------------------------------------------------------------------------

/// The store belongs to another user, mode 0600: a permission problem, not
/// damage, so the file is left exactly where and as it is.
#[test]
fn a_store_the_agent_may_not_read_exits_6_and_is_left_alone() {
    let case = "a store the agent may not read";
    let (inst, _net) = stored_then_serving(bigger_profile());
    let how = unprivileged(&inst);
    let db = inst.db_path();
    let owner = std::fs::metadata(inst.root()).unwrap().uid();
    if how.prefix.is_empty() {
        // Not root: the owner itself may not read a mode 000 file.
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o000)).unwrap();
    } else {
        std::os::unix::fs::chown(&db, Some(0), Some(0)).unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let before = snap(&inst);

    let o = run_as(&inst, &how, &[]);
    let line = one_line_exit_6(&o, case);
    assert!(
        line.contains(&db.display().to_string()),
        "{case}: the error names the store: {line}"
    );
    assert!(
        line.to_lowercase().contains("permission denied"),
        "{case}: the error says why: {line}"
    );
    assert_store_untouched(&before, &inst, case);
    assert!(
        config_files(&inst, "backupjobs.db.").is_empty(),
        "{case}: the store is not moved aside (permissions are not damage): {:?}",
        config_files(&inst, "backupjobs.db.")
    );

    // Once the agent may read it again, the run goes on from it.
    std::os::unix::fs::chown(&db, Some(owner), Some(owner)).unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = run_as(&inst, &how, &[]);
    assert_exit(&o, 0, "the same run once the store is readable");
    assert_eq!(stored_ids(&inst), gen_ids(2000));
}

// ---------------------------------------------------------------------------
// A store of another format
// ---------------------------------------------------------------------------

/// `bad` replaces the store: the agent moves it aside with its bytes,
/// rebuilds from a full download and exits 0. (Random bytes and a
/// truncated store are in `agent_e2e.rs`.)
fn other_format_is_moved_aside_and_rebuilt(bad: Vec<u8>, what: &str) {
    let net = net_with_profile(NetOptions::default(), profile_xml(DEVICE_ID, 50));
    let inst = Install::appliance();
    inst.setup(&net, "");
    run_ok(&inst, &[]);
    std::fs::write(inst.db_path(), &bad).unwrap();
    std::fs::set_permissions(inst.db_path(), std::fs::Permissions::from_mode(0o600)).unwrap();

    let o = inst.run(&[]);
    assert_success(&o, what);
    let aside = config_files(&inst, "backupjobs.db.corrupt-");
    assert_eq!(
        aside.len(),
        1,
        "{what}: one Config/backupjobs.db.corrupt-* file\n{}",
        show(&o)
    );
    assert!(
        std::fs::read(&aside[0]).unwrap() == bad,
        "{what}: the file moved aside keeps its bytes"
    );
    let req = net.profile_requests().pop().unwrap();
    assert_eq!(req.header("if-none-match"), None, "{what}: a full download");
    assert_eq!(
        stored_ids(&inst),
        gen_ids(50),
        "{what}: the store is rebuilt"
    );
    assert_eq!(mode_of(&inst.db_path()), 0o600);
    let err = stderr_of(&o);
    assert!(
        err.contains("backupjobs.db") && err.contains(&aside[0].display().to_string()),
        "{what}: stderr says which file was moved where\n{}",
        show(&o)
    );
}

#[test]
fn a_sqlite_file_as_store_is_moved_aside_and_rebuilt() {
    // Made once by SQLite 3 (page size 512): `create table jobs (id text
    // primary key, name text)` and one row. A file, not a SQLite call, so the
    // tests need no Python or sqlite3.
    let bytes = include_bytes!("fixtures/sqlite-store.db").to_vec();
    assert!(bytes.starts_with(b"SQLite format 3\0"));
    other_format_is_moved_aside_and_rebuilt(bytes, "a SQLite file as the store");
}

#[test]
fn a_text_file_as_store_is_moved_aside_and_rebuilt() {
    let text = b"# backup jobs\n1001 CCS /share/Accounting\n1002 MSSQL Ledger\n".to_vec();
    other_format_is_moved_aside_and_rebuilt(text, "a text file as the store");
}

// ---------------------------------------------------------------------------
// File modes
// ---------------------------------------------------------------------------

/// The store and the lock are 0600 and the logs not world-readable, even
/// with a umask of 000 (the agent must not rely on cron's umask).
#[test]
fn store_lock_and_logs_are_private_whatever_the_umask() {
    let (_net, inst) = two_jobs_on_appliance("");
    let umask0 = ["sh", "-c", "umask 000; exec \"$0\" \"$@\""];
    for args in [&[][..], &["-d"][..]] {
        let o = run_via(&inst, &umask0, args);
        assert_success(&o, "a run with umask 000");
    }
    assert_eq!(mode_of(&inst.db_path()), 0o600, "Config/backupjobs.db");
    assert_eq!(
        mode_of(&inst.path("Config/cncopgetprofile.lock")),
        0o600,
        "Config/cncopgetprofile.lock"
    );
    let logs = inst.log_files();
    assert!(!logs.is_empty(), "the runs wrote a log");
    for log in logs {
        let mode = mode_of(&log);
        assert_eq!(
            mode & 0o007,
            0,
            "{} is mode {mode:o}: readable by everyone",
            log.display()
        );
    }
}

// ---------------------------------------------------------------------------
// Another program reading the store
// ---------------------------------------------------------------------------

/// A profile of jobs `ids` (targets 127.0.1.1:443) and one firewall
/// endpoint.
fn profile_with_endpoint(ids: &[&str], endpoint: (std::net::Ipv4Addr, u16)) -> Vec<u8> {
    let (ip, port) = endpoint;
    let mut s = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <profile schema=\"3\" device=\"{DEVICE_ID}\" generated=\"2026-11-27T07:00:00Z\">\n\
         <firewall><endpoint host=\"{ip}\" port=\"{port}\" proto=\"tcp\" purpose=\"prime\"/></firewall>\n<jobs>\n"
    );
    for id in ids {
        s.push_str(&format!(
            "<job id=\"{id}\" name=\"Job {id}\" type=\"CCS\"><source path=\"/share/{id}\"/>\
             <target host=\"127.0.1.1\" port=\"443\"/></job>\n"
        ));
    }
    s.push_str("</jobs>\n</profile>\n");
    s.into_bytes()
}

/// Ids of the jobs an open reader sees.
fn reader_ids(r: &cncopgetprofile::StoreReader) -> std::collections::BTreeSet<String> {
    r.jobs()
        .expect("the reader lists jobs")
        .map(|j| j.expect("a job").id.to_string())
        .collect()
}

/// The suite's other programs (cncopagent, cncopscheduler) read the store
/// with the library, and may hold it open while an hourly run starts. The
/// run must not be disturbed: a new profile replaces the file (the reader
/// keeps its consistent old view), and a changed firewall state is kept,
/// without anything on stderr (cron would mail it) and without the next run
/// reporting the same change again.
#[test]
fn a_reader_holding_the_store_open_does_not_disturb_a_run() {
    use cncopgetprofile::StoreReader;
    let ip = std::net::Ipv4Addr::new(127, 79, (std::process::id() % 250) as u8, 2);
    let listener = std::net::TcpListener::bind((ip, 0)).expect("bind a loopback endpoint");
    let endpoint = (ip, listener.local_addr().unwrap().port());
    let net = net_with_profile(
        NetOptions::default(),
        profile_with_endpoint(&["1001", "1002"], endpoint),
    );
    let inst = Install::appliance();
    inst.setup(&net, "[firewall]\nenabled = On\nprobe_timeout = 1\n");
    run_ok(&inst, &[]);

    // A new profile while a reader holds the store.
    let reader = StoreReader::open(&inst.db_path())
        .expect("open the store")
        .expect("there is a store");
    let next = profile_with_endpoint(&["2001", "2002", "2003"], endpoint);
    net.set_profile(DEVICE_ID, next.clone(), Some(etag_for(&next)));
    let o = run_ok(&inst, &[]);
    assert!(o.stderr.is_empty(), "a new profile\n{}", show(&o));
    assert_eq!(
        reader_ids(&reader),
        id_set(&["1001", "1002"]),
        "the open reader keeps its old view"
    );
    drop(reader);
    assert_eq!(stored_ids(&inst), id_set(&["2001", "2002", "2003"]));

    // The endpoint closes while a reader holds the store.
    let reader = StoreReader::open(&inst.db_path())
        .expect("open the store")
        .expect("there is a store");
    drop(listener);
    let reports = net.firewall_reports().len();
    let o = run_ok(&inst, &[]);
    assert!(
        o.stderr.is_empty(),
        "an endpoint becoming blocked is reported, nothing for cron to mail\n{}",
        show(&o)
    );
    assert_eq!(net.firewall_reports().len(), reports + 1, "one report");
    assert_eq!(reader_ids(&reader), id_set(&["2001", "2002", "2003"]));
    drop(reader);
    run_ok(&inst, &[]);
    assert_eq!(
        net.firewall_reports().len(),
        reports + 1,
        "the next run does not report the same change again (its state was kept)"
    );
}
