//! `transform`: reshapes JSON with a jq program, run inside the component by
//! [jaq](https://github.com/01mf02/jaq) (jaq-core, jaq-std, jaq-json): the
//! usual jq filters (`map`, `select`, `reduce`, `group_by`, string
//! interpolation, `@base64`, `test`, `todate`, …) are there.
//!
//! Config: `expression` (the jq program), `data` (the value to transform;
//! when the key is absent the step's input is used, and an explicit `null`
//! is transformed as `null`), `collect` (default `false`).
//!
//! # Output
//!
//! - `collect: false`: the one value the program produces. Zero or several
//!   values fail the step (fatal) with how many and a hint to use
//!   `collect: true`; `halt` ends the output early.
//! - `collect: true`: an array of every value, in order.
//!
//! At most [`MAX_OUTPUTS`] values, nested at most [`MAX_DEPTH`] deep (what
//! the host's JSON parser accepts); past either the step fails. Object keys
//! come out sorted (JSON objects are unordered); `NaN` becomes `null` and
//! infinities the largest finite numbers, as in jq. Numbers in `data` keep
//! their exact text until arithmetic touches them.
//!
//! # Errors
//!
//! A program that does not parse or names an undefined filter or variable
//! is `invalid-input`, with jaq's message and the line and column. A runtime
//! error (`error("…")`, `1 + "a"`, `halt_error`) is `fatal` with the error's
//! message: the same data fails the same way on every retry.
//!
//! Not available: `input`/`inputs` (there is one input), `$__loc__`,
//! `import`/`include`. `env` is empty in the sandbox. A program that loops
//! forever without producing values (`def f: f; f`) cannot be stopped from
//! inside the component; the host's step timeout ends it.

use jaq_core::load::{self, Arena, File, Loader};
use jaq_core::{Compiler, Ctx, Vars, compile, data};
use jaq_json::Val;
use weft_sdk::config::Fields;
use weft_sdk::{Plugin, PluginInfo, StepContext, StepError, Value, export_plugin, host, json};

/// Most values a program may produce.
pub const MAX_OUTPUTS: usize = 10_000;
/// Deepest nesting of an output value.
pub const MAX_DEPTH: usize = 128;
const FIELDS: [&str; 3] = ["expression", "data", "collect"];

/// jq's `@csv` and `@tsv`, which the jaq libraries leave to the jaq binary.
/// Written with `split`/`join` so no regex escaping is involved.
const PRELUDE: &str = r#"
def @csv: if type != "array" then error("@csv needs an array, not \(type)") else
  map(if type == "string" then "\"" + (split("\"") | join("\"\"")) + "\""
      elif type == "number" or type == "boolean" then tostring
      elif type == "null" then ""
      else error("@csv cannot format \(type)") end) | join(",") end;
def @tsv: if type != "array" then error("@tsv needs an array, not \(type)") else
  map(if type == "string" then split("\\") | join("\\\\") | split("\t") | join("\\t")
        | split("\n") | join("\\n") | split("\r") | join("\\r")
      elif type == "null" then ""
      elif type == "number" or type == "boolean" then tostring
      else error("@tsv cannot format \(type)") end) | join("\t") end;
"#;

/// The definitions programs can use: jaq's core, std and JSON libraries and
/// [`PRELUDE`].
fn definitions() -> impl Iterator<Item = load::parse::Def<&'static str>> {
    let prelude = load::parse(PRELUDE, |p| p.defs()).unwrap_or_default();
    jaq_core::defs()
        .chain(jaq_std::defs())
        .chain(jaq_json::defs())
        .chain(prelude)
}

type Data = data::JustLut<Val>;

/// `expression` compiled against `defs` and the native filters.
fn compile_with(
    expression: &str,
    defs: Vec<load::parse::Def<&'static str>>,
) -> Result<jaq_core::Filter<Data>, StepError> {
    let funs = jaq_core::funs()
        .chain(jaq_std::funs())
        .chain(jaq_json::funs());
    let arena = Arena::default();
    let modules = Loader::new(defs)
        .load(
            &arena,
            File {
                code: expression,
                path: (),
            },
        )
        .map_err(|errors| StepError::invalid_input(load_errors(expression, &errors)))?;
    Compiler::default()
        .with_funs(funs)
        .compile(modules)
        .map_err(|errors| StepError::invalid_input(compile_errors(expression, &errors)))
}

