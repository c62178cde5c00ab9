//! `payments_summary`: totals of the payments received in a time window:
//! how many succeeded, failed or were refunded, the amounts per currency
//! and per payment method, and a plain-text `summary` ready to be an email
//! or notification body. A summary step: the host expects it to feed a
//! delivery step.
//!
//! # Data
//!
//! Reads every `payments/<id>` record in the bucket (the tenant's default
//! unless `bucket` is set); nothing is written. A record:
//!
//! ```json
//! {"amount": "120.50", "currency": "EUR", "method": "card", "status": "succeeded",
//!  "received_at": "2026-03-07T14:02:00Z", "invoice_id": "acme-2026-03", "customer": "Acme"}
//! ```
//!
//! - `amount`: number or decimal string (at most six decimal places),
//!   required; the refunded amount for a `refunded` payment.
//! - `currency`: ISO 4217 code, upper-cased; missing counts under `XXX`.
//! - `status`: `succeeded`, `failed` or `refunded` (case-insensitive);
//!   anything else (`pending`, missing) is counted in `count` and
//!   `other_count` only.
//! - `method`: `card`, `sepa`, … as the tenant names them, lower-cased;
//!   missing is `unknown`.
//! - `received_at`: RFC 3339 timestamp or `YYYY-MM-DD` (midnight UTC),
//!   required; `since` (inclusive) and `until` (exclusive; a plain date
//!   includes that whole day) filter on it.
//! - `invoice_id`, `customer`: optional, not used in the totals.
//!
//! Totals are exact decimal strings by currency (`{"EUR": "1200.5"}`);
//! currencies are never added together. `by_method` breaks down the
//! succeeded payments. Unreadable records are listed under `skipped`.

use std::collections::BTreeMap;

use weft_finance::invoice::currency_code;
use weft_finance::report::count;
use weft_finance::{Decimal, PerCurrency, Timestamp, Window};
use weft_sdk::config::Fields;
use weft_sdk::kv::Bucket;
use weft_sdk::{Plugin, PluginInfo, StepContext, StepError, Value, export_plugin, host, json};

const FIELDS: [&str; 3] = ["since", "until", "bucket"];
const PREFIX: &str = "payments/";

struct PaymentsSummary;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Succeeded,
    Failed,
    Refunded,
    Other,
}

/// One payment record, read.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Payment {
    amount: Decimal,
    currency: String,
    method: String,
    status: Status,
    received_at: Timestamp,
}

impl Payment {
    /// Reads a record; the error names the field that is wrong.
    fn read(record: &Value) -> Result<Self, String> {
        if !record.is_object() {
            return Err(format!("not a JSON object: {record}"));
        }
        let amount = Decimal::from_json(&record["amount"]).ok_or_else(|| {
            format!(
                "amount {} is not a decimal number (at most six decimal places)",
                record["amount"]
            )
        })?;
        let received_at = record["received_at"]
            .as_str()
            .and_then(Timestamp::parse)
            .ok_or_else(|| {
                format!(
                    "received_at {} is not a date or RFC 3339 timestamp",
                    record["received_at"]
                )
            })?;
        let status = match record["status"]
            .as_str()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("succeeded") => Status::Succeeded,
            Some("failed") => Status::Failed,
            Some("refunded") => Status::Refunded,
            _ => Status::Other,
        };
        let method = match record["method"].as_str().map(str::trim) {
            Some(m) if !m.is_empty() => m.to_ascii_lowercase(),
            _ => "unknown".to_owned(),
        };
        Ok(Self {
            amount,
            currency: currency_code(&record["currency"]),
            method,
            status,
            received_at,
        })
    }
}

/// Succeeded payments of one method.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct MethodTotals {
    count: usize,
    totals: PerCurrency,
}

/// The summary, built one record at a time.
#[derive(Debug, Default)]
struct Summary {
    window: Window,
    count: usize,
    succeeded: MethodTotals,
    failed_count: usize,
    refunded: MethodTotals,
    other_count: usize,
    by_method: BTreeMap<String, MethodTotals>,
    skipped: Vec<(String, String)>,
}

