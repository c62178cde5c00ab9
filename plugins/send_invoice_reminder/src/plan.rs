//! Which invoices get a reminder, in which order, and what is written back:
//! pure functions over the records, so every rule is tested natively.
//!
//! # Retries
//!
//! The host keys each `send-mail` by the attempt's idempotency key and the
//! call's position. A retried attempt must therefore send the same
//! reminders in the same order, or its first mail would come back as an
//! earlier attempt's id and never go out. So each reminded invoice records
//! `last_reminder_key` (the step's idempotency key) and `last_reminder_seq`
//! (the call's position); a later attempt of the same step sends those
//! first, in that order (the host answers with the same ids and sends
//! nothing again), and only then the rest.

use weft_finance::{Date, Invoice};
use weft_sdk::config::Fields;
use weft_sdk::{StepError, Value, host, json};

use crate::template::Template;

pub const DEFAULT_SUBJECT: &str = "Payment reminder: invoice {invoice_id} was due on {due_date}";
pub const DEFAULT_BODY: &str = "Dear {customer},\n\n\
our records show that invoice {invoice_id} for {amount} {currency} was due on {due_date} \
and is still unpaid.\n\n\
Please arrange payment at your earliest convenience. If you have already paid, \
please disregard this reminder.\n\n\
Kind regards";

/// Mail servers fold or reject longer subject lines.
const MAX_SUBJECT: usize = 998;

pub const FIELDS: [&str; 8] = [
    "as_of",
    "min_days_overdue",
    "remind_every_days",
    "subject",
    "body",
    "bucket",
    "max_reminders",
    "cc",
];

/// The step's config, checked.
#[derive(Debug)]
pub struct Settings {
    pub as_of: Date,
    /// Days past the due date before the first reminder.
    pub min_days_overdue: i64,
    /// Days to wait after a reminder before the next one.
    pub remind_every_days: i64,
    /// Reminders per run at most; the rest wait for the next run.
    pub max_reminders: usize,
    pub subject: Template,
    pub body: Template,
    /// Copied on every reminder (an accounts mailbox, say).
    pub cc: Vec<String>,
    pub bucket: Option<String>,
}

impl Settings {
    pub fn parse(config: &Value, input: &Value) -> Result<Self, StepError> {
        let fields = Fields::of(config, "");
        fields.only(&FIELDS)?;
        let as_of = weft_finance::date::as_of(config, input).map_err(StepError::invalid_input)?;
        let subject = fields.str("subject")?.unwrap_or(DEFAULT_SUBJECT);
        if subject.contains(['\r', '\n']) {
            return Err(StepError::invalid_input("subject must be one line"));
        }
        let template = |text: &str, field: &str| {
            Template::parse(text, field).map_err(StepError::invalid_input)
        };
        let cc = match fields.get("cc") {
            None => Vec::new(),
            Some(Value::String(one)) => vec![one.clone()],
            Some(_) => fields
                .strings("cc")?
                .unwrap_or_default()
                .into_iter()
                .map(str::to_owned)
                .collect(),
        };
        if let Some(bad) = cc.iter().find(|a| !host::is_plausible_address(a)) {
            return Err(StepError::invalid_input(format!(
                "cc has {bad:?}, which is not an email address"
            )));
        }
        Ok(Self {
            as_of,
            min_days_overdue: fields.u64("min_days_overdue", 0..=3650)?.unwrap_or(1) as i64,
            remind_every_days: fields.u64("remind_every_days", 1..=365)?.unwrap_or(7) as i64,
            max_reminders: fields.u64("max_reminders", 1..=1000)?.unwrap_or(100) as usize,
            subject: template(subject, "subject")?,
            body: template(fields.str("body")?.unwrap_or(DEFAULT_BODY), "body")?,
            cc,
            bucket: fields.str("bucket")?.map(str::to_owned),
        })
    }
}

/// One mail to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reminder {
    pub invoice_id: String,
    pub to: String,
    pub subject: String,
    pub body: String,
    pub days_overdue: i64,
}

/// What one run does.
#[derive(Debug, Default)]
pub struct Plan {
    /// In sending order: an earlier attempt's reminders first.
    pub reminders: Vec<Reminder>,
    /// Invoices due a reminder that do not get one, with the reason, and
    /// records that could not be read.
    pub skipped: Vec<(String, String)>,
    /// Invoice records read.
    pub checked: usize,
}

/// A reminder not yet rendered, with what orders it.
struct Candidate<'a> {
    id: &'a str,
    invoice: Invoice,
    record: &'a Value,
    /// `Some(position)` if an earlier attempt of this step sent it.
    earlier: Option<u64>,
}