struct Transform;

/// The libraries' definitions as source text, in the order
/// [`definitions`] loads them: jaq's core, std and JSON libraries as copied
/// from the crates (`jaq/`; a test checks that they are the crates'), then
/// [`PRELUDE`].
const LIBRARIES: [&str; 4] = [
    include_str!("jaq/core.jq"),
    include_str!("jaq/std.jq"),
    include_str!("jaq/json.jq"),
    PRELUDE,
];

/// The top-level definitions of a library's text, each as its name and its
/// text: one begins with `def` at the start of a line and runs to the next
/// (the lines of a longer body are indented). Comments between them are
/// the parser's to skip.
fn chunks(source: &'static str) -> Vec<(&'static str, &'static str)> {
    let mut starts = Vec::new();
    let mut offset = 0;
    for line in source.split_inclusive('\n') {
        if line.starts_with("def ") {
            starts.push(offset);
        }
        offset += line.len();
    }
    starts
        .iter()
        .enumerate()
        .map(|(i, &start)| {
            let end = starts.get(i + 1).copied().unwrap_or(source.len());
            let text = &source[start..end];
            let name = text["def ".len()..]
                .trim_start()
                .split(|c: char| c == '(' || c == ':' || c.is_whitespace())
                .next()
                .unwrap_or_default();
            (name, text)
        })
        .collect()
}

/// The definitions `expression` can reach: those named in it, and those
/// their bodies call, transitively, in the libraries' order. Every attempt
/// runs in a fresh sandbox, so nothing parsed or compiled survives it:
/// parsing only these definitions' text, instead of all ~130 of the
/// libraries, is most of what an attempt saves. Conservative: any word of
/// the expression counts as a name.
fn reachable(expression: &str) -> Vec<load::parse::Def<&'static str>> {
    let chunks: Vec<(&str, &str)> = LIBRARIES.iter().flat_map(|s| chunks(s)).collect();
    let mut parsed: Vec<Option<Vec<load::parse::Def<&'static str>>>> =
        chunks.iter().map(|_| None).collect();
    let mut wanted: Vec<&str> = words(expression).collect();
    let mut next = 0;
    while next < wanted.len() {
        let name = wanted[next];
        next += 1;
        for (i, (chunk_name, text)) in chunks.iter().enumerate() {
            if parsed[i].is_some() || *chunk_name != name {
                continue;
            }
            // A chunk that does not parse leaves its name undefined; the
            // compile then fails and the caller compiles with everything.
            let defs = load::parse(text, |p| p.defs()).unwrap_or_default();
            let mut called = Vec::new();
            for def in &defs {
                calls(&def.body, &mut called);
            }
            for name in called {
                if !wanted.contains(&name) {
                    wanted.push(name);
                }
            }
            parsed[i] = Some(defs);
        }
    }
    parsed.into_iter().flatten().flatten().collect()
}

/// The words of a jq program that may name a filter (`map`, `@csv`).
fn words(code: &str) -> impl Iterator<Item = &str> {
    code.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '@'))
        .filter(|w| !w.is_empty())
}

