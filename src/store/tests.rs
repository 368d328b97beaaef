//! The store's own tests: real files in a temporary folder, jobs fed to a
//! `Replacement` one by one as the parser would, every byte written to the
//! store counted through `write_tap`.

use super::index::tests::HASH_MASK;
use super::index::{RUN_JOBS, id_hash};
use super::tables::{JOB_IDS, JOBS};
use super::*;
use crate::profile::job::{Child, LongValue, Target, Value};
use crate::profile::{Endpoint, Header, Job, ProfileSink, Summary};
use crate::write_tap::{self, Event, Tap};
use redb::{ReadableDatabase, ReadableTable};
use std::cell::RefCell;
use std::os::unix::fs::MetadataExt;
use std::rc::Rc;

const PROFILE: &str = "<profile schema=\"3\" device=\"D\"><jobs>\
    <job id=\"1\" name=\"a\" type=\"CCS\"/></jobs></profile>";

/// A job of about the size of `localnet genprofile`'s (a record of some
/// 250 bytes), whose content changes with `version`.
fn job(id: &str, version: u32) -> Job {
    let mut job = Job::default();
    job.id.push_str(id).unwrap();
    job.name
        .push_str(&format!("Nightly {id} v{version} & Payroll"))
        .unwrap();
    job.schedule.push_str("0 30 2 * * *").unwrap();
    job.retries = 3;
    let mut host = Value::new();
    host.push_str("127.0.2.7").unwrap();
    job.target = Some(Target {
        host,
        port: 445,
        user: None,
    });
    let mut pre = LongValue::new();
    pre.push_str("/opt/cncop/hooks/quiesce.sh --wait 30 --share 'HR & Payroll'")
        .unwrap();
    job.pre = Some(pre);
    job.children
        .push(Child::Source("/share/Accounting/2026/Invoices \"Q4\""))
        .unwrap();
    job.children.push(Child::Source("/share/Scans")).unwrap();
    job.children.push(Child::Exclude("*.tmp")).unwrap();
    job
}

/// Ids `1000`, `1001`, ... of a profile of `n` jobs.
fn ids(n: u32) -> Vec<String> {
    (0..n).map(|i| (1000 + i).to_string()).collect()
}

fn endpoint(port: u16) -> Endpoint {
    let mut e = Endpoint {
        port,
        ..Endpoint::default()
    };
    e.host.push_str("127.0.1.3").unwrap();
    e.proto.push_str("tcp").unwrap();
    e.purpose.push_str("prime").unwrap();
    e
}

/// Every file operation under the test's folder.
#[derive(Default)]
struct Counter {
    written: RefCell<u64>,
    created: RefCell<Vec<String>>,
    /// What happened to the new store file, in order: `w` a write, `s` a
    /// sync, `r` its rename into place.
    new_file: RefCell<String>,
}

impl Tap for Counter {
    fn event(&self, event: &Event<'_>) {
        let new_file = |p: &Path| p.extension().is_some_and(|e| e == "new");
        let op = match event {
            Event::Write { path, data, .. } => {
                *self.written.borrow_mut() += data.len() as u64;
                new_file(path).then_some('w')
            }
            Event::Create(p) => {
                self.created.borrow_mut().push(p.display().to_string());
                None
            }
            Event::Sync(p) => new_file(p).then_some('s'),
            Event::Rename { from, .. } => new_file(from).then_some('r'),
            _ => None,
        };
        self.new_file.borrow_mut().extend(op);
    }
}

struct Dir {
    _tmp: tempfile::TempDir,
    path: PathBuf,
}

impl Dir {
    fn new() -> Dir {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("backupjobs.db");
        Dir { _tmp: tmp, path }
    }

    fn store(&self) -> JobStore {
        JobStore::open(&self.path, true, 0).unwrap()
    }
}

/// What one replacement did.
struct Run {
    result: Result<Replaced>,
    changes: Vec<String>,
    written: u64,
    created: Vec<String>,
    new_file: String,
}

