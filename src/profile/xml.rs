//! Well-formed XML over a bounded window, for the profile parser.
//!
//! Owns: reading the body in chunks into one window buffer; cutting the window
//! into complete markup units (a start tag with all its attributes, an end
//! tag, a text run, a comment, a PI, a CDATA section); having xmlparser
//! tokenize each complete unit; and every check xmlparser leaves to its
//! caller: one root, matching end tags, nesting depth, duplicate attributes,
//! references, characters, what may stand before and after the root, the XML
//! declaration and its encoding, no DOCTYPE. Elements and unescaped,
//! line-end-normalized text go to a `Handler`; this file knows nothing of the
//! profile's shape.
//!
//! Why whole units: xmlparser assumes it sees the whole document. Handed a
//! window that ends inside a token it errs (a tag cut short) or, for text,
//! silently returns a shorter token. Each unit's end is found first, by its
//! ASCII delimiter, which never occurs inside a UTF-8 sequence; so xmlparser
//! only ever sees complete units, a UTF-8 sequence or `\r\n` split across
//! reads is never looked at before its unit is complete, and the outcome
//! (including which error, at which byte) does not depend on how the reads
//! split the body. Start tags, most of a profile, are the one shortcut:
//! one is read where it lies, in the window's checked text (by
//! `start_tag::scan` when it has the common shape, else by xmlparser), and
//! the tag ends where its tokens do; only a tag taken whole that passes
//! every check is handed on so. Any other (cut by the end of the read,
//! malformed, refused) is cut and checked as any unit instead, which finds
//! the same end and gives the same verdict.

use super::bytes::{count_lines, find_any, first_suspect, lines_and_suspect};
use super::job::MAX_DEPTH;
use super::start_tag;
use crate::error::{Error, Result, Shown};
use std::cell::Cell;
use std::fmt;
use std::io::{ErrorKind, Read};
use std::ops::Range;
use xmlparser::{ElementEnd, StrSpan, StreamError, TextPos, Token, Tokenizer, XmlCharExt};

/// Bytes asked of the body per read.
pub const CHUNK: usize = 16 * 1024;
/// The largest single markup unit accepted (a tag with all its attributes, a
/// text run, a comment, a PI, a CDATA section). The window holds at most this
/// plus one chunk, whatever the size of the body.
pub const MAX_UNIT: usize = 256 * 1024;
/// Attributes on one element. Bounds the per-tag scratch and the quadratic
/// duplicate check.
pub const MAX_ATTRIBUTES: usize = 256;
/// Bytes of one element name. Bounds the stack of open element names at
/// `MAX_DEPTH * MAX_NAME_LEN` bytes; no profile element comes near it.
pub const MAX_NAME_LEN: usize = 1024;

/// The longest white space between tags handed on without `scan` (see
/// `read`): indentation is far shorter.
const BLANK_RUN: usize = 256;

/// The window's sizes; tests shrink them to drive the refill paths hard.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub chunk: usize,
    pub max_unit: usize,
}

impl Limits {
    pub const DEFAULT: Limits = Limits {
        chunk: CHUNK,
        max_unit: MAX_UNIT,
    };
}

/// A start tag, its attribute values already unescaped and normalized.
pub struct StartTag<'a> {
    pub name: &'a str,
    /// 1 for the root element.
    pub depth: usize,
    src: &'a str,
    attrs: &'a [Attr],
    values: &'a str,
    /// Where `get` starts looking: after the attribute it found last.
    next: Cell<usize>,
}

impl<'a> StartTag<'a> {
    /// The value of attribute `name` (matched as written, prefix included).
    pub fn get(&self, name: &str) -> Option<&'a str> {
        let named = |a: &Attr| is_named(self.src.as_bytes(), &a.name, name.as_bytes());
        // The shape asks mostly in the order attributes are written, so the
        // one after the last found is tried first; names are unique (a
        // repeated one is refused before the tag is handed on), so what is
        // tried first does not change what is found.
        let next = self.next.get();
        let i = match self.attrs.get(next) {
            Some(a) if named(a) => next,
            _ => self.attrs.iter().position(named)?,
        };
        self.next.set(i + 1);
        self.attrs.get(i).map(|a| self.value(a))
    }

    fn value(&self, a: &Attr) -> &'a str {
        sub(
            if a.unescaped { self.values } else { self.src },
            a.value.clone(),
        )
    }

    #[cfg(test)]
    fn attributes(&self) -> impl Iterator<Item = (&'a str, &'a str)> + '_ {
        self.attrs
            .iter()
            .map(|a| (sub(self.src, a.name.clone()), self.value(a)))
    }
}

/// Receives the document's elements and text in document order. Only what is
/// inside the root is reported; the prolog and epilog are checked here.
pub trait Handler {
    fn start(&mut self, tag: &StartTag<'_>) -> Result<()>;
    /// Also called right after `start` for an empty-element tag.
    fn end(&mut self, name: &str, depth: usize) -> Result<()>;
    /// Text and CDATA directly inside the element at `depth`, unescaped. One
    /// element's text may arrive in several calls (around comments, CDATA).
    fn text(&mut self, text: &str, depth: usize) -> Result<()>;
}

/// Reads a whole document from `body`, checking well-formedness and feeding
/// `handler`. Returns the number of body bytes, only once the root element
/// closed and the rest of the body was read to its end and checked.
pub fn read<R: Read, H: Handler + ?Sized>(body: R, handler: &mut H, limits: Limits) -> Result<u64> {
    // Tiny limits would make no unit fit at all; tests use small ones.
    let chunk = limits.chunk.max(1);
    let max_unit = limits.max_unit.max(16);
    let mut input = Input {
        body,
        // Zeroed once (lazily, by the allocator); reads never re-zero it.
        buf: vec![0; max_unit.saturating_add(chunk)],
        pos: 0,
        len: 0,
        base: 0,
        line: 1,
        eof: false,
        chunk,
    };
    let mut doc = Doc {
        handler,
        phase: Phase::Start,
        names: String::new(),
        ends: Vec::with_capacity(MAX_DEPTH),
        attrs: Vec::new(),
        values: String::new(),
        text: String::new(),
    };
    input.skip_bom()?;
    // Where the start tag the last read ended inside starts.
    let mut cut_tag = u64::MAX;
    // The unit the last read ended inside, which opens the window after
    // the next: its length, line feeds, and where it may first hold a
    // character XML forbids. The pass below does not look at it again (a
    // 256 KiB unit read 16 KiB at a time would be looked at sixteen times).
    let mut seen: (usize, u64, Option<usize>) = (0, 0, None);
    loop {
        let avail = input.pending();
        if avail.is_empty() {
            if input.eof {
                return doc.finish(input.total());
            }
            input.fill()?;
            continue;
        }
        // The window is checked as UTF-8 once per read, not unit by unit
        // (a call per unit cost 4 instructions a profile byte): units end
        // at ASCII delimiters, so each one inside `valid` is a slice of it.
        // A unit that runs past `valid` (invalid bytes, or a sequence cut
        // by the end of the body) is checked alone, which reports the error
        // where it is, in document order.
        // (`utf8_chunks` would check it once even then, but byte by byte:
        // slower than checking the valid part twice.)
        let valid = match std::str::from_utf8(avail) {
            Ok(valid) => valid,
            Err(e) => std::str::from_utf8(avail.get(..e.valid_up_to()).unwrap_or_default())
                .unwrap_or_default(),
        };
        // Likewise the characters XML forbids are looked for, and lines
        // counted, once per read (unit by unit, 7 instructions a profile
        // byte): units that end before the first suspect byte need no check
        // of their own, and a unit's line is counted only for a message.
        let (seen_len, seen_lines, seen_suspect) = seen;
        let (new_lines, new_suspect) = lines_and_suspect(avail.get(seen_len..).unwrap_or_default());
        let lines = seen_lines + new_lines;
        let suspect = seen_suspect.or(new_suspect.map(|s| seen_len + s));
        let clean = suspect.unwrap_or(avail.len());
        let mut done = 0;
        let mut partial = false;
        while let Some(rest) = avail.get(done..).filter(|r| !r.is_empty()) {
            let at = input.at(done);
            if rest.first() == Some(&b'<')
                && !matches!(rest.get(1), None | Some(b'/' | b'?' | b'!'))
                && at.offset != cut_tag
                && let Some(text) = valid.get(done..)
                && let Some(len) =
                    doc.start_tag_in(text, max_unit.min(clean.saturating_sub(done)), at)?
            {
                done += len;
                continue;
            }
            // The white space between tags, the commonest text, passes every
            // check any text gets: it is handed on without them. Looked for
            // bytewise, so only in a run's first bytes: a longer one (rare)
            // is left to `scan`, which is not slowed down by it.
            if let Some(len) = rest
                .get(..BLANK_RUN)
                .unwrap_or(rest)
                .iter()
                .position(|&b| !matches!(b, b' ' | b'\n' | b'\t'))
                .filter(|&len| len > 0 && len < max_unit && rest.get(len) == Some(&b'<'))
                && let Some(text) = valid.get(done..done + len)
            {
                doc.blank(text)?;
                done += len;
                continue;
            }
            let view = rest.get(..max_unit).unwrap_or(rest);
            let whole_rest = input.eof && rest.len() <= max_unit;
            match scan(view, whole_rest) {
                Scan::Unit(kind, len) => {
                    let raw = view.get(..len).unwrap_or(view);
                    let text = valid.get(done..done + raw.len());
                    let checked = done + raw.len() <= clean;
                    doc.unit(kind, raw, text, checked, at)?;
                    done += raw.len();
                }
                Scan::Partial(kind) => {
                    if rest.len() >= max_unit {
                        return Err(at.wf(format!(
                            "{} {kind} is larger than {max_unit} bytes, the largest markup accepted",
                            kind.article()
                        )));
                    }
                    if input.eof {
                        return Err(Error::Profile(format!(
                            "profile is cut short at byte {}: it ends inside {} {kind} that starts at byte {} (line {})",
                            input.total(),
                            kind.article(),
                            at.offset,
                            at.line()
                        ).into()));
                    }
                    // A tag the read ends inside is not tokenized again
                    // after each read: a 256 KiB tag read 16 KiB at a time
                    // would cost sixteen passes of xmlparser (270
                    // instructions a byte instead of 56).
                    if kind == Kind::StartTag {
                        cut_tag = at.offset;
                    }
                    partial = true;
                    break;
                }
            }
        }
        // Lines are counted on the shorter side of `done`.
        let (pending, pending_lines) = match avail.split_at_checked(done) {
            Some((consumed, pending)) if consumed.len() < pending.len() => {
                (pending, lines - count_lines(consumed))
            }
            Some((_, pending)) => (pending, count_lines(pending)),
            None => (&[][..], 0),
        };
        seen = (
            pending.len(),
            pending_lines,
            match suspect {
                _ if pending.is_empty() => None,
                // A suspect before the pending unit says nothing of it: it
                // is taken as suspect from its start (checked alone).
                Some(s) => Some(s.saturating_sub(done)),
                None => None,
            },
        );
        input.consume(done, lines - pending_lines);
        if partial {
            input.fill()?;
        }
    }
}

/// The body and the window over it.
struct Input<R> {
    body: R,
    /// The window, of a fixed size: `buf[pos..len]` is read but not consumed.
    buf: Vec<u8>,
    pos: usize,
    len: usize,
    /// Body offset of `buf[0]`.
    base: u64,
    /// Line of `buf[pos]`, counting `\n`.
    line: u64,
    eof: bool,
    chunk: usize,
}

impl<R: Read> Input<R> {
    fn pending(&self) -> &[u8] {
        self.buf.get(self.pos..self.len).unwrap_or_default()
    }

