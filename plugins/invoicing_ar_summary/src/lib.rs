//! `invoicing_ar_summary`: an accounts-receivable report over the tenant's
//! invoices: what is open, what is overdue, how old it is, and who owes
//! most, with a plain-text `summary` ready to be an email or notification
//! body. A summary step: the host expects it to feed a delivery step.
//!
//! # Data
//!
//! Reads every `invoices/<id>` record in the bucket (the tenant's default
//! unless `bucket` is set), in the layout of `weft_finance::invoice`.
//! Nothing is written.
//!
//! - **Open**: the status is owed (anything but `paid`, `void`, `cancelled`,
//!   `draft`).
//! - **Overdue**: open and `due_date` before `as_of` (config, else input,
//!   else today UTC). Dates decide, not the `overdue` status, so a report
//!   as of a past date is right.
//! - **Aging** of open amounts by days past due: `current` (not yet due or
//!   due on `as_of`), `days_1_30`, `days_31_60`, `days_61_90`, `over_90`.
//! - **Top debtors**: open amount per `customer` (missing: `(no
//!   customer)`), the `top` largest per currency.
//!
//! Amounts are exact decimal strings. Currencies are never added together:
//! when every open invoice has the same currency (or none is open),
//! `currency` is that code (or `null`) and each amount field is a string;
//! with several, `currency` is `null` and each amount field is an object
//! `{"EUR": "…", "USD": "…"}`. `currencies` always lists the codes. An
//! invoice without a currency counts under `XXX`. Unreadable records are
//! listed under `skipped` and left out of the figures.

use std::collections::BTreeMap;

use weft_finance::invoice::{self, Invoice};
use weft_finance::report::count;
use weft_finance::{Date, Decimal};
use weft_sdk::config::Fields;
use weft_sdk::kv::Bucket;
use weft_sdk::{Plugin, PluginInfo, StepContext, StepError, Value, export_plugin, host, json};

const FIELDS: [&str; 3] = ["as_of", "bucket", "top"];
/// Aging bucket names, in order, and the last day past due each holds.
const AGING: [(&str, &str, i64); 5] = [
    ("current", "current", 0),
    ("days_1_30", "1-30 days", 30),
    ("days_31_60", "31-60 days", 60),
    ("days_61_90", "61-90 days", 90),
    ("over_90", "over 90 days", i64::MAX),
];
const NO_CUSTOMER: &str = "(no customer)";

struct InvoicingArSummary;

/// Open invoices of one currency.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Totals {
    open_count: usize,
    open_amount: Decimal,
    overdue_count: usize,
    overdue_amount: Decimal,
    /// Open amounts by [`AGING`] bucket.
    aging: [Decimal; 5],
}

/// What one customer owes in one currency.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Debt {
    amount: Decimal,
    invoices: usize,
}

/// The report, built one record at a time.
#[derive(Debug)]
struct Ledger {
    as_of: Date,
    by_currency: BTreeMap<String, Totals>,
    /// By (currency, customer).
    debtors: BTreeMap<(String, String), Debt>,
    checked: usize,
    skipped: Vec<(String, String)>,
}

impl Ledger {
    fn new(as_of: Date) -> Self {
        Self {
            as_of,
            by_currency: BTreeMap::new(),
            debtors: BTreeMap::new(),
            checked: 0,
            skipped: Vec::new(),
        }
    }

    /// Counts one record, or lists it as skipped with the reason.
    fn add(&mut self, id: &str, record: Result<&Value, &str>) {
        let invoice = match record.map_err(str::to_owned).and_then(Invoice::from_json) {
            Ok(invoice) => invoice,
            Err(reason) => {
                self.skipped.push((id.to_owned(), reason));
                return;
            }
        };
        self.checked += 1;
        if !invoice.is_owed() {
            return;
        }
        let days = invoice.days_overdue(self.as_of);
        let totals = self
            .by_currency
            .entry(invoice.currency.clone())
            .or_default();
        totals.open_count += 1;
        totals.open_amount += invoice.amount;
        if days >= 1 {
            totals.overdue_count += 1;
            totals.overdue_amount += invoice.amount;
        }
        let bucket = AGING
            .iter()
            .position(|(_, _, max)| days <= *max)
            .unwrap_or(4);
        totals.aging[bucket] += invoice.amount;
        let customer = invoice.customer.unwrap_or_else(|| NO_CUSTOMER.to_owned());
        let debt = self
            .debtors
            .entry((invoice.currency, customer))
            .or_default();
        debt.amount += invoice.amount;
        debt.invoices += 1;
    }

