//! The page an assignee opens from a task link, `/t/<token>`: no API key,
//! no JavaScript, nothing from other origins (CSP `default-src 'self'`).
//! It shows the task's title and description and either a form generated
//! from the `collect_inputs` schema or the `request_user_action` buttons;
//! posting it answers the task. It reads nothing of the tenant but the one
//! task the token signs.
//!
//! Forms: field names are `f` + the JSON pointer of the value (`f/address/city`,
//! `f/items/0/sku`); values are typed by the schema (numbers, booleans,
//! enums as selects, anything else as JSON text). Arrays get "Add" and
//! "Remove" buttons that post the form and show it again one row longer or
//! shorter, so they work without scripts. Properties are shown in the
//! order of the schema's `x-order` list if it has one, else required ones
//! first in `required` order, then the rest by name.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};

use super::AppState;
use crate::db::tasks::TaskRow;
use crate::engine::tasks::{Answer, LinkError, declines_of};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/t/-/task.css", get(stylesheet))
        .route("/t/{token}", get(show).post(answer))
}

const CSS: &str = include_str!("task_page.css");

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        CSS,
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct ShowQuery {
    answered: Option<String>,
}

async fn show(
    State(state): State<AppState>,
    Path(token): Path<String>,
    query: Result<Query<ShowQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let query = query.map_or(ShowQuery { answered: None }, |Query(q)| q);
    match state.engine.open_link(&token).await {
        Ok(task) => form_page(&task, None, &[], StatusCode::OK),
        Err(LinkError::Closed(task)) => {
            closed_page(&task, query.answered.is_some(), StatusCode::OK)
        }
        Err(e) => error_page(e),
    }
}

async fn answer(
    State(state): State<AppState>,
    Path(token): Path<String>,
    body: Result<axum::Form<Vec<(String, String)>>, axum::extract::rejection::FormRejection>,
) -> Response {
    let Ok(axum::Form(fields)) = body else {
        return message_page(
            StatusCode::BAD_REQUEST,
            "Could not read the form",
            "The form could not be read. Go back, reload the page and try again.",
        );
    };
    // Only a task that can still be answered gets this far.
    let task = match state.engine.open_link(&token).await {
        Ok(task) => task,
        Err(LinkError::Closed(task)) => {
            return closed_page(&task, false, StatusCode::CONFLICT);
        }
        Err(e) => return error_page(e),
    };
    let form: Value = serde_json::from_str(&task.form).unwrap_or(Value::Null);
    let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in fields {
        values.entry(name).or_default().push(value);
    }
    let answer = if let Some(action) = values.get("_action").and_then(|v| v.first()) {
        Answer::Action(action.clone())
    } else {
        let schema = form.get("schema").cloned().unwrap_or(json!({}));
        let mut data = collect(&schema, "", &values).unwrap_or(json!({}));
        let edit = |key: &str| values.get(key).and_then(|v| v.first()).cloned();
        // Add and Remove name an array of the schema; anything else is
        // ignored (the pointer comes from the client).
        if let Some(pointer) = edit("_add") {
            if is_array_of(&schema, &pointer) {
                match data.pointer_mut(&pointer) {
                    Some(Value::Array(items)) if items.len() < MAX_ROWS => items.push(Value::Null),
                    Some(Value::Array(_)) => {}
                    _ => {
                        if let Some(slot) = set_pointer(&mut data, &pointer) {
                            *slot = json!([null]);
                        }
                    }
                }
            }
            return form_page(&task, Some(&data), &[], StatusCode::OK);
        }
        if let Some(pointer) = edit("_remove") {
            if let Some((array, index)) = pointer.rsplit_once('/')
                && is_array_of(&schema, array)
                && let Ok(index) = index.parse::<usize>()
                && let Some(Value::Array(items)) = data.pointer_mut(array)
                && index < items.len()
            {
                items.remove(index);
            }
            return form_page(&task, Some(&data), &[], StatusCode::OK);
        }
        Answer::Data(data)
    };
    let submitted = match &answer {
        Answer::Data(data) => Some(data.clone()),
        Answer::Action(_) => None,
    };
    match state.engine.answer_link(&token, answer).await {
        Ok(_) => {
            let mut response = StatusCode::SEE_OTHER.into_response();
            if let Ok(location) = HeaderValue::from_str(&format!("{token}?answered=1")) {
                response.headers_mut().insert(header::LOCATION, location);
            }
            secure(response)
        }
        Err(LinkError::Invalid(problems)) => form_page(
            &task,
            submitted.as_ref(),
            &problems,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        Err(LinkError::Closed(task)) => closed_page(&task, false, StatusCode::CONFLICT),
        Err(e) => error_page(e),
    }
}

/// Most rows an array of a form shows.
const MAX_ROWS: usize = 200;

/// Whether `pointer` names an array in forms of `schema`: each step of it
/// a property of an object or an index into an array, at most 32 deep.
fn is_array_of(schema: &Value, pointer: &str) -> bool {
    let mut at = schema;
    for (depth, part) in pointer.split('/').skip(1).enumerate() {
        if depth >= 32 {
            return false;
        }
        at = match type_of(at) {
            "object" => match at["properties"].get(part.replace("~1", "/").replace("~0", "~")) {
                Some(next) => next,
                None => return false,
            },
            "array" if part.parse::<usize>().is_ok_and(|i| i < MAX_ROWS) => &at["items"],
            _ => return false,
        };
    }
    !pointer.is_empty() && type_of(at) == "array"
}

/// Makes room for a value at `pointer` (its parents as objects).
fn set_pointer<'a>(data: &'a mut Value, pointer: &str) -> Option<&'a mut Value> {
    let mut at = data;
    for part in pointer.split('/').skip(1) {
        let part = part.replace("~1", "/").replace("~0", "~");
        if !at.is_object() {
            *at = json!({});
        }
        at = at.as_object_mut()?.entry(part).or_insert(Value::Null);
    }
    Some(at)
}

