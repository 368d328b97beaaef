//! Fuzzes the state file's decoder (`state::decode`): the bytes of a damaged
//! `Config/cncopgetprofile.state` must be refused or decode to sections that
//! encode back to exactly the same bytes, never a panic.

#![no_main]

use cncopgetprofile::internals::state::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(sections) = decode(data) {
        assert_eq!(encode(&sections), data, "a state file must round-trip");
    }
});
