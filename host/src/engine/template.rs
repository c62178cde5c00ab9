//! `{{…}}` templates in step configs and `if` conditions.
//!
//! A reference names a root and a dot-separated path: `{{input.order.id}}`,
//! `{{steps.fetch.output.items.0.name}}`, `{{steps.fetch.status}}`,
//! `{{run.id}}`, `{{failure.error}}` (only inside a `catch` step). Keys with
//! odd characters go in brackets (`{{input["first name"]}}`), and so may
//! indexes (`{{input.items[0]}}`). A trailing `?` makes a reference optional:
//! a missing value becomes null, or nothing when interpolated.
//!
//! A string that is exactly one template keeps the type of the value it
//! names, so `"{{input.amount}}"` renders as the number `12.5`; templates
//! among other text are interpolated, strings raw and everything else as
//! compact JSON. `\{{` writes a literal `{{`.
//!
//! Parsing is separate from resolving so that definitions can be checked on
//! save ([`references`], [`condition_references`]) with the same grammar the
//! scheduler later renders with.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde_json::{Number, Value};

/// Where a reference points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    Input,
    Step(String),
    Run,
    Failure,
}

/// One `{{…}}` reference, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub root: Root,
    /// Segments below the root. For a step it starts with `output`, `status`
    /// or `error`, since it indexes the step's record.
    pub path: Vec<String>,
    /// Written with a trailing `?`: a missing value is null, not an error.
    pub optional: bool,
    /// The template as written, e.g. `{{steps.a.output.id}}`, for messages.
    pub text: String,
}

/// Why a template or condition could not be parsed or rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `text` is the template, or the whole condition when its shape is wrong.
    #[error("malformed template {text}: {reason}")]
    Malformed { text: String, reason: String },
    /// `at` is the path that exists; `missing` the segment it lacks.
    #[error("{reference} refers to a missing value: {at} has no {missing:?}")]
    Missing {
        reference: String,
        at: String,
        missing: String,
    },
    #[error("{reference} is only available in a catch step")]
    OutsideCatch { reference: String },
    #[error(
        "cannot evaluate {expression}: cannot order {left} and {right}, only two numbers or two strings"
    )]
    Incomparable {
        expression: String,
        left: &'static str,
        right: &'static str,
    },
}

/// The values templates can reach while a step runs. `steps` maps step id to
/// that step's record: `{"output": …, "status": "completed", "error": null}`.
pub struct Scope<'a> {
    pub input: &'a Value,
    pub steps: &'a BTreeMap<String, Value>,
    pub run: &'a Value,
    /// `{"step": …, "error": …}` while a `catch` step runs; otherwise none.
    pub failure: Option<&'a Value>,
}

/// Every reference in `value` (recursively), for validation when a
/// definition is saved. Errors on malformed templates.
pub fn references(value: &Value) -> Result<Vec<Reference>, TemplateError> {
    fn collect(value: &Value, out: &mut Vec<Reference>) -> Result<(), TemplateError> {
        match value {
            Value::String(s) => out.extend(
                parse_string(s)?
                    .into_iter()
                    .filter_map(Part::into_reference),
            ),
            Value::Array(items) => items.iter().try_for_each(|v| collect(v, out))?,
            Value::Object(map) => map.values().try_for_each(|v| collect(v, out))?,
            _ => {}
        }
        Ok(())
    }
    let mut out = Vec::new();
    collect(value, &mut out)?;
    Ok(out)
}

/// `value` with every template replaced. Object keys are left alone.
pub fn render(value: &Value, scope: &Scope<'_>) -> Result<Value, TemplateError> {
    Ok(match value {
        Value::String(s) => render_string(s, scope)?,
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| render(v, scope))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), render(v, scope)?)))
                .collect::<Result<_, TemplateError>>()?,
        ),
        other => other.clone(),
    })
}

