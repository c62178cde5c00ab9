//! Points in time from RFC 3339 timestamps or plain dates, and the
//! `since`/`until` windows reports filter on.
//!
//! A plain date is midnight UTC. A window is half-open, `since <= t <
//! until`, except that an `until` given as a plain date includes that whole
//! day: `until: "2026-03-31"` means up to 2026-04-01T00:00:00Z, exclusive.

use std::fmt;

use crate::Date;

/// Milliseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

const MS_PER_DAY: i64 = 86_400_000;

impl Timestamp {
    /// `YYYY-MM-DD` (midnight UTC) or an RFC 3339 timestamp:
    /// `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`. A timestamp without an
    /// offset is taken as UTC; `t` and a space work as the separator.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let date = Date::parse(text)?;
        let midnight = date.day_number() * MS_PER_DAY;
        if text.len() == 10 {
            return Some(Self(midnight));
        }
        let rest = &text[11..];
        let time = rest.get(..8)?;
        let t = time.as_bytes();
        if t[2] != b':' || t[5] != b':' {
            return None;
        }
        let number = |s: &str| -> Option<i64> {
            s.bytes()
                .all(|b| b.is_ascii_digit())
                .then(|| s.parse().ok())?
        };
        let (h, m, s) = (
            number(&time[..2])?,
            number(&time[3..5])?,
            number(&time[6..8])?,
        );
        if h > 23 || m > 59 || s > 60 {
            return None;
        }
        let mut rest = &rest[8..];
        let mut millis = 0;
        if let Some(frac) = rest.strip_prefix('.') {
            let len = frac.bytes().take_while(u8::is_ascii_digit).count();
            if len == 0 {
                return None;
            }
            let first3 = format!("{:0<3}", &frac[..len.min(3)]);
            millis = number(&first3)?;
            rest = &frac[len..];
        }
        let offset_minutes = match rest {
            "" | "Z" | "z" => 0,
            _ => {
                let sign = match rest.as_bytes()[0] {
                    b'+' => 1,
                    b'-' => -1,
                    _ => return None,
                };
                let offset = &rest[1..];
                if offset.len() != 5 || offset.as_bytes()[2] != b':' {
                    return None;
                }
                let (oh, om) = (number(&offset[..2])?, number(&offset[3..])?);
                if oh > 23 || om > 59 {
                    return None;
                }
                sign * (oh * 60 + om)
            }
        };
        let local = midnight + ((h * 60 + m) * 60 + s) * 1000 + millis;
        Some(Self(local - offset_minutes * 60_000))
    }

    /// Midnight UTC at the start of `date`.
    pub fn start_of(date: Date) -> Self {
        Self(date.day_number() * MS_PER_DAY)
    }

    /// The UTC date this instant falls on.
    pub fn date(self) -> Date {
        Date::from_day_number(self.0.div_euclid(MS_PER_DAY))
    }

    pub fn millis(self) -> i64 {
        self.0
    }
}

/// RFC 3339 in UTC: `2026-03-07T14:02:00Z`, with `.mmm` when not whole.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.rem_euclid(MS_PER_DAY);
        let (h, m, s, milli) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
        write!(f, "{}T{h:02}:{m:02}:{s:02}", self.date())?;
        if milli != 0 {
            write!(f, ".{milli:03}")?;
        }
        f.write_str("Z")
    }
}

/// The `since`/`until` filter of a report; either end may be open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    /// Inclusive lower bound.
    pub since: Option<Timestamp>,
    /// Exclusive upper bound (a plain-date `until` already moved to the
    /// next midnight).
    pub until: Option<Timestamp>,
}

impl Window {
    /// Reads the two bounds; the error names the field that is wrong.
    pub fn parse(since: Option<&str>, until: Option<&str>) -> Result<Self, String> {
        let bound = |field: &str, text: &str| {
            Timestamp::parse(text).ok_or_else(|| {
                format!("{field} {text:?} is not a date (YYYY-MM-DD) or an RFC 3339 timestamp")
            })
        };
        let since = since.map(|s| bound("since", s)).transpose()?;
        let until = until
            .map(|text| {
                let at = bound("until", text)?;
                Ok::<_, String>(if text.trim().len() == 10 {
                    Timestamp(at.0 + MS_PER_DAY)
                } else {
                    at
                })
            })
            .transpose()?;
        if let (Some(s), Some(u)) = (since, until)
            && u <= s
        {
            return Err("until must be later than since".to_owned());
        }
        Ok(Self { since, until })
    }

