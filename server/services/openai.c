/* The OpenAI-compatible HTTP API (services/openai.h): JSON in (jansson, bounded size and depth,
 * every field checked), the shared GenerateRequest and inference jobs, JSON or server-sent
 * events out. */
#include "server/services/openai.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "server/base/config.h"
#include "server/base/log.h"
#include "server/base/utf8.h"
#include "server/core/grpc.h"
#include "server/core/http.h"
#include "server/services/json_kind.h"

/* ---- a growing text buffer ---- */
typedef struct sb {
    char *s;
    size_t len, cap;
    int oom;
} sb_t;

static void sb_put(sb_t *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->s, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->s = p;
        b->cap = cap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = 0;
}

static void sb_cat(sb_t *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

__attribute__((format(printf, 2, 3))) static void sb_printf(sb_t *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    sb_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* A JSON string. The engine's text is valid UTF-8, but a message may quote a client's bytes
 * (jansson's error text shows the input near the error): an invalid sequence becomes U+FFFD, so
 * the answer always parses. */
static void sb_json(sb_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    sb_put(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x80) {
            size_t k = utf8_len((const unsigned char *)s + i, n - i);
            if (k) {
                i += k - 1;
                continue;
            }
            sb_put(b, s + run, i - run);
            sb_put(b, "\xef\xbf\xbd", 3); /* U+FFFD */
            run = i + 1;
            continue;
        }
        if (c >= 0x20 && c != '"' && c != '\\') continue;
        sb_put(b, s + run, i - run);
        run = i + 1;
        char e[8] = {'\\', 0};
        size_t k = 2;
        switch (c) {
        case '"':
            e[1] = '"';
            break;
        case '\\':
            e[1] = '\\';
            break;
        case '\n':
            e[1] = 'n';
            break;
        case '\r':
            e[1] = 'r';
            break;
        case '\t':
            e[1] = 't';
            break;
        default:
            memcpy(e, "\\u00", 4);
            e[4] = hex[c >> 4];
            e[5] = hex[c & 15];
            k = 6;
        }
        sb_put(b, e, k);
    }
    sb_put(b, s + run, n - run);
    sb_put(b, "\"", 1);
}

/* ---- errors ---- */
static const char *type_of(int status)
{
    switch (status) {
    case 429:
        return "rate_limit_error";
    case 500:
    case 503:
        return "server_error";
    case 404:
        return "not_found_error";
    default:
        return "invalid_request_error";
    }
}

__attribute__((format(printf, 5, 6))) static int
fail(openai_error_t *e, int status, const char *param, const char *code, const char *fmt, ...)
{
    e->status = status;
    e->type = type_of(status);
    e->code = code;
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -EINVAL;
}

char *openai_error_json(const openai_error_t *e, size_t *len)
{
    sb_t b = {0};
    sb_cat(&b, "{\"error\":{\"message\":");
    sb_json(&b, e->message, strlen(e->message));
    sb_cat(&b, ",\"type\":");
    sb_json(&b, e->type, strlen(e->type));
    sb_cat(&b, ",\"param\":");
    if (e->param[0])
        sb_json(&b, e->param, strlen(e->param));
    else
        sb_cat(&b, "null");
    sb_cat(&b, ",\"code\":");
    if (e->code)
        sb_json(&b, e->code, strlen(e->code));
    else
        sb_cat(&b, "null");
    sb_cat(&b, "}}");
    if (b.oom) {
        free(b.s);
        return NULL;
    }
    *len = b.len;
    return b.s;
}

/* ---- parsing ---- */

/* The deepest nesting of arrays and objects in text, outside strings; stops counting past max. */
static int json_depth(const char *s, size_t n, int max)
{
    int depth = 0, deepest = 0, in_str = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (in_str) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_str = 0;
            continue;
        }
        if (c == '"')
            in_str = 1;
        else if (c == '{' || c == '[') {
            if (++depth > deepest) deepest = depth;
            if (deepest > max) return deepest;
        } else if ((c == '}' || c == ']') && depth > 0)
            depth--;
    }
    return deepest;
}

static int wrong_type(openai_error_t *e, const char *field, const char *want, const json_t *v)
{
    return fail(e, 400, field, "invalid_type", "'%s' must be %s, not %s", field, want,
                json_kind(v));
}

/* Optional fields: *present 0 for absent or null. */
static int get_bool(json_t *o, const char *k, int *out, openai_error_t *e)
{
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_boolean(v)) return wrong_type(e, k, "a boolean", v);
    *out = json_is_true(v);
    return 0;
}

static int get_number(json_t *o, const char *k, double *out, int *present, openai_error_t *e)
{
    json_t *v = json_object_get(o, k);
    *present = 0;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v)) return wrong_type(e, k, "a number", v);
    *out = json_number_value(v);
    *present = 1;
    return 0;
}