/// Evaluates a step's `if` condition: a JSON bool, `true`/`false`, a single
/// template (its truthiness), `!{{…}}`, or `<lhs> <op> <rhs>` where each side
/// is a template or a JSON literal (strings may also use single quotes).
/// Ordering a number against a string, or anything but numbers and strings,
/// is an error rather than a silent `false`.
pub fn condition(expr: &Value, scope: &Scope<'_>) -> Result<bool, TemplateError> {
    match parse_condition(expr)? {
        Condition::Const(b) => Ok(b),
        Condition::Truthy { reference, negated } => {
            Ok(truthy(resolve(&reference, scope)?.unwrap_or(&Value::Null)) != negated)
        }
        Condition::Compare(lhs, op, rhs) => {
            let (l, r) = (lhs.value(scope)?, rhs.value(scope)?);
            let order = || {
                order(l, r).ok_or_else(|| TemplateError::Incomparable {
                    expression: expr.as_str().unwrap_or_default().trim().to_owned(),
                    left: kind(l),
                    right: kind(r),
                })
            };
            Ok(match op {
                Op::Eq => json_eq(l, r),
                Op::Ne => !json_eq(l, r),
                Op::Gt => order()?.is_gt(),
                Op::Ge => order()?.is_ge(),
                Op::Lt => order()?.is_lt(),
                Op::Le => order()?.is_le(),
            })
        }
    }
}

/// References used by a condition (same validation purpose as [`references`]).
pub fn condition_references(expr: &Value) -> Result<Vec<Reference>, TemplateError> {
    Ok(match parse_condition(expr)? {
        Condition::Const(_) => Vec::new(),
        Condition::Truthy { reference, .. } => vec![reference],
        Condition::Compare(lhs, _, rhs) => [lhs, rhs]
            .into_iter()
            .filter_map(|o| match o {
                Operand::Ref(r) => Some(r),
                Operand::Literal(_) => None,
            })
            .collect(),
    })
}

/// A piece of a templated string.
enum Part {
    Text(String),
    Ref(Reference),
}

impl Part {
    fn into_reference(self) -> Option<Reference> {
        match self {
            Part::Ref(r) => Some(r),
            Part::Text(_) => None,
        }
    }
}

fn render_string(s: &str, scope: &Scope<'_>) -> Result<Value, TemplateError> {
    if !s.contains("{{") {
        return Ok(Value::String(s.to_owned()));
    }
    let parts = parse_string(s)?;
    if let [Part::Ref(r)] = parts.as_slice() {
        return Ok(resolve(r, scope)?.cloned().unwrap_or(Value::Null));
    }
    let mut out = String::new();
    for part in &parts {
        match part {
            Part::Text(t) => out.push_str(t),
            Part::Ref(r) => match resolve(r, scope)? {
                None => {}
                Some(Value::String(v)) => out.push_str(v),
                Some(v) => out.push_str(&v.to_string()),
            },
        }
    }
    Ok(Value::String(out))
}

/// Splits a string into literal text and references.
fn parse_string(s: &str) -> Result<Vec<Part>, TemplateError> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("{{") {
        if let Some(before) = rest[..i].strip_suffix('\\') {
            text.push_str(before);
            text.push_str("{{");
            rest = &rest[i + 2..];
            continue;
        }
        text.push_str(&rest[..i]);
        let (reference, len) = parse_template(&rest[i..])?;
        if !text.is_empty() {
            parts.push(Part::Text(std::mem::take(&mut text)));
        }
        parts.push(Part::Ref(reference));
        rest = &rest[i + len..];
    }
    text.push_str(rest);
    if !text.is_empty() {
        parts.push(Part::Text(text));
    }
    Ok(parts)
}

/// Parses the template at the start of `s` (which starts with `{{`) and
/// returns it with the number of bytes it spans.
fn parse_template(s: &str) -> Result<(Reference, usize), TemplateError> {
    let bytes = s.as_bytes();
    let mut in_quote = false;
    let mut i = 2;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_quote => i += 1,
            b'"' => in_quote = !in_quote,
            b'{' if !in_quote && bytes.get(i + 1) == Some(&b'{') => break,
            b'}' if !in_quote && bytes.get(i + 1) == Some(&b'}') => {
                let text = &s[..i + 2];
                let malformed = |reason: String| TemplateError::Malformed {
                    text: text.to_owned(),
                    reason,
                };
                return Ok((parse_reference(text, &s[2..i]).map_err(malformed)?, i + 2));
            }
            _ => {}
        }
        i += 1;
    }
    let text = s.get(..i).unwrap_or(s);
    Err(TemplateError::Malformed {
        text: text.to_owned(),
        reason: "`{{` is not closed by `}}`".into(),
    })
}

