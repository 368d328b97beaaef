//! The agent's own state file, `Config/cncopgetprofile.state` (PROTOCOL 3):
//! the bookkeeping that is not part of the profile and so does not belong in
//! the job store, the suite's other programs read: the ETag and the stored
//! content it belongs to, each endpoint's firewall state, the trust state of
//! signed metadata.
//!
//! This module owns the file and its frame; each section's bytes belong to
//! the module that writes them, which encodes and decodes them itself:
//!
//! | section | owner | holds |
//! | --- | --- | --- |
//! | `etag` | `store::etag` | the stored profile's ETag and the id of the store file it came with |
//! | `firewall` | `firewall` | each endpoint's last state |
//! | `trust` | `trust::Kept` | the trusted root, timestamp and release versions, the release, the highest software announced |
//!
//! Adding a section: declare a [`Section`] constant below (a new name, never
//! a reused one), encode its bytes in the owning module with a format byte of
//! its own first, and read them back with [`StateFile::get`] / write them with
//! [`StateFile::put`]. The frame needs no change, and an agent that does not
//! know a section keeps its bytes as they are.
//!
//! Invariants kept here:
//! - The file is only ever replaced whole: a change is written to
//!   `cncopgetprofile.state.new` beside it, synced, renamed over it, and the
//!   folder synced (`files::replace_with_bytes`). A kill or power cut at any
//!   moment leaves the old state or the new one; when [`StateFile::put`]
//!   returns, the new one is durable.
//! - A change costs the state's size in bytes (a few KiB: about 60 bytes an
//!   endpoint, the trusted root's document), never the job store's. Nothing changed: nothing is
//!   written, so an unchanged run writes nothing under `Config/`.
//! - Mode 0600.
//! - A file that cannot be read or does not decode, to the last bit of its
//!   checksum, is logged as an error, moved aside to
//!   `cncopgetprofile.state.corrupt-<UTC time>` and treated as empty: it costs
//!   one full profile download and one firewall re-report. The run is told
//!   ([`StateFile::was_damaged`]), because trust state must never be lost
//!   silently (update checks fail closed).
//!
//! Format 1, integers little-endian:
//!
//! | bytes | field |
//! | --- | --- |
//! | 8 | magic `cncopst\n` |
//! | 2 | format, 1 |
//! | 2 | number of sections, at most 64 |
//! | per section | name length (1 byte, 1-32), name (`a-z`, `0-9`, `_`), body length (4 bytes), body |
//! | 32 | SHA-256 of every byte before it |
//!
//! Sections are in strictly ascending order of name, so one state has one
//! encoding and the decoder accepts nothing else.

use crate::error::{Error, Result};
use crate::files;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest state file read or written. Far above what an appliance
/// needs (a state is typically a few KiB; the trust documents are at most
/// 64 KiB each) and small enough to hold in memory.
pub const MAX_STATE_BYTES: usize = 16 * 1024 * 1024;

const MAGIC: [u8; 8] = *b"cncopst\n";
const FORMAT: u16 = 1;
const MAX_SECTIONS: usize = 64;
const MAX_NAME: usize = 32;
const DIGEST_LEN: usize = 32;
/// Magic, format, section count.
const HEAD_LEN: usize = 12;

/// A section of the state file. Every section is declared here, so names
/// stay unique; its bytes are encoded by the module named in its doc.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Section(&'static str);

impl Section {
    /// The stored profile's ETag and the content it belongs to (`store::etag`).
    pub const ETAG: Section = Section("etag");
    /// Each endpoint's last firewall state (`firewall::encode_states`).
    pub const FIREWALL: Section = Section("firewall");

    /// Every declared section (for the tests that pin the names).
    /// The trust state of signed metadata (`trust::Kept`).
    pub const TRUST: Section = Section("trust");
    pub const ALL: &[Section] = &[Section::ETAG, Section::FIREWALL, Section::TRUST];

    pub fn name(self) -> &'static str {
        self.0
    }
}

/// Sections by name, as the file holds them.
pub type Sections = BTreeMap<String, Vec<u8>>;

/// The state of one run: read at its start, written at each change.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    sections: Sections,
    damaged: bool,
    may_write: bool,
}

