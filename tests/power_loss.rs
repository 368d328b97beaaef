//! Power loss: the crash states a power cut can leave of every change the
//! agent makes to its files (the job store and the state file in `Config/`,
//! the run record `Spool/cncopgetprofile.status`, the logs in `Spool/Logs/`),
//! rebuilt from a recording of the real run and reopened with the agent's
//! own start-up code (PROTOCOL section 3: "a crash, power cut or kill at any
//! moment leaves either the old or the new profile, never a mix").
//! `tests/crash_kill.rs` kills the process; that keeps all the process
//! handed to the kernel. A power cut keeps less, and this test builds what
//! it keeps.
//!
//! The real run: what `main` runs with `-d` (logging set up, `agent::run`,
//! the summary line, the run record: `status::run_and_record`) in this
//! process against the local cncop network (real TLS on loopback). Every
//! file operation it makes in `Config/`, `Spool/` and `Spool/Logs/` reaches
//! the test through the library's one seam, `write_tap` (`files` reports
//! creates, writes, length changes, syncs, renames, removals and folder
//! syncs; the store's redb file is written through a redb `StorageBackend`
//! that reports its writes, length changes and syncs). The recording is
//! checked against the disk: replayed in full it must give exactly the
//! files the run left. The logger and its day's file are the process's
//! one, so only the scenario that holds [`RUNS`] alone records the logs;
//! the others record the store, the state file and the run record.
//!
//! # Persistence model
//!
//! At crash point k (after the first k operations of the run):
//! - every file keeps what it held at its last sync (`fsync`/`fdatasync`);
//! - each later write to it is dropped, kept, or kept in part: any subset of
//!   the 512-byte sectors it covers, never a byte outside its range; a
//!   later length change is applied or not; new bytes read as zeros;
//! - each change to a folder (create, rename, remove) after that folder's
//!   last fsync may or may not have happened, each one atomic;
//! - a folder fsync makes the changes to that folder before it durable (to
//!   be strict, not those to other folders, which a journal commit would
//!   take too).
//!
//! Two file systems are modelled:
//! - **UBIFS** (many flash NAS boxes): no rename heuristics and, to be
//!   strict, no ordering between unsynced folder changes: any subset of them
//!   survives (a superset of what UBIFS's journal can produce).
//! - **ext4, data=ordered**: folder changes reach the journal in order, so
//!   the survivors are a prefix of them; a rename over an existing file
//!   (`auto_da_alloc`) carries the renamed file's earlier writes with it.
//!
//! Crash points: just before every sync, folder change or folder fsync, and
//! at the end. A crash between two such points leaves a state the model
//! also allows at the later one (its later writes dropped), so these points
//! cover every crash state. At each, when the unsynced changes to the
//! store, state file and run record allow at most [`EXHAUSTIVE_LIMIT`]
//! images, every one is built (a write of several sectors: dropped, kept,
//! its first half or its second half of sectors); otherwise the two
//! extremes (all dropped, all kept) and [`RANDOM_IMAGES`] seeded random
//! ones (random sector subsets). The logs' unsynced changes vary beside
//! them, one choice per image (all dropped, all kept, then random), at
//! least [`LOG_VARIANTS`] images where there are any.
//!
//! # Outcomes
//!
//! Each image is opened as the agent opens it at start-up and classified:
//! **old-exact** / **new-exact** (the store, the state file and the run
//! record hold exactly what they held before / after the run; the record
//! byte for byte, so a torn or vanished record is wrong content),
//! **between-exact** (exactly a state the run made durable on its way: a
//! folder fsync after a rename, e.g. the new store before the new record,
//! or the trust state after a root rotation and before the update),
//! **repair needed** (redb repairs the file, then it holds one of those
//! exactly), **unopenable** (the agent would move the file aside and lose
//! the profile) or **wrong content**. Required: no unopenable, no wrong
//! content, never older than the last state made durable before the crash
//! (so new-exact after the last folder fsync). Where a run sends the update
//! datagram, it must reach ccs3updater only after the trust state that
//! announced it is durable.
//!
//! A log file is classified against what the run had written to it by the
//! crash: **whole** (a prefix ending with a whole line, or nothing),
//! **torn** (a prefix cut inside a line, or with NUL bytes where the file
//! system kept a length but not the bytes) or **garbage** (a byte other
//! than NUL that was never written there). The logs' promise (`src/logs.rs`):
//! lines are appended unsynced, so a power cut may lose or tear the lines
//! of the run it interrupts, never show bytes that were never written but
//! NULs, and the next run cuts a torn end back to its last whole line
//! before it appends; the day's file is synced before the run record is
//! written, so an image holding the new record holds all the run's lines.
//! Required: no garbage, and that.
//!
//! On every distinct image (by a SHA-256 of its files, shared by the two
//! file systems of a scenario) a whole run is started as `main` makes it:
//! it must exit 0, store the profile the network serves, leave a record of
//! itself, and where the logs are recorded keep the image's whole log lines
//! and append its own, whole, after them. The table is printed
//! (`--nocapture`).
//!
//! # Mutations
//!
//! The same explorer runs on recordings rewritten as broken code would have
//! issued them (no folder fsync, no sync before the rename, redb without
//! durable commits, the store written in place) and must report failures:
//! the proof that it sees what it is there to see. They are rewrites of the
//! recording, the test's own switch; the shipped binary has none. (Their
//! images are classified, not run on.)
//!
//! # Flash writes
//!
//! The recording also counts what each scenario writes per folder: bytes,
//! fsyncs, files created (see the README's "Reliability").

use cncopgetprofile::internals::logs::file_name;
use cncopgetprofile::internals::state::{self, Section, Sections};
use cncopgetprofile::internals::status;
use cncopgetprofile::internals::store::{JobStore, etag};
use cncopgetprofile::internals::write_tap::{self, Event, Tap};
use cncopgetprofile::{
    Endpoint, InstallRoot, Job, Logs, Report, RunOptions, StoreMeta, StoreReader, now,
    run_and_record,
};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::RwLock;
use support::*;

/// Jobs in the profiles of the scenarios (the 2 000).
const JOBS: usize = 2_000;
/// Jobs in the mutation checks' profiles: they only need a few pages.
const MUTATION_JOBS: usize = 200;
/// Most images built one by one at a crash point.
const EXHAUSTIVE_LIMIT: u64 = 64;
/// Random images per crash point when there are more.
const RANDOM_IMAGES: usize = 24;
const SECTOR: u64 = 512;
const SEED: u64 = 0x5eed_c0de_9a11_0001;

// ---------------------------------------------------------------------------
// The recording
// ---------------------------------------------------------------------------

/// One recorded operation on a file of `Config/` (by name).
#[derive(Clone, Debug)]
enum Op {
    Create(String),
    Write {
        name: String,
        offset: u64,
        data: Vec<u8>,
    },
    SetLen {
        name: String,
        len: u64,
    },
    Sync(String),
    Rename {
        from: String,
        to: String,
    },
    Remove(String),
    /// `fsync` of a folder (`Config`, `Spool` or `Spool/Logs`).
    SyncDir(String),
    /// Where a folder fsync returned that a mutation took away: the agent
    /// believes its change durable from here, the disk does not.
    Returned(String),
    /// ccs3updater had received the update datagram by here.
    Datagram,
}

impl Op {
    /// A crash is explored just before each of these.
    fn is_barrier(&self) -> bool {
        !matches!(self, Op::Write { .. } | Op::SetLen { .. } | Op::Datagram)
    }
}

/// The folders of the install root whose files the recorder keeps: the
/// store and state file, the run record, the logs.
const FOLDERS: [&str; 3] = ["Config", "Spool", "Spool/Logs"];
const LOGS: &str = "Spool/Logs";

/// The tap: keeps the operations on files directly in the folders of
/// [`FOLDERS`] (by name relative to `root`, e.g. `Config/backupjobs.db`).
/// `Spool/Logs` only when `logs`: the day's file is the process's one
/// (`logs`), so only a run that holds [`RUNS`] exclusively has its own.
struct Recorder {
    root: PathBuf,
    logs: bool,
    ops: RefCell<Vec<Op>>,
    /// ccs3updater's socket (non-blocking): looked at before each
    /// operation, so a datagram is placed before the first operation that
    /// follows it.
    updater: Option<std::net::UdpSocket>,
}

impl Recorder {
    fn look_for_datagram(&self) {
        let mut buf = [0u8; 2048];
        if let Some(sock) = &self.updater
            && sock.recv_from(&mut buf).is_ok()
        {
            self.ops.borrow_mut().push(Op::Datagram);
        }
    }
}

