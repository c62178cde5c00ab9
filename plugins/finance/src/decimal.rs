//! Exact decimal amounts for money: an `i128` count of millionths.
//!
//! Six fractional digits are below the minor unit of every currency, so
//! sums and differences are exact. Only [`Decimal::checked_mul`] (quantity ×
//! unit price) can produce more digits; it rounds to six, half away from
//! zero.

use std::fmt;
use std::iter::Sum;
use std::ops::{Add, AddAssign, Neg, Sub, SubAssign};

use serde_json::Value;

const SCALE: i128 = 1_000_000;
const DIGITS: usize = 6;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Decimal(i128);

impl Decimal {
    pub const ZERO: Self = Self(0);

    /// Parses `-123.45`, `7`, `0.000001`; more than six fractional digits,
    /// exponents, a leading `+` or anything else is `None`.
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

    /// An amount stored as a JSON number or a decimal string. Numbers are
    /// read from their text (the workspace enables serde_json's
    /// `arbitrary_precision`), so `0.1` stays exactly `0.1`.
    pub fn from_json(value: &Value) -> Option<Self> {
        match value {
            Value::Number(n) => Self::parse(&n.to_string()),
            Value::String(s) => Self::parse(s),
            _ => None,
        }
    }

    /// `self × other` rounded to six fractional digits, half away from
    /// zero; `None` on overflow.
    pub fn checked_mul(self, other: Self) -> Option<Self> {
        let product = self.0.checked_mul(other.0)?;
        let quotient = product / SCALE;
        let remainder = product % SCALE;
        let round = if remainder.abs() * 2 >= SCALE {
            product.signum()
        } else {
            0
        };
        Some(Self(quotient + round))
    }

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub fn is_negative(self) -> bool {
        self.0 < 0
    }

    pub fn is_positive(self) -> bool {
        self.0 > 0
    }

    /// For people: at least two fractional digits (`1200.50`, `0.125`).
    /// JSON output uses [`Display`](fmt::Display) (`1200.5`), which is
    /// what the other plugins write.
    pub fn money(self) -> String {
        let plain = self.to_string();
        match plain.split_once('.') {
            None => format!("{plain}.00"),
            Some((_, frac)) if frac.len() == 1 => format!("{plain}0"),
            Some(_) => plain,
        }
    }
}

impl Add for Decimal {
    type Output = Self;
    fn add(self, rhs: Self) -> Self {
        Self(self.0 + rhs.0)
    }
}

impl AddAssign for Decimal {
    fn add_assign(&mut self, rhs: Self) {
        self.0 += rhs.0;
    }
}

impl Sub for Decimal {
    type Output = Self;
    fn sub(self, rhs: Self) -> Self {
        Self(self.0 - rhs.0)
    }
}

impl SubAssign for Decimal {
    fn sub_assign(&mut self, rhs: Self) {
        self.0 -= rhs.0;
    }
}

impl Neg for Decimal {
    type Output = Self;
    fn neg(self) -> Self {
        Self(-self.0)
    }
}

impl Sum for Decimal {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::ZERO, Add::add)
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
    use serde_json::json;

    fn d(text: &str) -> Decimal {
        Decimal::parse(text).unwrap()
    }

    #[test]
    fn parse_and_print_round_trip() {
        for (text, printed) in [
            ("0", "0"),
            ("1.50", "1.5"),
            ("-2.000001", "-2.000001"),
            ("12", "12"),
            (" 7.25 ", "7.25"),
        ] {
            assert_eq!(d(text).to_string(), printed);
        }
        for bad in ["", "1.2345678", "1e3", "abc", ".5", "1.2.3", "+1", "-"] {
            assert_eq!(Decimal::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn sums_and_differences_are_exact() {
        let total: Decimal = std::iter::repeat_n(d("0.1"), 10).sum();
        assert_eq!(total.to_string(), "1");
        assert_eq!((d("0.3") - d("0.1") - d("0.2")).to_string(), "0");
        assert_eq!((-d("1.5")).to_string(), "-1.5");
    }

    #[test]
    fn reads_json_numbers_from_their_text() {
        assert_eq!(Decimal::from_json(&json!(100.5)), Some(d("100.5")));
        assert_eq!(Decimal::from_json(&json!("20.25")), Some(d("20.25")));
        let precise: Value = serde_json::from_str("0.1").unwrap();
        assert_eq!(Decimal::from_json(&precise), Some(d("0.1")));
        assert_eq!(Decimal::from_json(&json!(null)), None);
        assert_eq!(Decimal::from_json(&json!("lots")), None);
    }

    #[test]
    fn multiplication_rounds_half_away_from_zero_to_six_digits() {
        let cases = [
            ("3", "19.99", "59.97"),
            ("1.5", "0.333333", "0.5"),
            ("0.000001", "0.5", "0.000001"),
            ("-0.000001", "0.5", "-0.000001"),
            ("0.000001", "0.4", "0"),
            ("2", "-4.25", "-8.5"),
        ];
        for (a, b, product) in cases {
            assert_eq!(
                d(a).checked_mul(d(b)).unwrap().to_string(),
                product,
                "{a} × {b}"
            );
        }
        let huge = d("999999999999999999999999");
        assert_eq!(huge.checked_mul(huge), None);
    }

    #[test]
    fn money_shows_at_least_two_digits() {
        for (text, money) in [
            ("1200.5", "1200.50"),
            ("3", "3.00"),
            ("0.125", "0.125"),
            ("-2", "-2.00"),
        ] {
            assert_eq!(d(text).money(), money);
        }
    }
}