static int get_int(json_t *o, const char *k, json_int_t *out, int *present, openai_error_t *e)
{
    json_t *v = json_object_get(o, k);
    *present = 0;
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v)) return wrong_type(e, k, "an integer", v);
    *out = json_integer_value(v);
    *present = 1;
    return 0;
}

static int get_string(json_t *o, const char *k, const char **out, openai_error_t *e)
{
    json_t *v = json_object_get(o, k);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_string(v)) return wrong_type(e, k, "a string", v);
    *out = json_string_value(v);
    return 0;
}

/* Fields that change the output but that inferd does not implement: refused unless given as
 * their neutral value, never ignored. */
static int refuse_unimplemented(json_t *o, int chat, openai_error_t *e)
{
    json_t *v;
    json_int_t i;
    double d;
    int has, b = 0;
    if (get_int(o, "n", &i, &has, e)) return -EINVAL;
    if (has && i != 1)
        return fail(e, 400, "n", "unsupported_value",
                    "n = %lld: inferd returns one choice per request (n must be 1)", (long long)i);
    if (get_int(o, "best_of", &i, &has, e)) return -EINVAL;
    if (has && i != 1)
        return fail(e, 400, "best_of", "unsupported_value", "best_of is not supported (only 1)");
    static const char *const penalties[] = {"presence_penalty", "frequency_penalty"};
    for (int k = 0; k < 2; k++) {
        if (get_number(o, penalties[k], &d, &has, e)) return -EINVAL;
        if (has && d != 0.0)
            return fail(e, 400, penalties[k], "unsupported_value",
                        "%s is not supported (only 0): inferd does not implement penalties",
                        penalties[k]);
    }
    v = json_object_get(o, "logit_bias");
    if (v && !json_is_null(v)) {
        if (!json_is_object(v)) return wrong_type(e, "logit_bias", "an object", v);
        if (json_object_size(v))
            return fail(e, 400, "logit_bias", "unsupported_value", "logit_bias is not supported");
    }
    v = json_object_get(o, "logprobs");
    if (v && !json_is_null(v)) {
        if (chat && !json_is_boolean(v)) return wrong_type(e, "logprobs", "a boolean", v);
        if (!chat && !json_is_integer(v)) return wrong_type(e, "logprobs", "an integer", v);
        if (!chat || json_is_true(v))
            return fail(e, 400, "logprobs", "unsupported_value", "logprobs is not supported");
    }
    if (get_int(o, "top_logprobs", &i, &has, e)) return -EINVAL;
    if (has && i != 0)
        return fail(e, 400, "top_logprobs", "unsupported_value", "top_logprobs is not supported");
    if (get_bool(o, "echo", &b, e)) return -EINVAL;
    if (b) return fail(e, 400, "echo", "unsupported_value", "echo is not supported (only false)");
    const char *str = NULL;
    if (get_string(o, "suffix", &str, e)) return -EINVAL;
    if (str && *str) return fail(e, 400, "suffix", "unsupported_value", "suffix is not supported");
    static const char *const lists[] = {"tools", "functions"};
    for (int k = 0; k < 2; k++) {
        v = json_object_get(o, lists[k]);
        if (v && !json_is_null(v)) {
            if (!json_is_array(v)) return wrong_type(e, lists[k], "an array", v);
            if (json_array_size(v))
                return fail(e, 400, lists[k], "unsupported_value",
                            "%s (tool and function calling) is not supported", lists[k]);
        }
    }
    static const char *const choices[] = {"tool_choice", "function_call"};
    for (int k = 0; k < 2; k++) {
        v = json_object_get(o, choices[k]);
        if (v && !json_is_null(v) && !(json_is_string(v) && !strcmp(json_string_value(v), "none")))
            return fail(e, 400, choices[k], "unsupported_value",
                        "%s is not supported (only \"none\")", choices[k]);
    }
    v = json_object_get(o, "response_format");
    if (v && !json_is_null(v)) {
        if (!json_is_object(v)) return wrong_type(e, "response_format", "an object", v);
        json_t *t = json_object_get(v, "type");
        if (!json_is_string(t) || strcmp(json_string_value(t), "text") || json_object_size(v) != 1)
            return fail(e, 400, "response_format", "unsupported_value",
                        "response_format is supported only as {\"type\": \"text\"}");
    }
    v = json_object_get(o, "modalities");
    if (v && !json_is_null(v)) {
        if (!json_is_array(v)) return wrong_type(e, "modalities", "an array", v);
        for (size_t k = 0; k < json_array_size(v); k++) {
            json_t *m = json_array_get(v, k);
            if (!json_is_string(m) || strcmp(json_string_value(m), "text"))
                return fail(e, 400, "modalities", "unsupported_value",
                            "modalities is supported only as [\"text\"]");
        }
    }
    return 0;
}