impl StateFile {
    /// Reads the state at `path`. No file: an empty state. A file that
    /// cannot be read or decoded is logged as an error and treated as empty;
    /// with `may_write` it is also moved aside and a temporary file an
    /// interrupted run left is removed. Without `may_write` (dry runs,
    /// `--list`) nothing on disk changes, now or later: [`put`] only changes
    /// the state in memory.
    ///
    /// [`put`]: StateFile::put
    pub fn open(path: &Path, may_write: bool, now: u64) -> StateFile {
        if may_write {
            let tmp = temporary(path);
            match files::remove(&tmp) {
                Ok(true) => log::debug!("removed {} left by an interrupted run", tmp.display()),
                Ok(false) => {}
                Err(e) => log::warn!("cannot remove {}: {e}", tmp.display()),
            }
        }
        let (sections, damaged) = match read_file(path) {
            Ok(sections) => (sections, false),
            Err(why) => {
                let fate = if !may_write {
                    "treated as empty".to_string()
                } else {
                    match files::move_aside(path, now) {
                        Ok(aside) => format!("moved it to {}", aside.display()),
                        Err(e) => format!("{e}; treated as empty"),
                    }
                };
                log::error!(
                    "{} {why}; {fate}: the next profile download is a full one \
                     and firewall blockages are reported again",
                    path.display()
                );
                (Sections::new(), true)
            }
        };
        StateFile {
            path: path.to_path_buf(),
            sections,
            damaged,
            may_write,
        }
    }

    /// The file existed but could not be read or decoded this run: every
    /// section is gone, the trust state with the rest. The file is empty from
    /// now on, so the next run cannot tell; a section that must remember the
    /// loss (the trust state fails update checks closed until the root is
    /// read again) writes that into its own bytes this run.
    pub fn was_damaged(&self) -> bool {
        self.damaged
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The bytes of `section`, as its owner last wrote them.
    pub fn get(&self, section: Section) -> Option<&[u8]> {
        self.sections.get(section.0).map(Vec::as_slice)
    }

    /// Sets (`Some`) or removes (`None`) `section` and, if that changes the
    /// state, replaces the file atomically; when this returns `Ok` the new
    /// state is durable. Returns whether the state changed. On `Err` the file
    /// and this state are as they were.
    pub fn put(&mut self, section: Section, bytes: Option<Vec<u8>>) -> Result<bool> {
        if self.sections.get(section.0) == bytes.as_ref() {
            return Ok(false);
        }
        let mut next = self.sections.clone();
        match bytes {
            Some(b) => next.insert(section.0.to_string(), b),
            None => next.remove(section.0),
        };
        if self.may_write {
            let encoded = encode(&next);
            if encoded.len() > MAX_STATE_BYTES || next.len() > MAX_SECTIONS {
                return Err(Error::Store(
                    format!(
                        "{}: the {} section would make the state {} bytes in {} sections, \
                     over {MAX_STATE_BYTES} bytes or {MAX_SECTIONS} sections",
                        self.path.display(),
                        section.0,
                        encoded.len(),
                        next.len()
                    )
                    .into(),
                ));
            }
            files::replace_with_bytes(
                &self.path,
                &temporary(&self.path),
                &encoded,
                files::Access::Private,
            )?;
        }
        self.sections = next;
        Ok(true)
    }
}

/// `cncopgetprofile.state.new`: the next state while it is written.
fn temporary(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".new");
    path.with_file_name(name)
}

/// The sections of the file at `path`; none when there is no file. `Err`
/// says why it is unusable, as the end of "<path> ...".
fn read_file(path: &Path) -> std::result::Result<Sections, String> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Sections::new()),
        Err(e) => return Err(format!("cannot be read ({})", crate::error::io_reason(&e))),
    };
    let mut bytes = Vec::new();
    file.take(MAX_STATE_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot be read ({})", crate::error::io_reason(&e)))?;
    if bytes.len() > MAX_STATE_BYTES {
        return Err(format!("is damaged (larger than {MAX_STATE_BYTES} bytes)"));
    }
    decode(&bytes).map_err(|why| format!("is damaged ({why})"))
}

/// The file's bytes for `sections`.
pub fn encode(sections: &Sections) -> Vec<u8> {
    let body: usize = sections.iter().map(|(k, v)| 5 + k.len() + v.len()).sum();
    let mut out = Vec::with_capacity(HEAD_LEN + body + DIGEST_LEN);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT.to_le_bytes());
    // Names are declared constants and bodies are bounded by `put`; the
    // casts cannot truncate a state this agent writes.
    out.extend_from_slice(&(sections.len() as u16).to_le_bytes());
    for (name, bytes) in sections {
        out.push(name.len() as u8);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(bytes);
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, &out);
    out.extend_from_slice(digest.as_ref());
    out
}

