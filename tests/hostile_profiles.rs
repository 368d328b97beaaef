//! Hostile and broken profiles (PROTOCOL section 2.1): the corpus of
//! `tests/corpus/` and a few giants made at test time, each refused with the
//! right message, never a panic, whatever way the body is split; and the
//! accepted oddities accepted with exactly their jobs. Then the same documents
//! served to the real binary over the local TLS network: exit 5 and the store
//! untouched for each refusal, exit 0 for each oddity.
//!
//! Every corpus file says what it expects: on its first line as
//! `<!-- expect: ... -->`, or, when it cannot open with a comment (a BOM, an
//! XML declaration, UTF-16, an empty file), in `tests/corpus/expect.txt` as
//! `file<TAB>expectation`. A refusal's expectation is a fragment of its
//! message; an oddity's is `jobs` followed by the ids accepted, in order.

use cncopgetprofile::Error;
use cncopgetprofile::internals::profile::{self, Header, ProfileSink, Summary};
use cncopgetprofile::{Endpoint, Job};
use std::collections::{BTreeMap, HashSet};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::*;

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus");
/// The committed corpus stays small; the giants are made at test time.
const CORPUS_BUDGET: u64 = 200 * 1024;
/// Read sizes every document is also fed in.
const SPLITS: [usize; 3] = [1, 7, 4096];

// ---------------------------------------------------------------------------
// The corpus
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
enum Expect {
    /// Refused with `Error::Profile` whose message holds this.
    Refused(String),
    /// Accepted with exactly these job ids, in document order.
    Accepted(Vec<String>),
}

struct Doc {
    /// `reject/...xml`, `accept/...xml`, or `generated/...` for the giants.
    name: String,
    body: Vec<u8>,
    expect: Expect,
}

impl Doc {
    fn refused(&self) -> Option<&str> {
        match &self.expect {
            Expect::Refused(fragment) => Some(fragment),
            Expect::Accepted(_) => None,
        }
    }
}

/// `tests/corpus/expect.txt`: file -> expectation text.
fn side_expectations() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(Path::new(CORPUS).join("expect.txt"))
        .expect("read tests/corpus/expect.txt");
    let mut map = BTreeMap::new();
    for line in text.lines() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (file, expect) = line
            .split_once('\t')
            .unwrap_or_else(|| panic!("expect.txt: no tab in {line:?}"));
        assert!(
            map.insert(file.to_string(), expect.to_string()).is_none(),
            "expect.txt names {file} twice"
        );
    }
    map
}

/// The expectation on a document's first line, `<!-- expect: ... -->`.
fn first_line_expectation(body: &[u8]) -> Option<String> {
    let line = body.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let inner = line.strip_prefix("<!-- expect: ")?.strip_suffix(" -->")?;
    Some(inner.to_string())
}

fn parse_expectation(dir: &str, text: &str) -> Expect {
    match dir {
        "accept" => {
            let mut words = text.split(' ');
            assert_eq!(
                words.next(),
                Some("jobs"),
                "an accept expectation is \"jobs\" and the ids: {text:?}"
            );
            Expect::Accepted(words.map(str::to_string).collect())
        }
        _ => {
            assert!(!text.trim().is_empty(), "an empty refusal fragment");
            Expect::Refused(text.to_string())
        }
    }
}

/// Every committed corpus document with its expectation, sorted by name.
fn corpus() -> Vec<Doc> {
    let mut side = side_expectations();
    let mut docs = Vec::new();
    for dir in ["reject", "accept"] {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(Path::new(CORPUS).join(dir))
            .unwrap_or_else(|e| panic!("read tests/corpus/{dir}: {e}"))
            .map(|e| e.expect("corpus entry").path())
            .collect();
        paths.sort();
        for path in paths {
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            assert!(
                file.ends_with(".xml"),
                "tests/corpus/{dir}/{file}: not .xml"
            );
            let name = format!("{dir}/{file}");
            let body = std::fs::read(&path).expect("read a corpus file");
            let text = match (side.remove(&name), first_line_expectation(&body)) {
                (Some(_), Some(_)) => panic!("{name}: expectation both inline and in expect.txt"),
                (Some(t), None) | (None, Some(t)) => t,
                (None, None) => {
                    panic!("{name}: no expectation (first line <!-- expect: ... --> or expect.txt)")
                }
            };
            let expect = parse_expectation(dir, &text);
            docs.push(Doc { name, body, expect });
        }
    }
    assert!(
        side.is_empty(),
        "expect.txt names files that do not exist: {:?}",
        side.keys().collect::<Vec<_>>()
    );
    docs
}

