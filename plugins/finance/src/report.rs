//! Pieces of report output the summary plugins share: totals kept per
//! currency, and counted nouns for the plain-text summaries.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::Decimal;

/// Amounts per currency code, kept apart: EUR is never added to USD.
/// Iterates in code order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PerCurrency(BTreeMap<String, Decimal>);

impl PerCurrency {
    pub fn add(&mut self, currency: &str, amount: Decimal) {
        *self.0.entry(currency.to_owned()).or_default() += amount;
    }

    /// The total in `currency`; zero if there is none.
    pub fn get(&self, currency: &str) -> Decimal {
        self.0.get(currency).copied().unwrap_or_default()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, Decimal)> {
        self.0.iter().map(|(c, a)| (c.as_str(), *a))
    }

    /// `{"EUR": "1200.5", "USD": "80"}`: decimal strings by code.
    pub fn to_json(&self) -> Value {
        let map: Map<String, Value> = self
            .0
            .iter()
            .map(|(c, a)| (c.clone(), Value::String(a.to_string())))
            .collect();
        Value::Object(map)
    }

    /// `1200.50 EUR, 80.00 USD`, or `0.00` when empty.
    pub fn describe(&self) -> String {
        if self.0.is_empty() {
            return Decimal::ZERO.money();
        }
        self.0
            .iter()
            .map(|(c, a)| format!("{} {c}", a.money()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `1 invoice`, `3 invoices`; `noun` is the singular and gets an `s`.
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_currencies_apart() {
        let mut totals = PerCurrency::default();
        assert_eq!(totals.describe(), "0.00");
        totals.add("USD", Decimal::parse("80").unwrap());
        totals.add("EUR", Decimal::parse("1000.25").unwrap());
        totals.add("EUR", Decimal::parse("200.25").unwrap());
        assert_eq!(totals.get("EUR").to_string(), "1200.5");
        assert_eq!(totals.get("GBP"), Decimal::ZERO);
        assert_eq!(totals.to_json(), json!({"EUR": "1200.5", "USD": "80"}));
        assert_eq!(totals.describe(), "1200.50 EUR, 80.00 USD");
        assert_eq!(
            totals.iter().map(|(c, _)| c).collect::<Vec<_>>(),
            ["EUR", "USD"]
        );
    }

    #[test]
    fn counts_nouns() {
        assert_eq!(count(0, "invoice"), "0 invoices");
        assert_eq!(count(1, "invoice"), "1 invoice");
        assert_eq!(count(2, "payment"), "2 payments");
    }
}