/// The filters `term` calls, by name.
fn calls<'a>(term: &load::parse::Term<&'a str>, out: &mut Vec<&'a str>) {
    use jaq_core::load::lex::StrPart;
    use jaq_core::load::parse::{Pattern, Term};
    use jaq_core::path::Part;
    fn pattern<'a>(p: &Pattern<&'a str>, out: &mut Vec<&'a str>) {
        match p {
            Pattern::Var(_) => {}
            Pattern::Arr(ps) => ps.iter().for_each(|p| pattern(p, out)),
            Pattern::Obj(kvs) => kvs.iter().for_each(|(k, p)| {
                calls(k, out);
                pattern(p, out);
            }),
        }
    }
    match term {
        Term::Id | Term::Recurse | Term::Num(_) | Term::Var(_) | Term::Break(_) => {}
        Term::Str(format, parts) => {
            out.extend(format.iter().copied());
            for part in parts {
                if let StrPart::Term(t) = part {
                    calls(t, out);
                }
            }
        }
        Term::Arr(t) => t.iter().for_each(|t| calls(t, out)),
        Term::Obj(kvs) => kvs.iter().for_each(|(k, v)| {
            calls(k, out);
            v.iter().for_each(|v| calls(v, out));
        }),
        Term::Neg(t) | Term::Label(_, t) => calls(t, out),
        Term::BinOp(l, op, r) => {
            if let load::parse::BinaryOp::Pipe(Some(p)) = op {
                pattern(p, out);
            }
            calls(l, out);
            calls(r, out);
        }
        Term::Fold(_, t, p, ts) => {
            calls(t, out);
            pattern(p, out);
            ts.iter().for_each(|t| calls(t, out));
        }
        Term::TryCatch(t, c) => {
            calls(t, out);
            c.iter().for_each(|c| calls(c, out));
        }
        Term::IfThenElse(branches, otherwise) => {
            for (cond, then) in branches {
                calls(cond, out);
                calls(then, out);
            }
            otherwise.iter().for_each(|t| calls(t, out));
        }
        Term::Def(defs, t) => {
            defs.iter().for_each(|d| calls(&d.body, out));
            calls(t, out);
        }
        Term::Call(name, args) => {
            out.push(name);
            args.iter().for_each(|a| calls(a, out));
        }
        Term::Path(t, path) => {
            calls(t, out);
            for (part, _) in &path.0 {
                match part {
                    Part::Index(i) => calls(i, out),
                    Part::Range(from, to) => {
                        from.iter().for_each(|t| calls(t, out));
                        to.iter().for_each(|t| calls(t, out));
                    }
                }
            }
        }
    }
}

/// Runs `expression` on `data`; see the crate docs for the output rules.
fn transform(expression: &str, data: &Value, collect: bool) -> Result<Value, StepError> {
    // With the definitions the expression reaches; should that miss one
    // (a name the compiler supplies itself), with all of them, which also
    // gives the errors their usual wording.
    let filter = compile_with(expression, reachable(expression))
        .or_else(|_| compile_with(expression, definitions().collect()))?;

    let ctx = Ctx::<Data>::new(&filter.lut, Vars::new([]));
    let mut outputs = Vec::new();
    for result in filter.id.run((ctx, to_val(data))) {
        let value = match result {
            Ok(value) => value,
            Err(exn) => match exn.get_err() {
                Ok(error) => {
                    return Err(StepError::fatal(format!(
                        "expression failed: {}",
                        text(&error.into_val())
                    )));
                }
                Err(exn) => match exn.get_halt() {
                    Ok(0) => break,
                    Ok(code) => {
                        return Err(StepError::fatal(format!(
                            "expression stopped with halt_error (exit code {code})"
                        )));
                    }
                    Err(_) => {
                        return Err(StepError::fatal(
                            "expression failed: internal jaq exception",
                        ));
                    }
                },
            },
        };
        if outputs.len() == MAX_OUTPUTS {
            let hint = if collect {
                ""
            } else {
                "; it must produce exactly one"
            };
            return Err(StepError::fatal(format!(
                "expression produced more than {MAX_OUTPUTS} values{hint}"
            )));
        }
        outputs.push(value);
    }

    if collect {
        return outputs
            .iter()
            .map(|v| from_val(v, 0))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array)
            .map_err(StepError::fatal);
    }
    match outputs.as_slice() {
        [one] => from_val(one, 0).map_err(StepError::fatal),
        [] => Err(StepError::fatal(
            "expression produced no value, and the step needs exactly one; \
             set collect: true to get an empty array instead",
        )),
        many => Err(StepError::fatal(format!(
            "expression produced {} values, and the step needs exactly one; \
             set collect: true to get them as an array",
            many.len()
        ))),
    }
}

