//! # weft-sdk: write Weft step plugins in Rust
//!
//! A step plugin is a type implementing [`Plugin`] plus one
//! [`export_plugin!`] line. The crate builds to a WebAssembly component with
//! `cargo build --release --target wasm32-wasip2` (crate type `cdylib`), and
//! `weft plugin run target/wasm32-wasip2/release/<name>.wasm --config '{..}'`
//! tries it without a server.
//!
//! ```no_run
//! use weft_sdk::{export_plugin, json, host, Plugin, PluginInfo, StepContext, StepError, Value};
//!
//! struct Greet;
//!
//! impl Plugin for Greet {
//!     fn describe() -> PluginInfo {
//!         PluginInfo::new("greet", "1.0.0", "Greets someone by name")
//!             .config_schema(json!({
//!                 "type": "object",
//!                 "properties": {"greeting": {"type": "string"}},
//!             }))
//!             .input_schema(json!({
//!                 "type": "object",
//!                 "required": ["name"],
//!                 "properties": {"name": {"type": "string"}},
//!             }))
//!     }
//!
//!     fn run(_ctx: &StepContext, config: Value, input: Value) -> Result<Value, StepError> {
//!         let name = input["name"]
//!             .as_str()
//!             .ok_or_else(|| StepError::invalid_input("input.name must be a string"))?;
//!         let greeting = config["greeting"].as_str().unwrap_or("Hello");
//!         host::info(&format!("greeting {name}"));
//!         Ok(json!({ "message": format!("{greeting}, {name}!") }))
//!     }
//! }
//!
//! export_plugin!(Greet);
//! ```
//!
//! # Layout
//!
//! - [`Plugin`], [`PluginInfo`], [`StepError`]: what an author implements
//!   and returns.
//! - [`config`]: reading config fields with errors that name the field.
//! - [`host`]: log, progress, secrets, files, mail and notifications.
//! - [`kv`]: the tenant's key-value store (`wasi:keyvalue/store`).
//! - [`http`]: outbound HTTP (`wasi:http/outgoing-handler`), only to hosts
//!   the plugin is granted.
//! - [`bindings`]: the raw `wit-bindgen` output, for the rare plugin that
//!   needs it (test fixtures do).

use std::marker::PhantomData;

pub use serde_json::{self, Value, json};

pub mod config;
pub mod host;
pub mod http;
pub mod kv;

/// Raw bindings generated from `wit/` for the `step-plugin` world.
#[allow(missing_docs, clippy::all, reason = "generated code")]
pub mod bindings {
    wit_bindgen::generate!({
        world: "step-plugin",
        path: "../../wit",
        pub_export_macro: true,
        export_macro_name: "__export_step_plugin",
        default_bindings_module: "weft_sdk::bindings",
        generate_all,
    });
}

use bindings::weft::plugin::types as wit;

/// Who is asking and which attempt this is: tenant, run id, step id,
/// attempt number (1-based) and the idempotency key shared by every attempt
/// of this step in this run.
pub type StepContext = wit::StepContext;

/// A step plugin.
pub trait Plugin {
    /// What the plugin is: name, version, schemas and the capabilities it
    /// asks for. Called once when the host loads the component.
    fn describe() -> PluginInfo;

    /// Runs one attempt with the step's config and input (JSON values) and
    /// returns the step's output.
    fn run(ctx: &StepContext, config: Value, input: Value) -> Result<Value, StepError>;
}

/// Why an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepError {
    /// Transient: the host retries if the step's retry policy allows.
    Retryable(String),
    /// Permanent: the host does not retry.
    Fatal(String),
    /// The config or input is wrong: the host does not retry.
    InvalidInput(String),
}

impl StepError {
    pub fn retryable(message: impl Into<String>) -> Self {
        Self::Retryable(message.into())
    }
    pub fn fatal(message: impl Into<String>) -> Self {
        Self::Fatal(message.into())
    }
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::InvalidInput(message.into())
    }
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Retryable(m) => write!(f, "retryable: {m}"),
            Self::Fatal(m) => write!(f, "fatal: {m}"),
            Self::InvalidInput(m) => write!(f, "invalid input: {m}"),
        }
    }
}

impl std::error::Error for StepError {}

impl From<StepError> for wit::StepError {
    fn from(e: StepError) -> Self {
        match e {
            StepError::Retryable(m) => Self::Retryable(m),
            StepError::Fatal(m) => Self::Fatal(m),
            StepError::InvalidInput(m) => Self::InvalidInput(m),
        }
    }
}

/// What a plugin says about itself; built with [`PluginInfo::new`] and the
/// builder methods.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    name: String,
    version: String,
    description: String,
    config_schema: Value,
    input_schema: Value,
    output_schema: Value,
    capabilities: Vec<String>,
}

impl PluginInfo {
    /// A plugin that accepts any config and input and asks for nothing.
    pub fn new(name: &str, version: &str, description: &str) -> Self {
        Self {
            name: name.to_owned(),
            version: version.to_owned(),
            description: description.to_owned(),
            config_schema: json!({"type": "object"}),
            input_schema: json!({}),
            output_schema: json!({}),
            capabilities: Vec::new(),
        }
    }

    /// JSON Schema the step's `config` must meet; the host validates
    /// definitions against it.
    pub fn config_schema(mut self, schema: Value) -> Self {
        self.config_schema = schema;
        self
    }

    /// JSON Schema of the step's input.
    pub fn input_schema(mut self, schema: Value) -> Self {
        self.input_schema = schema;
        self
    }

    /// JSON Schema of the step's output.
    pub fn output_schema(mut self, schema: Value) -> Self {
        self.output_schema = schema;
        self
    }

    /// Asks for a capability: `http:<host>`, `secret:<NAME>`, `mail`,
    /// `notify`, `kv` or `files`.
    pub fn capability(mut self, capability: &str) -> Self {
        self.capabilities.push(capability.to_owned());
        self
    }
}

impl From<PluginInfo> for wit::PluginInfo {
    fn from(p: PluginInfo) -> Self {
        Self {
            name: p.name,
            version: p.version,
            description: p.description,
            config_schema: p.config_schema.to_string(),
            input_schema: p.input_schema.to_string(),
            output_schema: p.output_schema.to_string(),
            capabilities: p.capabilities,
        }
    }
}

/// Connects a [`Plugin`] to the generated export; used by [`export_plugin!`].
#[doc(hidden)]
pub struct Adapter<P>(PhantomData<P>);

impl<P: Plugin> bindings::exports::weft::plugin::step::Guest for Adapter<P> {
    fn describe() -> wit::PluginInfo {
        P::describe().into()
    }

    fn run(ctx: StepContext, config: String, input: String) -> Result<String, wit::StepError> {
        let config = parse_json(&config, "config")?;
        let input = parse_json(&input, "input")?;
        let output = P::run(&ctx, config, input)?;
        Ok(output.to_string())
    }
}

/// Empty text stands for `null`: the host sends `""` when a step has no config.
fn parse_json(text: &str, what: &str) -> Result<Value, wit::StepError> {
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(text)
        .map_err(|e| wit::StepError::InvalidInput(format!("{what} is not valid JSON: {e}")))
}

/// Exports a [`Plugin`] implementation as the component's `step` interface.
///
/// Use it once per plugin crate: `weft_sdk::export_plugin!(MyPlugin);`
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        type __WeftExportedPlugin = $crate::Adapter<$plugin>;
        $crate::bindings::__export_step_plugin!(__WeftExportedPlugin with_types_in $crate::bindings);
    };
}