    /// Moves the unconsumed bytes to the front and reads one more chunk
    /// (less only where the body ends). Called only while less than a whole unit is pending, so there
    /// is always room for the chunk.
    fn fill(&mut self) -> Result<()> {
        if self.pos > 0 {
            self.buf.copy_within(self.pos..self.len, 0);
            self.len -= self.pos;
            self.base += self.pos as u64;
            self.pos = 0;
        }
        let end = self.len.saturating_add(self.chunk).min(self.buf.len());
        let Some(space) = self.buf.get_mut(self.len..end).filter(|s| !s.is_empty()) else {
            // Unreachable by the invariant above; reading into no room would
            // look like the end of the body, so refuse instead.
            return Err(Error::Profile("profile reader window is full".into()));
        };
        // Reads until the chunk is full or the body ends. The unit that is
        // pending is scanned again from its start after every fill, so a body
        // served in tiny reads (one-byte HTTP chunks or TLS records) would
        // otherwise cost time quadratic in the unit's size: seconds of CPU
        // for one 256 KiB tag.
        let mut filled = 0;
        while filled < space.len() {
            let rest = space.get_mut(filled..).unwrap_or_default();
            match self.body.read(rest) {
                Ok(0) => {
                    self.eof = true;
                    break;
                }
                Ok(n) => filled += n.min(rest.len()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::from_body_read(e)),
            }
        }
        self.len += filled;
        Ok(())
    }

    /// A UTF-8 byte order mark may open the body; it is not part of the XML.
    fn skip_bom(&mut self) -> Result<()> {
        const BOM: &[u8] = b"\xEF\xBB\xBF";
        while self.len < BOM.len() && !self.eof && BOM.starts_with(self.pending()) {
            self.fill()?;
        }
        if self.pending().starts_with(BOM) {
            self.pos = BOM.len();
        }
        Ok(())
    }

    /// Consumes `len` bytes, which hold `lines` line ends.
    fn consume(&mut self, len: usize, lines: u64) {
        self.pos = self.pos.saturating_add(len).min(self.len);
        self.line += lines;
    }

    /// The position `done` bytes into the unconsumed bytes.
    fn at(&self, done: usize) -> At<'_> {
        At {
            offset: self.base + (self.pos + done) as u64,
            line: self.line,
            before: self.pending().get(..done).unwrap_or_default(),
        }
    }

    fn total(&self) -> u64 {
        self.base + self.len as u64
    }
}

/// A position in the body, for messages. Bytes count from 0, lines from 1.
/// Its line is counted only when a message needs it: most units never do.
#[derive(Clone, Copy, Debug)]
struct At<'w> {
    offset: u64,
    /// The line `before` starts on.
    line: u64,
    /// The window's bytes from where `line` was counted up to here.
    before: &'w [u8],
}

impl<'w> At<'w> {
    fn line(&self) -> u64 {
        self.line + count_lines(self.before)
    }

    /// The position `idx` bytes into the unit `raw` that starts here.
    fn within(self, raw: &[u8], idx: usize) -> At<'w> {
        let idx = idx.min(raw.len());
        At {
            offset: self.offset + idx as u64,
            line: self.line() + count_lines(raw.get(..idx).unwrap_or_default()),
            before: &[],
        }
    }

    fn wf(self, msg: impl fmt::Display) -> Error {
        Error::Profile(
            format!(
                "profile is not well-formed XML at byte {} (line {}): {msg}",
                self.offset,
                self.line()
            )
            .into(),
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Text,
    StartTag,
    EndTag,
    Comment,
    Pi,
    Cdata,
    Doctype,
    /// `<!` that starts neither a comment, a CDATA section nor a DOCTYPE.
    Markup,
}

impl Kind {
    fn article(self) -> &'static str {
        match self {
            Kind::EndTag => "an",
            _ => "a",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Text => "text run",
            Kind::StartTag => "tag",
            Kind::EndTag => "end tag",
            Kind::Comment => "comment",
            Kind::Pi => "processing instruction",
            Kind::Cdata => "CDATA section",
            Kind::Doctype | Kind::Markup => "markup declaration",
        })
    }
}

enum Scan {
    /// A complete unit of this many bytes opens the view.
    Unit(Kind, usize),
    /// The view holds only the beginning of a unit.
    Partial(Kind),
}

/// Finds the unit that opens `view`. `whole_rest`: nothing follows the view,
/// so text running to its end is complete.
fn scan(view: &[u8], whole_rest: bool) -> Scan {
    const OPENERS: [(&[u8], Kind); 3] = [
        (b"<!--", Kind::Comment),
        (b"<![CDATA[", Kind::Cdata),
        (b"<!DOCTYPE", Kind::Doctype),
    ];
    if view.first() != Some(&b'<') {
        return match find_any!(view, b'<') {
            Some(i) => Scan::Unit(Kind::Text, i),
            None if whole_rest => Scan::Unit(Kind::Text, view.len()),
            None => Scan::Partial(Kind::Text),
        };
    }
    match view.get(1) {
        None => Scan::Partial(Kind::StartTag),
        Some(b'/') => tag_end(view, Kind::EndTag),
        Some(b'?') => delimited(view, 2, b"?>", Kind::Pi),
        // `<!` alone could still become any of them.
        Some(b'!') if view.len() == 2 => Scan::Partial(Kind::Markup),
        Some(b'!') => {
            for (opener, kind) in OPENERS {
                if view.starts_with(opener) {
                    return match kind {
                        Kind::Comment => delimited(view, opener.len(), b"-->", kind),
                        Kind::Cdata => delimited(view, opener.len(), b"]]>", kind),
                        _ => Scan::Unit(kind, opener.len()),
                    };
                }
                if opener.starts_with(view) {
                    return Scan::Partial(kind);
                }
            }
            Scan::Unit(Kind::Markup, 2)
        }
        Some(_) => tag_end(view, Kind::StartTag),
    }
}