/// Picks and renders the reminders for `records` (`(invoice id, record or
/// why it is unreadable)`). `attempt_key` is the step's idempotency key.
pub fn plan(
    records: &[(String, Result<Value, String>)],
    settings: &Settings,
    attempt_key: &str,
) -> Plan {
    let mut plan = Plan::default();
    let mut candidates = Vec::new();
    for (id, record) in records {
        let record = match record {
            Ok(record) => record,
            Err(reason) => {
                plan.skipped.push((id.clone(), reason.clone()));
                continue;
            }
        };
        let invoice = match Invoice::from_json(record) {
            Ok(invoice) => invoice,
            Err(reason) => {
                plan.skipped.push((id.clone(), reason));
                continue;
            }
        };
        plan.checked += 1;
        let earlier = (record["last_reminder_key"].as_str() == Some(attempt_key))
            .then(|| record["last_reminder_seq"].as_u64().unwrap_or(u64::MAX));
        if earlier.is_none() {
            if !invoice.is_owed()
                || invoice.days_overdue(settings.as_of) < settings.min_days_overdue
            {
                continue;
            }
            if let Err(reason) = due_again(record, settings) {
                plan.skipped.push((id.clone(), reason));
                continue;
            }
        }
        match &invoice.customer_email {
            None => plan
                .skipped
                .push((id.clone(), "no customer_email".to_owned())),
            Some(to) if !host::is_plausible_address(to) => plan.skipped.push((
                id.clone(),
                format!("customer_email {to:?} is not an email address"),
            )),
            Some(_) => candidates.push(Candidate {
                id,
                invoice,
                record,
                earlier,
            }),
        }
    }
    // Earlier sends in their positions, then the most overdue first.
    candidates.sort_by(|a, b| match (a.earlier, b.earlier) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a
            .invoice
            .due_date
            .cmp(&b.invoice.due_date)
            .then(a.id.cmp(b.id)),
    });
    for (i, c) in candidates.into_iter().enumerate() {
        if i >= settings.max_reminders {
            plan.skipped.push((
                c.id.to_owned(),
                format!(
                    "max_reminders ({}) reached; left for the next run",
                    settings.max_reminders
                ),
            ));
            continue;
        }
        plan.reminders.push(render(&c, settings));
    }
    plan
}

/// `Ok` if the invoice was never reminded or its last reminder is at least
/// `remind_every_days` old; else why not.
fn due_again(record: &Value, settings: &Settings) -> Result<(), String> {
    let last = match &record["last_reminder_on"] {
        Value::Null => return Ok(()),
        Value::String(s) => Date::parse(s),
        _ => None,
    }
    .ok_or_else(|| {
        format!(
            "last_reminder_on {} is not a date",
            record["last_reminder_on"]
        )
    })?;
    let next = last.add_days(settings.remind_every_days);
    if next > settings.as_of {
        return Err(format!(
            "reminded on {last}; next reminder on or after {next}"
        ));
    }
    Ok(())
}

fn render(c: &Candidate<'_>, settings: &Settings) -> Reminder {
    let days_overdue = c.invoice.days_overdue(settings.as_of);
    let count = c.record["reminder_count"].as_u64().unwrap_or(0);
    // A repeated send already counted itself.
    let number = if c.earlier.is_some() {
        count.max(1)
    } else {
        count + 1
    };
    let to = c.invoice.customer_email.clone().unwrap_or_default();
    let value = |name: &str| match name {
        "invoice_id" => c.id.to_owned(),
        "customer" => c
            .invoice
            .customer
            .clone()
            .unwrap_or_else(|| "customer".to_owned()),
        "customer_email" => to.clone(),
        "amount" => c.invoice.amount.money(),
        "currency" => c.invoice.currency.clone(),
        "due_date" => c.invoice.due_date.iso(),
        "days_overdue" => days_overdue.to_string(),
        "as_of" => settings.as_of.iso(),
        "reminder_number" => number.to_string(),
        _ => String::new(),
    };
    let subject = settings
        .subject
        .render(value)
        .replace(['\r', '\n', '\t'], " ");
    Reminder {
        invoice_id: c.id.to_owned(),
        to: to.clone(),
        subject: truncate(&subject, MAX_SUBJECT).to_owned(),
        body: settings.body.render(value),
        days_overdue,
    }
}

