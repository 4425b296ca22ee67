/* inferd.v1.Inference: requests go to the engine's submission queue; the engine's completion
 * queue is drained here on the loop (woken with event_active from a worker), tokens are
 * coalesced per request per drain and streamed to the call, with flow control fed back to
 * the engine (a request whose client does not read is paused by the engine, alone). */
#include "server/services/inference.h"

#include <errno.h>
#include <event2/event.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "inferd/v1/inference.pb-c.h"
#include "metrics/inferd_metrics.h"
#include "server/base/clock.h"
#include "server/base/config.h"
#include "server/base/log.h"

#define POLL_BATCH 64

typedef struct gstream gstream_t;
typedef struct gen gen_t;

struct gen {
    inference_t *inf;
    grpc_call_t *call; /* NULL for internal requests */
    gstream_t *gs;     /* the GenerateStream it belongs to, or NULL */
    engine_req_t *req;
    char *request_id;
    uint64_t last_token_ns;
    uint64_t serial; /* tags its messages: the tokens are acked when HTTP/2 has taken them */
    uint32_t ntok;
    /* tokens of this drain, sent as one message */
    uint32_t *pend_ids;
    size_t pend_n, pend_cap;
    char *pend_text;
    size_t pend_len, pend_text_cap;
    int dirty;
    /* canary */
    health_canary_done_fn done;
    void *done_arg;
    gen_t *next, *prev; /* in gs->gens */
};

/* A canary: a gen without a call, on inf->canaries until it ends or is cancelled. */
typedef struct canary {
    gen_t g;
    struct canary *next, *prev;
} canary_t;

struct gstream {
    grpc_call_t *call;
    gen_t *gens;
    int half_closed;
    unsigned seq;
};

struct inference {
    server_t *srv;
    engine_t *engine;
    engine_model_info_t info;
    struct event *wake;
    inferd_metrics_t *m;
    metrics_series_t *inflight_s, *queued_s, *duration_s, *ttft_s, *itl_s, *in_tok_s, *out_tok_s,
        *out_total_s, *req_bytes_s, *resp_bytes_s;
    /* what the prober reads (CLOCK_MONOTONIC ns, the engine's event times) */
    int64_t last_success_ns; /* last request, real or canary, finished with a finish reason */
    int64_t last_token_ns;   /* last token produced for any request */
    uint32_t inflight;       /* submitted and not yet finished, real and canaries */
    uint32_t canaries_inflight;
    inference_observer_t obs;
    int have_obs;
    const Inferd__V1__GenerateRequest *canary_payload; /* NULL: BOS, 1 token, greedy */
    uint64_t next_serial;
    canary_t *canaries;    /* in flight; cancelled with the engine if still running */
    grpc_method_t rows[3]; /* inferd.v1.Inference, registered with the server */
};

engine_t *inference_engine(inference_t *inf)
{
    return inf->engine;
}

void inference_set_observer(inference_t *inf, const inference_observer_t *obs)
{
    inf->have_obs = obs != NULL;
    if (obs) inf->obs = *obs;
}

/* ---- metrics ---- */
static void count_request(inference_t *inf, const char *status, const char *error_type)
{
    const char *lv[] = {inf->info.name, inf->info.device, status, error_type};
    metrics_inc(metrics_series(inf->m->requests, lv));
}

static void collect(void *arg)
{
    inference_t *inf = arg;
    engine_stats_t st;
    engine_stats(inf->engine, &st);
    metrics_set(inf->queued_s, (double)st.queued);
    metrics_set(inf->inflight_s, (double)(inf->inflight - inf->canaries_inflight));
}

/* ---- gens ---- */
static gen_t *gen_new(inference_t *inf, grpc_call_t *call, gstream_t *gs, const char *request_id)
{
    gen_t *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    g->inf = inf;
    g->call = call;
    g->gs = gs;
    g->serial = ++inf->next_serial;
    g->request_id = strdup(request_id ? request_id : "");
    if (!g->request_id) {
        free(g);
        return NULL;
    }
    return g;
}

