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
//! Parsing is separate from resolving so that definitions are checked on
//! save ([`references`], [`condition_references`]) with the same grammar the
//! scheduler later renders with.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde_json::Value;

/// Where a reference points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Root {
    Input,
    Step(String),
    Run,
    Failure,
    /// The item a `for_each` step's attempt runs for.
    Item,
    /// Its position in the list, from 0.
    ItemIndex,
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
    /// `at` is the part of the path that exists; `missing` the next segment.
    #[error("{reference} refers to a missing value: {at} has no {missing:?}")]
    Missing {
        reference: String,
        at: String,
        missing: String,
    },
    #[error("{reference} is only available in a catch step")]
    OutsideCatch { reference: String },
    #[error("{reference} is only available in a step with for_each")]
    OutsideMap { reference: String },
    /// Ordering anything but two numbers or two strings is an error rather
    /// than a silent `false`, which would skip steps without a trace.
    #[error("cannot evaluate {expression}: cannot order {left} and {right}")]
    Incomparable {
        expression: String,
        left: &'static str,
        right: &'static str,
    },
}

impl TemplateError {
    fn malformed(text: &str, reason: impl Into<String>) -> Self {
        Self::Malformed {
            text: text.to_owned(),
            reason: reason.into(),
        }
    }
}

/// The values templates can reach while a step runs. `steps` maps step id to
/// that step's record: `{"output": …, "status": "completed", "error": null}`.
pub struct Scope<'a> {
    pub input: &'a Value,
    pub steps: &'a dyn Steps,
    pub run: &'a Value,
    /// `{"step": …, "error": …}` while a `catch` step runs; otherwise none.
    pub failure: Option<&'a Value>,
    /// The item and its index while an item of a `for_each` step runs.
    pub item: Option<(&'a Value, &'a Value)>,
}

/// A run's step records by step id, as templates read them. The engine's
/// records are decoded only when a template refers to them, so rendering
/// one step's config costs the same at step 2 as at step 200.
pub trait Steps {
    fn record(&self, id: &str) -> Option<&Value>;
}

impl Steps for BTreeMap<String, Value> {
    fn record(&self, id: &str) -> Option<&Value> {
        self.get(id)
    }
}

/// Every reference in `value` (recursively), for validation when a
/// definition is saved. Errors on malformed templates.
pub fn references(value: &Value) -> Result<Vec<Reference>, TemplateError> {
    fn collect(value: &Value, out: &mut Vec<Reference>) -> Result<(), TemplateError> {
        match value {
            Value::String(s) => {
                out.extend(parse_string(s)?.into_iter().filter_map(Piece::reference))
            }
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
        Value::String(s) if s.contains("{{") => render_string(s, scope)?,
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|v| render(v, scope))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) => {
            let rendered = map.iter().map(|(k, v)| Ok((k.clone(), render(v, scope)?)));
            Value::Object(rendered.collect::<Result<_, TemplateError>>()?)
        }
        other => other.clone(),
    })
}

/// Evaluates a step's `if` condition: a JSON bool, `true`/`false`, a single
/// template (its truthiness), `!{{…}}`, or `<lhs> <op> <rhs>` where each side
/// is a template or a JSON literal (strings may also use single quotes).
pub fn condition(expr: &Value, scope: &Scope<'_>) -> Result<bool, TemplateError> {
    let Condition { negated, lhs, rhs } = parse_condition(expr)?;
    let l = lhs.get(scope)?.unwrap_or(&Value::Null);
    let Some((op, rhs)) = rhs else {
        return Ok(truthy(l) != negated);
    };
    let r = rhs.get(scope)?.unwrap_or(&Value::Null);
    if op == "==" || op == "!=" {
        return Ok(json_eq(l, r) == (op == "=="));
    }
    let ordering = order(l, r).ok_or_else(|| TemplateError::Incomparable {
        expression: expr.as_str().unwrap_or_default().trim().to_owned(),
        left: kind(l),
        right: kind(r),
    })?;
    Ok(match op {
        ">" => ordering.is_gt(),
        ">=" => ordering.is_ge(),
        "<" => ordering.is_lt(),
        _ => ordering.is_le(), // `<=`, the only operator left
    })
}