    /// The single currency of the open invoices, if there are not several.
    fn single_currency(&self) -> Option<Option<&str>> {
        match self.by_currency.len() {
            0 => Some(None),
            1 => self.by_currency.keys().next().map(|c| Some(c.as_str())),
            _ => None,
        }
    }

    /// An amount field: a string in the single currency, else an object by
    /// currency.
    fn amount(&self, pick: impl Fn(&Totals) -> Decimal) -> Value {
        if self.single_currency().is_some() {
            let amount = self
                .by_currency
                .values()
                .next()
                .map(&pick)
                .unwrap_or_default();
            return json!(amount.to_string());
        }
        let map: serde_json::Map<String, Value> = self
            .by_currency
            .iter()
            .map(|(c, t)| (c.clone(), json!(pick(t).to_string())))
            .collect();
        Value::Object(map)
    }

    /// The `top` largest positive debts per currency, largest first.
    fn top_debtors(&self, top: usize) -> Vec<(&str, &str, &Debt)> {
        let mut all: Vec<_> = self
            .debtors
            .iter()
            .filter(|(_, d)| d.amount.is_positive())
            .map(|((currency, customer), d)| (currency.as_str(), customer.as_str(), d))
            .collect();
        all.sort_by(|a, b| {
            a.0.cmp(b.0)
                .then(b.2.amount.cmp(&a.2.amount))
                .then(a.1.cmp(b.1))
        });
        let mut per_currency: BTreeMap<&str, usize> = BTreeMap::new();
        all.retain(|(currency, _, _)| {
            let n = per_currency.entry(currency).or_default();
            *n += 1;
            *n <= top
        });
        all
    }

    fn into_json(self, top: usize) -> Value {
        let sum = |pick: fn(&Totals) -> usize| self.by_currency.values().map(pick).sum::<usize>();
        let aging: serde_json::Map<String, Value> = AGING
            .iter()
            .enumerate()
            .map(|(i, (name, _, _))| ((*name).to_owned(), self.amount(|t| t.aging[i])))
            .collect();
        let top_debtors: Vec<Value> = self
            .top_debtors(top)
            .into_iter()
            .map(|(currency, customer, d)| {
                json!({"customer": customer, "currency": currency, "amount": d.amount.to_string(), "invoices": d.invoices})
            })
            .collect();
        let skipped: Vec<Value> = self
            .skipped
            .iter()
            .map(|(id, reason)| json!({"invoice_id": id, "reason": reason}))
            .collect();
        json!({
            "as_of": self.as_of.iso(),
            "currency": self.single_currency().flatten(),
            "currencies": self.by_currency.keys().collect::<Vec<_>>(),
            "open_count": sum(|t| t.open_count),
            "open_amount": self.amount(|t| t.open_amount),
            "overdue_count": sum(|t| t.overdue_count),
            "overdue_amount": self.amount(|t| t.overdue_amount),
            "aging": aging,
            "top_debtors": top_debtors,
            "checked": self.checked,
            "skipped": skipped,
            "summary": self.summary(top),
        })
    }

