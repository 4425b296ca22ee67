/* Canary and progress checks of the inference endpoints (see prober.h). Everything runs on the
 * loop: libevent timers, the inference observer, and canary completions (inference.c calls
 * done on the loop). Statuses go to the registry only through health_endpoint_set(). */
#include "prober.h"

#include <errno.h>
#include <event2/event.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "health/health.h"
#include "server/base/config.h"
#include "server/base/log.h"
#include "metrics/inferd_metrics.h"

#define NS 1000000000ULL
/* The progress check looks this often: a tenth of the stall limit, within these bounds. */
#define TICK_MIN_NS (50ULL * 1000000ULL)
#define TICK_MAX_NS (1ULL * NS)
/* Real successes refresh the endpoint's last_check at most this often. */
#define SUCCESS_CHECK_EVERY_NS (1ULL * NS)

typedef struct probe_ep {
    prober_t *p;
    char *name;
    inference_t *inf;
    struct event *canary_timer;   /* idle wait, then a canary */
    struct event *timeout_timer;  /* the canary in flight's deadline */
    struct event *tick;           /* progress check */
    inference_internal_t *canary; /* in flight, or NULL */
    uint64_t canary_start_ns;
    uint64_t last_canary_end_ns;
    uint64_t idle_seen_ns; /* last progress tick that found no request in flight */
    int stalled;           /* the current stall was reported */
    int young_skipped;     /* the last canary was skipped for a busy period without tokens */
    uint64_t last_success_set_ns;
    metrics_series_t *ok_s, *fail_s, *timeout_s, *dur_s;
} probe_ep_t;

struct prober {
    server_t *srv;
    health_t *h;
    const config_t *cfg;
    Inferd__V1__GenerateRequest *payload; /* NULL: the default (BOS, 1 token, greedy) */
    probe_ep_t **eps;
    size_t n_eps;
    health_change_fn prev_fn;
    void *prev_arg;
    int hooked;
};

/* ---------------------------------------------------------------- payload (JSON -> protobuf-c) */

static const char *json_kind(const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a number";
    case JSON_TRUE:
    case JSON_FALSE:
        return "a boolean";
    case JSON_NULL:
        return "null";
    }
    return "?";
}

/* lowerCamelCase (the proto JSON name) -> snake_case */
static void snake(const char *in, char *out, size_t cap)
{
    size_t j = 0;
    for (; *in && j + 2 < cap; in++) {
        if (*in >= 'A' && *in <= 'Z') {
            out[j++] = '_';
            out[j++] = (char)(*in - 'A' + 'a');
        } else
            out[j++] = *in;
    }
    out[j] = 0;
}

/* An unsigned integer: a JSON integer, or a decimal string (proto JSON writes 64-bit ones so). */
static int json_uint(const json_t *v, uint64_t max, uint64_t *out)
{
    if (json_is_integer(v)) {
        json_int_t x = json_integer_value(v);
        if (x < 0 || (uint64_t)x > max) return -ERANGE;
        *out = (uint64_t)x;
        return 0;
    }
    if (json_is_real(v)) { /* 3.0 is an integer in proto JSON */
        double d = json_real_value(v);
        if (d != floor(d) || d < 0 || d > (double)max) return -ERANGE;
        *out = (uint64_t)d;
        return 0;
    }
    if (json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end;
        if (!*s || *s == '-' || *s == '+' || *s == ' ') return -EINVAL;
        errno = 0;
        unsigned long long x = strtoull(s, &end, 10);
        if (*end) return -EINVAL;
        if (errno || x > max) return -ERANGE;
        *out = x;
        return 0;
    }
    return -EINVAL;
}