/// Parses what is between the braces; the error is the reason only.
fn parse_reference(text: &str, inner: &str) -> Result<Reference, String> {
    let body = inner.trim();
    if body.is_empty() {
        return Err("the template is empty".into());
    }
    let (body, optional) = match body.strip_suffix('?') {
        Some(b) => (b, true),
        None => (body, false),
    };
    let mut segments = parse_path(body)?.into_iter();
    let (root, path) = match segments.next().as_deref() {
        Some("input") => (Root::Input, segments.collect()),
        Some("run") => (Root::Run, segments.collect()),
        Some("failure") => (Root::Failure, segments.collect()),
        Some("steps") => {
            let id = segments
                .next()
                .ok_or("`steps` needs a step id, as in `steps.<id>.output`")?;
            let path: Vec<String> = segments.collect();
            if !matches!(
                path.first().map(String::as_str),
                Some("output" | "status" | "error")
            ) {
                return Err(format!(
                    "expected `output`, `status` or `error` after `steps{}`",
                    segment(&id)
                ));
            }
            (Root::Step(id), path)
        }
        other => {
            let root = other.unwrap_or_default();
            return Err(format!(
                "unknown root {root:?}; expected input, steps, run or failure"
            ));
        }
    };
    Ok(Reference {
        root,
        path,
        optional,
        text: text.to_owned(),
    })
}

/// Characters allowed in a segment without brackets.
fn is_bare(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-'
}

fn parse_path(body: &str) -> Result<Vec<String>, String> {
    let mut segments = Vec::new();
    let mut rest = body;
    loop {
        if let Some(r) = rest.strip_prefix('[') {
            if segments.is_empty() {
                return Err("a reference starts with a root name such as `input`".into());
            }
            let (seg, r) = parse_bracket(r)?;
            segments.push(seg);
            rest = r;
        } else {
            let r = if segments.is_empty() {
                Some(rest)
            } else {
                rest.strip_prefix('.')
            };
            let r = r.ok_or_else(|| format!("unexpected {rest:?}"))?;
            let end = r.find(|c| !is_bare(c)).unwrap_or(r.len());
            if end == 0 {
                return Err(if r.is_empty() {
                    "a path segment is empty".into()
                } else {
                    format!("unexpected {r:?}")
                });
            }
            segments.push(r[..end].to_owned());
            rest = &r[end..];
        }
        if rest.is_empty() {
            return Ok(segments);
        }
    }
}

/// Parses `0]` or `"key"]` (after the `[`).
fn parse_bracket(s: &str) -> Result<(String, &str), String> {
    let bad = || format!("expected a number or a quoted key in `[{s}`");
    if s.starts_with('"') {
        let end = closing_quote(s, '"').ok_or_else(bad)?;
        let key: String = serde_json::from_str(&s[..=end]).map_err(|_| bad())?;
        let rest = s[end + 1..].strip_prefix(']').ok_or_else(bad)?;
        return Ok((key, rest));
    }
    let (index, rest) = s.split_once(']').ok_or_else(bad)?;
    if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    Ok((index.to_owned(), rest))
}

/// The byte index of the quote closing the one `s` starts with; `"` strings
/// take backslash escapes, `'` strings none.
fn closing_quote(s: &str, quote: char) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices().skip(1) {
        match c {
            _ if escaped => escaped = false,
            '\\' if quote == '"' => escaped = true,
            c if c == quote => return Some(i),
            _ => {}
        }
    }
    None
}

/// `.key` or `["odd key"]`, for paths in messages.
fn segment(seg: &str) -> String {
    if !seg.is_empty() && seg.chars().all(is_bare) {
        format!(".{seg}")
    } else {
        format!("[{}]", Value::String(seg.to_owned()))
    }
}