/* Every field a request may carry; anything else is refused (it might change the output). */
static int known_field(const char *k, int chat)
{
    static const char *const common[] = {"model",
                                         "max_tokens",
                                         "temperature",
                                         "top_p",
                                         "seed",
                                         "stop",
                                         "stream",
                                         "stream_options",
                                         "n",
                                         "user",
                                         "logprobs",
                                         "presence_penalty",
                                         "frequency_penalty",
                                         "logit_bias",
                                         "top_k",
                                         "ignore_eos",
                                         "metadata",
                                         "store",
                                         "service_tier",
                                         NULL};
    static const char *const completions[] = {"prompt", "echo", "best_of", "suffix", NULL};
    static const char *const chats[] = {"messages",
                                        "max_completion_tokens",
                                        "top_logprobs",
                                        "tools",
                                        "tool_choice",
                                        "parallel_tool_calls",
                                        "functions",
                                        "function_call",
                                        "response_format",
                                        "modalities",
                                        NULL};
    for (const char *const *p = common; *p; p++)
        if (!strcmp(k, *p)) return 1;
    for (const char *const *p = chat ? chats : completions; *p; p++)
        if (!strcmp(k, *p)) return 1;
    return 0;
}

static int parse_stop(json_t *o, openai_request_t *r, openai_error_t *e)
{
    json_t *v = json_object_get(o, "stop");
    if (!v || json_is_null(v)) return 0;
    if (json_is_string(v)) {
        r->stops[0] = (char *)json_string_value(v);
        r->stop.stop = r->stops;
        r->stop.n_stop = 1;
        return 0;
    }
    if (!json_is_array(v)) return wrong_type(e, "stop", "a string or an array of strings", v);
    size_t n = json_array_size(v);
    if (n > OPENAI_MAX_STOP)
        return fail(e, 400, "stop", "invalid_value", "%zu stop strings given, at most %d allowed",
                    n, OPENAI_MAX_STOP);
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_array_get(v, i);
        if (!json_is_string(s)) {
            char f[32];
            snprintf(f, sizeof f, "stop[%zu]", i);
            return wrong_type(e, f, "a string", s);
        }
        r->stops[i] = (char *)json_string_value(s);
    }
    r->stop.stop = r->stops;
    r->stop.n_stop = n;
    return 0;
}

static int parse_prompt(json_t *o, openai_request_t *r, openai_error_t *e)
{
    json_t *v = json_object_get(o, "prompt");
    if (!v || json_is_null(v))
        return fail(e, 400, "prompt", "missing_required", "prompt is required");
    if (json_is_array(v) && json_array_size(v) == 1 &&
        (json_is_string(json_array_get(v, 0)) || json_is_array(json_array_get(v, 0))))
        v = json_array_get(v, 0); /* one prompt in a batch of one */
    if (json_is_string(v)) {
        if (!json_string_length(v))
            return fail(e, 400, "prompt", "invalid_value", "prompt is empty");
        r->g.prompt = (char *)json_string_value(v);
        return 0;
    }
    if (!json_is_array(v)) return wrong_type(e, "prompt", "a string or an array of token ids", v);
    size_t n = json_array_size(v);
    if (n == 0) return fail(e, 400, "prompt", "invalid_value", "prompt is empty");
    if (!json_is_integer(json_array_get(v, 0)))
        return fail(e, 400, "prompt", "unsupported_value",
                    "several prompts in one request are not supported: send one string or one "
                    "array of token ids");
    if (!(r->ids = malloc(n * sizeof *r->ids))) return -ENOMEM;
    for (size_t i = 0; i < n; i++) {
        json_t *t = json_array_get(v, i);
        json_int_t id = json_is_integer(t) ? json_integer_value(t) : -1;
        if (id < 0 || id > 0xffffffffLL)
            return fail(e, 400, "prompt", "invalid_value",
                        "prompt[%zu] must be a token id (an integer >= 0)", i);
        r->ids[i] = (uint32_t)id;
    }
    r->g.token_ids = r->ids;
    r->g.n_token_ids = n;
    return 0;
}

/* A message's content: a string, or text parts joined by newlines. */
static int message_content(json_t *m, size_t i, openai_request_t *r, openai_error_t *e)
{
    char f[96];
    json_t *c = json_object_get(m, "content");
    snprintf(f, sizeof f, "messages[%zu].content", i);
    if (!c || json_is_null(c)) return fail(e, 400, f, "missing_required", "%s is required", f);
    if (json_is_string(c)) {
        r->msgs[i].content = (char *)json_string_value(c);
        return 0;
    }
    if (!json_is_array(c)) return wrong_type(e, f, "a string or an array of text parts", c);
    sb_t b = {0};
    for (size_t k = 0; k < json_array_size(c); k++) {
        json_t *p = json_array_get(c, k), *t, *text;
        snprintf(f, sizeof f, "messages[%zu].content[%zu]", i, k);
        if (!json_is_object(p)) {
            free(b.s);
            return wrong_type(e, f, "an object", p);
        }
        t = json_object_get(p, "type");
        text = json_object_get(p, "text");
        if (!json_is_string(t) || strcmp(json_string_value(t), "text")) {
            free(b.s);
            return fail(e, 400, f, "unsupported_value",
                        "%s.type %s%.40s%s is not supported (text parts only)", f,
                        json_is_string(t) ? "'" : "",
                        json_is_string(t) ? json_string_value(t) : "(missing)",
                        json_is_string(t) ? "'" : "");
        }
        if (!json_is_string(text)) {
            free(b.s);
            snprintf(f, sizeof f, "messages[%zu].content[%zu].text", i, k);
            return text ? wrong_type(e, f, "a string", text)
                        : fail(e, 400, f, "missing_required", "%s is required", f);
        }
        if (k) sb_put(&b, "\n", 1);
        sb_put(&b, json_string_value(text), json_string_length(text));
    }
    if (b.oom) {
        free(b.s);
        return -ENOMEM;
    }
    r->joined[i] = b.s ? b.s : strdup("");
    if (!r->joined[i]) return -ENOMEM;
    r->msgs[i].content = r->joined[i];
    return 0;
}

