//! `generate_recurring_invoice`: creates one period's invoice of a
//! recurring series (hosting, a retainer, a licence) in the tenant's
//! key-value store, once.
//!
//! # Data
//!
//! The invoice goes to `invoices/<series>-<period>` (`acme-hosting-2026-03`)
//! in the bucket (the tenant's default unless `bucket` is set), in the
//! layout the other invoicing plugins read (`weft_finance::invoice`):
//!
//! ```json
//! {"id": "acme-hosting-2026-03", "series": "acme-hosting", "period": "2026-03",
//!  "status": "open", "customer": "Acme GmbH", "customer_email": "ap@acme.test",
//!  "currency": "EUR", "issue_date": "2026-03-01", "due_date": "2026-03-15",
//!  "amount": "238", "lines": [{"description": "Hosting", "quantity": "2",
//!  "unit_price": "119", "amount": "238"}], "created_by": {"run_id": "…", "step_id": "…"}}
//! ```
//!
//! `amount` is the exact total of the lines; every amount and quantity is a
//! decimal string. A line's amount is quantity × unit price, rounded to six
//! decimal places half away from zero; a negative unit price makes a
//! discount line, but the total may not be negative. `customer_email` is
//! left out when not configured.
//!
//! `period` defaults to the month of `as_of` (config, else input, else
//! today UTC); `issue_date` to the first day of `period` when `period` is
//! given, else to `as_of`; `due_date` is `issue_date` + `due_in_days` (14).
//!
//! Idempotent: when the key already exists, the stored invoice is returned
//! unchanged with `created: false` (a warning is logged if it differs from
//! the config). The check and the write are not atomic; two runs of the
//! same series and period at the same instant could both write.

use weft_finance::invoice::{self, Invoice};
use weft_finance::{Date, Decimal, Month};
use weft_sdk::config::Fields;
use weft_sdk::kv::Bucket;
use weft_sdk::{Plugin, PluginInfo, StepContext, StepError, Value, export_plugin, host, json};

const FIELDS: [&str; 10] = [
    "series",
    "customer",
    "customer_email",
    "currency",
    "items",
    "period",
    "issue_date",
    "due_in_days",
    "bucket",
    "as_of",
];
const ITEM_FIELDS: [&str; 3] = ["description", "quantity", "unit_price"];
const MAX_ITEMS: usize = 100;
const MAX_SERIES: usize = 80;

struct GenerateRecurringInvoice;

/// One invoice line, computed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Line {
    description: String,
    quantity: Decimal,
    unit_price: Decimal,
    amount: Decimal,
}

fn invalid(message: impl Into<String>) -> StepError {
    StepError::invalid_input(message)
}

/// The invoice a config asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Spec {
    series: String,
    customer: String,
    customer_email: Option<String>,
    currency: String,
    lines: Vec<Line>,
    total: Decimal,
    period: Month,
    issue_date: Date,
    due_date: Date,
    bucket: Option<String>,
}

impl Spec {
    fn parse(config: &Value, input: &Value) -> Result<Self, StepError> {
        let fields = Fields::of(config, "");
        fields.only(&FIELDS)?;
        let series = fields.required_str("series")?.trim();
        if series.len() > MAX_SERIES
            || !series.starts_with(|c: char| c.is_ascii_alphanumeric())
            || !series
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(invalid(format!(
                "series {series:?} must be at most {MAX_SERIES} letters, digits, '-', '_' or '.', starting with a letter or digit"
            )));
        }
        let customer = fields.required_str("customer")?.trim().to_owned();
        let customer_email = fields
            .str("customer_email")?
            .map(str::trim)
            .map(str::to_owned);
        if let Some(email) = customer_email
            .as_deref()
            .filter(|e| !host::is_plausible_address(e))
        {
            return Err(invalid(format!(
                "customer_email {email:?} is not an email address"
            )));
        }
        let currency = fields.required_str("currency")?.trim();
        if currency.len() != 3 || !currency.chars().all(|c| c.is_ascii_alphabetic()) {
            return Err(invalid(format!(
                "currency {currency:?} must be a three-letter ISO 4217 code such as EUR"
            )));
        }
        let lines = lines(fields.get("items"))?;
        let total: Decimal = lines.iter().map(|l| l.amount).sum();
        if total.is_negative() {
            return Err(invalid(format!(
                "the items add up to {total}; the total may not be negative"
            )));
        }

