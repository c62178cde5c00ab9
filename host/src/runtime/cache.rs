//! Compiling components once: by content hash in memory (see `Runtime`) and
//! as serialized artifacts on disk, named by content hash and the engine's
//! compatibility hash so an upgraded host never loads stale code.

use std::hash::{Hash, Hasher};
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;
use wasmtime::component::types::{ComponentItem, Type};

use super::error::LoadError;

/// The export every step plugin must have (any 0.x minor of the package).
const STEP_EXPORT_PREFIX: &str = "weft:plugin/step@0.";

pub(crate) fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Tells a component from a core module or from something else entirely,
/// so the error says what the file is.
pub(crate) fn check_is_component(bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[..4] != b"\0asm" {
        return Err(LoadError::NotAComponent(
            "the file does not start with the WebAssembly magic bytes".into(),
        ));
    }
    match bytes[4..8] {
        [0x0d, 0x00, 0x01, 0x00] => Ok(()),
        [0x01, 0x00, 0x00, 0x00] => Err(LoadError::NotAComponent(
            "this is a core WebAssembly module; build for wasm32-wasip2 or wrap it with `wasm-tools component new`".into(),
        )),
        _ => Err(LoadError::NotAComponent("unknown WebAssembly version or layer".into())),
    }
}

fn engine_hash(engine: &Engine) -> String {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("{:016x}", hasher.finish())
}

/// Compiles `bytes`, or loads the artifact a previous compile left in
/// `cache_dir`. Compilation runs on a blocking thread. Returns whether the
/// disk cache was used.
pub(crate) async fn compile(
    engine: &Engine,
    cache_dir: Option<&Path>,
    bytes: &[u8],
    hash: &str,
) -> Result<(Component, bool), LoadError> {
    let path = cache_dir.map(|dir| dir.join(format!("{hash}-{}.cwasm", engine_hash(engine))));
    if let Some(path) = &path
        && path.exists()
    {
        match deserialize(engine, path) {
            Ok(component) => return Ok((component, true)),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "discarding unusable cached component");
                let _ = std::fs::remove_file(path);
            }
        }
    }
    let engine = engine.clone();
    let owned = bytes.to_vec();
    let component = tokio::task::spawn_blocking(move || Component::new(&engine, &owned))
        .await
        .map_err(|e| LoadError::Engine(format!("compiler task failed: {e}")))?
        .map_err(|e| LoadError::NotAComponent(format!("{e:#}")))?;
    if let Some(path) = &path
        && let Err(e) = store(&component, path)
    {
        tracing::warn!(path = %path.display(), error = %e, "could not cache the compiled component");
    }
    Ok((component, false))
}

fn store(component: &Component, path: &Path) -> Result<(), String> {
    let serialized = component.serialize().map_err(|e| format!("{e:#}"))?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, serialized).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, path).map_err(|e| e.to_string())
}

#[allow(
    unsafe_code,
    reason = "the cache directory holds only artifacts this host serialized"
)]
fn deserialize(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: files in the cache directory are written by `store` above from
    // `Component::serialize`, named by the engine's compatibility hash, and
    // wasmtime checks the header again on load.
    unsafe { Component::deserialize_file(engine, path) }
}

/// The names a component imports and exports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ComponentWorld {
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

