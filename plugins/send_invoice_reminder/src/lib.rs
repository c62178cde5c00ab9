//! `send_invoice_reminder`: emails a payment reminder for every owed invoice
//! that is far enough past due, at most once every `remind_every_days`, and
//! records the reminder on the invoice.
//!
//! # Data
//!
//! Reads every `invoices/<id>` record in the bucket (the tenant's default
//! unless `bucket` is set), in the layout of `weft_finance::invoice`:
//! `amount`, `due_date`, `status`, `currency`, `customer`, `customer_email`.
//! An invoice gets a reminder when its status is owed (not `paid`, `void`,
//! `cancelled` or `draft`), it is at least `min_days_overdue` days past its
//! `due_date` as of `as_of`, it has a plausible `customer_email`, and its
//! `last_reminder_on` is absent or at least `remind_every_days` before
//! `as_of`. The most overdue go first; past `max_reminders` the rest wait
//! for the next run.
//!
//! After each mail the invoice record is re-read and written back with
//! `last_reminder_on` (= `as_of`), `reminder_count` (+1),
//! `last_reminder_message_id`, and `last_reminder_key` /
//! `last_reminder_seq`, which make a retried attempt resend in the same
//! order so the host's mail deduplication holds (see `plan`). Every
//! other field is kept.
//!
//! `subject` and `body` are templates with `{invoice_id}`, `{customer}`,
//! `{customer_email}`, `{amount}` (at least two decimals), `{currency}`,
//! `{due_date}`, `{days_overdue}`, `{as_of}` and `{reminder_number}`.
//!
//! # Layout
//!
//! - `template`: `{placeholder}` templates.
//! - `plan`: the config, which invoices get a reminder, and the
//!   write-back; pure.
//! - this file: the plugin, doing the mail and store calls in order.

mod plan;
mod template;

use plan::{Plan, Settings};
use weft_finance::invoice;
use weft_sdk::kv::Bucket;
use weft_sdk::{Plugin, PluginInfo, StepContext, StepError, Value, export_plugin, host, json};

struct SendInvoiceReminder;