    /// Plain text for an email or notification body.
    fn summary(&self, top: usize) -> String {
        let mut lines = vec![format!("Accounts receivable as of {}", self.as_of)];
        let open: usize = self.by_currency.values().map(|t| t.open_count).sum();
        if open == 0 {
            lines.push("No open invoices.".to_owned());
        } else {
            let figures = |count_of: fn(&Totals) -> usize, amount_of: fn(&Totals) -> Decimal| {
                let n: usize = self.by_currency.values().map(count_of).sum();
                let amounts: Vec<String> = self
                    .by_currency
                    .iter()
                    .map(|(c, t)| format!("{} {c}", amount_of(t).money()))
                    .collect();
                format!("{}, {}", count(n, "invoice"), amounts.join(" + "))
            };
            lines.push(format!(
                "Open: {}",
                figures(|t| t.open_count, |t| t.open_amount)
            ));
            lines.push(format!(
                "Overdue: {}",
                figures(|t| t.overdue_count, |t| t.overdue_amount)
            ));
            for (currency, totals) in &self.by_currency {
                let buckets: Vec<String> = AGING
                    .iter()
                    .zip(totals.aging)
                    .map(|((_, label, _), amount)| format!("{label} {}", amount.money()))
                    .collect();
                lines.push(format!("Aging ({currency}): {}", buckets.join(", ")));
            }
            let debtors = self.top_debtors(top);
            if !debtors.is_empty() {
                lines.push(String::new());
                lines.push("Top debtors:".to_owned());
                for (currency, customer, d) in debtors {
                    lines.push(format!(
                        "- {customer}: {} {currency} ({})",
                        d.amount.money(),
                        count(d.invoices, "invoice")
                    ));
                }
            }
        }
        if !self.skipped.is_empty() {
            lines.push(String::new());
            lines.push(format!(
                "{} could not be read and {} left out.",
                count(self.skipped.len(), "invoice record"),
                if self.skipped.len() == 1 { "is" } else { "are" }
            ));
        }
        lines.join("\n")
    }
}

impl Plugin for InvoicingArSummary {
    fn describe() -> PluginInfo {
        let amount = json!({
            "oneOf": [
                {"type": "string", "description": "Decimal amount in the single currency"},
                {"type": "object", "additionalProperties": {"type": "string"}, "description": "Decimal amount by currency code, when there are several"}
            ]
        });
        PluginInfo::new(
            "invoicing_ar_summary",
            env!("CARGO_PKG_VERSION"),
            "Summarises accounts receivable: open and overdue totals, aging buckets and top debtors, with a plain-text summary.",
        )
        .config_schema(json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "as_of": {"type": ["string", "null"], "format": "date", "description": "YYYY-MM-DD the report is as of; default input.as_of, else today (UTC)"},
                "bucket": {"type": ["string", "null"], "description": "Key-value bucket holding invoices/<id>; default the tenant's default bucket"},
                "top": {"type": ["integer", "null"], "minimum": 0, "maximum": 100, "default": 5, "description": "How many top debtors to list per currency"}
            }
        }))
        .output_schema(json!({
            "x-weft-role": "summary",
            "type": "object",
            "required": ["as_of", "currency", "currencies", "open_count", "open_amount", "overdue_count", "overdue_amount", "aging", "top_debtors", "summary"],
            "properties": {
                "as_of": {"type": "string", "format": "date"},
                "currency": {"type": ["string", "null"], "description": "The currency of every open invoice; null when there are several (amounts are then objects by currency) or none"},
                "currencies": {"type": "array", "items": {"type": "string"}},
                "open_count": {"type": "integer"},
                "open_amount": amount,
                "overdue_count": {"type": "integer"},
                "overdue_amount": amount,
                "aging": {
                    "type": "object",
                    "required": ["current", "days_1_30", "days_31_60", "days_61_90", "over_90"],
                    "properties": {
                        "current": amount, "days_1_30": amount, "days_31_60": amount, "days_61_90": amount, "over_90": amount
                    }
                },
                "top_debtors": {"type": "array", "items": {
                    "type": "object",
                    "required": ["customer", "currency", "amount", "invoices"],
                    "properties": {
                        "customer": {"type": "string"},
                        "currency": {"type": "string"},
                        "amount": {"type": "string"},
                        "invoices": {"type": "integer"}
                    }
                }},
                "checked": {"type": "integer", "description": "Invoice records read"},
                "skipped": {"type": "array", "items": {
                    "type": "object",
                    "properties": {"invoice_id": {"type": "string"}, "reason": {"type": "string"}}
                }},
                "summary": {"type": "string", "description": "Plain-text report, one fact per line, for an email or notification body"}
            }
        }))
        .capability("kv")
    }

    fn run(_ctx: &StepContext, config: Value, input: Value) -> Result<Value, StepError> {
        let fields = Fields::of(&config, "");
        fields.only(&FIELDS)?;
        let as_of = weft_finance::date::as_of(&config, &input).map_err(StepError::invalid_input)?;
        let top = fields.u64("top", 0..=100)?.unwrap_or(5) as usize;
        let bucket = Bucket::named_or_default(fields.str("bucket")?)?;
        let records = bucket.json_with_prefix(invoice::PREFIX)?;
        let mut ledger = Ledger::new(as_of);
        for (i, (key, record)) in records.iter().enumerate() {
            if i % 100 == 0 {
                host::progress((i * 100 / records.len()) as u8, "reading invoices");
            }
            ledger.add(
                &key[invoice::PREFIX.len()..],
                record.as_ref().map_err(String::as_str),
            );
        }
        host::progress(100, "done");
        host::info(&format!(
            "as of {as_of}: {} invoices read, {} skipped",
            ledger.checked,
            ledger.skipped.len()
        ));
        Ok(ledger.into_json(top))
    }
}

