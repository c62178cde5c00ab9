/* hello_c: greets someone and remembers, in the tenant's key-value store,
 * how many times it has greeted them. The C example plugin. */
#include <stdio.h>
#include <string.h>

#include "weft.h"

static weft_result run(const weft_context *ctx, const weft_value *config, const weft_value *input) {
    (void)input;
    const char *name = weft_get_string(config, "name", NULL);
    if (!name || !*name) return weft_invalid_input("config.name must be a non-empty string");
    const char *greeting = weft_get_string(config, "greeting", "Hello");
    if (strchr(greeting, '\n') || strlen(greeting) > 100)
        return weft_invalid_input("config.greeting must be one line of at most 100 bytes");

    size_t key_len = strlen(name) + 16;
    char key[key_len];
    snprintf(key, key_len, "greeted/%s", name);
    const char *error;
    uint8_t *stored;
    size_t stored_len;
    bool found;
    if (!weft_kv_get(NULL, key, &stored, &stored_len, &found, &error)) return weft_retryable("%s", error);
    int64_t times = 0;
    if (found) {
        weft_value *n = weft_parse((const char *)stored, stored_len, NULL);
        if (!n || !weft_as_int(n, &times)) return weft_fatal("%s holds %.*s, not a count", key, (int)stored_len, stored);
    }
    times++;
    char text[32];
    snprintf(text, sizeof text, "%lld", (long long)times);
    if (!weft_kv_set(NULL, key, text, strlen(text), &error)) return weft_retryable("%s", error);
    weft_log(WEFT_INFO, "greeted %s %lld time(s) (attempt %u)", name, (long long)times, ctx->attempt);

    size_t size = strlen(greeting) + strlen(name) + 4;
    char message[size];
    snprintf(message, size, "%s, %s!", greeting, name);
    weft_value *out = weft_object();
    weft_set(out, "greeting", weft_string(message));
    weft_set(out, "times", weft_int(times));
    weft_set(out, "language", weft_string("c"));
    return weft_ok(out);
}

static const char *const capabilities[] = {"kv", NULL};

const weft_plugin WEFT_PLUGIN = {
    .name = "hello_c",
    .version = "1.0.0",
    .description = "Greets someone by name and counts how often it has (written in C).",
    .config_schema = "{\"type\":\"object\",\"properties\":{\"name\":{\"type\":\"string\",\"minLength\":1},"
                     "\"greeting\":{\"type\":\"string\"}},\"required\":[\"name\"]}",
    .output_schema = "{\"type\":\"object\",\"properties\":{\"greeting\":{\"type\":\"string\"},"
                     "\"times\":{\"type\":\"integer\"},\"language\":{\"type\":\"string\"}}}",
    .capabilities = capabilities,
    .run = run,
};