/// References used by a condition (same validation purpose as [`references`]).
pub fn condition_references(expr: &Value) -> Result<Vec<Reference>, TemplateError> {
    let Condition { lhs, rhs, .. } = parse_condition(expr)?;
    let pieces = [Some(lhs), rhs.map(|(_, rhs)| rhs)].into_iter().flatten();
    Ok(pieces.filter_map(Piece::reference).collect())
}

/// Literal text between templates, a literal side of a comparison, or a
/// reference.
enum Piece {
    Literal(Value),
    Ref(Reference),
}

impl Piece {
    fn reference(self) -> Option<Reference> {
        match self {
            Piece::Ref(r) => Some(r),
            Piece::Literal(_) => None,
        }
    }

    fn get<'v>(&'v self, scope: &Scope<'v>) -> Result<Option<&'v Value>, TemplateError> {
        match self {
            Piece::Ref(r) => resolve(r, scope),
            Piece::Literal(v) => Ok(Some(v)),
        }
    }
}

fn render_string(s: &str, scope: &Scope<'_>) -> Result<Value, TemplateError> {
    let pieces = parse_string(s)?;
    if let [Piece::Ref(r)] = pieces.as_slice() {
        return Ok(resolve(r, scope)?.cloned().unwrap_or(Value::Null));
    }
    let mut out = String::new();
    for piece in &pieces {
        match piece.get(scope)? {
            None => {}
            Some(Value::String(text)) => out.push_str(text),
            Some(other) => out.push_str(&other.to_string()),
        }
    }
    Ok(Value::String(out))
}

/// Splits a string into literal text and references.
fn parse_string(s: &str) -> Result<Vec<Piece>, TemplateError> {
    let mut pieces = Vec::new();
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
            pieces.push(Piece::Literal(Value::String(std::mem::take(&mut text))));
        }
        pieces.push(Piece::Ref(reference));
        rest = &rest[i + len..];
    }
    text.push_str(rest);
    if !text.is_empty() {
        pieces.push(Piece::Literal(Value::String(text)));
    }
    Ok(pieces)
}

/// Parses the template `s` starts with; returns it and the bytes it spans.
fn parse_template(s: &str) -> Result<(Reference, usize), TemplateError> {
    let bytes = s.as_bytes();
    let mut in_quote = false;
    let mut i = 2;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if in_quote => i += 1,
            b'"' => in_quote = !in_quote,
            // Another `{{` first means this one was never closed.
            b'{' if !in_quote && bytes.get(i + 1) == Some(&b'{') => break,
            b'}' if !in_quote && bytes.get(i + 1) == Some(&b'}') => {
                let text = &s[..i + 2];
                let reference = parse_reference(text, &s[2..i]);
                let reference = reference.map_err(|e| TemplateError::malformed(text, e))?;
                return Ok((reference, i + 2));
            }
            _ => {}
        }
        i += 1;
    }
    Err(TemplateError::malformed(
        s.get(..i).unwrap_or(s),
        "`{{` is not closed by `}}`",
    ))
}

/// Parses what is between the braces; the error is the reason alone.
fn parse_reference(text: &str, inner: &str) -> Result<Reference, String> {
    let inner = inner.trim();
    let optional = inner.ends_with('?');
    let body = inner.strip_suffix('?').unwrap_or(inner);
    if body.is_empty() {
        return Err("the template is empty".into());
    }
    let mut segments = parse_path(body)?.into_iter();
    let root = match segments.next().as_deref() {
        Some("input") => Root::Input,
        Some("run") => Root::Run,
        Some("failure") => Root::Failure,
        Some("item") => Root::Item,
        Some("item_index") => Root::ItemIndex,
        Some("steps") => Root::Step(segments.next().ok_or("`steps` needs a step id")?),
        other => {
            let other = other.unwrap_or_default();
            return Err(format!(
                "unknown root {other:?}; expected input, steps, run, failure, item or item_index"
            ));
        }
    };
    let path: Vec<String> = segments.collect();
    let field = path.first().map(String::as_str);
    if let Root::Step(id) = &root
        && !matches!(field, Some("output" | "status" | "error"))
    {
        let id = segment(id);
        return Err(format!(
            "expected `output`, `status` or `error` after `steps{id}`"
        ));
    }
    let text = text.to_owned();
    Ok(Reference {
        root,
        path,
        optional,
        text,
    })
}