fn error_page(e: LinkError) -> Response {
    match e {
        LinkError::NotFound => message_page(
            StatusCode::NOT_FOUND,
            "This link is not valid",
            "The link is incomplete or was changed. Open it again from the message you received, or ask the sender for a new one.",
        ),
        LinkError::Closed(task) => closed_page(&task, false, StatusCode::GONE),
        LinkError::Invalid(problems) => message_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The answer was not accepted",
            &problems
                .into_iter()
                .map(|(_, m)| m)
                .collect::<Vec<_>>()
                .join("; "),
        ),
        LinkError::Engine(e) => {
            tracing::warn!(error = %e, "task link");
            message_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Something went wrong",
                "Your answer could not be recorded just now. Please try again in a minute.",
            )
        }
    }
}

/// A task that can no longer be answered. Never says who else answered
/// or why it was revoked: that is another task's business.
fn closed_page(task: &TaskRow, just_answered: bool, status: StatusCode) -> Response {
    let (status, title, text) = match task.status.as_str() {
        "completed" | "declined" if just_answered => (
            StatusCode::OK,
            "Thank you",
            format!("Your answer to \u{201c}{}\u{201d} was recorded. You can close this page.", task.title),
        ),
        "completed" | "declined" => (
            status,
            "Already answered",
            format!(
                "\u{201c}{}\u{201d} was already answered with this link. Each link can be used once.",
                task.title
            ),
        ),
        "expired" => (
            StatusCode::GONE,
            "This link has expired",
            "The time to answer this request has passed. Ask the sender if you still need to respond.".into(),
        ),
        _ => (
            StatusCode::GONE,
            "This link is no longer valid",
            "This request was withdrawn or no longer needs your answer. Nothing else is needed from you.".into(),
        ),
    };
    message_page(status, title, &text)
}

fn message_page(status: StatusCode, title: &str, text: &str) -> Response {
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>{}</h1>\n<p class=\"message\">{}</p>\n",
        esc(title),
        esc(text)
    );
    page(status, title, &body)
}

fn page(status: StatusCode, title: &str, main: &str) -> Response {
    let html = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<meta name=\"robots\" content=\"noindex\">\n<title>{}</title>\n<link rel=\"stylesheet\" href=\"-/task.css\">\n</head>\n<body>\n<main>\n{main}</main>\n</body>\n</html>\n",
        esc(title)
    );
    secure(
        (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html,
        )
            .into_response(),
    )
}

/// The headers every page carries: no scripts or other origins, not
/// framed, not cached, and the token in the URL never sent as a referrer.
fn secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers.insert("x-robots-tag", HeaderValue::from_static("noindex"));
    response
}