static int set_scalar(const ProtobufCFieldDescriptor *f, const json_t *v, void *dst,
                      const char *path, char *err, size_t errlen)
{
    uint64_t u;
    int rc;
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING:
        if (!json_is_string(v)) break;
        {
            char *s = strdup(json_string_value(v));
            if (!s) return -ENOMEM;
            *(char **)dst = s;
        }
        return 0;
    case PROTOBUF_C_TYPE_BOOL:
        if (!json_is_boolean(v)) break;
        *(protobuf_c_boolean *)dst = json_is_true(v);
        return 0;
    case PROTOBUF_C_TYPE_FLOAT:
    case PROTOBUF_C_TYPE_DOUBLE:
        if (!json_is_number(v)) break;
        if (f->type == PROTOBUF_C_TYPE_FLOAT)
            *(float *)dst = (float)json_number_value(v);
        else
            *(double *)dst = json_number_value(v);
        return 0;
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
        rc = json_uint(v, UINT32_MAX, &u);
        if (rc == -ERANGE) {
            snprintf(err, errlen, "field '%s': value out of range for an unsigned 32-bit integer",
                     path);
            return -EINVAL;
        }
        if (rc) break;
        *(uint32_t *)dst = (uint32_t)u;
        return 0;
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        rc = json_uint(v, UINT64_MAX, &u);
        if (rc == -ERANGE) {
            snprintf(err, errlen, "field '%s': value out of range for an unsigned 64-bit integer",
                     path);
            return -EINVAL;
        }
        if (rc) break;
        *(uint64_t *)dst = u;
        return 0;
    default:
        snprintf(err, errlen, "field '%s': type not supported in a canary payload", path);
        return -EINVAL;
    }
    static const char *want[] = {
        [PROTOBUF_C_TYPE_STRING] = "a string",
        [PROTOBUF_C_TYPE_BOOL] = "true or false",
        [PROTOBUF_C_TYPE_FLOAT] = "a number",
        [PROTOBUF_C_TYPE_DOUBLE] = "a number",
        [PROTOBUF_C_TYPE_UINT32] = "an unsigned integer",
        [PROTOBUF_C_TYPE_FIXED32] = "an unsigned integer",
        [PROTOBUF_C_TYPE_UINT64] = "an unsigned integer",
        [PROTOBUF_C_TYPE_FIXED64] = "an unsigned integer",
    };
    snprintf(err, errlen, "field '%s': expected %s, got %s", path, want[f->type], json_kind(v));
    return -EINVAL;
}

static size_t scalar_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_STRING:
    case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(void *);
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_FLOAT:
        return sizeof(float);
    case PROTOBUF_C_TYPE_DOUBLE:
        return sizeof(double);
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
        return sizeof(uint64_t);
    default:
        return sizeof(uint32_t);
    }
}

