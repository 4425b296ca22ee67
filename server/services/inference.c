/* inferd.v1.Inference, and the jobs every API shares: requests go to the engine's submission
 * queue; the engine's completion queue is drained here on the loop (woken with event_active from
 * a worker), tokens are coalesced per job per drain and handed to the job's sink (a gRPC call
 * here, an HTTP stream in services/openai.c), with flow control fed back to the engine (a
 * request whose client does not read is paused by the engine, alone). */
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

static const char *const api_names[INFERENCE_API_COUNT] = {"grpc", "openai"};

struct inference_job {
    inference_t *inf;
    inference_api_t api;
    const inference_sink_t *sink; /* NULL: a canary */
    void *sink_arg;
    engine_req_t *req;
    int tokenize; /* a Tokenize: no tokens, no metrics, not in flight */
    uint64_t last_token_ns;
    uint32_t ntok;
    /* tokens of this drain, delivered together */
    uint32_t *pend_ids;
    size_t pend_n, pend_cap;
    char *pend_text;
    size_t pend_len, pend_text_cap;
    int dirty;
    /* canary */
    health_canary_done_fn done;
    void *done_arg;
    inference_job_t *next, *prev; /* in inf->canaries */
};

/* The inference metric series of one API. */
typedef struct api_series {
    metrics_series_t *duration, *ttft, *itl, *in_tok, *out_tok, *out_total, *req_bytes, *resp_bytes;
} api_series_t;

struct inference {
    server_t *srv;
    engine_t *engine;
    engine_model_info_t info;
    struct event *wake;
    inferd_metrics_t *m;
    metrics_series_t *inflight_s, *queued_s, *preempted_s, *preemptions_s;
    api_series_t api[INFERENCE_API_COUNT];
    /* what the prober reads (CLOCK_MONOTONIC ns, the engine's event times) */
    int64_t last_success_ns; /* last request, real or canary, finished with a finish reason */
    int64_t last_token_ns;   /* last token produced for any request */
    uint32_t inflight;       /* generations submitted and not yet finished, real and canaries */
    uint32_t canaries_inflight;
    inference_observer_t obs;
    int have_obs;
    const Inferd__V1__GenerateRequest *canary_payload; /* NULL: BOS, 1 token, greedy */
    uint64_t next_serial;
    inference_job_t *canaries; /* in flight; cancelled with the engine if still running */
    grpc_method_t rows[4];     /* inferd.v1.Inference, registered with the server */
    grpc_field_limit_t gen_limits[9], info_limits[2], tok_limits[6]; /* checked on the wire */
    char text_why[128]; /* why a prompt or a chat message is too long */
};

engine_t *inference_engine(inference_t *inf)
{
    return inf->engine;
}

const engine_model_info_t *inference_model(const inference_t *inf)
{
    return &inf->info;
}

void inference_set_observer(inference_t *inf, const inference_observer_t *obs)
{
    inf->have_obs = obs != NULL;
    if (obs) inf->obs = *obs;
}

/* ---- metrics ---- */
static void count_request(inference_t *inf, inference_api_t api, const char *status,
                          const char *error_type)
{
    const char *lv[] = {inf->info.name, inf->info.device, api_names[api], status, error_type};
    metrics_inc(metrics_series(inf->m->requests, lv));
}

static void collect(void *arg)
{
    inference_t *inf = arg;
    engine_stats_t st;
    engine_stats(inf->engine, &st);
    metrics_set(inf->queued_s, (double)st.queued);
    metrics_set(inf->inflight_s, (double)(inf->inflight - inf->canaries_inflight));
    metrics_set(inf->preempted_s, (double)st.preempted);
    metrics_set(inf->preemptions_s, (double)st.preemptions_total); /* the engine counts */
}

/* ---- jobs ---- */
static void job_free(inference_job_t *j)
{
    inference_t *inf = j->inf;
    if (j->req) {
        engine_req_free(inf->engine, j->req); /* cancels it if still running */
        j->req = NULL;
        if (!j->tokenize) inf->inflight--;
        if (!j->sink && !j->tokenize) inf->canaries_inflight--;
    }
    if (!j->sink) { /* a canary: off the list */
        if (j->prev)
            j->prev->next = j->next;
        else if (inf->canaries == j)
            inf->canaries = j->next;
        if (j->next) j->next->prev = j->prev;
    }
    free(j->pend_ids);
    free(j->pend_text);
    free(j);
}

static int pend_text_add(inference_job_t *j, const char *text, size_t len)
{
    if (j->pend_len + len + 1 > j->pend_text_cap) {
        size_t cap = (j->pend_len + len + 1) * 2;
        char *n = realloc(j->pend_text, cap);
        if (!n) return -ENOMEM;
        j->pend_text = n;
        j->pend_text_cap = cap;
    }
    memcpy(j->pend_text + j->pend_len, text, len);
    j->pend_len += len;
    j->pend_text[j->pend_len] = 0;
    return 0;
}

