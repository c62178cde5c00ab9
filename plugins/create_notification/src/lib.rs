//! `create_notification`: records an in-app notification for the people of
//! the run's tenant through the host's `notify` capability; they read it at
//! `GET /v1/notifications`.
//!
//! The host keys each notification by the attempt's idempotency key and the
//! call's position, so a retried attempt returns the same id and creates
//! nothing twice. A delivery step: a summary step's `summary` output is
//! meant to flow into `body` through a config template
//! (`"body": "{{steps.ar.output.summary}}"`).
//!
//! Config: `title` (one line, at most [`MAX_TITLE`] characters), `body`
//! (plain text, at most [`MAX_BODY`] characters), `level` (`info` by
//! default, `success`, `warning` or `error`), `audience` (a user, team or
//! role name; absent for everyone) and `link` (an `http(s)://` URL or a path
//! starting with `/`). Output: `{notification_id}`.

use weft_sdk::config::Fields;
use weft_sdk::{Plugin, PluginInfo, StepContext, StepError, Value, export_plugin, host, json};

/// Longest title, in characters: it is shown in lists.
const MAX_TITLE: usize = 200;
/// Longest body, in characters; longer reports belong in an email.
const MAX_BODY: usize = 10_000;
const MAX_AUDIENCE: usize = 200;
const MAX_LINK: usize = 2_000;
const LEVELS: [&str; 4] = ["info", "success", "warning", "error"];
const FIELDS: [&str; 5] = ["title", "body", "level", "audience", "link"];

struct CreateNotification;

/// The notification a config describes, checked.
fn notification(config: &Value) -> Result<host::Notification, StepError> {
    let fields = Fields::of(config, "");
    fields.only(&FIELDS)?;
    let title = fields.required_str("title")?.trim();
    if title.contains(['\r', '\n']) || title.chars().count() > MAX_TITLE {
        return Err(StepError::invalid_input(format!(
            "title must be one line of at most {MAX_TITLE} characters"
        )));
    }
    let body = fields
        .str("body")?
        .ok_or_else(|| StepError::invalid_input("body is required"))?;
    if body.chars().count() > MAX_BODY {
        return Err(StepError::invalid_input(format!(
            "body has {} characters; at most {MAX_BODY} fit in a notification",
            body.chars().count()
        )));
    }
    let level = fields.str("level")?.unwrap_or("info").to_ascii_lowercase();
    if !LEVELS.contains(&level.as_str()) {
        return Err(StepError::invalid_input(format!(
            "level {level:?} is not one of {}",
            LEVELS.join(", ")
        )));
    }
    let audience = fields.str("audience")?.unwrap_or("").trim();
    if audience.chars().count() > MAX_AUDIENCE || audience.contains(['\r', '\n']) {
        return Err(StepError::invalid_input(format!(
            "audience must be one name of at most {MAX_AUDIENCE} characters"
        )));
    }
    let link = fields.str("link")?.unwrap_or("").trim();
    if !link.is_empty() && !is_link(link) {
        return Err(StepError::invalid_input(format!(
            "link {link:?} must be an http(s):// URL or a path starting with /"
        )));
    }
    Ok(host::Notification {
        title: title.to_owned(),
        body: body.to_owned(),
        level,
        audience: audience.to_owned(),
        link: link.to_owned(),
    })
}

/// An absolute http(s) URL with a host, or a path within the app. Anything
/// else (`javascript:`, `//evil.example`) could do harm when rendered.
fn is_link(link: &str) -> bool {
    if link.len() > MAX_LINK || link.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return false;
    }
    if let Some(rest) = link
        .strip_prefix("https://")
        .or_else(|| link.strip_prefix("http://"))
    {
        return !rest.is_empty() && !rest.starts_with(['/', '?', '#']);
    }
    link.starts_with('/') && !link.starts_with("//")
}