        let as_of = weft_finance::date::as_of(config, input).map_err(invalid)?;
        let period = match fields.str("period")? {
            Some(text) => Some(
                Month::parse(text.trim())
                    .ok_or_else(|| invalid(format!("period {text:?} is not a month (YYYY-MM)")))?,
            ),
            None => None,
        };
        let issue_date = match fields.str("issue_date")? {
            Some(text) => Date::parse(text).ok_or_else(|| {
                invalid(format!("issue_date {text:?} is not a date (YYYY-MM-DD)"))
            })?,
            None => period.map_or(as_of, Month::first_day),
        };
        let due_in_days = fields.u64("due_in_days", 0..=365)?.unwrap_or(14);
        Ok(Self {
            series: series.to_owned(),
            customer,
            customer_email,
            currency: currency.to_ascii_uppercase(),
            lines,
            total,
            period: period.unwrap_or_else(|| as_of.month_period()),
            issue_date,
            due_date: issue_date.add_days(due_in_days as i64),
            bucket: fields.str("bucket")?.map(str::to_owned),
        })
    }

    fn invoice_id(&self) -> String {
        format!("{}-{}", self.series, self.period)
    }

    /// The record to store; `ctx` says which run created it.
    fn record(&self, ctx: &StepContext) -> Value {
        let lines: Vec<Value> = self
            .lines
            .iter()
            .map(|l| {
                json!({
                    "description": l.description,
                    "quantity": l.quantity.to_string(),
                    "unit_price": l.unit_price.to_string(),
                    "amount": l.amount.to_string(),
                })
            })
            .collect();
        let mut record = json!({
            "id": self.invoice_id(),
            "series": self.series,
            "period": self.period.to_string(),
            "status": "open",
            "customer": self.customer,
            "currency": self.currency,
            "issue_date": self.issue_date.iso(),
            "due_date": self.due_date.iso(),
            "amount": self.total.to_string(),
            "lines": lines,
            "created_by": {"run_id": ctx.run_id, "step_id": ctx.step_id},
        });
        if let Some(email) = &self.customer_email {
            record["customer_email"] = json!(email);
        }
        record
    }

    /// How a stored invoice differs from this spec in what matters, if it does.
    fn differences(&self, stored: &Invoice) -> Option<String> {
        let mut diffs = Vec::new();
        if stored.amount != self.total {
            diffs.push(format!(
                "amount {} (config gives {})",
                stored.amount, self.total
            ));
        }
        if stored.currency != self.currency {
            diffs.push(format!(
                "currency {} (config gives {})",
                stored.currency, self.currency
            ));
        }
        if stored.customer.as_deref() != Some(self.customer.as_str()) {
            diffs.push(format!(
                "customer {:?} (config gives {:?})",
                stored.customer, self.customer
            ));
        }
        (!diffs.is_empty()).then(|| diffs.join(", "))
    }
}

/// The `items` list as lines; errors name the item and field.
fn lines(items: Option<&Value>) -> Result<Vec<Line>, StepError> {
    let items = match items {
        None => return Err(invalid("items is required")),
        Some(Value::Array(items)) => items,
        Some(other) => return Err(invalid(format!("items must be a list, found {other}"))),
    };
    if items.is_empty() || items.len() > MAX_ITEMS {
        return Err(invalid(format!(
            "items must list 1 to {MAX_ITEMS} lines, found {}",
            items.len()
        )));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let path = format!("items[{i}]");
            let fields = Fields::of(item, &path);
            if !item.is_object() {
                return Err(invalid(format!("{path} must be an object, found {item}")));
            }
            fields.only(&ITEM_FIELDS)?;
            let description = fields.required_str("description")?.trim().to_owned();
            let decimal = |key: &str| {
                let value = fields
                    .get(key)
                    .ok_or_else(|| invalid(format!("{} is required", fields.name(key))))?;
                Decimal::from_json(value).ok_or_else(|| {
                    invalid(format!(
                        "{} {value} is not a decimal number (at most six decimal places)",
                        fields.name(key)
                    ))
                })
            };
            let quantity = decimal("quantity")?;
            if !quantity.is_positive() {
                return Err(invalid(format!(
                    "{path}.quantity must be more than 0, found {quantity}"
                )));
            }
            let unit_price = decimal("unit_price")?;
            let amount = quantity
                .checked_mul(unit_price)
                .ok_or_else(|| invalid(format!("{path}: quantity × unit_price is too large")))?;
            Ok(Line {
                description,
                quantity,
                unit_price,
                amount,
            })
        })
        .collect()
}

/// The step's output for an invoice record, whether new or found.
fn output(invoice_id: &str, created: bool, stored: &Invoice, record: Value) -> Value {
    json!({
        "invoice_id": invoice_id,
        "created": created,
        "total": stored.amount.to_string(),
        "currency": stored.currency,
        "due_date": stored.due_date.iso(),
        "invoice": record,
    })
}