/* Fills m (already initialised) from obj. On error m stays freeable with free_unpacked. */
static int from_json(const json_t *obj, const ProtobufCMessageDescriptor *d, ProtobufCMessage *m,
                     const char *prefix, char *err, size_t errlen)
{
    if (!json_is_object(obj)) { /* only the top level: fields are checked before recursing */
        snprintf(err, errlen, "expected a JSON object (%s), got %s", d->name, json_kind(obj));
        return -EINVAL;
    }
    unsigned seen = 0; /* fields already given (both names of one field count once) */
    const char *key;
    json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        char path[256];
        snprintf(path, sizeof path, "%s%s%s", prefix, *prefix ? "." : "", key);
        const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, key);
        if (!f) {
            char sn[128];
            snake(key, sn, sizeof sn);
            f = protobuf_c_message_descriptor_get_field_by_name(d, sn);
        }
        if (!f) {
            snprintf(err, errlen, "unknown field '%s' (%s has:", path, d->name);
            for (unsigned i = 0; i < d->n_fields; i++) {
                size_t l = strlen(err);
                snprintf(err + l, errlen - l, "%s%s", i ? ", " : " ", d->fields[i].name);
            }
            size_t l = strlen(err);
            snprintf(err + l, errlen - l, ")");
            return -EINVAL;
        }
        unsigned idx = (unsigned)(f - d->fields);
        if (idx < 32 && (seen & (1u << idx))) {
            snprintf(err, errlen, "field '%s' given twice", path);
            return -EINVAL;
        }
        if (idx < 32) seen |= 1u << idx;
        if (json_is_null(v)) continue; /* proto JSON: null is the default */
        void *dst = (char *)m + f->offset;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            if (!json_is_array(v)) {
                snprintf(err, errlen, "field '%s': expected an array, got %s", path, json_kind(v));
                return -EINVAL;
            }
            if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
                snprintf(err, errlen, "field '%s': type not supported in a canary payload", path);
                return -EINVAL;
            }
            size_t n = json_array_size(v);
            if (n == 0) continue;
            size_t es = scalar_size(f->type);
            char *arr = calloc(n, es);
            if (!arr) return -ENOMEM;
            /* owned by m from here on, so an error below frees it with m */
            *(void **)dst = arr;
            size_t *count = (size_t *)((char *)m + f->quantifier_offset);
            *count = 0;
            for (size_t i = 0; i < n; i++) {
                char ipath[280];
                snprintf(ipath, sizeof ipath, "%s[%zu]", path, i);
                int rc = set_scalar(f, json_array_get(v, i), arr + i * es, ipath, err, errlen);
                if (rc) return rc;
                *count = i + 1;
            }
            continue;
        }
        if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
            const ProtobufCMessageDescriptor *sd = f->descriptor;
            if (!json_is_object(v)) {
                snprintf(err, errlen, "field '%s': expected an object, got %s", path, json_kind(v));
                return -EINVAL;
            }
            if (*(ProtobufCMessage **)dst) {
                snprintf(err, errlen, "field '%s' given twice", path);
                return -EINVAL;
            }
            ProtobufCMessage *sub = calloc(1, sd->sizeof_message);
            if (!sub) return -ENOMEM;
            sd->message_init(sub);
            *(ProtobufCMessage **)dst = sub;
            int rc = from_json(v, sd, sub, path, err, errlen);
            if (rc) return rc;
            continue;
        }
        int rc = set_scalar(f, v, dst, path, err, errlen);
        if (rc) return rc;
    }
    return 0;
}

int prober_parse_payload(const char *spec, Inferd__V1__GenerateRequest **out, char *err,
                         size_t errlen)
{
    json_error_t je;
    json_t *root;
    if (spec[0] == '@') {
        root = json_load_file(spec + 1, JSON_REJECT_DUPLICATES, &je);
        if (!root) {
            if (je.line <= 0)
                snprintf(err, errlen, "%s", je.text); /* could not read the file */
            else
                snprintf(err, errlen, "%s: bad JSON at line %d, column %d: %s", spec + 1, je.line,
                         je.column, je.text);
            return -EINVAL;
        }
    } else {
        root = json_loads(spec, JSON_REJECT_DUPLICATES, &je);
        if (!root) {
            snprintf(err, errlen, "bad JSON at line %d, column %d: %s", je.line, je.column,
                     je.text);
            return -EINVAL;
        }
    }
    Inferd__V1__GenerateRequest *m = malloc(sizeof *m);
    if (!m) {
        json_decref(root);
        return -ENOMEM;
    }
    inferd__v1__generate_request__init(m);
    int rc = from_json(root, &inferd__v1__generate_request__descriptor, &m->base, "", err, errlen);
    json_decref(root);
    if (rc) {
        protobuf_c_message_free_unpacked(&m->base, NULL);
        if (rc == -ENOMEM) snprintf(err, errlen, "out of memory");
        return rc;
    }
    *out = m;
    return 0;
}

static int load_payload(const config_t *cfg, Inferd__V1__GenerateRequest **out, char *err,
                        size_t errlen)
{
    *out = NULL;
    if (!cfg->health_check_payload || !*cfg->health_check_payload) return 0;
    char why[400];
    int rc = prober_parse_payload(cfg->health_check_payload, out, why, sizeof why);
    if (rc == -EINVAL)
        snprintf(err, errlen, "invalid value '%.120s' for --health-check-payload: %s",
                 cfg->health_check_payload, why);
    else if (rc)
        snprintf(err, errlen, "out of memory");
    return rc;
}

