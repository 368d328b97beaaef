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
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    u64::try_from(days_from_civil(y, m, d) * 86_400).ok()
}

/// `Retry-After`: delay-seconds or an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn parse_retry_after(value: &str, now: UnixTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let mut parts = value.split_ascii_whitespace().skip(1);
    let day: u32 = parts.next()?.parse().ok()?;
    let month = parts.next()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| *m == month)? as u32
        + 1;
    let year: i64 = parts.next()?.parse().ok()?;
    let mut hms = parts.next()?.split(':').map(|p| p.parse::<u64>().ok());
    let (h, mi, s) = (hms.next()??, hms.next()??, hms.next()??);
    if parts.next()? != "GMT" {
        return None;
    }
    let at =
        u64::try_from(days_from_civil(year, month, day)).ok()? * 86_400 + h * 3600 + mi * 60 + s;
    Some(Duration::from_secs(at.saturating_sub(now)))
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
}