impl Plugin for GenerateRecurringInvoice {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "generate_recurring_invoice",
            env!("CARGO_PKG_VERSION"),
            "Creates the invoice of one period of a recurring series, once; an existing one is returned unchanged.",
        )
        .config_schema(json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["series", "customer", "currency", "items"],
            "properties": {
                "series": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$", "description": "Id prefix of the series; the invoice id is <series>-<period>"},
                "customer": {"type": "string", "minLength": 1, "description": "Customer name shown on the invoice and in reports"},
                "customer_email": {"type": ["string", "null"], "description": "Where reminders go"},
                "currency": {"type": "string", "pattern": "^[A-Za-z]{3}$", "description": "ISO 4217 code, e.g. EUR"},
                "items": {
                    "type": "array", "minItems": 1, "maxItems": MAX_ITEMS,
                    "items": {
                        "type": "object",
                        "additionalProperties": false,
                        "required": ["description", "quantity", "unit_price"],
                        "properties": {
                            "description": {"type": "string", "minLength": 1},
                            "quantity": {"type": ["string", "number"], "description": "Decimal, more than 0, at most six decimal places"},
                            "unit_price": {"type": ["string", "number"], "description": "Decimal, at most six decimal places; negative for a discount"}
                        }
                    }
                },
                "period": {"type": ["string", "null"], "pattern": "^[0-9]{4}-[0-9]{2}$", "description": "YYYY-MM; default the month of as_of"},
                "issue_date": {"type": ["string", "null"], "format": "date", "description": "Default the first day of period if period is set, else as_of"},
                "due_in_days": {"type": ["integer", "null"], "minimum": 0, "maximum": 365, "default": 14},
                "as_of": {"type": ["string", "null"], "format": "date", "description": "YYYY-MM-DD; default input.as_of, else today (UTC)"},
                "bucket": {"type": ["string", "null"], "description": "Key-value bucket for invoices/<id>; default the tenant's default bucket"}
            }
        }))
        .output_schema(json!({
            "type": "object",
            "required": ["invoice_id", "created", "total", "currency", "due_date", "invoice"],
            "properties": {
                "invoice_id": {"type": "string"},
                "created": {"type": "boolean", "description": "false when the invoice already existed and was returned unchanged"},
                "total": {"type": "string", "description": "Exact decimal total (the invoice's amount)"},
                "currency": {"type": "string"},
                "due_date": {"type": "string", "format": "date"},
                "invoice": {"type": "object", "description": "The stored invoice record"}
            }
        }))
        .capability("kv")
    }

    fn run(ctx: &StepContext, config: Value, input: Value) -> Result<Value, StepError> {
        let spec = Spec::parse(&config, &input)?;
        let bucket = Bucket::named_or_default(spec.bucket.as_deref())?;
        let invoice_id = spec.invoice_id();
        let key = invoice::key(&invoice_id);
        if let Some(existing) = bucket.get_json::<Value>(&key)? {
            let stored = Invoice::from_json(&existing).map_err(|reason| {
                StepError::fatal(format!(
                    "{key} exists but is not a readable invoice: {reason}"
                ))
            })?;
            if let Some(diffs) = spec.differences(&stored) {
                host::warn(&format!(
                    "{key} already exists and differs from the config: {diffs}"
                ));
            }
            host::info(&format!("{key} already exists; returned unchanged"));
            return Ok(output(&invoice_id, false, &stored, existing));
        }
        let record = spec.record(ctx);
        bucket.set_json(&key, &record)?;
        host::info(&format!(
            "created {key}: {} {} due {}",
            spec.total, spec.currency, spec.due_date
        ));
        let stored = Invoice::from_json(&record).map_err(StepError::fatal)?;
        Ok(output(&invoice_id, true, &stored, record))
    }
}

