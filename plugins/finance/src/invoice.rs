//! The invoice record every invoicing plugin reads: one JSON object per
//! invoice at `invoices/<id>` in the tenant's key-value store.
//!
//! | field            | type                         | read as |
//! |------------------|------------------------------|---------|
//! | `amount`         | number or decimal string     | the amount owed, exact ([`Decimal`]) — required |
//! | `due_date`       | `YYYY-MM-DD` (or RFC 3339)   | required |
//! | `status`         | string                       | case-insensitive; missing means `open` |
//! | `currency`       | ISO 4217 code                | upper-cased; missing means [`NO_CURRENCY`] |
//! | `customer`       | string                       | optional display name |
//! | `customer_email` | string                       | optional; where reminders go |
//!
//! Statuses in [`SETTLED`] owe nothing; every other status (`open`,
//! `overdue`, `sent`, `partial`, anything a tenant invents) is owed.
//! Plugins keep the fields they do not know when they write a record back.

use serde_json::Value;

use crate::{Date, Decimal};

/// Key prefix of invoice records.
pub const PREFIX: &str = "invoices/";

/// Statuses for which nothing is owed.
pub const SETTLED: [&str; 4] = ["paid", "void", "cancelled", "draft"];

/// ISO 4217's code for "no currency", used for records without one so
/// their amounts are still reported, but never added to a real currency.
pub const NO_CURRENCY: &str = "XXX";

/// The key of invoice `id`.
pub fn key(id: &str) -> String {
    format!("{PREFIX}{id}")
}

/// A currency field as a code: trimmed and upper-cased, [`NO_CURRENCY`]
/// when missing or blank.
pub fn currency_code(value: &Value) -> String {
    match value.as_str().map(str::trim) {
        Some(code) if !code.is_empty() => code.to_ascii_uppercase(),
        _ => NO_CURRENCY.to_owned(),
    }
}

/// What the plugins need from an invoice record, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoice {
    /// Lower-cased; `open` when the record has none.
    pub status: String,
    pub amount: Decimal,
    pub due_date: Date,
    pub currency: String,
    pub customer: Option<String>,
    pub customer_email: Option<String>,
}

impl Invoice {
    /// Reads a record; the error names the field that is wrong.
    pub fn from_json(record: &Value) -> Result<Self, String> {
        if !record.is_object() {
            return Err(format!("record is not a JSON object: {record}"));
        }
        let amount = Decimal::from_json(&record["amount"]).ok_or_else(|| {
            format!(
                "amount {} is not a decimal number (at most six decimal places)",
                record["amount"]
            )
        })?;
        let due_date = record["due_date"]
            .as_str()
            .and_then(Date::parse)
            .ok_or_else(|| format!("due_date {} is not a date (YYYY-MM-DD)", record["due_date"]))?;
        let text = |field: &str| {
            record[field]
                .as_str()
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        Ok(Self {
            status: text("status").map_or_else(|| "open".to_owned(), |s| s.to_ascii_lowercase()),
            amount,
            due_date,
            currency: currency_code(&record["currency"]),
            customer: text("customer"),
            customer_email: text("customer_email"),
        })
    }

    /// Whether anything is owed on it.
    pub fn is_owed(&self) -> bool {
        !SETTLED.contains(&self.status.as_str())
    }

    /// Days past due as of `as_of`: positive when overdue, 0 on the due
    /// date, negative before it.
    pub fn days_overdue(&self, as_of: Date) -> i64 {
        as_of.days_since(self.due_date)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_a_record_with_defaults() {
        let invoice = Invoice::from_json(&json!({
            "amount": "120.50", "due_date": "2026-03-01", "currency": " eur ",
            "customer": "Acme", "customer_email": "ap@acme.test", "extra": true
        }))
        .unwrap();
        assert_eq!(invoice.status, "open");
        assert_eq!(invoice.amount.to_string(), "120.5");
        assert_eq!(invoice.currency, "EUR");
        assert_eq!(invoice.customer.as_deref(), Some("Acme"));
        assert!(invoice.is_owed());
        assert_eq!(invoice.days_overdue(Date::parse("2026-03-11").unwrap()), 10);

        let bare = Invoice::from_json(
            &json!({"amount": 5, "due_date": "2026-03-01", "status": "PAID", "customer": " "}),
        )
        .unwrap();
        assert_eq!(bare.currency, NO_CURRENCY);
        assert_eq!(bare.customer, None);
        assert!(!bare.is_owed());
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                json!({"amount": "lots", "due_date": "2026-03-01"}),
                "amount \"lots\"",
            ),
            (
                json!({"amount": 1.2345678, "due_date": "2026-03-01"}),
                "amount 1.2345678",
            ),
            (
                json!({"amount": 1, "due_date": "soon"}),
                "due_date \"soon\"",
            ),
            (json!({"amount": 1}), "due_date null"),
            (json!([1]), "not a JSON object"),
        ];
        for (record, expected) in cases {
            let e = Invoice::from_json(&record).unwrap_err();
            assert!(e.contains(expected), "{e}");
        }
    }

    #[test]
    fn keys_and_currency_codes() {
        assert_eq!(key("acme-2026-03"), "invoices/acme-2026-03");
        assert_eq!(currency_code(&json!("usd")), "USD");
        assert_eq!(currency_code(&json!(null)), "XXX");
        assert_eq!(currency_code(&json!("")), "XXX");
    }
}
