//! Fuzzes the `Cncop-Profile` manifest header (PROTOCOL 8.2) and the
//! `Cncop-Signature` values: any value gives a verdict without a panic, and
//! an accepted manifest prints and re-parses to itself.

#![no_main]

use cncopgetprofile::internals::trust::{Manifest, Signatures};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = Signatures::parse(text.lines());
    if let Ok(m) = Manifest::parse(text) {
        let again = format!(
            "device={} version={} size={} sha256={} expires={}",
            m.device,
            m.version,
            m.size,
            cncopgetprofile::internals::trust::hex(&m.sha256),
            cncopgetprofile::internals::clock::rfc3339(m.expires)
        );
        assert_eq!(Manifest::parse(&again).as_ref(), Ok(&m));
    }
});
