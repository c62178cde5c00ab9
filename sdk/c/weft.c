/* The C SDK's implementation: JSON values, the exports the bindings call,
 * and the host capabilities. See weft.h. */
#include "weft.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "step_plugin.h"

/* ---- Memory and strings --------------------------------------------- */

static void *alloc(size_t size) {
    void *p = malloc(size ? size : 1);
    if (!p) abort(); /* the memory limit: the host reports it */
    return p;
}

static char *copy_n(const char *text, size_t len) {
    char *out = alloc(len + 1);
    memcpy(out, text, len);
    out[len] = 0;
    return out;
}

static char *copy_wit(const step_plugin_string_t *s) {
    return copy_n((const char *)s->ptr, s->len);
}

static step_plugin_string_t wit(const char *text) {
    step_plugin_string_t s = {(uint8_t *)(text ? text : ""), text ? strlen(text) : 0};
    return s;
}

static char *vformat(const char *format, va_list args) {
    va_list again;
    va_copy(again, args);
    int n = vsnprintf(NULL, 0, format, args);
    char *out = alloc(n > 0 ? (size_t)n + 1 : 1);
    vsnprintf(out, n > 0 ? (size_t)n + 1 : 1, format, again);
    va_end(again);
    return out;
}

static char *format(const char *format, ...) {
    va_list args;
    va_start(args, format);
    char *out = vformat(format, args);
    va_end(args);
    return out;
}

/* ---- Values --------------------------------------------------------- */

static weft_value *value(weft_kind kind) {
    weft_value *v = alloc(sizeof *v);
    memset(v, 0, sizeof *v);
    v->kind = kind;
    return v;
}

weft_value *weft_null(void) { return value(WEFT_NULL); }

weft_value *weft_bool(bool b) {
    weft_value *v = value(WEFT_BOOL);
    v->boolean = b;
    return v;
}

static weft_value *number_text(char *text) {
    weft_value *v = value(WEFT_NUMBER);
    v->text = text;
    v->len = strlen(text);
    return v;
}

weft_value *weft_int(int64_t n) { return number_text(format("%lld", (long long)n)); }
weft_value *weft_uint(uint64_t n) { return number_text(format("%llu", (unsigned long long)n)); }

weft_value *weft_double(double d) {
    /* NaN and infinities are not JSON: kept as a number without text,
     * which weft_write refuses. */
    if (!isfinite(d)) return value(WEFT_NUMBER);
    if (d == floor(d) && fabs(d) < 1e15) return number_text(format("%.0f", d));
    return number_text(format("%.17g", d));
}

weft_value *weft_string_n(const char *text, size_t len) {
    weft_value *v = value(WEFT_STRING);
    v->text = copy_n(text, len);
    v->len = len;
    return v;
}

weft_value *weft_string(const char *text) { return weft_string_n(text, strlen(text)); }
weft_value *weft_array(void) { return value(WEFT_ARRAY); }
weft_value *weft_object(void) { return value(WEFT_OBJECT); }

static void grow(weft_value *v) {
    if (v->count < v->capacity) return;
    v->capacity = v->capacity ? v->capacity * 2 : 4;
    weft_value **items = alloc(v->capacity * sizeof *items);
    if (v->count) memcpy(items, v->items, v->count * sizeof *items);
    v->items = items;
    if (v->kind == WEFT_OBJECT) {
        char **keys = alloc(v->capacity * sizeof *keys);
        if (v->count) memcpy(keys, v->keys, v->count * sizeof *keys);
        v->keys = keys;
    }
}

weft_value *weft_push(weft_value *array, weft_value *item) {
    if (!array || array->kind != WEFT_ARRAY) return array;
    grow(array);
    array->items[array->count++] = item;
    return array;
}

weft_value *weft_set(weft_value *object, const char *key, weft_value *item) {
    if (!object || object->kind != WEFT_OBJECT) return object;
    /* The last of duplicate keys, the one weft_get reads. */
    for (size_t i = object->count; i > 0; i--) {
        if (strcmp(object->keys[i - 1], key) == 0) {
            object->items[i - 1] = item;
            return object;
        }
    }
    grow(object);
    object->keys[object->count] = copy_n(key, strlen(key));
    object->items[object->count++] = item;
    return object;
}

const weft_value *weft_get(const weft_value *object, const char *key) {
    if (!object || object->kind != WEFT_OBJECT) return NULL;
    /* The last of duplicate keys wins, as in most JSON libraries. */
    for (size_t i = object->count; i > 0; i--) {
        if (strcmp(object->keys[i - 1], key) == 0) return object->items[i - 1];
    }
    return NULL;
}

