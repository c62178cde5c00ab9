/* {{name}}: a Weft step plugin in C. Build it with `weft plugin build`
 * and try it with `weft plugin run {{name}}.wasm --config '{"name": "Ada"}'`. */
#include <stdio.h>
#include <string.h>

#include "weft.h"

static weft_result run(const weft_context *ctx, const weft_value *config, const weft_value *input) {
    const char *name = weft_get_string(config, "name", "");
    if (!*name) return weft_invalid_input("config.name must be a non-empty string");
    weft_log(WEFT_INFO, "greeting %s (attempt %u)", name, ctx->attempt);
    size_t size = strlen(name) + 16;
    char greeting[size];
    snprintf(greeting, size, "Hello, %s!", name);
    weft_value *out = weft_object();
    weft_set(out, "greeting", weft_string(greeting));
    return weft_ok(out);
}

const weft_plugin WEFT_PLUGIN = {
    .name = "{{name}}",
    .version = "0.1.0",
    .description = "Greets someone by name.",
    .config_schema = "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"minLength\":1}},"
                     "\"required\":[\"name\"]}",
    .output_schema = "{\"type\":\"object\",\"properties\":{\"greeting\":{\"type\":\"string\"}}}",
    .run = run,
};
