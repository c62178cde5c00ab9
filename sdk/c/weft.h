/* Weft step plugins in C: a thin layer over the bindings wit-bindgen
 * generates for the `weft:plugin/step-plugin` world (step_plugin.h).
 *
 * Config, input and output are JSON values (`weft_value`); a step returns
 * `weft_ok(output)` or fails with `weft_retryable`, `weft_fatal` or
 * `weft_invalid_input`; the host's capabilities are plain functions.
 *
 *     static weft_result run(const weft_context *ctx, const weft_value *config,
 *                            const weft_value *input) {
 *         const char *name = weft_get_string(config, "name", NULL);
 *         if (!name) return weft_invalid_input("config.name is required");
 *         weft_value *out = weft_object();
 *         weft_set(out, "greeting", weft_string(name));
 *         return weft_ok(out);
 *     }
 *     const weft_plugin WEFT_PLUGIN = {.name = "hello", .version = "0.1.0",
 *                                      .description = "Greets.", .run = run};
 *
 * Memory: every attempt runs in a fresh sandbox that is thrown away after
 * it, so values, strings and buffers the SDK returns are never freed by
 * the plugin; allocate freely within the memory limit.
 *
 * Build: `weft plugin build` in the project directory (clang for
 * wasm32-wasi and wasi-libc).
 */
#ifndef WEFT_H
#define WEFT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- JSON values ---------------------------------------------------- */

typedef enum {
    WEFT_NULL,
    WEFT_BOOL,
    WEFT_NUMBER,
    WEFT_STRING,
    WEFT_ARRAY,
    WEFT_OBJECT,
} weft_kind;

/* A JSON value. Numbers keep their literal text, so integers beyond 2^53
 * and every digit of a float survive a round trip. Strings are UTF-8 and
 * may hold NUL (`len` is their length). */
typedef struct weft_value {
    weft_kind kind;
    bool boolean;
    char *text;                 /* string contents or number literal, NUL-terminated */
    size_t len;                 /* length of `text` */
    struct weft_value **items;  /* array items or object values */
    char **keys;                /* object keys (NUL-terminated) */
    size_t count;
    size_t capacity;
} weft_value;

/* Parses JSON text; NULL with a message in `error` (if given) when it is
 * not JSON. */
weft_value *weft_parse(const char *text, size_t len, const char **error);
/* Writes compact JSON (NUL-terminated, length in `len` if given); NULL with
 * a message in `error` when a number is NaN or infinite. */
char *weft_write(const weft_value *value, size_t *len, const char **error);

weft_value *weft_null(void);
weft_value *weft_bool(bool value);
weft_value *weft_int(int64_t value);
weft_value *weft_uint(uint64_t value);
weft_value *weft_double(double value);
/* A number from its JSON literal (`"12345678901234567890"`); NULL if it
 * is not one. */
weft_value *weft_number(const char *literal);
weft_value *weft_string(const char *text);
weft_value *weft_string_n(const char *text, size_t len);
weft_value *weft_array(void);
weft_value *weft_object(void);
/* Appends to an array; returns the array. */
weft_value *weft_push(weft_value *array, weft_value *item);
/* Sets a key of an object (replacing an earlier value); returns the object. */
weft_value *weft_set(weft_value *object, const char *key, weft_value *item);

/* The value under `key` of an object; NULL when absent or not an object. */
const weft_value *weft_get(const weft_value *object, const char *key);
/* Item `index` of an array; NULL when out of range or not an array. */
const weft_value *weft_at(const weft_value *array, size_t index);
/* Items of an array or keys of an object; 0 otherwise. */
size_t weft_len(const weft_value *value);

/* Typed reads of a key with a default for absent or mistyped values. */
const char *weft_get_string(const weft_value *object, const char *key, const char *def);
int64_t weft_get_int(const weft_value *object, const char *key, int64_t def);
double weft_get_double(const weft_value *object, const char *key, double def);
bool weft_get_bool(const weft_value *object, const char *key, bool def);
/* A number as an integer; false when it is not an integer in range. */
bool weft_as_int(const weft_value *number, int64_t *out);