/// The giants, made here rather than committed.
fn generated() -> Vec<Doc> {
    let open = format!("<profile schema=\"3\" device=\"{DEVICE_ID}\"><jobs>");
    let close = "</jobs></profile>";
    let job = |attrs: &str, children: &str| {
        format!("<job id=\"1001\" name=\"A\" type=\"CCS\"{attrs}>{children}</job>")
    };
    let big = 10 * 1024 * 1024;
    let refused = |name: &str, body: String, fragment: &str| Doc {
        name: format!("generated/{name}"),
        body: body.into_bytes(),
        expect: Expect::Refused(fragment.to_string()),
    };
    let mut jobs_100001 = open.clone();
    for i in 0..=100_000 {
        jobs_100001.push_str(&format!("<job id=\"{i}\" name=\"n\" type=\"CCS\"/>"));
    }
    jobs_100001.push_str(close);
    vec![
        refused(
            "deep-100000",
            format!(
                "{open}{}{}{close}",
                "<a>".repeat(100_000),
                "</a>".repeat(100_000)
            ),
            "<a> is nested 33 elements deep, the limit is 32",
        ),
        refused(
            "attribute-10mb",
            format!(
                "{open}{}{close}",
                job(&format!(" x=\"{}\"", "a".repeat(big)), "")
            ),
            "a tag is larger than 262144 bytes, the largest markup accepted",
        ),
        refused(
            "pre-text-10mb",
            format!(
                "{open}{}{close}",
                job("", &format!("<pre>{}</pre>", "t".repeat(big)))
            ),
            "a text run is larger than 262144 bytes",
        ),
        refused(
            "comment-1mb",
            format!("{open}<!--{}-->{close}", "c".repeat(1024 * 1024)),
            "a comment is larger than 262144 bytes",
        ),
        refused(
            "cdata-1mb",
            format!(
                "{open}{}{close}",
                job(
                    "",
                    &format!("<pre><![CDATA[{}]]></pre>", "d".repeat(1024 * 1024))
                )
            ),
            "a CDATA section is larger than 262144 bytes",
        ),
        refused(
            "trailing-whitespace-1mb",
            format!("{open}{close}{}", " ".repeat(1024 * 1024)),
            "a text run is larger than 262144 bytes",
        ),
        refused(
            "jobs-100001",
            jobs_100001,
            "profile has more than 100000 jobs, the limit",
        ),
    ]
}

// ---------------------------------------------------------------------------
// Parsing with a recording sink
// ---------------------------------------------------------------------------

/// Records every sink call as a line, and refuses a repeated job id as the
/// store does (the parser leaves duplicates to its sink).
#[derive(Default)]
struct Record {
    calls: Vec<String>,
    jobs: Vec<Job>,
    endpoints: Vec<Endpoint>,
    headers: Vec<Header>,
    ids: HashSet<String>,
}

impl ProfileSink for Record {
    fn header(&mut self, header: &Header) -> cncopgetprofile::Result<()> {
        self.calls.push(format!("header {header:?}"));
        self.headers.push(header.clone());
        Ok(())
    }
    fn endpoint(&mut self, endpoint: &Endpoint) -> cncopgetprofile::Result<()> {
        self.calls.push(format!("endpoint {endpoint:?}"));
        self.endpoints.push(endpoint.clone());
        Ok(())
    }
    fn job(&mut self, job: &Job) -> cncopgetprofile::Result<()> {
        // `Debug` hides the password; the comparison must not.
        let password = job.credential.as_ref().map(|c| c.password.as_str());
        self.calls
            .push(format!("job {job:?} password={password:?}"));
        if !self.ids.insert(job.id.to_string()) {
            return Err(Error::Profile(
                format!(
                    "job \"{}\" appears more than once; job ids must be unique",
                    job.id
                )
                .into(),
            ));
        }
        // Keeping 100 000 clones would only cost memory.
        if self.jobs.len() < 1000 {
            self.jobs.push(job.clone());
        }
        Ok(())
    }
}

/// Serves `data` in reads of at most `size` bytes.
struct Pieces<'a> {
    data: &'a [u8],
    size: usize,
    served: u64,
}

impl Read for Pieces<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.size.min(buf.len()).min(self.data.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        self.served += n as u64;
        Ok(n)
    }
}

/// What one parse gave: the summary or the refusal's message (the error's
/// `Display`), and the sink calls made either way.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    result: Result<Summary, String>,
    calls: Vec<String>,
    /// `Error::Profile` (exit 5) or not.
    profile_error: bool,
}