impl Recorder {
    /// `path`'s folder relative to the root, if it is one recorded.
    fn folder(&self, dir: &Path) -> Option<&'static str> {
        let rel = dir.strip_prefix(&self.root).ok()?;
        FOLDERS
            .into_iter()
            .find(|f| Path::new(f) == rel && (self.logs || *f != LOGS))
    }

    fn name(&self, path: &Path) -> Option<String> {
        let folder = self.folder(path.parent()?)?;
        let file = path.file_name()?.to_string_lossy();
        Some(format!("{folder}/{file}"))
    }
}

impl Tap for Recorder {
    fn event(&self, e: &Event<'_>) {
        self.look_for_datagram();
        let op = match *e {
            Event::Create(p) => self.name(p).map(Op::Create),
            Event::Write { path, offset, data } => self.name(path).map(|name| Op::Write {
                name,
                offset,
                data: data.to_vec(),
            }),
            Event::SetLen { path, len } => self.name(path).map(|name| Op::SetLen { name, len }),
            Event::Sync(p) => self.name(p).map(Op::Sync),
            Event::Rename { from, to } => match (self.name(from), self.name(to)) {
                (Some(from), Some(to)) => Some(Op::Rename { from, to }),
                _ => None,
            },
            Event::Remove(p) => self.name(p).map(Op::Remove),
            Event::SyncDir(d) => self.folder(d).map(|f| Op::SyncDir(f.to_string())),
        };
        if let Some(op) = op {
            self.ops.borrow_mut().push(op);
        }
    }
}

/// Every test in this file holds this for its whole length: shared by those
/// whose logs are not recorded, exclusively by the one whose are (the
/// logger and its day's file are the process's one, and anything run on
/// any thread may log, opening a store too; see [`Recorder`]).
static RUNS: RwLock<()> = RwLock::new(());

/// A whole run as `main` makes it with `-d`: logging set up in `root`'s
/// `Spool/Logs`, the run, its summary line, its run record. The caller holds
/// [`RUNS`].
fn main_run(root: &Path, opts: &RunOptions) -> Report {
    let opts = RunOptions {
        debug: true,
        ..opts.clone()
    };
    // The process's logger is set up by the first call; every call uses -d
    // so that it logs what -d logs whichever test came first.
    let mut logs = Logs::init(&root.join(LOGS), true, now());
    run_and_record(&InstallRoot::new(root), &opts, &mut logs)
}

