//! Fixed quota windows: which window a timestamp falls in, and when it ends.
//!
//! Calendar windows (`day`, `week`, `month`) follow the calendar at a fixed UTC offset (UTC by
//! default, `calendar_utc_offset` otherwise): a week starts on Monday, a month is the calendar
//! month. Fixed-length windows (`second`, `minute`, `hour`, `<n>s`, `<n>m`, `<n>h`, `<n>d`) are
//! aligned to multiples of their length since the Unix epoch, whatever the offset.

use std::cell::Cell;

use crate::time::{civil_from_days, days_from_civil, DAY};

/// Longest fixed-length window accepted: 366 days (longer periods are what `month` is for).
pub const MAX_FIXED_SECONDS: i64 = 366 * DAY;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// A fixed length in seconds, aligned to the epoch.
    Fixed(i64),
    /// A calendar day, 00:00 to 00:00.
    Day,
    /// Monday 00:00 to the next Monday.
    Week,
    /// The 1st of a month 00:00 to the 1st of the next.
    Month,
}

/// The window containing an instant: `[start, end)` in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub start: i64,
    pub end: i64,
}

impl Window {
    /// Parses `second|minute|hour|day|week|month` or `<n>s|<n>m|<n>h|<n>d`.
    pub fn parse(text: &str) -> Result<Window, String> {
        let fixed = |seconds: i64| Ok(Window::Fixed(seconds));
        match text {
            "second" => return fixed(1),
            "minute" => return fixed(60),
            "hour" => return fixed(3600),
            "day" => return Ok(Window::Day),
            "week" => return Ok(Window::Week),
            "month" => return Ok(Window::Month),
            _ => {}
        }
        let bad = || {
            format!(
                "`{text}` is not a window: use second, minute, hour, day, week, month, \
                 or <n>s, <n>m, <n>h, <n>d with n > 0"
            )
        };
        let seconds = crate::duration::parse_seconds(text).ok_or_else(bad)?;
        if seconds <= 0 {
            return Err(bad());
        }
        if seconds > MAX_FIXED_SECONDS {
            return Err(format!(
                "window `{text}` is longer than 366 days; use `month` for calendar periods"
            ));
        }
        Ok(Window::Fixed(seconds))
    }

    /// One spelling per window, for names that must agree however the window was written
    /// (quotad's Redis keys: `1d`, `24h`, `86400s` and `01d` are one counter). The named
    /// lengths keep their names (`second`, `minute`, `hour`), calendar windows theirs; another
    /// fixed length is written in its largest whole unit (`1d`, `2h`, `90s`).
    pub fn canonical(self) -> String {
        match self {
            Window::Fixed(1) => "second".into(),
            Window::Fixed(60) => "minute".into(),
            Window::Fixed(3600) => "hour".into(),
            Window::Fixed(seconds) => {
                let units = [(DAY, 'd'), (3600, 'h'), (60, 'm')];
                match units.iter().find(|(len, _)| seconds % len == 0) {
                    Some((len, unit)) => format!("{}{unit}", seconds / len),
                    None => format!("{seconds}s"),
                }
            }
            Window::Day => "day".into(),
            Window::Week => "week".into(),
            Window::Month => "month".into(),
        }
    }

    /// The window that contains `now` (Unix seconds), for calendar windows on the calendar
    /// `utc_offset` seconds east of UTC.
    pub fn bounds(self, now: i64, utc_offset: i64) -> Bounds {
        if let Window::Fixed(len) = self {
            let len = len.max(1);
            let start = now - now.rem_euclid(len);
            return Bounds {
                start,
                end: start.saturating_add(len),
            };
        }
        let local = now + utc_offset;
        let days = local.div_euclid(DAY);
        let (start_day, end_day) = match self {
            Window::Week => {
                // 1970-01-01 was a Thursday: Monday-based weekday is (days + 3) mod 7.
                let monday = days - (days + 3).rem_euclid(7);
                (monday, monday + 7)
            }
            Window::Month => month_of(days),
            Window::Day | Window::Fixed(_) => (days, days + 1),
        };
        Bounds {
            start: start_day * DAY - utc_offset,
            end: end_day * DAY - utc_offset,
        }
    }
}

thread_local! {
    /// The last day asked for and its month (first day, first day of the next): every request
    /// of a day asks for the same month, and the calendar arithmetic is the costliest part of
    /// a monthly limit's evaluation.
    static LAST_MONTH: Cell<(i64, i64, i64)> = const { Cell::new((i64::MIN, 0, 0)) };
}