static int parse_messages(json_t *o, openai_request_t *r, openai_error_t *e)
{
    json_t *v = json_object_get(o, "messages");
    if (!v || json_is_null(v))
        return fail(e, 400, "messages", "missing_required", "messages is required");
    if (!json_is_array(v)) return wrong_type(e, "messages", "an array", v);
    size_t n = json_array_size(v);
    if (n == 0) return fail(e, 400, "messages", "invalid_value", "messages is empty");
    r->msgs = calloc(n, sizeof *r->msgs);
    r->msgp = calloc(n, sizeof *r->msgp);
    r->joined = calloc(n, sizeof *r->joined);
    if (!r->msgs || !r->msgp || !r->joined) return -ENOMEM;
    r->n_msgs = n;
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(v, i), *role;
        char f[96];
        snprintf(f, sizeof f, "messages[%zu]", i);
        if (!json_is_object(m)) return wrong_type(e, f, "an object", m);
        const char *k;
        json_t *x;
        json_object_foreach(m, k, x)
        {
            if (strcmp(k, "role") && strcmp(k, "content") && strcmp(k, "name"))
                return fail(e, 400, f, "unsupported_value",
                            "%s.%.40s is not supported (role, content and name only)", f, k);
        }
        inferd__v1__chat_message__init(&r->msgs[i]);
        role = json_object_get(m, "role");
        snprintf(f, sizeof f, "messages[%zu].role", i);
        if (!json_is_string(role))
            return role ? wrong_type(e, f, "a string", role)
                        : fail(e, 400, f, "missing_required", "%s is required", f);
        r->msgs[i].role = (char *)json_string_value(role);
        x = json_object_get(m, "name");
        snprintf(f, sizeof f, "messages[%zu].name", i);
        if (x && !json_is_null(x) && !json_is_string(x)) return wrong_type(e, f, "a string", x);
        if (message_content(m, i, r, e)) return -EINVAL;
        r->msgp[i] = &r->msgs[i];
    }
    r->g.messages = r->msgp;
    r->g.n_messages = n;
    return 0;
}