const weft_value *weft_at(const weft_value *array, size_t index) {
    if (!array || array->kind != WEFT_ARRAY || index >= array->count) return NULL;
    return array->items[index];
}

size_t weft_len(const weft_value *v) {
    return v && (v->kind == WEFT_ARRAY || v->kind == WEFT_OBJECT) ? v->count : 0;
}

const char *weft_get_string(const weft_value *object, const char *key, const char *def) {
    const weft_value *v = weft_get(object, key);
    return v && v->kind == WEFT_STRING ? v->text : def;
}

bool weft_as_int(const weft_value *v, int64_t *out) {
    if (!v || v->kind != WEFT_NUMBER || !v->text) return false;
    char *end;
    errno = 0;
    long long n = strtoll(v->text, &end, 10);
    if (errno == ERANGE) return false;
    if (*end || end == v->text) {
        double d = strtod(v->text, &end);
        if (*end || d != floor(d) || fabs(d) > 9007199254740992.0) return false;
        n = (long long)d;
    }
    *out = n;
    return true;
}

int64_t weft_get_int(const weft_value *object, const char *key, int64_t def) {
    int64_t n;
    return weft_as_int(weft_get(object, key), &n) ? n : def;
}

double weft_get_double(const weft_value *object, const char *key, double def) {
    const weft_value *v = weft_get(object, key);
    return v && v->kind == WEFT_NUMBER && v->text ? strtod(v->text, NULL) : def;
}

bool weft_get_bool(const weft_value *object, const char *key, bool def) {
    const weft_value *v = weft_get(object, key);
    return v && v->kind == WEFT_BOOL ? v->boolean : def;
}

/* ---- Parsing -------------------------------------------------------- */

typedef struct {
    const char *p;
    const char *end;
    const char *error;
    int depth;
} parser;

/* Deeper documents are refused rather than overflowing the stack. */
#define MAX_DEPTH 512

static void skip_space(parser *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

static weft_value *fail(parser *ps, const char *error) {
    if (!ps->error) ps->error = error;
    return NULL;
}

static bool literal(parser *ps, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0) return false;
    ps->p += n;
    return true;
}

static int hex4(const char *p) {
    int n = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        n <<= 4;
        if (c >= '0' && c <= '9') n |= c - '0';
        else if (c >= 'a' && c <= 'f') n |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F') n |= c - 'A' + 10;
        else return -1;
    }
    return n;
}

static size_t put_utf8(char *out, unsigned cp) {
    if (cp < 0x80) { out[0] = (char)cp; return 1; }
    if (cp < 0x800) { out[0] = (char)(0xC0 | cp >> 6); out[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | cp >> 12);
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | cp >> 18);
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* A string after its opening quote; its contents in *out, length *len. */
static bool parse_string(parser *ps, char **out, size_t *len) {
    /* Escapes only shrink, so the raw length bounds the decoded one. */
    const char *start = ps->p;
    const char *q = start;
    while (q < ps->end && *q != '"') q += (*q == '\\' && q + 1 < ps->end) ? 2 : 1;
    if (q >= ps->end) return fail(ps, "unterminated string"), false;
    char *buf = alloc((size_t)(q - start) + 1);
    size_t n = 0;
    while (ps->p < q) {
        unsigned char c = (unsigned char)*ps->p++;
        if (c < 0x20) return fail(ps, "control character in a string"), false;
        if (c != '\\') { buf[n++] = (char)c; continue; }
        char e = *ps->p++;
        switch (e) {
        case '"': buf[n++] = '"'; break;
        case '\\': buf[n++] = '\\'; break;
        case '/': buf[n++] = '/'; break;
        case 'b': buf[n++] = '\b'; break;
        case 'f': buf[n++] = '\f'; break;
        case 'n': buf[n++] = '\n'; break;
        case 'r': buf[n++] = '\r'; break;
        case 't': buf[n++] = '\t'; break;
        case 'u': {
            if (q - ps->p < 4) return fail(ps, "bad \\u escape"), false;
            int cp = hex4(ps->p);
            if (cp < 0) return fail(ps, "bad \\u escape"), false;
            ps->p += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF && q - ps->p >= 6 && ps->p[0] == '\\' && ps->p[1] == 'u') {
                int low = hex4(ps->p + 2);
                if (low >= 0xDC00 && low <= 0xDFFF) {
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
                    ps->p += 6;
                }
            }
            if (cp >= 0xD800 && cp <= 0xDFFF) cp = 0xFFFD; /* a lone surrogate */
            n += put_utf8(buf + n, (unsigned)cp);
            break;
        }
        default:
            return fail(ps, "bad escape in a string"), false;
        }
    }
    ps->p = q + 1;
    buf[n] = 0;
    *out = buf;
    *len = n;
    return true;
}

