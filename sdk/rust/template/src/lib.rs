//! A Weft step plugin. Build it with `weft plugin build` (which runs
//! `cargo build --release --target wasm32-wasip2`) and try it with
//! `weft plugin run {{name}}.wasm --config '{"name":"Ada"}'`.

use weft_sdk::{Plugin, PluginInfo, StepContext, StepError, Value, export_plugin, host, json};

struct Step;

impl Plugin for Step {
    fn describe() -> PluginInfo {
        PluginInfo::new("{{name}}", "0.1.0", "Greets someone by name.").config_schema(json!({
            "type": "object",
            "properties": {"name": {"type": "string", "minLength": 1}},
            "required": ["name"]
        }))
    }

    fn run(ctx: &StepContext, config: Value, _input: Value) -> Result<Value, StepError> {
        let name = config["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| StepError::invalid_input("config.name must be a non-empty string"))?;
        host::info(&format!("greeting {name} (attempt {})", ctx.attempt));
        Ok(json!({ "greeting": format!("Hello, {name}!") }))
    }
}

export_plugin!(Step);