/// Holds [`RUNS`] as a test that records logs (`exclusive`) or not.
fn hold_runs(exclusive: bool) -> Box<dyn std::any::Any> {
    if exclusive {
        Box::new(RUNS.write().unwrap_or_else(|p| p.into_inner()))
    } else {
        Box::new(RUNS.read().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Runs the agent on `root` with the tap installed; returns what it did to
/// its files. The caller holds [`RUNS`] (exclusively when `logs`).
fn recorded_run(
    root: &Path,
    opts: &RunOptions,
    updater: Option<std::net::UdpSocket>,
    logs: bool,
) -> Vec<Op> {
    if let Some(u) = &updater {
        u.set_nonblocking(true).expect("non-blocking socket");
    }
    let recorder = Rc::new(Recorder {
        root: root.to_path_buf(),
        logs,
        ops: RefCell::new(Vec::new()),
        updater,
    });
    write_tap::install(Some(recorder.clone()));
    let report = main_run(root, opts);
    write_tap::install(None);
    recorder.look_for_datagram();
    assert_eq!(
        report.exit_code(),
        0,
        "the recorded run failed: {}",
        report.summary()
    );
    recorder.ops.borrow().clone()
}

/// The agent's files under `root` now (not the INI, CA or lock file, which
/// it does not write through its file helpers), by name relative to it;
/// the logs when `logs`.
fn agent_files(root: &Path, logs: bool) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for folder in FOLDERS.into_iter().filter(|f| logs || *f != LOGS) {
        let Ok(entries) = std::fs::read_dir(root.join(folder)) else {
            continue;
        };
        for entry in entries {
            let entry = entry.expect("read a folder entry");
            let name = format!("{folder}/{}", entry.file_name().to_string_lossy());
            if is_agent_file(&name) && entry.file_type().expect("file type").is_file() {
                files.insert(name, std::fs::read(entry.path()).expect("read file"));
            }
        }
    }
    files
}

fn is_agent_file(name: &str) -> bool {
    name.starts_with(STORE)
        || name.starts_with(STATE)
        || name.starts_with(STATUS)
        || (name.starts_with(LOGS) && name.ends_with(".log"))
}

/// Bytes written, fsyncs (files and folder), files created.
#[derive(Clone, Copy, Debug, Default)]
struct Writes {
    bytes: u64,
    /// Of `bytes`, those written over bytes the same run had written to
    /// the same file already (pages redb evicted and wrote again).
    rewritten: u64,
    fsyncs: u64,
    created: u64,
}

/// What `ops` wrote in `folder`.
fn count_writes(ops: &[Op], folder: &str) -> Writes {
    let mut w = Writes::default();
    let mut written: BTreeMap<&str, Vec<bool>> = BTreeMap::new();
    let inside = |n: &str| Disk::folder(n) == folder;
    for op in ops.iter().filter(|o| match o {
        Op::Create(n) | Op::Remove(n) | Op::Sync(n) => inside(n),
        Op::Write { name, .. } | Op::SetLen { name, .. } => inside(name),
        Op::SyncDir(f) => f == folder,
        _ => false,
    }) {
        match op {
            Op::Write { name, offset, data } => {
                w.bytes += data.len() as u64;
                let seen = written.entry(name).or_default();
                let (start, end) = (*offset as usize, *offset as usize + data.len());
                if seen.len() < end {
                    seen.resize(end, false);
                }
                w.rewritten += seen[start..end].iter().filter(|&&b| b).count() as u64;
                seen[start..end].iter_mut().for_each(|b| *b = true);
            }
            Op::Create(name) | Op::Remove(name) => {
                written.remove(name.as_str());
                if matches!(op, Op::Create(_)) {
                    w.created += 1;
                }
            }
            Op::Sync(_) | Op::SyncDir(_) => w.fsyncs += 1,
            _ => {}
        }
    }
    w
}

// ---------------------------------------------------------------------------
// The persistence model
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fs {
    Ubifs,
    Ext4Ordered,
}

/// A write or length change not yet synced, with its place in the run.
#[derive(Clone, Debug)]
enum DataOp {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Clone, Debug, Default)]
struct Inode {
    durable: Vec<u8>,
    live: Vec<u8>,
    /// (sequence number, change) since the last sync.
    pending: Vec<(usize, DataOp)>,
}

/// A folder change not yet made durable.
#[derive(Clone, Debug)]
enum MetaOp {
    Link {
        name: String,
        ino: usize,
    },
    Rename {
        from: String,
        to: String,
        ino: usize,
        replaces: bool,
        seq: usize,
    },
    Unlink {
        name: String,
        ino: usize,
    },
}

/// The file system as the run left it after some operations: what is
/// durable and what is not yet.
#[derive(Clone, Debug)]
struct Disk {
    fs: Fs,
    inodes: Vec<Inode>,
    durable_dir: BTreeMap<String, usize>,
    live_dir: BTreeMap<String, usize>,
    pending_meta: Vec<MetaOp>,
}

fn apply_data(content: &mut Vec<u8>, op: &DataOp, keep: Option<&[bool]>) {
    match op {
        DataOp::SetLen(len) => content.resize(*len as usize, 0),
        DataOp::Write { offset, data } => {
            for (i, range) in sectors(*offset, data.len()).into_iter().enumerate() {
                if keep.is_some_and(|k| !k[i]) {
                    continue;
                }
                let (start, end) = range;
                if content.len() < end as usize {
                    content.resize(end as usize, 0);
                }
                let from = (start - offset) as usize;
                content[start as usize..end as usize]
                    .copy_from_slice(&data[from..from + (end - start) as usize]);
            }
        }
    }
}

/// The parts of a write at `offset` that fall in each 512-byte sector.
fn sectors(offset: u64, len: usize) -> Vec<(u64, u64)> {
    let end = offset + len as u64;
    let mut parts = Vec::new();
    let mut at = offset;
    while at < end {
        let next = ((at / SECTOR) + 1) * SECTOR;
        parts.push((at, next.min(end)));
        at = next.min(end);
    }
    parts
}

impl MetaOp {
    /// The folder it changes.
    fn folder(&self) -> &str {
        match self {
            MetaOp::Link { name, .. } | MetaOp::Unlink { name, .. } => Disk::folder(name),
            MetaOp::Rename { to, .. } => Disk::folder(to),
        }
    }
}

impl Disk {
    /// `Config` of `Config/backupjobs.db`.
    fn folder(name: &str) -> &str {
        name.rsplit_once('/').map_or("", |(f, _)| f)
    }

    fn from_files(fs: Fs, files: &BTreeMap<String, Vec<u8>>) -> Disk {
        let mut disk = Disk {
            fs,
            inodes: Vec::new(),
            durable_dir: BTreeMap::new(),
            live_dir: BTreeMap::new(),
            pending_meta: Vec::new(),
        };
        for (name, content) in files {
            disk.inodes.push(Inode {
                durable: content.clone(),
                live: content.clone(),
                pending: Vec::new(),
            });
            disk.durable_dir.insert(name.clone(), disk.inodes.len() - 1);
        }
        disk.live_dir = disk.durable_dir.clone();
        disk
    }

    fn ino(&self, name: &str) -> usize {
        *self
            .live_dir
            .get(name)
            .unwrap_or_else(|| panic!("the recording names {name}, which does not exist"))
    }

    fn apply(&mut self, seq: usize, op: &Op) {
        match op {
            Op::Create(name) => {
                self.inodes.push(Inode::default());
                let ino = self.inodes.len() - 1;
                self.live_dir.insert(name.clone(), ino);
                self.pending_meta.push(MetaOp::Link {
                    name: name.clone(),
                    ino,
                });
            }
            Op::Write { name, offset, data } => {
                let ino = self.ino(name);
                let d = DataOp::Write {
                    offset: *offset,
                    data: data.clone(),
                };
                apply_data(&mut self.inodes[ino].live, &d, None);
                self.inodes[ino].pending.push((seq, d));
            }
            Op::SetLen { name, len } => {
                let ino = self.ino(name);
                let d = DataOp::SetLen(*len);
                apply_data(&mut self.inodes[ino].live, &d, None);
                self.inodes[ino].pending.push((seq, d));
            }
            Op::Sync(name) => {
                let ino = self.ino(name);
                let node = &mut self.inodes[ino];
                node.durable = node.live.clone();
                node.pending.clear();
            }
            Op::Rename { from, to } => {
                let ino = self.ino(from);
                self.live_dir.remove(from);
                let replaces = self.live_dir.insert(to.clone(), ino).is_some();
                self.pending_meta.push(MetaOp::Rename {
                    from: from.clone(),
                    to: to.clone(),
                    ino,
                    replaces,
                    seq,
                });
            }
            Op::Remove(name) => {
                let ino = self.ino(name);
                self.live_dir.remove(name);
                self.pending_meta.push(MetaOp::Unlink {
                    name: name.clone(),
                    ino,
                });
            }
            Op::Datagram => {}
            Op::SyncDir(folder) => {
                // To be strict, only this folder's changes become durable
                // (a real journal commit takes the others too).
                let (synced, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending_meta)
                    .into_iter()
                    .partition(|m| m.folder() == folder);
                self.pending_meta = rest;
                if self.fs == Fs::Ext4Ordered {
                    // The journal commit takes the data auto_da_alloc
                    // started writing at each rename over a file with it.
                    for m in synced {
                        if let MetaOp::Rename {
                            ino,
                            replaces: true,
                            seq,
                            ..
                        } = m
                        {
                            let node = &mut self.inodes[ino];
                            let (earlier, later): (Vec<_>, Vec<_>) =
                                node.pending.drain(..).partition(|(s, _)| *s < seq);
                            for (_, d) in &earlier {
                                apply_data(&mut node.durable, d, None);
                            }
                            node.pending = later;
                        }
                    }
                }
                self.durable_dir.retain(|n, _| Self::folder(n) != folder);
                for (n, &ino) in &self.live_dir {
                    if Self::folder(n) == folder {
                        self.durable_dir.insert(n.clone(), ino);
                    }
                }
            }
            Op::Returned(_) => {}
        }
    }

    /// Every file as the live run sees it (what a kill would leave).
    fn live_files(&self) -> BTreeMap<String, Vec<u8>> {
        self.live_dir
            .iter()
            .map(|(n, &i)| (n.clone(), self.inodes[i].live.clone()))
            .collect()
    }

    /// The unsynced changes that matter: data of the files the folder can
    /// reach, and the folder changes.
    fn slots(&self) -> Vec<Slot> {
        let fs = self.fs;
        let mut slots = Vec::new();
        for (ino, node) in self.reachable() {
            for (k, (_, d)) in node.pending.iter().enumerate() {
                let n = match d {
                    DataOp::Write { offset, data } => sectors(*offset, data.len()).len(),
                    DataOp::SetLen(_) => 1,
                };
                slots.push(Slot::Data {
                    ino,
                    index: k,
                    sectors: n,
                });
            }
        }
        match fs {
            Fs::Ubifs => slots.extend((0..self.pending_meta.len()).map(Slot::Meta)),
            Fs::Ext4Ordered if !self.pending_meta.is_empty() => {
                slots.push(Slot::MetaPrefix(self.pending_meta.len()))
            }
            Fs::Ext4Ordered => {}
        }
        slots
    }

    fn reachable(&self) -> Vec<(usize, &Inode)> {
        let mut inos: Vec<usize> = self.durable_dir.values().copied().collect();
        for m in &self.pending_meta {
            if let MetaOp::Link { ino, .. } | MetaOp::Rename { ino, .. } = m {
                inos.push(*ino);
            }
        }
        inos.sort_unstable();
        inos.dedup();
        inos.into_iter().map(|i| (i, &self.inodes[i])).collect()
    }

    /// Whether `slot` is a change to the logs (a day's file's data, or a
    /// change to `Spool/Logs`); ext4's one prefix of folder changes is not.
    fn in_logs(&self, slot: &Slot) -> bool {
        match slot {
            Slot::Data { ino, .. } => self
                .live_dir
                .iter()
                .chain(&self.durable_dir)
                .any(|(n, i)| i == ino && Self::folder(n) == LOGS),
            Slot::Meta(i) => self.pending_meta[*i].folder() == LOGS,
            Slot::MetaPrefix(_) => false,
        }
    }

    /// What the run had written to the file `ino` so far.
    fn written(&self, ino: usize) -> &[u8] {
        &self.inodes[ino].live
    }

    /// The files of one crash image, given one choice per slot: by name,
    /// the file (inode) and what it holds.
    fn image(&self, slots: &[Slot], choice: &[Choice]) -> BTreeMap<String, (usize, Vec<u8>)> {
        let fs = self.fs;
        // Folder changes that survive.
        let mut applied = vec![false; self.pending_meta.len()];
        for (slot, c) in slots.iter().zip(choice) {
            match (slot, c) {
                (Slot::Meta(i), Choice::Keep) => applied[*i] = true,
                (Slot::MetaPrefix(_), Choice::Prefix(n)) => {
                    applied.iter_mut().take(*n).for_each(|a| *a = true)
                }
                _ => {}
            }
        }
        // ext4's auto_da_alloc: a surviving rename over a file carries the
        // renamed file's earlier writes.
        let mut forced: Vec<(usize, usize)> = Vec::new();
        if fs == Fs::Ext4Ordered {
            for (m, &a) in self.pending_meta.iter().zip(&applied) {
                if let (
                    MetaOp::Rename {
                        ino,
                        replaces: true,
                        seq,
                        ..
                    },
                    true,
                ) = (m, a)
                {
                    forced.push((*ino, *seq));
                }
            }
        }
        let mut dir = self.durable_dir.clone();
        for (m, &a) in self.pending_meta.iter().zip(&applied) {
            if !a {
                continue;
            }
            match m {
                MetaOp::Link { name, ino } => {
                    dir.insert(name.clone(), *ino);
                }
                MetaOp::Rename { from, to, ino, .. } => {
                    if dir.get(from) == Some(ino) {
                        dir.remove(from);
                    }
                    dir.insert(to.clone(), *ino);
                }
                MetaOp::Unlink { name, ino } => {
                    if dir.get(name) == Some(ino) {
                        dir.remove(name);
                    }
                }
            }
        }
        let mut out = BTreeMap::new();
        for (name, &ino) in &dir {
            let node = &self.inodes[ino];
            let mut content = node.durable.clone();
            for (k, (seq, d)) in node.pending.iter().enumerate() {
                let c = slots
                    .iter()
                    .zip(choice)
                    .find(|(s, _)| matches!(s, Slot::Data { ino: i, index, .. } if *i == ino && *index == k))
                    .map(|(_, c)| c.clone())
                    .unwrap_or(Choice::Drop);
                let c = if forced.iter().any(|&(i, s)| i == ino && *seq < s) {
                    Choice::Keep
                } else {
                    c
                };
                match c {
                    Choice::Drop | Choice::Prefix(_) => {}
                    Choice::Keep => apply_data(&mut content, d, None),
                    Choice::Sectors(keep) => apply_data(&mut content, d, Some(&keep)),
                }
            }
            out.insert(name.clone(), (ino, content));
        }
        out
    }
}

#[derive(Clone, Debug)]
enum Slot {
    Data {
        ino: usize,
        index: usize,
        sectors: usize,
    },
    Meta(usize),
    /// ext4: how many of the n pending folder changes survive.
    MetaPrefix(usize),
}

#[derive(Clone, Debug)]
enum Choice {
    Drop,
    Keep,
    Sectors(Vec<bool>),
    Prefix(usize),
}

impl Slot {
    /// The choices tried when every image is built.
    fn all_choices(&self) -> Vec<Choice> {
        match self {
            Slot::Data { sectors, .. } if *sectors > 1 => {
                let half = sectors / 2;
                vec![
                    Choice::Drop,
                    Choice::Keep,
                    Choice::Sectors((0..*sectors).map(|i| i < half).collect()),
                    Choice::Sectors((0..*sectors).map(|i| i >= half).collect()),
                ]
            }
            Slot::Data { .. } | Slot::Meta(_) => vec![Choice::Drop, Choice::Keep],
            Slot::MetaPrefix(n) => (0..=*n).map(Choice::Prefix).collect(),
        }
    }

    fn random(&self, rng: &mut Rng) -> Choice {
        match self {
            Slot::Data { sectors, .. } => match rng.next_u64() % 3 {
                0 => Choice::Drop,
                1 => Choice::Keep,
                _ => Choice::Sectors((0..*sectors).map(|_| rng.next_u64() & 1 == 1).collect()),
            },
            Slot::Meta(_) => {
                if rng.next_u64() & 1 == 1 {
                    Choice::Keep
                } else {
                    Choice::Drop
                }
            }
            Slot::MetaPrefix(n) => Choice::Prefix((rng.next_u64() % (*n as u64 + 1)) as usize),
        }
    }

    fn extreme(&self, keep: bool) -> Choice {
        match (self, keep) {
            (Slot::MetaPrefix(n), true) => Choice::Prefix(*n),
            (Slot::MetaPrefix(_), false) => Choice::Prefix(0),
            (_, true) => Choice::Keep,
            (_, false) => Choice::Drop,
        }
    }
}

/// Fewest images built at a crash point where the logs have unsynced
/// changes, so that their own choices vary.
const LOG_VARIANTS: usize = 6;

/// The choice vectors explored at one crash point: the store's, state
/// file's and run record's changes as [`state_choice_sets`] says; the logs'
/// changes (`logs[i]`: slot i is one) vary beside them, all dropped, all
/// kept, then random, one choice for them per image (at least
/// [`LOG_VARIANTS`] images when they have any), so that lines that cannot
/// harm the store do not multiply its images.
fn choice_sets(slots: &[Slot], logs: &[bool], rng: &mut Rng) -> Vec<Vec<Choice>> {
    let state: Vec<Slot> = slots
        .iter()
        .zip(logs)
        .filter(|(_, l)| !**l)
        .map(|(s, _)| s.clone())
        .collect();
    let state_sets = state_choice_sets(&state, rng);
    let any_logs = logs.iter().any(|l| *l);
    let n = if any_logs {
        state_sets.len().max(LOG_VARIANTS)
    } else {
        state_sets.len()
    };
    (0..n)
        .map(|j| {
            let mut from_state = state_sets[j % state_sets.len()].iter();
            slots
                .iter()
                .zip(logs)
                .map(|(slot, &log)| match (log, j) {
                    (false, _) => from_state
                        .next()
                        .expect("one choice per state slot")
                        .clone(),
                    (true, 0) => slot.extreme(false),
                    (true, 1) => slot.extreme(true),
                    (true, _) => slot.random(rng),
                })
                .collect()
        })
        .collect()
}

/// The choice vectors of the slots that are not the logs'.
fn state_choice_sets(slots: &[Slot], rng: &mut Rng) -> Vec<Vec<Choice>> {
    let options: Vec<Vec<Choice>> = slots.iter().map(Slot::all_choices).collect();
    let total = options
        .iter()
        .try_fold(1u64, |acc, o| acc.checked_mul(o.len() as u64));
    if let Some(total) = total.filter(|&t| t <= EXHAUSTIVE_LIMIT) {
        let mut sets = Vec::new();
        for mut n in 0..total {
            let mut set = Vec::new();
            for o in &options {
                set.push(o[(n % o.len() as u64) as usize].clone());
                n /= o.len() as u64;
            }
            sets.push(set);
        }
        return sets;
    }
    let mut sets = vec![
        slots.iter().map(|s| s.extreme(false)).collect(),
        slots.iter().map(|s| s.extreme(true)).collect(),
    ];
    for _ in 0..RANDOM_IMAGES {
        sets.push(slots.iter().map(|s| s.random(rng)).collect());
    }
    sets
}

// ---------------------------------------------------------------------------
// What an image holds, as the agent reads it
// ---------------------------------------------------------------------------

/// Everything the agent keeps under `Config/`, read with the library, and
/// its run record (which must be exactly one the agent wrote).
#[derive(Clone, Debug, PartialEq)]
struct Content {
    meta: Option<StoreMeta>,
    jobs: Vec<Job>,
    endpoints: Vec<Endpoint>,
    /// The state file's sections (the ETag, the firewall state).
    state: Option<Sections>,
    /// `Spool/cncopgetprofile.status`, byte for byte.
    status: Option<Vec<u8>>,
}

enum Read {
    Ok(Box<Content>),
    NeedsRepair,
    Unopenable(String),
}

const STORE: &str = "Config/backupjobs.db";
const STATE: &str = "Config/cncopgetprofile.state";
const STATUS: &str = "Spool/cncopgetprofile.status";

/// redb panics on some damaged pages (the agent's panic hook turns that
/// into a store error; here the explorer counts the image as unopenable).
fn read_content(root: &Path) -> Read {
    match std::panic::catch_unwind(|| read_content_unguarded(root)) {
        Ok(read) => read,
        Err(_) => Read::Unopenable("redb panicked reading the file".into()),
    }
}

fn read_content_unguarded(root: &Path) -> Read {
    let status = std::fs::read(root.join(STATUS)).ok();
    let state = match std::fs::read(root.join(STATE)) {
        Ok(bytes) => match state::decode(&bytes) {
            Ok(s) => Some(s),
            Err(why) => return Read::Unopenable(format!("{STATE}: {why}")),
        },
        Err(_) => None,
    };
    let reader = match StoreReader::open(&root.join(STORE)) {
        Ok(r) => r,
        Err(e) if e.to_string().contains("not closed cleanly") => return Read::NeedsRepair,
        Err(e) => return Read::Unopenable(e.to_string()),
    };
    let Some(reader) = reader else {
        return Read::Ok(Box::new(Content {
            meta: None,
            jobs: Vec::new(),
            endpoints: Vec::new(),
            state,
            status,
        }));
    };
    let read = || -> cncopgetprofile::Result<Content> {
        Ok(Content {
            meta: reader.meta()?,
            jobs: reader.jobs()?.collect::<cncopgetprofile::Result<_>>()?,
            endpoints: reader.endpoints()?,
            state: state.clone(),
            status: status.clone(),
        })
    };
    match read() {
        Ok(c) => Read::Ok(Box::new(c)),
        Err(e) => Read::Unopenable(e.to_string()),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    OldExact,
    /// A state the run made durable on its way (e.g. trust after a root
    /// rotation, before the update).
    Between,
    NewExact,
    Repaired,
    Unopenable,
    WrongContent,
}

const OUTCOMES: [Outcome; 6] = [
    Outcome::OldExact,
    Outcome::Between,
    Outcome::NewExact,
    Outcome::Repaired,
    Outcome::Unopenable,
    Outcome::WrongContent,
];

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::OldExact => "old-exact",
            Outcome::Between => "between-exact",
            Outcome::NewExact => "new-exact",
            Outcome::Repaired => "repair needed",
            Outcome::Unopenable => "unopenable",
            Outcome::WrongContent => "wrong content",
        }
    }
}