/// The value a reference names; `None` if it is missing and optional.
fn resolve<'a>(r: &Reference, scope: &Scope<'a>) -> Result<Option<&'a Value>, TemplateError> {
    let missing = |at: String, seg: &str| {
        if r.optional {
            Ok(None)
        } else {
            Err(TemplateError::Missing {
                reference: r.text.clone(),
                at,
                missing: seg.to_owned(),
            })
        }
    };
    let (mut value, mut at) = match &r.root {
        Root::Input => (scope.input, "input".to_owned()),
        Root::Run => (scope.run, "run".to_owned()),
        Root::Failure => match scope.failure {
            Some(f) => (f, "failure".to_owned()),
            None if r.optional => return Ok(None),
            None => {
                return Err(TemplateError::OutsideCatch {
                    reference: r.text.clone(),
                });
            }
        },
        Root::Step(id) => match scope.steps.get(id) {
            Some(record) => (record, format!("steps{}", segment(id))),
            None => return missing("steps".to_owned(), id),
        },
    };
    for seg in &r.path {
        let next = match value {
            Value::Object(map) => map.get(seg),
            Value::Array(items) => seg.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        };
        match next {
            Some(v) => value = v,
            None => return missing(at, seg),
        }
        at.push_str(&segment(seg));
    }
    Ok(Some(value))
}

/// A parsed `if` condition.
enum Condition {
    Const(bool),
    Truthy { reference: Reference, negated: bool },
    Compare(Operand, Op, Operand),
}

enum Operand {
    Ref(Reference),
    Literal(Value),
}

impl Operand {
    fn value<'v>(&'v self, scope: &Scope<'v>) -> Result<&'v Value, TemplateError> {
        match self {
            Operand::Ref(r) => Ok(resolve(r, scope)?.unwrap_or(&Value::Null)),
            Operand::Literal(v) => Ok(v),
        }
    }
}

#[derive(Clone, Copy)]
enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
}

fn parse_condition(expr: &Value) -> Result<Condition, TemplateError> {
    let text = match expr {
        Value::Bool(b) => return Ok(Condition::Const(*b)),
        Value::String(s) => s.trim(),
        other => {
            let reason = "a condition is a boolean or a string".into();
            return Err(TemplateError::Malformed {
                text: other.to_string(),
                reason,
            });
        }
    };
    let malformed = |reason: &str| TemplateError::Malformed {
        text: text.to_owned(),
        reason: reason.to_owned(),
    };
    match text {
        "true" => return Ok(Condition::Const(true)),
        "false" => return Ok(Condition::Const(false)),
        _ => {}
    }
    if let Some(rest) = text.strip_prefix('!')
        && !rest.starts_with('=')
    {
        return match operand(rest.trim_start(), text)? {
            (Operand::Ref(reference), "") => Ok(Condition::Truthy {
                reference,
                negated: true,
            }),
            _ => Err(malformed(
                "`!` must be followed by one template, as in `!{{input.flag}}`",
            )),
        };
    }
    let (lhs, rest) = operand(text, text)?;
    let rest = rest.trim_start();
    if rest.is_empty() {
        return match lhs {
            Operand::Ref(reference) => Ok(Condition::Truthy {
                reference,
                negated: false,
            }),
            Operand::Literal(_) => Err(malformed(
                "expected a template, a comparison, true or false",
            )),
        };
    }
    let ops = [
        ("==", Op::Eq),
        ("!=", Op::Ne),
        (">=", Op::Ge),
        ("<=", Op::Le),
        (">", Op::Gt),
        ("<", Op::Lt),
    ];
    let (op, rest) = ops
        .iter()
        .find_map(|(sym, op)| rest.strip_prefix(sym).map(|r| (*op, r)))
        .ok_or_else(|| malformed("expected one of == != > >= < <= after the left-hand side"))?;
    let (rhs, rest) = operand(rest.trim_start(), text)?;
    if !rest.trim().is_empty() {
        return Err(malformed(&format!(
            "unexpected {:?} after the comparison",
            rest.trim()
        )));
    }
    Ok(Condition::Compare(lhs, op, rhs))
}