export_plugin!(InvoicingArSummary);

#[cfg(test)]
mod tests {
    use super::*;

    fn ledger(as_of: &str, invoices: &[(&str, Value)]) -> Ledger {
        let mut ledger = Ledger::new(Date::parse(as_of).unwrap());
        for (id, record) in invoices {
            ledger.add(id, Ok(record));
        }
        ledger
    }

    fn inv(amount: &str, due: &str, status: &str, customer: &str) -> Value {
        json!({"amount": amount, "due_date": due, "status": status, "currency": "EUR", "customer": customer})
    }

    #[test]
    fn ages_open_amounts_by_days_past_due() {
        let out = ledger(
            "2026-06-30",
            &[
                ("a", inv("100", "2026-06-30", "open", "Acme")), // current (due today)
                ("b", inv("10.5", "2026-07-15", "open", "Acme")), // current (not yet due)
                ("c", inv("200", "2026-06-29", "overdue", "Beta")), // 1 day
                ("d", inv("300", "2026-05-31", "open", "Beta")), // 30 days
                ("e", inv("400", "2026-05-30", "sent", "Gamma")), // 31 days
                ("f", inv("500", "2026-04-01", "open", "Gamma")), // 90 days
                ("g", inv("600", "2026-03-01", "open", "Delta")), // 121 days
                ("h", inv("999", "2026-01-01", "paid", "Acme")),
                ("i", inv("999", "2026-01-01", "void", "Acme")),
            ],
        )
        .into_json(5);
        assert_eq!(out["currency"], "EUR");
        assert_eq!(out["currencies"], json!(["EUR"]));
        assert_eq!(out["open_count"], 7);
        assert_eq!(out["open_amount"], "2110.5");
        assert_eq!(out["overdue_count"], 5);
        assert_eq!(out["overdue_amount"], "2000");
        assert_eq!(
            out["aging"],
            json!({"current": "110.5", "days_1_30": "500", "days_31_60": "400", "days_61_90": "500", "over_90": "600"})
        );
        assert_eq!(out["checked"], 9);
        assert_eq!(
            out["top_debtors"][0],
            json!({"customer": "Gamma", "currency": "EUR", "amount": "900", "invoices": 2})
        );
    }

    #[test]
    fn top_debtors_are_capped_per_currency_and_skip_credits() {
        let mut credit = inv("-50", "2026-06-01", "open", "Credit");
        credit["currency"] = json!("EUR");
        let l = ledger(
            "2026-06-30",
            &[
                ("a", inv("100", "2026-06-01", "open", "A")),
                ("b", inv("300", "2026-06-01", "open", "B")),
                ("c", inv("200", "2026-06-01", "open", "C")),
                ("d", credit),
            ],
        );
        let top: Vec<&str> = l.top_debtors(2).iter().map(|(_, c, _)| *c).collect();
        assert_eq!(top, ["B", "C"]);
        assert!(l.top_debtors(0).is_empty());
    }