static void gen_dispose(gen_t *g)
{
    inference_t *inf = g->inf;
    if (g->req) {
        engine_req_free(inf->engine, g->req); /* cancels it if still running */
        g->req = NULL;
        inf->inflight--;
        if (!g->call) inf->canaries_inflight--;
    }
    if (g->gs) {
        if (g->prev)
            g->prev->next = g->next;
        else
            g->gs->gens = g->next;
        if (g->next) g->next->prev = g->prev;
    }
    free(g->request_id);
    free(g->pend_ids);
    free(g->pend_text);
}

static void canary_unlink(inference_t *inf, canary_t *h)
{
    if (h->prev)
        h->prev->next = h->next;
    else
        inf->canaries = h->next;
    if (h->next) h->next->prev = h->prev;
}

static void gen_free(gen_t *g)
{
    gen_dispose(g);
    free(g);
}

static int pend_add(gen_t *g, uint32_t tok, const char *text, size_t len)
{
    if (g->pend_n == g->pend_cap) {
        size_t cap = g->pend_cap ? g->pend_cap * 2 : 8;
        uint32_t *n = realloc(g->pend_ids, cap * sizeof *n);
        if (!n) return -ENOMEM;
        g->pend_ids = n;
        g->pend_cap = cap;
    }
    g->pend_ids[g->pend_n++] = tok;
    if (g->pend_len + len + 1 > g->pend_text_cap) {
        size_t cap = (g->pend_len + len + 1) * 2;
        char *n = realloc(g->pend_text, cap);
        if (!n) return -ENOMEM;
        g->pend_text = n;
        g->pend_text_cap = cap;
    }
    memcpy(g->pend_text + g->pend_len, text, len);
    g->pend_len += len;
    g->pend_text[g->pend_len] = 0;
    return 0;
}

/* Sends what is pending for g, plus the final fields when ev is FINISHED/ERROR. */
static void gen_send(gen_t *g, const engine_event_t *fin)
{
    inference_t *inf = g->inf;
    Inferd__V1__GenerateResponse r = INFERD__V1__GENERATE_RESPONSE__INIT;
    Inferd__V1__Usage usage = INFERD__V1__USAGE__INIT;
    Inferd__V1__Error err = INFERD__V1__ERROR__INIT;
    r.request_id = g->request_id;
    r.n_token_ids = g->pend_n;
    r.token_ids = g->pend_ids;
    if (fin && fin->type == ENGINE_EV_FINISHED && fin->len) {
        /* text the detokenizer held back until the end */
        if (g->pend_len + fin->len + 1 > g->pend_text_cap) {
            char *n = realloc(g->pend_text, g->pend_len + fin->len + 1);
            if (n) {
                g->pend_text = n;
                g->pend_text_cap = g->pend_len + fin->len + 1;
            }
        }
        if (g->pend_len + fin->len + 1 <= g->pend_text_cap) {
            memcpy(g->pend_text + g->pend_len, fin->text, fin->len);
            g->pend_len += fin->len;
            g->pend_text[g->pend_len] = 0;
        }
    }
    r.text = g->pend_text ? g->pend_text : (char *)"";
    if (fin && fin->type == ENGINE_EV_FINISHED) {
        r.finish_reason = (Inferd__V1__FinishReason)fin->finish;
        usage.prompt_tokens = fin->prompt_tokens;
        usage.completion_tokens = fin->completion_tokens;
        r.usage = &usage;
    } else if (fin) {
        err.code = GRPC_STATUS_INTERNAL;
        err.message = (char *)fin->text;
        r.error = &err;
    }
    uint32_t n = (uint32_t)g->pend_n;
    /* Flow control (engine.h, manual_ack): a token counts as delivered when HTTP/2 has taken
     * the message carrying it (on_taken below), so a client that stops reading pauses its own
     * request in the engine. A canary has no client: its tokens are delivered at once. */
    int counted = 0;
    if (g->call && grpc_call_active(g->call)) {
        size_t packed;
        if (grpc_call_send_counted(g->call, &r.base, g->serial, fin ? 0 : n, &packed) == 0) {
            metrics_add(inf->resp_bytes_s, (double)packed);
            counted = 1;
        }
    }
    if (n && g->req && !fin && !counted) engine_req_consumed(inf->engine, g->req, n);
    g->pend_n = 0;
    g->pend_len = 0;
    if (g->pend_text) g->pend_text[0] = 0;
    g->dirty = 0;
}