int prober_check_config(const config_t *cfg, char *err, size_t errlen)
{
    Inferd__V1__GenerateRequest *m;
    int rc = load_payload(cfg, &m, err, errlen);
    if (m) protobuf_c_message_free_unpacked(&m->base, NULL);
    return rc == -ENOMEM ? -EINVAL : rc;
}

/* ---------------------------------------------------------------- status and metrics */

static health_status_t ep_status(prober_t *p, const char *name)
{
    health_endpoint_info_t info;
    if (health_endpoint_get(p->h, name, 0, &info)) return HEALTH_UNKNOWN;
    return info.status;
}

/* health_status{endpoint}: 1 when the endpoint is SERVING and the server is not draining. */
static void update_gauges(prober_t *p)
{
    inferd_metrics_t *m = server_metrics(p->srv);
    size_t n = health_endpoint_count(p->h);
    for (size_t i = 0; i < n; i++) {
        health_endpoint_info_t info;
        if (health_endpoint_get(p->h, NULL, i, &info)) continue;
        const char *lv[] = {info.endpoint};
        metrics_set(metrics_series(m->health_status, lv),
                    info.status == HEALTH_SERVING && !health_draining(p->h) ? 1.0 : 0.0);
    }
}

static void on_change(void *arg, const health_change_t *c)
{
    prober_t *p = arg;
    if (p->prev_fn) p->prev_fn(p->prev_arg, c);
    update_gauges(p);
}

static void set_status(probe_ep_t *ep, health_status_t st, const char *reason)
{
    health_endpoint_set(ep->p->h, ep->name, st, reason);
}

/* A failed check. A transition is logged by the registry; a failure that finds the endpoint
 * already NOT_SERVING (start-up, a long outage) is logged here so the log still says why. */
static void set_failed(probe_ep_t *ep, const char *reason)
{
    if (ep_status(ep->p, ep->name) != HEALTH_SERVING)
        log_warn("health", "endpoint %s still NOT_SERVING: %s", ep->name, reason);
    set_status(ep, HEALTH_NOT_SERVING, reason);
}

/* ---------------------------------------------------------------- canary */

static void arm(struct event *ev, uint64_t ns)
{
    struct timeval tv = {(time_t)(ns / NS), (suseconds_t)(ns % NS / 1000)};
    evtimer_add(ev, &tv);
}

static void canary_finished(probe_ep_t *ep, uint64_t now)
{
    ep->canary = NULL;
    ep->last_canary_end_ns = now;
    metrics_observe(ep->dur_s, (double)(now - ep->canary_start_ns) / 1e9);
    arm(ep->canary_timer, (uint64_t)ep->p->cfg->canary_wait_ns);
}

static void canary_done(void *arg, int ok, engine_finish_t finish, const char *err, uint32_t tokens)
{
    (void)tokens;
    probe_ep_t *ep = arg;
    uint64_t now = engine_now_ns();
    evtimer_del(ep->timeout_timer);
    double ms = (double)(now - ep->canary_start_ns) / 1e6;
    if (ok) {
        metrics_inc(ep->ok_s);
        log_debug("health", "canary for %s passed in %.1f ms (finish: %s)", ep->name, ms,
                  engine_finish_name(finish));
        set_status(ep, HEALTH_SERVING, "canary succeeded");
    } else {
        metrics_inc(ep->fail_s);
        char why[HEALTH_REASON_MAX];
        snprintf(why, sizeof why, "canary failed after %.0f ms: %.180s", ms,
                 err && *err ? err : "no finish reason");
        set_failed(ep, why);
    }
    canary_finished(ep, now);
}

