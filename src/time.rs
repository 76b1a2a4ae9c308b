//! Calendar arithmetic in UTC on Unix seconds: civil dates, RFC 3339 parsing and formatting.
//!
//! Pure integer arithmetic (Howard Hinnant's `days_from_civil` / `civil_from_days`), valid for
//! every `i64` day count the callers can produce; no host calls, no panics.

/// Seconds in one day.
pub const DAY: i64 = 86_400;

/// A calendar date in the proleptic Gregorian calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Date {
    pub year: i64,
    /// 1..=12
    pub month: u32,
    /// 1..=31
    pub day: u32,
}

/// Days since 1970-01-01 for a civil date.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // [0, 399]
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// Civil date of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> Date {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32; // [1, 31]
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32; // [1, 12]
    let year = yoe + era * 400 + i64::from(month <= 2);
    Date { year, month, day }
}

/// Whether `year` is a leap year.
pub fn is_leap(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

/// Number of days in a month.
pub fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Formats Unix seconds as RFC 3339 UTC (`2026-11-25T13:00:00Z`).
pub fn format_rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(DAY);
    let secs = unix.rem_euclid(DAY);
    let d = civil_from_days(days);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        d.year,
        d.month,
        d.day,
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// Parses an RFC 3339 timestamp (`2027-01-01T00:00:00Z`, `2027-01-01T05:30:00+05:30`,
/// fractional seconds allowed and truncated) into Unix seconds.
pub fn parse_rfc3339(text: &str) -> Result<i64, String> {
    let bad = || format!("`{text}` is not an RFC 3339 timestamp like 2027-01-01T00:00:00Z");
    let b = text.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let digits = b.get(from..from + len)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(
            digits
                .iter()
                .fold(0i64, |acc, c| acc * 10 + i64::from(c - b'0')),
        )
    };
    let sep = |at: usize, allowed: &[u8]| b.get(at).is_some_and(|c| allowed.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return Err(bad());
    }
    let (year, month, day) = (num(0, 4), num(5, 2), num(8, 2));
    let (hour, minute, second) = (num(11, 2), num(14, 2), num(17, 2));
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) =
        (year, month, day, hour, minute, second)
    else {
        return Err(bad());
    };
    let month = u32::try_from(month).map_err(|_| bad())?;
    let day = u32::try_from(day).map_err(|_| bad())?;
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(bad());
    }
    let mut at = 19;
    if sep(at, b".") {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            at += 1;
        }
        if at == start {
            return Err(bad());
        }
    }
    let offset = match b.get(at) {
        Some(b'Z' | b'z') if at + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if at + 6 == b.len() && sep(at + 3, b":") => {
            let (Some(oh), Some(om)) = (num(at + 1, 2), num(at + 4, 2)) else {
                return Err(bad());
            };
            if oh > 23 || om > 59 {
                return Err(bad());
            }
            let offset = oh * 3600 + om * 60;
            if *sign == b'-' {
                -offset
            } else {
                offset
            }
        }
        _ => return Err(bad()),
    };
    let second = second.min(59); // a leap second is the last second of its minute
    Ok(days_from_civil(year, month, day) * DAY + hour * 3600 + minute * 60 + second - offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trips_over_a_wide_range() {
        for days in (-800_000..800_000).step_by(7) {
            let d = civil_from_days(days);
            assert_eq!(days_from_civil(d.year, d.month, d.day), days, "{d:?}");
        }
    }

    #[test]
    fn known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(
            civil_from_days(19_782),
            Date {
                year: 2024,
                month: 2,
                day: 29
            }
        );
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_rfc3339(1_798_761_599), "2026-12-31T23:59:59Z");
        assert_eq!(format_rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn leap_years() {
        assert!(is_leap(2024) && is_leap(2000) && !is_leap(1900) && !is_leap(2026));
        assert_eq!(days_in_month(2024, 2), 29);
        assert_eq!(days_in_month(2100, 2), 28);
        assert_eq!(days_in_month(2026, 12), 31);
    }

    #[test]
    fn parses_rfc3339() {
        assert_eq!(parse_rfc3339("2027-01-01T00:00:00Z"), Ok(1_798_761_600));
        assert_eq!(parse_rfc3339("2027-01-01t00:00:00z"), Ok(1_798_761_600));
        assert_eq!(
            parse_rfc3339("2027-01-01T05:30:00+05:30"),
            Ok(1_798_761_600)
        );
        assert_eq!(
            parse_rfc3339("2026-12-31T19:00:00-05:00"),
            Ok(1_798_761_600)
        );
        assert_eq!(parse_rfc3339("2027-01-01T00:00:00.999Z"), Ok(1_798_761_600));
        assert_eq!(parse_rfc3339("2024-02-29T12:00:00Z"), Ok(1_709_208_000));
    }

    #[test]
    fn rejects_malformed_rfc3339() {
        for bad in [
            "",
            "2027-01-01",
            "2027-01-01T00:00:00",
            "2027-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2027-01-01T24:00:00Z",
            "2027-01-01T00:00:00+5:30",
            "2027-01-01T00:00:00.Z",
            "2027-01-01T00:00:00Zjunk",
            "２027-01-01T00:00:00Z",
            "+027-01-01T00:00:00Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_field_and_separator_of_rfc3339_is_checked() {
        const JAN1: i64 = 1_798_761_600; // 2027-01-01T00:00:00Z
        for (text, want) in [
            ("2027-01-01 00:00:00Z", Ok(JAN1)),
            ("2027-01-31T23:59:59Z", Ok(JAN1 + 31 * DAY - 1)),
            ("2027-01-31T23:59:60Z", Ok(JAN1 + 31 * DAY - 1)),
            ("2027-01-01T00:00:00.5+01:00", Ok(JAN1 - 3600)),
            ("2027-01-01T00:00:00.123456789Z", Ok(JAN1)),
            ("2027-01-01T23:59:00+23:59", Ok(JAN1)),
            ("2027-01-01T00:00:00-00:01", Ok(JAN1 + 60)),
            ("2027-01-01T00:00:00+00:00", Ok(JAN1)),
        ] {
            assert_eq!(parse_rfc3339(text), want, "{text}");
        }
        for bad in [
            "2027x01-01T00:00:00Z",
            "2027-01x01T00:00:00Z",
            "2027-01-01x00:00:00Z",
            "2027-01-01T00x00:00Z",
            "2027-01-01T00:00x00Z",
            "2027-00-01T00:00:00Z",
            "2027-01-00T00:00:00Z",
            "2027-01-32T00:00:00Z",
            "2027-04-31T00:00:00Z",
            "2027-01-01T00:60:00Z",
            "2027-01-01T00:00:61Z",
            "2027-01-01T0a:00:00Z",
            "2027-01-01T00:00:00+24:00",
            "2027-01-01T00:00:00+05:60",
            "2027-01-01T00:00:00+05-30",
            "2027-01-01T00:00:00+05:3",
            "2027-01-01T00:00:00+05:30x",
            "2027-01-01T00:00:00+0a:30",
            "2027-01-01T00:00:00+05:3a",
            "2027-01-01T00:00:00",
            "2027-01-01T00:00:00.",
            "2027-01-01T00:00:00.5",
            "2027-01-01T00:00:00Z ",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad} was accepted");
        }
    }
}
