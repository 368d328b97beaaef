//! Fuzzes `clock::parse_retry_after`, the one parser of an HTTP date the agent
//! has: any header value (a `Retry-After` from a 429 or 5xx) must give a wait
//! or `None` without a panic (an overflow panics here: fuzz builds keep
//! debug assertions), and a wait is never shorter than the delay-seconds form
//! says.

#![no_main]

use cncopgetprofile::internals::clock::parse_retry_after;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(value) = std::str::from_utf8(data) else {
        return;
    };
    for now in [0, 1_795_762_805, u64::MAX] {
        let wait = parse_retry_after(value, now);
        if let (Some(wait), Ok(secs)) = (wait, value.trim().parse::<u64>()) {
            assert_eq!(wait.as_secs(), secs, "{value:?}");
        }
    }
});