impl Plugin for SendInvoiceReminder {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "send_invoice_reminder",
            env!("CARGO_PKG_VERSION"),
            "Emails a payment reminder for each overdue invoice not reminded recently, and records it on the invoice.",
        )
        .config_schema(json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "as_of": {"type": ["string", "null"], "format": "date", "description": "YYYY-MM-DD the reminders are computed for; default input.as_of, else today (UTC)"},
                "min_days_overdue": {"type": ["integer", "null"], "minimum": 0, "maximum": 3650, "default": 1, "description": "Days past the due date before the first reminder"},
                "remind_every_days": {"type": ["integer", "null"], "minimum": 1, "maximum": 365, "default": 7, "description": "Days to wait after a reminder (last_reminder_on) before the next"},
                "subject": {"type": ["string", "null"], "default": plan::DEFAULT_SUBJECT, "description": "One-line subject template; placeholders {invoice_id} {customer} {customer_email} {amount} {currency} {due_date} {days_overdue} {as_of} {reminder_number}"},
                "body": {"type": ["string", "null"], "default": plan::DEFAULT_BODY, "description": "Plain-text body template, same placeholders as subject"},
                "cc": {"type": ["string", "array", "null"], "items": {"type": "string"}, "description": "Address or addresses copied on every reminder"},
                "bucket": {"type": ["string", "null"], "description": "Key-value bucket holding invoices/<id>; default the tenant's default bucket"},
                "max_reminders": {"type": ["integer", "null"], "minimum": 1, "maximum": 1000, "default": 100, "description": "Most reminders sent in one run; the rest wait for the next run"}
            }
        }))
        .output_schema(json!({
            "x-weft-role": "delivery",
            "type": "object",
            "required": ["as_of", "sent", "reminders", "skipped"],
            "properties": {
                "as_of": {"type": "string", "format": "date"},
                "checked": {"type": "integer", "description": "Invoice records read"},
                "sent": {"type": "integer"},
                "reminders": {"type": "array", "items": {
                    "type": "object",
                    "required": ["invoice_id", "to", "message_id", "days_overdue"],
                    "properties": {
                        "invoice_id": {"type": "string"},
                        "to": {"type": "string"},
                        "message_id": {"type": "string"},
                        "days_overdue": {"type": "integer"}
                    }
                }},
                "skipped": {"type": "array", "description": "Invoices due a reminder that got none, and unreadable records", "items": {
                    "type": "object",
                    "required": ["invoice_id", "reason"],
                    "properties": {"invoice_id": {"type": "string"}, "reason": {"type": "string"}}
                }}
            }
        }))
        .capability("kv")
        .capability("mail")
    }

    fn run(ctx: &StepContext, config: Value, input: Value) -> Result<Value, StepError> {
        let settings = Settings::parse(&config, &input)?;
        let bucket = Bucket::named_or_default(settings.bucket.as_deref())?;
        let records: Vec<_> = bucket
            .json_with_prefix(invoice::PREFIX)?
            .into_iter()
            .map(|(key, record)| (key[invoice::PREFIX.len()..].to_owned(), record))
            .collect();
        let Plan {
            reminders,
            skipped,
            checked,
        } = plan::plan(&records, &settings, &ctx.idempotency_key);

        let total = reminders.len();
        let mut sent = Vec::with_capacity(total);
        for (seq, reminder) in reminders.into_iter().enumerate() {
            host::progress((seq * 100 / total) as u8, "sending reminders");
            let message_id = host::send_mail(&host::Mail {
                to: vec![reminder.to.clone()],
                cc: settings.cc.clone(),
                subject: reminder.subject,
                body: reminder.body,
            })
            .map_err(|e| {
                StepError::retryable(format!(
                    "mail capability, reminder for invoice {}: {e}",
                    reminder.invoice_id
                ))
            })?;
            // Re-read so a change made since the listing is not overwritten.
            let key = invoice::key(&reminder.invoice_id);
            match bucket.get_json::<Value>(&key)? {
                Some(mut record) if record.is_object() => {
                    plan::record_sent(
                        &mut record,
                        settings.as_of,
                        &ctx.idempotency_key,
                        seq,
                        &message_id,
                    );
                    bucket.set_json(&key, &record)?;
                }
                _ => host::warn(&format!(
                    "{key} disappeared or changed shape after reminder {message_id} was queued; not updated"
                )),
            }
            sent.push(json!({
                "invoice_id": reminder.invoice_id,
                "to": reminder.to,
                "message_id": message_id,
                "days_overdue": reminder.days_overdue,
            }));
        }
        host::progress(100, "done");
        host::info(&format!(
            "as of {}: {checked} invoices checked, {} reminders sent, {} skipped",
            settings.as_of,
            sent.len(),
            skipped.len()
        ));
        let skipped: Vec<Value> = skipped
            .into_iter()
            .map(|(invoice_id, reason)| json!({"invoice_id": invoice_id, "reason": reason}))
            .collect();
        Ok(json!({
            "as_of": settings.as_of.iso(),
            "checked": checked,
            "sent": sent.len(),
            "reminders": sent,
            "skipped": skipped,
        }))
    }
}

export_plugin!(SendInvoiceReminder);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_declares_the_delivery_role_and_capabilities() {
        let info: weft_sdk::bindings::weft::plugin::types::PluginInfo =
            SendInvoiceReminder::describe().into();
        let schema: Value = serde_json::from_str(&info.output_schema).unwrap();
        assert_eq!(schema["x-weft-role"], "delivery");
        assert_eq!(info.capabilities, ["kv", "mail"]);
        let config: Value = serde_json::from_str(&info.config_schema).unwrap();
        let mut documented: Vec<&str> = config["properties"]
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        documented.sort_unstable();
        let mut accepted = plan::FIELDS.to_vec();
        accepted.sort_unstable();
        assert_eq!(documented, accepted);
    }
}
