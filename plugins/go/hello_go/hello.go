// hello_go: greets someone and remembers, in the tenant's key-value store,
// how many times it has greeted them. The Go example plugin.
package main

import (
	"fmt"
	"strings"

	"wit_component/weft"
)

func run(ctx weft.Context, config, input any) (any, error) {
	name := weft.String(config, "name", "")
	if name == "" {
		return nil, weft.InvalidInput("config.name must be a non-empty string")
	}
	greeting := weft.String(config, "greeting", "Hello")
	if strings.Contains(greeting, "\n") || len(greeting) > 100 {
		return nil, weft.InvalidInput("config.greeting must be one line of at most 100 bytes")
	}
	key := "greeted/" + name
	store := weft.KV("")
	var times int64
	if _, err := store.GetJSON(key, &times); err != nil {
		return nil, err
	}
	times++
	if err := store.SetJSON(key, times); err != nil {
		return nil, err
	}
	weft.Log(weft.Info, fmt.Sprintf("greeted %s %d time(s) (attempt %d)", name, times, ctx.Attempt))
	return map[string]any{
		"greeting": greeting + ", " + name + "!",
		"times":    times,
		"language": "go",
	}, nil
}

func init() {
	weft.Register(weft.Plugin{
		Name:        "hello_go",
		Version:     "1.0.0",
		Description: "Greets someone by name and counts how often it has (written in Go).",
		ConfigSchema: map[string]any{
			"type": "object",
			"properties": map[string]any{
				"name":     map[string]any{"type": "string", "minLength": 1},
				"greeting": map[string]any{"type": "string"},
			},
			"required": []string{"name"},
		},
		OutputSchema: map[string]any{
			"type": "object",
			"properties": map[string]any{
				"greeting": map[string]any{"type": "string"},
				"times":    map[string]any{"type": "integer"},
				"language": map[string]any{"type": "string"},
			},
		},
		Capabilities: []string{"kv"},
		Run:          run,
	})
}
