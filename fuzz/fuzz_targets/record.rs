//! Fuzzes the store's record decoders (`store::record`): the bytes of a
//! damaged store must decode to `None` or to a record that encodes back to
//! exactly the same bytes, never a panic nor a value outside the protocol's
//! limits (the encoder would then write something the decoder refuses).

#![no_main]

use cncopgetprofile::internals::store::record::{decode_endpoint, decode_job, encode_endpoint, encode_job};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut again = Vec::new();
    if let Some(job) = decode_job(data) {
        encode_job(&job, &mut again);
        assert_eq!(again, data, "a job record must round-trip");
    }
    if let Some(endpoint) = decode_endpoint(data) {
        encode_endpoint(&endpoint, &mut again);
        assert_eq!(again, data, "an endpoint record must round-trip");
    }
});