impl ComponentWorld {
    pub(crate) fn of(engine: &Engine, component: &Component) -> Self {
        let ty = component.component_type();
        let mut imports: Vec<String> = ty
            .imports(engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        let mut exports: Vec<String> = ty
            .exports(engine)
            .map(|(name, _)| name.to_owned())
            .collect();
        imports.sort();
        exports.sort();
        Self { imports, exports }
    }

    pub(crate) fn check_exports(&self) -> Result<(), LoadError> {
        if self
            .exports
            .iter()
            .any(|e| e.starts_with(STEP_EXPORT_PREFIX))
        {
            return Ok(());
        }
        Err(LoadError::WrongWorld(format!(
            "missing export `weft:plugin/step@0.1.0`; the component exports [{}]",
            self.exports.join(", ")
        )))
    }
}

/// The `step` functions as this host calls them, in [`shape`]'s notation.
const STEP_FUNCTIONS: [(&str, &str); 2] = [
    (
        "describe",
        "func() -> record{name: string, version: string, description: string, config-schema: string, input-schema: string, output-schema: string, capabilities: list<string>}",
    ),
    (
        "run",
        "func(ctx: record{tenant: string, run-id: string, step-id: string, attempt: u32, idempotency-key: string}, config: string, input: string) -> result<string, variant{retryable(string), fatal(string), invalid-input(string)}>",
    ),
];

/// Checks that the `step` export's functions have the types this host
/// calls them with. Without this, a component built against another
/// `step` interface of the same name would pass instantiation checks and
/// fail at its first call; with it, it is refused at load as the wrong
/// world, naming the function and both types.
pub(crate) fn check_step_types(engine: &Engine, component: &Component) -> Result<(), LoadError> {
    let ty = component.component_type();
    let Some((name, step)) = ty
        .exports(engine)
        .find(|(name, _)| name.starts_with(STEP_EXPORT_PREFIX))
    else {
        // check_exports names what is missing.
        return Ok(());
    };
    let ComponentItem::ComponentInstance(step) = step.ty else {
        return Err(LoadError::WrongWorld(format!(
            "export `{name}` is not an interface instance"
        )));
    };
    for (function, expected) in STEP_FUNCTIONS {
        let found = match step.get_export(engine, function).map(|e| e.ty) {
            Some(ComponentItem::ComponentFunc(func)) => {
                let params: Vec<String> = func
                    .params()
                    .map(|(param, ty)| format!("{param}: {}", shape(&ty)))
                    .collect();
                let results: Vec<String> = func.results().map(|ty| shape(&ty)).collect();
                let arrow = if results.is_empty() {
                    String::new()
                } else {
                    format!(" -> {}", results.join(", "))
                };
                format!("func({}){arrow}", params.join(", "))
            }
            Some(_) => "not a function".to_owned(),
            None => "missing".to_owned(),
        };
        if found != expected {
            return Err(LoadError::WrongWorld(format!(
                "export `{name}` function `{function}` is `{found}`; this host calls `{expected}`"
            )));
        }
    }
    Ok(())
}

/// A component-model type written out in WIT-like notation, structure
/// and names included, so two types compare as text.
fn shape(ty: &Type) -> String {
    let list = |items: Vec<String>| items.join(", ");
    match ty {
        Type::Bool => "bool".into(),
        Type::S8 => "s8".into(),
        Type::U8 => "u8".into(),
        Type::S16 => "s16".into(),
        Type::U16 => "u16".into(),
        Type::S32 => "s32".into(),
        Type::U32 => "u32".into(),
        Type::S64 => "s64".into(),
        Type::U64 => "u64".into(),
        Type::Float32 => "f32".into(),
        Type::Float64 => "f64".into(),
        Type::Char => "char".into(),
        Type::String => "string".into(),
        Type::List(l) => format!("list<{}>", shape(&l.ty())),
        Type::Record(r) => format!(
            "record{{{}}}",
            list(
                r.fields()
                    .map(|f| format!("{}: {}", f.name, shape(&f.ty)))
                    .collect()
            )
        ),
        Type::Tuple(t) => format!("tuple<{}>", list(t.types().map(|t| shape(&t)).collect())),
        Type::Variant(v) => format!(
            "variant{{{}}}",
            list(
                v.cases()
                    .map(|c| match &c.ty {
                        Some(ty) => format!("{}({})", c.name, shape(ty)),
                        None => c.name.to_owned(),
                    })
                    .collect()
            )
        ),
        Type::Enum(e) => format!("enum{{{}}}", list(e.names().map(str::to_owned).collect())),
        Type::Option(o) => format!("option<{}>", shape(&o.ty())),
        Type::Result(r) => {
            let side = |t: Option<Type>| t.map_or_else(|| "_".to_owned(), |t| shape(&t));
            format!("result<{}, {}>", side(r.ok()), side(r.err()))
        }
        Type::Flags(f) => format!("flags{{{}}}", list(f.names().map(str::to_owned).collect())),
        other => format!("{other:?}"),
    }
}
