//! `forms_submission_digest`: a digest of form submissions in a time
//! window: how many per form, the latest ones with the fields that matter,
//! and a plain-text `summary` ready to be an email or notification body.
//! A summary step: the host expects it to feed a delivery step.
//!
//! # Data
//!
//! A submission is `{"submitted_at": RFC 3339 or YYYY-MM-DD, "email"?:
//! string, "fields"?: {name: value}}`. They come from, in this order:
//!
//! 1. `config.submissions`, else `input.submissions`: an array of
//!    submissions, each optionally with `id` and `form` (missing: `form`
//!    from config, else `unnamed`; `id`: the position, from 1).
//! 2. Otherwise the key-value store (the tenant's default bucket unless
//!    `bucket` is set): `forms/<form>/submissions/<id>`, all forms or only
//!    `form`. Other keys under `forms/` are ignored.
//!
//! `form` filters either source. `since` (inclusive) and `until` (exclusive;
//! a plain date includes that whole day) filter on `submitted_at`; both are
//! optional. Items are newest first; `count` and `forms` cover every
//! matching submission, `items` only the first `max_items`. `fields`
//! chooses which answers to show (missing ones are `null`); without it all
//! are shown. Timestamps are normalised to UTC (`2026-03-07T14:02:00Z`).
//! A submission that cannot be read (no `submitted_at`, `fields` not an
//! object) is listed under `skipped` by its key or `submissions[i]`.

use std::collections::BTreeMap;

use weft_finance::report::count;
use weft_finance::{Timestamp, Window};
use weft_sdk::config::Fields;
use weft_sdk::kv::Bucket;
use weft_sdk::{Plugin, PluginInfo, StepContext, StepError, Value, export_plugin, host, json};

const FIELDS: [&str; 7] = [
    "form",
    "since",
    "until",
    "fields",
    "max_items",
    "bucket",
    "submissions",
];
const PREFIX: &str = "forms/";
const SUBMISSIONS: &str = "/submissions/";
const UNNAMED: &str = "unnamed";
/// A field value longer than this is cut in the text summary.
const MAX_VALUE_CHARS: usize = 200;

struct FormsSubmissionDigest;

/// The step's config, checked.
#[derive(Debug)]
struct Settings<'a> {
    form: Option<&'a str>,
    window: Window,
    fields: Option<Vec<&'a str>>,
    max_items: usize,
    bucket: Option<&'a str>,
}

impl<'a> Settings<'a> {
    fn parse(config: &'a Value) -> Result<Self, StepError> {
        let f = Fields::of(config, "");
        f.only(&FIELDS)?;
        let form = f.str("form")?.map(str::trim);
        if let Some(form) = form.filter(|f| f.is_empty() || f.contains('/')) {
            return Err(StepError::invalid_input(format!(
                "form {form:?} must be a non-empty name without '/'"
            )));
        }
        Ok(Self {
            form,
            window: Window::parse(f.str("since")?, f.str("until")?)
                .map_err(StepError::invalid_input)?,
            fields: f.strings("fields")?,
            max_items: f.u64("max_items", 0..=1000)?.unwrap_or(50) as usize,
            bucket: f.str("bucket")?,
        })
    }
}

/// One submission, read.
#[derive(Debug, Clone, PartialEq)]
struct Submission {
    id: String,
    form: String,
    submitted_at: Timestamp,
    email: Option<String>,
    fields: serde_json::Map<String, Value>,
}

impl Submission {
    /// Reads a record; the error names the field that is wrong.
    fn read(id: String, form: String, record: &Value) -> Result<Self, String> {
        if !record.is_object() {
            return Err(format!("not a JSON object: {record}"));
        }
        let submitted_at = record["submitted_at"]
            .as_str()
            .and_then(Timestamp::parse)
            .ok_or_else(|| {
                format!(
                    "submitted_at {} is not an RFC 3339 timestamp",
                    record["submitted_at"]
                )
            })?;
        let email = match &record["email"] {
            Value::Null => None,
            Value::String(s) => Some(s.clone()),
            other => return Err(format!("email must be a string, found {other}")),
        };
        let fields = match &record["fields"] {
            Value::Null => serde_json::Map::new(),
            Value::Object(map) => map.clone(),
            other => return Err(format!("fields must be an object, found {other}")),
        };
        Ok(Self {
            id,
            form,
            submitted_at,
            email,
            fields,
        })
    }

