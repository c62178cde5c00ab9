//! `http_request`: one outbound HTTP call through `wasi:http`. The host lets
//! it through only to hosts the step is granted.
//!
//! A 5xx answer or a transport failure is a retryable error, a 4xx answer a
//! fatal one, unless the status is listed in `accept_status`. A JSON response
//! body comes back as JSON, anything else as text.
//!
//! Every request except GET, HEAD and OPTIONS carries an `Idempotency-Key`
//! header (unless the config sets one): the step's idempotency key, the
//! same for every attempt of the step, so an API that honours the header
//! (payment providers do) applies a retried request once.

use weft_sdk::http::{self, Request};
use weft_sdk::{Plugin, PluginInfo, StepContext, StepError, Value, export_plugin, host, json};

const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

struct HttpRequest;

fn build(config: &Value, idempotency_key: &str) -> Result<Request, StepError> {
    let url = config["url"]
        .as_str()
        .ok_or_else(|| StepError::invalid_input("url is required and must be a string"))?;
    let method = config["method"]
        .as_str()
        .unwrap_or("GET")
        .to_ascii_uppercase();
    if !METHODS.contains(&method.as_str()) {
        return Err(StepError::invalid_input(format!(
            "method {method:?} is not one of {METHODS:?}"
        )));
    }
    let mut request = Request::new(&method, url);
    match &config["headers"] {
        Value::Null => {}
        Value::Object(map) => {
            for (name, value) in map {
                let value = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                request = request.header(name, &value);
            }
        }
        other => {
            return Err(StepError::invalid_input(format!(
                "headers must be an object of name to value, found {other}"
            )));
        }
    }
    let safe = matches!(method.as_str(), "GET" | "HEAD" | "OPTIONS");
    if !safe
        && !request
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("idempotency-key"))
    {
        request = request.header("Idempotency-Key", idempotency_key);
    }
    match &config["body"] {
        Value::Null => {}
        Value::String(text) => request = request.body(text.clone().into_bytes()),
        json_body => {
            if !request
                .headers
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            {
                request = request.header("content-type", "application/json");
            }
            request = request.body(json_body.to_string().into_bytes());
        }
    }
    Ok(request)
}

impl Plugin for HttpRequest {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "http_request",
            env!("CARGO_PKG_VERSION"),
            "Makes one HTTP request to a granted host and returns status, headers and body.",
        )
        .config_schema(json!({
            "type": "object",
            "required": ["url"],
            "properties": {
                "method": {"type": "string", "enum": METHODS},
                "url": {"type": "string", "pattern": "^https?://"},
                "headers": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}},
                "body": {"description": "A string is sent as is; anything else as JSON"},
                "accept_status": {"type": "array", "items": {"type": "integer"}, "description": "Statuses >= 400 that still count as success"}
            }
        }))
        .output_schema(json!({
            "x-weft-role": "delivery",
            "type": "object",
            "properties": {
                "status": {"type": "integer"},
                "headers": {"type": "object"},
                "body": {}
            }
        }))
        .capability("http:*")
    }

    fn run(ctx: &StepContext, config: Value, _input: Value) -> Result<Value, StepError> {
        let request = build(&config, &ctx.idempotency_key)?;
        host::info(&format!("{} {}", request.method, request.url));
        let response = http::send(&request)?;
        let accepted = config["accept_status"].as_array().is_some_and(|list| {
            list.iter()
                .any(|s| s.as_u64() == Some(u64::from(response.status)))
        });
        let text = response.text();
        if !accepted && response.status >= 500 {
            return Err(StepError::retryable(format!(
                "{} answered {}: {}",
                request.url,
                response.status,
                snippet(&text)
            )));
        }
        if !accepted && response.status >= 400 {
            return Err(StepError::fatal(format!(
                "{} answered {}: {}",
                request.url,
                response.status,
                snippet(&text)
            )));
        }
        let is_json = response
            .header("content-type")
            .is_some_and(|ct| ct.contains("json"));
        let body = if is_json {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        } else {
            Value::String(text)
        };
        let headers: serde_json::Map<String, Value> = response
            .headers
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), Value::String(v.clone())))
            .collect();
        Ok(json!({ "status": response.status, "headers": headers, "body": body }))
    }
}

fn snippet(text: &str) -> &str {
    let end = text.char_indices().nth(200).map_or(text.len(), |(i, _)| i);
    &text[..end]
}

export_plugin!(HttpRequest);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_validates_config() {
        assert!(build(&json!({}), "k").is_err());
        assert!(build(&json!({"url": "https://x.y", "method": "BREW"}), "k").is_err());
        assert!(build(&json!({"url": "https://x.y", "headers": [1]}), "k").is_err());
        let r = build(
            &json!({"url": "https://x.y", "method": "post", "body": {"a": 1}}),
            "run/step",
        )
        .unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(r.body.as_deref(), Some(&b"{\"a\":1}"[..]));
        assert!(
            r.headers
                .iter()
                .any(|(k, v)| k == "content-type" && v == "application/json")
        );
        assert!(
            r.headers
                .iter()
                .any(|(k, v)| k == "Idempotency-Key" && v == "run/step")
        );
        let get = build(&json!({"url": "https://x.y"}), "run/step").unwrap();
        assert!(get.headers.is_empty(), "{:?}", get.headers);
        let own = build(
            &json!({"url": "https://x.y", "method": "PUT", "headers": {"idempotency-key": "mine"}}),
            "run/step",
        )
        .unwrap();
        assert_eq!(own.headers.len(), 1);
    }

    #[test]
    fn describe_declares_the_delivery_role() {
        let info: weft_sdk::bindings::weft::plugin::types::PluginInfo =
            HttpRequest::describe().into();
        let schema: Value = serde_json::from_str(&info.output_schema).unwrap();
        assert_eq!(schema["x-weft-role"], "delivery");
    }
}