/// Feeds `jobs` (ids, each with its content version), then `endpoints`,
/// to a replacement of `store`'s profile, as the parser would.
fn feed(
    store: &mut JobStore,
    opts: &ReplaceOptions,
    jobs: &[(String, u32)],
    endpoints: &[u16],
) -> Run {
    let counter = Rc::new(Counter::default());
    write_tap::install(Some(counter.clone()));
    let mut changes = Vec::new();
    let mut on_change = |c: Change<'_>| changes.push(format!("{c:?}"));
    let result = (|| {
        let mut r = store.begin_replace(opts, &mut on_change)?;
        let fed = (|| {
            let mut header = Header::default();
            header.device.push_str("NAS-1").unwrap();
            r.header(&header)?;
            for (id, version) in jobs {
                r.job(&job(id, *version))?;
            }
            for port in endpoints {
                r.endpoint(&endpoint(*port))?;
            }
            Ok(Summary {
                jobs: jobs.len(),
                endpoints: endpoints.len(),
                bytes: 0,
            })
        })();
        r.finish(fed)
    })();
    write_tap::install(None);
    let written = *counter.written.borrow();
    let created = counter.created.borrow().clone();
    let new_file = counter.new_file.borrow().clone();
    Run {
        result,
        changes,
        written,
        created,
        new_file,
    }
}

fn version(ids: &[String], v: u32) -> Vec<(String, u32)> {
    ids.iter().map(|id| (id.clone(), v)).collect()
}

fn write(store: &mut JobStore, jobs: &[(String, u32)]) -> Run {
    feed(store, &ReplaceOptions::default(), jobs, &[443])
}

/// The stored jobs' ids and names, in order.
fn listed(path: &Path) -> Vec<(String, String)> {
    let r = StoreReader::open(path).unwrap().unwrap();
    r.jobs()
        .unwrap()
        .map(|j| {
            let j = j.unwrap();
            (j.id.to_string(), j.name.to_string())
        })
        .collect()
}

/// Every entry of `jobs` and `job_ids`, to compare two stores' content.
fn tables_of(path: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    let mut out = Vec::new();
    for def in [JOBS, JOB_IDS] {
        let t = txn.open_table(def).unwrap();
        for e in t.iter().unwrap() {
            let (k, v) = e.unwrap();
            out.push((k.value().to_vec(), v.value().to_vec()));
        }
    }
    out
}