    /// The answers to show: the chosen ones (missing as `null`), or all.
    fn shown(&self, chosen: Option<&[&str]>) -> serde_json::Map<String, Value> {
        match chosen {
            None => self.fields.clone(),
            Some(names) => names
                .iter()
                .map(|n| {
                    (
                        (*n).to_owned(),
                        self.fields.get(*n).cloned().unwrap_or(Value::Null),
                    )
                })
                .collect(),
        }
    }
}

/// Submissions given inline; `form` fills in and filters `form`.
fn inline(list: &[Value], form: Option<&str>) -> (Vec<Submission>, Vec<(String, String)>) {
    let (mut read, mut skipped) = (Vec::new(), Vec::new());
    for (i, item) in list.iter().enumerate() {
        let item_form = item["form"].as_str().map(str::to_owned);
        if let (Some(wanted), Some(actual)) = (form, item_form.as_deref())
            && wanted != actual
        {
            continue;
        }
        let id = match &item["id"] {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            _ => (i + 1).to_string(),
        };
        let form = item_form
            .or_else(|| form.map(str::to_owned))
            .unwrap_or_else(|| UNNAMED.to_owned());
        match Submission::read(id, form, item) {
            Ok(s) => read.push(s),
            Err(reason) => skipped.push((format!("submissions[{i}]"), reason)),
        }
    }
    (read, skipped)
}

/// `(form, id)` of a `forms/<form>/submissions/<id>` key.
fn split_key(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix(PREFIX)?;
    let (form, id) = rest.split_once(SUBMISSIONS)?;
    (!form.is_empty() && !form.contains('/') && !id.is_empty()).then_some((form, id))
}

/// Submissions read from the store, `(key, record or why not)`.
fn stored(records: &[(String, Result<Value, String>)]) -> (Vec<Submission>, Vec<(String, String)>) {
    let (mut read, mut skipped) = (Vec::new(), Vec::new());
    for (key, record) in records {
        let Some((form, id)) = split_key(key) else {
            continue;
        };
        let result = record
            .as_ref()
            .map_err(String::clone)
            .and_then(|r| Submission::read(id.to_owned(), form.to_owned(), r));
        match result {
            Ok(s) => read.push(s),
            Err(reason) => skipped.push((key.clone(), reason)),
        }
    }
    (read, skipped)
}

/// The digest of `submissions` (already filtered by form) in the window.
fn digest(
    mut submissions: Vec<Submission>,
    skipped: &[(String, String)],
    settings: &Settings<'_>,
) -> Value {
    submissions.retain(|s| settings.window.contains(s.submitted_at));
    submissions.sort_by(|a, b| {
        b.submitted_at
            .cmp(&a.submitted_at)
            .then_with(|| a.form.cmp(&b.form))
            .then_with(|| a.id.cmp(&b.id))
    });
    let mut forms: BTreeMap<&str, usize> = BTreeMap::new();
    for s in &submissions {
        *forms.entry(&s.form).or_default() += 1;
    }
    let shown = &submissions[..submissions.len().min(settings.max_items)];
    let items: Vec<Value> = shown
        .iter()
        .map(|s| {
            json!({
                "id": s.id,
                "form": s.form,
                "submitted_at": s.submitted_at.to_string(),
                "email": s.email,
                "fields": s.shown(settings.fields.as_deref()),
            })
        })
        .collect();
    let skipped_json: Vec<Value> = skipped
        .iter()
        .map(|(id, reason)| json!({"id": id, "reason": reason}))
        .collect();
    json!({
        "count": submissions.len(),
        "forms": forms,
        "items": items,
        "truncated": shown.len() < submissions.len(),
        "window": {
            "since": settings.window.since.map(|t| t.to_string()),
            "until": settings.window.until.map(|t| t.to_string()),
        },
        "skipped": skipped_json,
        "summary": summary(&submissions, shown, &forms, skipped.len(), settings),
    })
}