static int parse_fields(json_t *o, int chat, openai_request_t *r, openai_error_t *e)
{
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v)
    {
        if (!known_field(k, chat))
            return fail(e, 400, k, "unknown_parameter",
                        "unrecognized request argument '%.80s' (not part of %s)", k,
                        chat ? "/v1/chat/completions" : "/v1/completions");
    }
    if (refuse_unimplemented(o, chat, e)) return -EINVAL;
    const char *s = NULL;
    if (get_string(o, "model", &s, e)) return -EINVAL;
    r->model = s ? s : "";
    s = NULL;
    if (get_string(o, "user", &s, e) || get_string(o, "service_tier", &s, e)) return -EINVAL;
    v = json_object_get(o, "metadata");
    if (v && !json_is_null(v) && !json_is_object(v))
        return wrong_type(e, "metadata", "an object", v);
    int b = 0;
    if (get_bool(o, "store", &b, e) || get_bool(o, "parallel_tool_calls", &b, e)) return -EINVAL;
    if (get_bool(o, "stream", &r->stream, e)) return -EINVAL;
    v = json_object_get(o, "stream_options");
    if (v && !json_is_null(v)) {
        if (!json_is_object(v)) return wrong_type(e, "stream_options", "an object", v);
        json_t *x;
        json_object_foreach(v, k, x)
        {
            if (strcmp(k, "include_usage"))
                return fail(e, 400, "stream_options", "unknown_parameter",
                            "stream_options.%.80s is not supported (include_usage only)", k);
        }
        if (get_bool(v, "include_usage", &r->include_usage, e)) return -EINVAL;
    }
    double d;
    int has;
    json_int_t i;
    /* sampling */
    r->sampling.temperature = 1.0f; /* OpenAI's default */
    if (get_number(o, "temperature", &d, &has, e)) return -EINVAL;
    if (has && !(d >= 0.0 && d <= 2.0))
        return fail(e, 400, "temperature", "invalid_value", "temperature %g must be in [0, 2]", d);
    if (has) r->sampling.temperature = (float)d;
    if (get_number(o, "top_p", &d, &has, e)) return -EINVAL;
    if (has && !(d > 0.0 && d <= 1.0))
        return fail(e, 400, "top_p", "invalid_value", "top_p %g must be in (0, 1]", d);
    if (has) r->sampling.top_p = (float)d;
    if (get_int(o, "top_k", &i, &has, e)) return -EINVAL;
    if (has && i < -1) return fail(e, 400, "top_k", "invalid_value", "top_k must be >= -1");
    if (has && i > 0) r->sampling.top_k = i > 0xffffffffLL ? 0xffffffffu : (uint32_t)i;
    if (get_int(o, "seed", &i, &has, e)) return -EINVAL;
    if (has && i < 0) return fail(e, 400, "seed", "invalid_value", "seed must be >= 0");
    if (has) r->sampling.seed = (uint64_t)i;
    /* stop conditions */
    r->stop.max_tokens = chat ? 0 : 16; /* OpenAI's defaults: chat to the context, else 16 */
    const char *mt = chat && json_object_get(o, "max_completion_tokens") &&
                             !json_is_null(json_object_get(o, "max_completion_tokens"))
                         ? "max_completion_tokens"
                         : "max_tokens";
    if (get_int(o, mt, &i, &has, e)) return -EINVAL;
    if (has && (i < 1 || i > 0xffffffffLL))
        return fail(e, 400, mt, "invalid_value", "%s %lld must be at least 1", mt, (long long)i);
    if (has) r->stop.max_tokens = (uint32_t)i;
    b = 0;
    if (get_bool(o, "ignore_eos", &b, e)) return -EINVAL;
    r->stop.ignore_eos = b;
    if (parse_stop(o, r, e)) return -EINVAL;
    r->g.sampling = &r->sampling;
    r->g.stop = &r->stop;
    r->g.model = (char *)r->model;
    return chat ? parse_messages(o, r, e) : parse_prompt(o, r, e);
}

int openai_request_parse(const char *body, size_t len, int chat, openai_request_t *r,
                         openai_error_t *e)
{
    memset(r, 0, sizeof *r);
    memset(e, 0, sizeof *e);
    r->chat = chat;
    inferd__v1__generate_request__init(&r->g);
    inferd__v1__sampling_options__init(&r->sampling);
    inferd__v1__stop_conditions__init(&r->stop);
    int depth = json_depth(body, len, OPENAI_MAX_DEPTH);
    if (depth > OPENAI_MAX_DEPTH)
        return fail(e, 400, NULL, "invalid_json", "JSON nested deeper than %d levels",
                    OPENAI_MAX_DEPTH);
    json_error_t je;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!root)
        return fail(e, 400, NULL, "invalid_json",
                    "malformed JSON at line %d, column %d (byte %d): %s", je.line, je.column,
                    je.position, je.text);
    r->root = root;
    if (!json_is_object(root)) {
        int rc = fail(e, 400, NULL, "invalid_json",
                      "the request body must be a JSON object, not %s", json_kind(root));
        openai_request_dispose(r);
        return rc;
    }
    int rc = parse_fields(root, chat, r, e);
    if (rc == -ENOMEM) fail(e, 500, NULL, NULL, "out of memory");
    if (rc) openai_request_dispose(r);
    return rc;
}

void openai_request_dispose(openai_request_t *r)
{
    for (size_t i = 0; r->joined && i < r->n_msgs; i++)
        free(r->joined[i]);
    free(r->joined);
    free(r->msgs);
    free(r->msgp);
    free(r->ids);
    if (r->root) json_decref(r->root);
    memset(r, 0, sizeof *r);
}

/* ---- the API ---- */
struct openai {
    server_t *srv;
    inference_t *inf;
    time_t started;
    uint64_t next_serial;
};

/* One completion in flight: the job's sink, the answer's state. */
typedef struct oa_req {
    openai_t *o;
    http_stream_t *st;
    inference_job_t *job;
    int chat, stream, include_usage;
    int started; /* the HTTP answer (200, event stream) began */
    uint64_t serial;
    time_t created;
    char id[96];
    sb_t text; /* the whole text (not streamed) */
} oa_req_t;

static const char *finish_name(engine_finish_t f)
{
    return f == ENGINE_FINISH_LENGTH ? "length" : "stop";
}

/* Answers with an OpenAI error (and Retry-After on 429). */
static void reply_error(http_stream_t *st, const openai_error_t *e)
{
    size_t len = 0;
    char *body = openai_error_json(e, &len);
    const http_header_t retry[] = {{"retry-after", "1"}};
    http_stream_reply(st, e->status, "application/json", retry, e->status == 429 ? 1 : 0,
                      body ? body : "", body ? len : 0);
    free(body);
}

