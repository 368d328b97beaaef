//! `--list` and `--list --json`: what the store holds, for a technician or a
//! script, without the network. Jobs are streamed from the store, so listing
//! 100 000 jobs takes no more memory than listing one. Passwords print as
//! `***`. The ETag shown is the state file's, when it belongs to the stored
//! content (the one the next run sends).

use crate::clock;
use crate::error::{Error, Result};
use crate::install_root::InstallRoot;
use crate::profile::Job;
use crate::state::StateFile;
use crate::store::{StoreMeta, StoreReader, etag};
use std::io::Write;
use std::path::Path;

fn out_err(e: std::io::Error) -> Error {
    Error::Store(format!("cannot write the listing: {e}"))
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
    w(out, "endpoints:", &meta.endpoints.to_string())?;
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
    let mut s = String::new();
    s.push_str("{\"store\":");
    json_str(&mut s, &path.display().to_string());
    let opt = |s: &mut String, v: Option<&str>| match v {
        Some(v) => json_str(s, v),
        None => s.push_str("null"),
    };
    s.push_str(",\"device\":");
    opt(&mut s, meta.map(|m| m.device.as_str()));
    s.push_str(",\"etag\":");
    opt(&mut s, etag);
    s.push_str(",\"generated\":");
    opt(
        &mut s,
        meta.map(|m| m.generated.as_str()).filter(|g| !g.is_empty()),
    );
    s.push_str(",\"accepted\":");
    opt(&mut s, meta.map(|m| clock::rfc3339(m.accepted)).as_deref());
    s.push_str(",\"version\":");
    match meta.and_then(|m| m.version) {
        Some(v) => s.push_str(&v.to_string()),
        None => s.push_str("null"),
    }
    s.push_str(",\"sha256\":");
    opt(
        &mut s,
        meta.and_then(|m| m.sha256).map(|d| hex(&d)).as_deref(),
    );
    s.push_str(",\"endpoints\":[");
    if let (Some(r), Some(_)) = (reader, meta) {
        for (i, e) in r.endpoints()?.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push_str("{\"host\":");
            json_str(&mut s, &e.host);
            s.push_str(&format!(",\"port\":{},\"proto\":", e.port));
            json_str(&mut s, &e.proto);
            s.push_str(",\"purpose\":");
            json_str(&mut s, &e.purpose);
            s.push('}');
        }
    }
    s.push_str("],\"jobs\":[");
    out.write_all(s.as_bytes()).map_err(out_err)?;
    if let (Some(r), Some(_)) = (reader, meta) {
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
    let field = |s: &mut String, name: &str, first: bool| {
        if !first {
            s.push(',');
        }
        s.push('"');
        s.push_str(name);
        s.push_str("\":");
    };
    let list = |s: &mut String, items: &mut dyn Iterator<Item = &str>| {
        s.push('[');
        for (i, v) in items.enumerate() {
            if i > 0 {
                s.push(',');
            }
            json_str(s, v);
        }
        s.push(']');
    };
    s.push('{');
    field(s, "id", true);
    json_str(s, &job.id);
    field(s, "name", false);
    json_str(s, &job.name);
    field(s, "type", false);
    json_str(s, job.job_type.as_str());
    field(s, "enabled", false);
    s.push_str(if job.enabled { "true" } else { "false" });
    field(s, "schedule", false);
    json_str(s, &job.schedule);
    field(s, "retries", false);
    s.push_str(&job.retries.to_string());
    field(s, "sources", false);
    list(s, &mut job.children.sources());
    field(s, "excludes", false);
    list(s, &mut job.children.excludes());
    field(s, "target", false);
    match &job.target {
        Some(t) => {
            s.push_str("{\"host\":");
            json_str(s, &t.host);
            s.push_str(&format!(",\"port\":{},\"user\":", t.port));
            match &t.user {
                Some(u) => json_str(s, u),
                None => s.push_str("null"),
            }
            s.push('}');
        }
        None => s.push_str("null"),
    }
    field(s, "credential", false);
    match &job.credential {
        Some(c) => {
            s.push_str("{\"user\":");
            json_str(s, &c.user);
            s.push_str(",\"password\":\"***\"}");
        }
        None => s.push_str("null"),
    }
    for (name, v) in [("pre", &job.pre), ("post", &job.post)] {
        field(s, name, false);
        match v {
            Some(v) => json_str(s, v),
            None => s.push_str("null"),
        }
    }
    field(s, "emails", false);
    s.push('[');
    for (i, (to, when)) in job.children.emails().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str("{\"to\":");
        json_str(s, to);
        s.push_str(",\"when\":");
        json_str(s, when.as_str());
        s.push('}');
    }
    s.push(']');
    field(s, "options", false);
    s.push('[');
    for (i, (name, value)) in job.children.options().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str("{\"name\":");
        json_str(s, name);
        s.push_str(",\"value\":");
        json_str(s, value);
        s.push('}');
    }
    s.push_str("]}");
}

/// Appends `v` as a JSON string literal.
pub fn json_str(s: &mut String, v: &str) {
    s.push('"');
    for c in v.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            '\r' => s.push_str("\\r"),
            '\t' => s.push_str("\\t"),
            c if u32::from(c) < 0x20 => s.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => s.push(c),
        }
    }
    s.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped() {
        let mut s = String::new();
        json_str(&mut s, "a\"b\\c\n\u{1}写");
        assert_eq!(s, r#""a\"b\\c\n\u0001写""#);
    }
}