/// A string value as its text, anything else as JSON.
fn text(value: &Val) -> String {
    match value {
        Val::TStr(bytes) | Val::BStr(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        other => other.to_string(),
    }
}

/// `value` as a jaq value. Numbers go through their text, so big integers
/// and long decimals are not rounded to `f64` on the way in.
fn to_val(value: &Value) -> Val {
    match value {
        Value::Null => Val::Null,
        Value::Bool(b) => Val::Bool(*b),
        Value::Number(n) => {
            let text = n.to_string();
            jaq_json::read::parse_single_num(text.as_bytes()).map_or_else(
                || Val::from(text.parse::<f64>().unwrap_or(f64::NAN)),
                Val::Num,
            )
        }
        Value::String(s) => Val::from(s.clone()),
        Value::Array(items) => items.iter().map(to_val).collect(),
        Value::Object(map) => Val::obj(
            map.iter()
                .map(|(k, v)| (Val::from(k.clone()), to_val(v)))
                .collect(),
        ),
    }
}

/// A jaq value as JSON; fails on what JSON cannot hold.
fn from_val(value: &Val, depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err(format!(
            "expression produced a value nested deeper than {MAX_DEPTH} levels"
        ));
    }
    Ok(match value {
        Val::Null => Value::Null,
        Val::Bool(b) => Value::Bool(*b),
        Val::Num(n) => number(&n.to_string()),
        Val::TStr(bytes) | Val::BStr(bytes) => Value::String(String::from_utf8_lossy(bytes).into_owned()),
        Val::Arr(items) => Value::Array(
            items
                .iter()
                .map(|v| from_val(v, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Val::Obj(map) => Value::Object(
            map.iter()
                .map(|(k, v)| match k {
                    Val::TStr(key) | Val::BStr(key) => {
                        Ok((String::from_utf8_lossy(key).into_owned(), from_val(v, depth + 1)?))
                    }
                    other => Err(format!(
                        "expression produced an object with the key {other}; JSON object keys must be strings"
                    )),
                })
                .collect::<Result<_, _>>()?,
        ),
    })
}

/// A jaq number's text as a JSON number; `NaN` is `null` and infinities the
/// largest finite numbers, as jq prints them.
fn number(text: &str) -> Value {
    match text {
        "NaN" => Value::Null,
        "Infinity" => json!(f64::MAX),
        "-Infinity" => json!(f64::MIN),
        _ => serde_json::from_str::<serde_json::Number>(text)
            .map(Value::Number)
            .unwrap_or(Value::Null),
    }
}

/// ` at line L, column C` for a slice of `code`, or nothing if `part` is
/// not inside it.
fn position(code: &str, part: &str) -> String {
    let start = (part.as_ptr() as usize).wrapping_sub(code.as_ptr() as usize);
    let Some(before) = code.get(..start) else {
        return String::new();
    };
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!(" at line {line}, column {column}")
}

/// What the parser found instead, shortened.
fn found(part: &str) -> String {
    if part.is_empty() {
        return "the end of the expression".to_owned();
    }
    let short: String = part.chars().take(24).collect();
    let more = if short.len() < part.len() { "..." } else { "" };
    format!("`{short}{more}`")
}

fn load_errors(code: &str, errors: &load::Errors<&str, ()>) -> String {
    let mut messages = Vec::new();
    for (_file, error) in errors {
        match error {
            load::Error::Io(errs) => {
                for (path, e) in errs {
                    messages.push(format!("cannot import {path:?}: {e}"));
                }
            }
            load::Error::Lex(errs) => {
                for (expect, part) in errs {
                    let expected = match expect {
                        load::lex::Expect::Delim(open) => {
                            format!("a closing delimiter for `{open}`")
                        }
                        other => other.as_str().to_owned(),
                    };
                    messages.push(format!(
                        "expected {expected}, found {}{}",
                        found(part),
                        position(code, part)
                    ));
                }
            }
            load::Error::Parse(errs) => {
                for (expect, part) in errs {
                    let what = match expect {
                        // jaq's way of saying the expression should have ended.
                        load::parse::Expect::Nothing => format!("unexpected {}", found(part)),
                        other => format!("expected {}, found {}", other.as_str(), found(part)),
                    };
                    messages.push(format!("{what}{}", position(code, part)));
                }
            }
        }
    }
    format!("expression does not parse: {}", messages.join("; "))
}

fn compile_errors(code: &str, errors: &compile::Errors<&str, ()>) -> String {
    let messages: Vec<String> = errors
        .iter()
        .flat_map(|(_file, errs)| errs)
        .map(|(name, undefined)| {
            let name = match undefined {
                compile::Undefined::Filter(arity) => format!("{name}/{arity}"),
                _ => (*name).to_owned(),
            };
            format!(
                "undefined {} `{name}`{}",
                undefined.as_str(),
                position(code, name_slice(code, &name))
            )
        })
        .collect();
    format!("expression does not compile: {}", messages.join("; "))
}

/// The first occurrence of a name (without `/arity`) in the code, for its
/// position; the compiler reports names, not spans.
fn name_slice<'a>(code: &'a str, name: &str) -> &'a str {
    let bare = name.split('/').next().unwrap_or(name);
    code.find(bare).map_or("", |i| &code[i..i + bare.len()])
}

impl Plugin for Transform {
    fn describe() -> PluginInfo {
        PluginInfo::new(
            "transform",
            env!("CARGO_PKG_VERSION"),
            "Reshapes JSON with a jq program (jaq): filter, map, group and build new objects.",
        )
        .config_schema(json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["expression"],
            "properties": {
                "expression": {"type": "string", "minLength": 1, "description": "jq program, e.g. `[.items[] | select(.qty > 0) | {sku, qty}]`"},
                "data": {"description": "The value to transform; when absent, the step's input"},
                "collect": {"type": ["boolean", "null"], "default": false, "description": "Return every value the program produces as an array; otherwise it must produce exactly one"}
            }
        }))
        .output_schema(json!({
            "description": "The value the program produces; with collect: true, an array of every value"
        }))
    }

    fn run(_ctx: &StepContext, config: Value, input: Value) -> Result<Value, StepError> {
        let fields = Fields::of(&config, "");
        fields.only(&FIELDS)?;
        let expression = fields.required_str("expression")?;
        let collect = fields.bool("collect")?.unwrap_or(false);
        let data = config.get("data").unwrap_or(&input);
        let output = transform(expression, data, collect)?;
        host::debug(&format!(
            "transform produced {} bytes",
            output.to_string().len()
        ));
        Ok(output)
    }
}

