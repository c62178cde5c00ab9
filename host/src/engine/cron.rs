//! Five-field cron expressions evaluated in an IANA time zone.
//!
//! Fields: minute (0–59), hour (0–23), day of month (1–31), month (1–12 or
//! `jan`–`dec`), day of week (0–7, 0 and 7 are Sunday, or `sun`–`sat`).
//! Each field takes `*`, a value, a range `a-b`, a list `a,b`, and steps
//! `*/n` or `a-b/n`. The macros `@hourly`, `@daily` (`@midnight`),
//! `@weekly`, `@monthly` and `@yearly` (`@annually`) stand for their usual
//! expansions. As in Vixie cron, when both day of month and day of week are
//! restricted, a day matching either fires.
//!
//! Daylight-saving changes follow the rules most cron implementations use:
//! - A wall-clock time that does not exist (skipped by a spring-forward
//!   change) fires once, at the change (02:30 in Europe/Oslo on the last
//!   Sunday of March fires at 03:00 local).
//! - A wall-clock time that occurs twice (repeated by a fall-back change)
//!   fires once, at its first occurrence — unless the hour field is `*`:
//!   such schedules count elapsed time ("every 15 minutes") and fire in
//!   both occurrences.
//!
//! Why not the `croner` crate: croner 4.0.3 (five fields, `sloppy_ranges`
//! for `5/20`) gives the same instants on every case the tests below pin,
//! DST included, but (1) its parse errors do not name the field ("Number
//! out of bounds." for `61 * * * *`), while the API's 422 does and
//! `bad_expressions_name_the_problem` and tests/schedules.rs pin that;
//! (2) it accepts `0 0 31 2 *` and fails only when searching for a tick;
//! (3) in a repeated hour it fires in both passes for any minute or hour
//! field that is not a single number (`0,30 2 * * *` fires four times on
//! the fall-back day), not only when the hour is `*`
//! (`a_minute_list_in_a_repeated_hour_fires_once_per_wall_time` pins
//! ours). Our parser for messages plus croner for the search would be two
//! parsers that must agree: more code, not less.

use chrono::{DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// A parsed cron expression with its time zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    /// Whether day of month / day of week were restricted (not `*`).
    days_restricted: bool,
    weekdays_restricted: bool,
    hours_wildcard: bool,
    tz: Tz,
}

/// How far ahead [`Cron::next_after`] looks before giving up: five years
/// covers every satisfiable expression (29 February needs four).
const HORIZON_DAYS: i64 = 5 * 366;