impl Summary {
    fn new(window: Window) -> Self {
        Self {
            window,
            ..Self::default()
        }
    }

    /// Counts one record if it is in the window, or lists it as skipped.
    fn add(&mut self, id: &str, record: Result<&Value, &str>) {
        let payment = match record.map_err(str::to_owned).and_then(Payment::read) {
            Ok(p) => p,
            Err(reason) => {
                self.skipped.push((id.to_owned(), reason));
                return;
            }
        };
        if !self.window.contains(payment.received_at) {
            return;
        }
        self.count += 1;
        match payment.status {
            Status::Succeeded => {
                self.succeeded.count += 1;
                self.succeeded.totals.add(&payment.currency, payment.amount);
                let method = self.by_method.entry(payment.method).or_default();
                method.count += 1;
                method.totals.add(&payment.currency, payment.amount);
            }
            Status::Refunded => {
                self.refunded.count += 1;
                self.refunded.totals.add(&payment.currency, payment.amount);
            }
            Status::Failed => self.failed_count += 1,
            Status::Other => self.other_count += 1,
        }
    }

    fn into_json(self) -> Value {
        let group = |m: &MethodTotals| json!({"count": m.count, "totals": m.totals.to_json()});
        let by_method: serde_json::Map<String, Value> = self
            .by_method
            .iter()
            .map(|(name, m)| (name.clone(), group(m)))
            .collect();
        let skipped: Vec<Value> = self
            .skipped
            .iter()
            .map(|(id, reason)| json!({"payment_id": id, "reason": reason}))
            .collect();
        json!({
            "window": {
                "since": self.window.since.map(|t| t.to_string()),
                "until": self.window.until.map(|t| t.to_string()),
            },
            "count": self.count,
            "succeeded": group(&self.succeeded),
            "failed_count": self.failed_count,
            "refunded": group(&self.refunded),
            "other_count": self.other_count,
            "by_method": by_method,
            "skipped": skipped,
            "summary": self.text(),
        })
    }

    /// Plain text for an email or notification body.
    fn text(&self) -> String {
        let window = self.window.describe();
        if self.count == 0 {
            let mut text = format!("No payments ({window}).");
            self.skipped_line(&mut text);
            return text;
        }
        let mut lines = vec![format!(
            "Payments ({window}): {}.",
            count(self.count, "payment")
        )];
        lines.push(format!(
            "Succeeded: {}, {}.",
            self.succeeded.count,
            self.succeeded.totals.describe()
        ));
        let mut rest = vec![format!("Failed: {}.", self.failed_count)];
        if self.refunded.count > 0 {
            rest.push(format!(
                "Refunded: {}, {}.",
                self.refunded.count,
                self.refunded.totals.describe()
            ));
        } else {
            rest.push("Refunded: 0.".to_owned());
        }
        if self.other_count > 0 {
            rest.push(format!("Other status: {}.", self.other_count));
        }
        lines.push(rest.join(" "));
        if !self.by_method.is_empty() {
            let methods: Vec<String> = self
                .by_method
                .iter()
                .map(|(name, m)| format!("{name} {} ({})", m.count, m.totals.describe()))
                .collect();
            lines.push(format!("By method: {}.", methods.join("; ")));
        }
        let mut text = lines.join("\n");
        self.skipped_line(&mut text);
        text
    }

    fn skipped_line(&self, text: &mut String) {
        if !self.skipped.is_empty() {
            let n = self.skipped.len();
            text.push_str(&format!(
                "\n{} could not be read and {} left out.",
                count(n, "payment record"),
                if n == 1 { "is" } else { "are" }
            ));
        }
    }
}