/// `c` holds exactly what `want` holds. One allowance: the state file is
/// written after the store, so an image may hold the new store beside the
/// old state file (or none). Its `etag` section then names another store
/// file than the one there, and the agent does not send that ETag
/// (`store::etag`): the next run downloads in full and puts it right,
/// nothing is lost or mixed. Such an `etag` section, stale or missing,
/// counts as the one wanted; every other section must be exact.
fn holds(c: &Content, want: &Content) -> bool {
    let live_etag = |c: &Content| {
        let section = c.state.as_ref()?.get(Section::ETAG.name())?;
        let (id, _) = etag::decode(section)?;
        (Some(id) == c.meta.as_ref().map(|m| m.id)).then_some(section.clone())
    };
    let without_etag = |c: &Content| {
        c.state.clone().map(|mut s| {
            s.remove(Section::ETAG.name());
            s
        })
    };
    let (mine, wanted) = (live_etag(c), live_etag(want));
    c.meta == want.meta
        && c.status == want.status
        && c.jobs == want.jobs
        && c.endpoints == want.endpoints
        && (mine == wanted || mine.is_none())
        && without_etag(c).unwrap_or_default() == without_etag(want).unwrap_or_default()
}

/// Opens the image in `root` as the agent's start-up does and says what
/// it holds: which of `states` (before the run, each state it made
/// durable, after it) it is exactly, the latest that matches.
fn classify(root: &Path, states: &[Content]) -> (Outcome, Option<usize>, String) {
    let exact = |c: Content| match states.iter().rposition(|s| holds(&c, s)) {
        Some(i) if i + 1 == states.len() => (Outcome::NewExact, Some(i), String::new()),
        Some(0) => (Outcome::OldExact, Some(0), String::new()),
        Some(i) => (Outcome::Between, Some(i), String::new()),
        None => (Outcome::WrongContent, None, String::new()),
    };
    match read_content(root) {
        Read::Ok(c) => exact(*c),
        Read::Unopenable(why) => (Outcome::Unopenable, None, why),
        Read::NeedsRepair => {
            // The agent's start-up: redb repairs the file (or the agent
            // moves it aside, which loses the profile).
            let repair = || JobStore::open(&root.join(STORE), true, 0).map(drop);
            match std::panic::catch_unwind(repair) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return (Outcome::Unopenable, None, e.to_string()),
                Err(_) => return (Outcome::Unopenable, None, "redb panicked repairing".into()),
            }
            match read_content(root) {
                Read::Ok(c) if c.meta.is_none() => (
                    Outcome::Unopenable,
                    None,
                    "moved aside after a failed repair".into(),
                ),
                Read::Ok(c) => match exact(*c) {
                    (Outcome::WrongContent, i, why) => (Outcome::WrongContent, i, why),
                    (_, i, why) => (Outcome::Repaired, i, why),
                },
                Read::Unopenable(why) => (Outcome::Unopenable, None, why),
                Read::NeedsRepair => (Outcome::Unopenable, None, "still needs a repair".into()),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The explorer
// ---------------------------------------------------------------------------

/// A recorded run and everything needed to explore it.
struct Recording {
    name: &'static str,
    /// The agent's files before the run (all durable), by name relative
    /// to the root.
    before: BTreeMap<String, Vec<u8>>,
    ops: Vec<Op>,
    /// Before the run, each state it made durable (folder fsync after a
    /// rename), after it.
    states: Vec<Content>,
    /// The INI and CA of the install, copied into each image's root.
    setup_files: BTreeMap<String, Vec<u8>>,
    rerun: RunOptions,
    /// The logs were recorded (the run held [`RUNS`] exclusively).
    logs: bool,
    /// The logs as the run left them.
    final_logs: BTreeMap<String, Vec<u8>>,
}

impl Recording {
    /// What the run left.
    fn after(&self) -> &Content {
        self.states
            .last()
            .expect("at least the state before the run")
    }
}

/// What a crash image holds of a log file, against what the run had
/// written to it by then.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum LogImage {
    /// A prefix of it, ending with a whole line (or empty, or no file).
    Whole,
    /// A prefix cut inside a line, or with NUL bytes where the file system
    /// kept a length but not the bytes written: the next run cuts it back.
    Torn,
    /// A byte other than NUL that was never written there.
    Garbage,
}

fn classify_log(image: &[u8], written: &[u8]) -> LogImage {
    let garbage = image
        .iter()
        .enumerate()
        .any(|(i, &b)| b != 0 && written.get(i) != Some(&b));
    if garbage {
        LogImage::Garbage
    } else if written.starts_with(image) && (image.is_empty() || image.ends_with(b"\n")) {
        LogImage::Whole
    } else {
        LogImage::Torn
    }
}

/// The whole lines of a log image before its first NUL: what the next run
/// must keep of it (`logs`' promise).
fn whole_lines(image: &[u8]) -> &[u8] {
    let clean = &image[..image.iter().position(|&b| b == 0).unwrap_or(image.len())];
    &clean[..clean.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1)]
}

#[derive(Default)]
struct Tally {
    points: usize,
    images: usize,
    counts: BTreeMap<Outcome, usize>,
    /// Images by the worst of their log files.
    logs: BTreeMap<LogImage, usize>,
    reruns: usize,
    failures: Vec<String>,
}

impl Tally {
    fn row(&self, scenario: &str, fs: Fs) -> String {
        let mut s = format!(
            "{scenario:<22} {:<6} {:>6} {:>7}",
            match fs {
                Fs::Ubifs => "UBIFS",
                Fs::Ext4Ordered => "ext4",
            },
            self.points,
            self.images
        );
        for o in OUTCOMES {
            let _ = write!(s, " {:>9}", self.counts.get(&o).copied().unwrap_or(0));
        }
        let _ = write!(s, " {:>6}", self.reruns);
        if !self.logs.is_empty() {
            let n = |l| self.logs.get(&l).copied().unwrap_or(0);
            let _ = write!(
                s,
                "  logs whole/torn/garbage {}/{}/{}",
                n(LogImage::Whole),
                n(LogImage::Torn),
                n(LogImage::Garbage)
            );
        }
        s
    }
}

fn table_head() -> String {
    let mut s = format!(
        "{:<22} {:<6} {:>6} {:>7}",
        "scenario", "fs", "points", "images"
    );
    for o in OUTCOMES {
        let l = o.label();
        let _ = write!(s, " {:>9}", &l[..l.len().min(9)]);
    }
    let _ = write!(s, " {:>6}", "reruns");
    s
}

/// The indices of `ops` after which the run had made a new state durable:
/// a folder fsync (or where a removed one returned) after a rename in that
/// folder.
fn durable_points(ops: &[Op]) -> Vec<usize> {
    let mut renamed = std::collections::BTreeSet::new();
    let mut points = Vec::new();
    for (k, op) in ops.iter().enumerate() {
        match op {
            Op::Rename { to, .. } => {
                renamed.insert(Disk::folder(to).to_string());
            }
            Op::SyncDir(f) | Op::Returned(f) if renamed.remove(f) => points.push(k),
            _ => {}
        }
    }
    points
}

/// An image's files, by content: images that hash the same are the same.
fn image_hash(files: &BTreeMap<String, (usize, Vec<u8>)>) -> Vec<u8> {
    let mut h = ring::digest::Context::new(&ring::digest::SHA256);
    for (name, (_, bytes)) in files {
        h.update(name.as_bytes());
        h.update(&(bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    h.finish().as_ref().to_vec()
}

/// Explores `rec` under `fs`. Unless `seen` is `None` (the mutation
/// checks, which need only the images), a whole run (as `main` makes it)
/// is started on every distinct image (`seen`: the hashes of those already
/// run, shared by the file systems of a scenario) and must exit 0, store
/// the served profile (`net_check`), record itself and, where the logs are
/// recorded, append its lines after the image's whole lines.
fn explore(
    rec: &Recording,
    fs: Fs,
    net_check: &dyn Fn(&Content) -> bool,
    mut seen: Option<&mut HashSet<Vec<u8>>>,
) -> Tally {
    let mut tally = Tally::default();
    let mut rng = Rng::new(SEED ^ rec.ops.len() as u64);
    let mut disk = Disk::from_files(fs, &rec.before);
    let durable = durable_points(&rec.ops);
    let scratch = tempfile::tempdir().expect("scratch dir");
    let status_changed = rec.states[0].status != rec.after().status;
    for k in 0..=rec.ops.len() {
        let at_point = k == rec.ops.len() || rec.ops[k].is_barrier();
        if !at_point {
            disk.apply(k, &rec.ops[k]);
            continue;
        }
        // States made durable before this point (index into `rec.states`).
        let passed = durable.iter().filter(|&&p| p < k).count();
        tally.points += 1;
        let slots = disk.slots();
        let logs: Vec<bool> = slots.iter().map(|s| disk.in_logs(s)).collect();
        for choice in choice_sets(&slots, &logs, &mut rng) {
            let files = disk.image(&slots, &choice);
            let root = scratch.path().join(format!("img{}", tally.images));
            for folder in FOLDERS {
                std::fs::create_dir_all(root.join(folder)).expect("image folder");
            }
            for (n, b) in &rec.setup_files {
                std::fs::write(root.join("Config").join(n), b).expect("write setup file");
            }
            for (n, (_, b)) in &files {
                std::fs::write(root.join(n), b).expect("write image file");
            }
            tally.images += 1;
            let (outcome, index, why) = classify(&root, &rec.states);
            *tally.counts.entry(outcome).or_default() += 1;
            let what = format!(
                "{} {:?}: crash point {} of {} (before {}): {} {}",
                rec.name,
                fs,
                k,
                rec.ops.len(),
                rec.ops.get(k).map_or("the end".to_string(), describe),
                outcome.label(),
                why
            );
            if matches!(outcome, Outcome::Unopenable | Outcome::WrongContent) {
                tally.failures.push(what.clone());
            } else if index.is_some_and(|i| i < passed.min(rec.states.len() - 1)) {
                tally.failures.push(format!(
                    "{what}: older than state {passed}, which the run had made durable"
                ));
            }
            if rec.logs {
                let mut worst = LogImage::Whole;
                for (name, (ino, bytes)) in files.iter().filter(|(n, _)| n.starts_with(LOGS)) {
                    let class = classify_log(bytes, disk.written(*ino));
                    worst = worst.max(class);
                    if class == LogImage::Garbage {
                        tally
                            .failures
                            .push(format!("{what}: {name} holds bytes never written"));
                    }
                }
                *tally.logs.entry(worst).or_default() += 1;
                // Once the record shows the run, its lines are durable.
                let recorded = status_changed
                    && files.get(STATUS).map(|(_, b)| b) == rec.after().status.as_ref();
                for (name, want) in rec.final_logs.iter().filter(|_| recorded) {
                    if files.get(name).map(|(_, b)| b) != Some(want) {
                        tally.failures.push(format!(
                            "{what}: the run record is durable but {name} lacks lines of the run"
                        ));
                    }
                }
            }
            if let Some(seen) = seen.as_mut()
                && seen.insert(image_hash(&files))
            {
                tally.reruns += 1;
                // A panic is a failure to count (a release build aborts).
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    rerun(rec, &root, &files, net_check)
                }));
                match run {
                    Ok(Ok(())) => {}
                    Ok(Err(why)) => tally.failures.push(format!("{what}: {why}")),
                    Err(_) => tally
                        .failures
                        .push(format!("{what}: the next run panicked")),
                }
            }
            let _ = std::fs::remove_dir_all(&root);
        }
        if k < rec.ops.len() {
            disk.apply(k, &rec.ops[k]);
        }
    }
    tally
}

/// A whole run on the crash image in `root`: it must exit 0, store the
/// served profile, record itself, and (where logs are recorded) keep the
/// image's whole log lines, cut what a power cut tore and append its own.
fn rerun(
    rec: &Recording,
    root: &Path,
    files: &BTreeMap<String, (usize, Vec<u8>)>,
    net_check: &dyn Fn(&Content) -> bool,
) -> Result<(), String> {
    let report = main_run(root, &rec.rerun);
    let stored = match read_content(root) {
        Read::Ok(c) => Some(*c),
        _ => None,
    };
    if report.exit_code() != 0 || !stored.as_ref().is_some_and(net_check) {
        return Err(format!(
            "the next run did not store the served profile: {}",
            report.summary()
        ));
    }
    match status::read(&InstallRoot::new(root)) {
        Ok(Some(st)) if st.succeeded() && st.summary == report.summary() => {}
        other => return Err(format!("the next run's record is not there: {other:?}")),
    }
    if !rec.logs {
        return Ok(());
    }
    let today = format!("{LOGS}/{}", file_name(now()));
    let after = std::fs::read(root.join(&today)).map_err(|e| format!("{today}: {e}"))?;
    let kept = files.get(&today).map_or(&[][..], |(_, b)| whole_lines(b));
    let new = after.strip_prefix(kept).ok_or_else(|| {
        format!("{today}: the next run did not keep the image's whole lines before its own")
    })?;
    let text = String::from_utf8_lossy(new);
    let lines_ok = !new.contains(&0)
        && new.ends_with(b"\n")
        && text
            .lines()
            .all(|l| l.starts_with("20") && l.contains(" ["));
    if !lines_ok || !text.contains(&report.summary()) {
        return Err(format!(
            "{today}: the next run's lines are not whole lines after the image's: {:?}",
            text.chars().take(80).collect::<String>()
        ));
    }
    Ok(())
}

fn describe(op: &Op) -> String {
    match op {
        Op::Create(n) => format!("create {n}"),
        Op::Write { name, offset, data } => format!("write {name} @{offset} +{}", data.len()),
        Op::SetLen { name, len } => format!("set_len {name} {len}"),
        Op::Sync(n) => format!("fsync {n}"),
        Op::Rename { from, to } => format!("rename {from} -> {to}"),
        Op::Remove(n) => format!("remove {n}"),
        Op::SyncDir(f) => format!("fsync {f}/"),
        Op::Returned(f) => format!("return of a removed fsync {f}/"),
        Op::Datagram => "the update datagram".to_string(),
    }
}

// ---------------------------------------------------------------------------
// Mutations: the recording as broken code would have issued it
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Mutation {
    /// `rename_into_place` without the folder fsync.
    NoDirSync,
    /// Files renamed into place without being synced first.
    NoSyncBeforeRename,
    /// redb commits with `Durability::None`: the store file is never synced.
    RedbDurabilityNone,
    /// The new profile written into the live store instead of a new file.
    InPlace,
    /// The day's log not synced before the run record is written.
    NoLogSync,
}

/// `store_existed`: the run began with a store (written in place, it is
/// not created).
fn mutate(ops: &[Op], m: Mutation, store_existed: bool) -> Vec<Op> {
    let renamed: Vec<&String> = ops
        .iter()
        .filter_map(|o| match o {
            Op::Rename { from, .. } => Some(from),
            _ => None,
        })
        .collect();
    let tmp = format!("{STORE}.new");
    ops.iter()
        .filter_map(|op| match (m, op) {
            (Mutation::NoDirSync, Op::SyncDir(f)) => Some(Op::Returned(f.clone())),
            (Mutation::NoSyncBeforeRename, Op::Sync(n)) if renamed.contains(&n) => None,
            (Mutation::RedbDurabilityNone, Op::Sync(n)) if n.starts_with(STORE) => None,
            (Mutation::NoLogSync, Op::Sync(n)) if n.starts_with(LOGS) => None,
            (Mutation::InPlace, op) => in_place(op, &tmp, store_existed),
            _ => Some(op.clone()),
        })
        .collect()
}

/// `op` with the store's temporary file replaced by the store itself.
fn in_place(op: &Op, tmp: &str, store_existed: bool) -> Option<Op> {
    let live = |n: &String| {
        if n == tmp {
            STORE.to_string()
        } else {
            n.clone()
        }
    };
    Some(match op {
        Op::Create(n) if n == tmp && !store_existed => Op::Create(STORE.to_string()),
        Op::Create(n) | Op::Remove(n) if n == tmp => return None,
        Op::Rename { from, .. } if from == tmp => return None,
        Op::Write { name, offset, data } => Op::Write {
            name: live(name),
            offset: *offset,
            data: data.clone(),
        },
        Op::SetLen { name, len } => Op::SetLen {
            name: live(name),
            len: *len,
        },
        Op::Sync(n) => Op::Sync(live(n)),
        other => other.clone(),
    })
}

// ---------------------------------------------------------------------------
// Scenarios
// ---------------------------------------------------------------------------

/// An install with the network's CA and INI; `firewall` turns the check on.
fn install(net: &TestNetwork, firewall: bool) -> Install {
    let i = Install::bare();
    let extra = if firewall {
        "[firewall]\nenabled = On\nprobe_timeout = 1\nbudget = 20\n"
    } else {
        ""
    };
    i.setup(net, extra);
    i
}

fn setup_files(i: &Install) -> BTreeMap<String, Vec<u8>> {
    let config = i.path("Config");
    ["cncop3.ini", "ca.pem"]
        .iter()
        .map(|n| {
            (
                n.to_string(),
                std::fs::read(config.join(n)).expect("read setup file"),
            )
        })
        .collect()
}

fn content(root: &Path) -> Content {
    match read_content(root) {
        Read::Ok(c) => *c,
        _ => panic!("{} cannot be read", root.display()),
    }
}

/// Runs the scenario's one recorded run on `i` (already prepared) and
/// checks the recording against the disk.
fn record(name: &'static str, i: &Install, opts: RunOptions) -> Recording {
    record_with(name, i, opts, None, false)
}

/// [`record`], with the socket ccs3updater's datagrams reach, if the run
/// may send one, and the logs recorded too if `logs`.
fn record_with(
    name: &'static str,
    i: &Install,
    opts: RunOptions,
    updater: Option<std::net::UdpSocket>,
    logs: bool,
) -> Recording {
    let root = i.root();
    let before = agent_files(root, logs);
    let mut states = vec![content(root)];
    let ops = recorded_run(root, &opts, updater, logs);
    let new = content(root);
    // The recording is complete: replayed, it gives the files on disk. On
    // the way, each state made durable (a folder fsync after a rename).
    let scratch = tempfile::tempdir().expect("scratch dir");
    let mut disk = Disk::from_files(Fs::Ubifs, &before);
    let durable = durable_points(&ops);
    for (k, op) in ops.iter().enumerate() {
        disk.apply(k, op);
        if durable.contains(&k) {
            let dir = scratch.path().join(format!("state{k}"));
            for (n, b) in disk.live_files() {
                let path = dir.join(n);
                std::fs::create_dir_all(path.parent().expect("a folder")).expect("state dir");
                std::fs::write(path, b).expect("write state file");
            }
            states.push(content(&dir));
        }
    }
    if states.last() != Some(&new) {
        states.push(new);
    }
    let left = agent_files(root, logs);
    assert_eq!(
        disk.live_files(),
        left,
        "{name}: the recording does not replay to the files the run left"
    );
    Recording {
        name,
        before,
        ops,
        states,
        setup_files: setup_files(i),
        rerun: RunOptions {
            recreate: false,
            ..RunOptions::default()
        },
        logs,
        final_logs: left
            .into_iter()
            .filter(|(n, _)| n.starts_with(LOGS))
            .collect(),
    }
}

/// A setup run (not recorded) that must succeed.
fn run_ok(i: &Install, opts: &RunOptions) {
    let report = main_run(i.root(), opts);
    assert_eq!(report.exit_code(), 0, "setup run: {}", report.summary());
}

/// The profile part of `c` equals `want`'s (the jobs the network serves).
fn same_profile(c: &Content, want: &Content) -> bool {
    c.jobs == want.jobs
        && c.endpoints == want.endpoints
        && c.meta.as_ref().map(|m| (&m.generated, m.jobs))
            == want.meta.as_ref().map(|m| (&m.generated, m.jobs))
}

fn profile(n: usize, seed: u64) -> Vec<u8> {
    profile_xml_with(
        DEVICE_ID,
        n,
        seed,
        &format!("2026-11-0{}T00:00:00Z", seed % 9 + 1),
    )
}

/// A loopback address of its own for each endpoint (127.78.x.y).
fn open_endpoint(n: u8) -> (TcpListener, (Ipv4Addr, u16)) {
    let ip = Ipv4Addr::new(127, 78, (std::process::id() % 250) as u8, n);
    let l = TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("bind {ip}:0: {e}"));
    let port = l.local_addr().expect("local address").port();
    (l, (ip, port))
}