/// Parses a template or JSON literal at the start of `s`; returns the rest.
fn operand<'s>(s: &'s str, expr: &str) -> Result<(Operand, &'s str), TemplateError> {
    let malformed = |reason: String| TemplateError::Malformed {
        text: expr.to_owned(),
        reason,
    };
    if s.starts_with("{{") {
        let (reference, len) = parse_template(s)?;
        return Ok((Operand::Ref(reference), &s[len..]));
    }
    if let Some(quote @ ('"' | '\'')) = s.chars().next() {
        let end = closing_quote(s, quote)
            .ok_or_else(|| malformed("a string literal is not closed".into()))?;
        let value = if quote == '"' {
            serde_json::from_str(&s[..=end])
                .map_err(|e| malformed(format!("bad string literal: {e}")))?
        } else {
            Value::String(s[1..end].to_owned())
        };
        return Ok((Operand::Literal(value), &s[end + 1..]));
    }
    let end = s
        .find(|c: char| c.is_whitespace() || "=!<>".contains(c))
        .unwrap_or(s.len());
    let word = &s[..end];
    match serde_json::from_str::<Value>(word) {
        Ok(v @ (Value::Number(_) | Value::Bool(_) | Value::Null)) => {
            Ok((Operand::Literal(v), &s[end..]))
        }
        _ if word.is_empty() => Err(malformed("expected a template or a literal".into())),
        _ => Err(malformed(format!(
            "{word:?} is neither a template nor a JSON literal"
        ))),
    }
}

/// false, null, 0, "", [] and {} are false; everything else is true.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(items) => !items.is_empty(),
        Value::Object(map) => !map.is_empty(),
    }
}

/// Integers exactly, others as f64: with `arbitrary_precision`, `Number`
/// equality is textual, so `1` and `1.0` would otherwise differ.
fn number_order(a: &Number, b: &Number) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return Some(x.cmp(&y));
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return Some(x.cmp(&y));
    }
    a.as_f64()?.partial_cmp(&b.as_f64()?)
}

