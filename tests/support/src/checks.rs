//! Reading a run and asserting on it: exit code, stdout and stderr, the
//! listed jobs, a failing run that must leave the store as it was.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::SystemTime;

use crate::install::{Install, age_store, assert_store_untouched, snap};

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

/// A run that succeeded as cron wants it: exit 0, nothing on stdout.
#[track_caller]
pub fn assert_success(o: &Output, what: &str) {
    assert_exit(o, 0, what);
    assert_stdout_empty(o, what);
}

/// Runs the agent with `args`; expects exit 0 and an empty stdout.
#[track_caller]
pub fn run_ok(inst: &Install, args: &[&str]) -> Output {
    let o = inst.run(args);
    assert_success(&o, &format!("cncopgetprofile {}", args.join(" ")));
    o
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

/// The string values of every member named `key`, at any depth, of the JSON
/// document `json` (serde_json's parser; panics naming the document if it
/// is not one).
pub fn json_strings(json: &str, key: &str) -> Vec<String> {
    fn walk(v: &serde_json::Value, key: &str, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(members) => {
                for (k, v) in members {
                    match v.as_str() {
                        Some(s) if k == key => out.push(s.to_string()),
                        _ => walk(v, key, out),
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter().for_each(|v| walk(v, key, out)),
            _ => {}
        }
    }
    let doc: serde_json::Value = serde_json::from_str(json)
        .unwrap_or_else(|e| panic!("not one JSON document ({e}):\n{json}"));
    let mut out = Vec::new();
    walk(&doc, key, &mut out);
    out
}

/// (year, month, day) in UTC of `t`, by the agent's own calendar.
pub fn civil_date(t: SystemTime) -> (i32, u8, u8) {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    // 2026-11-27T07:00:05Z
    let stamp = cncopgetprofile::internals::clock::rfc3339(secs);
    let part = |r: std::ops::Range<usize>| stamp[r].parse::<i32>().expect("rfc3339 digits");
    (part(0..4), part(5..7) as u8, part(8..10) as u8)
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// `--list`'s output (expects exit 0).
#[track_caller]
pub fn list_stdout(inst: &Install) -> String {
    let o = inst.run(&["--list"]);
    assert_exit(&o, 0, "--list");
    stdout_of(&o)
}