static void canary_timeout(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    probe_ep_t *ep = arg;
    if (!ep->canary) return;
    uint64_t now = engine_now_ns();
    /* done is not called; the engine frees the slot at its next step */
    inference_internal_cancel(ep->inf, ep->canary);
    metrics_inc(ep->timeout_s);
    char why[HEALTH_REASON_MAX];
    snprintf(why, sizeof why,
             "canary did not complete within %.3gs (--health-check-request-timeout)",
             (double)ep->p->cfg->health_request_timeout_ns / 1e9);
    set_failed(ep, why);
    canary_finished(ep, now);
}

static void canary_fire(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    probe_ep_t *ep = arg;
    prober_t *p = ep->p;
    if (ep->canary) return;
    uint64_t wait = (uint64_t)p->cfg->canary_wait_ns;
    uint64_t now = engine_now_ns();
    inference_stats_t st;
    inference_stats(ep->inf, &st);
    /* The timer restarts on every success: it is checked lazily here instead of re-armed there. */
    uint64_t last =
        st.last_success_ns > ep->last_canary_end_ns ? st.last_success_ns : ep->last_canary_end_ns;
    if (last && now < last + wait) {
        arm(ep->canary_timer, last + wait - now);
        return;
    }
    uint32_t real = st.inflight - st.internal_inflight;
    health_status_t cur = ep_status(p, ep->name);
    /* Busy and producing tokens: the traffic is the evidence, and the progress check watches
     * it; a canary now would only take a slot or a queue place from a real request. Busy for
     * less than a wait with no token yet (first tokens still to come) is given one more wait,
     * not more: traffic that fails without producing anything must not hide a broken engine. */
    int producing = st.last_token_ns && now - st.last_token_ns < wait;
    int young = now - ep->idle_seen_ns < wait;
    if (real && cur == HEALTH_SERVING && (producing || (young && !ep->young_skipped))) {
        ep->young_skipped = !producing;
        arm(ep->canary_timer, wait);
        return;
    }
    ep->young_skipped = 0;
    char err[256] = "";
    ep->canary_start_ns = now;
    int rc;
    if (p->payload)
        rc = inference_submit_message(ep->inf, p->payload, canary_done, ep, &ep->canary, err,
                                      sizeof err);
    else {
        uint32_t bos = inference_model_info(ep->inf)->bos_id;
        Inferd__V1__GenerateRequest m = INFERD__V1__GENERATE_REQUEST__INIT;
        Inferd__V1__StopConditions stop = INFERD__V1__STOP_CONDITIONS__INIT;
        Inferd__V1__SamplingOptions samp = INFERD__V1__SAMPLING_OPTIONS__INIT;
        m.token_ids = &bos;
        m.n_token_ids = 1;
        stop.max_tokens = 1;
        samp.temperature = 0;
        m.stop = &stop;
        m.sampling = &samp;
        rc = inference_submit_message(ep->inf, &m, canary_done, ep, &ep->canary, err, sizeof err);
    }
    if (rc == 0) {
        arm(ep->timeout_timer, (uint64_t)p->cfg->health_request_timeout_ns);
        return;
    }
    ep->canary = NULL;
    if (rc == -EAGAIN && real) {
        /* Queue full of real requests: not a failure of the path; the progress check judges. */
        log_debug("health", "canary for %s skipped: admission queue full", ep->name);
        arm(ep->canary_timer, wait);
        return;
    }
    metrics_inc(ep->fail_s);
    char why[HEALTH_REASON_MAX];
    snprintf(why, sizeof why, "canary could not be submitted: %.200s", *err ? err : strerror(-rc));
    set_failed(ep, why);
    ep->last_canary_end_ns = now;
    arm(ep->canary_timer, wait);
}

/* ---------------------------------------------------------------- progress */