/// The unit ends after the first `end` at or after `from`.
fn delimited(view: &[u8], from: usize, end: &[u8], kind: Kind) -> Scan {
    let hay = view.get(from..).unwrap_or_default();
    match hay.windows(end.len()).position(|w| w == end) {
        Some(i) => Scan::Unit(kind, from + i + end.len()),
        None => Scan::Partial(kind),
    }
}

/// A tag ends at the first `>` outside a quoted value. A `<` anywhere in it
/// (even quoted: XML forbids `<` in attribute values) means the tag is
/// malformed; the unit stops there so the error is reported where it is,
/// not after reading on to some later `>`.
fn tag_end(view: &[u8], kind: Kind) -> Scan {
    let quotes = kind == Kind::StartTag;
    let mut from = 1;
    loop {
        let rest = view.get(from..).unwrap_or_default();
        let found = if quotes {
            find_any!(rest, b'<', b'>', b'"', b'\'')
        } else {
            find_any!(rest, b'<', b'>')
        };
        let Some(i) = found.map(|i| from + i) else {
            return Scan::Partial(kind);
        };
        let quote = match view.get(i) {
            Some(b'>') => return Scan::Unit(kind, i + 1),
            Some(&q @ (b'"' | b'\'')) => q,
            _ => return Scan::Unit(kind, i),
        };
        let value = view.get(i + 1..).unwrap_or_default();
        match find_any!(value, quote, b'<') {
            None => return Scan::Partial(kind),
            Some(j) if value.get(j) == Some(&b'<') => return Scan::Unit(kind, i + 1 + j),
            Some(j) => from = i + 2 + j,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Nothing yet (but a BOM): the XML declaration may come.
    Start,
    /// Before the root element.
    Prolog,
    /// Inside the root element.
    Root,
    /// After the root element closed.
    Epilog,
}

#[derive(Clone, Debug)]
struct Attr {
    /// In the unit's text.
    name: Range<usize>,
    /// In `Doc::values` if `unescaped`, else in the unit's text (a value
    /// with no reference and no white space to normalize is not copied).
    value: Range<usize>,
    unescaped: bool,
}

/// The document-level state: everything but the window.
struct Doc<'h, H: ?Sized> {
    handler: &'h mut H,
    phase: Phase,
    /// The open elements' names, one after the other; `ends` marks where each
    /// ends. Bounded by `MAX_DEPTH` and `MAX_NAME_LEN`.
    names: String,
    ends: Vec<usize>,
    attrs: Vec<Attr>,
    /// Scratch for one start tag's unescaped attribute values.
    values: String,
    /// Scratch for one unit's unescaped text.
    text: String,
}

impl<H: Handler + ?Sized> Doc<'_, H> {
    /// Checks and dispatches one complete unit.
    /// `text` is `raw` as a string when the caller already checked it;
    /// `checked`: the caller knows `raw` holds no character XML forbids.
    fn unit(
        &mut self,
        kind: Kind,
        raw: &[u8],
        text: Option<&str>,
        checked: bool,
        at: At<'_>,
    ) -> Result<()> {
        let text = match text {
            Some(text) => text,
            None => std::str::from_utf8(raw).map_err(|e| {
                at.within(raw, e.valid_up_to())
                    .wf("invalid UTF-8 (a profile must be UTF-8)")
            })?,
        };
        if !checked {
            check_chars(raw, kind, at)?;
        }
        let first = self.phase == Phase::Start;
        if first {
            self.phase = Phase::Prolog;
        }
        match kind {
            Kind::Text => self.text_unit(text, at)?,
            Kind::StartTag => self.start_tag(text, at)?,
            Kind::EndTag => self.end_tag(text, at)?,
            Kind::Comment => match single(text, at)? {
                Token::Comment { .. } => {}
                _ => return Err(at.wf("malformed comment")),
            },
            Kind::Pi => self.pi(text, at, first)?,
            Kind::Cdata => self.cdata(text, at)?,
            Kind::Doctype => {
                return Err(
                    at.wf("DOCTYPEs are not allowed in a profile (no DTD, no entity declarations)")
                );
            }
            Kind::Markup => {
                return Err(
                    at.wf("unexpected \"<!\": only comments and CDATA sections start with \"<!\"")
                );
            }
        }
        Ok(())
    }

    fn text_unit(&mut self, text: &str, at: At<'_>) -> Result<()> {
        if self.phase != Phase::Root {
            return match text.bytes().position(|b| !is_space(b)) {
                None => Ok(()),
                Some(i) => Err(at
                    .within(text.as_bytes(), i)
                    .wf(if self.phase == Phase::Epilog {
                        "text after the root element"
                    } else {
                        "text before the root element"
                    })),
            };
        }
        // xmlparser's own check of the run (`]]>` is not allowed in text);
        // the white space between elements, most runs, cannot hold it.
        if !text.bytes().all(is_space) {
            match single(text, at)? {
                Token::Text { .. } => {}
                _ => return Err(at.wf("malformed text")),
            }
        }
        if special(text, false).is_none() {
            return self.handler.text(text, self.ends.len());
        }
        self.text.clear();
        unescape(text, false, &mut self.text)
            .map_err(|e| at.within(text.as_bytes(), e.at).wf(e.describe(text, false)))?;
        self.handler.text(&self.text, self.ends.len())
    }

    /// A text unit of spaces, tabs and line feeds only, which `text_unit`
    /// would accept as it is.
    fn blank(&mut self, text: &str) -> Result<()> {
        match self.phase {
            Phase::Root => self.handler.text(text, self.ends.len()),
            Phase::Start => {
                self.phase = Phase::Prolog;
                Ok(())
            }
            Phase::Prolog | Phase::Epilog => Ok(()),
        }
    }

    fn cdata(&mut self, text: &str, at: At<'_>) -> Result<()> {
        let inner = match single(text, at)? {
            Token::Cdata { text, .. } => text.as_str(),
            _ => return Err(at.wf("malformed CDATA section")),
        };
        if self.phase != Phase::Root {
            return Err(at.wf("a CDATA section outside the root element"));
        }
        self.text.clear();
        normalize_line_ends(inner, &mut self.text);
        self.handler.text(&self.text, self.ends.len())
    }

    fn pi(&mut self, text: &str, at: At<'_>, first: bool) -> Result<()> {
        let target_len = text
            .bytes()
            .skip(2)
            .position(|b| is_space(b) || b == b'?')
            .unwrap_or(text.len());
        let target = sub(text, 2..2 + target_len);
        if target == "xml" {
            if first {
                return declaration(text, at);
            }
            return Err(at.wf(
                "an XML declaration (<?xml ...?>) is allowed only at the very start of the profile",
            ));
        }
        if target.eq_ignore_ascii_case("xml") {
            return Err(at.wf(format!(
                "the processing instruction name \"{}\" is reserved",
                Shown::bare(target)
            )));
        }
        let target = match single(text, at)? {
            Token::ProcessingInstruction { target, .. } => target,
            _ => return Err(at.wf("malformed processing instruction")),
        };
        // XML 1.0 [16]: the target ends at white space or at "?>".
        // xmlparser ends it at the first character that cannot be in a name
        // and takes what follows as the content, so `<?a!b?>` would pass.
        let after = text.as_bytes().get(target.end()..).unwrap_or_default();
        if after.first().copied().is_some_and(is_space) || after.starts_with(b"?>") {
            return Ok(());
        }
        Err(at.within(text.as_bytes(), target.end()).wf(
            "malformed processing instruction: its name must be followed by white space or \"?>\"",
        ))
    }

    fn start_tag(&mut self, text: &str, at: At<'_>) -> Result<()> {
        let mut tokens = Tokenizer::from_fragment(text, 0..text.len());
        let name = self.element_name(&mut tokens, text, at)?;
        let empty = self.attributes(&mut tokens, text, at, name)?;
        self.unescape_values(text, at, name)?;
        self.open(name, text, empty)
    }

    /// The start tag that opens `rest`, read where it lies (`start_tag`:
    /// scanned, or tokenized by xmlparser): that finds its end, so it is
    /// looked at once, not first by `tag_end` (most of a profile is start
    /// tags; the second scan cost 7 instructions a profile byte).
    /// `Some(length)` once it is handed on. `None`, nothing done, unless
    /// it is a complete, well-formed start tag of at most `max` bytes that
    /// `start_tag` would accept as it is: it is then cut and checked as
    /// any unit, which finds what is wrong and says so.
    ///
    /// The two cut a well-formed tag alike: its first `>` outside a quoted
    /// value, with no `<` before it (xmlparser refuses `<` in a value).
    fn start_tag_in(&mut self, rest: &str, max: usize, at: At<'_>) -> Result<Option<usize>> {
        self.attrs.clear();
        let attr = |name, value| Attr {
            name,
            value,
            unescaped: false,
        };
        let scanned = start_tag::scan(rest.as_bytes(), MAX_ATTRIBUTES, |n, v| {
            self.attrs.push(attr(n, v));
        });
        let tag = match scanned {
            Some(tag) => tag,
            None => {
                self.attrs.clear();
                let tokenized = start_tag::tokenize(rest, MAX_ATTRIBUTES, |n, v| {
                    self.attrs.push(attr(n, v));
                });
                let Some(tag) = tokenized else {
                    return Ok(None);
                };
                tag
            }
        };
        let name = sub(rest, tag.name);
        if self.phase == Phase::Epilog
            || name.len() > MAX_NAME_LEN
            || self.ends.len() >= MAX_DEPTH
            || self.repeats_attribute(rest)
        {
            return Ok(None);
        }
        let text = sub(rest, 0..tag.len);
        if tag.len > max || self.unescape_values(text, at, name).is_err() {
            return Ok(None);
        }
        self.open(name, text, tag.empty)?;
        Ok(Some(tag.len))
    }

    /// Whether two of `attrs` have the same name.
    fn repeats_attribute(&self, text: &str) -> bool {
        self.attrs
            .iter()
            .enumerate()
            .any(|(i, a)| has_attribute(self.attrs.get(..i).unwrap_or_default(), text, &a.name))
    }

    /// Opens element `name`, whose start tag `text` is checked and whose
    /// attributes are in `attrs` and `values`, and hands it on.
    fn open(&mut self, name: &str, text: &str, empty: bool) -> Result<()> {
        self.phase = Phase::Root;
        let depth = self.ends.len() + 1;
        self.handler.start(&StartTag {
            name,
            depth,
            src: text,
            attrs: &self.attrs,
            values: &self.values,
            next: Cell::new(0),
        })?;
        if empty {
            // Closed at once, as `close` would: its name never needs the
            // stack (most of a profile's elements are empty).
            if self.ends.is_empty() {
                self.phase = Phase::Epilog;
            }
            return self.handler.end(name, depth);
        }
        self.names.push_str(name);
        self.ends.push(self.names.len());
        Ok(())
    }

    /// The start tag's element name, once it is known to fit: a closed tag,
    /// not a second root, within the name and depth limits.
    fn element_name<'t>(
        &self,
        tokens: &mut Tokenizer<'t>,
        text: &'t str,
        at: At<'_>,
    ) -> Result<&'t str> {
        if !text.ends_with('>') {
            return Err(at.wf(
                "a start tag is not closed by \">\" before the next \"<\" (write \"<\" in a value as &lt;)",
            ));
        }
        let name = match tokens.next() {
            Some(Ok(Token::ElementStart { prefix, local, .. })) => qname(prefix, local),
            Some(Err(e)) => return Err(xml_error(text, at, &e)),
            _ => return Err(at.wf("malformed start tag")),
        };
        let name = sub(text, name);
        if self.phase == Phase::Epilog {
            return Err(at.wf(format!(
                "a second root element <{}> after the root element closed",
                Shown::bare(name)
            )));
        }
        if name.len() > MAX_NAME_LEN {
            return Err(at.wf(format!(
                "an element name is {} bytes, the limit is {MAX_NAME_LEN}",
                name.len()
            )));
        }
        if self.ends.len() >= MAX_DEPTH {
            return Err(at.wf(format!(
                "<{}> is nested {} elements deep, the limit is {MAX_DEPTH}",
                Shown::bare(name),
                self.ends.len() + 1
            )));
        }
        Ok(name)
    }

    /// Reads the start tag's attributes into `attrs` (at most
    /// `MAX_ATTRIBUTES`, no name twice) up to its end; returns whether the
    /// element is empty (`/>`).
    fn attributes(
        &mut self,
        tokens: &mut Tokenizer<'_>,
        text: &str,
        at: At<'_>,
        name: &str,
    ) -> Result<bool> {
        self.attrs.clear();
        let mut empty = None;
        for token in tokens.by_ref() {
            match token {
                Ok(Token::Attribute {
                    prefix,
                    local,
                    value,
                    span,
                }) => {
                    let attr = Attr {
                        name: qname(prefix, local),
                        value: value.range(),
                        unescaped: false,
                    };
                    self.push_attribute(attr, text, at, span.start(), name)?;
                }
                Ok(Token::ElementEnd {
                    end: ElementEnd::Open,
                    ..
                }) => {
                    empty = Some(false);
                    break;
                }
                Ok(Token::ElementEnd {
                    end: ElementEnd::Empty,
                    ..
                }) => {
                    empty = Some(true);
                    break;
                }
                Ok(_) => return Err(at.wf("malformed start tag")),
                Err(e) => return Err(xml_error(text, at, &e)),
            }
        }
        match (empty, tokens.next()) {
            (Some(empty), None) => Ok(empty),
            _ => Err(at.wf(format!("malformed start tag <{}>", Shown::bare(name)))),
        }
    }

    /// Adds one attribute of `<name>`, which starts `start` bytes into the
    /// tag: at most `MAX_ATTRIBUTES`, none twice.
    fn push_attribute(
        &mut self,
        attr: Attr,
        text: &str,
        at: At<'_>,
        start: usize,
        name: &str,
    ) -> Result<()> {
        let attr_name = sub(text, attr.name.clone());
        let here = || at.within(text.as_bytes(), start);
        if self.attrs.len() >= MAX_ATTRIBUTES {
            return Err(here().wf(format!(
                "<{}> has more than {MAX_ATTRIBUTES} attributes",
                Shown::bare(name)
            )));
        }
        if has_attribute(&self.attrs, text, &attr.name) {
            return Err(here().wf(format!(
                "attribute {} appears twice on <{}>",
                Shown::bare(attr_name),
                Shown::bare(name)
            )));
        }
        self.attrs.push(attr);
        Ok(())
    }

    /// Unescapes into `values` the attribute values that hold a reference
    /// or white space to normalize; the others stay where they are in `text`.
    fn unescape_values(&mut self, text: &str, at: At<'_>, name: &str) -> Result<()> {
        self.values.clear();
        for attr in &mut self.attrs {
            let start = self.values.len();
            let raw = sub(text, attr.value.clone());
            if special(raw, true).is_none() {
                continue;
            }
            unescape(raw, true, &mut self.values).map_err(|e| {
                // Only the attribute's name: its value may be a secret.
                at.within(text.as_bytes(), attr.value.start + e.at)
                    .wf(format!(
                        "the value of attribute {} of <{}> has {}",
                        Shown::bare(sub(text, attr.name.clone())),
                        Shown::bare(name),
                        e.describe(raw, true)
                    ))
            })?;
            attr.value = start..self.values.len();
            attr.unescaped = true;
        }
        Ok(())
    }

    fn end_tag(&mut self, text: &str, at: At<'_>) -> Result<()> {
        let mut tokens = Tokenizer::from_fragment(text, 0..text.len());
        let name = match tokens.next() {
            Some(Ok(Token::ElementEnd {
                end: ElementEnd::Close(prefix, local),
                ..
            })) => sub(text, qname(prefix, local)),
            Some(Err(e)) => return Err(xml_error(text, at, &e)),
            _ => return Err(at.wf("malformed end tag")),
        };
        if tokens.next().is_some() {
            return Err(at.wf(format!("malformed end tag </{}>", Shown::bare(name))));
        }
        let Some(&end) = self.ends.last() else {
            return Err(at.wf(format!(
                "end tag </{}> without a start tag",
                Shown::bare(name)
            )));
        };
        let start = self.open_start();
        let open = sub(&self.names, start..end);
        if open != name {
            return Err(at.wf(format!(
                "end tag </{}> does not match <{}>",
                Shown::bare(name),
                Shown::bare(open)
            )));
        }
        self.close()
    }

    /// Where the innermost open element's name starts in `names`.
    fn open_start(&self) -> usize {
        self.ends
            .len()
            .checked_sub(2)
            .and_then(|i| self.ends.get(i))
            .copied()
            .unwrap_or(0)
    }

    /// Closes the innermost open element.
    fn close(&mut self) -> Result<()> {
        let depth = self.ends.len();
        let start = self.open_start();
        let result = self
            .handler
            .end(sub(&self.names, start..self.names.len()), depth);
        self.ends.pop();
        self.names.truncate(start);
        if self.ends.is_empty() {
            self.phase = Phase::Epilog;
        }
        result
    }

    fn finish(&self, total: u64) -> Result<u64> {
        match self.phase {
            Phase::Epilog => Ok(total),
            Phase::Root => {
                let start = self.open_start();
                Err(Error::Profile(
                    format!(
                        "profile is cut short at byte {total}: <{}> (depth {}) is not closed",
                        Shown::bare(sub(&self.names, start..self.names.len())),
                        self.ends.len()
                    )
                    .into(),
                ))
            }
            Phase::Start | Phase::Prolog if total == 0 => {
                Err(Error::Profile("profile is empty".into()))
            }
            Phase::Start | Phase::Prolog => Err(Error::Profile(
                format!("profile has no root element (it ends at byte {total})").into(),
            )),
        }
    }
}