static weft_value *parse_value(parser *ps);

static weft_value *parse_number(parser *ps) {
    const char *start = ps->p;
    const char *p = ps->p;
    if (p < ps->end && *p == '-') p++;
    if (p < ps->end && *p == '0') p++;
    else if (p < ps->end && *p >= '1' && *p <= '9') while (p < ps->end && *p >= '0' && *p <= '9') p++;
    else return fail(ps, "unexpected character");
    if (p < ps->end && *p == '.') {
        p++;
        if (p >= ps->end || *p < '0' || *p > '9') return fail(ps, "bad number");
        while (p < ps->end && *p >= '0' && *p <= '9') p++;
    }
    if (p < ps->end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < ps->end && (*p == '+' || *p == '-')) p++;
        if (p >= ps->end || *p < '0' || *p > '9') return fail(ps, "bad number");
        while (p < ps->end && *p >= '0' && *p <= '9') p++;
    }
    ps->p = p;
    return number_text(copy_n(start, (size_t)(p - start)));
}

static weft_value *parse_value(parser *ps) {
    skip_space(ps);
    if (ps->p >= ps->end) return fail(ps, "unexpected end of JSON");
    char c = *ps->p;
    if (c == '{' || c == '[') {
        if (++ps->depth > MAX_DEPTH) return fail(ps, "nested too deeply");
        ps->p++;
        bool object = c == '{';
        weft_value *v = object ? weft_object() : weft_array();
        skip_space(ps);
        if (ps->p < ps->end && *ps->p == (object ? '}' : ']')) {
            ps->p++;
            ps->depth--;
            return v;
        }
        for (;;) {
            char *key = NULL;
            if (object) {
                skip_space(ps);
                size_t key_len;
                if (ps->p >= ps->end || *ps->p != '"') return fail(ps, "expected a key");
                ps->p++;
                if (!parse_string(ps, &key, &key_len)) return NULL;
                skip_space(ps);
                if (ps->p >= ps->end || *ps->p != ':') return fail(ps, "expected ':'");
                ps->p++;
            }
            weft_value *item = parse_value(ps);
            if (!item) return NULL;
            if (object) {
                /* Appended as is (weft_get takes the last duplicate). */
                grow(v);
                v->keys[v->count] = key;
                v->items[v->count++] = item;
            } else {
                weft_push(v, item);
            }
            skip_space(ps);
            if (ps->p < ps->end && *ps->p == ',') { ps->p++; continue; }
            if (ps->p < ps->end && *ps->p == (object ? '}' : ']')) { ps->p++; break; }
            return fail(ps, object ? "expected ',' or '}'" : "expected ',' or ']'");
        }
        ps->depth--;
        return v;
    }
    if (c == '"') {
        ps->p++;
        weft_value *v = value(WEFT_STRING);
        if (!parse_string(ps, &v->text, &v->len)) return NULL;
        return v;
    }
    if (literal(ps, "null")) return weft_null();
    if (literal(ps, "true")) return weft_bool(true);
    if (literal(ps, "false")) return weft_bool(false);
    return parse_number(ps);
}

weft_value *weft_parse(const char *text, size_t len, const char **error) {
    parser ps = {text, text + len, NULL, 0};
    weft_value *v = parse_value(&ps);
    if (v) {
        skip_space(&ps);
        if (ps.p != ps.end) v = fail(&ps, "trailing data after the JSON value");
    }
    if (!v && error) *error = format("%s at byte %zu", ps.error, (size_t)(ps.p - text));
    return v;
}

weft_value *weft_number(const char *literal_text) {
    weft_value *v = weft_parse(literal_text, strlen(literal_text), NULL);
    return v && v->kind == WEFT_NUMBER ? v : NULL;
}

/* ---- Writing -------------------------------------------------------- */

typedef struct {
    char *data;
    size_t len;
    size_t capacity;
    const char *error;
} buffer;