impl Plugin for PaymentsSummary {
    fn describe() -> PluginInfo {
        let group = json!({
            "type": "object",
            "required": ["count", "totals"],
            "properties": {
                "count": {"type": "integer"},
                "totals": {"type": "object", "additionalProperties": {"type": "string"}, "description": "Exact decimal total by currency code"}
            }
        });
        PluginInfo::new(
            "payments_summary",
            env!("CARGO_PKG_VERSION"),
            "Summarises payments in a time window: succeeded, failed and refunded, totals per currency and method, with a plain-text summary.",
        )
        .config_schema(json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "since": {"type": ["string", "null"], "description": "Inclusive lower bound on received_at: RFC 3339 timestamp or YYYY-MM-DD"},
                "until": {"type": ["string", "null"], "description": "Exclusive upper bound on received_at; a YYYY-MM-DD includes that whole day"},
                "bucket": {"type": ["string", "null"], "description": "Key-value bucket holding payments/<id>; default the tenant's default bucket"}
            }
        }))
        .output_schema(json!({
            "x-weft-role": "summary",
            "type": "object",
            "required": ["count", "succeeded", "failed_count", "refunded", "by_method", "summary"],
            "properties": {
                "window": {"type": "object", "properties": {"since": {"type": ["string", "null"]}, "until": {"type": ["string", "null"], "description": "Exclusive"}}},
                "count": {"type": "integer", "description": "Payments in the window, every status"},
                "succeeded": group,
                "failed_count": {"type": "integer"},
                "refunded": group,
                "other_count": {"type": "integer", "description": "Payments with another status (pending, missing)"},
                "by_method": {"type": "object", "additionalProperties": group, "description": "Succeeded payments by method"},
                "skipped": {"type": "array", "items": {"type": "object", "properties": {"payment_id": {"type": "string"}, "reason": {"type": "string"}}}},
                "summary": {"type": "string", "description": "Plain-text report for an email or notification body"}
            }
        }))
        .capability("kv")
    }

    fn run(_ctx: &StepContext, config: Value, _input: Value) -> Result<Value, StepError> {
        let fields = Fields::of(&config, "");
        fields.only(&FIELDS)?;
        let window = Window::parse(fields.str("since")?, fields.str("until")?)
            .map_err(StepError::invalid_input)?;
        let bucket = Bucket::named_or_default(fields.str("bucket")?)?;
        let records = bucket.json_with_prefix(PREFIX)?;
        let mut summary = Summary::new(window);
        for (i, (key, record)) in records.iter().enumerate() {
            if i % 100 == 0 {
                host::progress((i * 100 / records.len()) as u8, "reading payments");
            }
            summary.add(
                &key[PREFIX.len()..],
                record.as_ref().map_err(String::as_str),
            );
        }
        host::progress(100, "done");
        host::info(&format!(
            "{}: {} payments, {} skipped",
            window.describe(),
            summary.count,
            summary.skipped.len()
        ));
        Ok(summary.into_json())
    }
}

export_plugin!(PaymentsSummary);

#[cfg(test)]
mod tests {
    use super::*;

    fn pay(amount: Value, currency: &str, method: &str, status: &str, at: &str) -> Value {
        json!({"amount": amount, "currency": currency, "method": method, "status": status, "received_at": at})
    }

    fn summary(since: Option<&str>, until: Option<&str>, records: &[Value]) -> Value {
        let mut s = Summary::new(Window::parse(since, until).unwrap());
        for (i, r) in records.iter().enumerate() {
            s.add(&i.to_string(), Ok(r));
        }
        s.into_json()
    }

