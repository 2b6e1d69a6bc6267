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

/// `secs` after the epoch as `YYYY-MM-DDTHH:MM:SS` (the first 19 bytes of
/// [`rfc3339`]), without allocating: log capture's timestamps.
pub fn seconds_rfc3339(secs: u64) -> [u8; 19] {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    let mut out = *b"0000-00-00T00:00:00";
    let mut put = |at: usize, value: u64, width: usize| {
        let mut v = value;
        for i in (at..at + width).rev() {
            out[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, year.clamp(0, 9999) as u64, 4);
    put(5, u64::from(month), 2);
    put(8, u64::from(day), 2);
    put(11, rem / 3600, 2);
    put(14, rem % 3600 / 60, 2);
    put(17, rem % 60, 2);
    out
}

/// `secs` after the epoch as RFC 3164's `Mmm dd hh:mm:ss` (`Dec  3
/// 08:31:32`, the day padded with a space), as syslog(3) writes it.
pub fn rfc3164(secs: u64) -> [u8; 15] {
    const MONTHS: &[u8; 36] = b"JanFebMarAprMayJunJulAugSepOctNovDec";
    let full = seconds_rfc3339(secs);
    let (_, month, day) = civil_from_days((secs / 86_400) as i64);
    let mut out = *b"Jan  1 00:00:00";
    let m = (month as usize - 1) * 3;
    out[..3].copy_from_slice(&MONTHS[m..m + 3]);
    out[4] = if day >= 10 {
        b'0' + (day / 10) as u8
    } else {
        b' '
    };
    out[5] = b'0' + (day % 10) as u8;
    out[7..].copy_from_slice(&full[11..19]);
    out
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
    fn fixed_width_forms_agree_with_rfc3339() {
        for secs in [0, 951_782_400, 1_763_777_670, 4_102_444_799] {
            let full = at(secs, 0);
            assert_eq!(&seconds_rfc3339(secs)[..], &full.as_bytes()[..19]);
        }
        assert_eq!(&rfc3164(1_764_750_692), b"Dec  3 08:31:32");
        assert_eq!(&rfc3164(951_782_400), b"Feb 29 00:00:00");
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