static void put(buffer *b, const char *s, size_t n) {
    if (b->len + n + 1 > b->capacity) {
        size_t capacity = b->capacity ? b->capacity : 256;
        while (b->len + n + 1 > capacity) capacity *= 2;
        char *data = alloc(capacity);
        if (b->len) memcpy(data, b->data, b->len);
        free(b->data);
        b->data = data;
        b->capacity = capacity;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = 0;
}

/* The length of the valid UTF-8 sequence at s (0 if invalid). */
static size_t utf8_len(const unsigned char *s, size_t left) {
    unsigned c = s[0];
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (n == 0 || n > left) return 0;
    for (size_t i = 1; i < n; i++) if ((s[i] & 0xC0) != 0x80) return 0;
    unsigned cp = n == 1 ? c : n == 2 ? (c & 0x1F) << 6 | (s[1] & 0x3F)
                : n == 3 ? (c & 0x0F) << 12 | (s[1] & 0x3F) << 6 | (s[2] & 0x3F)
                : (c & 0x07) << 18 | (s[1] & 0x3F) << 12 | (s[2] & 0x3F) << 6 | (s[3] & 0x3F);
    if ((n == 2 && cp < 0x80) || (n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

static void put_string(buffer *b, const char *s, size_t len) {
    put(b, "\"", 1);
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        unsigned char c = u[i];
        char esc[8];
        if (c == '"') put(b, "\\\"", 2);
        else if (c == '\\') put(b, "\\\\", 2);
        else if (c == '\n') put(b, "\\n", 2);
        else if (c == '\r') put(b, "\\r", 2);
        else if (c == '\t') put(b, "\\t", 2);
        else if (c < 0x20) { snprintf(esc, sizeof esc, "\\u%04x", c); put(b, esc, 6); }
        else {
            size_t n = utf8_len(u + i, len - i);
            if (n == 0) { put(b, "\xEF\xBF\xBD", 3); i++; continue; } /* invalid UTF-8: U+FFFD */
            put(b, s + i, n);
            i += n;
            continue;
        }
        i++;
    }
    put(b, "\"", 1);
}

static void put_value(buffer *b, const weft_value *v) {
    if (b->error) return;
    if (!v) { put(b, "null", 4); return; }
    switch (v->kind) {
    case WEFT_NULL: put(b, "null", 4); break;
    case WEFT_BOOL: v->boolean ? put(b, "true", 4) : put(b, "false", 5); break;
    case WEFT_NUMBER:
        if (!v->text) { b->error = "NaN and infinity are not JSON"; return; }
        put(b, v->text, v->len);
        break;
    case WEFT_STRING: put_string(b, v->text, v->len); break;
    case WEFT_ARRAY:
    case WEFT_OBJECT:
        put(b, v->kind == WEFT_ARRAY ? "[" : "{", 1);
        for (size_t i = 0; i < v->count; i++) {
            if (i) put(b, ",", 1);
            if (v->kind == WEFT_OBJECT) {
                put_string(b, v->keys[i], strlen(v->keys[i]));
                put(b, ":", 1);
            }
            put_value(b, v->items[i]);
        }
        put(b, v->kind == WEFT_ARRAY ? "]" : "}", 1);
        break;
    }
}

char *weft_write(const weft_value *v, size_t *len, const char **error) {
    buffer b = {0};
    put_value(&b, v);
    if (b.error) {
        if (error) *error = b.error;
        return NULL;
    }
    if (len) *len = b.len;
    return b.data;
}

/* ---- Results -------------------------------------------------------- */

weft_result weft_ok(weft_value *output) {
    weft_result r = {WEFT_OK, output, NULL};
    return r;
}

#define FAILURE(fn, status_)                          \
    weft_result fn(const char *fmt, ...) {            \
        va_list args;                                 \
        va_start(args, fmt);                          \
        weft_result r = {status_, NULL, vformat(fmt, args)}; \
        va_end(args);                                 \
        return r;                                     \
    }
FAILURE(weft_retryable, WEFT_RETRYABLE)
FAILURE(weft_fatal, WEFT_FATAL)
FAILURE(weft_invalid_input, WEFT_INVALID_INPUT)

/* ---- Exports -------------------------------------------------------- */

static void dup(step_plugin_string_t *out, const char *text) {
    step_plugin_string_dup(out, text ? text : "");
}

static void dup_schema(step_plugin_string_t *out, const char *schema) {
    step_plugin_string_dup(out, schema ? schema : "{}");
}

void exports_weft_plugin_step_describe(exports_weft_plugin_step_plugin_info_t *ret) {
    const weft_plugin *p = &WEFT_PLUGIN;
    dup(&ret->name, p->name);
    dup(&ret->version, p->version);
    dup(&ret->description, p->description);
    dup_schema(&ret->config_schema, p->config_schema);
    dup_schema(&ret->input_schema, p->input_schema);
    dup_schema(&ret->output_schema, p->output_schema);
    size_t n = 0;
    while (p->capabilities && p->capabilities[n]) n++;
    ret->capabilities.len = n;
    ret->capabilities.ptr = alloc(n * sizeof(step_plugin_string_t));
    for (size_t i = 0; i < n; i++) dup(&ret->capabilities.ptr[i], p->capabilities[i]);
}

static bool fail_with(exports_weft_plugin_step_step_error_t *err, weft_status status, char *message) {
    err->tag = status == WEFT_RETRYABLE       ? WEFT_PLUGIN_TYPES_STEP_ERROR_RETRYABLE
               : status == WEFT_INVALID_INPUT ? WEFT_PLUGIN_TYPES_STEP_ERROR_INVALID_INPUT
                                              : WEFT_PLUGIN_TYPES_STEP_ERROR_FATAL;
    /* Every variant holds one string at the same place. */
    step_plugin_string_dup(&err->val.fatal, message ? message : "failed");
    return false;
}

bool exports_weft_plugin_step_run(exports_weft_plugin_step_step_context_t *ctx, step_plugin_string_t *config,
                                  step_plugin_string_t *input, step_plugin_string_t *ret,
                                  exports_weft_plugin_step_step_error_t *err) {
    weft_context context = {copy_wit(&ctx->tenant), copy_wit(&ctx->run_id), copy_wit(&ctx->step_id),
                            ctx->attempt, copy_wit(&ctx->idempotency_key)};
    const char *error = NULL;
    weft_value *config_value = config->len ? weft_parse((const char *)config->ptr, config->len, &error)
                                           : weft_object();
    if (!config_value) return fail_with(err, WEFT_INVALID_INPUT, format("config is not JSON: %s", error));
    weft_value *input_value = input->len ? weft_parse((const char *)input->ptr, input->len, &error)
                                         : weft_object();
    if (!input_value) return fail_with(err, WEFT_INVALID_INPUT, format("input is not JSON: %s", error));
    weft_result result = WEFT_PLUGIN.run(&context, config_value, input_value);
    if (result.status != WEFT_OK) return fail_with(err, result.status, result.message);
    size_t len;
    char *text = weft_write(result.output, &len, &error);
    if (!text) return fail_with(err, WEFT_FATAL, format("the output is not JSON: %s", error));
    ret->ptr = (uint8_t *)text;
    ret->len = len;
    return true;
}

/* ---- Host capabilities ---------------------------------------------- */

void weft_log(weft_level level, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    char *message = vformat(fmt, args);
    va_end(args);
    step_plugin_string_t s = wit(message);
    weft_plugin_host_log((weft_plugin_host_log_level_t)level, &s);
    free(message);
}

void weft_progress(int percent, const char *note) {
    step_plugin_string_t s = wit(note);
    weft_plugin_host_progress((uint8_t)(percent < 0 ? 0 : percent > 100 ? 100 : percent), &s);
}

const char *weft_secret(const char *name) {
    step_plugin_string_t n = wit(name), value;
    if (!weft_plugin_host_secret(&n, &value)) return NULL;
    char *out = copy_wit(&value);
    step_plugin_string_free(&value);
    return out;
}

bool weft_read_file(const char *file_id, uint8_t **data, size_t *len, const char **error) {
    step_plugin_string_t id = wit(file_id), reason;
    step_plugin_list_u8_t bytes;
    if (!weft_plugin_host_read_file(&id, &bytes, &reason)) {
        if (error) *error = copy_wit(&reason);
        return false;
    }
    *data = bytes.ptr;
    *len = bytes.len;
    return true;
}

static step_plugin_list_string_t wit_list(const char *const *items) {
    size_t n = 0;
    while (items && items[n]) n++;
    step_plugin_list_string_t list = {alloc(n * sizeof(step_plugin_string_t)), n};
    for (size_t i = 0; i < n; i++) list.ptr[i] = wit(items[i]);
    return list;
}

const char *weft_send_mail(const char *const *to, const char *const *cc, const char *subject,
                           const char *body, const char **error) {
    weft_plugin_host_mail_t mail = {wit_list(to), wit_list(cc), wit(subject), wit(body)};
    step_plugin_string_t id, reason;
    bool ok = weft_plugin_host_send_mail(&mail, &id, &reason);
    free(mail.to.ptr);
    free(mail.cc.ptr);
    if (!ok) {
        if (error) *error = copy_wit(&reason);
        return NULL;
    }
    return copy_wit(&id);
}

const char *weft_notify(const char *title, const char *body, const char *level, const char *audience,
                        const char *link, const char **error) {
    weft_plugin_host_notification_t n = {wit(title), wit(body), wit(level ? level : "info"), wit(audience),
                                         wit(link)};
    step_plugin_string_t id, reason;
    if (!weft_plugin_host_notify(&n, &id, &reason)) {
        if (error) *error = copy_wit(&reason);
        return NULL;
    }
    return copy_wit(&id);
}

static bool kv_fail(const char *bucket, wasi_keyvalue_store_error_t *e, const char **error) {
    const char *why = e->tag == WASI_KEYVALUE_STORE_ERROR_NO_SUCH_STORE   ? "no such store"
                      : e->tag == WASI_KEYVALUE_STORE_ERROR_ACCESS_DENIED ? "access denied"
                                                                          : copy_wit(&e->val.other);
    if (error) *error = format("key-value store \"%s\": %s", bucket, why);
    return false;
}

static bool kv_open(const char **bucket, wasi_keyvalue_store_own_bucket_t *handle, const char **error) {
    if (!*bucket || !**bucket) *bucket = "default";
    step_plugin_string_t name = wit(*bucket);
    wasi_keyvalue_store_error_t e;
    if (!wasi_keyvalue_store_open(&name, handle, &e)) return kv_fail(*bucket, &e, error);
    return true;
}

bool weft_kv_get(const char *bucket, const char *key, uint8_t **value, size_t *len, bool *found,
                 const char **error) {
    wasi_keyvalue_store_own_bucket_t handle;
    if (!kv_open(&bucket, &handle, error)) return false;
    step_plugin_string_t k = wit(key);
    step_plugin_option_list_u8_t got;
    wasi_keyvalue_store_error_t e;
    bool ok = wasi_keyvalue_store_method_bucket_get(wasi_keyvalue_store_borrow_bucket(handle), &k, &got, &e);
    wasi_keyvalue_store_bucket_drop_own(handle);
    if (!ok) return kv_fail(bucket, &e, error);
    *found = got.is_some;
    *value = got.is_some ? got.val.ptr : NULL;
    *len = got.is_some ? got.val.len : 0;
    return true;
}

bool weft_kv_set(const char *bucket, const char *key, const void *data, size_t len, const char **error) {
    wasi_keyvalue_store_own_bucket_t handle;
    if (!kv_open(&bucket, &handle, error)) return false;
    step_plugin_string_t k = wit(key);
    step_plugin_list_u8_t v = {(uint8_t *)data, len};
    wasi_keyvalue_store_error_t e;
    bool ok = wasi_keyvalue_store_method_bucket_set(wasi_keyvalue_store_borrow_bucket(handle), &k, &v, &e);
    wasi_keyvalue_store_bucket_drop_own(handle);
    return ok || kv_fail(bucket, &e, error);
}

bool weft_kv_delete(const char *bucket, const char *key, const char **error) {
    wasi_keyvalue_store_own_bucket_t handle;
    if (!kv_open(&bucket, &handle, error)) return false;
    step_plugin_string_t k = wit(key);
    wasi_keyvalue_store_error_t e;
    bool ok = wasi_keyvalue_store_method_bucket_delete(wasi_keyvalue_store_borrow_bucket(handle), &k, &e);
    wasi_keyvalue_store_bucket_drop_own(handle);
    return ok || kv_fail(bucket, &e, error);
}

bool weft_kv_keys(const char *bucket, weft_value **keys, const char **error) {
    wasi_keyvalue_store_own_bucket_t handle;
    if (!kv_open(&bucket, &handle, error)) return false;
    weft_value *list = weft_array();
    uint64_t cursor = 0;
    bool more = false;
    for (;;) {
        wasi_keyvalue_store_key_response_t page;
        wasi_keyvalue_store_error_t e;
        if (!wasi_keyvalue_store_method_bucket_list_keys(wasi_keyvalue_store_borrow_bucket(handle),
                                                         more ? &cursor : NULL, &page, &e)) {
            wasi_keyvalue_store_bucket_drop_own(handle);
            return kv_fail(bucket, &e, error);
        }
        for (size_t i = 0; i < page.keys.len; i++)
            weft_push(list, weft_string_n((const char *)page.keys.ptr[i].ptr, page.keys.ptr[i].len));
        more = page.cursor.is_some;
        cursor = page.cursor.val;
        step_plugin_list_string_free(&page.keys);
        if (!more) break;
    }
    wasi_keyvalue_store_bucket_drop_own(handle);
    *keys = list;
    return true;
}

/* ---- Outbound HTTP -------------------------------------------------- */

static bool http_fail(weft_status *kind, const char **error, weft_status k, char *message) {
    if (kind) *kind = k;
    if (error) *error = message;
    return false;
}

static bool http_error_code(wasi_http_types_error_code_t *code, weft_status *kind, const char **error) {
    if (code->tag == WASI_HTTP_TYPES_ERROR_CODE_HTTP_REQUEST_DENIED)
        return http_fail(kind, error, WEFT_FATAL, format("request denied: the plugin is not granted this host"));
    static const char *const names[] = {
        "DNS-timeout", "DNS-error", "destination-not-found", "destination-unavailable",
        "destination-IP-prohibited", "destination-IP-unroutable", "connection-refused",
        "connection-terminated", "connection-timeout", "connection-read-timeout",
        "connection-write-timeout", "connection-limit-reached", "TLS-protocol-error",
        "TLS-certificate-error", "TLS-alert-received",
    };
    if (code->tag < sizeof names / sizeof *names)
        return http_fail(kind, error, WEFT_RETRYABLE, format("http transport error: %s", names[code->tag]));
    return http_fail(kind, error, WEFT_RETRYABLE, format("http transport error: error code %d", code->tag));
}

bool weft_http(const char *method, const char *url, const char *const *headers, const void *body,
               size_t body_len, weft_response *response, weft_status *kind, const char **error) {
    bool https = strncmp(url, "https://", 8) == 0;
    if (!https && strncmp(url, "http://", 7) != 0)
        return http_fail(kind, error, WEFT_INVALID_INPUT,
                         format("invalid url: \"%s\" must start with http:// or https://", url));
    const char *rest = url + (https ? 8 : 7);
    size_t authority_len = strcspn(rest, "/?#");
    if (authority_len == 0)
        return http_fail(kind, error, WEFT_INVALID_INPUT, format("invalid url: \"%s\" has no host", url));
    char *authority = copy_n(rest, authority_len);
    const char *path_start = rest + authority_len;
    size_t path_len = strcspn(path_start, "#");
    char *path = *path_start == '/' ? copy_n(path_start, path_len) : format("/%.*s", (int)path_len, path_start);

    size_t header_count = 0;
    while (headers && headers[header_count]) header_count++;
    if (header_count % 2)
        return http_fail(kind, error, WEFT_INVALID_INPUT,
                         format("header \"%s\" has no value (headers are name, value pairs)",
                                headers[header_count - 1]));
    wasi_http_types_own_fields_t fields = wasi_http_types_constructor_fields();
    for (size_t i = 0; i < header_count; i += 2) {
        wasi_http_types_field_name_t name = wit(headers[i]);
        wasi_http_types_field_value_t value = {(uint8_t *)headers[i + 1], strlen(headers[i + 1])};
        wasi_http_types_header_error_t header_error;
        if (!wasi_http_types_method_fields_append(wasi_http_types_borrow_fields(fields), &name, &value,
                                                  &header_error)) {
            wasi_http_types_fields_drop_own(fields);
            return http_fail(kind, error, WEFT_INVALID_INPUT, format("header \"%s\" is not allowed", headers[i]));
        }
    }
    wasi_http_types_own_outgoing_request_t request = wasi_http_types_constructor_outgoing_request(fields);
    wasi_http_types_borrow_outgoing_request_t r = wasi_http_types_borrow_outgoing_request(request);
    wasi_http_types_method_t m = {.tag = WASI_HTTP_TYPES_METHOD_GET};
    static const char *const methods[] = {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"};
    if (method) {
        /* Case-insensitive, as in the other SDKs; sent upper-case. */
        char *upper = copy_n(method, strlen(method));
        for (char *c = upper; *c; c++) if (*c >= 'a' && *c <= 'z') *c -= 'a' - 'A';
        m.tag = WASI_HTTP_TYPES_METHOD_OTHER;
        m.val.other = wit(upper);
        for (uint8_t i = 0; i < sizeof methods / sizeof *methods; i++)
            if (strcmp(upper, methods[i]) == 0) m.tag = i;
    }
    wasi_http_types_scheme_t scheme = {.tag = https ? WASI_HTTP_TYPES_SCHEME_HTTPS : WASI_HTTP_TYPES_SCHEME_HTTP};
    step_plugin_string_t authority_s = wit(authority), path_s = wit(path);
    wasi_http_types_own_outgoing_body_t outgoing;
    if (!wasi_http_types_method_outgoing_request_set_method(r, &m) ||
        !wasi_http_types_method_outgoing_request_set_scheme(r, &scheme) ||
        !wasi_http_types_method_outgoing_request_set_authority(r, &authority_s) ||
        !wasi_http_types_method_outgoing_request_set_path_with_query(r, &path_s) ||
        !wasi_http_types_method_outgoing_request_body(r, &outgoing)) {
        wasi_http_types_outgoing_request_drop_own(request);
        return http_fail(kind, error, WEFT_INVALID_INPUT, format("invalid url: \"%s\" was refused", url));
    }
    wasi_http_outgoing_handler_own_future_incoming_response_t pending;
    wasi_http_types_error_code_t code;
    if (!wasi_http_outgoing_handler_handle(request, NULL, &pending, &code)) {
        wasi_http_types_outgoing_body_drop_own(outgoing);
        return http_error_code(&code, kind, error);
    }
    /* The body goes after handle(); a failure to write shows in the response. */
    wasi_http_types_own_output_stream_t out;
    if (wasi_http_types_method_outgoing_body_write(wasi_http_types_borrow_outgoing_body(outgoing), &out)) {
        const uint8_t *bytes = body;
        for (size_t done = 0; done < body_len;) {
            size_t n = body_len - done < 4096 ? body_len - done : 4096;
            step_plugin_list_u8_t chunk = {(uint8_t *)bytes + done, n};
            wasi_io_streams_stream_error_t stream_error;
            if (!wasi_io_streams_method_output_stream_blocking_write_and_flush(
                    wasi_io_streams_borrow_output_stream(out), &chunk, &stream_error))
                break;
            done += n;
        }
        wasi_io_streams_output_stream_drop_own(out);
    }
    if (!wasi_http_types_static_outgoing_body_finish(outgoing, NULL, &code)) {
        wasi_http_types_future_incoming_response_drop_own(pending);
        return http_error_code(&code, kind, error);
    }
    wasi_http_types_result_result_own_incoming_response_error_code_void_t got;
    while (!wasi_http_types_method_future_incoming_response_get(
        wasi_http_types_borrow_future_incoming_response(pending), &got)) {
        wasi_http_types_own_pollable_t ready =
            wasi_http_types_method_future_incoming_response_subscribe(wasi_http_types_borrow_future_incoming_response(pending));
        wasi_io_poll_method_pollable_block(wasi_io_poll_borrow_pollable(ready));
        wasi_io_poll_pollable_drop_own(ready);
    }
    wasi_http_types_future_incoming_response_drop_own(pending);
    if (got.is_err) return http_fail(kind, error, WEFT_RETRYABLE, format("http transport error: response already taken"));
    if (got.val.ok.is_err) return http_error_code(&got.val.ok.val.err, kind, error);
    wasi_http_types_own_incoming_response_t incoming = got.val.ok.val.ok;
    wasi_http_types_borrow_incoming_response_t in = wasi_http_types_borrow_incoming_response(incoming);

    response->status = wasi_http_types_method_incoming_response_status(in);
    response->headers = weft_object();
    wasi_http_types_own_headers_t response_headers = wasi_http_types_method_incoming_response_headers(in);
    wasi_http_types_list_tuple2_field_name_field_value_t entries;
    wasi_http_types_method_fields_entries(wasi_http_types_borrow_fields(response_headers), &entries);
    for (size_t i = 0; i < entries.len; i++) {
        char *name = copy_wit(&entries.ptr[i].f0);
        for (char *c = name; *c; c++) if (*c >= 'A' && *c <= 'Z') *c += 'a' - 'A';
        weft_value *values = (weft_value *)weft_get(response->headers, name);
        if (!values) {
            values = weft_array();
            weft_set(response->headers, name, values);
        }
        weft_push(values, weft_string_n((const char *)entries.ptr[i].f1.ptr, entries.ptr[i].f1.len));
    }
    wasi_http_types_fields_drop_own(response_headers);

    wasi_http_types_own_incoming_body_t incoming_body;
    wasi_http_types_own_input_stream_t stream;
    if (!wasi_http_types_method_incoming_response_consume(in, &incoming_body) ||
        !wasi_http_types_method_incoming_body_stream(wasi_http_types_borrow_incoming_body(incoming_body), &stream)) {
        wasi_http_types_incoming_response_drop_own(incoming);
        return http_fail(kind, error, WEFT_FATAL, format("http body error: response body unavailable"));
    }
    buffer read = {0};
    for (;;) {
        step_plugin_list_u8_t chunk;
        wasi_io_streams_stream_error_t stream_error;
        if (!wasi_io_streams_method_input_stream_blocking_read(wasi_io_streams_borrow_input_stream(stream), 65536,
                                                               &chunk, &stream_error)) {
            if (stream_error.tag == WASI_IO_STREAMS_STREAM_ERROR_CLOSED) break;
            wasi_io_streams_input_stream_drop_own(stream);
            return http_fail(kind, error, WEFT_RETRYABLE,
                             format("http transport error: reading the response body failed"));
        }
        put(&read, (const char *)chunk.ptr, chunk.len);
        step_plugin_list_u8_free(&chunk);
    }
    wasi_io_streams_input_stream_drop_own(stream);
    wasi_http_types_future_trailers_drop_own(wasi_http_types_static_incoming_body_finish(incoming_body));
    wasi_http_types_incoming_response_drop_own(incoming);
    response->body = (uint8_t *)(read.data ? read.data : copy_n("", 0));
    response->body_len = read.len;
    return true;
}
