//! The ETag the cncop network sent with the stored profile, kept in the
//! state file's `etag` section rather than in the store, so that the same
//! content under a new ETag costs a few bytes of state, not a new store.
//!
//! Invariant: an ETag is sent as `If-None-Match` only with the content it
//! came with. The section names that content by the store's id, random and
//! new for every store file written (`StoreMeta::id`); when the store holds
//! anything else (a kill between replacing the store and writing the state,
//! a rebuilt store, another schema) the ETag is not sent, and the next 200
//! puts things right. A 200 with the records already stored keeps the store
//! and its id, and so costs only this section.
//!
//! Section format 1: a format byte (1), the store's 16-byte id, then the
//! ETag's bytes (1 to 1024 of space and visible ASCII, what an HTTP header
//! value may hold).

use super::tables::{STORE_SCHEMA, StoreMeta};
use crate::state::{Section, StateFile};

const FORMAT: u8 = 1;
/// Longer ETags are not kept (none seen in practice is near this).
pub const MAX_ETAG: usize = 1024;

fn valid(etag: &[u8]) -> bool {
    (1..=MAX_ETAG).contains(&etag.len()) && etag.iter().all(|b| (b' '..=b'~').contains(b))
}

/// The section's bytes for `etag` sent with the content of the store `id`;
/// `None` for an ETag that cannot be sent back.
pub fn encode(id: &[u8; 16], etag: &str) -> Option<Vec<u8>> {
    if !valid(etag.as_bytes()) {
        return None;
    }
    let mut out = Vec::with_capacity(1 + 16 + etag.len());
    out.push(FORMAT);
    out.extend_from_slice(id);
    out.extend_from_slice(etag.as_bytes());
    Some(out)
}

/// The store id and ETag of a section `encode` wrote; `None` for anything
/// else.
pub fn decode(bytes: &[u8]) -> Option<([u8; 16], &str)> {
    let (&[format], rest) = bytes.split_first_chunk::<1>()?;
    let (id, etag) = rest.split_first_chunk::<16>()?;
    if format != FORMAT || !valid(etag) {
        return None;
    }
    Some((*id, std::str::from_utf8(etag).ok()?))
}

/// The ETag to send as `If-None-Match` for a store whose meta is `meta`:
/// the state's, when it came with the content the store holds.
pub fn current<'a>(meta: Option<&StoreMeta>, state: &'a StateFile) -> Option<&'a str> {
    let meta = meta.filter(|m| m.schema == STORE_SCHEMA)?;
    let (id, etag) = decode(state.get(Section::ETAG)?)?;
    (id == meta.id).then_some(etag)
}

/// The `etag` section for a store whose meta is `meta` and that came with
/// `etag`; `None` removes it.
pub fn section(meta: Option<&StoreMeta>, etag: Option<&str>) -> Option<Vec<u8>> {
    encode(&meta?.id, etag?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_bytes_and_round_trip() {
        let bytes = encode(&[7; 16], "W/\"v1\"").unwrap();
        let mut expected = vec![1];
        expected.extend_from_slice(&[7; 16]);
        expected.extend_from_slice(b"W/\"v1\"");
        assert_eq!(bytes, expected);
        assert_eq!(decode(&bytes), Some(([7; 16], "W/\"v1\"")));
    }

    #[test]
    fn etags_that_cannot_be_sent_are_not_kept() {
        assert_eq!(encode(&[0; 16], ""), None);
        assert_eq!(encode(&[0; 16], "a\r\nX-Evil: 1"), None);
        assert_eq!(encode(&[0; 16], "é"), None);
        assert_eq!(encode(&[0; 16], &"a".repeat(MAX_ETAG + 1)), None);
        assert!(encode(&[0; 16], &"a".repeat(MAX_ETAG)).is_some());
    }

    #[test]
    fn the_decoder_is_strict() {
        let good = encode(&[1; 16], "\"x\"").unwrap();
        assert!(decode(&good[..17]).is_none(), "no ETag");
        let mut other_format = good.clone();
        other_format[0] = 2;
        assert!(decode(&other_format).is_none());
        let mut control = good.clone();
        control.push(b'\n');
        assert!(decode(&control).is_none());
    }
}