/// Tokenizes a unit that is one token.
fn single<'t>(text: &'t str, at: At<'_>) -> Result<Token<'t>> {
    let mut tokens = Tokenizer::from_fragment(text, 0..text.len());
    match (tokens.next(), tokens.next()) {
        (Some(Ok(token)), None) => Ok(token),
        (Some(Err(e)), _) => Err(xml_error(text, at, &e)),
        _ => Err(at.wf("malformed markup")),
    }
}

/// Refuses the characters XML 1.0 does not allow. The unit is valid UTF-8,
/// so only C0 controls and U+FFFE/U+FFFF need looking for (no surrogates).
/// Called only for a unit at or after a suspect byte of its read.
fn check_chars(raw: &[u8], kind: Kind, at: At<'_>) -> Result<()> {
    let mut from = 0;
    while let Some(i) = first_suspect(raw.get(from..).unwrap_or_default()).map(|i| from + i) {
        from = i + 1;
        let b = raw.get(i).copied().unwrap_or_default();
        let bad = if b < 0x20 {
            Some(u32::from(b))
        } else if b == 0xEF && raw.get(i + 1) == Some(&0xBF) {
            match raw.get(i + 2) {
                Some(0xBE) => Some(0xFFFE),
                Some(0xBF) => Some(0xFFFF),
                _ => None,
            }
        } else {
            None
        };
        if let Some(c) = bad {
            let here = at.within(raw, i);
            // A tag may hold a secret; do not print even one of its characters.
            return Err(if kind == Kind::StartTag {
                here.wf(
                    "a character that XML does not allow (a control character, U+FFFE or U+FFFF)",
                )
            } else {
                here.wf(format!("character U+{c:04X} is not allowed in XML"))
            });
        }
    }
    Ok(())
}