/// The task's page: title, description, and its form or buttons.
fn form_page(
    task: &TaskRow,
    data: Option<&Value>,
    problems: &[(String, String)],
    status: StatusCode,
) -> Response {
    let form: Value = serde_json::from_str(&task.form).unwrap_or(Value::Null);
    let mut body = String::new();
    let _ = writeln!(body, "<h1>{}</h1>", esc(&task.title));
    if let Some(description) = &task.description {
        let _ = writeln!(
            body,
            "<div class=\"description\">{}</div>",
            markdown(description)
        );
    }
    if !problems.is_empty() {
        body.push_str(
            "<div class=\"problems\" role=\"alert\" id=\"problems\">\n<h2>Please check your answer</h2>\n<ul>\n",
        );
        for (at, message) in problems {
            let field = if at.is_empty() {
                String::new()
            } else {
                format!("{}: ", esc(&label_of_pointer(at)))
            };
            let _ = writeln!(body, "<li>{field}{}</li>", esc(message));
        }
        body.push_str("</ul>\n</div>\n");
    }
    body.push_str("<form method=\"post\">\n");
    if task.kind == "request_user_action" {
        let declines = declines_of(&form);
        body.push_str("<div class=\"actions\">\n");
        for action in form["actions"].as_array().into_iter().flatten() {
            let Some(action) = action.as_str() else {
                continue;
            };
            let class = if declines.iter().any(|d| d == action) {
                "secondary"
            } else {
                "primary"
            };
            let _ = writeln!(
                body,
                "<button type=\"submit\" name=\"_action\" value=\"{}\" class=\"{class}\">{}</button>",
                esc(action),
                esc(&humanize(action))
            );
        }
        body.push_str("</div>\n");
    } else {
        // Enter in a field presses the form's first submit button: make
        // that Submit, not an array's Add or Remove.
        body.push_str("<button type=\"submit\" class=\"default\" tabindex=\"-1\" aria-hidden=\"true\">Submit</button>\n");
        let schema = form.get("schema").cloned().unwrap_or(json!({}));
        let errors: BTreeMap<&str, Vec<&str>> =
            problems.iter().fold(BTreeMap::new(), |mut map, (at, m)| {
                map.entry(at.as_str()).or_default().push(m.as_str());
                map
            });
        let mut ids = 0;
        field(
            &mut body,
            &Field {
                schema: &schema,
                pointer: "",
                label: "",
                required: true,
                value: data,
                errors: &errors,
            },
            &mut ids,
        );
        body.push_str("<div class=\"actions\">\n<button type=\"submit\" class=\"primary\">Submit</button>\n</div>\n");
    }
    body.push_str("</form>\n");
    let _ = writeln!(
        body,
        "<p class=\"note\">This page is for {} and works once.{}</p>",
        esc(&task.assignee),
        task.expires_at
            .map(|at| format!(" It expires at {}.", crate::engine::rfc3339(at)))
            .unwrap_or_default()
    );
    page(status, &task.title, &body)
}

struct Field<'a> {
    schema: &'a Value,
    pointer: &'a str,
    label: &'a str,
    required: bool,
    value: Option<&'a Value>,
    errors: &'a BTreeMap<&'a str, Vec<&'a str>>,
}

fn type_of(schema: &Value) -> &str {
    match &schema["type"] {
        Value::String(t) => t,
        Value::Array(types) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or(""),
        _ if schema.get("properties").is_some() => "object",
        _ if schema.get("enum").is_some() => "enum",
        _ => "",
    }
}

/// Property names in display order.
fn ordered_properties(schema: &Value) -> Vec<&str> {
    let Some(properties) = schema["properties"].as_object() else {
        return Vec::new();
    };
    let mut order: Vec<&str> = Vec::new();
    let listed = schema["x-order"]
        .as_array()
        .or_else(|| schema["required"].as_array());
    for name in listed.into_iter().flatten().filter_map(Value::as_str) {
        if properties.contains_key(name) && !order.contains(&name) {
            order.push(name);
        }
    }
    for name in properties.keys() {
        if !order.contains(&name.as_str()) {
            order.push(name);
        }
    }
    order
}