impl Plugin for CreateNotification {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "create_notification",
            env!("CARGO_PKG_VERSION"),
            "Posts an in-app notification to the tenant's people; retried attempts never post twice.",
        )
        .config_schema(json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["title", "body"],
            "properties": {
                "title": {"type": "string", "minLength": 1, "maxLength": MAX_TITLE, "description": "One-line headline shown in notification lists"},
                "body": {"type": "string", "maxLength": MAX_BODY, "description": "Plain-text body, e.g. a summary step's `summary` output"},
                "level": {"type": ["string", "null"], "enum": ["info", "success", "warning", "error", null], "default": "info", "description": "Severity, for styling and filtering"},
                "audience": {"type": ["string", "null"], "maxLength": MAX_AUDIENCE, "description": "A user, team or role name; omit for everyone in the tenant"},
                "link": {"type": ["string", "null"], "maxLength": MAX_LINK, "description": "Where the notification points: an http(s):// URL or an app path starting with /"}
            }
        }))
        .output_schema(json!({
            "x-weft-role": "delivery",
            "type": "object",
            "required": ["notification_id"],
            "properties": {
                "notification_id": {"type": "string", "description": "Id of the notification, as listed at GET /v1/notifications"}
            }
        }))
        .capability("notify")
    }

    fn run(_ctx: &StepContext, config: Value, _input: Value) -> Result<Value, StepError> {
        let notification = notification(&config)?;
        let notification_id = host::notify(&notification)
            .map_err(|e| StepError::retryable(format!("notify capability: {e}")))?;
        host::info(&format!(
            "posted {} notification {notification_id}",
            notification.level
        ));
        Ok(json!({ "notification_id": notification_id }))
    }
}

export_plugin!(CreateNotification);

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(config: Value) -> String {
        match notification(&config).unwrap_err() {
            StepError::InvalidInput(m) => m,
            other => panic!("expected invalid input, got {other:?}"),
        }
    }

    #[test]
    fn fills_defaults_and_trims() {
        let n = notification(
            &json!({"title": " Overdue invoices ", "body": "3 overdue", "level": null}),
        )
        .unwrap();
        assert_eq!(n.title, "Overdue invoices");
        assert_eq!(n.body, "3 overdue");
        assert_eq!(n.level, "info");
        assert_eq!(n.audience, "");
        assert_eq!(n.link, "");

        let n = notification(&json!({
            "title": "t", "body": "", "level": "WARNING", "audience": "finance", "link": "/runs/1"
        }))
        .unwrap();
        assert_eq!(
            (n.level.as_str(), n.audience.as_str(), n.link.as_str()),
            ("warning", "finance", "/runs/1")
        );
    }

    #[test]
    fn rejects_bad_fields_by_name() {
        let cases = [
            (json!({"body": "b"}), "title is required"),
            (
                json!({"title": "  ", "body": "b"}),
                "title must not be empty",
            ),
            (
                json!({"title": "a\nb", "body": "b"}),
                "title must be one line",
            ),
            (json!({"title": "t"}), "body is required"),
            (json!({"title": "t", "body": 5}), "body must be a string"),
            (
                json!({"title": "t", "body": "b", "level": "fatal"}),
                "level \"fatal\"",
            ),
            (
                json!({"title": "t", "body": "b", "link": "javascript:alert(1)"}),
                "link \"javascript",
            ),
            (
                json!({"title": "t", "body": "b", "tittle": "x"}),
                "unknown field \"tittle\"",
            ),
            (
                json!({"title": "t", "body": "x".repeat(MAX_BODY + 1)}),
                "body has 10001 characters",
            ),
        ];
        for (config, expected) in cases {
            let m = invalid(config);
            assert!(m.contains(expected), "{m:?} lacks {expected:?}");
        }
    }

    #[test]
    fn links_are_web_urls_or_app_paths() {
        for ok in ["https://app.example.com/x?y=1", "http://h", "/runs/0190"] {
            assert!(is_link(ok), "{ok}");
        }
        for bad in [
            "//evil.example",
            "https://",
            "https:///x",
            "ftp://h",
            "runs/1",
            "/a b",
            "javascript:x",
        ] {
            assert!(!is_link(bad), "{bad}");
        }
    }

    #[test]
    fn describe_declares_the_delivery_role() {
        let info: weft_sdk::bindings::weft::plugin::types::PluginInfo =
            CreateNotification::describe().into();
        let schema: Value = serde_json::from_str(&info.output_schema).unwrap();
        assert_eq!(schema["x-weft-role"], "delivery");
        assert_eq!(info.capabilities, ["notify"]);
    }
}