/// The pseudo-attributes of an XML declaration, in the order they must come.
const DECLARED: [&str; 3] = ["version", "encoding", "standalone"];

/// Checks `<?xml ...?>` (XML 1.0 section 2.8) and that it declares UTF-8.
fn declaration(text: &str, at: At<'_>) -> Result<()> {
    let d = text.as_bytes();
    let mut i = "<?xml".len();
    let mut next = 0;
    loop {
        let before = i;
        skip_spaces(d, &mut i);
        if d.get(i..) == Some(b"?>") {
            break;
        }
        if i == before {
            return Err(malformed_declaration(at, d, i, "expected whitespace"));
        }
        let (slot, value_at, value) = declared(text, at, &mut i, next)?;
        next = slot + 1;
        declared_value(slot, value, text, at, value_at)?;
    }
    if next == 0 {
        return Err(malformed_declaration(at, d, i, "the version is missing"));
    }
    Ok(())
}

fn malformed_declaration(at: At<'_>, d: &[u8], i: usize, what: &str) -> Error {
    at.within(d, i)
        .wf(format!("malformed XML declaration: {what}"))
}

fn skip_spaces(d: &[u8], i: &mut usize) {
    while d.get(*i).copied().is_some_and(is_space) {
        *i += 1;
    }
}

/// Reads one `name = "value"` of the declaration at `i`, whose name must be
/// the `next` one of [`DECLARED`] or a later optional one, and moves `i` past
/// it. Returns the name's place in `DECLARED`, where the value starts, and
/// the value.
fn declared<'t>(
    text: &'t str,
    at: At<'_>,
    i: &mut usize,
    next: usize,
) -> Result<(usize, usize, &'t str)> {
    let d = text.as_bytes();
    let bad = |i: usize, what: &str| malformed_declaration(at, d, i, what);
    let name_len = d
        .get(*i..)
        .unwrap_or_default()
        .iter()
        .take_while(|b| b.is_ascii_alphabetic())
        .count();
    let name = sub(text, *i..*i + name_len);
    let slot = match DECLARED.iter().position(|n| *n == name) {
        Some(s) if s >= next && (next > 0 || s == 0) => s,
        _ if next == 0 => return Err(bad(*i, "expected version")),
        _ => return Err(bad(*i, "expected encoding, standalone or \"?>\"")),
    };
    *i += name_len;
    skip_spaces(d, i);
    if d.get(*i) != Some(&b'=') {
        return Err(bad(*i, "expected \"=\""));
    }
    *i += 1;
    skip_spaces(d, i);
    let Some(&quote) = d.get(*i).filter(|q| matches!(q, b'"' | b'\'')) else {
        return Err(bad(*i, "expected a quote"));
    };
    *i += 1;
    let Some(len) = d
        .get(*i..)
        .unwrap_or_default()
        .iter()
        .position(|&b| b == quote)
    else {
        return Err(bad(*i, "the value is not closed"));
    };
    let value_at = *i;
    *i += len + 1;
    Ok((slot, value_at, sub(text, value_at..value_at + len)))
}

/// Checks the value of the declaration's `DECLARED[slot]`, which starts at
/// byte `value_at`: a version `1.x`, an encoding name that must be UTF-8, a
/// standalone `yes` or `no`.
fn declared_value(slot: usize, value: &str, text: &str, at: At<'_>, value_at: usize) -> Result<()> {
    let d = text.as_bytes();
    let ok = match slot {
        0 => value
            .strip_prefix("1.")
            .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit())),
        1 => {
            let name_ok = value
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_alphabetic())
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if name_ok && !value.eq_ignore_ascii_case("UTF-8") {
                return Err(Error::Profile(
                    format!(
                        "profile declares encoding \"{}\" at byte {}; only UTF-8 is accepted",
                        Shown::bare(value),
                        at.within(d, value_at).offset
                    )
                    .into(),
                ));
            }
            name_ok
        }
        _ => value == "yes" || value == "no",
    };
    if !ok {
        let name = DECLARED.get(slot).copied().unwrap_or_default();
        return Err(malformed_declaration(
            at,
            d,
            value_at,
            &format!("bad {name} value"),
        ));
    }
    Ok(())
}

/// Appends `raw` to `out` with references replaced and line ends normalized
/// as XML does: `\r\n` and lone `\r` become `\n`; in an attribute value (`attr`)
/// every literal tab, `\n` and `\r\n` becomes one space. Characters written as
/// references are kept as they are.
fn unescape(raw: &str, attr: bool, out: &mut String) -> std::result::Result<(), RefError> {
    let bytes = raw.as_bytes();
    let line_end = if attr { ' ' } else { '\n' };
    let mut run = 0;
    let mut i = 0;
    while let Some(next) = special(bytes.get(i..).unwrap_or_default(), attr) {
        i += next;
        let (replacement, len) = match bytes.get(i) {
            Some(b'&') => reference(raw, i)?,
            Some(b'\r') if bytes.get(i + 1) == Some(&b'\n') => (line_end, 2),
            Some(b'\r') => (line_end, 1),
            _ => (' ', 1),
        };
        out.push_str(sub(raw, run..i));
        out.push(replacement);
        i += len;
        run = i;
    }
    out.push_str(sub(raw, run..raw.len()));
    Ok(())
}

/// Where `raw` first needs `unescape` to change it: a reference, a `\r`,
/// and in an attribute value (`attr`) a `\n` or a tab. `None`: it reads as
/// it is written.
#[inline]
fn special(raw: impl AsRef<[u8]>, attr: bool) -> Option<usize> {
    let raw = raw.as_ref();
    if attr {
        find_any!(raw, b'&', b'\r', b'\n', b'\t')
    } else {
        find_any!(raw, b'&', b'\r')
    }
}

fn normalize_line_ends(raw: &str, out: &mut String) {
    let mut rest = raw;
    while let Some(i) = rest.find('\r') {
        out.push_str(sub(rest, 0..i));
        out.push('\n');
        let skip = if rest.as_bytes().get(i + 1) == Some(&b'\n') {
            2
        } else {
            1
        };
        rest = rest.get(i + skip..).unwrap_or_default();
    }
    out.push_str(rest);
}