fn order(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_order(x, y),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// JSON equality with numbers compared by value, at any depth.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_order(x, y) == Some(Ordering::Equal),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Value {
        serde_json::from_str(text).expect("test JSON")
    }

    /// Runs `f` with a fixed scope; `failure` says whether a catch is running.
    fn with_scope<T>(failure: bool, f: impl FnOnce(&Scope<'_>) -> T) -> T {
        let input = parse(
            r#"{"amount": 12.5, "count": 3, "zero": 0, "name": "Ada", "empty": "", "note": null,
                "flag": true, "off": false, "none": [], "blank": {}, "first name": "Ada L.",
                "customer": {"email": "ada@example.com", "tags": ["a", "b"]},
                "items": [{"name": "bolt", "qty": 2}, {"name": "nut", "qty": 10}]}"#,
        );
        let steps = BTreeMap::from([
            (
                "fetch".to_owned(),
                parse(
                    r#"{"status": "completed", "output": {"id": "x-1", "total": 99, "rows": [1, 2]}, "error": null}"#,
                ),
            ),
            (
                "bad".to_owned(),
                parse(
                    r#"{"status": "failed", "output": null, "error": {"kind": "fatal", "message": "boom"}}"#,
                ),
            ),
        ]);
        let run = parse(r#"{"id": "run-1", "workflow": "orders"}"#);
        let caught = parse(r#"{"step": "charge", "error": "card declined"}"#);
        f(&Scope {
            input: &input,
            steps: &steps,
            run: &run,
            failure: failure.then_some(&caught),
        })
    }

    #[test]
    fn a_whole_template_keeps_the_type_of_its_value() {
        let cases = [
            ("{{input.amount}}", "12.5"),
            ("{{ input.amount }}", "12.5"),
            (
                "{{input.customer}}",
                r#"{"email": "ada@example.com", "tags": ["a", "b"]}"#,
            ),
            ("{{input.customer.tags}}", r#"["a", "b"]"#),
            ("{{input.items.1.name}}", r#""nut""#),
            ("{{input.items[1].qty}}", "10"),
            (r#"{{input["first name"]}}"#, r#""Ada L.""#),
            ("{{input.note}}", "null"),
            ("{{input.flag}}", "true"),
            ("{{input.missing?}}", "null"),
            ("{{input.items.7.name?}}", "null"),
            ("{{failure.error?}}", "null"),
            ("{{steps.fetch.output.id}}", r#""x-1""#),
            ("{{steps.fetch.output.rows}}", "[1, 2]"),
            ("{{steps.fetch.status}}", r#""completed""#),
            ("{{steps.bad.error.message}}", r#""boom""#),
            ("{{steps.ghost.output?}}", "null"),
            ("{{run.id}}", r#""run-1""#),
            ("{{run.workflow}}", r#""orders""#),
        ];
        for (template, expected) in cases {
            let rendered = with_scope(false, |s| render(&Value::from(template), s));
            assert_eq!(rendered, Ok(parse(expected)), "{template}");
        }
        let caught = with_scope(true, |s| render(&Value::from("{{failure.error}}"), s));
        assert_eq!(caught, Ok(Value::from("card declined")));
    }

    #[test]
    fn templates_among_text_are_interpolated() {
        let cases = [
            ("Total: {{input.amount}} EUR", "Total: 12.5 EUR"),
            (" {{input.amount}}", " 12.5"),
            (
                "{{input.name}} has {{input.count}} items",
                "Ada has 3 items",
            ),
            ("{{input.name}}{{input.name}}", "AdaAda"),
            ("tags={{input.customer.tags}}", r#"tags=["a","b"]"#),
            (
                "first: {{input.items.0}}",
                r#"first: {"name":"bolt","qty":2}"#,
            ),
            ("note: [{{input.missing?}}]", "note: []"),
            ("note: {{input.note}}", "note: null"),
            (
                r"\{{input.name}} is {{input.name}}",
                "{{input.name}} is Ada",
            ),
            ("plain }} text", "plain }} text"),
            ("", ""),
        ];
        for (template, expected) in cases {
            let rendered = with_scope(false, |s| render(&Value::from(template), s));
            assert_eq!(rendered, Ok(Value::from(expected)), "{template}");
        }
    }

    #[test]
    fn render_walks_objects_and_arrays_but_not_keys() {
        let config = parse(
            r#"{"to": "{{input.customer.email}}", "{{input.name}}": 1, "n": 7,
                "lines": [{"qty": "{{input.items.0.qty}}"}, "id {{steps.fetch.output.id}}", null, true]}"#,
        );
        let expected = parse(
            r#"{"to": "ada@example.com", "{{input.name}}": 1, "n": 7,
                "lines": [{"qty": 2}, "id x-1", null, true]}"#,
        );
        assert_eq!(with_scope(false, |s| render(&config, s)), Ok(expected));
    }

    #[test]
    fn missing_values_name_the_reference_and_the_segment() {
        let cases = [
            (
                "{{input.customer.phone}}",
                r#"{{input.customer.phone}} refers to a missing value: input.customer has no "phone""#,
            ),
            ("{{input.items.5.name}}", r#"input.items has no "5""#),
            ("{{input.amount.cents}}", r#"input.amount has no "cents""#),
            (
                r#"{{input["first name"].x}}"#,
                r#"input["first name"] has no "x""#,
            ),
            ("{{steps.ghost.output.id}}", r#"steps has no "ghost""#),
            (
                "{{steps.fetch.output.rows.2}}",
                r#"steps.fetch.output.rows has no "2""#,
            ),
            ("a {{input.nope}} b", r#"input has no "nope""#),
            (
                "{{failure.error}}",
                "{{failure.error}} is only available in a catch step",
            ),
        ];
        for (template, message) in cases {
            let err = with_scope(false, |s| render(&Value::from(template), s)).expect_err(template);
            assert!(err.to_string().contains(message), "{template}: {err}");
        }
    }

    #[test]
    fn malformed_templates_are_rejected_with_their_text() {
        let cases = [
            ("x {{input.a", "{{input.a", "not closed"),
            ("{{input.a {{input.b}}", "{{input.a ", "not closed"),
            (r#"{{input["a}}"#, r#"{{input["a}}"#, "not closed"),
            ("{{}}", "{{}}", "empty"),
            ("{{  }}", "{{  }}", "empty"),
            ("{{foo.x}}", "{{foo.x}}", r#"unknown root "foo""#),
            ("{{steps}}", "{{steps}}", "needs a step id"),
            (
                "{{steps.a}}",
                "{{steps.a}}",
                "expected `output`, `status` or `error` after `steps.a`",
            ),
            (
                "{{steps.a.result}}",
                "{{steps.a.result}}",
                "expected `output`",
            ),
            ("{{input..x}}", "{{input..x}}", "unexpected"),
            ("{{input.}}", "{{input.}}", "empty"),
            ("{{input.a b}}", "{{input.a b}}", "unexpected"),
            ("{{input[x]}}", "{{input[x]}}", "quoted key"),
            ("{{input[]}}", "{{input[]}}", "quoted key"),
            (r#"{{["input"].x}}"#, r#"{{["input"].x}}"#, "root name"),
            ("{{input.x??}}", "{{input.x??}}", "unexpected"),
        ];
        for (value, text, reason) in cases {
            let err = references(&json_in_list(value)).expect_err(value);
            let TemplateError::Malformed {
                text: got,
                reason: why,
            } = &err
            else {
                panic!("{value}: {err}")
            };
            assert_eq!(got, text, "{value}");
            assert!(why.contains(reason), "{value}: {err}");
            assert!(
                with_scope(false, |s| render(&Value::from(value), s)).is_err(),
                "{value}"
            );
        }
    }

    /// Nests a string, so error paths through arrays and objects are covered.
    fn json_in_list(s: &str) -> Value {
        serde_json::json!({"a": [1, {"b": s}]})
    }

    #[test]
    fn references_lists_every_template_with_its_root_and_path() {
        let value = parse(
            r#"{"a": "{{input.x}} and {{ steps.fetch.output.items.0 }}",
                "b": ["{{run.id}}", {"c": "{{failure.error?}}"}], "d": "\\{{input.no}}", "e": 5}"#,
        );
        let got = references(&value).expect("valid templates");
        let want = [
            (Root::Input, vec!["x"], false, "{{input.x}}"),
            (
                Root::Step("fetch".into()),
                vec!["output", "items", "0"],
                false,
                "{{ steps.fetch.output.items.0 }}",
            ),
            (Root::Run, vec!["id"], false, "{{run.id}}"),
            (Root::Failure, vec!["error"], true, "{{failure.error?}}"),
        ];
        let want: Vec<Reference> = want
            .into_iter()
            .map(|(root, path, optional, text)| Reference {
                root,
                path: path.into_iter().map(String::from).collect(),
                optional,
                text: text.into(),
            })
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn conditions_compare_with_every_operator() {
        let cases = [
            ("{{input.amount}} > 10", true),
            ("{{input.amount}} > 12.5", false),
            ("{{input.amount}} >= 12.5", true),
            ("{{input.amount}} < 12.5", false),
            ("{{input.amount}} <= 12.5", true),
            ("{{input.amount}} == 12.5", true),
            ("{{input.amount}} == 12.50", true),
            ("{{input.amount}} != 12.5", false),
            ("{{input.count}} == 3.0", true),
            ("{{input.count}}<{{steps.fetch.output.total}}", true),
            ("-1 < {{input.zero}}", true),
            (r#"{{input.name}} == "Ada""#, true),
            ("{{input.name}} == 'Ada'", true),
            ("{{input.name}} != 'Ada'", false),
            (r#"{{input.name}} < "Bob""#, true),
            ("{{input.name}} >= 'Bob'", false),
            (r#"{{steps.fetch.status}} == "completed""#, true),
            ("{{input.flag}} == true", true),
            ("{{input.note}} == null", true),
            ("{{input.missing?}} == null", true),
            ("{{input.name}} == 3", false),
            ("{{input.customer}} == {{input.customer}}", true),
            ("{{input.items.0}} != {{input.items.1}}", true),
            ("  {{input.flag}}  ", true),
            ("true", true),
            (" false ", false),
            ("!{{input.flag}}", false),
            ("!{{input.off}}", true),
            ("! {{input.missing?}}", true),
        ];
        for (expr, expected) in cases {
            assert_eq!(
                with_scope(false, |s| condition(&Value::from(expr), s)),
                Ok(expected),
                "{expr}"
            );
        }
        for b in [true, false] {
            assert_eq!(with_scope(false, |s| condition(&Value::Bool(b), s)), Ok(b));
        }
    }

    #[test]
    fn truthiness_follows_json_emptiness() {
        let cases = [
            ("flag", true),
            ("off", false),
            ("note", false),
            ("zero", false),
            ("empty", false),
            ("none", false),
            ("blank", false),
            ("missing?", false),
            ("name", true),
            ("amount", true),
            ("customer", true),
            ("items", true),
        ];
        for (path, expected) in cases {
            let expr = Value::from(format!("{{{{input.{path}}}}}"));
            assert_eq!(
                with_scope(false, |s| condition(&expr, s)),
                Ok(expected),
                "{path}"
            );
        }
    }

    #[test]
    fn bad_conditions_are_errors_naming_the_expression() {
        let cases = [
            (
                Value::from(1),
                "malformed template 1: a condition is a boolean or a string",
            ),
            (Value::Null, "malformed template null"),
            (
                Value::from("input.flag"),
                r#"malformed template input.flag: "input.flag" is neither"#,
            ),
            (Value::from("yes"), "malformed template yes"),
            (Value::from("1"), "expected a template, a comparison"),
            (
                Value::from("{{input.count}} = 3"),
                "{{input.count}} = 3: expected one of ==",
            ),
            (
                Value::from("{{input.count}} =="),
                "expected a template or a literal",
            ),
            (
                Value::from("{{input.count}} > 1 or 2"),
                r#"unexpected "or 2""#,
            ),
            (Value::from(r#"{{input.name}} == "Ada"#), "not closed"),
            (Value::from("!1"), "`!` must be followed by one template"),
            (
                Value::from("!{{input.flag}} == true"),
                "`!` must be followed by one template",
            ),
            (
                Value::from("{{foo}} == 1"),
                r#"malformed template {{foo}}: unknown root "foo""#,
            ),
            (Value::from("{{input.nope}} == 1"), r#"input has no "nope""#),
            (
                Value::from(r#"{{input.count}} > "2""#),
                "cannot order a number and a string",
            ),
            (
                Value::from("{{input.flag}} <= 1"),
                "{{input.flag}} <= 1: cannot order a boolean and a number",
            ),
            (
                Value::from("{{input.missing?}} > 0"),
                "cannot order null and a number",
            ),
        ];
        for (expr, message) in cases {
            let err = with_scope(false, |s| condition(&expr, s)).expect_err(&expr.to_string());
            assert!(err.to_string().contains(message), "{expr}: {err}");
        }
    }

    #[test]
    fn condition_references_lists_the_templates_on_either_side() {
        let cases = [
            (Value::Bool(true), vec![]),
            (Value::from("false"), vec![]),
            (
                Value::from("{{steps.a.output.ok}}"),
                vec!["{{steps.a.output.ok}}"],
            ),
            (
                Value::from("!{{failure.error?}}"),
                vec!["{{failure.error?}}"],
            ),
            (
                Value::from("{{steps.a.status}} == {{input.x}}"),
                vec!["{{steps.a.status}}", "{{input.x}}"],
            ),
            (Value::from("3 < {{run.id}}"), vec!["{{run.id}}"]),
        ];
        for (expr, texts) in cases {
            let got: Vec<String> = condition_references(&expr)
                .expect("valid")
                .into_iter()
                .map(|r| r.text)
                .collect();
            assert_eq!(got, texts, "{expr}");
        }
        assert!(condition_references(&Value::from("{{steps.a}}")).is_err());
    }
}