/* ---- The plugin ----------------------------------------------------- */

typedef struct {
    const char *tenant;
    const char *run_id;
    const char *step_id;
    uint32_t attempt;
    const char *idempotency_key;
} weft_context;

typedef enum {
    WEFT_OK,
    WEFT_RETRYABLE,
    WEFT_FATAL,
    WEFT_INVALID_INPUT,
} weft_status;

typedef struct {
    weft_status status;
    weft_value *output;  /* WEFT_OK */
    char *message;       /* the others */
} weft_result;

weft_result weft_ok(weft_value *output);
/* Failures, with printf-style messages. */
weft_result weft_retryable(const char *format, ...) __attribute__((format(printf, 1, 2)));
weft_result weft_fatal(const char *format, ...) __attribute__((format(printf, 1, 2)));
weft_result weft_invalid_input(const char *format, ...) __attribute__((format(printf, 1, 2)));

typedef struct {
    const char *name;
    const char *version;
    const char *description;
    /* JSON Schema documents as JSON text; NULL: anything. */
    const char *config_schema;
    const char *input_schema;
    const char *output_schema;
    /* NULL-terminated; NULL: none. */
    const char *const *capabilities;
    weft_result (*run)(const weft_context *ctx, const weft_value *config,
                       const weft_value *input);
} weft_plugin;

/* Every plugin defines this. */
extern const weft_plugin WEFT_PLUGIN;

/* ---- Host capabilities ---------------------------------------------- */

typedef enum { WEFT_TRACE, WEFT_DEBUG, WEFT_INFO, WEFT_WARN, WEFT_ERROR } weft_level;

/* Appends a line to the attempt's log (printf-style). */
void weft_log(weft_level level, const char *format, ...) __attribute__((format(printf, 2, 3)));
/* Reports progress; percent is clamped to 0..=100. */
void weft_progress(int percent, const char *note);
/* The tenant's secret; NULL when it does not exist or is not granted. */
const char *weft_secret(const char *name);
/* An uploaded file's bytes; false with the host's reason in `error`. */
bool weft_read_file(const char *file_id, uint8_t **data, size_t *len, const char **error);
/* Queues a message (addresses NULL-terminated; `cc` may be NULL) once
 * per attempt position; its id, or NULL with the reason in `error`. */
const char *weft_send_mail(const char *const *to, const char *const *cc, const char *subject,
                           const char *body, const char **error);
/* Records a notification (level NULL: info) once per attempt position;
 * its id, or NULL with the reason in `error`. */
const char *weft_notify(const char *title, const char *body, const char *level,
                        const char *audience, const char *link, const char **error);

/* The tenant's key-value store; `bucket` NULL or "default" is the default
 * bucket. On failure these return false with the reason in `error`
 * ("key-value store \"default\": access denied"); such failures are worth
 * a retry. */
bool weft_kv_get(const char *bucket, const char *key, uint8_t **value, size_t *len, bool *found,
                 const char **error);
bool weft_kv_set(const char *bucket, const char *key, const void *value, size_t len,
                 const char **error);
bool weft_kv_delete(const char *bucket, const char *key, const char **error);
/* Every key, as a JSON array of strings. */
bool weft_kv_keys(const char *bucket, weft_value **keys, const char **error);

/* An HTTP response, read whole. */
typedef struct {
    int status;
    weft_value *headers; /* object: lowercase name -> array of values */
    uint8_t *body;
    size_t body_len;
} weft_response;

/* Sends an HTTP request through the host, which lets it through only to
 * hosts the plugin is granted, and reads the whole response. `method` NULL
 * is GET; `headers` is NULL or NULL-terminated name, value pairs; `body`
 * may be NULL. On failure: false, the reason in `error` and what it means
 * for the step in `kind` (WEFT_INVALID_INPUT: a bad URL or header;
 * WEFT_FATAL: "request denied", the host is not granted; WEFT_RETRYABLE:
 * the request failed in transit). */
bool weft_http(const char *method, const char *url, const char *const *headers, const void *body,
               size_t body_len, weft_response *response, weft_status *kind, const char **error);

#ifdef __cplusplus
}
#endif

#endif
