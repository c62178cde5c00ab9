//! Exact decimal sums for money: an i128 count of millionths.

use std::fmt;
use std::ops::AddAssign;

const SCALE: i128 = 1_000_000;
const DIGITS: usize = 6;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Decimal(i128);

impl Decimal {
    /// Parses `-123.45`, `7`, `0.000001`; more than six fractional digits,
    /// exponents or anything else is `None`.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let (negative, digits) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
        if whole.is_empty() || frac.len() > DIGITS || whole.len() > 24 {
            return None;
        }
        if !whole
            .bytes()
            .chain(frac.bytes())
            .all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let whole: i128 = whole.parse().ok()?;
        let frac_value: i128 = if frac.is_empty() {
            0
        } else {
            frac.parse().ok()?
        };
        let frac_scaled = frac_value * 10_i128.pow((DIGITS - frac.len()) as u32);
        let value = whole * SCALE + frac_scaled;
        Some(Self(if negative { -value } else { value }))
    }
}

impl AddAssign for Decimal {
    fn add_assign(&mut self, rhs: Self) {
        self.0 += rhs.0;
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let whole = abs / SCALE as u128;
        let frac = abs % SCALE as u128;
        if frac == 0 {
            return write!(f, "{sign}{whole}");
        }
        let frac = format!("{frac:06}");
        write!(f, "{sign}{whole}.{}", frac.trim_end_matches('0'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_print_round_trip() {
        for (text, printed) in [
            ("0", "0"),
            ("1.50", "1.5"),
            ("-2.000001", "-2.000001"),
            ("12", "12"),
        ] {
            assert_eq!(Decimal::parse(text).unwrap().to_string(), printed);
        }
        for bad in ["", "1.2345678", "1e3", "abc", ".5", "1.2.3"] {
            assert_eq!(Decimal::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn sums_are_exact() {
        let mut total = Decimal::default();
        for _ in 0..10 {
            total += Decimal::parse("0.1").unwrap();
        }
        assert_eq!(total.to_string(), "1");
    }
}
