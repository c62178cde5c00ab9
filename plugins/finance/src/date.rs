//! Calendar dates without a date library: parse `YYYY-MM-DD` (or the date
//! part of an RFC 3339 timestamp), find today's UTC date from the clock, and
//! count days and months.
//!
//! Day arithmetic goes through a day number (days since 1970-01-01) with
//! Howard Hinnant's `days_from_civil` / `civil_from_days`, so it is right
//! across months, leap years and centuries.

use std::fmt;

use serde_json::Value;

/// A proleptic Gregorian date, years 0 to 9999.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    year: i32,
    month: u32,
    day: u32,
}

fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(year) => 29,
        2 => 28,
        _ => 0,
    }
}

/// `text` as a number if it is all ASCII digits (no sign, no spaces).
fn digits<T: std::str::FromStr>(text: &str) -> Option<T> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

impl Date {
    /// A valid calendar date, or `None`.
    pub fn new(year: i32, month: u32, day: u32) -> Option<Self> {
        ((0..=9999).contains(&year)
            && (1..=12).contains(&month)
            && day >= 1
            && day <= days_in_month(year, month))
        .then_some(Self { year, month, day })
    }

    /// `YYYY-MM-DD`, or an RFC 3339 timestamp whose date part is taken as
    /// written (`2026-11-23T23:30:00-05:00` is 2026-11-23).
    pub fn parse(text: &str) -> Option<Self> {
        let date = text.get(..10)?;
        let rest = &text[10..];
        if !(rest.is_empty() || rest.starts_with(['T', 't', ' '])) {
            return None;
        }
        let b = date.as_bytes();
        if b[4] != b'-' || b[7] != b'-' {
            return None;
        }
        Self::new(
            digits(&date[..4])?,
            digits(&date[5..7])?,
            digits(&date[8..10])?,
        )
    }

    /// Today's date in UTC, from the WASI wall clock.
    pub fn today() -> Self {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        Self::from_day_number(secs.div_euclid(86_400))
    }

    pub fn year(self) -> i32 {
        self.year
    }

    pub fn month(self) -> u32 {
        self.month
    }

    pub fn day(self) -> u32 {
        self.day
    }

    /// `YYYY-MM-DD`.
    pub fn iso(self) -> String {
        self.to_string()
    }

