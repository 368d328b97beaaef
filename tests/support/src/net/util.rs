//! Small helpers the network and the tests share: base64 (the `base64`
//! crate), CRC-32 (flate2's), ETags, random hex, HTTP dates.

use std::time::{SystemTime, UNIX_EPOCH};

/// Standard base64 (with or without padding); None if malformed.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    );
    LENIENT.decode(s).ok()
}

/// CRC-32 (IEEE), as gzip uses.
pub fn crc32(data: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(data);
    crc.sum()
}

/// A quoted strong ETag derived from the content (FNV-1a 64).
pub fn etag_for(body: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in body {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("\"{h:016x}-{}\"", body.len())
}

/// A random hex string of `n` characters (ring's system random generator,
/// the agent's own).
pub fn random_hex(n: usize) -> String {
    use ring::rand::SecureRandom as _;
    let mut bytes = vec![0u8; n.div_ceil(2)];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random generator");
    let mut s = super::trust::hex(&bytes);
    s.truncate(n);
    s
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), e.g. for `Retry-After`:
/// the agent's own UTC calendar (`clock::rfc3339`), rearranged.
pub fn http_date(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // 2026-11-27T07:00:05Z
    let stamp = cncopgetprofile::internals::clock::rfc3339(secs);
    let month: usize = stamp[5..7].parse().expect("rfc3339 has a month");
    const WD: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {} {} {} {} GMT",
        WD[(secs / 86_400 % 7) as usize],
        &stamp[8..10],
        MON[month - 1],
        &stamp[..4],
        &stamp[11..19]
    )
}
