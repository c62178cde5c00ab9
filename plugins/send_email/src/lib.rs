//! `send_email`: queues a message in the tenant's outbox through the host's
//! mail capability. The host keys it by the attempt's idempotency key, so a
//! retried attempt never sends twice; it is delivered by SMTP when the
//! operator configured SMTP.

use weft_sdk::{Plugin, PluginInfo, StepContext, StepError, Value, export_plugin, host, json};

struct SendEmail;

/// Longest subject we accept; mail servers fold or reject longer ones.
const MAX_SUBJECT: usize = 998;
/// At most this many recipients across `to` and `cc`.
const MAX_RECIPIENTS: usize = 100;

fn addresses(config: &Value, field: &str) -> Result<Vec<String>, StepError> {
    let list = match &config[field] {
        Value::Null => return Ok(Vec::new()),
        Value::String(one) => vec![one.clone()],
        Value::Array(items) => items
            .iter()
            .map(|v| {
                v.as_str().map(str::to_owned).ok_or_else(|| {
                    StepError::invalid_input(format!("{field} must list strings, found {v}"))
                })
            })
            .collect::<Result<_, _>>()?,
        other => {
            return Err(StepError::invalid_input(format!(
                "{field} must be a string or a list of strings, found {other}"
            )));
        }
    };
    for address in &list {
        if !host::is_plausible_address(address) {
            return Err(StepError::invalid_input(format!(
                "{field} has {address:?}, which is not an email address"
            )));
        }
    }
    Ok(list)
}

fn text(config: &Value, field: &str) -> Result<String, StepError> {
    match &config[field] {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Err(StepError::invalid_input(format!("{field} is required"))),
        other => Ok(other.to_string()),
    }
}

impl Plugin for SendEmail {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "send_email",
            env!("CARGO_PKG_VERSION"),
            "Sends an email through the tenant's outbox; retried attempts never send twice.",
        )
        .config_schema(json!({
            "type": "object",
            "required": ["to", "subject", "body"],
            "properties": {
                "to": {"type": ["string", "array"], "items": {"type": "string"}, "description": "Recipient address or addresses"},
                "cc": {"type": ["string", "array"], "items": {"type": "string"}},
                "subject": {"type": "string", "maxLength": MAX_SUBJECT},
                "body": {"type": "string", "description": "Plain-text body"}
            }
        }))
        .output_schema(json!({
            "x-weft-role": "delivery",
            "type": "object",
            "required": ["message_id"],
            "properties": {
                "message_id": {"type": "string"},
                "recipients": {"type": "integer"}
            }
        }))
        .capability("mail")
    }

    fn run(_ctx: &StepContext, config: Value, _input: Value) -> Result<Value, StepError> {
        let to = addresses(&config, "to")?;
        let cc = addresses(&config, "cc")?;
        if to.is_empty() {
            return Err(StepError::invalid_input(
                "to must name at least one recipient",
            ));
        }
        if to.len() + cc.len() > MAX_RECIPIENTS {
            return Err(StepError::invalid_input(format!(
                "at most {MAX_RECIPIENTS} recipients, found {}",
                to.len() + cc.len()
            )));
        }
        let subject = text(&config, "subject")?;
        if subject.len() > MAX_SUBJECT || subject.contains(['\r', '\n']) {
            return Err(StepError::invalid_input(format!(
                "subject must be one line of at most {MAX_SUBJECT} bytes"
            )));
        }
        let body = text(&config, "body")?;
        let recipients = to.len() + cc.len();
        let message_id = host::send_mail(&host::Mail {
            to,
            cc,
            subject,
            body,
        })
        .map_err(|e| StepError::retryable(format!("mail capability: {e}")))?;
        host::info(&format!(
            "queued message {message_id} for {recipients} recipient(s)"
        ));
        Ok(json!({ "message_id": message_id, "recipients": recipients }))
    }
}

export_plugin!(SendEmail);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_accept_one_or_many_and_name_the_field() {
        assert_eq!(
            addresses(&json!({"to": "a@b.co"}), "to").unwrap(),
            ["a@b.co"]
        );
        assert_eq!(addresses(&json!({}), "cc").unwrap(), Vec::<String>::new());
        let error = addresses(&json!({"cc": ["a@b.co", "nope"]}), "cc").unwrap_err();
        assert!(error.to_string().contains("cc has \"nope\""), "{error}");
    }

    #[test]
    fn describe_declares_the_delivery_role() {
        let info: weft_sdk::bindings::weft::plugin::types::PluginInfo =
            SendEmail::describe().into();
        let schema: Value = serde_json::from_str(&info.output_schema).unwrap();
        assert_eq!(schema["x-weft-role"], "delivery");
    }
}