static void stream_free(grpc_call_t *call, gstream_t *gs);

static void finish_call_ok(gen_t *g)
{
    if (g->gs) {
        gstream_t *gs = g->gs;
        gen_free(g);
        if (gs->half_closed && !gs->gens) {
            grpc_call_t *call = gs->call;
            grpc_call_finish(call, GRPC_STATUS_OK, NULL);
            stream_free(call,
                        gs); /* drops the stream's call reference (on_cancel never comes now) */
        }
        return;
    }
    grpc_call_t *call = g->call;
    grpc_call_set_data(call, NULL);
    gen_free(g);
    grpc_call_finish(call, GRPC_STATUS_OK, NULL);
    grpc_call_unref(call);
}

static void on_event(inference_t *inf, const engine_event_t *ev, gen_t **dirty, int *ndirty)
{
    gen_t *g = ev->user;
    if (!g) return;
    int real = g->call != NULL;
    if (ev->type == ENGINE_EV_TOKEN) {
        if (real) {
            if (g->ntok == 0)
                metrics_observe(inf->ttft_s, (double)(ev->t_ns - ev->submit_ns) / 1e9);
            else
                metrics_observe(inf->itl_s, (double)(ev->t_ns - g->last_token_ns) / 1e9);
            metrics_inc(inf->out_total_s);
        }
        g->ntok++;
        g->last_token_ns = ev->t_ns;
        inf->last_token_ns = (int64_t)ev->t_ns;
        pend_add(g, ev->token, ev->text, ev->len);
        if (!g->dirty) {
            g->dirty = 1;
            dirty[(*ndirty)++] = g;
        }
        return;
    }
    /* final event */
    int ok = ev->type == ENGINE_EV_FINISHED && ev->finish != ENGINE_FINISH_CANCELLED;
    if (ok) inf->last_success_ns = (int64_t)ev->t_ns;
    if (g->dirty) { /* this gen leaves the dirty list: its pending tokens go out with the final */
        for (int i = 0; i < *ndirty; i++)
            if (dirty[i] == g) dirty[i] = NULL;
    }
    if (!real) {
        health_canary_done_fn done = g->done;
        void *arg = g->done_arg;
        char detail[ENGINE_TEXT_MAX];
        snprintf(detail, sizeof detail, "%s",
                 ok                            ? engine_finish_name(ev->finish)
                 : ev->type == ENGINE_EV_ERROR ? ev->text
                                               : "cancelled");
        canary_t *h = (canary_t *)g;
        canary_unlink(inf, h);
        gen_dispose(g);
        free(h);
        done(arg, ok, detail);
        return;
    }
    if (ok) {
        count_request(inf, INFERD_STATUS_SUCCESS, "");
        metrics_observe(inf->duration_s, (double)(ev->t_ns - ev->submit_ns) / 1e9);
        metrics_observe(inf->in_tok_s, ev->prompt_tokens);
        metrics_observe(inf->out_tok_s, ev->completion_tokens);
        if (inf->have_obs && inf->obs.on_success) inf->obs.on_success(inf->obs.arg);
    } else if (ev->type == ENGINE_EV_ERROR) {
        count_request(inf, INFERD_STATUS_ERROR, "engine");
    } else {
        count_request(inf, INFERD_STATUS_CANCELLED, "");
    }
    if (ev->type == ENGINE_EV_ERROR && !g->gs) {
        grpc_call_t *call = g->call;
        char msg[ENGINE_TEXT_MAX + 32];
        snprintf(msg, sizeof msg, "generation failed: %s", ev->text);
        if (g->pend_n) gen_send(g, NULL);
        grpc_call_set_data(call, NULL);
        gen_free(g);
        grpc_call_finish(call, GRPC_STATUS_INTERNAL, msg);
        grpc_call_unref(call);
        return;
    }
    gen_send(g, ev);
    finish_call_ok(g);
}