/* An inference status as an OpenAI error. */
static void status_error(grpc_status_t st, const char *msg, openai_error_t *e)
{
    int http = 500;
    const char *code = NULL;
    switch (st) {
    case GRPC_STATUS_INVALID_ARGUMENT:
    case GRPC_STATUS_FAILED_PRECONDITION:
        http = 400;
        code = st == GRPC_STATUS_FAILED_PRECONDITION ? "no_chat_template" : "invalid_value";
        break;
    case GRPC_STATUS_NOT_FOUND:
        http = 400;
        code = "model_not_found";
        break;
    case GRPC_STATUS_RESOURCE_EXHAUSTED:
        http = 429;
        code = "rate_limit_exceeded";
        break;
    case GRPC_STATUS_UNAVAILABLE:
    case GRPC_STATUS_CANCELLED:
        http = 503;
        code = "service_unavailable";
        break;
    default:
        break;
    }
    static const char *const params[] = {"max_tokens", "temperature", "top_p", "stop",
                                         "messages",   "prompt",      "model"};
    const char *param = NULL;
    for (size_t i = 0; i < sizeof params / sizeof *params && !param && http == 400; i++)
        if (strstr(msg, params[i])) param = params[i];
    fail(e, http, param, code, "%s", msg);
}

static void oa_free(oa_req_t *q)
{
    if (q->st) {
        http_stream_set_data(q->st, NULL);
        http_stream_unref(q->st);
    }
    free(q->text.s);
    free(q);
}

/* The head of a chunk: everything before its choices. */
static void chunk_head(oa_req_t *q, sb_t *b)
{
    sb_cat(b, "data: {\"id\":");
    sb_json(b, q->id, strlen(q->id));
    sb_printf(b, ",\"object\":\"%s\",\"created\":%lld,\"model\":",
              q->chat ? "chat.completion.chunk" : "text_completion", (long long)q->created);
    const char *model = inference_model(q->o->inf)->name;
    sb_json(b, model, strlen(model));
}

/* One event: text (may be empty) and, when final, the finish reason. */
static void chunk(oa_req_t *q, sb_t *b, const char *text, size_t len, int role, const char *finish)
{
    chunk_head(q, b);
    sb_cat(b, ",\"choices\":[{\"index\":0,");
    if (q->chat) {
        sb_cat(b, "\"delta\":{");
        if (role) sb_cat(b, "\"role\":\"assistant\"");
        if (len || role) {
            sb_cat(b, role ? ",\"content\":" : "\"content\":");
            sb_json(b, text, len);
        }
        sb_cat(b, "},");
    } else {
        sb_cat(b, "\"text\":");
        sb_json(b, text, len);
        sb_cat(b, ",");
    }
    sb_cat(b, "\"logprobs\":null,\"finish_reason\":");
    if (finish)
        sb_json(b, finish, strlen(finish));
    else
        sb_cat(b, "null");
    sb_cat(b, "}]");
    if (q->include_usage) sb_cat(b, ",\"usage\":null");
    sb_cat(b, "}\n\n");
}

static void usage_json(sb_t *b, uint32_t prompt, uint32_t completion)
{
    sb_printf(b, "\"usage\":{\"prompt_tokens\":%u,\"completion_tokens\":%u,\"total_tokens\":%u}",
              prompt, completion, prompt + completion);
}

static int start_events(oa_req_t *q)
{
    if (q->started) return 0;
    q->started = 1;
    return http_stream_start(q->st, 200, "text/event-stream", NULL, 0);
}

static int oa_deliver(void *arg, const inference_out_t *out, size_t *bytes)
{
    oa_req_t *q = arg;
    *bytes = 0;
    if (!q->stream) {
        sb_put(&q->text, out->text, out->len);
        if (!out->final) return 0;
        q->job = NULL;
        sb_t b = {0};
        const char *model = inference_model(q->o->inf)->name;
        sb_cat(&b, "{\"id\":");
        sb_json(&b, q->id, strlen(q->id));
        sb_printf(&b, ",\"object\":\"%s\",\"created\":%lld,\"model\":",
                  q->chat ? "chat.completion" : "text_completion", (long long)q->created);
        sb_json(&b, model, strlen(model));
        sb_cat(&b, ",\"choices\":[{\"index\":0,");
        const char *text = q->text.s ? q->text.s : "";
        if (q->chat) {
            sb_cat(&b, "\"message\":{\"role\":\"assistant\",\"content\":");
            sb_json(&b, text, q->text.len);
            sb_cat(&b, "},");
        } else {
            sb_cat(&b, "\"text\":");
            sb_json(&b, text, q->text.len);
            sb_cat(&b, ",");
        }
        sb_printf(&b, "\"logprobs\":null,\"finish_reason\":\"%s\"}],", finish_name(out->finish));
        usage_json(&b, out->prompt_tokens, out->completion_tokens);
        sb_cat(&b, "}");
        if (b.oom) {
            openai_error_t e;
            fail(&e, 500, NULL, NULL, "out of memory");
            reply_error(q->st, &e);
        } else {
            http_stream_reply(q->st, 200, "application/json", NULL, 0, b.s, b.len);
            *bytes = b.len;
        }
        free(b.s);
        oa_free(q);
        return 0;
    }
    /* streamed: one event per delivery (per batch of tokens), whole characters only */
    int first = !q->started;
    if (start_events(q)) {
        if (out->final) {
            q->job = NULL;
            oa_free(q);
        }
        return 0;
    }
    sb_t b = {0};
    if (out->len || (first && q->chat)) chunk(q, &b, out->text, out->len, first && q->chat, NULL);
    int counted = 0;
    if (out->final) {
        q->job = NULL;
        chunk(q, &b, "", 0, 0, finish_name(out->finish));
        if (q->include_usage) {
            chunk_head(q, &b);
            sb_cat(&b, ",\"choices\":[],");
            usage_json(&b, out->prompt_tokens, out->completion_tokens);
            sb_cat(&b, "}\n\n");
        }
        sb_cat(&b, "data: [DONE]\n\n");
    }
    if (!b.oom && b.len &&
        http_stream_write(q->st, b.s, b.len, q->serial, out->final ? 0 : (uint32_t)out->n_ids) ==
            0) {
        *bytes = b.len;
        counted = out->n_ids && !out->final;
    }
    free(b.s);
    if (out->final) {
        http_stream_end(q->st);
        oa_free(q);
    }
    return counted;
}