export_plugin!(Transform);

#[cfg(test)]
mod tests {
    use super::*;

    fn run(expression: &str, data: Value) -> Result<Value, StepError> {
        transform(expression, &data, false)
    }

    /// The copied library texts, cut into definitions, parse to exactly
    /// the definitions the jaq crates give, one chunk per definition and
    /// named as indexed: the pruned path sees what the fallback sees.
    #[test]
    fn the_copied_libraries_are_the_crates_definitions_one_chunk_each() {
        let chunked: Vec<_> = LIBRARIES
            .iter()
            .flat_map(|s| chunks(s))
            .map(|(name, text)| {
                let defs = load::parse(text, |p| p.defs()).expect("a chunk parses");
                assert_eq!(defs.len(), 1, "one definition in {text:?}");
                assert_eq!(defs[0].name, name, "named as indexed: {text:?}");
                defs.into_iter().next().expect("one")
            })
            .collect();
        let crates: Vec<_> = definitions().collect();
        assert_eq!(chunked.len(), crates.len());
        assert_eq!(
            format!("{chunked:?}"),
            format!("{crates:?}"),
            "src/jaq/*.jq differ from the jaq crates' src/defs.jq: copy them again"
        );
    }

    /// Programs compile against the definitions they reach alone, without
    /// the fallback to every definition, across jq's syntax and library.
    #[test]
    fn programs_compile_with_only_the_definitions_they_reach() {
        for expression in [
            ".",
            "..",
            "map(.+1)",
            "[.[] | select(.a)] | length",
            "group_by(.k) | map({k: .[0].k, n: length})",
            "reduce .[] as $x (0; . + $x)",
            "foreach .[] as [$a, {b: $c}] (0; . + $a; [., $c])",
            "limit(2; .[])",
            "first(.[]), last, nth(1)",
            "paths, getpath([\"a\"]), path(..)",
            "walk(if type == \"number\" then . + 1 else . end)",
            "to_entries | from_entries | with_entries(.value += 1)",
            "@csv, @tsv, @base64, @base64d, @json, @text, @html, @uri, @sh",
            "\"a \\(.x) b\" | ascii_downcase | ltrimstr(\"a\")",
            "test(\"a\"), sub(\"a\"; \"b\"), gsub(\"a\"; \"b\"), splits(\", \")",
            "try error(\"x\") catch ., (.a // 1), .a?, .[1:2]",
            "label $out | 1, break $out",
            "def twice(f): f | f; twice(. * 2)",
            "min_by(.x), max_by(.x), unique_by(.a), sort_by(.a), add, any, all, flatten",
            "range(3), indices(1), inside([1]), combinations, getpath([\"a\"]), del(.a)",
            "tojson | fromjson, tostring, tonumber, keys, has(\"a\"), in({}), length, utf8bytelength",
            "now | todate, (\"2024-01-01T00:00:00Z\" | fromdate), splits(\"a\")",
            "ltrimstr(\"x\"), rtrimstr(\"x\"), splits(\"x\"; \"g\"), ascii_upcase",
            "recurse(.a?; . != null), implode, explode, tojson",
        ] {
            let defs = reachable(expression);
            assert!(
                compile_with(expression, defs).is_ok(),
                "{expression}: {:?}",
                compile_with(expression, definitions().collect()).err()
            );
        }
        // A program calling nothing of the libraries compiles with none.
        assert!(reachable(".a + 1").is_empty());
    }