/// Parses `body` in reads of `size` bytes (`None`: the whole body at once),
/// catching a panic as `Err(description)`. Also returns the sink and the
/// number of body bytes the parser read.
fn parse_doc(body: &[u8], size: Option<usize>) -> Result<(Outcome, Record, u64), String> {
    catch_unwind(AssertUnwindSafe(|| {
        let mut sink = Record::default();
        let mut reader = Pieces {
            data: body,
            size: size.unwrap_or(usize::MAX),
            served: 0,
        };
        let result = profile::parse(&mut reader, DEVICE_ID, &mut sink);
        let profile_error = matches!(result, Err(Error::Profile(_)));
        let outcome = Outcome {
            result: result.map_err(|e| e.to_string()),
            calls: std::mem::take(&mut sink.calls),
            profile_error,
        };
        (outcome, sink, reader.served)
    }))
    .map_err(|panic| {
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic".to_string())
    })
}

/// Why `outcome` does not meet `doc`'s expectation, if it does not.
fn verdict(doc: &Doc, outcome: &Outcome, sink: &Record) -> Option<String> {
    match (&doc.expect, &outcome.result) {
        (Expect::Refused(fragment), Err(msg)) => {
            if !outcome.profile_error {
                Some(format!("refused, but not as a profile error: {msg}"))
            } else if !msg.contains(fragment.as_str()) {
                Some(format!("refused with {msg:?}, expected {fragment:?}"))
            } else if msg.contains('\n') {
                Some(format!("the message is not one line: {msg:?}"))
            } else {
                None
            }
        }
        (Expect::Refused(fragment), Ok(summary)) => Some(format!(
            "ACCEPTED ({} jobs), expected a refusal with {fragment:?}",
            summary.jobs
        )),
        (Expect::Accepted(_), Err(msg)) => Some(format!("refused: {msg}")),
        (Expect::Accepted(ids), Ok(summary)) => {
            let got: Vec<&str> = sink.jobs.iter().map(|j| j.id.as_str()).collect();
            if summary.jobs != ids.len() || got != *ids {
                Some(format!("accepted with jobs {got:?}, expected {ids:?}"))
            } else if summary.bytes != doc.body.len() as u64 {
                Some(format!(
                    "summary says {} bytes, the document has {}",
                    summary.bytes,
                    doc.body.len()
                ))
            } else {
                None
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Library-level tests
// ---------------------------------------------------------------------------

#[test]
fn the_corpus_is_small_and_every_file_has_an_expectation() {
    let docs = corpus();
    let size: u64 = walk(Path::new(CORPUS))
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum();
    assert!(
        size < CORPUS_BUDGET,
        "tests/corpus is {size} bytes; keep it under {CORPUS_BUDGET} (make giants at test time)"
    );
    let rejects = docs.iter().filter(|d| d.refused().is_some()).count();
    let accepts = docs.len() - rejects;
    assert!(rejects >= 60, "only {rejects} hostile documents");
    assert!(accepts >= 10, "only {accepts} accepted oddities");
    for doc in &docs {
        let in_dir = doc.name.starts_with("reject/") == doc.refused().is_some();
        assert!(
            in_dir,
            "{}: expectation does not match its folder",
            doc.name
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read a corpus folder") {
        let path = entry.expect("corpus entry").path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn every_document_gets_its_expected_verdict_without_a_panic() {
    let docs: Vec<Doc> = corpus().into_iter().chain(generated()).collect();
    let mut failures = Vec::new();
    for doc in &docs {
        match parse_doc(&doc.body, None) {
            Err(panic) => failures.push(format!("{}: PANICKED: {panic}", doc.name)),
            Ok((outcome, sink, _)) => {
                if let Some(why) = verdict(doc, &outcome, &sink) {
                    failures.push(format!("{}: {why}", doc.name));
                }
            }
        }
    }
    let refused = docs.iter().filter(|d| d.refused().is_some()).count();
    eprintln!(
        "{refused} hostile documents refused, {} oddities accepted (library)",
        docs.len() - refused
    );
    assert!(
        failures.is_empty(),
        "{} of {} documents:\n{}",
        failures.len(),
        docs.len(),
        failures.join("\n")
    );
}

#[test]
fn results_do_not_depend_on_how_the_body_is_split() {
    let docs: Vec<Doc> = corpus().into_iter().chain(generated()).collect();
    let mut failures = Vec::new();
    for doc in &docs {
        let whole = match parse_doc(&doc.body, None) {
            Ok((outcome, ..)) => outcome,
            Err(panic) => {
                failures.push(format!("{}: PANICKED whole: {panic}", doc.name));
                continue;
            }
        };
        for size in SPLITS {
            match parse_doc(&doc.body, Some(size)) {
                Err(panic) => failures.push(format!(
                    "{}: PANICKED in reads of {size} bytes: {panic}",
                    doc.name
                )),
                Ok((split, ..)) if split != whole => failures.push(format!(
                    "{}: reads of {size} bytes give {:?} ({} sink calls), whole gives {:?} ({} sink calls)",
                    doc.name,
                    split.result,
                    split.calls.len(),
                    whole.result,
                    whole.calls.len()
                )),
                Ok(_) => {}
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn giants_are_refused_without_reading_them_whole() {
    // The window holds one unit (256 KiB) and one read (16 KiB): a giant
    // unit is refused once the window is full, not after reading it all.
    let window = 256 * 1024 + 16 * 1024;
    for doc in generated() {
        let (_, _, served) = parse_doc(&doc.body, Some(4096)).expect("no panic");
        let bounded = doc.name.contains("jobs-100001") || served <= window as u64;
        assert!(
            bounded,
            "{}: read {served} of {} bytes before refusing",
            doc.name,
            doc.body.len()
        );
    }
}

fn accepted(name: &str) -> Record {
    let doc = corpus()
        .into_iter()
        .find(|d| d.name == name)
        .unwrap_or_else(|| panic!("no corpus document {name}"));
    let (outcome, sink, _) = parse_doc(&doc.body, None).expect("no panic");
    assert!(outcome.result.is_ok(), "{name}: {:?}", outcome.result);
    sink
}

#[test]
fn accepted_oddities_keep_their_values() {
    let s = accepted("accept/cdata-in-pre-and-post.xml");
    assert_eq!(
        s.jobs[0].pre.as_deref(),
        Some("/bin/sh -c 'a < b && c > d'")
    );
    assert_eq!(s.jobs[0].post.as_deref(), Some("xy<&amp;>"));

    let s = accepted("accept/character-references-in-names.xml");
    assert_eq!(s.jobs[0].name, "Résumés & 写真 \u{1F600}");
    assert_eq!(s.jobs[1].id, "1002");
    assert_eq!(s.jobs[1].name, "<>\"'");
    assert_eq!(s.jobs[1].job_type.as_str(), "CIFS");

    let s = accepted("accept/comments-and-pis-everywhere.xml");
    assert_eq!(s.jobs[0].pre.as_deref(), Some("/bin/true"));
    assert_eq!(s.jobs[0].children.sources().collect::<Vec<_>>(), ["/a"]);

    let s = accepted("accept/cr-only-line-ends.xml");
    assert_eq!(s.jobs[0].pre.as_deref(), Some("a\nb\nc"));

    let s = accepted("accept/crlf-line-ends.xml");
    let cred = s.jobs[1].credential.as_ref().expect("credential");
    assert_eq!(cred.password, "s3cr<t");
    assert!(s.headers[0].generated == "2026-11-27T07:00:00Z");

    let s = accepted("accept/tabs-and-newlines-in-attributes.xml");
    assert_eq!(s.jobs[0].name, "A B C");
    assert_eq!(s.jobs[0].schedule, "0 30 1 * * *");

    let s = accepted("accept/single-quoted-attributes.xml");
    assert_eq!(s.jobs[0].name, "Say \"hi\"");
    assert_eq!(
        s.jobs[0].children.sources().collect::<Vec<_>>(),
        ["/share/\"quoted\""]
    );

    let s = accepted("accept/unknown-elements-and-attributes.xml");
    assert_eq!(s.jobs[0].children.sources().collect::<Vec<_>>(), ["/a"]);
    assert_eq!(s.jobs[0].target, None);
    assert_eq!(s.endpoints.len(), 1);

    let s = accepted("accept/gt-and-quotes-in-attributes.xml");
    assert_eq!(s.jobs[0].name, "a > b 'c'");
    assert_eq!(
        s.jobs[0].children.options().collect::<Vec<_>>(),
        [("n", "x\"y")]
    );

    let s = accepted("accept/retries-leading-zeros.xml");
    assert_eq!(s.jobs[0].retries, 7);

    let s = accepted("accept/limits-exactly.xml");
    let job = &s.jobs[0];
    assert_eq!(job.name.chars().count(), 128);
    assert_eq!(job.children.sources().count(), 256);
    assert_eq!(job.pre.as_ref().map(|p| p.len()), Some(4096));
    assert_eq!(job.credential.as_ref().unwrap().password.len(), 256);
    assert_eq!(s.headers[0].generated.len(), 256);

    let s = accepted("accept/bom-and-declaration.xml");
    assert_eq!(s.headers[0].device, DEVICE_ID);

    let s = accepted("accept/empty-pre-and-post.xml");
    assert_eq!(
        (s.jobs[0].pre.as_deref(), s.jobs[0].post.as_deref()),
        (Some(""), Some(""))
    );
}

// ---------------------------------------------------------------------------
// End to end: the built binary, the local TLS network, the real store
// ---------------------------------------------------------------------------

fn show(o: &Output) -> String {
    format!(
        "exit {:?}, stdout {:?}, stderr {:?}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The job ids of a `--list` listing: the first column under `ID ...`.
fn listed_ids(listing: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut rows = false;
    for line in listing.lines() {
        let first = line.split_whitespace().next();
        if rows {
            ids.extend(first.map(str::to_string));
        } else if first == Some("ID") {
            rows = true;
        }
    }
    ids
}

fn store_snapshot(inst: &Install) -> (Vec<u8>, SystemTime, u64) {
    let meta = std::fs::metadata(inst.db_path()).expect("the store exists");
    (
        inst.db_bytes().expect("read the store"),
        meta.modified().expect("mtime"),
        meta.ino(),
    )
}

#[test]
fn every_hostile_document_is_refused_end_to_end() {
    let docs: Vec<Doc> = corpus().into_iter().chain(generated()).collect();
    let good = small_profile(DEVICE_ID, &[("1001", "CCS"), ("1002", "MSSQL")]);
    let net = net_with_profile(NetOptions::default(), good);
    let inst = Install::bare();
    // A stub reporter: a missing one is a line in the day's log every run.
    let reporter = inst.path("bin/cncopreporter");
    std::fs::write(&reporter, "#!/bin/sh\nexit 0\n").expect("write the stub reporter");
    std::fs::set_permissions(&reporter, std::fs::Permissions::from_mode(0o755))
        .expect("chmod the stub reporter");
    inst.setup(&net, "");
    let o = inst.run(&[]);
    assert_eq!(o.status.code(), Some(0), "first run: {}", show(&o));

    // Aged, so that any write to the store shows in its mtime.
    std::fs::File::options()
        .write(true)
        .open(inst.db_path())
        .expect("open the store")
        .set_modified(UNIX_EPOCH + Duration::from_secs(1_000_000_000))
        .expect("age the store");
    let before = store_snapshot(&inst);

    let mut failures = Vec::new();
    let mut refused = 0;
    for doc in docs.iter().filter(|d| d.refused().is_some()) {
        let fragment = doc.refused().unwrap_or_default();
        net.set_profile(DEVICE_ID, doc.body.clone(), Some(etag_for(&doc.body)));
        let o = inst.run(&[]);
        let stderr = String::from_utf8_lossy(&o.stderr);
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        let mut why = Vec::new();
        if o.status.code() != Some(5) {
            why.push("exit code is not 5".to_string());
        }
        if !o.stdout.is_empty() {
            why.push("stdout is not empty".to_string());
        }
        if lines.len() != 1 {
            why.push(format!("{} stderr lines, expected one", lines.len()));
        }
        if !stderr.contains(fragment) {
            why.push(format!("stderr does not hold {fragment:?}"));
        }
        let now = store_snapshot(&inst);
        if now.0 != before.0 {
            why.push("the store's bytes changed".to_string());
        }
        if now.1 != before.1 {
            why.push("the store's mtime changed".to_string());
        }
        if now.2 != before.2 {
            why.push("the store file was replaced".to_string());
        }
        if why.is_empty() {
            refused += 1;
        } else {
            failures.push(format!("{}: {}: {}", doc.name, why.join("; "), show(&o)));
        }
    }
    let o = inst.run(&["--list"]);
    let listing = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        listed_ids(&listing),
        ["1001", "1002"],
        "the first profile's jobs are still stored:\n{listing}"
    );
    eprintln!("{refused} hostile documents refused end to end (exit 5, store untouched)");

    for doc in &docs {
        let Expect::Accepted(ids) = &doc.expect else {
            continue;
        };
        net.set_profile(DEVICE_ID, doc.body.clone(), Some(etag_for(&doc.body)));
        let o = inst.run(&[]);
        if o.status.code() != Some(0) || !o.stdout.is_empty() {
            failures.push(format!("{}: not accepted: {}", doc.name, show(&o)));
            continue;
        }
        let o = inst.run(&["--list"]);
        let mut listed = listed_ids(&String::from_utf8_lossy(&o.stdout));
        let mut want = ids.clone();
        listed.sort();
        want.sort();
        if listed != want {
            failures.push(format!(
                "{}: the store lists {listed:?}, expected {want:?}",
                doc.name
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} documents:\n{}",
        failures.len(),
        docs.len(),
        failures.join("\n")
    );
}