/// Plain text: a headline, then one block per shown submission.
fn summary(
    all: &[Submission],
    shown: &[Submission],
    forms: &BTreeMap<&str, usize>,
    skipped: usize,
    settings: &Settings<'_>,
) -> String {
    let window = settings.window.describe();
    let mut lines = Vec::new();
    if all.is_empty() {
        lines.push(format!("No form submissions ({window})."));
    } else {
        let per_form: Vec<String> = forms.iter().map(|(f, n)| format!("{f}: {n}")).collect();
        lines.push(format!(
            "{} ({window}): {}.",
            count(all.len(), "form submission"),
            per_form.join(", ")
        ));
    }
    for s in shown {
        let at = s.submitted_at.to_string();
        let mut head = format!("{} {} UTC | {}", &at[..10], &at[11..16], s.form);
        if let Some(email) = &s.email {
            head.push_str(" | ");
            head.push_str(email);
        }
        lines.push(String::new());
        lines.push(head);
        for (name, value) in s.shown(settings.fields.as_deref()) {
            lines.push(format!("  {name}: {}", one_line(&value)));
        }
    }
    if shown.len() < all.len() {
        lines.push(String::new());
        lines.push(format!("{} more not shown.", all.len() - shown.len()));
    }
    if skipped > 0 {
        lines.push(String::new());
        lines.push(format!(
            "{} could not be read and {} left out.",
            count(skipped, "submission"),
            if skipped == 1 { "is" } else { "are" }
        ));
    }
    lines.join("\n")
}

/// A value on one line, cut at [`MAX_VALUE_CHARS`]: strings as text, `-`
/// for null, anything else as JSON.
fn one_line(value: &Value) -> String {
    let text = match value {
        Value::Null => return "-".to_owned(),
        Value::String(s) => s.split_whitespace().collect::<Vec<_>>().join(" "),
        other => other.to_string(),
    };
    match text.char_indices().nth(MAX_VALUE_CHARS) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

impl Plugin for FormsSubmissionDigest {
    fn describe() -> PluginInfo {
        let submission = json!({
            "type": "object",
            "required": ["submitted_at"],
            "properties": {
                "id": {"type": ["string", "integer"]},
                "form": {"type": "string"},
                "submitted_at": {"type": "string", "description": "RFC 3339 timestamp or YYYY-MM-DD"},
                "email": {"type": ["string", "null"]},
                "fields": {"type": "object"}
            }
        });
        PluginInfo::new(
            "forms_submission_digest",
            env!("CARGO_PKG_VERSION"),
            "Digests form submissions in a time window: counts per form, the latest answers, and a plain-text summary.",
        )
        .config_schema(json!({
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "form": {"type": ["string", "null"], "pattern": "^[^/]+$", "description": "Only this form; default all forms"},
                "since": {"type": ["string", "null"], "description": "Inclusive lower bound on submitted_at: RFC 3339 timestamp or YYYY-MM-DD"},
                "until": {"type": ["string", "null"], "description": "Exclusive upper bound on submitted_at; a YYYY-MM-DD includes that whole day"},
                "fields": {"type": ["array", "null"], "items": {"type": "string"}, "description": "Which answers to show per item; default all"},
                "max_items": {"type": ["integer", "null"], "minimum": 0, "maximum": 1000, "default": 50, "description": "Most items listed (newest first); counts cover all"},
                "bucket": {"type": ["string", "null"], "description": "Key-value bucket holding forms/<form>/submissions/<id>; default the tenant's default bucket"},
                "submissions": {"type": ["array", "null"], "items": submission, "description": "Submissions to digest instead of the store's (input.submissions works too)"}
            }
        }))
        .input_schema(json!({
            "type": "object",
            "properties": {"submissions": {"type": "array", "items": submission}}
        }))
        .output_schema(json!({
            "x-weft-role": "summary",
            "type": "object",
            "required": ["count", "forms", "items", "summary"],
            "properties": {
                "count": {"type": "integer", "description": "Matching submissions, all of them"},
                "forms": {"type": "object", "additionalProperties": {"type": "integer"}, "description": "Matching submissions per form"},
                "items": {"type": "array", "items": {
                    "type": "object",
                    "required": ["id", "form", "submitted_at", "email", "fields"],
                    "properties": {
                        "id": {"type": "string"},
                        "form": {"type": "string"},
                        "submitted_at": {"type": "string", "description": "UTC, RFC 3339"},
                        "email": {"type": ["string", "null"]},
                        "fields": {"type": "object"}
                    }
                }},
                "truncated": {"type": "boolean", "description": "true when max_items left some out"},
                "window": {"type": "object", "properties": {"since": {"type": ["string", "null"]}, "until": {"type": ["string", "null"], "description": "Exclusive"}}},
                "skipped": {"type": "array", "items": {"type": "object", "properties": {"id": {"type": "string"}, "reason": {"type": "string"}}}},
                "summary": {"type": "string", "description": "Plain-text digest for an email or notification body"}
            }
        }))
        .capability("kv")
    }

    fn run(_ctx: &StepContext, config: Value, input: Value) -> Result<Value, StepError> {
        let settings = Settings::parse(&config)?;
        let inline_list = match Fields::of(&config, "")
            .get("submissions")
            .or_else(|| Fields::of(&input, "input").get("submissions"))
        {
            None => None,
            Some(Value::Array(list)) => Some(list),
            Some(other) => {
                return Err(StepError::invalid_input(format!(
                    "submissions must be a list, found {other}"
                )));
            }
        };
        let (submissions, skipped) = match inline_list {
            Some(list) => inline(list, settings.form),
            None => {
                let bucket = Bucket::named_or_default(settings.bucket)?;
                let prefix = match settings.form {
                    Some(form) => format!("{PREFIX}{form}{SUBMISSIONS}"),
                    None => PREFIX.to_owned(),
                };
                host::progress(10, "reading submissions");
                stored(&bucket.json_with_prefix(&prefix)?)
            }
        };
        host::progress(90, "building the digest");
        let out = digest(submissions, &skipped, &settings);
        host::info(&format!(
            "{} submissions in the window, {} skipped",
            out["count"],
            skipped.len()
        ));
        Ok(out)
    }
}

