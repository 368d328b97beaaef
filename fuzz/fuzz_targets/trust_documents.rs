//! Fuzzes the signed-metadata documents (PROTOCOL 8.2) and what is kept of
//! them: the first byte picks the root, timestamp or release parser, the
//! `.sig` file parser or the trust state decoder; the rest is the input. Any
//! input must give a verdict without a panic, and an accepted document must
//! keep the invariants its parser states.

#![no_main]

use cncopgetprofile::internals::trust::{Kept, Release, Role, Root, Signatures, Timestamp};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    match which % 5 {
        0 => {
            if let Ok(root) = Root::parse("root.xml", rest) {
                for role in Role::ALL {
                    let keys = root.role(role);
                    assert!(keys.threshold >= 1 && keys.threshold <= keys.keys.len());
                }
            }
        }
        1 => {
            if let Ok(ts) = Timestamp::parse(rest) {
                assert!(ts.release_size >= 1 && ts.release_size <= 64 * 1024);
            }
        }
        2 => {
            if let Ok(r) = Release::parse(1, rest) {
                for (i, (p, _)) in r.entries.iter().enumerate() {
                    assert!(!r.entries[..i].iter().any(|(q, _)| q == p));
                }
            }
        }
        3 => {
            if let Ok(text) = std::str::from_utf8(rest) {
                let _ = Signatures::from_sig_file(text);
            }
        }
        _ => {
            if let Ok(k) = Kept::decode(rest) {
                assert_eq!(k.encode(), rest, "the trust state encoding is canonical");
            }
        }
    }
});