/// Characters allowed in a segment without brackets.
fn is_bare(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '-'
}

/// `a.b[0]["c d"]` into its segments; the first must be bare.
fn parse_path(body: &str) -> Result<Vec<String>, String> {
    let mut segments = Vec::new();
    let mut rest = body;
    while segments.is_empty() || !rest.is_empty() {
        let (segment, after) = match rest.strip_prefix('[') {
            Some(inside) if !segments.is_empty() => parse_bracket(inside)?,
            _ => {
                let name = match rest.strip_prefix('.') {
                    Some(name) if !segments.is_empty() => name,
                    _ if segments.is_empty() => rest,
                    _ => return Err(format!("expected `.` or `[` at {rest:?}")),
                };
                let end = name.find(|c| !is_bare(c)).unwrap_or(name.len());
                if end == 0 {
                    return Err(format!("expected a name at {name:?}"));
                }
                (name[..end].to_owned(), &name[end..])
            }
        };
        segments.push(segment);
        rest = after;
    }
    Ok(segments)
}

/// Parses `0]` or `"key"]`, what follows a `[`.
fn parse_bracket(s: &str) -> Result<(String, &str), String> {
    let bad = || format!("expected an index or a quoted key in `[{s}`");
    let mut values = serde_json::Deserializer::from_str(s).into_iter::<Value>();
    let key = match values.next() {
        Some(Ok(Value::String(key))) => key,
        Some(Ok(Value::Number(n))) if n.is_u64() => n.to_string(),
        _ => return Err(bad()),
    };
    let rest = s[values.byte_offset()..]
        .trim_start()
        .strip_prefix(']')
        .ok_or_else(bad)?;
    Ok((key, rest))
}

/// `.key` or `["odd key"]`, for paths in messages.
fn segment(seg: &str) -> String {
    if !seg.is_empty() && seg.chars().all(is_bare) {
        format!(".{seg}")
    } else {
        format!("[{}]", Value::from(seg))
    }
}

/// The value a reference names; `None` if it is missing and optional.
fn resolve<'a>(r: &Reference, scope: &Scope<'a>) -> Result<Option<&'a Value>, TemplateError> {
    let missing = |at: String, seg: &str| {
        if r.optional {
            return Ok(None);
        }
        Err(TemplateError::Missing {
            reference: r.text.clone(),
            at,
            missing: seg.to_owned(),
        })
    };
    let (mut value, mut at) = match &r.root {
        Root::Input => (scope.input, "input".to_owned()),
        Root::Run => (scope.run, "run".to_owned()),
        Root::Failure => match scope.failure {
            Some(failure) => (failure, "failure".to_owned()),
            None if r.optional => return Ok(None),
            None => {
                return Err(TemplateError::OutsideCatch {
                    reference: r.text.clone(),
                });
            }
        },
        Root::Item | Root::ItemIndex => match scope.item {
            Some((item, _)) if r.root == Root::Item => (item, "item".to_owned()),
            Some((_, index)) => (index, "item_index".to_owned()),
            None if r.optional => return Ok(None),
            None => {
                return Err(TemplateError::OutsideMap {
                    reference: r.text.clone(),
                });
            }
        },
        Root::Step(id) => match scope.steps.record(id) {
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
        let Some(next) = next else {
            return missing(at, seg);
        };
        value = next;
        at.push_str(&segment(seg));
    }
    Ok(Some(value))
}

