//! The profile step (PROTOCOL 2 and 3; the README's "What a run does", 3
//! and 4): the request with the ETag of the stored content, the signed
//! manifest of the answer when there is a trusted root, the 200's body
//! streamed through the parser into the store, then the ETag it came with.
//! Its `Outcome` is the run's summary line.

use crate::config::Config;
use crate::error::Result;
use crate::fetch::{self, ProfileBody, ProfileResponse};
use crate::profile;
use crate::state::StateFile;
use crate::store::{Change, Diff, JobStore, ReplaceOptions, Replaced};
use crate::trust::{self, Trust};
use std::io::Write;
use std::time::Instant;

/// The command line's say in the profile step.
#[derive(Clone, Copy, Debug, Default)]
pub struct Flags {
    /// `--recreate`: no `If-None-Match`, and the store is rewritten even
    /// when the content is unchanged.
    pub recreate: bool,
    /// `--dry-run`: the changes are printed, nothing is written.
    pub dry_run: bool,
}

/// How a successful run ended; its `Display` is the run's summary line.
#[derive(Debug)]
pub enum Outcome {
    /// 304: the stored profile is current.
    NotModified { jobs: u64 },
    /// 200 with the same records as stored: nothing written.
    Unchanged { jobs: usize, bytes: u64 },
    /// A new profile is stored.
    Updated {
        jobs: usize,
        endpoints: usize,
        bytes: u64,
        diff: Diff,
        millis: u128,
    },
    /// `--dry-run`: nothing written.
    DryRun {
        jobs: usize,
        diff: Diff,
        not_modified: bool,
    },
}

impl Outcome {
    /// A 304, with `jobs` stored.
    fn not_modified(jobs: u64, dry_run: bool) -> Outcome {
        if dry_run {
            Outcome::DryRun {
                jobs: jobs as usize,
                diff: Diff::default(),
                not_modified: true,
            }
        } else {
            Outcome::NotModified { jobs }
        }
    }

    /// A 200 of `bytes` the store took as `replaced`, `millis` after the
    /// request.
    fn of(replaced: Replaced, bytes: u64, millis: u128) -> Outcome {
        match replaced {
            Replaced::Unchanged(s) => Outcome::Unchanged {
                jobs: s.jobs,
                bytes,
            },
            Replaced::Written(s, diff) => Outcome::Updated {
                jobs: s.jobs,
                endpoints: s.endpoints,
                bytes,
                diff,
                millis,
            },
            Replaced::DryRun(s, diff) => Outcome::DryRun {
                jobs: s.jobs,
                diff,
                not_modified: false,
            },
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::NotModified { jobs } => {
                write!(f, "profile unchanged (304); {jobs} jobs stored")
            }
            Outcome::Unchanged { jobs, bytes } => write!(
                f,
                "profile unchanged (same content, {bytes} bytes); {jobs} jobs stored, store not written"
            ),
            Outcome::Updated {
                jobs,
                endpoints,
                bytes,
                diff,
                millis,
            } => write!(
                f,
                "profile updated: {jobs} jobs ({diff}), {endpoints} endpoints, {bytes} bytes in {millis} ms"
            ),
            Outcome::DryRun {
                not_modified: true, ..
            } => write!(f, "dry run: profile unchanged (304); nothing written"),
            Outcome::DryRun { jobs, diff, .. } => write!(
                f,
                "dry run: the profile of {jobs} jobs is valid and would change: {diff}; nothing written"
            ),
        }
    }
}

/// Most job ids the debug log names one by one, per kind of change.
const DIFF_LOG_LIMIT: u64 = 100;

/// Fetches the profile and, if it changed, makes it the store; remembers
/// the ETag it came with in the state file.
pub fn run(
    cfg: &Config,
    flags: Flags,
    store: &mut JobStore,
    state: &mut StateFile,
    client: &fetch::Client,
    trust: Option<&Trust>,
    now: u64,
) -> Result<Outcome> {
    let rebuild = flags.recreate || store.needs_rebuild();
    if store.needs_rebuild() {
        log::warn!(
            "{} has another store schema; rebuilding it from a full download",
            store.path().display()
        );
    }
    let stored = signed_stored(store);
    // With a trusted root, a 304 must name a signed stored profile: a store
    // of an unsigned one is downloaded whole once.
    let etag = if rebuild || (trust.is_some() && stored.is_none()) {
        None
    } else {
        store.etag(state).map(str::to_string)
    };
    let device = cfg.device.id.as_str();
    let started = Instant::now();
    let Some(mut new) = fetch_profile(client, trust, device, etag.as_deref(), stored.as_ref())?
    else {
        let jobs = store.meta().map_or(0, |m| m.jobs);
        return Ok(Outcome::not_modified(jobs, flags.dry_run));
    };
    let manifest = new.manifest.as_ref();
    // Same content under a new signed version still rewrites the store, so
    // that it names the version the next 304 will.
    let resigned = manifest
        .is_some_and(|m| stored.is_none_or(|s| (s.version, s.sha256) != (m.version, m.sha256)));
    let replace = ReplaceOptions {
        force: rebuild || resigned,
        dry_run: flags.dry_run,
        now,
        version: manifest.map(|m| m.version),
        sha256: manifest.map(|m| m.sha256),
    };
    let replaced = ingest(store, &replace, device, &mut new.body, manifest)?;
    let bytes = new.body.bytes_read();
    log::debug!(
        "read {bytes} bytes of profile in {} ms",
        started.elapsed().as_millis()
    );
    if !flags.dry_run {
        // After the store: a kill between the two leaves an ETag that names
        // the old content, which is then not sent (one full download).
        store.keep_etag(state, new.etag.as_deref())?;
    }
    Ok(Outcome::of(replaced, bytes, started.elapsed().as_millis()))
}

