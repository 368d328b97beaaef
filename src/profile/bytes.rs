//! Finding bytes in markup a machine word at a time.
//!
//! The window is cut into units by searching for a few ASCII delimiters,
//! checked for the few bytes XML forbids, and its lines are counted; looking
//! at one byte per step made that a tenth of the agent's instructions. These
//! look at eight bytes per step with plain integer arithmetic (no SIMD, no
//! `unsafe`), the same on every target, and fall back to one byte per step
//! only for the last few bytes.
//!
//! The masks set the high bit of each byte that matches. In `eq` a borrow
//! can also set it in a byte *above* a true match, never below one and
//! never without one: so "some byte matches" and "the lowest matching
//! byte" (words are read little-endian, so the lowest byte is the first in
//! the slice) are exact. The `_exact` masks never borrow across bytes (a few
//! operations more): every flag is a match, so flags can be counted.

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Bytes of `w` equal to `b`.
#[inline(always)]
pub fn eq(w: u64, b: u8) -> u64 {
    let x = w ^ (LO * u64::from(b));
    x.wrapping_sub(LO) & !x & HI
}

/// Bytes of `w` equal to `b`, exactly: no borrow crosses bytes, so every
/// flag is a match (`eq` is exact only about the lowest one).
#[inline(always)]
fn eq_exact(w: u64, b: u8) -> u64 {
    let x = w ^ (LO * u64::from(b));
    !(((x & !HI) + !HI) | x) & HI
}

/// Bytes of `w` below 0x20, exactly.
#[inline(always)]
fn controls_exact(w: u64) -> u64 {
    !(((w & !HI) + LO * 0x60) | w) & HI
}

/// Bytes of `w` that are control characters XML does not allow (all but
/// tab, line feed and carriage return), exactly.
#[inline(always)]
fn bad_controls_exact(w: u64) -> u64 {
    controls_exact(w) & !(eq_exact(w, b'\t') | eq_exact(w, b'\n') | eq_exact(w, b'\r'))
}