/// A recorded scenario and the network that serves its profile.
struct Scenario {
    rec: Recording,
    _net: TestNetwork,
    install: Install,
    _listeners: Vec<TcpListener>,
}

fn first_profile(jobs: usize) -> Scenario {
    let net = net_with_profile(NetOptions::default(), profile(jobs, 1));
    let i = install(&net, false);
    let rec = record("first profile", &i, RunOptions::default());
    Scenario {
        rec,
        _net: net,
        install: i,
        _listeners: Vec::new(),
    }
}

fn replace_profile(jobs: usize) -> Scenario {
    let net = net_with_profile(NetOptions::default(), profile(jobs, 1));
    let i = install(&net, false);
    run_ok(&i, &RunOptions::default());
    let b = profile(jobs, 2);
    net.set_profile(DEVICE_ID, b.clone(), Some(etag_for(&b)));
    let rec = record("replace profile", &i, RunOptions::default());
    Scenario {
        rec,
        _net: net,
        install: i,
        _listeners: Vec::new(),
    }
}

/// `etag`: the server answers 304; without, the same content comes again
/// in a 200.
fn unchanged(jobs: usize, etag: bool) -> Scenario {
    let a = profile(jobs, 1);
    let net = net_with_profile(NetOptions::default(), a.clone());
    let i = install(&net, false);
    run_ok(&i, &RunOptions::default());
    let name = if etag {
        "unchanged (304)"
    } else {
        net.set_profile(DEVICE_ID, a, None);
        "unchanged (200, same)"
    };
    let rec = record(name, &i, RunOptions::default());
    Scenario {
        rec,
        _net: net,
        install: i,
        _listeners: Vec::new(),
    }
}

