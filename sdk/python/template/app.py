"""A Weft step plugin. Build it with `weft plugin build`, which runs:

    componentize-py -d wit -w step-plugin componentize app -p . -o {{name}}.wasm

and try it with `weft plugin run {{name}}.wasm --config '{"name": "Ada"}'`.
"""

import weft_sdk as weft


def run(ctx, config, input):
    name = config.get("name")
    if not isinstance(name, str) or not name:
        raise weft.InvalidInput("config.name must be a non-empty string")
    weft.log("info", f"greeting {name} (attempt {ctx.attempt})")
    return {"greeting": f"Hello, {name}!"}


Step = weft.plugin(
    name="{{name}}",
    version="0.1.0",
    description="Greets someone by name.",
    config_schema={
        "type": "object",
        "properties": {"name": {"type": "string", "minLength": 1}},
        "required": ["name"],
    },
    output_schema={
        "type": "object",
        "properties": {"greeting": {"type": "string"}},
    },
    run=run,
)