    /// Days since 1970-01-01 (negative before).
    pub fn day_number(self) -> i64 {
        let y = i64::from(self.year) - i64::from(self.month <= 2);
        let m = i64::from(self.month);
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    /// The date `days` days since 1970-01-01.
    pub fn from_day_number(days: i64) -> Self {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let y = yoe + era * 400;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        Self {
            year: (if m <= 2 { y + 1 } else { y }) as i32,
            month: m as u32,
            day: d as u32,
        }
    }

    /// `days` later (earlier if negative).
    pub fn add_days(self, days: i64) -> Self {
        Self::from_day_number(self.day_number() + days)
    }

    /// Days from `earlier` to `self`: positive if `self` is later.
    pub fn days_since(self, earlier: Self) -> i64 {
        self.day_number() - earlier.day_number()
    }

    /// `months` later (earlier if negative); the day is clamped to the
    /// target month's length (January 31 + 1 month is February 28 or 29).
    pub fn add_months(self, months: i32) -> Self {
        let target = Month::of(self).add_months(months);
        let day = self.day.min(days_in_month(target.year, target.month));
        Self {
            year: target.year,
            month: target.month,
            day,
        }
    }

    /// The month this date falls in.
    pub fn month_period(self) -> Month {
        Month::of(self)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// The date a report or sweep is "as of": `as_of` from the step's config,
/// else from its input (so a workflow can pass one date to several steps),
/// else today (UTC). `null` counts as absent.
pub fn as_of(config: &Value, input: &Value) -> Result<Date, String> {
    let value = [config, input]
        .into_iter()
        .find_map(|v| v.get("as_of").filter(|v| !v.is_null()));
    match value {
        None => Ok(Date::today()),
        Some(Value::String(s)) => {
            Date::parse(s).ok_or_else(|| format!("as_of {s:?} is not a date (YYYY-MM-DD)"))
        }
        Some(other) => Err(format!("as_of must be a date string, found {other}")),
    }
}

/// A calendar month (`YYYY-MM`), the period of a recurring invoice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    year: i32,
    month: u32,
}

impl Month {
    /// `YYYY-MM`.
    pub fn parse(text: &str) -> Option<Self> {
        let (year, month) = text.split_once('-')?;
        if year.len() != 4 || month.len() != 2 {
            return None;
        }
        let (year, month) = (digits(year)?, digits(month)?);
        (1..=12).contains(&month).then_some(Self { year, month })
    }

    pub fn of(date: Date) -> Self {
        Self {
            year: date.year,
            month: date.month,
        }
    }

    pub fn first_day(self) -> Date {
        Date {
            year: self.year,
            month: self.month,
            day: 1,
        }
    }

    pub fn last_day(self) -> Date {
        Date {
            year: self.year,
            month: self.month,
            day: days_in_month(self.year, self.month),
        }
    }

    /// `months` later (earlier if negative).
    pub fn add_months(self, months: i32) -> Self {
        let index = i64::from(self.year) * 12 + i64::from(self.month) - 1 + i64::from(months);
        Self {
            year: index.div_euclid(12) as i32,
            month: index.rem_euclid(12) as u32 + 1,
        }
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(text: &str) -> Date {
        Date::parse(text).unwrap()
    }

    #[test]
    fn parses_dates_and_timestamps() {
        assert_eq!(date("2024-02-29").iso(), "2024-02-29");
        assert_eq!(date("2026-11-23T09:00:00Z").iso(), "2026-11-23");
        for bad in [
            "2023-02-29",
            "2026-13-01",
            "2026-1-01",
            "20260101",
            "2026-01-01x",
            "+202-01-01",
            "2026-01-+1",
            "",
        ] {
            assert_eq!(Date::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn day_numbers_round_trip() {
        for (text, n) in [
            ("1970-01-01", 0),
            ("2024-02-29", 19_782),
            ("2025-11-23", 20_415),
            ("1969-12-31", -1),
            ("2000-03-01", 11_017),
        ] {
            assert_eq!(date(text).day_number(), n, "{text}");
            assert_eq!(Date::from_day_number(n).iso(), text);
        }
    }

    #[test]
    fn adds_and_counts_days() {
        assert_eq!(date("2024-02-28").add_days(1).iso(), "2024-02-29");
        assert_eq!(date("2026-12-25").add_days(14).iso(), "2027-01-08");
        assert_eq!(date("2026-03-01").add_days(-1).iso(), "2026-02-28");
        assert_eq!(date("2026-03-10").days_since(date("2026-02-08")), 30);
        assert_eq!(date("2026-02-08").days_since(date("2026-03-10")), -30);
    }

    #[test]
    fn adds_months_clamping_the_day() {
        assert_eq!(date("2026-01-31").add_months(1).iso(), "2026-02-28");
        assert_eq!(date("2024-01-31").add_months(1).iso(), "2024-02-29");
        assert_eq!(date("2026-11-15").add_months(3).iso(), "2027-02-15");
        assert_eq!(date("2026-01-15").add_months(-1).iso(), "2025-12-15");
    }

    #[test]
    fn as_of_comes_from_config_then_input() {
        use serde_json::json;
        let config = json!({"as_of": "2026-03-10"});
        let input = json!({"as_of": "2026-01-01"});
        assert_eq!(as_of(&config, &input).unwrap().iso(), "2026-03-10");
        assert_eq!(
            as_of(&json!({"as_of": null}), &input).unwrap().iso(),
            "2026-01-01"
        );
        assert_eq!(as_of(&Value::Null, &Value::Null).unwrap(), Date::today());
        assert!(
            as_of(&json!({"as_of": "soon"}), &input)
                .unwrap_err()
                .contains("as_of \"soon\"")
        );
        assert!(
            as_of(&json!({"as_of": 5}), &input)
                .unwrap_err()
                .contains("found 5")
        );
    }

    #[test]
    fn months_parse_and_bound_their_days() {
        let feb = Month::parse("2024-02").unwrap();
        assert_eq!(feb.to_string(), "2024-02");
        assert_eq!(feb.first_day().iso(), "2024-02-01");
        assert_eq!(feb.last_day().iso(), "2024-02-29");
        assert_eq!(feb.add_months(11).to_string(), "2025-01");
        assert_eq!(feb.add_months(-2).to_string(), "2023-12");
        assert_eq!(date("2026-07-19").month_period().to_string(), "2026-07");
        for bad in ["2024-2", "2024-13", "2024-00", "24-02", "2024-02-01", ""] {
            assert_eq!(Month::parse(bad), None, "{bad}");
        }
    }
}
