//! Wall-clock time in UTC: the run's "now", RFC 3339 stamps for the store and
//! reports, day stamps for log file names, and HTTP dates for `Retry-After`.
//!
//! Kept free of a date crate: the civil-date arithmetic is a few lines
//! (Howard Hinnant's algorithms) and the agent only ever needs UTC.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, UTC.
pub type UnixTime = u64;

/// Environment variable that replaces the clock, for tests of time-dependent
/// behaviour (firewall re-reports) without sleeping.
pub const NOW_VAR: &str = "CNCOP_NOW";

/// The run's current time: `CNCOP_NOW` (Unix seconds) when set, else the
/// system clock.
pub fn now() -> UnixTime {
    if let Some(t) = std::env::var(NOW_VAR).ok().and_then(|v| v.parse().ok()) {
        return t;
    }
    system_now()
}

/// The system clock, ignoring `CNCOP_NOW` (for durations and certificate checks).
pub fn system_now() -> UnixTime {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// When this binary was built; a device clock before it is certainly wrong.
pub fn build_time() -> UnixTime {
    env!("CNCOP_BUILD_UNIX").parse().unwrap_or(0)
}

/// (year, month, day) of the day `days` after 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Days from 1970-01-01 to the given civil date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Days from 1970-01-01 to a date that exists (no 30 February, no month 13):
/// the one check every date read from a file or the network goes through.
fn days_of_real_date(y: i64, m: u32, d: u32) -> Option<i64> {
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let days = days_from_civil(y, m, d);
    (civil_from_days(days) == (y, m, d)).then_some(days)
}

/// `2026-11-27T07:00:05Z`
pub fn rfc3339(t: UnixTime) -> String {
    let days = (t / 86_400) as i64;
    let secs = t % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Parses [`rfc3339`]'s own form (`2026-11-27T07:00:05Z`, UTC only) back.
pub fn parse_rfc3339(s: &str) -> Option<UnixTime> {
    let b = s.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[19] != b'Z' {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let day = parse_day_stamp(&format!("{}{}{}", &s[..4], &s[5..7], &s[8..10]))?;
    let field = |r: std::ops::Range<usize>, max: u64| {
        let f = s.get(r)?;
        let n: u64 = f
            .bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| f.parse().ok())??;
        (n <= max).then_some(n)
    };
    Some(day + field(11..13, 23)? * 3600 + field(14..16, 59)? * 60 + field(17..19, 59)?)
}

/// `20261127`, the day stamp of log file names.
pub fn day_stamp(t: UnixTime) -> String {
    let (y, m, d) = civil_from_days((t / 86_400) as i64);
    format!("{y:04}{m:02}{d:02}")
}

/// Parses a `YYYYMMDD` day stamp back to the Unix time of its midnight.
pub fn parse_day_stamp(s: &str) -> Option<UnixTime> {
    if s.len() != 8 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let y: i64 = s[..4].parse().ok()?;
    let m: u32 = s[4..6].parse().ok()?;
    let d: u32 = s[6..].parse().ok()?;
    u64::try_from(days_of_real_date(y, m, d)? * 86_400).ok()
}

/// `Retry-After`: delay-seconds or an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
/// The value comes from the network: anything that is not exactly one of the
/// two forms (RFC 9110 5.6.7), or names a time no `UnixTime` holds, is `None`,
/// never a panic or a wrapped-around wait.
pub fn parse_retry_after(value: &str, now: UnixTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than a u64 holds is a wait longer than any limit.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    parse_imf_fixdate(value).map(|at| Duration::from_secs(at.saturating_sub(now)))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT`, the one HTTP date form senders must use.
fn parse_imf_fixdate(value: &str) -> Option<UnixTime> {
    let mut parts = value.split(' ');
    let weekday = parts.next()?;
    if weekday.len() != 4 || !weekday.ends_with(',') {
        return None;
    }
    let day = fixed_digits(parts.next()?, 2)?;
    let month = parts.next()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == month)?;
    let year = fixed_digits(parts.next()?, 4)?;
    let mut hms = parts.next()?.split(':');
    let (h, mi, s) = (
        fixed_digits(hms.next()?, 2)?,
        fixed_digits(hms.next()?, 2)?,
        fixed_digits(hms.next()?, 2)?,
    );
    if hms.next().is_some() || parts.next()? != "GMT" || parts.next().is_some() {
        return None;
    }
    // 60: a leap second is a valid HTTP time.
    if year < 1970 || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let month = u32::try_from(month).ok()? + 1;
    let days = u64::try_from(days_of_real_date(i64::from(year), month, day)?).ok()?;
    Some(days * 86_400 + u64::from(h * 3600 + mi * 60 + s))
}

/// Exactly `n` ASCII digits (n <= 4, so the value fits a `u32`).
fn fixed_digits(s: &str, n: usize) -> Option<u32> {
    if s.len() != n || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_762_805), "2026-11-27T07:00:05Z");
        assert_eq!(day_stamp(1_795_762_805), "20261127");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn rfc3339_round_trips() {
        for t in [0, 951_782_400, 1_795_762_805] {
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        }
        for bad in [
            "2026-11-27T24:00:00Z",
            "2026-11-27 07:00:05Z",
            "2026-11-27T07:00:05",
            "",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn dates_that_do_not_exist_are_refused() {
        assert_eq!(parse_rfc3339("2026-02-30T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("2026-04-31T00:00:00Z"), None);
        assert_eq!(parse_rfc3339("2025-02-29T00:00:00Z"), None);
        assert!(parse_rfc3339("2028-02-29T00:00:00Z").is_some());
        assert_eq!(parse_day_stamp("20260230"), None);
        assert_eq!(parse_retry_after("Mon, 30 Feb 2026 08:49:37 GMT", 0), None);
        assert_eq!(parse_retry_after("Tue, 31 Jun 2026 08:49:37 GMT", 0), None);
    }

    #[test]
    fn day_stamps_round_trip() {
        assert_eq!(parse_day_stamp("20261127"), Some(1_795_737_600));
        assert_eq!(parse_day_stamp("2026112"), None);
        assert_eq!(parse_day_stamp("20261327"), None);
    }

    #[test]
    fn retry_after_both_forms() {
        assert_eq!(parse_retry_after("7", 0), Some(Duration::from_secs(7)));
        let now = 784_111_777 - 10;
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(parse_retry_after("soon", 0), None);
    }

    #[test]
    fn retry_after_absurd_fields_are_refused_not_overflowed() {
        // Each of these once overflowed the date arithmetic: a panic in a
        // debug build, a wrapped-around wait in release.
        for value in [
            "Sun, 06 Nov 1994 99999999999999999:49:37 GMT",
            "Sun, 06 Nov 1994 08:99999999999999999:37 GMT",
            "Sun, 06 Nov 1994 08:49:99999999999999999 GMT",
            "Sun, 99999999999999999 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 99999999999999999 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 1994 08:60:00 GMT",
            "Sun, 32 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 0001 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "Sun, 06 Nov 1994 08:49:37 GMT extra",
            "Sun, 06 Nov 1994 08:49 GMT",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "-5",
            "",
        ] {
            assert_eq!(parse_retry_after(value, 0), None, "{value:?}");
        }
        // Far but representable: a long wait, which the caller refuses.
        assert_eq!(
            parse_retry_after("Fri, 31 Dec 9999 23:59:60 GMT", 0),
            Some(Duration::from_secs(253_402_300_800))
        );
        assert_eq!(
            parse_retry_after("99999999999999999999999", 0),
            Some(Duration::from_secs(u64::MAX))
        );
    }
}