fn store_size(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

#[test]
fn the_signed_version_and_digest_are_kept_and_a_new_manifest_is_a_change() {
    fn replace(store: &mut JobStore, version: Option<u64>, sha256: Option<[u8; 32]>) -> Replaced {
        let opts = ReplaceOptions {
            version,
            sha256,
            ..ReplaceOptions::default()
        };
        let mut on_change = |_: Change<'_>| {};
        let mut r = store.begin_replace(&opts, &mut on_change).unwrap();
        let parsed = crate::profile::parse(PROFILE.as_bytes(), "D", &mut r);
        r.finish(parsed).unwrap()
    }
    let dir = Dir::new();
    let mut store = dir.store();
    assert!(matches!(
        replace(&mut store, None, None),
        Replaced::Written(..)
    ));
    let meta = store.meta().unwrap();
    assert_eq!((meta.version, meta.sha256), (None, None));
    assert!(matches!(
        replace(&mut store, None, None),
        Replaced::Unchanged(..)
    ));

    // Same records, now signed: the store takes the manifest.
    assert!(matches!(
        replace(&mut store, Some(7), Some([9; 32])),
        Replaced::Written(..)
    ));
    assert!(matches!(
        replace(&mut store, Some(7), Some([9; 32])),
        Replaced::Unchanged(..)
    ));
    let reopened = JobStore::open(&dir.path, false, 0).unwrap();
    let meta = reopened.meta().unwrap();
    assert_eq!((meta.version, meta.sha256), (Some(7), Some([9; 32])));
    assert_eq!(meta.schema, STORE_SCHEMA);
}

#[test]
fn a_changed_profile_replaces_the_store_and_every_change_is_told() {
    let dir = Dir::new();
    let mut store = dir.store();
    let first = write(&mut store, &version(&ids(5), 1));
    assert!(matches!(first.result, Ok(Replaced::Written(..))));
    assert_eq!(first.changes.len(), 5, "five added: {:?}", first.changes);

    // 1001 changed, 1002 removed, 1005 added, 1004 moved to the top.
    let next = [
        ("1004", 1),
        ("1000", 1),
        ("1001", 2),
        ("1003", 1),
        ("1005", 1),
    ]
    .map(|(id, v)| (id.to_string(), v));
    let run = write(&mut store, &next);
    let Ok(Replaced::Written(summary, diff)) = run.result else {
        panic!("{:?}", run.result);
    };
    assert_eq!(summary.jobs, 5);
    assert_eq!(
        (diff.added, diff.changed, diff.removed, diff.unchanged),
        (1, 1, 1, 3)
    );
    assert_eq!(
        run.changes,
        [
            "Changed { id: \"1001\", name: \"Nightly 1001 v2 & Payroll\" }",
            "Added { id: \"1005\", name: \"Nightly 1005 v1 & Payroll\" }",
            "Removed { id: \"1002\" }",
        ]
    );
    let listed: Vec<String> = listed(&dir.path).into_iter().map(|(id, _)| id).collect();
    assert_eq!(listed, ["1004", "1000", "1001", "1003", "1005"]);
    let reader = store.reader().unwrap();
    assert_eq!(
        reader.job("1001").unwrap().unwrap().name.as_str(),
        "Nightly 1001 v2 & Payroll"
    );
    assert_eq!(reader.job("1002").unwrap(), None);
    assert_eq!(reader.endpoints().unwrap(), [endpoint(443)]);
    assert!(!dir.path.with_extension("db.new").exists());
}

#[test]
fn an_unchanged_profile_creates_no_file_and_leaves_the_store_untouched() {
    let dir = Dir::new();
    let mut store = dir.store();
    let jobs = version(&ids(3000), 1);
    assert!(matches!(
        write(&mut store, &jobs).result,
        Ok(Replaced::Written(..))
    ));
    let before = std::fs::metadata(&dir.path).unwrap();
    let meta = store.meta().cloned();

    let run = write(&mut store, &jobs);
    assert!(
        matches!(run.result, Ok(Replaced::Unchanged(..))),
        "{:?}",
        run.result
    );
    assert_eq!(run.written, 0, "bytes written for an unchanged profile");
    assert!(run.created.is_empty(), "files created: {:?}", run.created);
    assert!(run.changes.is_empty());
    let after = std::fs::metadata(&dir.path).unwrap();
    assert_eq!(
        (after.ino(), after.mtime(), after.mtime_nsec()),
        (before.ino(), before.mtime(), before.mtime_nsec())
    );
    assert_eq!(store.meta().cloned(), meta);
}

#[test]
fn a_profile_that_differs_only_at_its_end_is_written_whole() {
    // Nothing is written until the first difference; what comes before it
    // is copied from the store. The result is the store a fresh write gives.
    let jobs = version(&ids(2 * RUN_JOBS + 100), 1);
    type Case = (&'static str, Vec<(String, u32)>, Vec<u16>);
    let cases: [Case; 4] = [
        (
            "the last job changed",
            {
                let mut j = jobs.clone();
                j.last_mut().unwrap().1 = 2;
                j
            },
            vec![443],
        ),
        ("one job fewer", jobs[..jobs.len() - 1].to_vec(), vec![443]),
        (
            "one job more",
            version(&ids(2 * RUN_JOBS + 101), 1),
            vec![443],
        ),
        ("the endpoint changed", jobs.clone(), vec![444]),
    ];
    for (what, new, endpoints) in cases {
        let dir = Dir::new();
        let mut store = dir.store();
        feed(&mut store, &ReplaceOptions::default(), &jobs, &[443])
            .result
            .unwrap();
        let run = feed(&mut store, &ReplaceOptions::default(), &new, &endpoints);
        assert!(
            matches!(run.result, Ok(Replaced::Written(..))),
            "{what}: {:?}",
            run.result
        );
        assert_eq!(
            store.reader().unwrap().endpoints().unwrap(),
            endpoints.iter().map(|&p| endpoint(p)).collect::<Vec<_>>(),
            "{what}"
        );
        let last = &new.last().unwrap().0;
        assert!(
            store.reader().unwrap().job(last).unwrap().is_some(),
            "{what}"
        );
        drop(store);
        let fresh = Dir::new();
        feed(
            &mut fresh.store(),
            &ReplaceOptions::default(),
            &new,
            &endpoints,
        )
        .result
        .unwrap();
        assert!(
            tables_of(&dir.path) == tables_of(&fresh.path),
            "{what}: not the fresh store"
        );
    }
}

#[test]
fn a_repeated_id_is_refused_at_the_job_that_repeats_it_and_the_store_is_kept() {
    let dir = Dir::new();
    let mut store = dir.store();
    let stored = version(&ids(RUN_JOBS + 500), 1);
    write(&mut store, &stored).result.unwrap();
    let meta = store.meta().cloned();
    let before = std::fs::metadata(&dir.path).unwrap();

    // Repeats of an id in the same run, in an earlier run, and (unchanged
    // prefix) of a stored job the copy brought in.
    for (what, repeated, at) in [
        ("same run", 10, 20),
        ("earlier run", 3, RUN_JOBS as usize + 7),
        ("after the unchanged prefix", 0, 1),
    ] {
        let mut new = stored.clone();
        new[at] = new[repeated].clone();
        let run = write(&mut store, &new);
        let err = run.result.expect_err(what).to_string();
        assert!(
            err.contains(&format!(
                "job \"{}\" appears more than once",
                new[repeated].0
            )),
            "{what}: {err}"
        );
        // The jobs before it are the stored ones: nothing was told.
        assert!(run.changes.is_empty(), "{what}: {:?}", run.changes);
        assert!(!dir.path.with_extension("db.new").exists(), "{what}");
        assert_eq!(store.meta().cloned(), meta, "{what}");
        let after = std::fs::metadata(&dir.path).unwrap();
        assert_eq!((after.ino(), after.mtime()), (before.ino(), before.mtime()));
        assert_eq!(listed(&dir.path).len(), stored.len());
    }
}

#[test]
fn lookups_by_id_are_exact_even_when_ids_share_a_hash() {
    // Two bits of hash: about a quarter of all ids share each value, in
    // every run, so each lookup and duplicate check must compare ids.
    HASH_MASK.with(|m| m.set(0xfff));
    let dir = Dir::new();
    let mut store = dir.store();
    let n = 2 * RUN_JOBS + 300;
    let all = ids(n);
    write(&mut store, &version(&all, 1)).result.unwrap();
    assert_eq!(id_hash(b"1000") & !0xfff, 0);
    let reader = store.reader().unwrap();
    for id in all.iter().step_by(97).chain([&all[0], &all[all.len() - 1]]) {
        let job = reader.job(id).unwrap().unwrap();
        assert_eq!(job.id.as_str(), id);
    }
    assert_eq!(reader.job("999").unwrap(), None);

    // A moved job found by the index; a repeat refused among colliders.
    let mut moved = version(&all, 1);
    moved.rotate_left(1);
    let run = write(&mut store, &moved);
    let Ok(Replaced::Written(_, diff)) = run.result else {
        panic!("{:?}", run.result);
    };
    assert_eq!(
        (diff.unchanged, diff.added, diff.removed),
        (u64::from(n), 0, 0)
    );
    let mut repeated = version(&all, 1);
    repeated.push((all[5].clone(), 1));
    let err = write(&mut store, &repeated).result.unwrap_err().to_string();
    assert!(err.contains("\"1005\" appears more than once"), "{err}");
    HASH_MASK.with(|m| m.set(u64::MAX));
}

#[test]
fn ids_of_one_hash_spread_over_several_chunks_are_all_found() {
    // Eight bits of hash: each value about 16 times a run, so chunk
    // boundaries fall inside groups of one hash.
    HASH_MASK.with(|m| m.set(0xff));
    let dir = Dir::new();
    let mut store = dir.store();
    let all = ids(RUN_JOBS + 700);
    write(&mut store, &version(&all, 1)).result.unwrap();
    let reader = store.reader().unwrap();
    for id in &all {
        let job = reader.job(id).unwrap().unwrap();
        assert_eq!(&job.id.as_str(), id);
    }
    assert_eq!(reader.job("999").unwrap(), None);
    HASH_MASK.with(|m| m.set(u64::MAX));
}

#[test]
fn a_store_of_schema_2_is_rebuilt() {
    let dir = Dir::new();
    {
        let db = redb::Database::create(&dir.path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(tables::META).unwrap();
            t.insert(b"schema".as_slice(), 2u32.to_le_bytes().as_slice())
                .unwrap();
            // Schema 2's index: the ids themselves.
            let mut ids = txn.open_table(JOB_IDS).unwrap();
            ids.insert(b"1000".as_slice(), 0u32.to_le_bytes().as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let mut store = dir.store();
    assert!(store.needs_rebuild());
    // A reader refuses it by name, rather than read its tables as this
    // schema's.
    let reader = StoreReader::open(&dir.path).unwrap().unwrap();
    for err in [
        reader.jobs().err(),
        reader.job("1000").err(),
        reader.endpoints().err(),
    ] {
        let err = err.expect("a store of schema 2 is refused").to_string();
        assert!(
            err.contains("store schema 2: this program reads store schema")
                && err.contains("rebuilds"),
            "{err}"
        );
    }
    drop(reader);
    let opts = ReplaceOptions {
        force: true,
        ..ReplaceOptions::default()
    };
    let run = feed(&mut store, &opts, &version(&ids(3), 1), &[]);
    let Ok(Replaced::Written(_, diff)) = run.result else {
        panic!("{:?}", run.result);
    };
    // Nothing is compared with a store of another schema: all is new.
    assert_eq!((diff.added, diff.removed), (3, 0));
    assert_eq!(store.meta().unwrap().schema, super::STORE_SCHEMA);
    assert!(!store.needs_rebuild());
    assert_eq!(
        store
            .reader()
            .unwrap()
            .job("1002")
            .unwrap()
            .unwrap()
            .id
            .as_str(),
        "1002"
    );
}

/// A first profile of `n` jobs, then every job changed and a third of
/// them moved: each may write at most 1.3 times the store it makes.
fn flash_writes_stay_within_budget(n: u32) {
    let dir = Dir::new();
    let mut store = dir.store();
    let first = write(&mut store, &version(&ids(n), 1));
    let size = store_size(&dir.path);
    let mut next = version(&ids(n), 2);
    let moved = next.len() / 3;
    next[..moved].rotate_left(moved / 2);
    let replaced = write(&mut store, &next);
    assert!(matches!(replaced.result, Ok(Replaced::Written(..))));
    let new_size = store_size(&dir.path);
    for (what, written, size) in [
        ("first profile", first.written, size),
        ("replaced", replaced.written, new_size),
    ] {
        let ratio = written as f64 / size as f64;
        println!("{n} jobs, {what}: {written} bytes written for a {size}-byte store: {ratio:.2}x");
        assert!(written * 10 <= size * 13, "{what}: over 1.3x");
    }
}

#[test]
fn flash_writes_of_a_profile_change_stay_within_1_3_times_the_store() {
    // 10 000 too: with a 192 KiB cache, 5 000 to 40 000 jobs wrote 1.35
    // times the store while 2 000 and 100 000 passed.
    flash_writes_stay_within_budget(2000);
    flash_writes_stay_within_budget(10_000);
}

/// The same at the protocol's 100 000-job limit (2 s): `cargo test --lib
/// flash -- --nocapture` prints the ratios.
#[test]
fn flash_writes_at_100_000_jobs() {
    flash_writes_stay_within_budget(100_000);
}

#[test]
fn the_new_file_is_synced_once_it_is_complete_and_not_before() {
    // 20 000 jobs: some of the commits before the last are durable ones.
    let dir = Dir::new();
    let mut store = dir.store();
    let run = write(&mut store, &version(&ids(20_000), 1));
    assert!(matches!(run.result, Ok(Replaced::Written(..))));
    let ops = &run.new_file;
    assert!(
        ops.ends_with("sr"),
        "not synced right before its rename: {ops}"
    );
    // The first sync is the last commit's: after it come only the few
    // pages redb writes between its syncs (its header, and its allocator
    // state when the file is closed).
    let synced = ops.find('s').unwrap_or_default();
    let (all, later) = (ops.matches('w').count(), ops[synced..].matches('w').count());
    assert!(
        later * 100 <= all,
        "{later} of {all} writes after the first sync: {ops}"
    );
}

#[test]
fn a_damaged_block_of_job_records_is_replaced_not_a_dead_end() {
    // Bytes redb reads back fine but that are not whole records (a bug or
    // a flash error inside a value): the next profile, even the same one,
    // is written whole, and the store reads again. With the last block
    // damaged, the next profile is the jobs before it: the pass meets the
    // damage only after every new job matched.
    for (what, last) in [("a block inside", false), ("the last block", true)] {
        let dir = Dir::new();
        let mut store = dir.store();
        let jobs = version(&ids(300), 1);
        write(&mut store, &jobs).result.unwrap();
        drop(store);
        let first_damaged = {
            let db = redb::Database::open(&dir.path).unwrap();
            let txn = db.begin_write().unwrap();
            let key = {
                let mut t = txn.open_table(JOBS).unwrap();
                let keys: Vec<Vec<u8>> = t
                    .iter()
                    .unwrap()
                    .map(|e| e.unwrap().0.value().to_vec())
                    .collect();
                let key = if last {
                    keys[keys.len() - 1].clone()
                } else {
                    keys[1].clone()
                };
                t.insert(key.as_slice(), [0xff; 9].as_slice()).unwrap();
                key
            };
            txn.commit().unwrap();
            u32::from_be_bytes(key.try_into().unwrap()) as usize
        };
        let reader = StoreReader::open(&dir.path).unwrap().unwrap();
        assert!(reader.jobs().unwrap().any(|j| j.is_err()), "{what}");
        drop(reader);
        let next = if last {
            &jobs[..first_damaged]
        } else {
            &jobs[..]
        };
        let mut store = dir.store();
        let run = write(&mut store, next);
        assert!(
            matches!(run.result, Ok(Replaced::Written(..))),
            "{what}: {:?}",
            run.result
        );
        assert_eq!(listed(&dir.path).len(), next.len(), "{what}");
    }
}