    #[test]
    fn totals_by_status_currency_and_method() {
        let out = summary(
            Some("2026-03-01"),
            Some("2026-03-31"),
            &[
                pay(
                    json!("100.10"),
                    "EUR",
                    "Card",
                    "succeeded",
                    "2026-03-02T10:00:00Z",
                ),
                pay(json!(0.2), "eur", "card", "SUCCEEDED", "2026-03-31"),
                pay(
                    json!("50"),
                    "USD",
                    "sepa",
                    "succeeded",
                    "2026-03-15T08:00:00+01:00",
                ),
                pay(json!("70"), "EUR", "card", "failed", "2026-03-03"),
                pay(json!("20"), "EUR", "card", "refunded", "2026-03-04"),
                pay(json!("5"), "EUR", "card", "pending", "2026-03-05"),
                pay(
                    json!("999"),
                    "EUR",
                    "card",
                    "succeeded",
                    "2026-04-01T00:00:00Z",
                ),
                pay(
                    json!("999"),
                    "EUR",
                    "card",
                    "succeeded",
                    "2026-02-28T23:59:59Z",
                ),
            ],
        );
        assert_eq!(out["count"], 6);
        assert_eq!(
            out["succeeded"],
            json!({"count": 3, "totals": {"EUR": "100.3", "USD": "50"}})
        );
        assert_eq!(out["failed_count"], 1);
        assert_eq!(
            out["refunded"],
            json!({"count": 1, "totals": {"EUR": "20"}})
        );
        assert_eq!(out["other_count"], 1);
        assert_eq!(
            out["by_method"],
            json!({"card": {"count": 2, "totals": {"EUR": "100.3"}}, "sepa": {"count": 1, "totals": {"USD": "50"}}})
        );
        assert_eq!(out["window"]["since"], "2026-03-01T00:00:00Z");
        assert_eq!(
            out["summary"],
            "Payments (from 2026-03-01 to 2026-03-31): 6 payments.\n\
             Succeeded: 3, 100.30 EUR, 50.00 USD.\n\
             Failed: 1. Refunded: 1, 20.00 EUR. Other status: 1.\n\
             By method: card 2 (100.30 EUR); sepa 1 (50.00 USD)."
        );
    }

    #[test]
    fn unreadable_records_are_skipped_with_the_field_at_fault() {
        let mut s = Summary::new(Window::default());
        s.add(
            "a",
            Ok(&pay(json!("ten"), "EUR", "card", "succeeded", "2026-03-01")),
        );
        s.add(
            "b",
            Ok(&pay(json!("10"), "EUR", "card", "succeeded", "March 1st")),
        );
        s.add("c", Err("not JSON: eof"));
        s.add("d", Ok(&json!({"amount": 1, "received_at": "2026-03-01"})));
        let out = s.into_json();
        assert_eq!(out["count"], 1);
        assert_eq!(out["other_count"], 1);
        let reasons: Vec<&str> = out["skipped"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["reason"].as_str().unwrap())
            .collect();
        assert!(reasons[0].starts_with("amount \"ten\""));
        assert!(reasons[1].starts_with("received_at \"March 1st\""));
        assert_eq!(reasons[2], "not JSON: eof");
        assert!(
            out["summary"]
                .as_str()
                .unwrap()
                .ends_with("\n3 payment records could not be read and are left out.")
        );
    }

    #[test]
    fn no_payments_is_a_short_report() {
        let out = summary(Some("2026-03-01"), None, &[]);
        assert_eq!(out["count"], 0);
        assert_eq!(out["succeeded"], json!({"count": 0, "totals": {}}));
        assert_eq!(out["summary"], "No payments (since 2026-03-01).");
    }

    #[test]
    fn missing_method_and_currency_have_names() {
        let out = summary(
            None,
            None,
            &[json!({"amount": "3", "status": "succeeded", "received_at": "2026-03-01"})],
        );
        assert_eq!(
            out["by_method"],
            json!({"unknown": {"count": 1, "totals": {"XXX": "3"}}})
        );
    }

    #[test]
    fn describe_declares_the_summary_role() {
        let info: weft_sdk::bindings::weft::plugin::types::PluginInfo =
            PaymentsSummary::describe().into();
        let schema: Value = serde_json::from_str(&info.output_schema).unwrap();
        assert_eq!(schema["x-weft-role"], "summary");
        assert_eq!(info.capabilities, ["kv"]);
    }
}