static int pend_add(inference_job_t *j, uint32_t tok, const char *text, size_t len)
{
    if (j->pend_n == j->pend_cap) {
        size_t cap = j->pend_cap ? j->pend_cap * 2 : 8;
        uint32_t *n = realloc(j->pend_ids, cap * sizeof *n);
        if (!n) return -ENOMEM;
        j->pend_ids = n;
        j->pend_cap = cap;
    }
    j->pend_ids[j->pend_n++] = tok;
    return pend_text_add(j, text, len);
}

/* Hands what is pending for j to its sink; fin (FINISHED) makes it the final delivery. */
static void job_deliver(inference_job_t *j, const engine_event_t *fin)
{
    inference_t *inf = j->inf;
    if (fin && fin->len) pend_text_add(j, fin->text, fin->len); /* text held back to the end */
    inference_out_t o = {.ids = j->pend_ids,
                         .n_ids = j->pend_n,
                         .text = j->pend_text ? j->pend_text : "",
                         .len = j->pend_len};
    if (fin) {
        o.final = 1;
        o.finish = fin->finish;
        o.prompt_tokens = fin->prompt_tokens;
        o.completion_tokens = fin->completion_tokens;
    }
    uint32_t n = (uint32_t)j->pend_n;
    size_t bytes = 0;
    /* Flow control (engine.h, manual_ack): a token counts as delivered when the transport has
     * taken the bytes carrying it (the sink reports it: inference_job_consumed), so a client
     * that stops reading pauses its own request in the engine. */
    int counted = j->sink->deliver(j->sink_arg, &o, &bytes);
    if (fin) return; /* the sink let go of j; the caller frees it */
    if (bytes) metrics_add(inf->api[j->api].resp_bytes, (double)bytes);
    if (n && j->req && !counted) engine_req_consumed(inf->engine, j->req, n);
    j->pend_n = 0;
    j->pend_len = 0;
    if (j->pend_text) j->pend_text[0] = 0;
    j->dirty = 0;
}

void inference_job_consumed(inference_job_t *j, uint32_t n)
{
    if (j && j->req && n) engine_req_consumed(j->inf->engine, j->req, n);
}

void inference_job_cancel(inference_job_t *j, int deadline)
{
    if (!j) return;
    if (j->req && !j->tokenize) /* the engine's own CANCELLED event is dropped once freed */
        count_request(j->inf, j->api, deadline ? INFERD_STATUS_ERROR : INFERD_STATUS_CANCELLED,
                      deadline ? "deadline" : "");
    job_free(j); /* engine_req_free cancels: the slot is freed at the next step */
}

/* The status a request the engine rejected gets, from why. */
static grpc_status_t invalid_status(engine_invalid_t why)
{
    return why == ENGINE_INVALID_NO_TEMPLATE ? GRPC_STATUS_FAILED_PRECONDITION
                                             : GRPC_STATUS_INVALID_ARGUMENT;
}

static void on_final(inference_t *inf, inference_job_t *j, const engine_event_t *ev)
{
    int ok = ev->type == ENGINE_EV_FINISHED && ev->finish != ENGINE_FINISH_CANCELLED;
    if (ok && !j->tokenize) inf->last_success_ns = (int64_t)ev->t_ns;
    if (!j->sink) { /* a canary */
        health_canary_done_fn done = j->done;
        void *arg = j->done_arg;
        char detail[ENGINE_TEXT_MAX];
        snprintf(detail, sizeof detail, "%s",
                 ok                            ? engine_finish_name(ev->finish)
                 : ev->type == ENGINE_EV_ERROR ? ev->text
                                               : "cancelled");
        job_free(j);
        done(arg, ok, detail);
        return;
    }
    api_series_t *as = &inf->api[j->api];
    if (j->tokenize) {
        if (ok) {
            size_t n;
            const uint32_t *ids = engine_req_prompt(j->req, &n);
            inference_out_t o = {
                .ids = ids, .n_ids = n, .text = "", .final = 1, .prompt_tokens = (uint32_t)n};
            size_t bytes;
            j->sink->deliver(j->sink_arg, &o, &bytes);
        } else {
            j->sink->fail(j->sink_arg,
                          ev->type == ENGINE_EV_ERROR ? invalid_status(ev->invalid)
                                                      : GRPC_STATUS_CANCELLED,
                          ev->type == ENGINE_EV_ERROR ? ev->text : "cancelled");
        }
        job_free(j);
        return;
    }
    if (ok) {
        count_request(inf, j->api, INFERD_STATUS_SUCCESS, "");
        metrics_observe(as->duration, (double)(ev->t_ns - ev->submit_ns) / 1e9);
        metrics_observe(as->in_tok, ev->prompt_tokens);
        metrics_observe(as->out_tok, ev->completion_tokens);
        if (inf->have_obs && inf->obs.on_success) inf->obs.on_success(inf->obs.arg);
        job_deliver(j, ev);
    } else if (ev->type == ENGINE_EV_ERROR && ev->invalid != ENGINE_INVALID_NONE) {
        /* an input the driver rendered and tokenized proved invalid (tokenize_in_engine) */
        count_request(inf, j->api, INFERD_STATUS_ERROR, engine_invalid_name(ev->invalid));
        j->sink->fail(j->sink_arg, invalid_status(ev->invalid), ev->text);
    } else if (ev->type == ENGINE_EV_ERROR) {
        count_request(inf, j->api, INFERD_STATUS_ERROR, "engine");
        if (j->pend_n) job_deliver(j, NULL);
        char msg[ENGINE_TEXT_MAX + 32];
        snprintf(msg, sizeof msg, "generation failed: %s", ev->text);
        j->sink->fail(j->sink_arg, GRPC_STATUS_INTERNAL, msg);
    } else { /* cancelled in the engine while still held: the finish reason says so */
        count_request(inf, j->api, INFERD_STATUS_CANCELLED, "");
        job_deliver(j, ev);
    }
    job_free(j);
}