/// The reference starting with the `&` at `raw[at]`: its character and length.
fn reference(raw: &str, at: usize) -> std::result::Result<(char, usize), RefError> {
    // The five predefined entities, most references, need no search for
    // the ';' (it found the same one) and no string compares.
    match raw.as_bytes().get(at + 1..).unwrap_or_default() {
        [b'a', b'm', b'p', b';', ..] => return Ok(('&', 5)),
        [b'l', b't', b';', ..] => return Ok(('<', 4)),
        [b'g', b't', b';', ..] => return Ok(('>', 4)),
        [b'q', b'u', b'o', b't', b';', ..] => return Ok(('"', 6)),
        [b'a', b'p', b'o', b's', b';', ..] => return Ok(('\'', 6)),
        _ => {}
    }
    let fail = |kind| RefError { at, kind };
    let Some(len) = raw.get(at + 1..).and_then(|rest| rest.find(';')) else {
        return Err(fail(RefKind::Unterminated));
    };
    let name = sub(raw, at + 1..at + 1 + len);
    let total = len + 2;
    let number = |digits: &str, radix: u32| {
        if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
            return Err(fail(RefKind::Malformed(total)));
        }
        u32::from_str_radix(digits, radix)
            .ok()
            .filter(|&n| is_xml_char(n))
            .and_then(char::from_u32)
            .ok_or(fail(RefKind::NotAChar(total)))
    };
    let c = if let Some(hex) = name.strip_prefix("#x") {
        number(hex, 16)?
    } else if let Some(dec) = name.strip_prefix('#') {
        number(dec, 10)?
    } else {
        match name {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ if is_name(name) => return Err(fail(RefKind::Undefined(total))),
            _ => return Err(fail(RefKind::Unterminated)),
        }
    };
    Ok((c, total))
}

struct RefError {
    /// Of the `&`, in the unescaped string.
    at: usize,
    kind: RefKind,
}

/// What is wrong with a reference; the number is the reference's length.
enum RefKind {
    Unterminated,
    Malformed(usize),
    Undefined(usize),
    NotAChar(usize),
}

impl RefError {
    /// In an attribute value (`attr`) the reference itself is not shown: the
    /// value may be a secret. `src` is the string `at` indexes.
    fn describe(&self, src: &str, attr: bool) -> String {
        const DEFINED: &str = "only &amp; &lt; &gt; &quot; &apos; are defined";
        let shown = |len: usize| {
            if attr {
                String::new()
            } else {
                format!(" {}", Shown::bare(sub(src, self.at..self.at + len)))
            }
        };
        match self.kind {
            RefKind::Unterminated => {
                "a \"&\" that does not start a reference (write \"&\" as &amp;)".to_string()
            }
            RefKind::Malformed(len) => format!("a malformed character reference{}", shown(len)),
            RefKind::Undefined(len) => {
                format!("an undefined entity reference{} ({DEFINED})", shown(len))
            }
            RefKind::NotAChar(len) => format!(
                "a reference{} to a character that XML does not allow",
                shown(len)
            ),
        }
    }
}

/// XML 1.0 `Char`.
fn is_xml_char(c: u32) -> bool {
    matches!(c, 0x9 | 0xA | 0xD | 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF)
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_xml_name_start()) && chars.all(|c| c.is_xml_name())
}

/// Whether `attrs` holds an attribute named as `text[name]`.
fn has_attribute(attrs: &[Attr], text: &str, name: &Range<usize>) -> bool {
    let text = text.as_bytes();
    let name = text.get(name.clone()).unwrap_or_default();
    attrs.iter().any(|a| is_named(text, &a.name, name))
}

pub(super) fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// The name as written, prefix included.
#[inline]
pub(super) fn qname(prefix: StrSpan<'_>, local: StrSpan<'_>) -> Range<usize> {
    if prefix.is_empty() {
        local.range()
    } else {
        prefix.start()..local.end()
    }
}

/// Whether the name at `at` in `text` is `name`. Attribute names are a few
/// bytes: compared here byte by byte, lengths and first bytes first, they
/// cost less than the calls to memcmp that `==` makes (2 instructions a
/// profile byte).
#[inline]
fn is_named(text: &[u8], at: &Range<usize>, name: &[u8]) -> bool {
    at.len() == name.len()
        && text.get(at.start) == name.first()
        && text
            .get(at.clone())
            .is_some_and(|t| t.iter().zip(name).all(|(a, b)| a == b))
}

/// `s[r]`, or "" where that is not a slice of `s` (never, for ranges found
/// by the code above, but input must not be able to cause a panic).
#[inline]
fn sub(s: &str, r: Range<usize>) -> &str {
    s.get(r).unwrap_or_default()
}

/// An xmlparser error as a message, positioned in the body. Its `Display`
/// cannot be used: it counts rows within the unit, and it prints the
/// offending character, which may be part of a secret.
fn xml_error(text: &str, at: At<'_>, e: &xmlparser::Error) -> Error {
    use xmlparser::Error as X;
    let (what, cause) = match e {
        X::InvalidDeclaration(c, _) => ("XML declaration", Some(c)),
        X::InvalidComment(c, _) => ("comment", Some(c)),
        X::InvalidPI(c, _) => ("processing instruction", Some(c)),
        X::InvalidDoctype(c, _) | X::InvalidEntity(c, _) => ("DOCTYPE", Some(c)),
        X::InvalidElement(c, _) => ("tag", Some(c)),
        X::InvalidAttribute(c, _) => ("attribute", Some(c)),
        X::InvalidCdata(c, _) => ("CDATA section", Some(c)),
        X::InvalidCharData(c, _) => ("text", Some(c)),
        X::UnknownToken(_) => ("markup", None),
    };
    let msg = match cause {
        Some(cause) => format!("malformed {what}: {}", describe(cause)),
        None => "unexpected markup".to_string(),
    };
    at.within(text.as_bytes(), index_of(text, e.pos())).wf(msg)
}

fn describe(cause: &StreamError) -> String {
    match cause {
        StreamError::UnexpectedEndOfStream => "it ends too early".to_string(),
        StreamError::InvalidName => "not a valid XML name".to_string(),
        StreamError::NonXmlChar(..) => "a character that XML does not allow".to_string(),
        StreamError::InvalidChar(_, expected, _) => format!("expected {:?}", char::from(*expected)),
        StreamError::InvalidCharMultiple(_, expected, _) => {
            let all: Vec<String> = expected
                .iter()
                .map(|&b| format!("{:?}", char::from(b)))
                .collect();
            format!("expected one of {}", all.join(" "))
        }
        StreamError::InvalidQuote(..) => "expected a quote".to_string(),
        StreamError::InvalidSpace(..) => "expected whitespace".to_string(),
        StreamError::InvalidString(expected, _) => format!("expected \"{expected}\""),
        StreamError::InvalidReference => "invalid reference".to_string(),
        StreamError::InvalidExternalID => "invalid external id".to_string(),
        StreamError::InvalidCommentData => "\"--\" is not allowed inside a comment".to_string(),
        StreamError::InvalidCommentEnd => "a comment must not end with \"-\"".to_string(),
        StreamError::InvalidCharacterData => "\"]]>\" is not allowed in text".to_string(),
    }
}

