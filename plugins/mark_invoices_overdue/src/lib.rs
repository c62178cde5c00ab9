//! `mark_invoices_overdue`: walks the tenant's invoices in the key-value
//! store (`invoices/<id>` → `{"due_date","amount","status",...}`), marks every
//! unpaid one whose due date is before `as_of` (default: today, UTC) as
//! `overdue`, and reports counts and amounts.
//!
//! Amounts are summed exactly as decimals (up to six fractional digits), not
//! as floating point. An invoice that cannot be read is reported under
//! `skipped` with the reason rather than failing the sweep. The record
//! layout and which statuses are owed are `weft_finance::invoice`'s.

use weft_finance::invoice::{self, Invoice};
use weft_finance::{Date, Decimal};
use weft_sdk::kv::Bucket;
use weft_sdk::{Plugin, PluginInfo, StepContext, StepError, Value, export_plugin, host, json};

struct MarkInvoicesOverdue;

impl Plugin for MarkInvoicesOverdue {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "mark_invoices_overdue",
            env!("CARGO_PKG_VERSION"),
            "Marks every unpaid invoice past its due date as overdue and sums what is owed.",
        )
        .config_schema(json!({
            "type": "object",
            "properties": {
                "as_of": {"type": "string", "format": "date", "description": "YYYY-MM-DD; default today (UTC)"},
                "bucket": {"type": "string", "description": "Key-value bucket holding invoices/<id>; default the tenant's default bucket"}
            }
        }))
        .output_schema(json!({
            "type": "object",
            "properties": {
                "as_of": {"type": "string"},
                "checked": {"type": "integer"},
                "newly_overdue": {"type": "integer"},
                "newly_overdue_amount": {"type": "string"},
                "overdue": {"type": "integer"},
                "overdue_amount": {"type": "string"},
                "unpaid_amount": {"type": "string"},
                "marked": {"type": "array", "items": {"type": "string"}},
                "skipped": {"type": "array"}
            }
        }))
        .capability("kv")
    }

    fn run(_ctx: &StepContext, config: Value, input: Value) -> Result<Value, StepError> {
        let as_of = weft_finance::date::as_of(&config, &input).map_err(StepError::invalid_input)?;
        let bucket = Bucket::named_or_default(config["bucket"].as_str())?;

        let keys = bucket.keys_with_prefix(invoice::PREFIX)?;
        let mut report = Report::default();
        for (i, key) in keys.iter().enumerate() {
            if i % 100 == 0 && !keys.is_empty() {
                host::progress((i * 100 / keys.len()) as u8, "checking invoices");
            }
            let id = &key[invoice::PREFIX.len()..];
            let Some(mut invoice) = bucket.get_json::<Value>(key).unwrap_or_else(|e| {
                report.skip(id, &e.to_string());
                None
            }) else {
                continue;
            };
            match report.check(id, &mut invoice, as_of) {
                Ok(true) => bucket.set_json(key, &invoice)?,
                Ok(false) => {}
                Err(reason) => report.skip(id, &reason),
            }
        }
        host::progress(100, "done");
        host::info(&format!(
            "as of {}: {} checked, {} newly overdue",
            as_of.iso(),
            report.checked,
            report.marked.len()
        ));
        Ok(report.into_json(as_of))
    }
}

#[derive(Default)]
struct Report {
    checked: u64,
    marked: Vec<String>,
    newly_overdue_amount: Decimal,
    overdue: u64,
    overdue_amount: Decimal,
    unpaid_amount: Decimal,
    skipped: Vec<Value>,
}

impl Report {
    fn skip(&mut self, id: &str, reason: &str) {
        self.skipped.push(json!({ "id": id, "reason": reason }));
    }

    /// Updates the counts for one invoice; returns whether it was changed.
    fn check(&mut self, id: &str, record: &mut Value, as_of: Date) -> Result<bool, String> {
        let invoice = Invoice::from_json(record)?;
        self.checked += 1;

        if invoice.status == "overdue" {
            self.overdue += 1;
            self.overdue_amount += invoice.amount;
            self.unpaid_amount += invoice.amount;
            return Ok(false);
        }
        if !invoice.is_owed() {
            return Ok(false);
        }
        self.unpaid_amount += invoice.amount;
        if invoice.due_date >= as_of {
            return Ok(false);
        }
        record["status"] = json!("overdue");
        record["overdue_since"] = json!(as_of.iso());
        self.marked.push(id.to_owned());
        self.newly_overdue_amount += invoice.amount;
        self.overdue += 1;
        self.overdue_amount += invoice.amount;
        Ok(true)
    }

    fn into_json(self, as_of: Date) -> Value {
        json!({
            "as_of": as_of.iso(),
            "checked": self.checked,
            "newly_overdue": self.marked.len(),
            "newly_overdue_amount": self.newly_overdue_amount.to_string(),
            "overdue": self.overdue,
            "overdue_amount": self.overdue_amount.to_string(),
            "unpaid_amount": self.unpaid_amount.to_string(),
            "marked": self.marked,
            "skipped": self.skipped,
        })
    }
}

export_plugin!(MarkInvoicesOverdue);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_marks_only_unpaid_invoices_past_due() {
        let as_of = Date::parse("2026-03-10").unwrap();
        let mut report = Report::default();
        let cases = [
            (
                json!({"due_date": "2026-03-01", "amount": 100.5, "status": "open"}),
                true,
            ),
            (
                json!({"due_date": "2026-03-10", "amount": 1, "status": "open"}),
                false,
            ),
            (
                json!({"due_date": "2026-03-01", "amount": "20.25", "status": "paid"}),
                false,
            ),
            (
                json!({"due_date": "2026-02-01", "amount": 7, "status": "overdue"}),
                false,
            ),
        ];
        for (i, (mut invoice, changed)) in cases.into_iter().enumerate() {
            assert_eq!(
                report.check(&i.to_string(), &mut invoice, as_of),
                Ok(changed),
                "{i}"
            );
        }
        let out = report.into_json(as_of);
        assert_eq!(out["newly_overdue"], 1);
        assert_eq!(out["newly_overdue_amount"], "100.5");
        assert_eq!(out["overdue"], 2);
        assert_eq!(out["overdue_amount"], "107.5");
        assert_eq!(out["unpaid_amount"], "108.5");
    }

    #[test]
    fn check_rejects_unreadable_invoices() {
        let as_of = Date::parse("2026-03-10").unwrap();
        let mut report = Report::default();
        let mut bad = json!({"due_date": "soon", "amount": 1});
        assert!(
            report
                .check("x", &mut bad, as_of)
                .unwrap_err()
                .contains("due_date")
        );
        let mut bad = json!({"due_date": "2026-01-01", "amount": "lots"});
        assert!(
            report
                .check("y", &mut bad, as_of)
                .unwrap_err()
                .contains("amount")
        );
    }
}
