//! Wall-clock time as people read it: RFC 3339 in UTC with microseconds
//! (`2026-11-22T02:14:30.123456Z`), for the supervisor's messages. Plain
//! arithmetic (the proleptic Gregorian calendar from days since the epoch,
//! after Howard Hinnant's `civil_from_days`); no time zone database.

use std::time::{SystemTime, UNIX_EPOCH};

/// `t` as `YYYY-MM-DDTHH:MM:SS.ffffffZ`; times before the epoch show as
/// the epoch.
pub fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_micros()
    )
}

/// (year, month 1-12, day 1-31) of day `z` after 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, micros: u32) -> String {
        rfc3339(UNIX_EPOCH + Duration::new(secs, micros * 1000))
    }

    #[test]
    fn formats_known_instants() {
        assert_eq!(at(0, 0), "1970-01-01T00:00:00.000000Z");
        // date -u -d @951782400: the leap day of 2000.
        assert_eq!(at(951_782_400, 1), "2000-02-29T00:00:00.000001Z");
        assert_eq!(at(1_763_777_670, 123_456), "2025-11-22T02:14:30.123456Z");
        // The last second of 2099 and the first of 2100 (not a leap year).
        assert_eq!(at(4_102_444_799, 999_999), "2099-12-31T23:59:59.999999Z");
        assert_eq!(at(4_107_542_400, 0), "2100-03-01T00:00:00.000000Z");
    }

    #[test]
    fn every_day_follows_the_one_before() {
        let mut last = civil_from_days(-1);
        for day in 0..150_000 {
            let next = civil_from_days(day);
            assert!(next > last, "{day}: {next:?} after {last:?}");
            last = next;
        }
    }
}
