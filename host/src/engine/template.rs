//! Templates in step configs (being written).
#![allow(
    dead_code,
    unused_variables,
    reason = "temporary stub until the real module lands"
)]
use serde_json::Value;
use std::collections::BTreeMap;
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    Input,
    Step(String),
    Run,
    Failure,
}
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub root: Root,
    pub path: Vec<String>,
    pub optional: bool,
    pub text: String,
}
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("malformed template {text}: {reason}")]
    Malformed { text: String, reason: String },
}
pub struct Scope<'a> {
    pub input: &'a Value,
    pub steps: &'a BTreeMap<String, Value>,
    pub run: &'a Value,
    pub failure: Option<&'a Value>,
}
pub fn references(value: &Value) -> Result<Vec<Reference>, TemplateError> {
    Ok(Vec::new())
}
pub fn render(value: &Value, scope: &Scope<'_>) -> Result<Value, TemplateError> {
    Ok(value.clone())
}
pub fn condition(expr: &Value, scope: &Scope<'_>) -> Result<bool, TemplateError> {
    Ok(expr.as_bool().unwrap_or(true))
}
pub fn condition_references(expr: &Value) -> Result<Vec<Reference>, TemplateError> {
    Ok(Vec::new())
}