    fn all(expression: &str, data: Value) -> Value {
        transform(expression, &data, true).unwrap()
    }

    fn message(e: StepError) -> (&'static str, String) {
        match e {
            StepError::InvalidInput(m) => ("invalid", m),
            StepError::Fatal(m) => ("fatal", m),
            StepError::Retryable(m) => ("retryable", m),
        }
    }

    #[test]
    fn runs_real_jq_programs() {
        let orders = json!({"orders": [
            {"id": 1, "customer": "Ada", "total": 120.5, "status": "paid"},
            {"id": 2, "customer": "Bob", "total": 80, "status": "open"},
            {"id": 3, "customer": "Ada", "total": 19.5, "status": "open"}
        ]});
        let cases = [
            (
                "[.orders[] | select(.status == \"open\") | .id]",
                json!([2, 3]),
            ),
            (
                ".orders | map({id, who: .customer})",
                json!([{"id": 1, "who": "Ada"}, {"id": 2, "who": "Bob"}, {"id": 3, "who": "Ada"}]),
            ),
            ("reduce .orders[] as $o (0; . + $o.total)", json!(220.0)),
            (
                ".orders | group_by(.customer) | map({customer: .[0].customer, n: length})",
                json!([{"customer": "Ada", "n": 2}, {"customer": "Bob", "n": 1}]),
            ),
            (
                "\"\\(.orders | length) orders, first by \\(.orders[0].customer)\"",
                json!("3 orders, first by Ada"),
            ),
            (
                ".orders[0] | to_entries | map(.key) | sort",
                json!(["customer", "id", "status", "total"]),
            ),
            (
                "[.orders[].customer] | unique | join(\", \")",
                json!("Ada, Bob"),
            ),
            (".missing // \"default\"", json!("default")),
            ("[.orders[] | .total] | max", json!(120.5)),
            (
                "{count: (.orders | length)} | .count += 1",
                json!({"count": 4}),
            ),
            (
                "[.orders[] | select(.customer | test(\"^A\"))] | length",
                json!(2),
            ),
            ("\"hello\" | @base64", json!("aGVsbG8=")),
        ];
        for (program, expected) in cases {
            assert_eq!(run(program, orders.clone()).unwrap(), expected, "{program}");
        }
    }

    #[test]
    fn csv_and_tsv_format_rows_like_jq() {
        let row = json!(["a \"quoted\", text", 1.5, true, null, "tab\there\\"]);
        assert_eq!(
            run("@csv", row.clone()).unwrap(),
            json!("\"a \"\"quoted\"\", text\",1.5,true,,\"tab\there\\\"")
        );
        assert_eq!(
            run("@tsv", row).unwrap(),
            json!("a \"quoted\", text\t1.5\ttrue\t\ttab\\there\\\\")
        );
        assert_eq!(
            run(
                ".rows | map(@csv) | join(\"\\n\")",
                json!({"rows": [["x", 1], ["y", 2]]})
            )
            .unwrap(),
            json!("\"x\",1\n\"y\",2")
        );
        let (kind, m) = message(run("@csv", json!({"a": 1})).unwrap_err());
        assert_eq!(
            (kind, m.as_str()),
            (
                "fatal",
                "expression failed: @csv needs an array, not object"
            )
        );
        assert!(
            load::parse(PRELUDE, |p| p.defs()).is_some(),
            "the prelude parses"
        );
    }