fn is_suspect(b: u8) -> bool {
    (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')) || b == 0xEF
}

/// How many bytes an exact mask flags: one flag (0x80) per byte, so their
/// sum lands in the top byte.
#[inline(always)]
fn flags(exact: u64) -> u64 {
    (exact >> 7).wrapping_mul(LO) >> 56
}

/// How many `\n` `hay` holds.
pub fn count_lines(hay: &[u8]) -> u64 {
    let (words, rest) = hay.as_chunks::<8>();
    let mut lines = 0;
    for w in words {
        lines += flags(eq_exact(u64::from_le_bytes(*w), b'\n'));
    }
    lines + rest.iter().filter(|&&b| b == b'\n').count() as u64
}

/// In one pass: how many `\n` `hay` holds, and the index of its first byte
/// that is a control character XML does not allow or 0xEF, the first byte of
/// U+FFFE and U+FFFF (and of other characters: the caller looks closer).
/// Most words of markup hold neither a control nor 0xEF, and are passed
/// over with a few operations.
pub fn lines_and_suspect(hay: &[u8]) -> (u64, Option<usize>) {
    let (words, rest) = hay.as_chunks::<8>();
    let mut lines = 0;
    let mut suspect = None;
    for (n, w) in words.iter().enumerate() {
        let w = u64::from_le_bytes(*w);
        // Printable ASCII only: no byte below 0x20, none from 0x80.
        if (w.wrapping_sub(LO * 0x20) | w) & HI == 0 {
            continue;
        }
        let line_feeds = eq_exact(w, b'\n');
        lines += flags(line_feeds);
        // Line feeds are most of the controls; anything else, or 0xEF,
        // is looked at closer.
        if suspect.is_none() && (controls_exact(w) != line_feeds || eq(w, 0xEF) != 0) {
            // Both masks are exact about their lowest flag.
            let m = bad_controls_exact(w) | eq(w, 0xEF);
            if m != 0 {
                suspect = Some(n * 8 + (m.trailing_zeros() / 8) as usize);
            }
        }
    }
    let done = words.len() * 8;
    lines += rest.iter().filter(|&&b| b == b'\n').count() as u64;
    let suspect = suspect.or_else(|| rest.iter().position(|&b| is_suspect(b)).map(|i| done + i));
    (lines, suspect)
}

/// The index of the first byte of `hay` that is a control character XML
/// does not allow, or 0xEF (see `lines_and_suspect`).
pub fn first_suspect(hay: &[u8]) -> Option<usize> {
    position(hay, |w| bad_controls_exact(w) | eq(w, 0xEF), is_suspect)
}

/// The index of the first byte of `hay` that `byte` accepts; `word` must
/// give the mask of the bytes `byte` accepts in a word.
#[inline(always)]
pub fn position(hay: &[u8], word: impl Fn(u64) -> u64, byte: impl Fn(u8) -> bool) -> Option<usize> {
    let (words, rest) = hay.as_chunks::<8>();
    for (n, w) in words.iter().enumerate() {
        let m = word(u64::from_le_bytes(*w));
        if m != 0 {
            return Some(n * 8 + (m.trailing_zeros() / 8) as usize);
        }
    }
    let done = words.len() * 8;
    rest.iter().position(|&b| byte(b)).map(|i| done + i)
}

/// The index of the first byte of `hay` that is one of the bytes listed:
/// `find_any!(hay, b'<', b'>')`. A macro, not a loop over a set: at the
/// release build's opt-level "s" such a loop is not unrolled, and it cost
/// 9 instructions a profile byte more.
macro_rules! find_any {
    ($hay:expr, $($byte:expr),+ $(,)?) => {
        $crate::profile::bytes::position(
            $hay,
            |w| 0 $(| $crate::profile::bytes::eq(w, $byte))+,
            |b| false $(|| b == $byte)+,
        )
    };
}
pub(crate) use find_any;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_first_match_at_every_offset_and_length() {
        let find = |hay: &[u8]| {
            position(
                hay,
                |w| eq(w, b'<') | eq(w, b'"') | controls_exact(w) | eq(w, 0xEF),
                |b| b == b'<' || b == b'"' || b < 0x20 || b == 0xEF,
            )
        };
        let any = |hay: &[u8]| find_any!(hay, b'<', b'"', 0xEF);
        for len in 0..40 {
            for at in 0..len {
                for hit in [b'<', b'"', 0, b'\n', 0x1F, 0xEF] {
                    // Bytes around the match that are close to it in value,
                    // and a second match after it, must not move the answer.
                    let mut hay: Vec<u8> =
                        (0..len).map(|i| [b'=', b' ', 0xF0, 0x7F][i % 4]).collect();
                    hay[at] = hit;
                    if at + 1 < len {
                        hay[at + 1] = b'<';
                    }
                    assert_eq!(find(&hay), Some(at), "{hay:?}");
                    if matches!(hit, b'<' | b'"' | 0xEF) {
                        assert_eq!(any(&hay), Some(at), "{hay:?}");
                    }
                }
            }
            let none: Vec<u8> = (0..len)
                .map(|i| [b'a', 0x20, 0xEE, 0xF0, 0x80][i % 5])
                .collect();
            assert_eq!(find(&none), None, "{none:?}");
        }
    }

    #[test]
    fn lines_and_suspects_are_found_exactly() {
        let all: Vec<u8> = (0..=255u8).collect();
        for start in 0..all.len() {
            for len in [0, 1, 7, 8, 9, 17, 64] {
                let hay = &all[start..(start + len).min(all.len())];
                let lines = hay.iter().filter(|&&b| b == b'\n').count() as u64;
                assert_eq!(count_lines(hay), lines, "{hay:?}");
                let suspect = hay
                    .iter()
                    .position(|&b| (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')) || b == 0xEF);
                assert_eq!(first_suspect(hay), suspect, "{hay:?}");
                assert_eq!(lines_and_suspect(hay), (lines, suspect), "{hay:?}");
            }
        }
        // Mixes of the bytes the masks tell apart, at every alignment.
        let alphabet = [
            b' ', b'\n', b'\t', b'\r', 0x01, 0x1F, 0xEF, 0xBF, b'a', 0x80, 0x7F,
        ];
        let mut seed: u32 = 1;
        for _ in 0..3000 {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let len = (seed >> 16) as usize % 40;
            let hay: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                    alphabet[(seed >> 16) as usize % alphabet.len()]
                })
                .collect();
            let lines = hay.iter().filter(|&&b| b == b'\n').count() as u64;
            let suspect = hay
                .iter()
                .position(|&b| (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')) || b == 0xEF);
            assert_eq!(lines_and_suspect(&hay), (lines, suspect), "{hay:?}");
        }
        // Runs of the same byte: every one counts, none hides another.
        for b in [b'\n', b'\t', 0x01, 0x0B, 0x1F, 0xEF, 0x0A, 0x8A] {
            for len in 0..20 {
                let mut hay = vec![b; len];
                hay.extend_from_slice(b"\n\tab\r\n");
                let lines = hay.iter().filter(|&&c| c == b'\n').count() as u64;
                assert_eq!(count_lines(&hay), lines, "{hay:?}");
                assert_eq!(lines_and_suspect(&hay).0, lines, "{hay:?}");
            }
        }
    }

    #[test]
    fn a_borrow_never_hides_or_invents_a_first_match() {
        // 0x00 below 0x01: the classic false positive lands above a true hit.
        let hay = [b'a', 0x00, 0x01, b'a', b'a', b'a', b'a', b'a', b'a'];
        assert_eq!(position(&hay, |w| eq(w, 0x01), |b| b == 0x01), Some(2));
    }
}