/// The sections of a state file's bytes, or why they are not one `encode`
/// wrote: every byte is checked, so whatever decodes encodes back to exactly
/// the same bytes.
pub fn decode(bytes: &[u8]) -> std::result::Result<Sections, String> {
    let Some((framed, digest)) = bytes.split_last_chunk::<DIGEST_LEN>() else {
        return Err("shorter than a state file".into());
    };
    let (&[m0, m1, m2, m3, m4, m5, m6, m7, f0, f1, n0, n1], mut rest) = framed
        .split_first_chunk::<HEAD_LEN>()
        .ok_or("shorter than a state file")?;
    if [m0, m1, m2, m3, m4, m5, m6, m7] != MAGIC {
        return Err("not a cncopgetprofile state file".into());
    }
    let format = u16::from_le_bytes([f0, f1]);
    if format != FORMAT {
        return Err(format!(
            "state format {format}; this agent reads format {FORMAT}"
        ));
    }
    if ring::digest::digest(&ring::digest::SHA256, framed).as_ref() != digest {
        return Err("checksum mismatch".into());
    }
    let count = usize::from(u16::from_le_bytes([n0, n1]));
    if count > MAX_SECTIONS {
        return Err(format!("{count} sections, more than {MAX_SECTIONS}"));
    }
    let mut sections = Sections::new();
    for _ in 0..count {
        let (&[len], after) = rest.split_first_chunk::<1>().ok_or("cut short")?;
        let len = usize::from(len);
        let name = after.get(..len).ok_or("cut short")?;
        if !valid_name(name) {
            return Err("a section name is not valid".into());
        }
        let (body_len, after) = after[len..].split_first_chunk::<4>().ok_or("cut short")?;
        let body_len = u32::from_le_bytes(*body_len) as usize;
        let body = after.get(..body_len).ok_or("cut short")?;
        rest = &after[body_len..];
        // `valid_name` allows ASCII only.
        let name = String::from_utf8_lossy(name).into_owned();
        if sections
            .last_key_value()
            .is_some_and(|(last, _)| *last >= name)
        {
            return Err(format!("section {name} out of order or repeated"));
        }
        sections.insert(name, body.to_vec());
    }
    if !rest.is_empty() {
        return Err(format!("{} bytes after the last section", rest.len()));
    }
    Ok(sections)
}

