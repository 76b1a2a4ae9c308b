//! Durations written in the configuration and in descriptors: `<n><unit>`, where `n` is 1 to
//! 9 ASCII digits and the unit follows at once. One grammar for every field that takes one
//! (windows, `store.rls.timeout`, `events.interval`, `events.reminders`,
//! `entitlements.refresh` and `.timeout`); each field then checks its own range.

use crate::time::DAY;

/// The count and the unit of `<n><unit>`: `None` when the text does not start with 1 to 9
/// ASCII digits followed by a unit.
fn count_and_unit(text: &str) -> Option<(u64, &str)> {
    let at = text.find(|c: char| !c.is_ascii_digit())?;
    let (digits, unit) = (text.get(..at)?, text.get(at..)?);
    if digits.is_empty() || digits.len() > 9 {
        return None;
    }
    Some((digits.parse().ok()?, unit))
}

/// `<n>s`, `<n>m`, `<n>h` or `<n>d`, in seconds (the unit of windows and of the clock).
pub fn parse_seconds(text: &str) -> Option<i64> {
    let (count, unit) = count_and_unit(text)?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => DAY,
        _ => return None,
    };
    i64::try_from(count).ok()?.checked_mul(scale)
}

/// `<n>ms`, or any form [`parse_seconds`] reads, in milliseconds.
pub fn parse_ms(text: &str) -> Option<u64> {
    match count_and_unit(text)? {
        (count, "ms") => Some(count),
        _ => u64::try_from(parse_seconds(text)?).ok()?.checked_mul(1000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_and_milliseconds() {
        assert_eq!(parse_seconds("1s"), Some(1));
        assert_eq!(parse_seconds("90s"), Some(90));
        assert_eq!(parse_seconds("15m"), Some(900));
        assert_eq!(parse_seconds("12h"), Some(43_200));
        assert_eq!(parse_seconds("7d"), Some(604_800));
        assert_eq!(parse_seconds("0s"), Some(0)); // a field's range decides whether 0 is one
        assert_eq!(parse_seconds("999999999d"), Some(999_999_999 * 86_400));
        assert_eq!(parse_ms("500ms"), Some(500));
        assert_eq!(parse_ms("10s"), Some(10_000));
        assert_eq!(parse_ms("5m"), Some(300_000));
        assert_eq!(parse_ms("1h"), Some(3_600_000));
        assert_eq!(parse_ms("1d"), Some(86_400_000));
    }

    #[test]
    fn anything_else_is_not_a_duration() {
        for bad in [
            "",
            "s",
            "ms",
            "10",
            "1.5s",
            "-1s",
            "+1s",
            "10 s",
            " 1s",
            "1s ",
            "1w",
            "1M",
            "1S",
            "10ms5",
            "1sm",
            "１s",
            "1000000000s",
            "99999999999999999999s",
        ] {
            assert_eq!(parse_ms(bad), None, "{bad}");
            assert_eq!(parse_seconds(bad), None, "{bad}");
        }
        assert_eq!(parse_seconds("500ms"), None, "seconds take no ms");
    }
}