/// At most `max` bytes, cut at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Writes the reminder into the invoice record: `last_reminder_on`,
/// `reminder_count` (once per step, however many attempts), the message id,
/// and the attempt key and position for retries. `record` must be an object.
pub fn record_sent(
    record: &mut Value,
    as_of: Date,
    attempt_key: &str,
    seq: usize,
    message_id: &str,
) {
    let repeated = record["last_reminder_key"].as_str() == Some(attempt_key);
    let count = record["reminder_count"].as_u64().unwrap_or(0);
    record["reminder_count"] = json!(if repeated { count.max(1) } else { count + 1 });
    record["last_reminder_on"] = json!(as_of.iso());
    record["last_reminder_message_id"] = json!(message_id);
    record["last_reminder_key"] = json!(attempt_key);
    record["last_reminder_seq"] = json!(seq);
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "run-1/remind";

    fn settings(config: Value) -> Settings {
        Settings::parse(&config, &Value::Null).unwrap()
    }

    fn records(items: Vec<(&str, Value)>) -> Vec<(String, Result<Value, String>)> {
        items
            .into_iter()
            .map(|(id, v)| (id.to_owned(), Ok(v)))
            .collect()
    }

    fn invoice(due: &str, extra: Value) -> Value {
        let mut v = json!({
            "amount": "100.5", "currency": "eur", "due_date": due, "status": "open",
            "customer": "Acme", "customer_email": "ap@acme.test"
        });
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        v
    }

    fn ids(plan: &Plan) -> Vec<&str> {
        plan.reminders
            .iter()
            .map(|r| r.invoice_id.as_str())
            .collect()
    }

    fn reason<'a>(plan: &'a Plan, id: &str) -> &'a str {
        &plan.skipped.iter().find(|(i, _)| i == id).unwrap().1
    }

    #[test]
    fn picks_owed_invoices_past_due_most_overdue_first() {
        let s = settings(json!({"as_of": "2026-03-10", "min_days_overdue": 3}));
        let plan = plan(
            &records(vec![
                ("a", invoice("2026-03-01", json!({}))),
                ("b", invoice("2026-02-01", json!({"status": "Overdue"}))),
                ("c", invoice("2026-03-08", json!({}))),
                ("d", invoice("2026-01-01", json!({"status": "paid"}))),
                ("e", invoice("2026-03-07", json!({}))),
            ]),
            &s,
            KEY,
        );
        assert_eq!(ids(&plan), ["b", "a", "e"]);
        assert_eq!(plan.checked, 5);
        assert!(plan.skipped.is_empty(), "{:?}", plan.skipped);
        assert_eq!(plan.reminders[1].days_overdue, 9);
    }

    #[test]
    fn waits_remind_every_days_between_reminders() {
        let s = settings(json!({"as_of": "2026-03-10", "remind_every_days": 7}));
        let plan = plan(
            &records(vec![
                (
                    "recent",
                    invoice("2026-01-01", json!({"last_reminder_on": "2026-03-04"})),
                ),
                (
                    "old",
                    invoice("2026-01-01", json!({"last_reminder_on": "2026-03-03"})),
                ),
                (
                    "garbled",
                    invoice("2026-01-01", json!({"last_reminder_on": "last week"})),
                ),
            ]),
            &s,
            KEY,
        );
        assert_eq!(ids(&plan), ["old"]);
        assert_eq!(
            reason(&plan, "recent"),
            "reminded on 2026-03-04; next reminder on or after 2026-03-11"
        );
        assert!(reason(&plan, "garbled").contains("last_reminder_on \"last week\""));
    }

    #[test]
    fn skips_invoices_without_a_usable_address_or_readable_fields() {
        let s = settings(json!({"as_of": "2026-03-10"}));
        let mut recs = records(vec![
            (
                "none",
                invoice("2026-01-01", json!({"customer_email": null})),
            ),
            (
                "bad",
                invoice("2026-01-01", json!({"customer_email": "a@b"})),
            ),
            ("amount", invoice("2026-01-01", json!({"amount": "lots"}))),
        ]);
        recs.push(("broken".to_owned(), Err("not JSON: eof".to_owned())));
        let plan = plan(&recs, &s, KEY);
        assert!(plan.reminders.is_empty());
        assert_eq!(reason(&plan, "none"), "no customer_email");
        assert!(reason(&plan, "bad").contains("\"a@b\" is not an email address"));
        assert!(reason(&plan, "amount").starts_with("amount \"lots\""));
        assert_eq!(reason(&plan, "broken"), "not JSON: eof");
        assert_eq!(plan.checked, 2);
    }

    #[test]
    fn caps_reminders_per_run() {
        let s = settings(json!({"as_of": "2026-03-10", "max_reminders": 1}));
        let plan = plan(
            &records(vec![
                ("x", invoice("2026-02-01", json!({}))),
                ("y", invoice("2026-01-01", json!({}))),
            ]),
            &s,
            KEY,
        );
        assert_eq!(ids(&plan), ["y"]);
        assert!(reason(&plan, "x").starts_with("max_reminders (1) reached"));
    }

    #[test]
    fn a_retried_attempt_resends_earlier_reminders_first_in_their_positions() {
        let s = settings(json!({"as_of": "2026-03-10"}));
        let mut first = invoice("2026-03-05", json!({}));
        let mut second = invoice("2026-03-06", json!({}));
        record_sent(&mut first, s.as_of, KEY, 0, "m-0");
        record_sent(&mut second, s.as_of, KEY, 1, "m-1");
        // Meanwhile a more overdue invoice appeared and the first got paid.
        first["status"] = json!("paid");
        let plan = plan(
            &records(vec![
                ("new", invoice("2026-01-01", json!({}))),
                ("second", second),
                ("first", first),
            ]),
            &s,
            KEY,
        );
        assert_eq!(ids(&plan), ["first", "second", "new"]);

        // Another run (another key) respects the reminder just sent.
        let other = plan_for_other_run(&s);
        assert!(other.reminders.is_empty());
    }

    fn plan_for_other_run(s: &Settings) -> Plan {
        let mut record = invoice("2026-03-05", json!({}));
        record_sent(&mut record, s.as_of, KEY, 0, "m-0");
        plan(&records(vec![("first", record)]), s, "run-2/remind")
    }

    #[test]
    fn record_sent_counts_once_per_step() {
        let as_of = Date::parse("2026-03-10").unwrap();
        let mut record = invoice("2026-03-01", json!({"reminder_count": 2}));
        record_sent(&mut record, as_of, KEY, 3, "m-3");
        record_sent(&mut record, as_of, KEY, 3, "m-3");
        assert_eq!(record["reminder_count"], 3);
        assert_eq!(record["last_reminder_on"], "2026-03-10");
        assert_eq!(record["last_reminder_message_id"], "m-3");
        assert_eq!(record["last_reminder_seq"], 3);
        assert_eq!(record["customer"], "Acme");
        record_sent(&mut record, as_of, "run-2/remind", 0, "m-9");
        assert_eq!(record["reminder_count"], 4);
    }

    #[test]
    fn renders_templates_with_invoice_fields() {
        let s = settings(json!({
            "as_of": "2026-03-10",
            "subject": "#{reminder_number}: {invoice_id} ({days_overdue} days)",
            "body": "{customer} owes {amount} {currency} since {due_date} (as of {as_of}, to {customer_email})"
        }));
        let plan = plan(
            &records(vec![(
                "inv-7",
                invoice("2026-03-01", json!({"reminder_count": 1, "customer": null})),
            )]),
            &s,
            KEY,
        );
        let r = &plan.reminders[0];
        assert_eq!(r.subject, "#2: inv-7 (9 days)");
        assert_eq!(
            r.body,
            "customer owes 100.50 EUR since 2026-03-01 (as of 2026-03-10, to ap@acme.test)"
        );
        assert_eq!(r.to, "ap@acme.test");
    }

    #[test]
    fn subject_placeholders_cannot_break_the_line() {
        let s = settings(json!({"as_of": "2026-03-10", "subject": "For {customer}"}));
        let plan = plan(
            &records(vec![(
                "i",
                invoice("2026-03-01", json!({"customer": "Evil\r\nBcc: x@y.z"})),
            )]),
            &s,
            KEY,
        );
        assert_eq!(plan.reminders[0].subject, "For Evil  Bcc: x@y.z");
    }

    #[test]
    fn settings_have_defaults_and_name_bad_fields() {
        let s = settings(json!({"as_of": "2026-03-10"}));
        assert_eq!(
            (s.min_days_overdue, s.remind_every_days, s.max_reminders),
            (1, 7, 100)
        );
        assert!(s.cc.is_empty());
        let cases = [
            (
                json!({"min_days_overdue": -1}),
                "min_days_overdue must be a whole number",
            ),
            (
                json!({"remind_every_days": 0}),
                "remind_every_days must be a whole number from 1",
            ),
            (json!({"subject": "a\nb"}), "subject must be one line"),
            (
                json!({"body": "{oops}"}),
                "body has an unknown placeholder {oops}",
            ),
            (json!({"cc": ["ok@x.io", "nope"]}), "cc has \"nope\""),
            (json!({"as_of": "tomorrow"}), "as_of \"tomorrow\""),
            (json!({"bucket": 1}), "bucket must be a string"),
            (json!({"max_reminder": 5}), "unknown field \"max_reminder\""),
        ];
        for (config, expected) in cases {
            let e = Settings::parse(&config, &Value::Null)
                .unwrap_err()
                .to_string();
            assert!(e.contains(expected), "{e:?} lacks {expected:?}");
        }
    }
}
