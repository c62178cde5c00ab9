// {{name}}: a Weft step plugin in Go. Build it with `weft plugin build`
// and try it with `weft plugin run {{name}}.wasm --config '{"name": "Ada"}'`.
package main

import (
	"fmt"

	"wit_component/weft"
)

func run(ctx weft.Context, config, input any) (any, error) {
	name := weft.String(config, "name", "")
	if name == "" {
		return nil, weft.InvalidInput("config.name must be a non-empty string")
	}
	weft.Log(weft.Info, fmt.Sprintf("greeting %s (attempt %d)", name, ctx.Attempt))
	return map[string]any{"greeting": "Hello, " + name + "!"}, nil
}

func init() {
	weft.Register(weft.Plugin{
		Name:        "{{name}}",
		Version:     "0.1.0",
		Description: "Greets someone by name.",
		ConfigSchema: map[string]any{
			"type":       "object",
			"properties": map[string]any{"name": map[string]any{"type": "string", "minLength": 1}},
			"required":   []string{"name"},
		},
		OutputSchema: map[string]any{
			"type":       "object",
			"properties": map[string]any{"greeting": map[string]any{"type": "string"}},
		},
		Run: run,
	})
}