static void on_event(inference_t *inf, const engine_event_t *ev, inference_job_t **dirty,
                     int *ndirty)
{
    inference_job_t *j = ev->user;
    if (!j) return;
    if (ev->type == ENGINE_EV_TOKEN) {
        if (j->sink) {
            api_series_t *as = &inf->api[j->api];
            if (j->ntok == 0)
                metrics_observe(as->ttft, (double)(ev->t_ns - ev->submit_ns) / 1e9);
            else
                metrics_observe(as->itl, (double)(ev->t_ns - j->last_token_ns) / 1e9);
            metrics_inc(as->out_total);
        }
        j->ntok++;
        j->last_token_ns = ev->t_ns;
        inf->last_token_ns = (int64_t)ev->t_ns;
        pend_add(j, ev->token, ev->text, ev->len);
        if (!j->dirty) {
            j->dirty = 1;
            dirty[(*ndirty)++] = j;
        }
        return;
    }
    if (j->dirty) { /* j leaves the dirty list: its pending tokens go out with the final */
        for (int i = 0; i < *ndirty; i++)
            if (dirty[i] == j) dirty[i] = NULL;
    }
    on_final(inf, j, ev);
}

static void drain(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    inference_t *inf = arg;
    engine_event_t ev[POLL_BATCH];
    inference_job_t *dirty[POLL_BATCH];
    int n;
    server_flush_begin(inf->srv); /* each connection is written once, after every stream */
    do {
        n = engine_poll(inf->engine, ev, POLL_BATCH);
        int nd = 0;
        for (int i = 0; i < n; i++)
            on_event(inf, &ev[i], dirty, &nd);
        for (int i = 0; i < nd; i++)
            if (dirty[i]) {
                if (dirty[i]->sink)
                    job_deliver(dirty[i], NULL);
                else { /* a canary has no client: its tokens are delivered at once */
                    engine_req_consumed(inf->engine, dirty[i]->req, (uint32_t)dirty[i]->pend_n);
                    dirty[i]->pend_n = dirty[i]->pend_len = 0;
                    dirty[i]->dirty = 0;
                }
            }
    } while (n == POLL_BATCH);
    server_flush_end(inf->srv);
}

static void notify(void *arg)
{
    inference_t *inf = arg;
    event_active(inf->wake, EV_READ, 0); /* from a worker thread: libevent is thread-enabled */
}

/* ---- the one request mapping ---- */
static int model_check(const inference_t *inf, const char *model, char *msg, size_t msglen)
{
    if (model && *model && strcmp(model, inf->info.name)) {
        snprintf(msg, msglen, "model '%.200s' is not served here (this server serves '%s')", model,
                 inf->info.name);
        return -ENOENT;
    }
    return 0;
}

/* Chat messages as the engine takes them (*out malloc'd), roles checked. */
static int map_messages(Inferd__V1__ChatMessage *const *ms, size_t n, engine_request_t *r,
                        char *msg, size_t msglen)
{
    if (!n) return 0;
    if (n > ENGINE_MAX_MESSAGES) {
        snprintf(msg, msglen, "%zu messages given, at most %d allowed", n, ENGINE_MAX_MESSAGES);
        return -EINVAL;
    }
    engine_chat_msg_t *out = calloc(n, sizeof *out);
    if (!out) {
        snprintf(msg, msglen, "out of memory");
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        const char *role = ms[i]->role ? ms[i]->role : "";
        if (strcmp(role, "system") && strcmp(role, "user") && strcmp(role, "assistant")) {
            snprintf(msg, msglen, "messages[%zu].role '%.*s' is not one of system, user, assistant",
                     i, INFERENCE_MAX_ROLE, role);
            free(out);
            return -EINVAL;
        }
        out[i].role = role;
        out[i].content = ms[i]->content ? ms[i]->content : "";
    }
    r->messages = out;
    r->n_messages = n;
    return 0;
}