/// The byte index in `text` of xmlparser's row and column (both from 1,
/// rows counting `\n`, columns counting characters).
fn index_of(text: &str, pos: TextPos) -> usize {
    let mut start = 0;
    for _ in 1..pos.row {
        match text.get(start..).and_then(|t| t.find('\n')) {
            Some(i) => start += i + 1,
            None => break,
        }
    }
    let line = text.get(start..).unwrap_or_default();
    let col = usize::try_from(pos.col)
        .unwrap_or(usize::MAX)
        .saturating_sub(1);
    start + line.char_indices().nth(col).map_or(line.len(), |(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records every event as one line.
    #[derive(Default)]
    struct Events(Vec<String>);

    impl Handler for Events {
        fn start(&mut self, tag: &StartTag<'_>) -> Result<()> {
            let attrs: Vec<String> = tag
                .attributes()
                .map(|(n, v)| format!(" {n}={v:?}"))
                .collect();
            self.0.push(format!(
                "start {} {}{}",
                tag.depth,
                tag.name,
                attrs.concat()
            ));
            Ok(())
        }
        fn end(&mut self, name: &str, depth: usize) -> Result<()> {
            self.0.push(format!("end {depth} {name}"));
            Ok(())
        }
        fn text(&mut self, text: &str, depth: usize) -> Result<()> {
            self.0.push(format!("text {depth} {text:?}"));
            Ok(())
        }
    }

    fn events_with(doc: &[u8], limits: Limits) -> std::result::Result<Vec<String>, String> {
        let mut events = Events::default();
        match read(doc, &mut events, limits) {
            Ok(n) => {
                assert_eq!(n, doc.len() as u64);
                Ok(events.0)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn events(doc: &[u8]) -> std::result::Result<Vec<String>, String> {
        events_with(doc, Limits::DEFAULT)
    }

    fn error(doc: &[u8]) -> String {
        match events(doc) {
            Ok(ev) => panic!("accepted {:?}: {ev:?}", String::from_utf8_lossy(doc)),
            Err(e) => e,
        }
    }

    #[test]
    fn text_and_attribute_values_are_unescaped_and_line_ends_normalized() {
        let doc = b"<r a=\"x&amp;y&#9;z&#xA;w\tq\r\nr\rs\" b='&quot;&apos;'>t &lt;&gt;&quot;&apos;&#65;&#x1F600;&#0000065;\r\nA\rB\n</r>";
        assert_eq!(
            events(doc).unwrap(),
            [
                "start 1 r a=\"x&y\\tz\\nw q r s\" b=\"\\\"'\"",
                "text 1 \"t <>\\\"'A\u{1F600}A\\nA\\nB\\n\"",
                "end 1 r",
            ]
        );
    }

    #[test]
    fn cdata_is_text_without_references_but_with_line_ends_normalized() {
        let doc = b"<r>a<![CDATA[ &amp; <b>\r\nc\r]]>\r</r>";
        assert_eq!(
            events(doc).unwrap(),
            [
                "start 1 r",
                "text 1 \"a\"",
                "text 1 \" &amp; <b>\\nc\\n\"",
                "text 1 \"\\n\"",
                "end 1 r",
            ]
        );
    }

    #[test]
    fn prolog_and_epilog_may_hold_comments_pis_and_whitespace() {
        let doc = "\u{FEFF}<?xml version='1.0' encoding='utf-8' standalone='yes' ?>\r\n<!-- c -->\n<?pi data?>\n<p:r xmlns:p=\"urn:x\"><p:c/></p:r >\n<!-- after --><?pi?>\n  ";
        assert_eq!(
            events(doc.as_bytes()).unwrap(),
            [
                "start 1 p:r xmlns:p=\"urn:x\"",
                "start 2 p:c",
                "end 2 p:c",
                "end 1 p:r"
            ]
        );
        // Any whitespace separates the declaration's parts.
        assert!(events(b"<?xml\tversion=\"1.0\"\nencoding=\"UTF-8\"?><r/>").is_ok());
        assert!(events(b"<?xml-stylesheet href=\"a\"?><r/>").is_ok());
        // A target is a whole name: letters, digits, "-", ".", ":" and more.
        assert!(events(b"<?xml-stylesheetfoo?><r/>").is_ok());
        assert!(events("<r><?a-b.c:d\u{e9}\u{b7}\t?></r>".as_bytes()).is_ok());
    }

    #[test]
    fn messages_name_the_byte_and_line() {
        assert_eq!(
            error(b"<r>\n<a>\n</b></r>"),
            "profile rejected: profile is not well-formed XML at byte 8 (line 3): end tag </b> does not match <a>"
        );
        assert_eq!(
            error(b"<r>\n  &foo;</r>"),
            "profile rejected: profile is not well-formed XML at byte 6 (line 2): an undefined entity reference &foo; (only &amp; &lt; &gt; &quot; &apos; are defined)"
        );
        // xmlparser's own errors are placed in the body, not in the unit.
        assert_eq!(
            error(b"<r>\n\n<a b=1/></r>"),
            "profile rejected: profile is not well-formed XML at byte 7 (line 3): malformed attribute: expected a quote"
        );
    }

    #[test]
    fn malformed_documents_are_refused() {
        let nested = format!(
            "{}{}",
            "<a>".repeat(MAX_DEPTH + 1),
            "</a>".repeat(MAX_DEPTH + 1)
        );
        let many_attrs = format!(
            "<r {}/>",
            (0..=MAX_ATTRIBUTES)
                .map(|i| format!("a{i}=\"\" "))
                .collect::<String>()
        );
        let long_name = format!("<r><{0}/></r>", "n".repeat(MAX_NAME_LEN + 1));
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"".to_vec(), "profile is empty"),
            (b"\xEF\xBB\xBF \n".to_vec(), "has no root element"),
            (b"<!-- only a comment -->".to_vec(), "has no root element"),
            (
                b"<r>".to_vec(),
                "cut short at byte 3: <r> (depth 1) is not closed",
            ),
            (
                b"<r><a>text".to_vec(),
                "cut short at byte 10: <a> (depth 2)",
            ),
            (
                b"<r><a b=\"1\"".to_vec(),
                "cut short at byte 11: it ends inside a tag that starts at byte 3",
            ),
            (b"<r><!-- x".to_vec(), "inside a comment"),
            (b"<r><![CDATA[x".to_vec(), "inside a CDATA section"),
            (b"<r><?p x".to_vec(), "inside a processing instruction"),
            (b"<r></r".to_vec(), "inside an end tag"),
            (b"<r><".to_vec(), "cut short"),
            (b"<r><!".to_vec(), "inside a markup declaration"),
            (b"<r/><r/>".to_vec(), "a second root element <r>"),
            (
                b"<r/>x".to_vec(),
                "at byte 4 (line 1): text after the root element",
            ),
            (b"<r/>&amp;".to_vec(), "text after the root element"),
            (
                b"<r/><![CDATA[]]>".to_vec(),
                "CDATA section outside the root element",
            ),
            (
                b" x<r/>".to_vec(),
                "at byte 1 (line 1): text before the root element",
            ),
            (b"</r>".to_vec(), "end tag </r> without a start tag"),
            (b"<r></s>".to_vec(), "end tag </s> does not match <r>"),
            (
                b"<r><a></r></a>".to_vec(),
                "end tag </r> does not match <a>",
            ),
            (
                b"<r a=\"1\" a=\"2\"/>".to_vec(),
                "attribute a appears twice on <r>",
            ),
            (
                b"<r p:a=\"1\" p:a='2'/>".to_vec(),
                "attribute p:a appears twice",
            ),
            (many_attrs.into_bytes(), "has more than 256 attributes"),
            (
                long_name.into_bytes(),
                "an element name is 1025 bytes, the limit is 1024",
            ),
            (
                nested.into_bytes(),
                "<a> is nested 33 elements deep, the limit is 32",
            ),
            (b"<!DOCTYPE r><r/>".to_vec(), "DOCTYPEs are not allowed"),
            (b"<r><!DOCTYPE r></r>".to_vec(), "DOCTYPEs are not allowed"),
            (b"<r><!ELEMENT r></r>".to_vec(), "unexpected \"<!\""),
            (
                b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?><r/>".to_vec(),
                "declares encoding \"ISO-8859-1\" at byte 30; only UTF-8 is accepted",
            ),
            (
                b" <?xml version=\"1.0\"?><r/>".to_vec(),
                "allowed only at the very start",
            ),
            (
                b"<r><?xml version=\"1.0\"?></r>".to_vec(),
                "allowed only at the very start",
            ),
            (
                b"<?xml version=\"1.0\"?><?xml version=\"1.0\"?><r/>".to_vec(),
                "allowed only at the very start",
            ),
            (
                b"<?XML version=\"1.0\"?><r/>".to_vec(),
                "name \"XML\" is reserved",
            ),
            (
                b"<?xml encoding=\"UTF-8\"?><r/>".to_vec(),
                "malformed XML declaration: expected version",
            ),
            (b"<?xml?><r/>".to_vec(), "the version is missing"),
            (b"<?xml version=\"2.0\"?><r/>".to_vec(), "bad version value"),
            (
                b"<?xml version=\"1.0\" standalone=\"maybe\"?><r/>".to_vec(),
                "bad standalone value",
            ),
            (
                b"<?xml version=\"1.0\"encoding=\"UTF-8\"?><r/>".to_vec(),
                "expected whitespace",
            ),
            (b"<r>\xFF</r>".to_vec(), "at byte 3 (line 1): invalid UTF-8"),
            (
                b"<r>\xC3(</r>".to_vec(),
                "at byte 3 (line 1): invalid UTF-8",
            ),
            (b"<r>\xC0\x80</r>".to_vec(), "invalid UTF-8"),
            (b"<r>\xED\xA0\x80</r>".to_vec(), "invalid UTF-8"),
            (
                b"<r>ab\xE5\x86</r>".to_vec(),
                "at byte 5 (line 1): invalid UTF-8",
            ),
            (b"<r>\xE5\x86".to_vec(), "invalid UTF-8"),
            (
                b"<r>a\0</r>".to_vec(),
                "at byte 4 (line 1): character U+0000 is not allowed",
            ),
            (b"<r>\x1B</r>".to_vec(), "character U+001B is not allowed"),
            (
                "<r>\u{FFFF}</r>".as_bytes().to_vec(),
                "character U+FFFF is not allowed",
            ),
            (
                "<r>\u{FFFE}</r>".as_bytes().to_vec(),
                "character U+FFFE is not allowed",
            ),
            (b"<r><!-- \x01 --></r>".to_vec(), "character U+0001"),
            (
                b"<r a=\"\x01\"/>".to_vec(),
                "a character that XML does not allow",
            ),
            (
                b"<r>&#0;</r>".to_vec(),
                "reference &#0; to a character that XML does not allow",
            ),
            (b"<r>&#x0;</r>".to_vec(), "&#x0;"),
            (
                b"<r>&#xD800;</r>".to_vec(),
                "&#xD800; to a character that XML does not allow",
            ),
            (
                b"<r>&#57343;</r>".to_vec(),
                "&#57343; to a character that XML does not allow",
            ),
            (
                b"<r>&#xFFFE;</r>".to_vec(),
                "&#xFFFE; to a character that XML does not allow",
            ),
            (
                b"<r>&#xFFFF;</r>".to_vec(),
                "&#xFFFF; to a character that XML does not allow",
            ),
            (
                b"<r>&#x110000;</r>".to_vec(),
                "&#x110000; to a character that XML does not allow",
            ),
            (
                b"<r>&#99999999999999;</r>".to_vec(),
                "to a character that XML does not allow",
            ),
            (
                b"<r>&#8;</r>".to_vec(),
                "to a character that XML does not allow",
            ),
            (
                b"<r>&#x;</r>".to_vec(),
                "a malformed character reference &#x;",
            ),
            (b"<r>&#X41;</r>".to_vec(), "a malformed character reference"),
            (b"<r>&#12a;</r>".to_vec(), "a malformed character reference"),
            (
                b"<r>&foo;</r>".to_vec(),
                "an undefined entity reference &foo;",
            ),
            (
                b"<r>&AMP;</r>".to_vec(),
                "an undefined entity reference &AMP;",
            ),
            (
                b"<r>a & b</r>".to_vec(),
                "a \"&\" that does not start a reference",
            ),
            (
                b"<r>a &amp</r>".to_vec(),
                "a \"&\" that does not start a reference",
            ),
            (
                b"<r a=\"&foo;\"/>".to_vec(),
                "the value of attribute a of <r> has an undefined entity reference (",
            ),
            (
                b"<r a=\"&#0;\"/>".to_vec(),
                "has a reference to a character that XML does not allow",
            ),
            (b"<r>]]></r>".to_vec(), "\"]]>\" is not allowed in text"),
            (
                b"<r><!-- a -- b --></r>".to_vec(),
                "\"--\" is not allowed inside a comment",
            ),
            (b"<r><!-- a ---></r>".to_vec(), "must not end with \"-\""),
            (
                b"<r a=\"<\"/>".to_vec(),
                "not closed by \">\" before the next \"<\"",
            ),
            (
                b"<r><a b=\"1\"<c/></a></r>".to_vec(),
                "not closed by \">\" before the next \"<\"",
            ),
            (
                b"<r a=1/>".to_vec(),
                "malformed attribute: expected a quote",
            ),
            (b"<r a/>".to_vec(), "malformed attribute"),
            (
                b"<r a=\"1\"b=\"2\"/>".to_vec(),
                "malformed attribute: expected whitespace",
            ),
            (b"<1r/>".to_vec(), "malformed tag: not a valid XML name"),
            (b"<r></r x>".to_vec(), "malformed tag"),
            (b"<r><??></r>".to_vec(), "malformed processing instruction"),
            (
                b"<r><?tgt!junk?></r>".to_vec(),
                "at byte 8 (line 1): malformed processing instruction: its name must be followed by white space or \"?>\"",
            ),
            (
                b"<?a?b?><r/>".to_vec(),
                "at byte 3 (line 1): malformed processing instruction",
            ),
            (
                b"<r/><?a:b\xC3\xA9#?>".to_vec(),
                "malformed processing instruction",
            ),
        ];
        for (doc, expected) in cases {
            let err = error(&doc);
            assert!(
                err.contains(expected),
                "{:?}: {err:?} does not contain {expected:?}",
                String::from_utf8_lossy(&doc)
            );
            assert!(!err.contains('\n'), "{err:?} is not one line");
        }
    }

    #[test]
    fn limits_that_are_reached_exactly_are_accepted() {
        let nested = format!("{}{}", "<a>".repeat(MAX_DEPTH), "</a>".repeat(MAX_DEPTH));
        assert!(events(nested.as_bytes()).is_ok());
        let many_attrs = format!(
            "<r {}/>",
            (0..MAX_ATTRIBUTES)
                .map(|i| format!("a{i}=\"\" "))
                .collect::<String>()
        );
        assert!(events(many_attrs.as_bytes()).is_ok());
        let long_name = format!("<r><{0}/></r>", "n".repeat(MAX_NAME_LEN));
        assert!(events(long_name.as_bytes()).is_ok());
    }

    #[test]
    fn a_unit_larger_than_the_window_cap_is_refused_by_offset() {
        let limits = Limits {
            chunk: 5,
            max_unit: 64,
        };
        // A tag of exactly the cap fits; one byte more does not.
        let fits = format!("<r><a v=\"{}\"/></r>", "x".repeat(64 - 9));
        assert!(events_with(fits.as_bytes(), limits).is_ok());
        let too_big = format!("<r><a v=\"{}\"/></r>", "x".repeat(64 - 8));
        assert_eq!(
            events_with(too_big.as_bytes(), limits).unwrap_err(),
            "profile rejected: profile is not well-formed XML at byte 3 (line 1): a tag is larger than 64 bytes, the largest markup accepted"
        );
        let text = format!("<r>{}</r>", "t".repeat(65));
        assert!(
            events_with(text.as_bytes(), limits)
                .unwrap_err()
                .contains("a text run is larger than 64 bytes")
        );
        let comment = format!("<r><!--{}--></r>", "c".repeat(65));
        assert!(
            events_with(comment.as_bytes(), limits)
                .unwrap_err()
                .contains("a comment is larger than 64 bytes")
        );
        // Text that runs to the end of the body is bounded too.
        let tail = format!("<r/>{}", " ".repeat(200));
        assert!(
            events_with(tail.as_bytes(), limits)
                .unwrap_err()
                .contains("at byte 4 (line 1): a text run is larger than 64 bytes")
        );
    }

    #[test]
    fn results_do_not_depend_on_the_chunk_size() {
        let doc = "\u{FEFF}<?xml version=\"1.0\"?>\r\n<r a=\"写真\r\n&amp;\">Résumés &#x263A;\r\n<![CDATA[x\r\ny]]><!-- c --><?p?><b c='d'/>\r</r>\r\n";
        let whole = events(doc.as_bytes()).unwrap();
        for chunk in 1..40 {
            let limits = Limits {
                chunk,
                max_unit: 64,
            };
            assert_eq!(
                events_with(doc.as_bytes(), limits).unwrap(),
                whole,
                "chunk {chunk}"
            );
        }
        let bad = "<r>写真\r\n<a>Résumés</a>\r\n<b>&#xD800;</b></r>";
        let whole = events(bad.as_bytes()).unwrap_err();
        assert!(whole.contains("at byte 32 (line 3)"), "{whole}");
        for chunk in 1..40 {
            let limits = Limits {
                chunk,
                max_unit: 64,
            };
            assert_eq!(events_with(bad.as_bytes(), limits).unwrap_err(), whole);
        }
    }

    #[test]
    fn an_invalid_byte_in_an_attribute_is_reported_where_it_is() {
        // The unit is whole before it is decoded, so the error is the byte,
        // never a UTF-8 sequence that merely straddles two reads.
        let doc = b"<r a=\"\xE5\x86\x99\xE7\x9C\x9F\xFF\"/>";
        for chunk in 1..12 {
            let limits = Limits {
                chunk,
                max_unit: 64,
            };
            assert_eq!(
                events_with(doc, limits).unwrap_err(),
                "profile rejected: profile is not well-formed XML at byte 12 (line 1): invalid UTF-8 (a profile must be UTF-8)"
            );
        }
    }

    #[test]
    fn attribute_errors_do_not_show_the_value() {
        let err = error(b"<c password=\"hunter&secret;2\"/>");
        assert!(!err.contains("secret"), "{err}");
        assert!(!err.contains("hunter"), "{err}");
        let err = error(b"<c password=\"hunter\x012\"/>");
        assert!(!err.contains("U+0001"), "{err}");
        let err = error(b"<c password=\"hun\"ter\"/>");
        assert!(!err.contains("ter"), "{err}");
    }
}