    #[test]
    fn several_currencies_are_reported_apart() {
        let mut usd = inv("80", "2026-06-01", "open", "Yankee");
        usd["currency"] = json!("usd");
        let mut none = inv("5", "2026-07-01", "open", "");
        none.as_object_mut().unwrap().remove("currency");
        let out = ledger(
            "2026-06-30",
            &[
                ("a", inv("100", "2026-06-01", "open", "Acme")),
                ("b", usd),
                ("c", none),
            ],
        )
        .into_json(5);
        assert_eq!(out["currency"], Value::Null);
        assert_eq!(out["currencies"], json!(["EUR", "USD", "XXX"]));
        assert_eq!(out["open_count"], 3);
        assert_eq!(
            out["open_amount"],
            json!({"EUR": "100", "USD": "80", "XXX": "5"})
        );
        assert_eq!(
            out["overdue_amount"],
            json!({"EUR": "100", "USD": "80", "XXX": "0"})
        );
        assert_eq!(
            out["aging"]["current"],
            json!({"EUR": "0", "USD": "0", "XXX": "5"})
        );
        assert_eq!(out["top_debtors"][2]["customer"], NO_CUSTOMER);
        let summary = out["summary"].as_str().unwrap();
        assert!(
            summary.contains("Open: 3 invoices, 100.00 EUR + 80.00 USD + 5.00 XXX"),
            "{summary}"
        );
        assert!(
            summary.contains("Aging (USD): current 0.00, 1-30 days 80.00"),
            "{summary}"
        );
    }

    #[test]
    fn the_summary_reads_as_a_report() {
        let mut l = ledger(
            "2026-06-30",
            &[
                ("a", inv("1200.5", "2026-06-01", "open", "Acme GmbH")),
                ("b", inv("300", "2026-07-10", "open", "Beta AG")),
            ],
        );
        l.add("broken", Err("not JSON: eof"));
        let out = l.into_json(5);
        assert_eq!(
            out["summary"],
            "Accounts receivable as of 2026-06-30\n\
             Open: 2 invoices, 1500.50 EUR\n\
             Overdue: 1 invoice, 1200.50 EUR\n\
             Aging (EUR): current 300.00, 1-30 days 1200.50, 31-60 days 0.00, 61-90 days 0.00, over 90 days 0.00\n\
             \n\
             Top debtors:\n\
             - Acme GmbH: 1200.50 EUR (1 invoice)\n\
             - Beta AG: 300.00 EUR (1 invoice)\n\
             \n\
             1 invoice record could not be read and is left out."
        );
        assert_eq!(
            out["skipped"],
            json!([{"invoice_id": "broken", "reason": "not JSON: eof"}])
        );
    }

    #[test]
    fn no_open_invoices_is_a_short_report() {
        let out = ledger("2026-06-30", &[("a", inv("5", "2026-06-01", "paid", "A"))]).into_json(5);
        assert_eq!(out["currency"], Value::Null);
        assert_eq!(out["open_amount"], "0");
        assert_eq!(out["aging"]["over_90"], "0");
        assert_eq!(
            out["summary"],
            "Accounts receivable as of 2026-06-30\nNo open invoices."
        );
    }

    #[test]
    fn unreadable_records_are_skipped_with_the_field_at_fault() {
        let mut l = ledger(
            "2026-06-30",
            &[("x", json!({"amount": "?", "due_date": "2026-01-01"}))],
        );
        l.add("y", Ok(&json!({"amount": 1, "due_date": "june"})));
        assert_eq!(l.checked, 0);
        assert!(l.skipped[0].1.starts_with("amount \"?\""));
        assert!(l.skipped[1].1.starts_with("due_date \"june\""));
    }

    #[test]
    fn describe_declares_the_summary_role() {
        let info: weft_sdk::bindings::weft::plugin::types::PluginInfo =
            InvoicingArSummary::describe().into();
        let schema: Value = serde_json::from_str(&info.output_schema).unwrap();
        assert_eq!(schema["x-weft-role"], "summary");
        assert_eq!(info.capabilities, ["kv"]);
    }
}