/// The month containing day `days` (days since the epoch): its first day and the next
/// month's first day.
fn month_of(days: i64) -> (i64, i64) {
    let (day, start, end) = LAST_MONTH.with(Cell::get);
    if day == days {
        return (start, end);
    }
    let date = civil_from_days(days);
    let (next_year, next_month) = if date.month == 12 {
        (date.year + 1, 1)
    } else {
        (date.year, date.month + 1)
    };
    let month = (
        days_from_civil(date.year, date.month, 1),
        days_from_civil(next_year, next_month, 1),
    );
    LAST_MONTH.with(|last| last.set((days, month.0, month.1)));
    month
}

impl Bounds {
    /// Whole seconds from `now` until the window resets (at least 1 while `now` is inside).
    pub fn seconds_to_reset(&self, now: i64) -> i64 {
        (self.end - now).max(1)
    }

    pub fn seconds(&self) -> i64 {
        self.end - self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_a_window_has_one_canonical_form_that_parses_back() {
        for (spellings, canonical) in [
            (&["1d", "24h", "86400s", "01d", "1440m"][..], "1d"),
            (&["second", "1s"][..], "second"),
            (&["minute", "60s", "1m"][..], "minute"),
            (&["hour", "60m", "3600s", "1h"][..], "hour"),
            (&["2h", "120m", "7200s"][..], "2h"),
            (&["90s"][..], "90s"),
            (&["10m", "600s"][..], "10m"),
            (&["7d", "168h"][..], "7d"),
            (&["day"][..], "day"),
            (&["week"][..], "week"),
            (&["month"][..], "month"),
        ] {
            for text in spellings {
                let window = Window::parse(text).unwrap();
                assert_eq!(window.canonical(), canonical, "{text}");
                assert_eq!(Window::parse(canonical).unwrap(), window, "{text}");
            }
        }
    }
    use crate::time::parse_rfc3339;

    fn at(text: &str) -> i64 {
        parse_rfc3339(text).unwrap()
    }

    #[test]
    fn parses_names_and_counts() {
        assert_eq!(Window::parse("second"), Ok(Window::Fixed(1)));
        assert_eq!(Window::parse("minute"), Ok(Window::Fixed(60)));
        assert_eq!(Window::parse("hour"), Ok(Window::Fixed(3600)));
        assert_eq!(Window::parse("day"), Ok(Window::Day));
        assert_eq!(Window::parse("week"), Ok(Window::Week));
        assert_eq!(Window::parse("month"), Ok(Window::Month));
        assert_eq!(Window::parse("1s"), Ok(Window::Fixed(1)));
        assert_eq!(Window::parse("90s"), Ok(Window::Fixed(90)));
        assert_eq!(Window::parse("15m"), Ok(Window::Fixed(900)));
        assert_eq!(Window::parse("12h"), Ok(Window::Fixed(43_200)));
        assert_eq!(Window::parse("7d"), Ok(Window::Fixed(604_800)));
        assert_eq!(Window::parse("366d"), Ok(Window::Fixed(366 * 86_400)));
    }

    #[test]
    fn rejects_bad_windows() {
        for bad in [
            "",
            "s",
            "0s",
            "-1s",
            "+1s",
            "1",
            "1w",
            "1M",
            "1.5h",
            "day ",
            " 1s",
            "Day",
            "1 s",
            "367d",
            "99999999999999999999s",
            "9223372036854775807d",
            "１s",
        ] {
            assert!(Window::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn fixed_windows_align_to_the_epoch() {
        let w = Window::Fixed(60);
        let b = w.bounds(at("2026-11-25T13:17:42Z"), 0);
        assert_eq!(b.start, at("2026-11-25T13:17:00Z"));
        assert_eq!(b.end, at("2026-11-25T13:18:00Z"));
        // The last second of a window is still in it; the next one starts the next window.
        assert_eq!(w.bounds(b.end - 1, 0), b);
        assert_eq!(w.bounds(b.end, 0).start, b.end);
        assert_eq!(b.seconds_to_reset(b.end - 1), 1);
        let days = Window::Fixed(7 * DAY).bounds(at("2026-11-25T13:00:00Z"), 0);
        assert_eq!(days.start % (7 * DAY), 0);
        assert!(days.start <= at("2026-11-25T13:00:00Z") && days.end > at("2026-11-25T13:00:00Z"));
    }

    #[test]
    fn days_are_utc_calendar_days() {
        let b = Window::Day.bounds(at("2026-11-25T23:59:59Z"), 0);
        assert_eq!(b.start, at("2026-11-25T00:00:00Z"));
        assert_eq!(b.end, at("2026-11-26T00:00:00Z"));
    }

    #[test]
    fn weeks_start_on_monday() {
        // 2026-11-25 is a Wednesday; its week starts Monday 2026-11-23.
        let b = Window::Week.bounds(at("2026-11-25T10:00:00Z"), 0);
        assert_eq!(b.start, at("2026-11-23T00:00:00Z"));
        assert_eq!(b.end, at("2026-11-30T00:00:00Z"));
        // Sunday's last second belongs to the week that started the Monday before.
        assert_eq!(Window::Week.bounds(at("2026-11-29T23:59:59Z"), 0), b);
        assert_eq!(
            Window::Week.bounds(at("2026-11-30T00:00:00Z"), 0).start,
            b.end
        );
        // A week across a year boundary: 2026-12-28 (Mon) to 2027-01-04.
        let y = Window::Week.bounds(at("2027-01-01T00:00:00Z"), 0);
        assert_eq!(y.start, at("2026-12-28T00:00:00Z"));
        assert_eq!(y.end, at("2027-01-04T00:00:00Z"));
        // Before the epoch too.
        let old = Window::Week.bounds(at("1969-12-31T12:00:00Z"), 0);
        assert_eq!(old.start, at("1969-12-29T00:00:00Z"));
    }

    #[test]
    fn months_are_calendar_months() {
        let cases = [
            (
                "2026-11-25T13:00:00Z",
                "2026-11-01T00:00:00Z",
                "2026-12-01T00:00:00Z",
            ),
            (
                "2026-12-31T23:59:59Z",
                "2026-12-01T00:00:00Z",
                "2027-01-01T00:00:00Z",
            ),
            (
                "2027-01-01T00:00:00Z",
                "2027-01-01T00:00:00Z",
                "2027-02-01T00:00:00Z",
            ),
            (
                "2024-02-29T23:59:59Z",
                "2024-02-01T00:00:00Z",
                "2024-03-01T00:00:00Z",
            ),
            (
                "2026-02-28T23:59:59Z",
                "2026-02-01T00:00:00Z",
                "2026-03-01T00:00:00Z",
            ),
            (
                "2100-02-28T12:00:00Z",
                "2100-02-01T00:00:00Z",
                "2100-03-01T00:00:00Z",
            ),
            (
                "2000-02-29T12:00:00Z",
                "2000-02-01T00:00:00Z",
                "2000-03-01T00:00:00Z",
            ),
            (
                "2026-04-30T23:59:59Z",
                "2026-04-01T00:00:00Z",
                "2026-05-01T00:00:00Z",
            ),
        ];
        for (now, start, end) in cases {
            let b = Window::Month.bounds(at(now), 0);
            assert_eq!((b.start, b.end), (at(start), at(end)), "{now}");
        }
        assert_eq!(
            Window::Month
                .bounds(at("2024-02-10T00:00:00Z"), 0)
                .seconds(),
            29 * DAY
        );
    }

    #[test]
    fn calendar_offsets_move_day_week_and_month_boundaries() {
        let ist = 5 * 3600 + 30 * 60; // +05:30
                                      // 2026-11-25T20:00Z is 2026-11-26T01:30 in India: its day started at 18:30Z.
        let d = Window::Day.bounds(at("2026-11-25T20:00:00Z"), ist);
        assert_eq!(
            (d.start, d.end),
            (at("2026-11-25T18:30:00Z"), at("2026-11-26T18:30:00Z"))
        );
        let pst = -8 * 3600;
        let m = Window::Month.bounds(at("2026-12-01T03:00:00Z"), pst);
        assert_eq!(
            (m.start, m.end),
            (at("2026-11-01T08:00:00Z"), at("2026-12-01T08:00:00Z"))
        );
        let w = Window::Week.bounds(at("2026-11-29T20:00:00Z"), ist); // Monday 01:30 local
        assert_eq!(w.start, at("2026-11-29T18:30:00Z"));
        // Fixed windows ignore the offset.
        assert_eq!(
            Window::Fixed(3600)
                .bounds(at("2026-11-25T20:10:00Z"), ist)
                .start,
            at("2026-11-25T20:00:00Z")
        );
    }

    #[test]
    fn extreme_timestamps_do_not_overflow() {
        for now in [i64::MIN / 4, -1, 0, 1, i64::MAX / 4] {
            for w in [
                Window::Fixed(1),
                Window::Fixed(MAX_FIXED_SECONDS),
                Window::Week,
                Window::Month,
            ] {
                let b = w.bounds(now, 0);
                assert!(b.start <= now && now < b.end, "{w:?} {now}");
            }
        }
    }
}