fn firewall_change(jobs: usize) -> Scenario {
    let (l1, e1) = open_endpoint(2);
    let (l2, e2) = open_endpoint(3);
    let xml = with_firewall_endpoints(profile(jobs, 1), &[e1, e2]);
    let net = net_with_profile(NetOptions::default(), xml);
    let i = install(&net, true);
    run_ok(&i, &RunOptions::default());
    // The second endpoint's firewall closes.
    drop(l2);
    let rec = record("firewall state change", &i, RunOptions::default());
    Scenario {
        rec,
        _net: net,
        install: i,
        _listeners: vec![l1],
    }
}

fn recreate(jobs: usize) -> Scenario {
    let net = net_with_profile(NetOptions::default(), profile(jobs, 1));
    let i = install(&net, false);
    run_ok(&i, &RunOptions::default());
    let opts = RunOptions {
        recreate: true,
        ..RunOptions::default()
    };
    let rec = record("--recreate", &i, opts);
    Scenario {
        rec,
        _net: net,
        install: i,
        _listeners: Vec::new(),
    }
}

/// A device that accepted root 1 and release 3.4.0 (installed); the
/// recorded run accepts roots 2 and 3 and announces 3.10.0 to ccs3updater
/// (PROTOCOL 8.3: the trust state durable before the datagram).
fn rotation_and_update(jobs: usize) -> Scenario {
    let updater = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind the updater");
    let port = updater.local_addr().expect("updater address").port();
    let net = net_with_profile(NetOptions::default(), profile(jobs, 1));
    let i = Install::bare();
    i.setup(&net, &update_ini(port.into(), "On"));
    let mut vendor = signed_release(&net, &i, "3.4.0");
    run_ok(&i, &RunOptions::default());
    rotate_keys(&mut vendor, 2);
    vendor.publish_roots(&net);
    vendor.publish_release(&net, &builds("3.10.0"), FAR);
    let rec = record_with(
        "root rotation + update",
        &i,
        RunOptions::default(),
        Some(updater),
        false,
    );
    // The datagram went out only once the trust state that announced it
    // was durable.
    let sent = rec
        .ops
        .iter()
        .position(|o| matches!(o, Op::Datagram))
        .expect("the run told ccs3updater");
    let durable = durable_points(&rec.ops)
        .into_iter()
        .filter(|&p| p < sent)
        .count();
    let trust = |c: &Content| c.state.as_ref().and_then(|s| s.get("trust").cloned());
    assert!(
        trust(&rec.states[durable]) == trust(rec.after()),
        "ccs3updater was told before the trust state of the update was durable"
    );
    assert!(
        rec.states.len() >= 3,
        "a rotation and an update are two durable states"
    );
    Scenario {
        rec,
        _net: net,
        install: i,
        _listeners: Vec::new(),
    }
}