    #[test]
    fn numbers_keep_their_text() {
        let data: Value =
            serde_json::from_str(r#"{"big": 12345678901234567890, "money": 0.10}"#).unwrap();
        assert_eq!(
            run(".big", data.clone()).unwrap().to_string(),
            "12345678901234567890"
        );
        assert_eq!(run(".money", data).unwrap().to_string(), "0.10");
        assert_eq!(
            run("[nan, infinite]", json!(null)).unwrap(),
            json!([null, f64::MAX])
        );
    }

    #[test]
    fn collect_gathers_every_value() {
        assert_eq!(all(".[] | . * 2", json!([1, 2, 3])), json!([2, 4, 6]));
        assert_eq!(all("empty", json!(null)), json!([]));
        assert_eq!(all("1, 2, halt, 3", json!(null)), json!([1, 2]));
    }

    #[test]
    fn zero_or_several_values_need_collect() {
        let (kind, m) = message(run(".[]", json!([1, 2, 3])).unwrap_err());
        assert_eq!(kind, "fatal");
        assert!(
            m.contains("produced 3 values") && m.contains("collect: true"),
            "{m}"
        );
        let (kind, m) = message(run(".[] | select(. > 5)", json!([1, 2])).unwrap_err());
        assert_eq!(kind, "fatal");
        assert!(
            m.contains("produced no value") && m.contains("collect: true"),
            "{m}"
        );
    }

    #[test]
    fn runaway_output_is_capped() {
        let (kind, m) = message(transform("range(1e9)", &json!(null), true).unwrap_err());
        assert_eq!(kind, "fatal");
        assert!(m.contains("more than 10000 values"), "{m}");
        let (_, m) = message(run("repeat(1)", json!(null)).unwrap_err());
        assert!(
            m.contains("more than 10000 values; it must produce exactly one"),
            "{m}"
        );
        let (_, m) = message(run("reduce range(200) as $i (0; [.])", json!(null)).unwrap_err());
        assert!(m.contains("nested deeper than 128"), "{m}");
    }

    #[test]
    fn syntax_errors_are_invalid_input_with_a_position() {
        let cases = [
            ("map(.a", "expected"),
            (".a |", "the end of the expression"),
            ("[1, 2", "expected"),
            ("{a: }", "line 1, column"),
            (".a\n| .b +* 2", "unexpected `+*` at line 2, column 6"),
            ("\"unterminated", "expected"),
        ];
        for (program, expected) in cases {
            let (kind, m) = message(run(program, json!({})).unwrap_err());
            assert_eq!(kind, "invalid", "{program}: {m}");
            assert!(
                m.starts_with("expression does not parse: "),
                "{program}: {m}"
            );
            assert!(m.contains(expected), "{program}: {m}");
        }
    }

    #[test]
    fn undefined_names_are_invalid_input() {
        let (kind, m) = message(run(".a | frobnicate(1)", json!({})).unwrap_err());
        assert_eq!(kind, "invalid");
        assert_eq!(
            m,
            "expression does not compile: undefined filter `frobnicate/1` at line 1, column 6"
        );
        let (_, m) = message(run("$nope", json!({})).unwrap_err());
        assert!(
            m.contains("undefined variable `nope`") || m.contains("undefined variable `$nope`"),
            "{m}"
        );
    }

    #[test]
    fn runtime_errors_are_fatal_with_the_message() {
        let cases = [
            ("error(\"no orders\")", "expression failed: no orders"),
            ("error({code: 7})", "expression failed: {\"code\":7}"),
            (".a + 1", "expression failed:"),
            (
                "{} | keys | .[0] | ascii_downcase | tonumber",
                "expression failed:",
            ),
            ("\"x\" | halt_error(3)", "exit code 3"),
        ];
        for (program, expected) in cases {
            let (kind, m) = message(run(program, json!({"a": "text"})).unwrap_err());
            assert_eq!(kind, "fatal", "{program}: {m}");
            assert!(m.contains(expected), "{program}: {m}");
        }
    }

    #[test]
    fn non_string_keys_cannot_become_json() {
        let (kind, m) = message(run("{(1): 2}", json!(null)).unwrap_err());
        assert_eq!(kind, "fatal");
        assert_eq!(
            m,
            "expression produced an object with the key 1; JSON object keys must be strings"
        );
    }

    #[test]
    fn positions_count_lines_and_characters() {
        let code = "ab\ncdé|x";
        assert_eq!(position(code, &code[7..8]), " at line 2, column 4");
        assert_eq!(position(code, &code[code.len()..]), " at line 2, column 6");
        assert_eq!(position(code, "elsewhere"), "");
    }

    #[test]
    fn describe_declares_no_role() {
        let info: weft_sdk::bindings::weft::plugin::types::PluginInfo =
            Transform::describe().into();
        let schema: Value = serde_json::from_str(&info.output_schema).unwrap();
        assert!(schema.get("x-weft-role").is_none());
        assert!(info.capabilities.is_empty());
    }
}