fn valid_name(name: &[u8]) -> bool {
    (1..=MAX_NAME).contains(&name.len())
        && name
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::install_root::STATE_FILE;
    use std::os::unix::fs::PermissionsExt;

    fn sections(pairs: &[(&str, &[u8])]) -> Sections {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_vec()))
            .collect()
    }

    /// The bytes of format 1, pinned: a change here breaks every appliance's
    /// state and must come with a new format number.
    #[test]
    fn golden_bytes_of_format_1() {
        let s = sections(&[("etag", b"\x01ab"), ("firewall", b"")]);
        let bytes = encode(&s);
        let mut expected = b"cncopst\n\x01\x00\x02\x00".to_vec();
        expected.extend_from_slice(b"\x04etag\x03\x00\x00\x00\x01ab");
        expected.extend_from_slice(b"\x08firewall\x00\x00\x00\x00");
        let digest = ring::digest::digest(&ring::digest::SHA256, &expected);
        expected.extend_from_slice(digest.as_ref());
        assert_eq!(bytes, expected);
        assert_eq!(decode(&bytes).unwrap(), s);
        // The empty state: 44 bytes.
        assert_eq!(encode(&Sections::new()).len(), 44);
    }

    #[test]
    fn declared_section_names_are_valid_and_unique() {
        let mut names: Vec<&str> = Section::ALL.iter().map(|s| s.name()).collect();
        assert!(names.iter().all(|n| valid_name(n.as_bytes())));
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Section::ALL.len());
    }

    #[test]
    fn the_decoder_refuses_every_damage() {
        let good = encode(&sections(&[("a", b"xyz"), ("b", b"1")]));
        assert!(decode(&good).is_ok());
        // Every single flipped bit and every truncation is refused.
        for i in 0..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[i] ^= 1 << bit;
                assert!(decode(&bad).is_err(), "bit {bit} of byte {i}");
            }
            assert!(decode(&good[..i]).is_err(), "cut at {i}");
        }
        // Validly checksummed, but not what `encode` writes.
        let framed = |body: &[u8]| {
            let mut v = body.to_vec();
            let d = ring::digest::digest(&ring::digest::SHA256, &v);
            v.extend_from_slice(d.as_ref());
            v
        };
        let head = |n: u16| {
            let mut v = b"cncopst\n\x01\x00".to_vec();
            v.extend_from_slice(&n.to_le_bytes());
            v
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                [
                    head(2),
                    b"\x01b\x00\x00\x00\x00\x01a\x00\x00\x00\x00".to_vec(),
                ]
                .concat(),
                "out of order",
            ),
            (
                [
                    head(2),
                    b"\x01a\x00\x00\x00\x00\x01a\x00\x00\x00\x00".to_vec(),
                ]
                .concat(),
                "repeated",
            ),
            (
                [head(1), b"\x01A\x00\x00\x00\x00".to_vec()].concat(),
                "upper case name",
            ),
            (
                [head(1), b"\x00\x00\x00\x00\x00".to_vec()].concat(),
                "empty name",
            ),
            (
                [head(1), b"\x01a\x05\x00\x00\x00ab".to_vec()].concat(),
                "body cut short",
            ),
            ([head(0), b"x".to_vec()].concat(), "trailing byte"),
            (head(65), "too many sections"),
            (b"cncopst\n\x02\x00\x00\x00".to_vec(), "format 2"),
        ];
        for (body, what) in cases {
            assert!(decode(&framed(&body)).is_err(), "{what}");
        }
    }

    #[test]
    fn put_writes_a_private_file_only_when_the_state_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        let mut st = StateFile::open(&path, true, 0);
        assert!(!st.was_damaged());
        assert_eq!(st.get(Section::ETAG), None);
        assert!(!st.put(Section::ETAG, None).unwrap(), "nothing to remove");
        assert!(!path.exists(), "an unchanged state writes nothing");

        assert!(st.put(Section::ETAG, Some(b"one".to_vec())).unwrap());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let written = std::fs::metadata(&path).unwrap().modified().unwrap();
        assert!(!st.put(Section::ETAG, Some(b"one".to_vec())).unwrap());
        assert_eq!(
            std::fs::metadata(&path).unwrap().modified().unwrap(),
            written
        );

        st.put(Section::FIREWALL, Some(b"fw".to_vec())).unwrap();
        let again = StateFile::open(&path, true, 0);
        assert_eq!(again.get(Section::ETAG), Some(&b"one"[..]));
        assert_eq!(again.get(Section::FIREWALL), Some(&b"fw"[..]));
        let mut again = again;
        again.put(Section::ETAG, None).unwrap();
        let last = StateFile::open(&path, true, 0);
        assert_eq!(last.get(Section::ETAG), None);
        assert_eq!(last.get(Section::FIREWALL), Some(&b"fw"[..]));
        assert!(!dir.path().join("cncopgetprofile.state.new").exists());
    }

    #[test]
    fn sections_of_a_newer_agent_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        std::fs::write(&path, encode(&sections(&[("zz_future", b"keep me")]))).unwrap();
        let mut st = StateFile::open(&path, true, 0);
        st.put(Section::ETAG, Some(b"e".to_vec())).unwrap();
        let read = decode(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(
            read.get("zz_future").map(Vec::as_slice),
            Some(&b"keep me"[..])
        );
    }

    #[test]
    fn a_damaged_file_is_moved_aside_and_the_state_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        let mut bytes = encode(&sections(&[("etag", b"x")]));
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        std::fs::write(dir.path().join("cncopgetprofile.state.new"), b"left").unwrap();

        // A dry run leaves everything where it is.
        let dry = StateFile::open(&path, false, 1_795_762_805);
        assert!(dry.was_damaged());
        assert_eq!(dry.get(Section::ETAG), None);
        assert_eq!(std::fs::read(&path).unwrap(), bytes);

        let mut st = StateFile::open(&path, true, 1_795_762_805);
        assert!(st.was_damaged());
        assert_eq!(st.get(Section::ETAG), None);
        assert!(!path.exists());
        assert!(!dir.path().join("cncopgetprofile.state.new").exists());
        let aside = dir
            .path()
            .join("cncopgetprofile.state.corrupt-20261127T070005Z");
        assert_eq!(std::fs::read(aside).unwrap(), bytes);
        st.put(Section::ETAG, Some(b"y".to_vec())).unwrap();
        let fresh = StateFile::open(&path, true, 0);
        assert!(!fresh.was_damaged());
        assert_eq!(fresh.get(Section::ETAG), Some(&b"y"[..]));
    }

    #[test]
    fn a_state_that_cannot_be_read_counts_as_damaged() {
        let dir = tempfile::tempdir().unwrap();
        // A folder where the file should be: opening works, reading fails.
        let path = dir.path().join(STATE_FILE);
        std::fs::create_dir(&path).unwrap();
        let st = StateFile::open(&path, false, 0);
        assert!(st.was_damaged());
    }

    #[test]
    fn a_dry_run_never_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        let mut st = StateFile::open(&path, false, 0);
        assert!(st.put(Section::ETAG, Some(b"x".to_vec())).unwrap());
        assert_eq!(st.get(Section::ETAG), Some(&b"x"[..]));
        assert!(!path.exists());
    }
}