static void progress_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    probe_ep_t *ep = arg;
    inference_stats_t st;
    engine_stats_t es;
    inference_stats(ep->inf, &st);
    engine_stats(inference_engine(ep->inf), &es);
    uint32_t real = st.inflight - st.internal_inflight;
    /* A request paused because its own client does not read is not the engine's stall. */
    uint64_t active = real > es.paused ? real - es.paused : 0;
    uint64_t now = engine_now_ns();
    if (!active) {
        ep->idle_seen_ns = now;
        ep->stalled = 0;
        return;
    }
    /* Busy since the last tick that saw it idle (at most a tick early), or producing since the
     * last token, whichever is later. */
    uint64_t ref = st.last_token_ns > ep->idle_seen_ns ? st.last_token_ns : ep->idle_seen_ns;
    uint64_t stall = (uint64_t)ep->p->cfg->busy_stall_ns;
    if (now < ref || now - ref < stall) {
        ep->stalled = 0;
        return;
    }
    if (ep->stalled) return; /* reported once per episode */
    ep->stalled = 1;
    char why[HEALTH_REASON_MAX];
    snprintf(
        why, sizeof why,
        "no token produced for %.1fs with %u request%s in flight (--health-check-busy-stall %.3gs)",
        (double)(now - ref) / 1e9, real, real == 1 ? "" : "s", (double)stall / 1e9);
    set_failed(ep, why);
}

static void on_success(void *arg)
{
    probe_ep_t *ep = arg;
    uint64_t now = engine_now_ns();
    if (ep_status(ep->p, ep->name) == HEALTH_SERVING &&
        now - ep->last_success_set_ns < SUCCESS_CHECK_EVERY_NS)
        return;
    ep->last_success_set_ns = now;
    set_status(ep, HEALTH_SERVING, "request succeeded");
}

/* ---------------------------------------------------------------- lifecycle */

int prober_new(prober_t **out, server_t *s, health_t *h, char *err, size_t errlen)
{
    prober_t *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    p->srv = s;
    p->h = h;
    p->cfg = server_config(s);
    int rc = load_payload(p->cfg, &p->payload, err, errlen);
    if (rc) {
        free(p);
        return rc;
    }
    health_get_on_change(p->h, &p->prev_fn, &p->prev_arg);
    health_on_change(p->h, on_change, p);
    p->hooked = 1;
    update_gauges(p);
    if (!p->cfg->health_check_enabled)
        log_info("health", "canary and progress checks disabled (--health-check-enabled=false): "
                           "endpoints are SERVING once loaded");
    else
        log_info(
            "health",
            "canary after %.3gs without a success (timeout %.3gs), busy stall %.3gs, payload %s",
            (double)p->cfg->canary_wait_ns / 1e9, (double)p->cfg->health_request_timeout_ns / 1e9,
            (double)p->cfg->busy_stall_ns / 1e9,
            p->payload ? "from --health-check-payload" : "BOS, 1 token");
    *out = p;
    return 0;
}

/* The payload must be a request the model accepts: checked once at start, as Generate would. */
static int check_payload(prober_t *p, inference_t *inf, char *err, size_t errlen)
{
    const Inferd__V1__GenerateRequest *m = p->payload;
    if (!m) return 0;
    const engine_model_info_t *mi = inference_model_info(inf);
    if (m->model && *m->model && strcmp(m->model, mi->name)) {
        snprintf(err, errlen,
                 "invalid value '%.120s' for --health-check-payload: model '%.100s' is not served "
                 "here (this server serves '%s')",
                 p->cfg->health_check_payload, m->model, mi->name);
        return -EINVAL;
    }
    engine_request_t r;
    engine_request_init(&r);
    r.token_ids = m->token_ids;
    r.n_tokens = m->n_token_ids;
    r.prompt = m->prompt && *m->prompt ? m->prompt : NULL;
    if (m->sampling) {
        r.temperature = m->sampling->temperature;
        r.top_p = m->sampling->top_p == 0.0f ? 1.0f : m->sampling->top_p;
        r.top_k = m->sampling->top_k;
        r.seed = m->sampling->seed;
    }
    if (m->stop) {
        r.max_tokens = m->stop->max_tokens;
        r.stop_ids = m->stop->stop_token_ids;
        r.n_stop = m->stop->n_stop_token_ids;
        r.ignore_eos = m->stop->ignore_eos;
    }
    char msg[256];
    engine_invalid_t why;
    if (engine_validate(inference_engine(inf), &r, &why, msg, sizeof msg)) {
        snprintf(err, errlen,
                 "invalid value '%.120s' for --health-check-payload: the model rejects it (%s): %s",
                 p->cfg->health_check_payload, engine_invalid_name(why), msg);
        return -EINVAL;
    }
    return 0;
}