int inference_request_from_proto(const inference_t *inf, const Inferd__V1__GenerateRequest *m,
                                 engine_request_t *r, char *msg, size_t msglen)
{
    engine_request_init(r);
    int rc = model_check(inf, m->model, msg, msglen);
    if (rc) return rc;
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
        r->stop_strs = (const char *const *)m->stop->stop;
        r->n_stop_strs = m->stop->n_stop;
    }
    return map_messages(m->messages, m->n_messages, r, msg, msglen);
}

void inference_request_dispose(engine_request_t *r)
{
    free((void *)r->messages);
    r->messages = NULL;
    r->n_messages = 0;
}

static const char *mapping_error_type(int rc)
{
    return rc == -ENOENT ? "model_not_found" : rc == -EINVAL ? "bad_input" : "unavailable";
}

static grpc_status_t mapping_status(int rc)
{
    return rc == -ENOENT   ? GRPC_STATUS_NOT_FOUND
           : rc == -EINVAL ? GRPC_STATUS_INVALID_ARGUMENT
                           : GRPC_STATUS_RESOURCE_EXHAUSTED;
}

static inference_job_t *job_new(inference_t *inf, inference_api_t api, const inference_sink_t *sink,
                                void *sink_arg)
{
    inference_job_t *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    j->inf = inf;
    j->api = api;
    j->sink = sink;
    j->sink_arg = sink_arg;
    return j;
}

/* Submits r for j; on failure the status, with msg. */
static grpc_status_t submit(inference_t *inf, inference_job_t *j, engine_request_t *r, char *msg,
                            size_t msglen, const char **error_type)
{
    r->user = j;
    engine_invalid_t why = ENGINE_INVALID_NONE;
    int rc = engine_submit(inf->engine, r, &j->req, &why, msg, msglen);
    if (rc == 0) return GRPC_STATUS_OK;
    j->req = NULL;
    if (rc == -EINVAL) {
        *error_type = engine_invalid_name(why);
        return invalid_status(why);
    }
    if (rc == -EAGAIN) {
        snprintf(msg, msglen, "admission queue full (--max-queued): try again later");
        *error_type = "queue_full";
        return GRPC_STATUS_RESOURCE_EXHAUSTED;
    }
    snprintf(msg, msglen, "engine unavailable: %s", strerror(-rc));
    *error_type = "unavailable";
    return GRPC_STATUS_UNAVAILABLE;
}

grpc_status_t inference_job_start(inference_t *inf, inference_api_t api,
                                  const Inferd__V1__GenerateRequest *m, size_t request_bytes,
                                  const inference_sink_t *sink, void *sink_arg,
                                  inference_job_t **out, char *msg, size_t msglen)
{
    *out = NULL;
    engine_request_t r;
    int rc = inference_request_from_proto(inf, m, &r, msg, msglen);
    if (rc) {
        count_request(inf, api, INFERD_STATUS_ERROR, mapping_error_type(rc));
        return mapping_status(rc);
    }
    inference_job_t *j = job_new(inf, api, sink, sink_arg);
    const char *error_type = "unavailable";
    grpc_status_t st = GRPC_STATUS_RESOURCE_EXHAUSTED;
    if (!j)
        snprintf(msg, msglen, "out of memory");
    else
        st = submit(inf, j, &r, msg, msglen, &error_type);
    inference_request_dispose(&r); /* the engine copied what it needs */
    if (st) {
        count_request(inf, api, INFERD_STATUS_ERROR, error_type);
        free(j);
        return st;
    }
    inf->inflight++;
    metrics_add(inf->api[api].req_bytes, (double)request_bytes);
    *out = j;
    return GRPC_STATUS_OK;
}

grpc_status_t inference_tokenize_start(inference_t *inf, const Inferd__V1__TokenizeRequest *m,
                                       const inference_sink_t *sink, void *sink_arg,
                                       inference_job_t **out, char *msg, size_t msglen)
{
    *out = NULL;
    engine_request_t r;
    engine_request_init(&r);
    int rc = model_check(inf, m->model, msg, msglen);
    if (!rc) rc = map_messages(m->messages, m->n_messages, &r, msg, msglen);
    if (rc) return mapping_status(rc);
    r.prompt = m->prompt && *m->prompt ? m->prompt : NULL;
    r.flags = ENGINE_REQ_TOKENIZE;
    inference_job_t *j = job_new(inf, INFERENCE_API_GRPC, sink, sink_arg);
    const char *error_type;
    grpc_status_t st = GRPC_STATUS_RESOURCE_EXHAUSTED;
    if (!j)
        snprintf(msg, msglen, "out of memory");
    else {
        j->tokenize = 1;
        st = submit(inf, j, &r, msg, msglen, &error_type);
    }
    inference_request_dispose(&r);
    if (st) {
        free(j);
        return st;
    }
    *out = j;
    return GRPC_STATUS_OK;
}