/// A parsed `if`: `lhs` alone is tested for truthiness.
struct Condition {
    negated: bool,
    lhs: Piece,
    rhs: Option<(&'static str, Piece)>,
}

fn parse_condition(expr: &Value) -> Result<Condition, TemplateError> {
    let text = match expr {
        Value::Bool(true) => "true",
        Value::Bool(false) => "false",
        Value::String(s) => s.trim(),
        _ => {
            let reason = "a condition is a boolean or a string";
            return Err(TemplateError::malformed(&expr.to_string(), reason));
        }
    };
    let malformed = |reason: &str| TemplateError::malformed(text, reason);
    let (negated, body) = text
        .strip_prefix('!')
        .map_or((false, text), |b| (true, b.trim_start()));
    let (lhs, rest) = operand(body, text)?;
    let rest = rest.trim_start();
    let rhs = if rest.is_empty() {
        let bool_word = !negated && matches!(lhs, Piece::Literal(Value::Bool(_)));
        if !bool_word && !matches!(lhs, Piece::Ref(_)) {
            return Err(malformed(
                "expected a template, a comparison, true or false",
            ));
        }
        None
    } else if negated {
        return Err(malformed(
            "`!` applies to one template, as in `!{{input.flag}}`",
        ));
    } else {
        let op = ["==", "!=", ">=", "<=", ">", "<"]
            .into_iter()
            .find(|op| rest.starts_with(op))
            .ok_or_else(|| malformed("expected one of == != > >= < <= after the left-hand side"))?;
        let (rhs, rest) = operand(rest[op.len()..].trim_start(), text)?;
        if !rest.trim().is_empty() {
            return Err(malformed(&format!(
                "unexpected {:?} after the comparison",
                rest.trim()
            )));
        }
        Some((op, rhs))
    };
    Ok(Condition { negated, lhs, rhs })
}

/// Parses the template or literal `s` starts with; returns it and the rest.
fn operand<'s>(s: &'s str, expr: &str) -> Result<(Piece, &'s str), TemplateError> {
    if s.starts_with("{{") {
        let (reference, len) = parse_template(s)?;
        return Ok((Piece::Ref(reference), &s[len..]));
    }
    if let Some((text, rest)) = s.strip_prefix('\'').and_then(|s| s.split_once('\'')) {
        return Ok((Piece::Literal(Value::from(text)), rest));
    }
    // serde_json wants a delimiter after a bare number or word; `3<{{x}}` has none.
    let end = match s.chars().next() {
        Some('"' | '[' | '{') => s.len(),
        _ => s
            .find(|c: char| c.is_whitespace() || "=!<>".contains(c))
            .unwrap_or(s.len()),
    };
    let mut values = serde_json::Deserializer::from_str(&s[..end]).into_iter::<Value>();
    match values.next() {
        Some(Ok(value)) => Ok((Piece::Literal(value), &s[values.byte_offset()..])),
        _ => Err(TemplateError::malformed(
            expr,
            format!("expected a template or a JSON literal at {s:?}"),
        )),
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

/// Numbers by value (with `arbitrary_precision`, `Number` equality is
/// textual, so `1` and `1.0` would differ), integers exactly; strings
/// lexically.
fn order(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => Some(x.cmp(&y)),
            _ => x.as_f64()?.partial_cmp(&y.as_f64()?),
        },
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

/// JSON equality with numbers compared by value, at any depth.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => order(a, b) == Some(Ordering::Equal),
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

    const FIXTURE: &str = r#"{
        "input": {"amount": 12.5, "count": 3, "zero": 0, "name": "Ada", "empty": "", "note": null,
            "flag": true, "off": false, "none": [], "blank": {}, "first name": "Ada L.",
            "customer": {"email": "ada@example.com", "tags": ["a", "b"]},
            "items": [{"name": "bolt", "qty": 2}, {"name": "nut", "qty": 10}]},
        "steps": {
            "fetch": {"status": "completed", "output": {"id": "x-1", "total": 99}, "error": null},
            "bad": {"status": "failed", "output": null, "error": {"message": "boom"}}},
        "run": {"id": "run-1", "workflow": "orders"},
        "failure": {"step": "charge", "error": "card declined"}
    }"#;

    fn json(text: &str) -> Value {
        serde_json::from_str(text).expect("test JSON")
    }

    /// Runs `f` over [`FIXTURE`]; `in_catch` says whether `failure` is set.
    fn with_scope<T>(in_catch: bool, f: impl FnOnce(&Scope<'_>) -> T) -> T {
        let all = json(FIXTURE);
        let steps = all["steps"].as_object().into_iter().flatten();
        let steps: BTreeMap<String, Value> = steps.map(|(k, v)| (k.clone(), v.clone())).collect();
        let failure = in_catch.then_some(&all["failure"]);
        f(&Scope {
            input: &all["input"],
            steps: &steps,
            run: &all["run"],
            failure,
            item: None,
        })
    }

    fn render_str(template: &str) -> Result<Value, TemplateError> {
        with_scope(false, |s| render(&Value::from(template), s))
    }

    fn eval(expr: &str) -> Result<bool, TemplateError> {
        with_scope(false, |s| condition(&Value::from(expr), s))
    }

    #[test]
    fn a_whole_template_keeps_the_type_of_its_value() {
        let cases = [
            ("{{input.amount}}", "12.5"),
            ("{{ input.amount }}", "12.5"),
            ("{{input.customer.tags}}", r#"["a", "b"]"#),
            ("{{input.items.0}}", r#"{"name": "bolt", "qty": 2}"#),
            ("{{input.items.1.name}}", r#""nut""#),
            ("{{input.items[1].qty}}", "10"),
            (r#"{{input["first name"]}}"#, r#""Ada L.""#),
            (r#"{{input.items[ 0 ]["name"]}}"#, r#""bolt""#),
            ("{{input.note}}", "null"),
            ("{{input.flag}}", "true"),
            ("{{input.missing?}}", "null"),
            ("{{input.items.7.name?}}", "null"),
            ("{{failure.error?}}", "null"),
            ("{{steps.fetch.output.id}}", r#""x-1""#),
            ("{{steps.fetch.status}}", r#""completed""#),
            ("{{steps.bad.error.message}}", r#""boom""#),
            ("{{steps.ghost.output?}}", "null"),
            ("{{run.id}}", r#""run-1""#),
            ("{{run.workflow}}", r#""orders""#),
        ];
        for (template, expected) in cases {
            assert_eq!(render_str(template), Ok(json(expected)), "{template}");
        }
        let caught = with_scope(true, |s| render(&Value::from("{{failure.error}}"), s));
        assert_eq!(caught, Ok(Value::from("card declined")));
    }

    #[test]
    fn templates_among_text_are_interpolated() {
        let cases = [
            ("Total: {{input.amount}} EUR", "Total: 12.5 EUR"),
            (" {{input.amount}}", " 12.5"),
            ("{{input.name}}{{input.count}}", "Ada3"),
            ("tags={{input.customer.tags}}", r#"tags=["a","b"]"#),
            ("{{input.items.0}}!", r#"{"name":"bolt","qty":2}!"#),
            ("note: [{{input.missing?}}]", "note: []"),
            ("note: {{input.note}}", "note: null"),
            (r"\{{input.name}}={{input.name}}", "{{input.name}}=Ada"),
            ("plain }} text", "plain }} text"),
        ];
        for (template, expected) in cases {
            assert_eq!(
                render_str(template),
                Ok(Value::from(expected)),
                "{template}"
            );
        }
    }

    #[test]
    fn render_walks_objects_and_arrays_but_not_keys() {
        let config = json(
            r#"{"to": "{{input.customer.email}}", "{{input.name}}": 1, "n": 7.50,
                "lines": [{"qty": "{{input.items.0.qty}}"}, "id {{steps.fetch.output.id}}", null]}"#,
        );
        let expected = json(
            r#"{"to": "ada@example.com", "{{input.name}}": 1, "n": 7.50,
                "lines": [{"qty": 2}, "id x-1", null]}"#,
        );
        assert_eq!(with_scope(false, |s| render(&config, s)), Ok(expected));
    }

    #[test]
    fn missing_values_name_the_reference_and_the_segment() {
        let message = render_str("{{input.x.y}}").map_err(|e| e.to_string());
        let expected = r#"{{input.x.y}} refers to a missing value: input has no "x""#;
        assert_eq!(message, Err(expected.to_owned()));
        let cases = [
            ("{{input.customer.fax}}", r#"input.customer has no "fax""#),
            ("{{input.items.5.name}}", r#"input.items has no "5""#),
            ("{{input.amount.cents}}", r#"input.amount has no "cents""#),
            (
                r#"{{input["first name"].x}}"#,
                r#"["first name"] has no "x""#,
            ),
            ("{{steps.ghost.output}}", r#"steps has no "ghost""#),
            ("{{steps.bad.output.id}}", r#"steps.bad.output has no"#),
            ("a {{input.nope}} b", "{{input.nope}} refers to"),
            ("{{failure.error}}", "only available in a catch step"),
        ];
        for (template, message) in cases {
            let err = render_str(template).expect_err(template);
            assert!(err.to_string().contains(message), "{template}: {err}");
        }
    }

    #[test]
    fn malformed_templates_are_rejected_with_their_text() {
        let cases = [
            ("x {{input.a", "{{input.a: `{{` is not closed"),
            ("{{input.a {{input.b}}", "{{input.a : `{{` is not"),
            (r#"{{input["a}}"#, r#"{{input["a}}: `{{` is not"#),
            ("{{}}", "{{}}: the template is empty"),
            ("{{ ? }}", "{{ ? }}: the template is empty"),
            ("{{foo.x}}", r#"{{foo.x}}: unknown root "foo""#),
            ("{{steps}}", "{{steps}}: `steps` needs a step id"),
            ("{{steps.a}}", "{{steps.a}}: expected `output`, `status`"),
            ("{{steps.a.res}}", "{{steps.a.res}}: expected `output`"),
            ("{{input..x}}", "{{input..x}}: expected a name"),
            ("{{input.}}", "{{input.}}: expected a name"),
            ("{{input.a b}}", "{{input.a b}}: expected `.` or `[`"),
            ("{{input[x]}}", "{{input[x]}}: expected an index"),
            ("{{input[-1]}}", "{{input[-1]}}: expected an index"),
            (r#"{{["input"]}}"#, "expected a name"),
            ("{{input.x??}}", "{{input.x??}}: expected `.`"),
        ];
        for (value, message) in cases {
            let nested = serde_json::json!({"a": [1, {"b": value}]});
            let err = references(&nested).expect_err(value);
            assert!(
                matches!(err, TemplateError::Malformed { .. }),
                "{value}: {err}"
            );
            assert!(err.to_string().contains(message), "{value}: {err}");
            assert_eq!(render_str(value), Err(err), "{value}");
        }
    }

    #[test]
    fn references_lists_every_template_with_its_root_and_path() {
        let value = json(
            r#"{"a": "{{input.x}} and {{ steps.s.output.0 }}", "n": 5,
                "b": ["{{run.id}}", {"c": "{{failure.error?}}"}], "d": "\\{{input.no}}"}"#,
        );
        let refs = references(&value).expect("valid templates");
        let described: Vec<String> = refs
            .iter()
            .map(|r| {
                format!(
                    "{:?} {} {} {}",
                    r.root,
                    r.path.join("."),
                    r.optional,
                    r.text
                )
            })
            .collect();
        let expected = [
            "Input x false {{input.x}}",
            r#"Step("s") output.0 false {{ steps.s.output.0 }}"#,
            "Run id false {{run.id}}",
            "Failure error true {{failure.error?}}",
        ];
        assert_eq!(described, expected);
    }

    #[test]
    fn conditions_compare_with_every_operator() {
        let cases = [
            ("{{input.amount}} > 10", true),
            ("{{input.amount}} > 12.5", false),
            ("{{input.amount}} >= 12.5", true),
            ("{{input.amount}} < 12.5", false),
            ("{{input.amount}} <= 12.5", true),
            ("{{input.amount}} == 12.50", true),
            ("{{input.amount}} != 12.5", false),
            ("{{input.count}} == 3.0", true),
            ("{{input.count}}<{{steps.fetch.output.total}}", true),
            ("-1 < {{input.zero}}", true),
            ("2<{{input.count}}", true),
            (r#"{{input.name}} == "Ada""#, true),
            ("{{input.name}} != 'Ada'", false),
            (r#"{{input.name}} < "Bob""#, true),
            ("{{input.name}} >= 'Bob'", false),
            (r#"{{steps.fetch.status}} == "completed""#, true),
            ("{{input.flag}} == true", true),
            ("{{input.missing?}} == null", true),
            ("{{input.name}} == 3", false),
            (r#"{{input.customer.tags}} == ["a","b"]"#, true),
            ("{{input.items.0}} != {{input.items.1}}", true),
            ("  {{input.flag}}  ", true),
            ("true", true),
            (" false ", false),
            ("!{{input.flag}}", false),
            ("! {{input.missing?}}", true),
        ];
        for (expr, expected) in cases {
            assert_eq!(eval(expr), Ok(expected), "{expr}");
        }
        for b in [true, false] {
            assert_eq!(with_scope(false, |s| condition(&Value::Bool(b), s)), Ok(b));
        }
    }

    #[test]
    fn truthiness_follows_json_emptiness() {
        let truthy = ["flag", "name", "amount", "customer", "items"].map(|p| (p, true));
        let falsy =
            ["off", "note", "zero", "empty", "none", "blank", "missing?"].map(|p| (p, false));
        for (path, expected) in truthy.into_iter().chain(falsy) {
            assert_eq!(
                eval(&format!("{{{{input.{path}}}}}")),
                Ok(expected),
                "{path}"
            );
        }
    }

    #[test]
    fn bad_conditions_are_errors_naming_the_expression() {
        let cases = [
            ("input.flag", "input.flag: expected a template or a JSON"),
            ("1", "1: expected a template, a comparison, true or"),
            ("!true", "expected a template, a comparison"),
            ("{{input.count}} = 3", "= 3: expected one of =="),
            (
                "{{input.count}} ==",
                "expected a template or a JSON literal",
            ),
            ("{{input.count}} > 1 or 2", r#"unexpected "or 2""#),
            ("!{{input.flag}} == true", "`!` applies to one template"),
            ("{{foo}} == 1", r#"{{foo}}: unknown root "foo""#),
            ("{{input.nope}} == 1", r#"input has no "nope""#),
            (
                "{{input.count}} > '2'",
                "cannot order a number and a string",
            ),
            ("{{input.flag}} <= 1", "<= 1: cannot order a boolean"),
            ("{{input.missing?}} > 0", "cannot order null and a number"),
        ];
        for (expr, message) in cases {
            let err = eval(expr).expect_err(expr);
            assert!(err.to_string().contains(message), "{expr}: {err}");
        }
        for value in [json("1"), Value::Null, json("[]")] {
            let err = with_scope(false, |s| condition(&value, s)).map_err(|e| e.to_string());
            let expected =
                format!("malformed template {value}: a condition is a boolean or a string");
            assert_eq!(err, Err(expected));
        }
    }

    #[test]
    fn condition_references_lists_the_templates_on_either_side() {
        let cases = [
            ("false", ""),
            ("{{steps.a.output.ok}}", "{{steps.a.output.ok}}"),
            ("!{{failure.error?}}", "{{failure.error?}}"),
            ("{{run.id}} == {{input.x}}", "{{run.id}}{{input.x}}"),
            ("3 < {{run.id}}", "{{run.id}}"),
        ];
        for (expr, texts) in cases {
            let refs = condition_references(&Value::from(expr)).expect(expr);
            assert_eq!(
                refs.into_iter().map(|r| r.text).collect::<String>(),
                texts,
                "{expr}"
            );
        }
        assert_eq!(condition_references(&Value::Bool(true)), Ok(Vec::new()));
        assert!(condition_references(&Value::from("{{steps.a}}")).is_err());
    }
}