static void drain(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    inference_t *inf = arg;
    engine_event_t ev[POLL_BATCH];
    gen_t *dirty[POLL_BATCH];
    int n;
    server_flush_begin(inf->srv); /* each connection is written once, after every stream */
    do {
        n = engine_poll(inf->engine, ev, POLL_BATCH);
        int nd = 0;
        for (int i = 0; i < n; i++)
            on_event(inf, &ev[i], dirty, &nd);
        for (int i = 0; i < nd; i++)
            if (dirty[i]) gen_send(dirty[i], NULL);
    } while (n == POLL_BATCH);
    server_flush_end(inf->srv);
}

static void notify(void *arg)
{
    inference_t *inf = arg;
    event_active(inf->wake, EV_READ, 0); /* from a worker thread: libevent is thread-enabled */
}

/* ---- requests ---- */
int inference_request_from_proto(const inference_t *inf, const Inferd__V1__GenerateRequest *m,
                                 engine_request_t *r, char *msg, size_t msglen)
{
    engine_request_init(r);
    if (m->model && *m->model && strcmp(m->model, inf->info.name)) {
        snprintf(msg, msglen, "model '%.200s' is not served here (this server serves '%s')",
                 m->model, inf->info.name);
        return -ENOENT;
    }
    r->token_ids = m->token_ids;
    r->n_tokens = m->n_token_ids;
    r->prompt = m->prompt && *m->prompt ? m->prompt : NULL;
    if (m->sampling) {
        r->temperature = m->sampling->temperature;
        r->top_p = m->sampling->top_p == 0.0f ? 1.0f : m->sampling->top_p; /* proto3 unset */
        r->top_k = m->sampling->top_k;
        r->seed = m->sampling->seed;
    }
    if (m->stop) {
        r->max_tokens = m->stop->max_tokens;
        r->stop_ids = m->stop->stop_token_ids;
        r->n_stop = m->stop->n_stop_token_ids;
        r->ignore_eos = m->stop->ignore_eos;
    }
    return 0;
}

