//! A start tag's name, attributes and end, found without xmlparser when
//! the tag has the shape nearly every profile tag has: ASCII names without
//! a prefix, each attribute after white space, each value in quotes.
//! Tokenizing start tags was a quarter of a large ingest's CPU time, most
//! of it xmlparser's going through names and values one character at a
//! time and building a token for each piece.
//!
//! Invariant: for a tag this accepts, xmlparser would give exactly these
//! spans (`the_spans_are_xmlparsers` compares the two on generated tags).
//! Any other tag, well-formed or not, gets `None`, and xmlparser tokenizes
//! it and gives the verdict; so nothing here decides what is accepted.
//! Characters XML forbids are not looked for: the caller takes a tag only
//! from the text before the window's first suspect byte (`xml::read`).

use super::bytes::{eq, position};
use super::xml::{is_space, qname};
use std::ops::Range;
use xmlparser::{ElementEnd, Token, Tokenizer};

/// What a start tag is made of; ranges are in the tag's text.
pub struct Scanned {
    pub name: Range<usize>,
    /// `<name .../>`.
    pub empty: bool,
    /// Where the tag ends: after its `>`.
    pub len: usize,
}

/// The start tag `tag` opens with (`tag[0]` is `<`); each attribute's
/// name and value ranges go to `attr`, in order (at most `max_attrs`: more
/// is `None`).
pub fn scan(
    tag: &[u8],
    max_attrs: usize,
    mut attr: impl FnMut(Range<usize>, Range<usize>),
) -> Option<Scanned> {
    let name = 1..name_end(tag, 1)?;
    let mut at = name.end;
    let mut count = 0;
    loop {
        let spaced = skip_spaces(tag, &mut at);
        match *tag.get(at)? {
            b'>' => {
                return Some(Scanned {
                    name,
                    empty: false,
                    len: at + 1,
                });
            }
            b'/' => {
                return (tag.get(at + 1) == Some(&b'>')).then_some(Scanned {
                    name,
                    empty: true,
                    len: at + 2,
                });
            }
            // xmlparser: InvalidSpace.
            _ if !spaced => return None,
            _ => {}
        }
        if count >= max_attrs {
            return None;
        }
        let attr_name = at..name_end(tag, at)?;
        at = attr_name.end;
        skip_spaces(tag, &mut at);
        if tag.get(at) != Some(&b'=') {
            return None;
        }
        at += 1;
        skip_spaces(tag, &mut at);
        let quote = *tag.get(at).filter(|&&q| q == b'"' || q == b'\'')?;
        let start = at + 1;
        let value = tag.get(start..)?;
        let len = position(
            value,
            |w| eq(w, quote) | eq(w, b'<'),
            |b| b == quote || b == b'<',
        )?;
        // A `<` in a value is an error xmlparser reports.
        if value.get(len) != Some(&quote) {
            return None;
        }
        attr(attr_name, start..start + len);
        count += 1;
        at = start + len + 1;
    }
}

/// The same from xmlparser's tokens, for the tags `scan` leaves alone
/// (`None` for any tag xmlparser refuses).
pub fn tokenize(
    tag: &str,
    max_attrs: usize,
    mut attr: impl FnMut(Range<usize>, Range<usize>),
) -> Option<Scanned> {
    let mut tokens = Tokenizer::from_fragment(tag, 0..tag.len());
    let name = match tokens.next()? {
        Ok(Token::ElementStart { prefix, local, .. }) => qname(prefix, local),
        _ => return None,
    };
    let mut count = 0;
    loop {
        match tokens.next()?.ok()? {
            Token::Attribute {
                prefix,
                local,
                value,
                ..
            } => {
                if count >= max_attrs {
                    return None;
                }
                attr(qname(prefix, local), value.range());
                count += 1;
            }
            Token::ElementEnd {
                end: end @ (ElementEnd::Open | ElementEnd::Empty),
                span,
            } => {
                return Some(Scanned {
                    name,
                    empty: end == ElementEnd::Empty,
                    len: span.end(),
                });
            }
            _ => return None,
        }
    }
}