impl Cron {
    /// Parses `expression` for `timezone` (an IANA name such as
    /// `Europe/Oslo`). Errors name the field and the problem.
    pub fn parse(expression: &str, timezone: &str) -> Result<Self, String> {
        let tz: Tz = timezone.parse().map_err(|_| {
            format!("timezone {timezone:?} is not an IANA time zone name (such as \"Europe/Oslo\" or \"UTC\")")
        })?;
        let expanded = match expression.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other if other.starts_with('@') => {
                return Err(format!(
                    "unknown macro {other:?}: use @hourly, @daily, @weekly, @monthly or @yearly"
                ));
            }
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "cron {expression:?} has {} fields; expected 5: minute hour day-of-month month day-of-week",
                fields.len()
            ));
        }
        let minutes = field(fields[0], "minute", 0, 59, &[])?;
        let hours = field(fields[1], "hour", 0, 23, &[])?;
        let days = field(fields[2], "day-of-month", 1, 31, &[])?;
        let months = field(fields[3], "month", 1, 12, &MONTHS)?;
        let mut weekdays = field(fields[4], "day-of-week", 0, 7, &WEEKDAYS)?;
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1;
        }
        let cron = Self {
            minutes,
            hours: hours as u32,
            days: days as u32,
            months: months as u16,
            weekdays: (weekdays & 0x7f) as u8,
            days_restricted: fields[2] != "*",
            weekdays_restricted: fields[4] != "*",
            hours_wildcard: fields[1] == "*",
            tz,
        };
        if !cron.can_ever_fire() {
            return Err(format!("cron {expression:?} names a day that never occurs"));
        }
        Ok(cron)
    }

    /// The time zone the expression is evaluated in.
    pub fn timezone(&self) -> Tz {
        self.tz
    }

    /// The first time strictly after `after` at which the schedule fires.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Start a little before `after` in local time so that a repeated
        // (fall-back) hour is seen in full, then take the earliest instant
        // after `after` among whole days, checking one more day past the
        // first hit for zones whose changes straddle midnight.
        let local = after.with_timezone(&self.tz).naive_local() - Duration::hours(3);
        let mut day = local.date();
        let mut best: Option<DateTime<Utc>> = None;
        let mut extra_days = 1;
        for _ in 0..HORIZON_DAYS {
            if self.day_matches(day) {
                for hour in 0..24 {
                    if self.hours & (1 << hour) == 0 {
                        continue;
                    }
                    for minute in 0..60 {
                        if self.minutes & (1 << minute) == 0 {
                            continue;
                        }
                        let wall = day.and_hms_opt(hour, minute, 0).expect("valid time");
                        for instant in self.instants(wall) {
                            if instant > after && best.is_none_or(|b| instant < b) {
                                best = Some(instant);
                            }
                        }
                    }
                }
            }
            if best.is_some() {
                if extra_days == 0 {
                    break;
                }
                extra_days -= 1;
            }
            day = day.succ_opt()?;
        }
        best
    }

    /// The last time at or before `at` at which the schedule fires, looking
    /// back at most to `since` (exclusive).
    pub fn latest_at_or_before(
        &self,
        since: DateTime<Utc>,
        at: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        let mut latest = None;
        let mut cursor = since;
        // Bounded: one step per tick, and callers pass a window they mean.
        for _ in 0..1_000_000 {
            match self.next_after(cursor) {
                Some(t) if t <= at => {
                    latest = Some(t);
                    cursor = t;
                }
                _ => break,
            }
        }
        latest
    }

    /// The instants a wall-clock time maps to: one normally, none-but-the-
    /// change when skipped, one or two when repeated (see the module docs).
    fn instants(&self, wall: NaiveDateTime) -> Vec<DateTime<Utc>> {
        match self.tz.from_local_datetime(&wall) {
            LocalResult::Single(t) => vec![t.with_timezone(&Utc)],
            LocalResult::Ambiguous(first, second) => {
                if self.hours_wildcard {
                    vec![first.with_timezone(&Utc), second.with_timezone(&Utc)]
                } else {
                    vec![first.with_timezone(&Utc)]
                }
            }
            LocalResult::None => {
                // Skipped: the first wall-clock minute that exists again is
                // the change itself.
                (1..=24 * 60)
                    .map(|m| wall + Duration::minutes(m))
                    .find_map(|later| self.tz.from_local_datetime(&later).earliest())
                    .map(|t| t.with_timezone(&Utc))
                    .into_iter()
                    .collect()
            }
        }
    }

    fn day_matches(&self, day: NaiveDate) -> bool {
        if self.months & (1 << day.month()) == 0 {
            return false;
        }
        let dom = self.days & (1 << day.day()) != 0;
        let dow = self.weekdays & (1 << day.weekday().num_days_from_sunday()) != 0;
        match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => dom || dow,
            _ => dom && dow,
        }
    }

    /// False for expressions such as `0 0 31 2 *` that name no real day.
    fn can_ever_fire(&self) -> bool {
        if self.weekdays_restricted && self.days_restricted {
            return true;
        }
        const LONGEST: [u32; 13] = [0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
        (1..=12).any(|m| {
            self.months & (1 << m) != 0 && (1..=LONGEST[m]).any(|d| self.days & (1 << d) != 0)
        })
    }
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// Parses one field into a bit set of the values it allows.
fn field(text: &str, name: &str, min: u32, max: u32, names: &[&str]) -> Result<u64, String> {
    let value = |s: &str| -> Result<u32, String> {
        let lower = s.to_ascii_lowercase();
        if let Some(i) = names.iter().position(|n| *n == lower) {
            return Ok(i as u32 + min);
        }
        let v: u32 = s.parse().map_err(|_| {
            format!("{name} field {text:?}: {s:?} is not a number between {min} and {max}")
        })?;
        if v < min || v > max {
            return Err(format!("{name} field {text:?}: {v} is outside {min}–{max}"));
        }
        Ok(v)
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        if part.is_empty() {
            return Err(format!("{name} field {text:?} has an empty list item"));
        }
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                    format!("{name} field {text:?}: step {step:?} must be a positive number")
                })?;
                (range, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a)?, value(b)?);
            if a > b {
                return Err(format!(
                    "{name} field {text:?}: range {range:?} runs backwards"
                ));
            }
            (a, b)
        } else {
            let v = value(range)?;
            // `5/15` means 5, 20, 35, 50 as in most crons.
            (v, if part.contains('/') { max } else { v })
        };
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn next(cron: &str, tz: &str, after: &str) -> String {
        Cron::parse(cron, tz)
            .unwrap()
            .next_after(utc(after))
            .unwrap()
            .to_rfc3339()
    }

    fn series(cron: &str, tz: &str, after: &str, n: usize) -> Vec<String> {
        let cron = Cron::parse(cron, tz).unwrap();
        let mut t = utc(after);
        (0..n)
            .map(|_| {
                t = cron.next_after(t).unwrap();
                t.to_rfc3339()
            })
            .collect()
    }

    #[test]
    fn plain_expressions() {
        assert_eq!(
            next("* * * * *", "UTC", "2026-01-01T00:00:30Z"),
            "2026-01-01T00:01:00+00:00"
        );
        assert_eq!(
            next("0 9 * * *", "UTC", "2026-01-01T09:00:00Z"),
            "2026-01-02T09:00:00+00:00"
        );
        assert_eq!(
            next("*/15 * * * *", "UTC", "2026-01-01T10:07:00Z"),
            "2026-01-01T10:15:00+00:00"
        );
        assert_eq!(
            next("0 0 1 jan *", "UTC", "2026-06-01T00:00:00Z"),
            "2027-01-01T00:00:00+00:00"
        );
        assert_eq!(
            next("0 12 * * mon-fri", "UTC", "2026-11-21T00:00:00Z"),
            "2026-11-23T12:00:00+00:00"
        );
        assert_eq!(
            next("0 0 29 2 *", "UTC", "2026-03-01T00:00:00Z"),
            "2028-02-29T00:00:00+00:00"
        );
        assert_eq!(
            next("@daily", "UTC", "2026-01-01T00:00:00Z"),
            "2026-01-02T00:00:00+00:00"
        );
        assert_eq!(
            next("5/20 * * * *", "UTC", "2026-01-01T00:06:00Z"),
            "2026-01-01T00:25:00+00:00"
        );
        // Sunday as 7; either day rule when both are restricted.
        assert_eq!(
            next("0 0 * * 7", "UTC", "2026-11-23T00:00:00Z"),
            "2026-11-29T00:00:00+00:00"
        );
        assert_eq!(
            next("0 0 1 * 1", "UTC", "2026-11-23T00:00:00Z"),
            "2026-11-30T00:00:00+00:00"
        );
    }

    #[test]
    fn bad_expressions_name_the_problem() {
        let err = |c: &str| Cron::parse(c, "UTC").unwrap_err();
        assert!(err("* * * *").contains("4 fields"));
        assert!(err("61 * * * *").contains("minute"));
        assert!(err("* 24 * * *").contains("hour"));
        assert!(err("* * * foo *").contains("month"));
        assert!(err("*/0 * * * *").contains("step"));
        assert!(err("5-1 * * * *").contains("backwards"));
        assert!(err("0 0 31 2 *").contains("never"));
        assert!(err("@often").contains("macro"));
        assert!(
            Cron::parse("* * * * *", "Mars/Olympus")
                .unwrap_err()
                .contains("IANA")
        );
    }

    #[test]
    fn local_time_in_a_zone() {
        // 09:00 Oslo is 08:00Z in winter and 07:00Z in summer.
        assert_eq!(
            next("0 9 * * *", "Europe/Oslo", "2026-01-10T12:00:00Z"),
            "2026-01-11T08:00:00+00:00"
        );
        assert_eq!(
            next("0 9 * * *", "Europe/Oslo", "2026-07-10T12:00:00Z"),
            "2026-07-11T07:00:00+00:00"
        );
    }

    #[test]
    fn spring_forward_skipped_time_fires_once_at_the_change() {
        // Europe/Oslo, 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00Z).
        assert_eq!(
            series("30 2 * * *", "Europe/Oslo", "2026-03-27T12:00:00Z", 3),
            [
                "2026-03-28T01:30:00+00:00", // 02:30 CET
                "2026-03-29T01:00:00+00:00", // 02:30 does not exist: at the change
                "2026-03-30T00:30:00+00:00", // 02:30 CEST
            ]
        );
        // A daily time outside the gap keeps its wall-clock time.
        assert_eq!(
            series("0 9 * * *", "Europe/Oslo", "2026-03-28T12:00:00Z", 2),
            ["2026-03-29T07:00:00+00:00", "2026-03-30T07:00:00+00:00"]
        );
        // Every 30 minutes: the missing hour collapses into the change.
        assert_eq!(
            series("*/30 * * * *", "Europe/Oslo", "2026-03-29T00:15:00Z", 3),
            [
                "2026-03-29T00:30:00+00:00", // 01:30 CET
                "2026-03-29T01:00:00+00:00", // 03:00 CEST
                "2026-03-29T01:30:00+00:00", // 03:30 CEST
            ]
        );
    }

    #[test]
    fn fall_back_repeated_time_fires_once_unless_the_hour_is_wildcard() {
        // Europe/Oslo, 2026-10-25: 03:00 CEST falls back to 02:00 CET (01:00Z).
        assert_eq!(
            series("30 2 * * *", "Europe/Oslo", "2026-10-24T12:00:00Z", 2),
            [
                "2026-10-25T00:30:00+00:00", // first 02:30 (CEST) only
                "2026-10-26T01:30:00+00:00", // 02:30 CET next day
            ]
        );
        assert_eq!(
            series("*/30 * * * *", "Europe/Oslo", "2026-10-24T23:45:00Z", 5),
            [
                "2026-10-25T00:00:00+00:00", // 02:00 CEST
                "2026-10-25T00:30:00+00:00", // 02:30 CEST
                "2026-10-25T01:00:00+00:00", // 02:00 CET
                "2026-10-25T01:30:00+00:00", // 02:30 CET
                "2026-10-25T02:00:00+00:00", // 03:00 CET
            ]
        );
    }

    #[test]
    fn a_minute_list_in_a_repeated_hour_fires_once_per_wall_time() {
        // Europe/Oslo, 2026-10-25: 02:00 and 02:30 occur twice; a list in
        // the minute field is still a wall-clock time, fired once each.
        assert_eq!(
            series("0,30 2 * * *", "Europe/Oslo", "2026-10-24T12:00:00Z", 3),
            [
                "2026-10-25T00:00:00+00:00", // 02:00 CEST
                "2026-10-25T00:30:00+00:00", // 02:30 CEST
                "2026-10-26T01:00:00+00:00", // 02:00 CET next day
            ]
        );
    }

    #[test]
    fn latest_missed_tick() {
        let cron = Cron::parse("0 * * * *", "UTC").unwrap();
        let latest = cron
            .latest_at_or_before(utc("2026-01-01T00:00:00Z"), utc("2026-01-01T05:30:00Z"))
            .unwrap();
        assert_eq!(latest, utc("2026-01-01T05:00:00Z"));
        assert!(
            cron.latest_at_or_before(utc("2026-01-01T00:00:00Z"), utc("2026-01-01T00:30:00Z"))
                .is_none()
        );
    }
}
