//! What a run is about: labels (`customer: c-42`) given at start, rendered
//! from the definition's `labels` templates, or named by a preset; and
//! presets, a workflow's saved inputs.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::template::{self, Root};
use super::{Engine, EngineError};
use crate::db::{self, presets::PresetRow};

/// Most labels on one run.
pub const MAX_LABELS: usize = 20;
/// Longest label name, in bytes.
pub const MAX_NAME: usize = 64;
/// Longest label value, in characters.
pub const MAX_VALUE: usize = 256;
/// Most labels one `GET /v1/runs` filters by.
pub const MAX_FILTERS: usize = 5;
/// The label a run started from a preset carries, valued by its name.
pub const PRESET_LABEL: &str = "preset";
/// Most presets of one workflow.
pub const MAX_PRESETS: i64 = 100;
/// Largest preset input, as JSON text.
pub const MAX_PRESET_BYTES: usize = 64 * 1024;

/// Labels by name.
pub type Labels = BTreeMap<String, String>;

/// Why a label name is refused, if it is.
pub fn check_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "label name {name:?} must be 1-{MAX_NAME} letters, digits, _ - . or /, starting with a letter or digit"
        ))
    }
}

/// Why a label value is refused, if it is.
pub fn check_value(name: &str, value: &str) -> Result<(), String> {
    let length = value.chars().count();
    if length == 0 || length > MAX_VALUE {
        return Err(format!(
            "label {name:?} must have a value of 1-{MAX_VALUE} characters, found {length}"
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(format!(
            "label {name:?} has a control character in its value"
        ));
    }
    Ok(())
}

/// Checks a run's labels: names, values and how many.
pub fn check(labels: &Labels) -> Result<(), String> {
    if labels.len() > MAX_LABELS {
        return Err(format!(
            "a run has at most {MAX_LABELS} labels, found {}",
            labels.len()
        ));
    }
    for (name, value) in labels {
        check_name(name)?;
        check_value(name, value)?;
    }
    Ok(())
}

/// A `?label=name:value` filter as `(name, value)`.
pub fn parse_filter(filter: &str) -> Result<(String, String), String> {
    let Some((name, value)) = filter.split_once(':') else {
        return Err(format!(
            "label filter {filter:?} must be name:value, e.g. customer:c-42"
        ));
    };
    check_name(name)?;
    check_value(name, value)?;
    Ok((name.to_owned(), value.to_owned()))
}

/// Problems with a definition's `labels` templates: names, how many, and
/// references to anything but `input` (a run's labels are set at start).
pub fn check_templates(labels: &BTreeMap<String, String>) -> Vec<String> {
    let mut problems = Vec::new();
    if labels.len() > MAX_LABELS {
        problems.push(format!(
            "labels: at most {MAX_LABELS}, found {}",
            labels.len()
        ));
    }
    for (name, text) in labels {
        if let Err(e) = check_name(name) {
            problems.push(format!("labels: {e}"));
        }
        match template::references(&Value::String(text.clone())) {
            Err(e) => problems.push(format!("labels.{name}: {e}")),
            Ok(refs) => {
                for r in refs.iter().filter(|r| r.root != Root::Input) {
                    problems.push(format!(
                        "labels.{name}: {} is not known when the run starts; labels can use input only",
                        r.text
                    ));
                }
            }
        }
    }
    problems
}

/// The definition's label templates rendered over `input`. A template
/// that renders to null or to empty text (an optional reference to a
/// missing field) sets no label; numbers and booleans become their text.
/// Errors are named `labels.<name>`.
pub fn render(templates: &BTreeMap<String, String>, input: &Value) -> Result<Labels, String> {
    let mut labels = Labels::new();
    for (name, text) in templates {
        let what = format!("labels.{name}");
        if let Some(value) = render_one(&what, text, input)? {
            check_value(name, &value).map_err(|e| format!("{what}: {e}"))?;
            labels.insert(name.clone(), value);
        }
    }
    Ok(labels)
}

/// One template over `input` as text, `None` for null or empty text;
/// errors name it as `what`.
pub fn render_one(what: &str, text: &str, input: &Value) -> Result<Option<String>, String> {
    let steps = BTreeMap::<String, Value>::new();
    let run = Value::Null;
    let scope = template::Scope {
        input,
        steps: &steps,
        run: &run,
        failure: None,
        item: None,
    };
    let value = template::render(&Value::String(text.to_owned()), &scope)
        .map_err(|e| format!("{what}: {e}"))?;
    Ok(match value {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        other => {
            return Err(format!(
                "{what} must render to text, a number or a boolean, found {other}"
            ));
        }
    })
}

/// `input` with `preset` under it: objects merge key by key (the run's own
/// value wins), a null input takes the preset's whole.
pub fn merge_under(preset: Value, input: Value) -> Result<Value, String> {
    match (preset, input) {
        (preset, Value::Null) => Ok(preset),
        (Value::Object(mut base), Value::Object(over)) => {
            for (key, value) in over {
                let merged = match base.remove(&key) {
                    Some(below @ Value::Object(_)) if value.is_object() => {
                        merge_under(below, value)?
                    }
                    _ => value,
                };
                base.insert(key, merged);
            }
            Ok(Value::Object(base))
        }
        (_, _) => Err(
            "a run started from a preset needs an object input (or none) to merge with the preset's"
                .into(),
        ),
    }
}

/// A preset as the engine hands it out.
#[derive(Debug, Clone)]
pub struct Preset {
    pub workflow: String,
    pub name: String,
    pub description: Option<String>,
    pub input: Value,
    pub created_at: i64,
    pub updated_at: i64,
}

impl From<PresetRow> for Preset {
    fn from(row: PresetRow) -> Self {
        Self {
            workflow: row.workflow_key,
            name: row.name,
            description: row.description,
            input: serde_json::from_str(&row.input).unwrap_or(Value::Null),
            created_at: row.created_at,
            updated_at: row.updated_at,
        }
    }
}

/// The preset name rules: those of step ids.
fn check_preset_name(name: &str) -> Result<(), EngineError> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid {
        Ok(())
    } else {
        Err(EngineError::InvalidInput(format!(
            "preset name {name:?} must be 1-{MAX_NAME} letters, digits, _ - or ., starting with a letter or digit"
        )))
    }
}

impl Engine {
    /// Creates or replaces a preset of `workflow`; true if it was created.
    pub async fn put_preset(
        &self,
        tenant: &str,
        workflow: &str,
        name: &str,
        description: Option<String>,
        input: Value,
    ) -> Result<(Preset, bool), EngineError> {
        check_preset_name(name)?;
        if !input.is_object() {
            return Err(EngineError::InvalidInput(
                "a preset's input must be a JSON object (it is merged under each run's input)"
                    .into(),
            ));
        }
        let text = input.to_string();
        if text.len() > MAX_PRESET_BYTES {
            return Err(EngineError::InvalidInput(format!(
                "a preset's input is at most {MAX_PRESET_BYTES} bytes of JSON, found {}",
                text.len()
            )));
        }
        if let Some(d) = &description
            && d.chars().count() > 1000
        {
            return Err(EngineError::InvalidInput(
                "a preset's description is at most 1000 characters".into(),
            ));
        }
        // The workflow must exist (any version).
        self.get_workflow(tenant, workflow, &super::workflows::Selector::Latest)
            .await?;
        let now = db::now_ms();
        let mut tx = self.db.begin().await?;
        db::lock(&mut tx, &db::workflow_lock(tenant, workflow)).await?;
        let existing = db::presets::get(&mut tx, tenant, workflow, name).await?;
        if existing.is_none() && db::presets::count(&mut tx, tenant, workflow).await? >= MAX_PRESETS
        {
            return Err(EngineError::Conflict(format!(
                "workflow {workflow:?} already has {MAX_PRESETS} presets, as many as it may; delete one first"
            )));
        }
        let row = PresetRow {
            tenant_id: tenant.to_owned(),
            workflow_key: workflow.to_owned(),
            name: name.to_owned(),
            description,
            input: text,
            created_at: existing.as_ref().map_or(now, |e| e.created_at),
            updated_at: now,
        };
        db::presets::upsert(&mut tx, &row).await?;
        tx.commit().await.map_err(db::DbError::from)?;
        Ok((row.into(), existing.is_none()))
    }

    pub async fn get_preset(
        &self,
        tenant: &str,
        workflow: &str,
        name: &str,
    ) -> Result<Preset, EngineError> {
        let mut conn = self.db.reader().await?;
        db::presets::get(&mut conn, tenant, workflow, name)
            .await?
            .map(Preset::from)
            .ok_or_else(|| {
                EngineError::NotFound(format!("preset {name:?} of workflow {workflow:?}"))
            })
    }

    pub async fn list_presets(
        &self,
        tenant: &str,
        workflow: &str,
    ) -> Result<Vec<Preset>, EngineError> {
        self.get_workflow(tenant, workflow, &super::workflows::Selector::Latest)
            .await?;
        let mut conn = self.db.reader().await?;
        let rows = db::presets::list(&mut conn, tenant, workflow).await?;
        Ok(rows.into_iter().map(Preset::from).collect())
    }

    pub async fn delete_preset(
        &self,
        tenant: &str,
        workflow: &str,
        name: &str,
    ) -> Result<(), EngineError> {
        let mut conn = self.db.writer().await?;
        if db::presets::delete(&mut conn, tenant, workflow, name).await? {
            Ok(())
        } else {
            Err(EngineError::NotFound(format!(
                "preset {name:?} of workflow {workflow:?}"
            )))
        }
    }

    /// The run's input and labels once its preset, if any, is applied:
    /// the preset's input under the run's, and the label `preset: <name>`.
    pub(crate) async fn apply_preset(
        &self,
        tenant: &str,
        workflow: &str,
        preset: Option<&str>,
        input: Value,
        labels: &mut Labels,
    ) -> Result<Value, EngineError> {
        let Some(name) = preset else {
            return Ok(input);
        };
        let found = self.get_preset(tenant, workflow, name).await?;
        labels
            .entry(PRESET_LABEL.to_owned())
            .or_insert_with(|| name.to_owned());
        merge_under(found.input, input).map_err(EngineError::InvalidInput)
    }
}

/// Labels as the JSON text stored on a run (`None` without any).
pub fn to_column(labels: &Labels) -> Option<String> {
    (!labels.is_empty()).then(|| json!(labels).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_split_at_the_first_colon() {
        assert_eq!(
            parse_filter("customer:c-42").unwrap(),
            ("customer".into(), "c-42".into())
        );
        assert_eq!(
            parse_filter("url:https://x").unwrap(),
            ("url".into(), "https://x".into())
        );
        assert!(parse_filter("customer").unwrap_err().contains("name:value"));
        assert!(parse_filter("customer:").unwrap_err().contains("1-256"));
        assert!(parse_filter(":x").unwrap_err().contains("label name"));
    }

    #[test]
    fn a_preset_merges_under_the_input() {
        let merged = merge_under(
            json!({"a": 1, "nested": {"x": 1, "y": 2}, "keep": true}),
            json!({"a": 2, "nested": {"y": 3}}),
        )
        .unwrap();
        assert_eq!(
            merged,
            json!({"a": 2, "nested": {"x": 1, "y": 3}, "keep": true})
        );
        assert_eq!(
            merge_under(json!({"a": 1}), Value::Null).unwrap(),
            json!({"a": 1})
        );
        assert!(merge_under(json!({"a": 1}), json!([1])).is_err());
    }

    #[test]
    fn label_templates_read_input_only() {
        let templates = BTreeMap::from([
            ("customer".to_owned(), "{{input.customer.id}}".to_owned()),
            ("count".to_owned(), "{{input.n}}".to_owned()),
            ("missing".to_owned(), "{{input.nope?}}".to_owned()),
        ]);
        assert!(check_templates(&templates).is_empty());
        let labels = render(&templates, &json!({"customer": {"id": "c-42"}, "n": 3})).unwrap();
        assert_eq!(
            labels,
            Labels::from([
                ("customer".into(), "c-42".into()),
                ("count".into(), "3".into())
            ])
        );
        let bad = BTreeMap::from([("x".to_owned(), "{{steps.a.output}}".to_owned())]);
        assert!(check_templates(&bad)[0].contains("input only"));
    }
}