/* ---- gRPC: Generate and GenerateStream ---- */
typedef struct gstream gstream_t;

/* One Generate call, or one request of a GenerateStream: the job's sink. */
typedef struct ggen {
    grpc_call_t *call;
    gstream_t *gs; /* the GenerateStream it belongs to, or NULL */
    inference_job_t *job;
    char *request_id;
    uint64_t serial; /* tags its messages: the tokens are acked when HTTP/2 has taken them */
    struct ggen *next, *prev; /* in gs->gens */
} ggen_t;

struct gstream {
    grpc_call_t *call;
    ggen_t *gens;
    int half_closed;
    unsigned seq;
};

static ggen_t *ggen_new(inference_t *inf, grpc_call_t *call, gstream_t *gs, const char *rid)
{
    ggen_t *g = calloc(1, sizeof *g);
    if (!g) return NULL;
    g->call = call;
    g->gs = gs;
    g->serial = ++inf->next_serial;
    g->request_id = strdup(rid ? rid : "");
    if (!g->request_id) {
        free(g);
        return NULL;
    }
    if (gs) {
        g->next = gs->gens;
        if (gs->gens) gs->gens->prev = g;
        gs->gens = g;
    }
    return g;
}

/* Frees g; a job still running is cancelled (counted as the client going away). */
static void ggen_free(ggen_t *g, int deadline)
{
    if (g->job) inference_job_cancel(g->job, deadline);
    if (g->gs) {
        if (g->prev)
            g->prev->next = g->next;
        else
            g->gs->gens = g->next;
        if (g->next) g->next->prev = g->prev;
    }
    free(g->request_id);
    free(g);
}

static void stream_free(grpc_call_t *call, gstream_t *gs);

/* g's request is over (its job already gone): the call ends when nothing else runs on it. */
static void ggen_done(ggen_t *g, grpc_status_t st, const char *msg)
{
    g->job = NULL;
    grpc_call_t *call = g->call;
    gstream_t *gs = g->gs;
    ggen_free(g, 0);
    if (gs) {
        if (gs->half_closed && !gs->gens) {
            grpc_call_finish(call, GRPC_STATUS_OK, NULL);
            stream_free(call, gs); /* drops the stream's call reference */
        }
        return;
    }
    grpc_call_set_data(call, NULL);
    grpc_call_finish(call, st, msg);
    grpc_call_unref(call);
}

static int ggen_deliver(void *arg, const inference_out_t *o, size_t *bytes)
{
    ggen_t *g = arg;
    Inferd__V1__GenerateResponse r = INFERD__V1__GENERATE_RESPONSE__INIT;
    Inferd__V1__Usage usage = INFERD__V1__USAGE__INIT;
    r.request_id = g->request_id;
    r.n_token_ids = o->n_ids;
    r.token_ids = (uint32_t *)o->ids;
    r.text = (char *)o->text;
    if (o->final) {
        r.finish_reason = (Inferd__V1__FinishReason)o->finish;
        usage.prompt_tokens = o->prompt_tokens;
        usage.completion_tokens = o->completion_tokens;
        r.usage = &usage;
    }
    int counted = 0;
    if (grpc_call_active(g->call) &&
        grpc_call_send_counted(g->call, &r.base, g->serial, o->final ? 0 : (uint32_t)o->n_ids,
                               bytes) == 0)
        counted = 1;
    if (o->final) ggen_done(g, GRPC_STATUS_OK, NULL);
    return counted;
}

/* A GenerateStream request's failure is its own last response; the stream goes on. */
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

static void ggen_fail(void *arg, grpc_status_t st, const char *msg)
{
    ggen_t *g = arg;
    if (g->gs) stream_error(g->call, g->request_id, st, msg);
    ggen_done(g, st, msg);
}

static const inference_sink_t ggen_sink = {.deliver = ggen_deliver, .fail = ggen_fail};