/// Explores `s` under both file systems; returns the table rows and every
/// failure found.
fn explore_both(s: &Scenario) -> (Vec<String>, Vec<String>) {
    let want = s.rec.after().clone();
    let check = move |c: &Content| same_profile(c, &want);
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    let mut seen = HashSet::new();
    for fs in [Fs::Ubifs, Fs::Ext4Ordered] {
        let t = explore(&s.rec, fs, &check, Some(&mut seen));
        rows.push(t.row(s.rec.name, fs));
        failures.extend(t.failures);
    }
    (rows, failures)
}

fn print_table(rows: &[String]) {
    println!("{}", table_head());
    for r in rows {
        println!("{r}");
    }
}

/// The store's size after the scenario's run.
fn store_size(s: &Scenario) -> u64 {
    std::fs::metadata(s.install.root().join(STORE)).map_or(0, |m| m.len())
}

fn writes_row(s: &Scenario, folder: &str) -> String {
    let w = count_writes(&s.rec.ops, folder);
    let store = s
        .rec
        .ops
        .iter()
        .any(|o| matches!(o, Op::Rename { to, .. } if to == STORE));
    let size = store_size(s);
    format!(
        "{:<22} {:>10} {:>10} {:>6} {:>7} {:>10} {:>6}",
        format!("{folder}/"),
        w.bytes,
        w.rewritten,
        w.fsyncs,
        w.created,
        if folder == "Config" { size } else { 0 },
        if store && size > 0 && folder == "Config" {
            format!("{:.2}", w.bytes as f64 / size as f64)
        } else {
            "-".to_string()
        }
    )
}