export_plugin!(FormsSubmissionDigest);

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(config: &Value) -> Settings<'_> {
        Settings::parse(config).unwrap()
    }

    fn sub(at: &str, email: Option<&str>, fields: Value) -> Value {
        json!({"submitted_at": at, "email": email, "fields": fields})
    }

    #[test]
    fn store_keys_name_the_form_and_id() {
        assert_eq!(
            split_key("forms/contact/submissions/0190-a"),
            Some(("contact", "0190-a"))
        );
        for other in [
            "forms/contact",
            "forms/contact/schema",
            "forms//submissions/1",
            "forms/a/b/submissions/1",
            "forms/contact/submissions/",
            "other/x",
        ] {
            assert_eq!(split_key(other), None, "{other}");
        }
    }

    #[test]
    fn digests_stored_submissions_newest_first_within_the_window() {
        let records = vec![
            (
                "forms/contact/submissions/1".to_owned(),
                Ok(sub(
                    "2026-03-01T09:00:00Z",
                    Some("a@x.io"),
                    json!({"name": "Ada"}),
                )),
            ),
            (
                "forms/contact/submissions/2".to_owned(),
                Ok(sub(
                    "2026-03-07T23:30:00-02:00",
                    None,
                    json!({"name": "Bob", "msg": "Hi\nthere"}),
                )),
            ),
            (
                "forms/signup/submissions/3".to_owned(),
                Ok(sub("2026-03-05", Some("c@x.io"), json!({"plan": "pro"}))),
            ),
            (
                "forms/signup/submissions/4".to_owned(),
                Ok(sub("2026-02-27T12:00:00Z", None, json!({}))),
            ),
            (
                "forms/signup/submissions/5".to_owned(),
                Ok(json!({"fields": {}})),
            ),
            (
                "forms/signup/submissions/6".to_owned(),
                Err("not JSON: eof".to_owned()),
            ),
            (
                "forms/signup/definition".to_owned(),
                Ok(json!({"ignored": true})),
            ),
        ];
        let (subs, skipped) = stored(&records);
        assert_eq!(skipped.len(), 2);
        assert!(
            skipped[0].1.starts_with("submitted_at null"),
            "{:?}",
            skipped[0]
        );
        let config = json!({"since": "2026-03-01", "until": "2026-03-07"});
        let out = digest(subs, &skipped, &settings(&config));
        assert_eq!(out["count"], 2, "the 23:30-02:00 one is on March 8 UTC");
        assert_eq!(out["forms"], json!({"contact": 1, "signup": 1}));
        assert_eq!(out["items"][0]["id"], "3");
        assert_eq!(out["items"][0]["submitted_at"], "2026-03-05T00:00:00Z");
        assert_eq!(out["items"][1]["email"], "a@x.io");
        assert_eq!(out["window"]["until"], "2026-03-08T00:00:00Z");
        assert_eq!(out["truncated"], false);
        assert_eq!(
            out["summary"],
            "2 form submissions (from 2026-03-01 to 2026-03-07): contact: 1, signup: 1.\n\
             \n\
             2026-03-05 00:00 UTC | signup | c@x.io\n  plan: pro\n\
             \n\
             2026-03-01 09:00 UTC | contact | a@x.io\n  name: Ada\n\
             \n\
             2 submissions could not be read and are left out."
        );
    }

    #[test]
    fn inline_submissions_take_form_and_id_defaults_and_filter_by_form() {
        let list = vec![
            json!({"id": 7, "form": "contact", "submitted_at": "2026-03-01T10:00:00Z", "fields": {"a": 1}}),
            json!({"form": "signup", "submitted_at": "2026-03-01T11:00:00Z"}),
            json!({"submitted_at": "2026-03-01T12:00:00Z", "fields": {"a": 2}}),
            json!({"submitted_at": "2026-03-01T13:00:00Z", "fields": "oops"}),
        ];
        let (subs, skipped) = inline(&list, Some("contact"));
        let ids: Vec<(&str, &str)> = subs
            .iter()
            .map(|s| (s.id.as_str(), s.form.as_str()))
            .collect();
        assert_eq!(ids, [("7", "contact"), ("3", "contact")]);
        assert_eq!(
            skipped,
            [(
                "submissions[3]".to_owned(),
                "fields must be an object, found \"oops\"".to_owned()
            )]
        );

        let (subs, _) = inline(&list[2..3], None);
        assert_eq!(subs[0].form, UNNAMED);
    }

    #[test]
    fn chosen_fields_and_max_items_shape_the_items() {
        let list: Vec<Value> = (1..=3)
            .map(|d| json!({"submitted_at": format!("2026-03-0{d}"), "fields": {"name": format!("n{d}"), "secret": "x", "long": "y".repeat(300)}}))
            .collect();
        let (subs, skipped) = inline(&list, None);
        let config = json!({"fields": ["name", "phone", "long"], "max_items": 2});
        let out = digest(subs, &skipped, &settings(&config));
        assert_eq!(out["count"], 3);
        assert_eq!(out["items"].as_array().unwrap().len(), 2);
        assert_eq!(out["truncated"], true);
        assert_eq!(out["items"][0]["fields"]["name"], "n3");
        assert_eq!(out["items"][0]["fields"]["phone"], Value::Null);
        assert!(out["items"][0]["fields"].get("secret").is_none());
        let summary = out["summary"].as_str().unwrap();
        assert!(summary.contains("  phone: -\n"), "{summary}");
        assert!(
            summary.contains(&format!("  long: {}...", "y".repeat(200))),
            "{summary}"
        );
        assert!(summary.ends_with("1 more not shown."), "{summary}");
        assert!(
            summary.starts_with("3 form submissions (all time): unnamed: 3."),
            "{summary}"
        );
    }

    #[test]
    fn an_empty_window_says_so() {
        let config = json!({"since": "2026-03-01T00:00:00Z"});
        let out = digest(Vec::new(), &[], &settings(&config));
        assert_eq!(out["count"], 0);
        assert_eq!(out["summary"], "No form submissions (since 2026-03-01).");
    }

    #[test]
    fn settings_name_bad_fields() {
        let cases = [
            (json!({"form": "a/b"}), "form \"a/b\""),
            (json!({"since": "last week"}), "since \"last week\""),
            (
                json!({"since": "2026-03-02", "until": "2026-03-01"}),
                "until must be later than since",
            ),
            (
                json!({"fields": "name"}),
                "fields must be a list of strings",
            ),
            (
                json!({"max_items": 5000}),
                "max_items must be a whole number from 0 to 1000",
            ),
            (json!({"limit": 5}), "unknown field \"limit\""),
        ];
        for (config, expected) in cases {
            let e = Settings::parse(&config).unwrap_err().to_string();
            assert!(e.contains(expected), "{e:?} lacks {expected:?}");
        }
    }

    #[test]
    fn describe_declares_the_summary_role() {
        let info: weft_sdk::bindings::weft::plugin::types::PluginInfo =
            FormsSubmissionDigest::describe().into();
        let schema: Value = serde_json::from_str(&info.output_schema).unwrap();
        assert_eq!(schema["x-weft-role"], "summary");
        assert_eq!(info.capabilities, ["kv"]);
    }
}