static void generate(grpc_call_t *call, ProtobufCMessage *msg)
{
    inference_t *inf = grpc_call_arg(call);
    Inferd__V1__GenerateRequest *m = (Inferd__V1__GenerateRequest *)msg;
    const char *rid = m->request_id && *m->request_id ? m->request_id : grpc_call_request_id(call);
    ggen_t *g = ggen_new(inf, call, NULL, rid);
    if (!g) {
        grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    char err[512] = "";
    grpc_status_t st =
        inference_job_start(inf, INFERENCE_API_GRPC, m, protobuf_c_message_get_packed_size(msg),
                            &ggen_sink, g, &g->job, err, sizeof err);
    if (st) {
        ggen_free(g, 0);
        grpc_call_finish(call, st, err);
        return;
    }
    grpc_call_ref(call);
    grpc_call_set_data(call, g);
}

/* Whether a call that went away passed its deadline (a client resets the stream at its own
 * deadline, which runs a little ahead of ours) or was cancelled. */
static int past_deadline(grpc_call_t *call)
{
    int64_t dl = grpc_call_deadline(call);
    return dl && clock_now_ns() >= dl - 100000000;
}

static void generate_cancel(grpc_call_t *call)
{
    ggen_t *g = grpc_call_data(call);
    if (!g) return;
    grpc_call_set_data(call, NULL);
    ggen_free(g, past_deadline(call));
    grpc_call_unref(call);
}

/* HTTP/2 took the messages of request tag: their tokens are delivered. */
static void generate_taken(grpc_call_t *call, uint64_t tag, uint32_t units)
{
    ggen_t *g = grpc_call_data(call);
    if (g && g->serial == tag) inference_job_consumed(g->job, units);
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

/* The request id a GenerateStream request is answered under. */
static void stream_rid(grpc_call_t *call, gstream_t *gs, const char *given, char *rid, size_t n)
{
    if (given && *given)
        snprintf(rid, n, "%s", given);
    else
        snprintf(rid, n, "%.40s-%u", grpc_call_request_id(call), ++gs->seq);
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
    stream_rid(call, gs, NULL, rid, sizeof rid);
    ggen_t *g = ggen_new(inf, call, gs, m->request_id && *m->request_id ? m->request_id : rid);
    if (!g) {
        stream_error(call, rid, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    char err[512] = "";
    grpc_status_t st =
        inference_job_start(inf, INFERENCE_API_GRPC, m, protobuf_c_message_get_packed_size(msg),
                            &ggen_sink, g, &g->job, err, sizeof err);
    if (st) {
        stream_error(call, g->request_id, st, err);
        ggen_free(g, 0);
    }
}

/* A request of the stream whose strings are not valid UTF-8 (or hold a NUL): its own error. */
static void generate_stream_invalid(grpc_call_t *call, ProtobufCMessage *msg, const char *why)
{
    Inferd__V1__GenerateRequest *m = (Inferd__V1__GenerateRequest *)msg;
    gstream_t *gs = gstream_of(call);
    if (!gs) {
        grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    inference_t *inf = grpc_call_arg(call);
    count_request(inf, INFERENCE_API_GRPC, INFERD_STATUS_ERROR, "bad_input");
    /* the id itself may be what is invalid: then a generated one */
    char rid[64];
    int id_bad = strstr(why, "'request_id'") != NULL;
    stream_rid(call, gs, id_bad ? NULL : m->request_id, rid, sizeof rid);
    stream_error(call, rid, GRPC_STATUS_INVALID_ARGUMENT, why);
    if (gs->half_closed && !gs->gens) {
        grpc_call_finish(call, GRPC_STATUS_OK, NULL);
        stream_free(call, gs);
    }
}

static void stream_free(grpc_call_t *call, gstream_t *gs)
{
    int deadline = past_deadline(call);
    while (gs->gens)
        ggen_free(gs->gens, deadline);
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
    if (gs) stream_free(call, gs);
}

static void generate_stream_taken(grpc_call_t *call, uint64_t tag, uint32_t units)
{
    gstream_t *gs = grpc_call_data(call);
    for (ggen_t *g = gs ? gs->gens : NULL; g; g = g->next)
        if (g->serial == tag) {
            inference_job_consumed(g->job, units);
            return;
        }
}

/* ---- gRPC: Tokenize and GetModelInfo ---- */
static int tokenize_deliver(void *arg, const inference_out_t *o, size_t *bytes)
{
    grpc_call_t *call = arg;
    Inferd__V1__TokenizeResponse r = INFERD__V1__TOKENIZE_RESPONSE__INIT;
    r.n_token_ids = o->n_ids;
    r.token_ids = (uint32_t *)o->ids;
    *bytes = 0;
    grpc_call_set_data(call, NULL);
    grpc_call_send(call, &r.base);
    grpc_call_finish(call, GRPC_STATUS_OK, NULL);
    grpc_call_unref(call);
    return 0;
}

static void tokenize_fail(void *arg, grpc_status_t st, const char *msg)
{
    grpc_call_t *call = arg;
    grpc_call_set_data(call, NULL);
    grpc_call_finish(call, st, msg);
    grpc_call_unref(call);
}

static const inference_sink_t tokenize_sink = {.deliver = tokenize_deliver, .fail = tokenize_fail};

static void tokenize(grpc_call_t *call, ProtobufCMessage *msg)
{
    inference_t *inf = grpc_call_arg(call);
    inference_job_t *j;
    char err[512] = "";
    grpc_status_t st = inference_tokenize_start(inf, (Inferd__V1__TokenizeRequest *)msg,
                                                &tokenize_sink, call, &j, err, sizeof err);
    if (st) {
        grpc_call_finish(call, st, err);
        return;
    }
    grpc_call_ref(call);
    grpc_call_set_data(call, j);
}

static void tokenize_cancel(grpc_call_t *call)
{
    inference_job_t *j = grpc_call_data(call);
    if (!j) return;
    grpc_call_set_data(call, NULL);
    inference_job_cancel(j, 0);
    grpc_call_unref(call);
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
    const engine_model_info_t *in = &inf->info;
    Inferd__V1__ModelInfo r = INFERD__V1__MODEL_INFO__INIT;
    r.name = (char *)in->name;
    r.vocab_size = in->vocab_size;
    r.max_seq_len = in->max_seq_len;
    r.bos_token_id = in->bos_id;
    r.eos_token_id = in->eos_id;
    r.device = (char *)in->device;
    r.parameters = in->parameters;
    r.architecture = (char *)(in->architecture ? in->architecture : "");
    r.quantization = (char *)(in->quantization ? in->quantization : "");
    r.chat_template = (char *)(in->chat_template ? in->chat_template : "");
    r.context_size = in->context_size;
    r.n_eog_token_ids = in->n_eog;
    r.eog_token_ids = (uint32_t *)in->eog_ids;
    r.eot_token_id = in->eot_id;
    r.unk_token_id = in->unk_id;
    r.pad_token_id = in->pad_id;
    r.tokenizer = (char *)(in->tokenizer ? in->tokenizer : "");
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
    int rc = inference_request_from_proto(inf, m, &r, err, errlen);
    if (rc) return rc;
    inference_job_t *j = job_new(inf, INFERENCE_API_GRPC, NULL, NULL);
    if (!j) {
        inference_request_dispose(&r);
        return -ENOMEM;
    }
    j->done = done;
    j->done_arg = arg;
    r.flags |= ENGINE_REQ_CANARY;
    r.user = j;
    rc = engine_submit(inf->engine, &r, &j->req, NULL, err, errlen);
    inference_request_dispose(&r);
    if (rc) {
        free(j);
        if (rc == -EAGAIN) snprintf(err, errlen, "admission queue full");
        return rc;
    }
    inf->inflight++;
    inf->canaries_inflight++;
    j->next = inf->canaries;
    if (j->next) j->next->prev = j;
    inf->canaries = j;
    *out = j;
    return 0;
}

static void canary_cancel(void *impl, void *canary)
{
    (void)impl;
    job_free(canary); /* engine_req_free cancels: the slot is freed at the next step */
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
        int rc = engine_validate(inf->engine, &r, &why, msg, sizeof msg);
        inference_request_dispose(&r);
        if (rc) {
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
    if (cfg->model_name && *cfg->model_name) ec.model_name = cfg->model_name;
    ec.threads = (int)cfg->threads;
    ec.max_batch = (int)cfg->max_batch;
    ec.ctx_size = (int)cfg->ctx_size;
    ec.max_queued = (int)cfg->max_queued;
    ec.device = cfg->device, ec.cuda_streams = (int)cfg->cuda_streams, ec.dtype = cfg->dtype;
    ec.hugepages = cfg->hugepages;
    ec.kv_cache_type = cfg->kv_cache_type;
    ec.chat_template = cfg->chat_template && *cfg->chat_template ? cfg->chat_template : NULL;
    ec.manual_ack = 1;
    /* Prompts are rendered and tokenized on the engine's driver, never on the loop (issue 13
     * item 6): submit only checks the cheap bounds and copies the text. */
    ec.tokenize_in_engine = 1;
    ec.notify = notify;
    ec.notify_arg = inf;
    inf->wake = event_new(server_base(s), -1, 0, drain, inf);
    rc = -ENOMEM;
    if (!inf->wake) goto oom;
    char eerr[600];
    if ((rc = engine_new(&inf->engine, &ec, eerr, sizeof eerr))) {
        snprintf(err, errlen, "cannot start the engine for model %s: %s", ec.model_path, eerr);
        goto fail;
    }
    engine_model_info(inf->engine, &inf->info);
    log_info("engine", "device %s (%s); weights %s", inf->info.device, inf->info.device_note,
             inf->info.weights_note);
    const char *lv[] = {inf->info.name, inf->info.device};
    inf->inflight_s = metrics_series(inf->m->inflight, lv);
    inf->queued_s = metrics_series(inf->m->queued, lv);
    for (int a = 0; a < INFERENCE_API_COUNT; a++) {
        const char *la[] = {inf->info.name, inf->info.device, api_names[a]};
        const char *lm[] = {inf->info.name, api_names[a]};
        api_series_t *as = &inf->api[a];
        as->duration = metrics_series(inf->m->request_duration, la);
        as->ttft = metrics_series(inf->m->ttft, la);
        as->itl = metrics_series(inf->m->itl, la);
        as->in_tok = metrics_series(inf->m->input_tokens, la);
        as->out_tok = metrics_series(inf->m->output_tokens, la);
        as->out_total = metrics_series(inf->m->output_tokens_total, la);
        as->req_bytes = metrics_series(inf->m->request_bytes, lm);
        as->resp_bytes = metrics_series(inf->m->response_bytes, lm);
    }
    inf->preempted_s = metrics_series(inf->m->preempted, lv);
    inf->preemptions_s = metrics_series(inf->m->preemptions, lv);
    metrics_add_collector(server_registry(s), collect, inf);
    grpc_method_t proto[4] = {
        MROW("Generate", GRPC_SERVER_STREAMING, &inferd__v1__generate_request__descriptor,
             &inferd__v1__generate_response__descriptor, generate, .on_cancel = generate_cancel,
             .on_taken = generate_taken, .arg = inf),
        MROW("GenerateStream", GRPC_BIDI_STREAMING, &inferd__v1__generate_request__descriptor,
             &inferd__v1__generate_response__descriptor, generate_stream,
             .on_half_close = generate_stream_half_close, .on_cancel = generate_stream_cancel,
             .on_taken = generate_stream_taken, .on_invalid = generate_stream_invalid, .arg = inf),
        MROW("GetModelInfo", GRPC_UNARY, &inferd__v1__model_info_request__descriptor,
             &inferd__v1__model_info__descriptor, model_info, .arg = inf),
        MROW("Tokenize", GRPC_UNARY, &inferd__v1__tokenize_request__descriptor,
             &inferd__v1__tokenize_response__descriptor, tokenize, .on_cancel = tokenize_cancel,
             .arg = inf),
    };
    memcpy(inf->rows, proto, sizeof proto);
    /* Each string field bounded by what it is for (issue 13, item 3): every GenerateResponse
     * repeats request_id, so a 1 MiB id once cost 1 MiB per message; a prompt (or a chat
     * message) cannot be longer than the context's worth of the vocabulary's longest token (the
     * engine's early bound). */
    uint32_t ctx = inf->info.context_size ? inf->info.context_size : inf->info.max_seq_len;
    uint64_t prompt_max =
        (uint64_t)ctx * (inf->info.max_token_bytes ? inf->info.max_token_bytes : 1);
    uint32_t text_max = prompt_max > UINT32_MAX ? UINT32_MAX : (uint32_t)prompt_max;
    snprintf(inf->text_why, sizeof inf->text_why,
             "so many bytes cannot fit the context of %u tokens (a token covers at most %u bytes)",
             ctx, inf->info.max_token_bytes ? inf->info.max_token_bytes : 1);
    const grpc_field_limit_t gen[] = {
        {"request_id", INFERENCE_MAX_REQUEST_ID, 0, "every response repeats it"},
        {"model", INFERENCE_MAX_MODEL_NAME, 0, NULL},
        {"prompt", text_max, 0, inf->text_why},
        {"token_ids", 0, ctx, "the model's context"},
        {"stop.stop_token_ids", 0, 64, NULL},
        {"messages", 0, ENGINE_MAX_MESSAGES, NULL},
        {"messages.content", text_max, 0, inf->text_why},
        {"messages.role", 64, 0, NULL},
        {NULL, 0, 0, NULL},
    };
    _Static_assert(sizeof gen == sizeof inf->gen_limits, "gen_limits holds the table");
    memcpy(inf->gen_limits, gen, sizeof gen);
    const grpc_field_limit_t tok[] = {
        {"model", INFERENCE_MAX_MODEL_NAME, 0, NULL},
        {"prompt", text_max, 0, inf->text_why},
        {"messages", 0, ENGINE_MAX_MESSAGES, NULL},
        {"messages.content", text_max, 0, inf->text_why},
        {"messages.role", 64, 0, NULL},
        {NULL, 0, 0, NULL},
    };
    _Static_assert(sizeof tok == sizeof inf->tok_limits, "tok_limits holds the table");
    memcpy(inf->tok_limits, tok, sizeof tok);
    inf->info_limits[0] = (grpc_field_limit_t){"model", INFERENCE_MAX_MODEL_NAME, 0, NULL};
    inf->rows[0].limits = inf->rows[1].limits = inf->gen_limits;
    inf->rows[2].limits = inf->info_limits;
    inf->rows[3].limits = inf->tok_limits;
    if ((rc = server_register(s, inf->rows, 4))) {
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
    log_info("engine", "KV cache: %llu bytes (%.1f MiB, %s) for %u sequences x %u positions",
             (unsigned long long)inf->info.kv_cache_bytes,
             (double)inf->info.kv_cache_bytes / (1024.0 * 1024.0), inf->info.kv_cache_type,
             inf->info.kv_sequences, inf->info.context_size);
    log_info("engine", "chat template: %s",
             inf->info.chat_template ? inf->info.chat_template : inf->info.chat_template_note);
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