    pub fn contains(&self, at: Timestamp) -> bool {
        self.since.is_none_or(|s| at >= s) && self.until.is_none_or(|u| at < u)
    }

    pub fn is_open(&self) -> bool {
        self.since.is_none() && self.until.is_none()
    }

    /// For report text: `from 2026-03-01 to 2026-03-31`, `since …`,
    /// `until …`, or `all time`. Whole-day bounds print as dates.
    pub fn describe(&self) -> String {
        let show = |t: Timestamp| {
            if t.0.rem_euclid(MS_PER_DAY) == 0 {
                t.date().iso()
            } else {
                t.to_string()
            }
        };
        // The exclusive end of a whole-day window reads better as its last day.
        let last = |u: Timestamp| {
            if u.0.rem_euclid(MS_PER_DAY) == 0 {
                Timestamp(u.0 - MS_PER_DAY).date().iso()
            } else {
                format!("before {u}")
            }
        };
        match (self.since, self.until) {
            (None, None) => "all time".to_owned(),
            (Some(s), None) => format!("since {}", show(s)),
            (None, Some(u)) => format!("until {}", last(u)),
            (Some(s), Some(u)) => format!("from {} to {}", show(s), last(u)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        Timestamp::parse(text).unwrap_or_else(|| panic!("{text}"))
    }

    #[test]
    fn parses_rfc3339_and_dates_to_utc() {
        let cases = [
            ("2026-03-07", "2026-03-07T00:00:00Z"),
            ("2026-03-07T14:02:00Z", "2026-03-07T14:02:00Z"),
            ("2026-03-07t14:02:00z", "2026-03-07T14:02:00Z"),
            ("2026-03-07 14:02:00", "2026-03-07T14:02:00Z"),
            ("2026-03-07T14:02:00.5+01:00", "2026-03-07T13:02:00.500Z"),
            ("2026-03-07T23:30:00-05:00", "2026-03-08T04:30:00Z"),
            (
                "2026-03-07T00:15:00.123456+02:00",
                "2026-03-06T22:15:00.123Z",
            ),
        ];
        for (text, utc) in cases {
            assert_eq!(ts(text).to_string(), utc, "{text}");
        }
        for bad in [
            "2026-03-07T",
            "2026-03-07T25:00:00Z",
            "2026-03-07T14:02Z",
            "2026-03-07T14:02:00+0100",
            "2026-03-07T14:02:00.Z",
            "2026-03-07T14:02:00 UTC",
            "yesterday",
        ] {
            assert_eq!(Timestamp::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn orders_instants_across_offsets() {
        assert!(ts("2026-03-07T10:00:00+02:00") < ts("2026-03-07T09:00:00Z"));
        assert_eq!(ts("2026-03-08T01:00:00+02:00").date().iso(), "2026-03-07");
    }

    #[test]
    fn a_date_until_includes_the_whole_day() {
        let w = Window::parse(Some("2026-03-01"), Some("2026-03-31")).unwrap();
        assert!(!w.contains(ts("2026-02-28T23:59:59Z")));
        assert!(w.contains(ts("2026-03-01T00:00:00Z")));
        assert!(w.contains(ts("2026-03-31T23:59:59Z")));
        assert!(!w.contains(ts("2026-04-01T00:00:00Z")));
        assert_eq!(w.describe(), "from 2026-03-01 to 2026-03-31");

        let w = Window::parse(None, Some("2026-03-31T12:00:00Z")).unwrap();
        assert!(w.contains(ts("2026-03-31T11:59:59Z")));
        assert!(!w.contains(ts("2026-03-31T12:00:00Z")));
        assert_eq!(w.describe(), "until before 2026-03-31T12:00:00Z");
        assert_eq!(Window::default().describe(), "all time");
        assert!(Window::default().is_open());
    }

    #[test]
    fn window_errors_name_the_field() {
        assert!(
            Window::parse(Some("soon"), None)
                .unwrap_err()
                .starts_with("since")
        );
        assert!(
            Window::parse(None, Some("later"))
                .unwrap_err()
                .starts_with("until")
        );
        let e = Window::parse(Some("2026-03-02"), Some("2026-03-01")).unwrap_err();
        assert!(e.contains("later than since"), "{e}");
    }
}