static void oa_fail(void *arg, grpc_status_t status, const char *msg)
{
    oa_req_t *q = arg;
    q->job = NULL;
    openai_error_t e;
    status_error(status, msg, &e);
    if (!q->started) {
        reply_error(q->st, &e);
    } else { /* the events began: the error is the last event */
        size_t len;
        char *body = openai_error_json(&e, &len);
        sb_t b = {0};
        sb_cat(&b, "data: ");
        if (body) sb_put(&b, body, len);
        sb_cat(&b, "\n\ndata: [DONE]\n\n");
        if (!b.oom) http_stream_write(q->st, b.s, b.len, 0, 0);
        free(b.s);
        free(body);
        http_stream_end(q->st);
    }
    oa_free(q);
}

static const inference_sink_t oa_sink = {.deliver = oa_deliver, .fail = oa_fail};

/* JSON, or what curl -d sends without -H (form-encoded): anything else is 415. */
static int json_content_type(const char *ct)
{
    if (!ct || !*ct) return 1;
    size_t n = strcspn(ct, "; \t");
    if (n == 16 && !strncasecmp(ct, "application/json", 16)) return 1;
    if (n == 33 && !strncasecmp(ct, "application/x-www-form-urlencoded", 33)) return 1;
    return n > 17 && !strncasecmp(ct, "application/", 12) && !strncasecmp(ct + n - 5, "+json", 5);
}

static void completion(openai_t *o, http_stream_t *st, const http_request_t *req, int chat)
{
    openai_error_t e;
    if (server_draining(o->srv)) {
        fail(&e, 503, NULL, "service_unavailable", "the server is shutting down: try another");
        reply_error(st, &e);
        return;
    }
    if (!json_content_type(req->content_type)) {
        fail(&e, 415, NULL, "unsupported_media_type",
             "Content-Type %.100s is not supported: send application/json", req->content_type);
        reply_error(st, &e);
        return;
    }
    openai_request_t r;
    if (openai_request_parse(req->body, req->body_len, chat, &r, &e)) {
        reply_error(st, &e);
        return;
    }
    const char *served = inference_model(o->inf)->name;
    if (*r.model && strcmp(r.model, served)) {
        fail(&e, 400, "model", "model_not_found",
             "The model '%.200s' does not exist (this server serves '%s')", r.model, served);
        openai_request_dispose(&r);
        reply_error(st, &e);
        return;
    }
    oa_req_t *q = calloc(1, sizeof *q);
    if (!q) {
        openai_request_dispose(&r);
        fail(&e, 500, NULL, NULL, "out of memory");
        reply_error(st, &e);
        return;
    }
    q->o = o;
    q->chat = chat;
    q->stream = r.stream;
    q->include_usage = r.stream && r.include_usage;
    q->serial = ++o->next_serial;
    q->created = time(NULL);
    snprintf(q->id, sizeof q->id, "%s-%s", chat ? "chatcmpl" : "cmpl", http_stream_request_id(st));
    char msg[600] = "";
    grpc_status_t s = inference_job_start(o->inf, INFERENCE_API_OPENAI, &r.g, req->body_len,
                                          &oa_sink, q, &q->job, msg, sizeof msg);
    openai_request_dispose(&r); /* the engine copied what it needs */
    if (s) {
        free(q);
        status_error(s, msg, &e);
        reply_error(st, &e);
        return;
    }
    q->st = st;
    http_stream_ref(st);
    http_stream_set_data(st, q);
}

static void serve_completions(void *arg, http_stream_t *st, const http_request_t *req)
{
    completion(arg, st, req, 0);
}