/* Validates and submits; on failure fills status and msg (and counts the request). */
static grpc_status_t submit(inference_t *inf, gen_t *g, const Inferd__V1__GenerateRequest *m,
                            char *msg, size_t msglen)
{
    engine_request_t r;
    if (inference_request_from_proto(inf, m, &r, msg, msglen)) {
        count_request(inf, INFERD_STATUS_ERROR, "model_not_found");
        return GRPC_STATUS_NOT_FOUND;
    }
    r.user = g;
    engine_invalid_t why = ENGINE_INVALID_NONE;
    int rc = engine_submit(inf->engine, &r, &g->req, &why, msg, msglen);
    if (rc == 0) {
        inf->inflight++;
        metrics_add(inf->req_bytes_s, (double)protobuf_c_message_get_packed_size(&m->base));
        return GRPC_STATUS_OK;
    }
    g->req = NULL;
    if (rc == -EINVAL) {
        count_request(inf, INFERD_STATUS_ERROR, engine_invalid_name(why));
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    if (rc == -EAGAIN) {
        snprintf(msg, msglen, "admission queue full (--max-queued): try again later");
        count_request(inf, INFERD_STATUS_ERROR, "queue_full");
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    }
    snprintf(msg, msglen, "engine unavailable: %s", strerror(-rc));
    count_request(inf, INFERD_STATUS_ERROR, "unavailable");
    return GRPC_STATUS_UNAVAILABLE;
}

static void generate(grpc_call_t *call, ProtobufCMessage *msg)
{
    inference_t *inf = grpc_call_arg(call);
    Inferd__V1__GenerateRequest *m = (Inferd__V1__GenerateRequest *)msg;
    const char *rid = m->request_id && *m->request_id ? m->request_id : grpc_call_request_id(call);
    gen_t *g = gen_new(inf, call, NULL, rid);
    if (!g) {
        grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    char err[512] = "";
    grpc_status_t st = submit(inf, g, m, err, sizeof err);
    if (st) {
        gen_free(g);
        grpc_call_finish(call, st, err);
        return;
    }
    grpc_call_ref(call);
    grpc_call_set_data(call, g);
}

/* The client reset the stream or its deadline passed while g was in the engine: count it
 * (the engine's own CANCELLED event is dropped once the reactor lets go of the request). */
static void count_gone(gen_t *g)
{
    if (!g->req || !g->call) return;
    int64_t dl = grpc_call_deadline(g->call);
    /* a client resets the stream at its own deadline, which runs a little ahead of ours */
    if (dl && clock_now_ns() >= dl - 100000000)
        count_request(g->inf, INFERD_STATUS_ERROR, "deadline");
    else
        count_request(g->inf, INFERD_STATUS_CANCELLED, "");
}

static void generate_cancel(grpc_call_t *call)
{
    gen_t *g = grpc_call_data(call);
    if (!g) return;
    count_gone(g);
    grpc_call_set_data(call, NULL);
    gen_free(g); /* engine_req_free cancels: the slot is freed at the next step */
    grpc_call_unref(call);
}

/* HTTP/2 took the messages of request tag: their tokens are delivered (engine_req_consumed). */
static void generate_taken(grpc_call_t *call, uint64_t tag, uint32_t units)
{
    gen_t *g = grpc_call_data(call);
    if (g && g->serial == tag && g->req && units)
        engine_req_consumed(g->inf->engine, g->req, units);
}

/* GenerateStream: many requests on one call, each answered under its request_id. */
static gstream_t *gstream_of(grpc_call_t *call)
{
    gstream_t *gs = grpc_call_data(call);
    if (gs) return gs;
    gs = calloc(1, sizeof *gs);
    if (!gs) return NULL;
    gs->call = call;
    grpc_call_ref(call);
    grpc_call_set_data(call, gs);
    return gs;
}

static void stream_error(grpc_call_t *call, const char *rid, grpc_status_t st, const char *msg)
{
    Inferd__V1__GenerateResponse r = INFERD__V1__GENERATE_RESPONSE__INIT;
    Inferd__V1__Error err = INFERD__V1__ERROR__INIT;
    r.request_id = (char *)rid;
    err.code = (int32_t)st;
    err.message = (char *)msg;
    r.error = &err;
    grpc_call_send(call, &r.base);
}

static void generate_stream(grpc_call_t *call, ProtobufCMessage *msg)
{
    inference_t *inf = grpc_call_arg(call);
    Inferd__V1__GenerateRequest *m = (Inferd__V1__GenerateRequest *)msg;
    gstream_t *gs = gstream_of(call);
    if (!gs) {
        grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    char rid[64];
    if (m->request_id && *m->request_id)
        snprintf(rid, sizeof rid, "%.63s", m->request_id);
    else
        snprintf(rid, sizeof rid, "%.40s-%u", grpc_call_request_id(call), ++gs->seq);
    gen_t *g = gen_new(inf, call, gs, m->request_id && *m->request_id ? m->request_id : rid);
    if (!g) {
        stream_error(call, rid, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    g->next = gs->gens;
    if (gs->gens) gs->gens->prev = g;
    gs->gens = g;
    char err[512] = "";
    grpc_status_t st = submit(inf, g, m, err, sizeof err);
    if (st) {
        stream_error(call, g->request_id, st, err);
        gen_free(g);
    }
}

static void stream_free(grpc_call_t *call, gstream_t *gs)
{
    while (gs->gens)
        gen_free(gs->gens);
    grpc_call_set_data(call, NULL);
    free(gs);
    grpc_call_unref(call);
}

static void generate_stream_half_close(grpc_call_t *call)
{
    gstream_t *gs = grpc_call_data(call);
    if (!gs) {
        grpc_call_finish(call, GRPC_STATUS_OK, NULL);
        return;
    }
    gs->half_closed = 1;
    if (!gs->gens) {
        grpc_call_finish(call, GRPC_STATUS_OK, NULL);
        stream_free(call, gs);
    }
}

static void generate_stream_cancel(grpc_call_t *call)
{
    gstream_t *gs = grpc_call_data(call);
    if (!gs) return;
    for (gen_t *g = gs->gens; g; g = g->next)
        count_gone(g);
    stream_free(call, gs);
}

static void generate_stream_taken(grpc_call_t *call, uint64_t tag, uint32_t units)
{
    gstream_t *gs = grpc_call_data(call);
    for (gen_t *g = gs ? gs->gens : NULL; g; g = g->next)
        if (g->serial == tag) {
            if (g->req && units) engine_req_consumed(g->inf->engine, g->req, units);
            return;
        }
}

static void model_info(grpc_call_t *call, ProtobufCMessage *msg)
{
    inference_t *inf = grpc_call_arg(call);
    Inferd__V1__ModelInfoRequest *m = (Inferd__V1__ModelInfoRequest *)msg;
    if (m->model && *m->model && strcmp(m->model, inf->info.name)) {
        char err[300];
        snprintf(err, sizeof err, "model '%.200s' is not served here", m->model);
        grpc_call_finish(call, GRPC_STATUS_NOT_FOUND, err);
        return;
    }
    Inferd__V1__ModelInfo r = INFERD__V1__MODEL_INFO__INIT;
    r.name = (char *)inf->info.name;
    r.vocab_size = inf->info.vocab_size;
    r.max_seq_len = inf->info.max_seq_len;
    r.bos_token_id = inf->info.bos_id;
    r.eos_token_id = inf->info.eos_id;
    r.device = (char *)inf->info.device;
    r.parameters = inf->info.parameters;
    grpc_call_send(call, &r.base);
    grpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

/* ---- canaries: the prober's ops (health/prober.h) ---- */
static int canary_submit(void *impl, health_canary_done_fn done, void *arg, void **out, char *err,
                         size_t errlen)
{
    inference_t *inf = impl;
    uint32_t bos = inf->info.bos_id;
    Inferd__V1__GenerateRequest def = INFERD__V1__GENERATE_REQUEST__INIT;
    Inferd__V1__StopConditions stop = INFERD__V1__STOP_CONDITIONS__INIT;
    Inferd__V1__SamplingOptions samp = INFERD__V1__SAMPLING_OPTIONS__INIT;
    const Inferd__V1__GenerateRequest *m = inf->canary_payload;
    if (!m) { /* the minimal canary: BOS, one token, greedy */
        def.token_ids = &bos;
        def.n_token_ids = 1;
        stop.max_tokens = 1;
        def.stop = &stop;
        def.sampling = &samp;
        m = &def;
    }
    engine_request_t r;
    if (inference_request_from_proto(inf, m, &r, err, errlen)) return -ENOENT;
    canary_t *h = calloc(1, sizeof *h);
    if (!h) return -ENOMEM;
    gen_t *g = &h->g;
    g->inf = inf;
    g->request_id = strdup("canary");
    g->done = done;
    g->done_arg = arg;
    r.flags |= ENGINE_REQ_CANARY;
    r.user = g;
    int rc = g->request_id ? engine_submit(inf->engine, &r, &g->req, NULL, err, errlen) : -ENOMEM;
    if (rc) {
        g->req = NULL;
        gen_dispose(g);
        free(h);
        if (rc == -EAGAIN) snprintf(err, errlen, "admission queue full");
        return rc;
    }
    inf->inflight++;
    inf->canaries_inflight++;
    h->next = inf->canaries;
    if (h->next) h->next->prev = h;
    inf->canaries = h;
    *out = h;
    return 0;
}

static void canary_cancel(void *impl, void *canary)
{
    canary_t *h = canary;
    canary_unlink(impl, h);
    gen_dispose(&h->g); /* engine_req_free cancels: the slot is freed at the next step */
    free(h);
}

static void probe_progress(void *impl, health_progress_t *out)
{
    inference_t *inf = impl;
    engine_stats_t es;
    engine_stats(inf->engine, &es);
    out->last_success_ns = inf->last_success_ns;
    out->last_token_ns = inf->last_token_ns;
    out->inflight = inf->inflight - inf->canaries_inflight;
    out->paused = (uint32_t)es.paused;
}

const health_probe_ops_t *inference_probe_ops(void)
{
    static const health_probe_ops_t ops = {
        .submit = canary_submit, .cancel = canary_cancel, .progress = probe_progress};
    return &ops;
}

int inference_set_canary(inference_t *inf, const Inferd__V1__GenerateRequest *payload, char *err,
                         size_t errlen)
{
    if (payload) {
        engine_request_t r;
        char msg[256];
        if (inference_request_from_proto(inf, payload, &r, msg, sizeof msg)) {
            snprintf(err, errlen, "%s", msg);
            return -EINVAL;
        }
        engine_invalid_t why;
        if (engine_validate(inf->engine, &r, &why, msg, sizeof msg)) {
            snprintf(err, errlen, "the model rejects it (%s): %s", engine_invalid_name(why), msg);
            return -EINVAL;
        }
    }
    inf->canary_payload = payload;
    return 0;
}

#define MROW(p, k, req, resp, fn, ...)                                                             \
    {                                                                                              \
        .path = "/inferd.v1.Inference/" p, .service = "inferd.v1.Inference", .name = p, .kind = k, \
        .request = req, .response = resp, .on_message = fn, __VA_ARGS__                            \
    }

#ifdef INFERD_DEFAULT_MODEL
/* The built-in model file whose build-tree path is `built`: beside an installed binary first
 * (PREFIX/bin/inferd -> PREFIX/INFERD_DEFAULT_MODEL_RELDIR/NAME, the layout `cmake --install`
 * makes), so an installed tree or a container image never depends on the build directory;
 * else the build tree, so a binary run where it was built needs no install. */
static const char *default_file(char *buf, size_t n, const char *built)
{
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
    const char *name = strrchr(built, '/');
    if (len <= 0 || !name) return built;
    exe[len] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash) return built;
    *slash = '\0';
    char path[PATH_MAX];
    int w = snprintf(path, sizeof path, "%s/%s%s", exe, INFERD_DEFAULT_MODEL_RELDIR, name);
    if (w < 0 || (size_t)w >= sizeof path || n < PATH_MAX || !realpath(path, buf)) return built;
    return buf;
}
#endif

int inference_new(inference_t **out, server_t *s, char *err, size_t errlen)
{
    *out = NULL;
    const config_t *cfg = server_config(s);
    int rc = -ENOMEM;
    inference_t *inf = calloc(1, sizeof *inf);
    if (!inf) goto oom;
    inf->srv = s;
    inf->m = server_metrics(s);
    engine_config_t ec;
    engine_config_init(&ec);
#ifdef INFERD_DEFAULT_MODEL
    char dmodel[PATH_MAX], dtok[PATH_MAX];
    ec.model_path =
        cfg->model ? cfg->model : default_file(dmodel, sizeof dmodel, INFERD_DEFAULT_MODEL);
    ec.tokenizer_path =
        cfg->tokenizer
            ? cfg->tokenizer
            : (cfg->model ? NULL : default_file(dtok, sizeof dtok, INFERD_DEFAULT_TOKENIZER));
    if (!cfg->model) log_info("engine", "no --model: serving the built-in model %s", ec.model_path);
#else
    ec.model_path = cfg->model;
    ec.tokenizer_path = cfg->tokenizer;
#endif
    rc = -EINVAL;
    if (!ec.model_path) {
        snprintf(err, errlen, "no model: give --model PATH");
        goto fail;
    }
    if (!cfg->model) ec.model_name = "inferd-default";
    ec.threads = (int)cfg->threads;
    ec.max_batch = (int)cfg->max_batch;
    ec.ctx_size = (int)cfg->ctx_size;
    ec.max_queued = (int)cfg->max_queued;
    ec.device = cfg->device, ec.cuda_streams = (int)cfg->cuda_streams, ec.dtype = cfg->dtype;
    ec.manual_ack = 1;
    ec.notify = notify;
    ec.notify_arg = inf;
    inf->wake = event_new(server_base(s), -1, 0, drain, inf);
    rc = -ENOMEM;
    if (!inf->wake) goto oom;
    char eerr[400];
    if ((rc = engine_new(&inf->engine, &ec, eerr, sizeof eerr))) {
        snprintf(err, errlen, "cannot start the engine for model %s: %s", ec.model_path, eerr);
        goto fail;
    }
    engine_model_info(inf->engine, &inf->info);
    log_info("engine", "device %s (%s)", inf->info.device, inf->info.device_note);
    const char *lv[] = {inf->info.name, inf->info.device};
    inf->inflight_s = metrics_series(inf->m->inflight, lv);
    inf->queued_s = metrics_series(inf->m->queued, lv);
    inf->duration_s = metrics_series(inf->m->request_duration, lv);
    inf->ttft_s = metrics_series(inf->m->ttft, lv);
    inf->itl_s = metrics_series(inf->m->itl, lv);
    inf->in_tok_s = metrics_series(inf->m->input_tokens, lv);
    inf->out_tok_s = metrics_series(inf->m->output_tokens, lv);
    inf->out_total_s = metrics_series(inf->m->output_tokens_total, lv);
    inf->req_bytes_s = metrics_series(inf->m->request_bytes, lv);
    inf->resp_bytes_s = metrics_series(inf->m->response_bytes, lv);
    metrics_add_collector(server_registry(s), collect, inf);
    grpc_method_t proto[3] = {
        MROW("Generate", GRPC_SERVER_STREAMING, &inferd__v1__generate_request__descriptor,
             &inferd__v1__generate_response__descriptor, generate, .on_cancel = generate_cancel,
             .on_taken = generate_taken, .arg = inf),
        MROW("GenerateStream", GRPC_BIDI_STREAMING, &inferd__v1__generate_request__descriptor,
             &inferd__v1__generate_response__descriptor, generate_stream,
             .on_half_close = generate_stream_half_close, .on_cancel = generate_stream_cancel,
             .on_taken = generate_stream_taken, .arg = inf),
        MROW("GetModelInfo", GRPC_UNARY, &inferd__v1__model_info_request__descriptor,
             &inferd__v1__model_info__descriptor, model_info, .arg = inf),
    };
    memcpy(inf->rows, proto, sizeof proto);
    if ((rc = server_register(s, inf->rows, 3))) {
        snprintf(err, errlen, "cannot register inferd.v1.Inference: %s", strerror(-rc));
        goto fail;
    }
    log_info("engine",
             "model %s loaded: %s %s, dim %u, %u layers, %u heads (%u kv), vocab %u, context %u "
             "(model %u), %llu parameters, device %s",
             inf->info.name, inf->info.architecture, inf->info.quantization, inf->info.dim,
             inf->info.n_layers, inf->info.n_heads, inf->info.n_kv_heads, inf->info.vocab_size,
             inf->info.max_seq_len, inf->info.train_context,
             (unsigned long long)inf->info.parameters, inf->info.device);
    log_info("engine", "KV cache: %llu bytes (%.1f MiB) for %u sequences x %u positions",
             (unsigned long long)inf->info.kv_cache_bytes,
             (double)inf->info.kv_cache_bytes / (1024.0 * 1024.0), inf->info.kv_sequences,
             inf->info.context_size);
    /* No warm-up here: the prober's first canary (health/prober.c) runs at once and turns the
     * endpoint SERVING when it passes. */
    *out = inf;
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
fail:
    inference_free(inf);
    return rc;
}

void inference_free(inference_t *inf)
{
    if (!inf) return;
    while (inf->canaries)
        canary_cancel(inf, inf->canaries);
    engine_free(inf->engine); /* workers stop; outstanding handles become invalid */
    if (inf->wake) event_free(inf->wake);
    free(inf);
}
