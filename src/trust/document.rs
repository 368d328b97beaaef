//! Reading a signed metadata document (root, timestamp, release) once its
//! signatures verified: the profile's XML reader checks well-formedness
//! (no DOCTYPE, depth, characters, references) and feeds a `Handler`; this
//! file adds the metadata bound and the field rules the three share.

use crate::clock::{self, UnixTime};
use crate::error::Error;
use crate::profile::xml::{self, Handler, Limits, StartTag};

/// PROTOCOL 8.1: metadata documents are at most 64 KiB.
pub const MAX_METADATA_BYTES: usize = 64 * 1024;

/// Parses `bytes` as the document `name` (for messages, e.g. `timestamp.xml`).
/// The handler is dynamic: one copy of the XML reader serves every trust
/// document (the profile's own, generic, copy stays as fast as it is).
pub fn read(name: &str, bytes: &[u8], handler: &mut dyn Handler) -> Result<(), String> {
    if bytes.len() > MAX_METADATA_BYTES {
        return Err(format!(
            "{name} is larger than {MAX_METADATA_BYTES} bytes, the metadata limit"
        ));
    }
    let limits = Limits {
        chunk: MAX_METADATA_BYTES,
        max_unit: MAX_METADATA_BYTES,
    };
    xml::read(bytes, handler, limits)
        .map(drop)
        .map_err(|e| match e {
            // The reader's messages speak of "the profile"; name this document.
            Error::Profile(msg) => match msg.strip_prefix("profile ") {
                Some(rest) => format!("{name} {rest}"),
                None => format!("{name}: {msg}"),
            },
            other => format!("{name}: {other}"),
        })
}

/// Parses `bytes` as the document `name`, handing each start tag to
/// `start` (the timestamp and release need nothing else).
pub fn read_starts(
    name: &str,
    bytes: &[u8],
    start: impl FnMut(&StartTag<'_>) -> Result<(), String>,
) -> Result<(), String> {
    struct Starts<F>(F);
    impl<F: FnMut(&StartTag<'_>) -> Result<(), String>> Handler for Starts<F> {
        fn start(&mut self, tag: &StartTag<'_>) -> crate::error::Result<()> {
            (self.0)(tag).map_err(refuse)
        }
        fn end(&mut self, _: &str, _: usize) -> crate::error::Result<()> {
            Ok(())
        }
        fn text(&mut self, _: &str, _: usize) -> crate::error::Result<()> {
            Ok(())
        }
    }
    read(name, bytes, &mut Starts(start))
}

/// A handler's refusal, in the reader's error type.
pub fn refuse(msg: String) -> Error {
    Error::Profile(msg.into())
}

/// The value of a required attribute.
pub fn required<'a>(tag: &StartTag<'a>, attr: &str) -> Result<&'a str, String> {
    tag.get(attr)
        .ok_or_else(|| format!("<{}> has no '{attr}' attribute", tag.name))
}

/// A version number: 1 to 20 decimal digits, at least 1.
pub fn version(tag: &StartTag<'_>, attr: &str) -> Result<u64, String> {
    let text = required(tag, attr)?;
    match text.parse::<u64>() {
        Ok(n) if n > 0 && text.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(format!(
            "<{}> {attr} '{}' is not a whole number from 1",
            tag.name,
            crate::error::Shown::bare(text)
        )),
    }
}

/// A size in bytes: decimal digits, no sign.
pub fn size(tag: &StartTag<'_>, attr: &str) -> Result<u64, String> {
    let text = required(tag, attr)?;
    match text.parse::<u64>() {
        Ok(n) if text.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(format!(
            "<{}> {attr} '{}' is not a number of bytes",
            tag.name,
            crate::error::Shown::bare(text)
        )),
    }
}

/// A SHA-256: 64 hex digits (either case).
pub fn sha256(tag: &StartTag<'_>, attr: &str) -> Result<[u8; 32], String> {
    let text = required(tag, attr)?;
    let mut out = [0; 32];
    if super::hex_decode(&text.to_ascii_lowercase(), &mut out) {
        Ok(out)
    } else {
        Err(format!(
            "<{}> {attr} '{}' is not 64 hex digits",
            tag.name,
            crate::error::Shown::bare(text)
        ))
    }
}

/// An `expires` time, `YYYY-MM-DDThh:mm:ssZ`.
pub fn time(tag: &StartTag<'_>, attr: &str) -> Result<UnixTime, String> {
    let text = required(tag, attr)?;
    clock::parse_rfc3339(text).ok_or_else(|| {
        format!(
            "<{}> {attr} '{}' is not a UTC time such as 2026-11-28T07:00:00Z",
            tag.name,
            crate::error::Shown::bare(text)
        )
    })
}

/// Refuses a root element other than `want`.
pub fn root_element(tag: &StartTag<'_>, want: &str, doc: &str) -> Result<(), String> {
    if tag.name == want {
        Ok(())
    } else {
        Err(format!(
            "{doc} has root element <{}>, expected <{want}>",
            crate::error::Shown::bare(tag.name)
        ))
    }
}