static void ep_free(probe_ep_t *ep)
{
    if (!ep) return;
    if (ep->canary) inference_internal_cancel(ep->inf, ep->canary);
    if (ep->inf) inference_set_observer(ep->inf, NULL);
    if (ep->canary_timer) event_free(ep->canary_timer);
    if (ep->timeout_timer) event_free(ep->timeout_timer);
    if (ep->tick) event_free(ep->tick);
    free(ep->name);
    free(ep);
}

int prober_add(prober_t *p, const char *endpoint, inference_t *inf, char *err, size_t errlen)
{
    health_endpoint_info_t info;
    if (health_endpoint_get(p->h, endpoint, 0, &info)) {
        snprintf(err, errlen, "health endpoint %s is not registered", endpoint);
        return -ENOENT;
    }
    for (size_t i = 0; i < p->n_eps; i++)
        if (!strcmp(p->eps[i]->name, endpoint)) {
            snprintf(err, errlen, "endpoint %s already watched", endpoint);
            return -EEXIST;
        }
    int rc = check_payload(p, inf, err, errlen);
    if (rc) return rc;
    probe_ep_t **a = realloc(p->eps, (p->n_eps + 1) * sizeof *a);
    if (!a) goto oom;
    p->eps = a;
    probe_ep_t *ep = calloc(1, sizeof *ep);
    if (!ep) goto oom;
    ep->p = p;
    ep->name = strdup(endpoint);
    struct event_base *base = server_base(p->srv);
    ep->canary_timer = evtimer_new(base, canary_fire, ep);
    ep->timeout_timer = evtimer_new(base, canary_timeout, ep);
    ep->tick = event_new(base, -1, EV_PERSIST, progress_tick, ep);
    inferd_metrics_t *m = server_metrics(p->srv);
    const char *lv_ok[] = {endpoint, "success"}, *lv_fail[] = {endpoint, "failure"},
               *lv_to[] = {endpoint, "timeout"}, *lv[] = {endpoint};
    ep->ok_s = metrics_series(m->health_canary, lv_ok);
    ep->fail_s = metrics_series(m->health_canary, lv_fail);
    ep->timeout_s = metrics_series(m->health_canary, lv_to);
    ep->dur_s = metrics_series(m->health_canary_duration, lv);
    if (!ep->name || !ep->canary_timer || !ep->timeout_timer || !ep->tick) {
        ep_free(ep);
        goto oom;
    }
    p->eps[p->n_eps++] = ep;
    if (!p->cfg->health_check_enabled) {
        set_status(ep, HEALTH_SERVING, "model loaded (health checks disabled)");
        return 0;
    }
    ep->inf = inf;
    inference_observer_t obs = {.on_success = on_success, .on_progress = NULL, .arg = ep};
    inference_set_observer(inf, &obs);
    ep->idle_seen_ns = engine_now_ns();
    uint64_t period = (uint64_t)p->cfg->busy_stall_ns / 10;
    if (period < TICK_MIN_NS) period = TICK_MIN_NS;
    if (period > TICK_MAX_NS) period = TICK_MAX_NS;
    arm(ep->tick, period);
    arm(ep->canary_timer, 0); /* the first canary at once: readiness follows its result */
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
}

void prober_free(prober_t *p)
{
    if (!p) return;
    for (size_t i = 0; i < p->n_eps; i++)
        ep_free(p->eps[i]);
    free(p->eps);
    if (p->hooked) health_on_change(p->h, p->prev_fn, p->prev_arg);
    if (p->payload) protobuf_c_message_free_unpacked(&p->payload->base, NULL);
    free(p);
}