/// The signed version and digest the store names, if it holds a signed
/// profile.
fn signed_stored(store: &JobStore) -> Option<trust::Stored> {
    store.meta().and_then(|m| match (m.version, m.sha256) {
        (Some(version), Some(sha256)) => Some(trust::Stored { version, sha256 }),
        _ => None,
    })
}

/// A 200 answer to the profile request, its manifest checked.
struct NewProfile {
    etag: Option<String>,
    body: ProfileBody,
    /// `None` without a trusted root.
    manifest: Option<trust::Manifest>,
}

/// `GET .../profile`, and with a trusted root the signed manifest of the
/// answer: `None` for a 304 it confirms (the store holds the version it
/// names), else the 200 it allows to replace `stored`. A refused manifest
/// refuses the profile.
fn fetch_profile(
    client: &fetch::Client,
    trust: Option<&Trust>,
    device: &str,
    etag: Option<&str>,
    stored: Option<&trust::Stored>,
) -> Result<Option<NewProfile>> {
    let verify = |signed: &fetch::SignedHeaders| -> Result<Option<trust::Manifest>> {
        let Some(t) = trust else {
            return Ok(None);
        };
        let sigs = signed.signatures.iter().map(String::as_str);
        t.verify_manifest(device, signed.manifest.as_deref(), sigs)
            .map(Some)
            .map_err(trust::profile_refused)
    };
    match client.profile(etag)? {
        ProfileResponse::NotModified { signed } => {
            if let Some(m) = verify(&signed)? {
                m.confirms(stored)
                    .map_err(|e| trust::profile_refused(format!("the manifest of a {e}")))?;
                log::debug!("304 confirmed by the signed manifest ({m})");
            }
            Ok(None)
        }
        ProfileResponse::Changed { etag, body, signed } => {
            let manifest = verify(&signed)?;
            if let Some(m) = &manifest {
                m.allows_replacing(stored)
                    .map_err(|e| trust::profile_refused(format!("the signed manifest's {e}")))?;
                log::debug!("signed manifest: {m}");
            }
            Ok(Some(NewProfile {
                etag,
                body,
                manifest,
            }))
        }
    }
}

/// Streams `body` through the profile parser into the store, checked
/// against `manifest` as it streams when there is one. Each change is
/// printed on a dry run and logged otherwise.
fn ingest(
    store: &mut JobStore,
    replace: &ReplaceOptions,
    device: &str,
    body: &mut ProfileBody,
    manifest: Option<&trust::Manifest>,
) -> Result<Replaced> {
    let mut logged = Diff::default();
    let mut stdout = std::io::stdout().lock();
    let mut on_change = |c: Change<'_>| {
        if replace.dry_run {
            print_change(&mut stdout, c);
        } else {
            log_change(&mut logged, c);
        }
    };
    // One reader type whether or not the body is checked: the profile
    // parser is generic, and a second copy of it would cost the appliance
    // binary tens of KiB.
    let mut checked;
    let reader: &mut dyn std::io::Read = match manifest {
        Some(m) => {
            checked = trust::CheckedBody::new(&mut *body, m);
            &mut checked
        }
        None => body,
    };
    let mut replacement = store.begin_replace(replace, &mut on_change)?;
    let parsed = profile::parse(reader, device, &mut replacement);
    replacement.finish(parsed)
}

/// `--dry-run`'s line for a change, on stdout: what a script reads.
fn print_change(out: &mut impl Write, c: Change<'_>) {
    // A closed stdout must not fail the check the dry run is for.
    let _ = match c {
        Change::Added { id, name } => writeln!(out, "add     {id}  {name}"),
        Change::Changed { id, name } => writeln!(out, "change  {id}  {name}"),
        Change::Removed { id } => writeln!(out, "remove  {id}"),
    };
}

/// Names the first `DIFF_LOG_LIMIT` changes of each kind in the debug log;
/// the counts are in the summary line.
/// The line is formatted only when it is logged: a first ingest of 10 000
/// jobs formatting one per job cost 2.4 instructions per profile byte.
fn log_change(logged: &mut Diff, c: Change<'_>) {
    let count = match c {
        Change::Added { .. } => &mut logged.added,
        Change::Changed { .. } => &mut logged.changed,
        Change::Removed { .. } => &mut logged.removed,
    };
    *count += 1;
    if *count <= DIFF_LOG_LIMIT {
        match c {
            Change::Added { id, name } => log::debug!("job {id} added: {name}"),
            Change::Changed { id, name } => log::debug!("job {id} changed: {name}"),
            Change::Removed { id } => log::debug!("job {id} removed"),
        }
    } else if *count == DIFF_LOG_LIMIT + 1 {
        log::debug!("(more changes of this kind are not listed; see the summary line)");
    }
}