/// The explorer on one scenario: the table, the required outcomes.
fn check_scenario(s: &Scenario) {
    let (rows, failures) = explore_both(s);
    print_table(&rows);
    println!(
        "{:<22} {:>10} {:>10} {:>6} {:>7} {:>10} {:>6}",
        format!("writes: {}", s.rec.name),
        "bytes",
        "rewritten",
        "fsyncs",
        "created",
        "store",
        "ratio"
    );
    for folder in FOLDERS.into_iter().filter(|f| s.rec.logs || *f != LOGS) {
        println!("{}", writes_row(s, folder));
    }
    assert!(
        failures.is_empty(),
        "{} crash images broke the rules:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn power_loss_first_profile_into_an_empty_root() {
    let _runs = hold_runs(false);
    let s = first_profile(JOBS);
    check_scenario(&s);
    if let Err(line) = profile_change_budget(&s) {
        panic!("{line}");
    }
}

/// Prints a flash-write budget's verdict; `Err` when it is not met.
fn budget(what: &str, bytes: u64, limit: u64) -> Result<(), String> {
    let verdict = if bytes <= limit { "PASS" } else { "FAIL" };
    let line = format!("budget {what}: {bytes} bytes written, at most {limit}: {verdict}");
    println!("{line}");
    if bytes <= limit { Ok(()) } else { Err(line) }
}

/// A profile change may write at most 1.3 times the new store's size.
fn profile_change_budget(s: &Scenario) -> Result<(), String> {
    let size = store_size(s);
    budget(
        &format!("{} (1.3 x the {size}-byte store)", s.rec.name),
        count_writes(&s.rec.ops, "Config").bytes,
        size * 13 / 10,
    )
}

#[test]
fn power_loss_replacing_a_2000_job_profile() {
    let _runs = hold_runs(false);
    let s = replace_profile(JOBS);
    check_scenario(&s);
    if let Err(line) = profile_change_budget(&s) {
        panic!("{line}");
    }
}

#[test]
fn power_loss_unchanged_runs() {
    let _runs = hold_runs(false);
    let s = unchanged(JOBS, true);
    check_scenario(&s);
    let w = count_writes(&s.rec.ops, "Config");
    assert_eq!(w.bytes, 0, "an unchanged (304) run wrote to Config/");
    assert_eq!(w.created, 0);
    // The same content in a 200: the store is compared as it streams and
    // no store file is created or written. (The server of this scenario
    // also stops sending the ETag it sent before, so the state file
    // forgets it: its only write.)
    let s = unchanged(JOBS, false);
    check_scenario(&s);
    let store_ops = s.rec.ops.iter().filter(|o| match o {
        Op::Write { name, .. } | Op::Create(name) => name.starts_with(STORE),
        _ => false,
    });
    assert_eq!(
        store_ops.count(),
        0,
        "an unchanged 200 wrote or created a store file"
    );
    let w = count_writes(&s.rec.ops, "Config");
    assert!(w.bytes <= 64, "{} bytes written to Config/", w.bytes);
}

#[test]
fn power_loss_firewall_state_change() {
    let _runs = hold_runs(false);
    let s = firewall_change(JOBS);
    check_scenario(&s);
    // The firewall state is in the state file: a change rewrites that small
    // file, never the store, whatever the job count.
    let verdict = budget(
        "firewall state change (64 KiB)",
        count_writes(&s.rec.ops, "Config").bytes,
        64 * 1024,
    );
    if let Err(line) = verdict {
        panic!("{line}");
    }
}

#[test]
fn power_loss_root_rotation_and_accepted_update() {
    let _runs = hold_runs(false);
    check_scenario(&rotation_and_update(JOBS));
}

/// `-d`, a first profile into a root whose day's log does not exist yet
/// (the run creates it), beside yesterday's, kept, and one past
/// `days_of_logs`, which the run removes.
fn first_profile_with_logs(jobs: usize) -> Scenario {
    let net = net_with_profile(NetOptions::default(), profile(jobs, 1));
    let i = install(&net, false);
    let old = "gp20200101.log";
    std::fs::write(
        i.path(LOGS).join(old),
        "2020-01-01T00:00:00Z [INFO] a run long ago\n",
    )
    .expect("write an old log");
    let yesterday = file_name(now() - 86_400);
    std::fs::write(
        i.path(LOGS).join(yesterday),
        "2020-01-02T00:00:00Z [INFO] yesterday's run\n",
    )
    .expect("write yesterday's log");
    let rec = record_with(
        "first profile, -d logs",
        &i,
        RunOptions::default(),
        None,
        true,
    );
    assert!(
        rec.ops
            .iter()
            .any(|o| matches!(o, Op::Remove(n) if n.ends_with(old))),
        "the run did not remove the old log"
    );
    Scenario {
        rec,
        _net: net,
        install: i,
        _listeners: Vec::new(),
    }
}

#[test]
fn power_loss_logs_and_run_record() {
    let _runs = hold_runs(true);
    check_scenario(&first_profile_with_logs(MUTATION_JOBS));
}

/// The logs' mutation: the explorer must see a run record that is durable
/// before the lines of its run.
#[test]
fn mutation_no_log_sync_before_the_record_is_caught() {
    let _runs = hold_runs(true);
    let s = first_profile_with_logs(MUTATION_JOBS);
    let want = s.rec.after().clone();
    let check = move |c: &Content| same_profile(c, &want);
    let mutated = Recording {
        ops: mutate(&s.rec.ops, Mutation::NoLogSync, false),
        before: s.rec.before.clone(),
        states: s.rec.states.clone(),
        setup_files: s.rec.setup_files.clone(),
        rerun: s.rec.rerun.clone(),
        name: s.rec.name,
        logs: true,
        final_logs: s.rec.final_logs.clone(),
    };
    let t = explore(&mutated, Fs::Ubifs, &check, None);
    println!("mutation {:?}", Mutation::NoLogSync);
    print_table(&[t.row(s.rec.name, Fs::Ubifs)]);
    println!("  {} failures", t.failures.len());
    assert!(
        t.failures
            .iter()
            .any(|f| f.contains("lacks lines of the run")),
        "the explorer found nothing wrong with {:?}",
        Mutation::NoLogSync
    );
}

#[test]
fn power_loss_recreate() {
    let _runs = hold_runs(false);
    check_scenario(&recreate(JOBS));
}

// ---------------------------------------------------------------------------
// Mutation checks
// ---------------------------------------------------------------------------

/// The explorer on `m`'s rewrite of the replacement (and first-profile)
/// recordings must find failures.
fn mutation_is_caught(m: Mutation) {
    let mut found = Vec::new();
    let mut rows = Vec::new();
    for s in [replace_profile(MUTATION_JOBS), first_profile(MUTATION_JOBS)] {
        let want = s.rec.after().clone();
        let check = move |c: &Content| same_profile(c, &want);
        let mutated = Recording {
            ops: mutate(&s.rec.ops, m, s.rec.before.contains_key(STORE)),
            before: s.rec.before.clone(),
            states: s.rec.states.clone(),
            setup_files: s.rec.setup_files.clone(),
            rerun: s.rec.rerun.clone(),
            name: s.rec.name,
            logs: false,
            final_logs: BTreeMap::new(),
        };
        for fs in [Fs::Ubifs, Fs::Ext4Ordered] {
            let t = explore(&mutated, fs, &check, None);
            rows.push(t.row(s.rec.name, fs));
            found.push((s.rec.name, fs, t.failures.len()));
        }
    }
    println!("mutation {m:?}");
    print_table(&rows);
    for (name, fs, n) in &found {
        println!("  {name} {fs:?}: {n} failures");
    }
    assert!(
        found.iter().any(|(_, fs, n)| *fs == Fs::Ubifs && *n > 0),
        "the explorer found nothing wrong with {m:?}"
    );
}

#[test]
fn mutation_no_directory_fsync_is_caught() {
    let _runs = hold_runs(false);
    mutation_is_caught(Mutation::NoDirSync);
}

#[test]
fn mutation_no_sync_before_rename_is_caught() {
    let _runs = hold_runs(false);
    mutation_is_caught(Mutation::NoSyncBeforeRename);
}

#[test]
fn mutation_redb_durability_none_is_caught() {
    let _runs = hold_runs(false);
    mutation_is_caught(Mutation::RedbDurabilityNone);
}

#[test]
fn mutation_writing_the_store_in_place_is_caught() {
    let _runs = hold_runs(false);
    mutation_is_caught(Mutation::InPlace);
}