fn field(out: &mut String, f: &Field<'_>, ids: &mut usize) {
    *ids += 1;
    let id = format!("f{ids}");
    let name = format!("f{}", f.pointer);
    let title = f.schema["title"].as_str().unwrap_or(f.label);
    let hint = f.schema["description"].as_str();
    let errors = f.errors.get(f.pointer);
    let described = {
        let mut ids = Vec::new();
        if hint.is_some() {
            ids.push(format!("{id}-hint"));
        }
        if errors.is_some() {
            ids.push(format!("{id}-error"));
        }
        if ids.is_empty() {
            String::new()
        } else {
            format!(" aria-describedby=\"{}\"", ids.join(" "))
        }
    };
    let invalid = if errors.is_some() {
        " aria-invalid=\"true\""
    } else {
        ""
    };
    let required = if f.required && !f.pointer.is_empty() {
        " <span class=\"required\">(required)</span>"
    } else {
        ""
    };
    let hint_html = hint
        .map(|h| format!("<p class=\"hint\" id=\"{id}-hint\">{}</p>\n", esc(h)))
        .unwrap_or_default();
    let error_html = errors
        .map(|list| {
            format!(
                "<p class=\"error\" id=\"{id}-error\">{}</p>\n",
                esc(&list.join("; "))
            )
        })
        .unwrap_or_default();
    match type_of(f.schema) {
        "object" => {
            let nested = !f.pointer.is_empty();
            if nested {
                let _ = writeln!(out, "<fieldset>\n<legend>{}{required}</legend>", esc(title));
                out.push_str(&hint_html);
                out.push_str(&error_html);
            }
            let required: Vec<&str> = f.schema["required"]
                .as_array()
                .map(|r| r.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            for key in ordered_properties(f.schema) {
                let pointer = format!(
                    "{}/{}",
                    f.pointer,
                    key.replace('~', "~0").replace('/', "~1")
                );
                let label = humanize(key);
                field(
                    out,
                    &Field {
                        schema: &f.schema["properties"][key],
                        pointer: &pointer,
                        label: &label,
                        required: required.contains(&key),
                        value: f.value.and_then(|v| v.get(key)),
                        errors: f.errors,
                    },
                    ids,
                );
            }
            if nested {
                out.push_str("</fieldset>\n");
            }
        }
        "array" => {
            let items = &f.schema["items"];
            let min = f.schema["minItems"]
                .as_u64()
                .unwrap_or(0)
                .min(MAX_ROWS as u64) as usize;
            let max = f.schema["maxItems"]
                .as_u64()
                .map_or(usize::MAX, |m| m as usize);
            let current = f.value.and_then(Value::as_array);
            let rows = current
                .map_or(0, Vec::len)
                .max(min)
                .max(1)
                .min(max.max(1))
                .min(MAX_ROWS);
            let _ = writeln!(out, "<fieldset>\n<legend>{}{required}</legend>", esc(title));
            out.push_str(&hint_html);
            out.push_str(&error_html);
            let item_label = items["title"]
                .as_str()
                .map_or_else(|| singular(title), str::to_owned);
            for i in 0..rows {
                let pointer = format!("{}/{i}", f.pointer);
                let label = format!("{item_label} {}", i + 1);
                out.push_str("<div class=\"row\">\n");
                field(
                    out,
                    &Field {
                        schema: items,
                        pointer: &pointer,
                        label: &label,
                        required: i < min,
                        value: current.and_then(|c| c.get(i)),
                        errors: f.errors,
                    },
                    ids,
                );
                if rows > min.max(1) || (rows > min && rows > 1) {
                    let _ = writeln!(
                        out,
                        "<button type=\"submit\" name=\"_remove\" value=\"{}\" class=\"small\">Remove {}</button>",
                        esc(&pointer),
                        esc(&label)
                    );
                }
                out.push_str("</div>\n");
            }
            if rows < max && rows < MAX_ROWS {
                let _ = writeln!(
                    out,
                    "<button type=\"submit\" name=\"_add\" value=\"{}\" class=\"small\">Add {}</button>",
                    esc(f.pointer),
                    esc(&item_label.to_lowercase())
                );
            }
            out.push_str("</fieldset>\n");
        }
        "boolean" => {
            let checked = if f.value.and_then(Value::as_bool) == Some(true) {
                " checked"
            } else {
                ""
            };
            let _ = write!(
                out,
                "<div class=\"field check\">\n<input type=\"checkbox\" id=\"{id}\" name=\"{}\" value=\"true\"{checked}{described}{invalid}>\n<label for=\"{id}\">{}{required}</label>\n{hint_html}{error_html}</div>\n",
                esc(&name),
                esc(title)
            );
        }
        kind => {
            let _ = write!(
                out,
                "<div class=\"field\">\n<label for=\"{id}\">{}{required}</label>\n{hint_html}",
                esc(title)
            );
            let aria = format!(
                "{described}{invalid}{}",
                if f.required {
                    " aria-required=\"true\""
                } else {
                    ""
                }
            );
            if let Some(options) = f.schema["enum"].as_array() {
                let _ = writeln!(out, "<select id=\"{id}\" name=\"{}\"{aria}>", esc(&name));
                if !f.required || f.value.is_none() {
                    out.push_str("<option value=\"\">Choose…</option>\n");
                }
                for option in options {
                    let text = serde_json::to_string(option).unwrap_or_default();
                    let selected = if f.value == Some(option) {
                        " selected"
                    } else {
                        ""
                    };
                    let shown = option.as_str().map_or_else(|| text.clone(), str::to_owned);
                    let _ = writeln!(
                        out,
                        "<option value=\"{}\"{selected}>{}</option>",
                        esc(&text),
                        esc(&shown)
                    );
                }
                out.push_str("</select>\n");
            } else {
                let shown = match f.value {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                };
                let input = |kind: &str, extra: &str| {
                    format!(
                        "<input type=\"{kind}\" id=\"{id}\" name=\"{}\" value=\"{}\"{extra}{aria}>\n",
                        esc(&name),
                        esc(&shown)
                    )
                };
                let long = f.schema["format"].as_str() == Some("textarea")
                    || f.schema["maxLength"].as_u64().is_some_and(|m| m > 500);
                let html = match (kind, f.schema["format"].as_str()) {
                    ("integer", _) => input("number", " step=\"1\" inputmode=\"numeric\""),
                    ("number", _) => input("number", " step=\"any\" inputmode=\"decimal\""),
                    ("string", Some("date")) => input("date", ""),
                    ("string", Some("email")) => input("email", " autocomplete=\"email\""),
                    ("string", Some("uri")) => input("url", ""),
                    ("string", _) if !long => input("text", ""),
                    ("string", _) => format!(
                        "<textarea id=\"{id}\" name=\"{}\" rows=\"5\"{aria}>{}</textarea>\n",
                        esc(&name),
                        esc(&shown)
                    ),
                    _ => format!(
                        "<textarea id=\"{id}\" name=\"{}\" rows=\"4\" class=\"json\"{aria}>{}</textarea>\n<p class=\"hint\">As JSON.</p>\n",
                        esc(&name),
                        esc(&shown)
                    ),
                };
                out.push_str(&html);
            }
            out.push_str(&error_html);
            out.push_str("</div>\n");
        }
    }
}

/// The form's value at `pointer`, typed by its schema; `None` when left
/// empty.
fn collect(schema: &Value, pointer: &str, form: &BTreeMap<String, Vec<String>>) -> Option<Value> {
    let name = format!("f{pointer}");
    let text = || {
        form.get(&name)
            .and_then(|v| v.first())
            .map(|s| s.trim().to_owned())
    };
    match type_of(schema) {
        "object" => {
            let mut map = Map::new();
            for key in ordered_properties(schema) {
                let child = format!("{pointer}/{}", key.replace('~', "~0").replace('/', "~1"));
                if let Some(value) = collect(&schema["properties"][key], &child, form) {
                    map.insert(key.to_owned(), value);
                }
            }
            (pointer.is_empty() || !map.is_empty()).then_some(Value::Object(map))
        }
        "array" => {
            let prefix = format!("{name}/");
            let mut indexes: Vec<usize> = form
                .keys()
                .filter_map(|k| k.strip_prefix(&prefix))
                .filter_map(|rest| rest.split('/').next()?.parse().ok())
                .collect();
            indexes.sort_unstable();
            indexes.dedup();
            if indexes.is_empty() {
                return None;
            }
            let items: Vec<Value> = indexes
                .into_iter()
                .filter_map(|i| collect(&schema["items"], &format!("{pointer}/{i}"), form))
                .collect();
            Some(Value::Array(items))
        }
        "boolean" => Some(Value::Bool(text().as_deref() == Some("true"))),
        _ if schema.get("enum").is_some() => {
            let text = text().filter(|t| !t.is_empty())?;
            Some(serde_json::from_str(&text).unwrap_or(Value::String(text)))
        }
        "integer" => {
            let text = text().filter(|t| !t.is_empty())?;
            Some(
                text.parse::<i64>()
                    .map_or_else(|_| Value::String(text), Value::from),
            )
        }
        "number" => {
            let text = text().filter(|t| !t.is_empty())?;
            Some(match text.parse::<f64>() {
                Ok(n) if n.is_finite() => serde_json::from_str(&text).unwrap_or(json!(n)),
                _ => Value::String(text),
            })
        }
        "string" => {
            let raw = form.get(&name).and_then(|v| v.first())?;
            (!raw.trim().is_empty()).then(|| Value::String(raw.clone()))
        }
        _ => {
            let text = text().filter(|t| !t.is_empty())?;
            Some(serde_json::from_str(&text).unwrap_or(Value::String(text)))
        }
    }
}

/// A field's label from a problem's JSON pointer: `/items/0/sku` → `Items
/// 1 › Sku`.
fn label_of_pointer(pointer: &str) -> String {
    pointer
        .split('/')
        .skip(1)
        .map(|p| match p.parse::<usize>() {
            Ok(i) => i.saturating_add(1).to_string(),
            Err(_) => humanize(&p.replace("~1", "/").replace("~0", "~")),
        })
        .collect::<Vec<_>>()
        .join(" › ")
}

/// `due_date` → `Due date`.
fn humanize(key: &str) -> String {
    let spaced = key.replace(['_', '-'], " ");
    let mut chars = spaced.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn singular(title: &str) -> String {
    title
        .strip_suffix("ies")
        .map(|s| format!("{s}y"))
        .or_else(|| title.strip_suffix('s').map(str::to_owned))
        .unwrap_or_else(|| format!("{title} item"))
}

/// HTML-escapes text for element content and quoted attributes.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A small, safe Markdown: paragraphs, `#` headings, `-`/`*` lists,
/// `**bold**`, `*emphasis*`, `` `code` `` and `[links](https://…)`
/// (http, https and mailto only). Everything is escaped first; no raw HTML
/// passes.
pub fn markdown(text: &str) -> String {
    let mut out = String::new();
    for block in text.replace("\r\n", "\n").split("\n\n") {
        let lines: Vec<&str> = block.lines().filter(|l| !l.trim().is_empty()).collect();
        if lines.is_empty() {
            continue;
        }
        let is_item = |l: &str| {
            let l = l.trim_start();
            l.starts_with("- ") || l.starts_with("* ")
        };
        if lines.iter().all(|l| is_item(l)) {
            out.push_str("<ul>\n");
            for line in lines {
                let _ = writeln!(out, "<li>{}</li>", inline(&line.trim_start()[2..]));
            }
            out.push_str("</ul>\n");
        } else if let Some(heading) = lines[0].strip_prefix('#') {
            let level = 2 + heading.chars().take_while(|c| *c == '#').count().min(2);
            let _ = writeln!(
                out,
                "<h{level}>{}</h{level}>",
                inline(heading.trim_start_matches('#').trim())
            );
            if lines.len() > 1 {
                let _ = writeln!(
                    out,
                    "<p>{}</p>",
                    inline(&lines[1..].join("\n")).replace('\n', "<br>")
                );
            }
        } else {
            let _ = writeln!(
                out,
                "<p>{}</p>",
                inline(&lines.join("\n")).replace('\n', "<br>")
            );
        }
    }
    out
}

/// `text` with every character Markdown gives a meaning escaped with a
/// backslash: shown as typed by [`markdown`].
pub fn escape_markdown(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(
            c,
            '\\' | '`' | '*' | '_' | '[' | ']' | '(' | ')' | '#' | '-'
        ) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Inline Markdown over escaped text.
fn inline(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('\\')
            && let Some(c) = after.chars().next()
            && c.is_ascii_punctuation()
        {
            out.push_str(&esc(&c.to_string()));
            rest = &after[c.len_utf8()..];
        } else if let Some(after) = rest.strip_prefix('`')
            && let Some(end) = after.find('`')
        {
            let _ = write!(out, "<code>{}</code>", esc(&after[..end]));
            rest = &after[end + 1..];
        } else if let Some(after) = rest.strip_prefix("**")
            && let Some(end) = after.find("**")
            && end > 0
        {
            let _ = write!(out, "<strong>{}</strong>", inline(&after[..end]));
            rest = &after[end + 2..];
        } else if let Some(after) = rest.strip_prefix('*')
            && let Some(end) = after.find('*')
            && end > 0
        {
            let _ = write!(out, "<em>{}</em>", inline(&after[..end]));
            rest = &after[end + 1..];
        } else if let Some(after) = rest.strip_prefix('[')
            && let Some(close) = after.find("](")
            && let Some(end) = after[close + 2..].find(')')
        {
            let label = &after[..close];
            let url = &after[close + 2..close + 2 + end];
            let safe = ["https://", "http://", "mailto:"]
                .iter()
                .any(|p| url.starts_with(p))
                && !url.contains(['"', '<', '>', ' ']);
            if safe {
                let _ = write!(
                    out,
                    "<a href=\"{}\" rel=\"noopener noreferrer nofollow\">{}</a>",
                    esc(url),
                    inline(label)
                );
            } else {
                out.push_str(&esc(&format!("[{label}]({url})")));
            }
            rest = &after[close + 3 + end..];
        } else {
            let c = rest.chars().next().unwrap_or_default();
            out.push_str(&esc(&c.to_string()));
            rest = &rest[c.len_utf8()..];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::tasks::form_problems;

    #[test]
    fn markdown_passes_no_html_and_only_safe_links() {
        let html = markdown(
            "# Contract\n\nPlease **sign** the <script>alert(1)</script> [terms](https://example.com/t).\n\n- one\n- [bad](javascript:alert(1))",
        );
        assert!(!html.contains("<script"), "{html}");
        assert!(html.contains("&lt;script&gt;"), "{html}");
        assert!(html.contains("<strong>sign</strong>"), "{html}");
        assert!(
            html.contains(
                "<a href=\"https://example.com/t\" rel=\"noopener noreferrer nofollow\">terms</a>"
            ),
            "{html}"
        );
        assert!(!html.contains("href=\"javascript"), "{html}");
        assert!(html.contains("<h2>Contract</h2>"), "{html}");
        assert!(html.contains("<li>one</li>"), "{html}");
    }

    #[test]
    fn escaped_values_show_as_typed() {
        let value = "[Sign here](https://evil.example) # *now*";
        let html = markdown(&format!("Contract: {}", escape_markdown(value)));
        assert!(!html.contains("<a "), "{html}");
        assert!(!html.contains("<em>"), "{html}");
        assert!(
            html.contains("[Sign here](https://evil.example) # *now*"),
            "{html}"
        );
        let heading = markdown(&escape_markdown("# not a heading\n- nor a list"));
        assert!(
            !heading.contains("<h2>") && !heading.contains("<li>"),
            "{heading}"
        );
    }

    #[test]
    fn form_fields_become_typed_json_by_the_schema() {
        let schema = json!({"type": "object", "required": ["name"], "properties": {
            "name": {"type": "string"},
            "age": {"type": "integer"},
            "agree": {"type": "boolean"},
            "size": {"enum": ["s", "m", 3]},
            "address": {"type": "object", "properties": {"city": {"type": "string"}}},
            "items": {"type": "array", "items": {"type": "object", "properties": {
                "sku": {"type": "string"}, "qty": {"type": "number"}}}}
        }});
        let mut form: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in [
            ("f/name", "Ada"),
            ("f/age", "36"),
            ("f/size", "3"),
            ("f/address/city", "London"),
            ("f/items/0/sku", "A-1"),
            ("f/items/0/qty", "2.5"),
            ("f/items/1/sku", "B-2"),
            ("f/items/1/qty", "x"),
        ] {
            form.entry(k.into()).or_default().push(v.into());
        }
        let data = collect(&schema, "", &form).unwrap();
        assert_eq!(
            data,
            json!({"name": "Ada", "age": 36, "agree": false, "size": 3,
                   "address": {"city": "London"},
                   "items": [{"sku": "A-1", "qty": 2.5}, {"sku": "B-2", "qty": "x"}]})
        );
        let problems = form_problems(&schema, &data);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].0, "/items/1/qty");
    }
}
