// Package export_weft_plugin_step is where the generated bindings look for
// the `step` interface's functions: it hands them to the weft package.
// Part of the SDK; plugin code does not change it.
package export_weft_plugin_step

import (
	witTypes "go.bytecodealliance.org/pkg/wit/types"
	"wit_component/weft"
	"wit_component/weft_plugin_types"
)

func Describe() weft_plugin_types.PluginInfo {
	return weft.Describe()
}

func Run(ctx weft_plugin_types.StepContext, config, input string) witTypes.Result[string, weft_plugin_types.StepError] {
	return weft.Run(ctx, config, input)
}