export_plugin!(GenerateRecurringInvoice);

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> StepContext {
        StepContext {
            tenant: "t".into(),
            run_id: "run-1".into(),
            step_id: "bill".into(),
            attempt: 1,
            idempotency_key: "run-1/bill".into(),
        }
    }

    fn config() -> Value {
        json!({
            "series": "acme-hosting", "customer": "Acme GmbH", "customer_email": "ap@acme.test",
            "currency": "eur",
            "items": [
                {"description": "Hosting", "quantity": 2, "unit_price": "119.00"},
                {"description": "Support hours", "quantity": "1.5", "unit_price": 80.1},
                {"description": "Loyalty discount", "quantity": 1, "unit_price": "-10"}
            ]
        })
    }

    fn invalid(config: Value) -> String {
        match Spec::parse(&config, &Value::Null).unwrap_err() {
            StepError::InvalidInput(m) => m,
            other => panic!("expected invalid input, got {other:?}"),
        }
    }

    #[test]
    fn builds_an_open_invoice_with_exact_lines_and_total() {
        let mut c = config();
        c["as_of"] = json!("2026-03-05");
        let spec = Spec::parse(&c, &Value::Null).unwrap();
        assert_eq!(spec.invoice_id(), "acme-hosting-2026-03");
        let record = spec.record(&context());
        assert_eq!(record["status"], "open");
        assert_eq!(record["currency"], "EUR");
        assert_eq!(record["amount"], "348.15");
        assert_eq!(record["issue_date"], "2026-03-05");
        assert_eq!(record["due_date"], "2026-03-19");
        assert_eq!(record["lines"][1]["amount"], "120.15");
        assert_eq!(record["lines"][2]["amount"], "-10");
        assert_eq!(record["created_by"]["step_id"], "bill");
        // The other plugins read it as an owed invoice.
        let stored = Invoice::from_json(&record).unwrap();
        assert!(stored.is_owed());
        let out = output("acme-hosting-2026-03", true, &stored, record);
        assert_eq!(out["total"], "348.15");
        assert_eq!(out["due_date"], "2026-03-19");
    }

    #[test]
    fn an_explicit_period_issues_on_its_first_day() {
        let mut c = config();
        c["period"] = json!("2026-02");
        c["due_in_days"] = json!(30);
        c["customer_email"] = json!(null);
        let spec = Spec::parse(&c, &json!({"as_of": "2026-01-20"})).unwrap();
        assert_eq!(spec.invoice_id(), "acme-hosting-2026-02");
        assert_eq!(spec.issue_date.iso(), "2026-02-01");
        assert_eq!(spec.due_date.iso(), "2026-03-03");
        assert!(spec.record(&context()).get("customer_email").is_none());

        c["issue_date"] = json!("2026-01-28");
        let spec = Spec::parse(&c, &Value::Null).unwrap();
        assert_eq!(spec.issue_date.iso(), "2026-01-28");
    }

    #[test]
    fn the_period_defaults_to_the_month_of_as_of() {
        let spec = Spec::parse(&config(), &json!({"as_of": "2026-12-31"})).unwrap();
        assert_eq!(spec.invoice_id(), "acme-hosting-2026-12");
        assert_eq!(spec.due_date.iso(), "2027-01-14");
    }

    #[test]
    fn rejects_bad_config_by_field() {
        let with = |key: &str, value: Value| {
            let mut c = config();
            c[key] = value;
            c
        };
        let with_item = |key: &str, value: Value| {
            let mut c = config();
            c["items"][1][key] = value;
            c
        };
        let cases = [
            (
                with("series", json!("acme/hosting")),
                "series \"acme/hosting\"",
            ),
            (with("customer", json!("")), "customer must not be empty"),
            (with("currency", json!("euro")), "currency \"euro\""),
            (
                with("customer_email", json!("ap at acme")),
                "customer_email \"ap at acme\"",
            ),
            (
                with("items", json!([])),
                "items must list 1 to 100 lines, found 0",
            ),
            (with("items", json!({})), "items must be a list"),
            (with("items", json!(["x"])), "items[0] must be an object"),
            (with("period", json!("2026-3")), "period \"2026-3\""),
            (with("issue_date", json!("soon")), "issue_date \"soon\""),
            (
                with("due_in_days", json!(400)),
                "due_in_days must be a whole number from 0 to 365",
            ),
            (with("extra", json!(1)), "unknown field \"extra\""),
            (
                with_item("quantity", json!("two")),
                "items[1].quantity \"two\" is not a decimal",
            ),
            (
                with_item("quantity", json!(0)),
                "items[1].quantity must be more than 0",
            ),
            (
                with_item("unit_price", json!(null)),
                "items[1].unit_price is required",
            ),
            (
                with_item("description", json!(" ")),
                "items[1].description must not be empty",
            ),
            (
                with_item("vat", json!(19)),
                "items[1] has an unknown field \"vat\"",
            ),
            (with_item("unit_price", json!("-500")), "negative"),
        ];
        for (config, expected) in cases {
            let m = invalid(config);
            assert!(m.contains(expected), "{m:?} lacks {expected:?}");
        }
    }

    #[test]
    fn differences_name_what_changed() {
        let spec = Spec::parse(&config(), &Value::Null).unwrap();
        let same = Invoice::from_json(&spec.record(&context())).unwrap();
        assert_eq!(spec.differences(&same), None);
        let mut changed = spec.record(&context());
        changed["amount"] = json!("1");
        let changed = Invoice::from_json(&changed).unwrap();
        assert!(
            spec.differences(&changed)
                .unwrap()
                .starts_with("amount 1 (config gives 348.15)")
        );
    }

    #[test]
    fn describe_declares_no_role_and_asks_for_kv() {
        let info: weft_sdk::bindings::weft::plugin::types::PluginInfo =
            GenerateRecurringInvoice::describe().into();
        let schema: Value = serde_json::from_str(&info.output_schema).unwrap();
        assert!(schema.get("x-weft-role").is_none());
        assert_eq!(info.capabilities, ["kv"]);
    }
}
