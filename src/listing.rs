//! `--list` and `--list --json`: what the store holds, for a technician or a
//! script, without the network. Jobs are streamed from the store, so listing
//! 100 000 jobs takes no more memory than listing one. Passwords print as
//! `***`. The ETag shown is the state file's, when it belongs to the stored
//! content (the one the next run sends).

use crate::clock;
use crate::error::{Error, Result};
use crate::install_root::InstallRoot;
use crate::json::{Object, array, json_str};
use crate::profile::Job;
use crate::state::StateFile;
use crate::store::{StoreMeta, StoreReader, etag};
use crate::trust::hex;
use std::io::Write;
use std::path::Path;

fn out_err(e: std::io::Error) -> Error {
    Error::Store(format!("cannot write the listing: {e}").into())
}

/// Writes the listing of the store under `root` (and the ETag kept in its
/// state file) to `out`. Reads only: a damaged state file shows no ETag and
/// is left for the next run to move aside.
pub fn write(root: &InstallRoot, json: bool, out: &mut impl Write) -> Result<()> {
    let path = &root.store();
    let reader = StoreReader::open(path)?;
    let meta = match &reader {
        Some(r) => r.meta()?,
        None => None,
    };
    let state = StateFile::open(&root.state_file(), false, 0);
    let etag = etag::current(meta.as_ref(), &state);
    if json {
        return write_json(path, reader.as_ref(), meta.as_ref(), etag, out);
    }
    let (Some(reader), Some(meta)) = (reader, meta) else {
        writeln!(out, "store: {}", path.display()).map_err(out_err)?;
        writeln!(out, "no profile has been accepted yet").map_err(out_err)?;
        return Ok(());
    };
    write_head(path, &meta, etag, out)?;
    write_jobs(&reader, out)
}

/// The text listing's head: the store and its profile, one `key: value`
/// line each.
fn write_head(
    path: &Path,
    meta: &StoreMeta,
    etag: Option<&str>,
    out: &mut impl Write,
) -> Result<()> {
    let w = |out: &mut dyn Write, k: &str, v: &str| writeln!(out, "{k:<10} {v}").map_err(out_err);
    w(out, "store:", &path.display().to_string())?;
    w(out, "device:", &meta.device)?;
    w(out, "etag:", etag.unwrap_or("-"))?;
    w(
        out,
        "generated:",
        if meta.generated.is_empty() {
            "-"
        } else {
            &meta.generated
        },
    )?;
    w(out, "accepted:", &clock::rfc3339(meta.accepted))?;
    w(
        out,
        "version:",
        &meta.version.map_or("-".to_string(), |v| v.to_string()),
    )?;
    w(
        out,
        "sha256:",
        &meta.sha256.map_or("-".to_string(), |d| hex(&d)),
    )?;
    w(out, "jobs:", &meta.jobs.to_string())?;
    w(out, "endpoints:", &meta.endpoints.to_string())
}

/// The text listing's table of jobs, one line each, streamed from the store.
fn write_jobs(reader: &StoreReader, out: &mut impl Write) -> Result<()> {
    writeln!(out).map_err(out_err)?;
    writeln!(
        out,
        "{:<16} {:<6} {:<7} {:<20} {:>7}  NAME",
        "ID", "TYPE", "ENABLED", "SCHEDULE", "SOURCES"
    )
    .map_err(out_err)?;
    for job in reader.jobs()? {
        let job = job?;
        writeln!(
            out,
            "{:<16} {:<6} {:<7} {:<20} {:>7}  {}",
            job.id.as_str(),
            job.job_type.as_str(),
            if job.enabled { "yes" } else { "no" },
            if job.schedule.is_empty() {
                "-"
            } else {
                job.schedule.as_str()
            },
            job.children.sources().count(),
            job.name.as_str()
        )
        .map_err(out_err)?;
    }
    Ok(())
}

fn write_json(
    path: &Path,
    reader: Option<&StoreReader>,
    meta: Option<&StoreMeta>,
    etag: Option<&str>,
    out: &mut impl Write,
) -> Result<()> {
    // Jobs are only read from a store that holds a profile.
    let reader = reader.filter(|_| meta.is_some());
    let mut s = String::new();
    let mut o = Object::open(&mut s);
    o.str("store", &path.display().to_string());
    o.opt_str("device", meta.map(|m| m.device.as_str()));
    o.opt_str("etag", etag);
    o.opt_str(
        "generated",
        meta.map(|m| m.generated.as_str()).filter(|g| !g.is_empty()),
    );
    o.opt_str(
        "accepted",
        meta.map(|m| clock::rfc3339(m.accepted)).as_deref(),
    );
    match meta.and_then(|m| m.version) {
        Some(v) => o.raw("version", &v.to_string()),
        None => o.raw("version", "null"),
    }
    o.opt_str(
        "sha256",
        meta.and_then(|m| m.sha256).map(|d| hex(&d)).as_deref(),
    );
    let endpoints = match reader {
        Some(r) => r.endpoints()?,
        None => Vec::new(),
    };
    array(o.key("endpoints"), endpoints.iter(), |s, e| {
        let mut o = Object::open(s);
        o.str("host", &e.host);
        o.raw("port", &e.port.to_string());
        o.str("proto", &e.proto);
        o.str("purpose", &e.purpose);
        o.close();
    });
    o.key("jobs").push('[');
    out.write_all(s.as_bytes()).map_err(out_err)?;
    if let Some(r) = reader {
        for (i, job) in r.jobs()?.enumerate() {
            s.clear();
            if i > 0 {
                s.push(',');
            }
            job_json(&mut s, &job?);
            out.write_all(s.as_bytes()).map_err(out_err)?;
        }
    }
    out.write_all(b"]}\n").map_err(out_err)
}

fn job_json(s: &mut String, job: &Job) {
    let mut o = Object::open(s);
    o.str("id", &job.id);
    o.str("name", &job.name);
    o.str("type", job.job_type.as_str());
    o.raw("enabled", if job.enabled { "true" } else { "false" });
    o.str("schedule", &job.schedule);
    o.raw("retries", &job.retries.to_string());
    array(o.key("sources"), job.children.sources(), json_str);
    array(o.key("excludes"), job.children.excludes(), json_str);
    match &job.target {
        Some(t) => {
            let mut target = Object::open(o.key("target"));
            target.str("host", &t.host);
            target.raw("port", &t.port.to_string());
            target.opt_str("user", t.user.as_deref());
            target.close();
        }
        None => o.raw("target", "null"),
    }
    match &job.credential {
        Some(c) => {
            let mut credential = Object::open(o.key("credential"));
            credential.str("user", &c.user);
            credential.str("password", "***");
            credential.close();
        }
        None => o.raw("credential", "null"),
    }
    o.opt_str("pre", job.pre.as_deref());
    o.opt_str("post", job.post.as_deref());
    array(o.key("emails"), job.children.emails(), |s, (to, when)| {
        let mut o = Object::open(s);
        o.str("to", to);
        o.str("when", when.as_str());
        o.close();
    });
    array(
        o.key("options"),
        job.children.options(),
        |s, (name, value)| {
            let mut o = Object::open(s);
            o.str("name", name);
            o.str("value", value);
            o.close();
        },
    );
    o.close();
}