/// The end of the name at `from`: ASCII, no prefix. `None` where xmlparser
/// would read more into it (a `:` or a non-ASCII character) or where it
/// does not start a name.
fn name_end(tag: &[u8], from: usize) -> Option<usize> {
    let first = *tag.get(from)?;
    if !(first.is_ascii_alphabetic() || first == b'_') {
        return None;
    }
    let rest = tag.get(from + 1..)?;
    let len = rest
        .iter()
        .position(|&b| !(b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')))?;
    match rest.get(len) {
        Some(b':' | 0x80..) => None,
        _ => Some(from + 1 + len),
    }
}

/// Moves `at` past XML white space; true if there was some.
fn skip_spaces(tag: &[u8], at: &mut usize) -> bool {
    let from = *at;
    while tag.get(*at).copied().is_some_and(is_space) {
        *at += 1;
    }
    *at > from
}

#[cfg(test)]
mod tests {
    use super::*;

    type Spans = (Range<usize>, Vec<(Range<usize>, Range<usize>)>, bool, usize);

    fn quick(tag: &str) -> Option<Spans> {
        let mut attrs = Vec::new();
        let s = scan(tag.as_bytes(), 256, |n, v| attrs.push((n, v)))?;
        Some((s.name, attrs, s.empty, s.len))
    }

    /// What xmlparser makes of the tag `text` opens with.
    fn tokenized(text: &str) -> Option<Spans> {
        let mut attrs = Vec::new();
        let s = tokenize(text, 256, |n, v| attrs.push((n, v)))?;
        Some((s.name, attrs, s.empty, s.len))
    }

    #[test]
    fn the_common_tags_are_scanned() {
        for tag in [
            "<job id=\"1000\" name=\"Projects 0\" type=\"CCS\" enabled=\"no\">",
            "<source path=\"/share/Invoices &quot;2026&quot;/877348\"/>",
            "<a>",
            "<a/>",
            "<a\n\tb = 'x>y' c=\"\" >rest",
            "<credential user=\"b\" password=\"pw&lt;&amp;&gt;4\"/>",
            "<x.y-z_1 a.b-c_2='R\u{e9}sum\u{e9}s'/>",
        ] {
            let got = quick(tag);
            assert!(got.is_some(), "{tag:?} not scanned");
            assert_eq!(got, tokenized(tag), "{tag:?}");
        }
    }

    #[test]
    fn the_others_are_left_to_xmlparser() {
        for tag in [
            "<a:b>",
            "<a b:c='1'>",
            "<\u{e9}>",
            "<a\u{e9}>",
            "<a x='1'y='2'>",
            "<a x='1<'>",
            "<a x='v<>",
            "<a x='v< y='1'>",
            "<a x=1>",
            "<a x>",
            "<a / >",
            "<1a>",
            "<a x='1'",
            "<a",
        ] {
            assert_eq!(quick(tag), None, "{tag:?}");
        }
        // A repeated attribute is the caller's to find, as with xmlparser.
        let twice = "<a x='1' x='2'>";
        assert_eq!(quick(twice), tokenized(twice));
    }

    #[test]
    fn the_spans_are_xmlparsers() {
        // Tags built from the bytes that matter to either, seeded: every tag
        // scanned must be tokenized alike; and many must be scanned.
        let pieces: &[&str] = &[
            "a", "b", "Z", "_", "1", "-", ".", ":", "\u{e9}", " ", "\t", "\n", "\r", "=", "\"",
            "'", "<", ">", "/", "&", "x=\"v\"", " y='w'", "\u{1}",
        ];
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let mut scanned = 0;
        for _ in 0..200_000 {
            let mut tag = String::from("<");
            for _ in 0..next(12) {
                tag.push_str(pieces[next(pieces.len())]);
            }
            if next(2) == 0 {
                tag.push('>');
            }
            if let Some(spans) = quick(&tag) {
                scanned += 1;
                if !tag.contains('\u{1}') {
                    assert_eq!(Some(spans), tokenized(&tag), "{tag:?}");
                }
            }
        }
        assert!(scanned > 5_000, "only {scanned} scanned");
    }
}