static void serve_chat(void *arg, http_stream_t *st, const http_request_t *req)
{
    completion(arg, st, req, 1);
}

/* The client went away: its request leaves the engine at the next step. */
static void oa_cancel(void *arg, http_stream_t *st)
{
    (void)arg;
    oa_req_t *q = http_stream_data(st);
    if (!q) return;
    if (q->job) inference_job_cancel(q->job, 0);
    q->job = NULL;
    oa_free(q);
}

/* The transport took an event's bytes: its tokens are delivered (the engine's flow control). */
static void oa_taken(void *arg, http_stream_t *st, uint64_t tag, uint32_t units)
{
    (void)arg;
    oa_req_t *q = http_stream_data(st);
    if (q && q->job && q->serial == tag) inference_job_consumed(q->job, units);
}

static void model_object(openai_t *o, sb_t *b)
{
    const char *name = inference_model(o->inf)->name;
    sb_cat(b, "{\"id\":");
    sb_json(b, name, strlen(name));
    sb_printf(b, ",\"object\":\"model\",\"created\":%lld,\"owned_by\":\"inferd\"}",
              (long long)o->started);
}

static void reply_json(http_stream_t *st, sb_t *b)
{
    if (b->oom) {
        openai_error_t e;
        fail(&e, 500, NULL, NULL, "out of memory");
        reply_error(st, &e);
    } else {
        http_stream_reply(st, 200, "application/json", NULL, 0, b->s, b->len);
    }
    free(b->s);
}

static void serve_models(void *arg, http_stream_t *st, const http_request_t *req)
{
    (void)req;
    sb_t b = {0};
    sb_cat(&b, "{\"object\":\"list\",\"data\":[");
    model_object(arg, &b);
    sb_cat(&b, "]}");
    reply_json(st, &b);
}

static void serve_model(void *arg, http_stream_t *st, const http_request_t *req)
{
    openai_t *o = arg;
    char id[512];
    grpc_percent_decode(req->path + strlen("/v1/models/"), id, sizeof id);
    if (strcmp(id, inference_model(o->inf)->name)) {
        openai_error_t e;
        fail(&e, 404, "model", "model_not_found", "The model '%.200s' does not exist", id);
        reply_error(st, &e);
        return;
    }
    sb_t b = {0};
    model_object(o, &b);
    reply_json(st, &b);
}

static void serve_unknown(void *arg, http_stream_t *st, const http_request_t *req)
{
    (void)arg;
    openai_error_t e;
    fail(&e, 404, NULL, "unknown_url", "Unknown request URL: %s %.200s", req->method, req->path);
    reply_error(st, &e);
}

/* The answers the transport gives for these routes (405, 413), in OpenAI's shape. */
static void oa_error(void *arg, int status, const char *message, http_response_t *r)
{
    (void)arg;
    openai_error_t e;
    fail(&e, status, NULL,
         status == 413   ? "request_too_large"
         : status == 405 ? "method_not_allowed"
                         : NULL,
         "%s", message);
    size_t len;
    char *body = openai_error_json(&e, &len);
    if (body) http_response_set(r, status, "application/json", body, len);
    free(body);
}

int openai_new(openai_t **out, server_t *s, inference_t *inf, char *err, size_t errlen)
{
    *out = NULL;
    openai_t *o = calloc(1, sizeof *o);
    if (!o) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    o->srv = s;
    o->inf = inf;
    o->started = time(NULL);
    size_t max_body = (size_t)server_config(s)->max_request_body;
    const unsigned get = HTTP_METHOD_GET | HTTP_METHOD_HEAD;
    http_route_t rows[] = {
        {.name = "openai_models", .path = "/v1/models", .methods = get, .stream = serve_models},
        {.name = "openai_model",
         .path = "/v1/models/",
         .prefix = 1,
         .methods = get,
         .stream = serve_model},
        {.name = "openai_completions",
         .path = "/v1/completions",
         .methods = HTTP_METHOD_POST,
         .stream = serve_completions,
         .max_body = max_body},
        {.name = "openai_chat",
         .path = "/v1/chat/completions",
         .methods = HTTP_METHOD_POST,
         .stream = serve_chat,
         .max_body = max_body},
        {.name = "openai_unknown",
         .path = "/v1/",
         .prefix = 1,
         .methods = get | HTTP_METHOD_POST,
         .stream = serve_unknown,
         .max_body = max_body},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        rows[i].on_cancel = oa_cancel;
        rows[i].on_taken = oa_taken;
        rows[i].error = oa_error;
        rows[i].arg = o;
    }
    int rc = server_route_add(s, rows, sizeof rows / sizeof rows[0]);
    if (rc) {
        snprintf(err, errlen, "cannot register the OpenAI API's routes: %s", strerror(-rc));
        free(o);
        return rc;
    }
    *out = o;
    return 0;
}

void openai_free(openai_t *o)
{
    free(o);
}
