/*
 * engine.c - request lifecycle and the continuous-batching scheduler.
 *
 * One driver thread (pool thread 0) loops: admit queued requests into free slots,
 * drop cancelled ones, build a batch of rows (one per decoding sequence plus up
 * to prefill_chunk prompt tokens), run the backend's batched forward, sample in
 * parallel, push events to the completion queue, and wake the reactor once.
 * Locks: smu guards the submission queue and the wake flag; cmu guards the
 * completion ring; lmu guards the list of live requests (leaf lock).
 */
#include "engine.h"
#include "gguf.h"
#include "internal.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_STOP_IDS 64

struct engine_req {
    engine_t *e;
    /* immutable after submit */
    int *prompt; /* (n_prompt) */
    int n_prompt;
    int max_gen; /* completion tokens allowed */
    int stop[MAX_STOP_IDS];
    int n_stop;
    bool ignore_eos;
    unsigned flags;
    void *user;
    sample_params_t sp;
    uint64_t submit_ns;
    struct deferred *deferred; /* tokenize_in_engine: the input the driver tokenizes */
    engine_invalid_t invalid;  /* why a deferred input was rejected (its ERROR event) */
    /* shared between threads */
    atomic_bool cancel;
    atomic_uint produced; /* TOKEN events made (driver) */
    atomic_uint acked;    /* tokens acknowledged (reactor) */
    atomic_ullong first_ns;
    /* driver only */
    rng_t rng;
    detok_t dt;
    stop_t stops; /* stop strings and the text they hold back */
    int slot;     /* -1 while queued */
    int pos;      /* positions already in the KV cache */
    int pending;  /* sampled token to feed next */
    int n_gen;
    bool finish_held; /* STALL fault: the last token went out, the finish is withheld */
    /* preemption: a paused request gives its slot and KV cache to waiting work and recomputes
     * its positions when it runs again (the sampler state is untouched, so the output is the
     * same as without the preemption) */
    int *hist;            /* (cap_hist) generated tokens, hist[i] fed at n_prompt + i */
    int n_hist, cap_hist; /* n_hist includes `pending` */
    bool hist_lost;       /* out of memory for hist: never preempted */
    int replay;           /* positions to recompute before decoding resumes (0: none) */
    engine_req_t *pnext;  /* parked list link (driver) */
    /* reactor only */
    int refs;                    /* engine + reactor */
    bool released;               /* reactor called engine_req_free */
    bool inq;                    /* in the admission queue (smu) */
    engine_req_t *qnext, *qprev; /* submission queue links (smu) */
    engine_req_t *lprev, *lnext; /* live list links (lmu) */
};

struct engine {
    engine_config_t cfg;
    char *name;
    const char *chat_name; /* the template chat requests render with, or NULL */
    char chat_note[320];   /* why there is none (the error chat requests get) */
    char *chat_text;       /* the model's tokenizer.chat_template, when it has one */
    model_t model;
    tokenizer_t tok;
    const backend_t *be;
    void *bctx;
    char device[32];        /* the instance's device ("cpu", "cuda:0") */
    char device_note[320];  /* how it was chosen */
    int kv_f16;             /* the KV cache holds fp16 (engine_config_t.kv_cache_type) */
    char weights_note[320]; /* how the CPU holds the weights (model_hugepages) */
    pool_t *pool;
    int threads, max_batch, max_queued, max_backlog, prefill_chunk, max_rows;

    pthread_t driver;
    bool driver_started;

    pthread_mutex_t smu;
    pthread_cond_t scv;
    engine_req_t *qhead, *qtail;
    int nqueued;
    engine_req_t *dropped; /* cancelled while queued: out of the queue, not yet finished */
    bool stop, kick;

    pthread_mutex_t cmu;
    engine_event_t *ev; /* ring (ev_cap) */
    size_t ev_head, ev_count, ev_cap;
    atomic_int notify_armed;

    pthread_mutex_t lmu;
    engine_req_t *live; /* every request not yet fully released */

    /* driver only */
    engine_req_t **slots; /* (max_batch) */
    engine_req_t *parked; /* preempted: paused, no slot, no KV cache */
    int n_parked;
    fwd_row_t *rows;       /* (max_rows) */
    engine_req_t **lreq;   /* (max_batch) request of each logits row */
    int *sampled;          /* (max_batch) */
    float *logits;         /* (max_batch, vocab) */
    prob_index_t *scratch; /* (max_batch, vocab) */
    bool pushed;           /* events pushed during this step */

    atomic_int fault;
    atomic_uint fault_arg;

    atomic_ullong st_queued, st_inflight, st_paused, st_tokens, st_steps, st_requests,
        st_last_token, st_last_step, st_step_ns_total, st_step_ns_last, st_parked, st_preemptions;
};

uint64_t engine_now_ns(void)
{
    return backend_now_ns();
}

const char *engine_finish_name(engine_finish_t f)
{
    switch (f) {
    case ENGINE_FINISH_LENGTH:
        return "length";
    case ENGINE_FINISH_EOS:
        return "eos";
    case ENGINE_FINISH_STOP:
        return "stop";
    case ENGINE_FINISH_CANCELLED:
        return "cancelled";
    default:
        return "none";
    }
}

const char *engine_invalid_name(engine_invalid_t w)
{
    switch (w) {
    case ENGINE_INVALID_EMPTY:
        return "empty";
    case ENGINE_INVALID_TOKEN:
        return "token_out_of_range";
    case ENGINE_INVALID_PROMPT_LONG:
        return "prompt_too_long";
    case ENGINE_INVALID_TEMPERATURE:
        return "bad_temperature";
    case ENGINE_INVALID_TOP_P:
        return "bad_top_p";
    case ENGINE_INVALID_MAX_TOKENS:
        return "max_tokens_too_large";
    case ENGINE_INVALID_STOP_IDS:
        return "too_many_stop_ids";
    case ENGINE_INVALID_STOP_STRINGS:
        return "bad_stop_strings";
    case ENGINE_INVALID_INPUT:
        return "bad_input";
    case ENGINE_INVALID_NO_TEMPLATE:
        return "no_chat_template";
    default:
        return "none";
    }
}

void engine_config_init(engine_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
}

void engine_request_init(engine_request_t *r)
{
    memset(r, 0, sizeof(*r));
    r->top_p = 1.0f;
}

const uint32_t *engine_req_prompt(const engine_req_t *req, size_t *n)
{
    *n = req->prompt ? (size_t)req->n_prompt : 0;
    return (const uint32_t *)req->prompt; /* ids are never negative */
}

void *engine_req_user(const engine_req_t *req)
{
    return req->user;
}

/* ---- request lifetime ------------------------------------------------------- */

static void deferred_free(struct deferred *d);

static void req_destroy(engine_req_t *r)
{
    free(r->prompt);
    free(r->hist);
    deferred_free(r->deferred);
    stop_dispose(&r->stops);
    free(r);
}

static void live_remove(engine_t *e, engine_req_t *r)
{
    pthread_mutex_lock(&e->lmu);
    if (r->lprev)
        r->lprev->lnext = r->lnext;
    else
        e->live = r->lnext;
    if (r->lnext) r->lnext->lprev = r->lprev;
    pthread_mutex_unlock(&e->lmu);
}

/* reactor thread only */
static void req_unref(engine_t *e, engine_req_t *r)
{
    if (--r->refs > 0) return;
    live_remove(e, r);
    req_destroy(r);
}

static void wake_driver(engine_t *e)
{
    pthread_mutex_lock(&e->smu);
    e->kick = true;
    pthread_cond_signal(&e->scv);
    pthread_mutex_unlock(&e->smu);
}

/* Unlinks q from the admission queue (smu held). */
static void queue_unlink(engine_t *e, engine_req_t *q)
{
    if (q->qprev)
        q->qprev->qnext = q->qnext;
    else
        e->qhead = q->qnext;
    if (q->qnext)
        q->qnext->qprev = q->qprev;
    else
        e->qtail = q->qprev;
    q->qnext = q->qprev = NULL;
    q->inq = false;
    e->nqueued--;
    atomic_store(&e->st_queued, (uint64_t)e->nqueued);
}

int engine_cancel(engine_t *e, engine_req_t *req)
{
    if (!req || atomic_exchange(&req->cancel, true)) return 0;
    pthread_mutex_lock(&e->smu);
    /* A cancelled request leaves the admission queue now, not at the driver's next step:
     * clients that reset their streams must not keep others out of a full queue. The driver
     * still ends it (its final event) from the dropped list. */
    if (req->inq) {
        queue_unlink(e, req);
        req->qnext = e->dropped;
        e->dropped = req;
    }
    e->kick = true;
    pthread_cond_signal(&e->scv);
    pthread_mutex_unlock(&e->smu);
    return 0;
}

void engine_req_free(engine_t *e, engine_req_t *req)
{
    if (!req) return;
    if (req->released) return;
    req->released = true;
    engine_cancel(e, req);
    req_unref(e, req);
}

/* More acknowledged than produced (a caller acking ahead) is no backlog, not a wrapped
 * unsigned difference that would pause the request for good. */
static bool is_paused(const engine_t *e, const engine_req_t *r)
{
    unsigned p = atomic_load_explicit(&r->produced, memory_order_relaxed);
    unsigned a = atomic_load_explicit(&r->acked, memory_order_relaxed);
    return p > a && p - a >= (unsigned)e->max_backlog;
}

void engine_req_consumed(engine_t *e, engine_req_t *req, uint32_t n)
{
    if (!req || !n) return;
    bool was = is_paused(e, req);
    atomic_fetch_add(&req->acked, n);
    if (was) wake_driver(e);
}

/* ---- completion queue ----------------------------------------------------------- */

static engine_event_t *ev_push(engine_t *e)
{
    if (e->ev_count == e->ev_cap) {
        size_t ncap = e->ev_cap ? e->ev_cap * 2 : 64;
        engine_event_t *n = malloc(ncap * sizeof(*n));
        if (!n) return NULL;
        for (size_t i = 0; i < e->ev_count; i++)
            n[i] = e->ev[(e->ev_head + i) % e->ev_cap];
        free(e->ev);
        e->ev = n;
        e->ev_cap = ncap;
        e->ev_head = 0;
    }
    engine_event_t *ev = &e->ev[(e->ev_head + e->ev_count) % e->ev_cap];
    e->ev_count++;
    return ev;
}

/* Queue one event; called by the driver with cmu NOT held. Final events that cannot
 * be queued (out of memory) are retried by spinning: the reactor must see them. */
static void emit(engine_t *e, engine_req_t *r, engine_ev_type_t type, uint32_t token,
                 engine_finish_t fin, const char *text, size_t len)
{
    uint64_t now = engine_now_ns();
    for (;;) {
        pthread_mutex_lock(&e->cmu);
        engine_event_t *ev = ev_push(e);
        if (ev) {
            ev->type = type;
            ev->req = r;
            ev->user = r->user;
            ev->token = token;
            ev->finish = fin;
            ev->invalid = type == ENGINE_EV_ERROR ? r->invalid : ENGINE_INVALID_NONE;
            ev->prompt_tokens = (uint32_t)r->n_prompt;
            ev->completion_tokens = (uint32_t)r->n_gen;
            ev->t_ns = now;
            ev->submit_ns = r->submit_ns;
            ev->first_token_ns = atomic_load(&r->first_ns);
            if (len >= ENGINE_TEXT_MAX) len = ENGINE_TEXT_MAX - 1;
            if (len) memcpy(ev->text, text, len);
            ev->text[len] = 0;
            ev->len = len;
            pthread_mutex_unlock(&e->cmu);
            e->pushed = true;
            return;
        }
        pthread_mutex_unlock(&e->cmu);
        if (type == ENGINE_EV_TOKEN) return;
        usleep(1000);
    }
}

static void notify_if_needed(engine_t *e)
{
    if (!e->pushed) return;
    e->pushed = false;
    if (e->cfg.notify && atomic_exchange(&e->notify_armed, 0) == 1)
        e->cfg.notify(e->cfg.notify_arg);
}

int engine_poll(engine_t *e, engine_event_t *out, int max)
{
    atomic_store(&e->notify_armed, 1);
    int n = 0;
    pthread_mutex_lock(&e->cmu);
    while (n < max && e->ev_count > 0) {
        engine_event_t *ev = &e->ev[e->ev_head];
        e->ev_head = (e->ev_head + 1) % e->ev_cap;
        e->ev_count--;
        engine_req_t *r = ev->req;
        bool final = ev->type != ENGINE_EV_TOKEN;
        /* only the used part of the text: an event is ~4 KiB but a token's text a few bytes */
        if (!r->released) memcpy(&out[n++], ev, offsetof(engine_event_t, text) + ev->len + 1);
        if (!final && !e->cfg.manual_ack) {
            bool was = is_paused(e, r);
            atomic_fetch_add(&r->acked, 1);
            if (was) {
                pthread_mutex_unlock(&e->cmu);
                wake_driver(e);
                pthread_mutex_lock(&e->cmu);
            }
        }
        if (final) req_unref(e, r);
    }
    pthread_mutex_unlock(&e->cmu);
    return n;
}

/* ---- validation and submission ---------------------------------------------------- */

/* A request's input, from the caller's request (synchronous) or the engine's copy (deferred). */
typedef struct {
    const uint32_t *ids;
    size_t n_ids;
    const char *prompt;
    bool parse_special;
    const engine_chat_msg_t *msgs;
    size_t n_msgs;
    uint32_t max_tokens;
} input_t;

static input_t input_of(const engine_request_t *r)
{
    input_t in = {r->token_ids, r->n_tokens,   r->prompt,    r->parse_special,
                  r->messages,  r->n_messages, r->max_tokens};
    if (!in.ids) in.n_ids = 0;
    if (!in.msgs) in.n_msgs = 0;
    return in;
}

static int invalid(engine_invalid_t *why, engine_invalid_t w, int rc)
{
    if (why) *why = w;
    return rc;
}

/* Everything that needs no tokenizing: sampling values, stop ids and strings, which input is
 * given, token ids, and the early bound (a token covers at most max_token_len bytes, so a text
 * of more than context x that many bytes cannot fit). */
static int check_cheap(const engine_t *e, const engine_request_t *r, engine_invalid_t *why,
                       char *msg, size_t msglen)
{
    const model_config_t *c = &e->model.v.c;
    input_t in = input_of(r);
    if (!(r->temperature >= 0.0f) || !isfinite(r->temperature))
        return invalid(why, ENGINE_INVALID_TEMPERATURE,
                       errorf(msg, msglen, -EINVAL, "temperature %g must be a finite value >= 0",
                              (double)r->temperature));
    if (!(r->top_p > 0.0f && r->top_p <= 1.0f))
        return invalid(
            why, ENGINE_INVALID_TOP_P,
            errorf(msg, msglen, -EINVAL, "top_p %g must be in (0, 1]", (double)r->top_p));
    if (r->n_stop > MAX_STOP_IDS)
        return invalid(why, ENGINE_INVALID_STOP_IDS,
                       errorf(msg, msglen, -EINVAL, "%zu stop_token_ids given, at most %d allowed",
                              r->n_stop, MAX_STOP_IDS));
    if (r->n_stop_strs &&
        (!r->stop_strs || stop_validate(r->stop_strs, r->n_stop_strs, msg, msglen) < 0)) {
        if (!r->stop_strs) errorf(msg, msglen, -EINVAL, "stop strings missing");
        return invalid(why, ENGINE_INVALID_STOP_STRINGS, -EINVAL);
    }
    bool has_prompt = in.prompt && in.prompt[0];
    int given = (in.n_ids > 0) + has_prompt + (in.n_msgs > 0);
    if (given == 0)
        return invalid(
            why, ENGINE_INVALID_EMPTY,
            errorf(msg, msglen, -EINVAL, "request has no token_ids, no prompt and no messages"));
    if (given > 1)
        return invalid(
            why, ENGINE_INVALID_INPUT,
            errorf(msg, msglen, -EINVAL, "give exactly one of token_ids, prompt and messages"));
    size_t bytes = 0;
    if (in.n_ids > 0) {
        if (in.n_ids >= (size_t)c->seq_len)
            return invalid(why, ENGINE_INVALID_PROMPT_LONG,
                           errorf(msg, msglen, -EINVAL,
                                  "prompt has %zu tokens but the context is %d tokens (at most %d "
                                  "leave room for output)",
                                  in.n_ids, c->seq_len, c->seq_len - 1));
        for (size_t i = 0; i < in.n_ids; i++) {
            if (in.ids[i] >= (uint32_t)c->vocab_size)
                return invalid(why, ENGINE_INVALID_TOKEN,
                               errorf(msg, msglen, -EINVAL,
                                      "token_ids[%zu] = %u is outside the vocabulary (size %d)", i,
                                      in.ids[i], c->vocab_size));
        }
        if (r->max_tokens > (uint32_t)(c->seq_len - (int)in.n_ids))
            return invalid(why, ENGINE_INVALID_MAX_TOKENS,
                           errorf(msg, msglen, -EINVAL,
                                  "max_tokens %u exceeds the context: %zu prompt tokens leave room "
                                  "for %d",
                                  r->max_tokens, in.n_ids, c->seq_len - (int)in.n_ids));
        return 0;
    }
    if (has_prompt) {
        bytes = strlen(in.prompt);
    } else {
        if (in.n_msgs > ENGINE_MAX_MESSAGES)
            return invalid(why, ENGINE_INVALID_INPUT,
                           errorf(msg, msglen, -EINVAL, "%zu messages given, at most %d allowed",
                                  in.n_msgs, ENGINE_MAX_MESSAGES));
        for (size_t i = 0; i < in.n_msgs; i++) {
            if (!in.msgs[i].role || !in.msgs[i].role[0] || !in.msgs[i].content)
                return invalid(why, ENGINE_INVALID_INPUT,
                               errorf(msg, msglen, -EINVAL, "messages[%zu] has no %s", i,
                                      in.msgs[i].role && in.msgs[i].role[0] ? "content" : "role"));
            bytes += strlen(in.msgs[i].content);
        }
        if (!e->chat_name)
            return invalid(why, ENGINE_INVALID_NO_TEMPLATE,
                           errorf(msg, msglen, -EINVAL, "%s", e->chat_note));
    }
    if (bytes / (size_t)e->tok.max_token_len >= (size_t)c->seq_len)
        return invalid(why, ENGINE_INVALID_PROMPT_LONG,
                       errorf(msg, msglen, -EINVAL,
                              "prompt of %zu bytes cannot fit the context of %d tokens (a token "
                              "covers at most %d bytes)",
                              bytes, c->seq_len, e->tok.max_token_len));
    return 0;
}

/* Render and tokenize a text input, then the length checks. On success *toks is malloc'd. */
static int tokenize_input(const engine_t *e, const input_t *in, int **toks, int *ntoks,
                          int *max_gen, engine_invalid_t *why, char *msg, size_t msglen)
{
    const model_config_t *c = &e->model.v.c;
    char *rendered = NULL;
    const char *text = in->prompt;
    unsigned flags = TOK_ADD_SPECIAL | (in->parse_special ? TOK_PARSE_SPECIAL : 0);
    int *t = NULL, n = 0;
    if (in->n_ids > 0) {
        n = (int)in->n_ids;
        t = malloc((size_t)n * sizeof(int));
        if (!t) return errorf(msg, msglen, -ENOMEM, "out of memory");
        for (int i = 0; i < n; i++)
            t[i] = (int)in->ids[i];
    } else {
        if (in->n_msgs > 0) {
            int rc = engine_render_chat(e, in->msgs, in->n_msgs, &rendered, why, msg, msglen);
            if (rc < 0) return rc;
            text = rendered;
            flags = TOK_ADD_SPECIAL | TOK_PARSE_SPECIAL; /* the template's markers are tokens */
        }
        size_t len = strlen(text);
        /* at most 3 tokens per byte (an unknown space escapes to 3 byte tokens) */
        t = malloc((3 * len + 8) * sizeof(int));
        if (!t) {
            free(rendered);
            return errorf(msg, msglen, -ENOMEM, "out of memory");
        }
        n = tokenizer_encode(&e->tok, text, len, flags, t, 3 * len + 8);
        free(rendered);
        if (n < 0) {
            free(t);
            return errorf(msg, msglen, n, "out of memory tokenizing the prompt");
        }
        if (n == 0) {
            free(t);
            return invalid(why, ENGINE_INVALID_EMPTY,
                           errorf(msg, msglen, -EINVAL, "the prompt tokenizes to nothing"));
        }
    }
    if (n >= c->seq_len) {
        free(t);
        return invalid(why, ENGINE_INVALID_PROMPT_LONG,
                       errorf(msg, msglen, -EINVAL,
                              "prompt has %d tokens but the context is %d tokens (at most %d "
                              "leave room for output)",
                              n, c->seq_len, c->seq_len - 1));
    }
    int room = c->seq_len - n;
    if (in->max_tokens > (uint32_t)room) {
        free(t);
        return invalid(why, ENGINE_INVALID_MAX_TOKENS,
                       errorf(msg, msglen, -EINVAL,
                              "max_tokens %u exceeds the context: %d prompt tokens leave room "
                              "for %d",
                              in->max_tokens, n, room));
    }
    *toks = t;
    *ntoks = n;
    *max_gen = in->max_tokens ? (int)in->max_tokens : room;
    return 0;
}

/* Validate r; on success *toks (malloc'd) holds the prompt ids. */
static int prepare(const engine_t *e, const engine_request_t *r, engine_invalid_t *why, char *msg,
                   size_t msglen, int **toks, int *ntoks, int *max_gen)
{
    if (why) *why = ENGINE_INVALID_NONE;
    int rc = check_cheap(e, r, why, msg, msglen);
    if (rc == 0) {
        input_t in = input_of(r);
        rc = tokenize_input(e, &in, toks, ntoks, max_gen, why, msg, msglen);
    }
    if (rc == 0 && msg && msglen) msg[0] = 0;
    return rc;
}

int engine_validate(const engine_t *e, const engine_request_t *r, engine_invalid_t *why, char *msg,
                    size_t msglen)
{
    int *toks = NULL, n, max_gen;
    int rc = prepare(e, r, why, msg, msglen, &toks, &n, &max_gen);
    free(toks);
    return rc;
}

int engine_render_chat(const engine_t *e, const engine_chat_msg_t *msgs, size_t n, char **out,
                       engine_invalid_t *why, char *msg, size_t msglen)
{
    *out = NULL;
    if (!e->chat_name)
        return invalid(why, ENGINE_INVALID_NO_TEMPLATE,
                       errorf(msg, msglen, -EINVAL, "%s", e->chat_note));
    int rc = chat_render(e->chat_name, (const chat_msg_t *)msgs, n, true, out, msg, msglen);
    if (rc == -EINVAL) return invalid(why, ENGINE_INVALID_INPUT, rc);
    return rc;
}

int engine_tokenize_request(const engine_t *e, const engine_request_t *r, uint32_t **out, size_t *n,
                            engine_invalid_t *why, char *msg, size_t msglen)
{
    *out = NULL;
    *n = 0;
    int *toks = NULL, k = 0, max_gen;
    int rc = prepare(e, r, why, msg, msglen, &toks, &k, &max_gen);
    if (rc < 0) return rc;
    uint32_t *ids = malloc((size_t)k * sizeof(*ids));
    if (!ids) {
        free(toks);
        return errorf(msg, msglen, -ENOMEM, "out of memory");
    }
    for (int i = 0; i < k; i++)
        ids[i] = (uint32_t)toks[i];
    free(toks);
    *out = ids;
    *n = (size_t)k;
    return 0;
}

/* The deferred input a tokenize_in_engine request carries to the driver. */
typedef struct deferred {
    char *prompt;
    bool parse_special;
    engine_chat_msg_t *msgs; /* (n_msgs) role and content strdup'ed */
    size_t n_msgs;
    uint32_t max_tokens;
} deferred_t;

static void deferred_free(deferred_t *d)
{
    if (!d) return;
    free(d->prompt);
    for (size_t i = 0; i < d->n_msgs; i++) {
        free((char *)d->msgs[i].role);
        free((char *)d->msgs[i].content);
    }
    free(d->msgs);
    free(d);
}

static deferred_t *deferred_copy(const engine_request_t *r)
{
    deferred_t *d = calloc(1, sizeof(*d));
    if (!d) return NULL;
    d->parse_special = r->parse_special;
    d->max_tokens = r->max_tokens;
    if (r->prompt && r->prompt[0]) {
        if (!(d->prompt = strdup(r->prompt))) goto fail;
        return d;
    }
    d->msgs = calloc(r->n_messages, sizeof(*d->msgs));
    if (!d->msgs) goto fail;
    for (size_t i = 0; i < r->n_messages; i++, d->n_msgs++) {
        d->msgs[i].role = strdup(r->messages[i].role);
        d->msgs[i].content = strdup(r->messages[i].content);
        if (!d->msgs[i].role || !d->msgs[i].content) {
            d->n_msgs++;
            goto fail;
        }
    }
    return d;
fail:
    deferred_free(d);
    return NULL;
}

int engine_submit(engine_t *e, const engine_request_t *r, engine_req_t **out, engine_invalid_t *why,
                  char *msg, size_t msglen)
{
    int *toks = NULL, n = 0, max_gen = 0, rc;
    deferred_t *def = NULL;
    bool defer = e->cfg.tokenize_in_engine && r->n_tokens == 0;
    if (defer) {
        if (why) *why = ENGINE_INVALID_NONE;
        rc = check_cheap(e, r, why, msg, msglen);
        if (rc == 0 && !(def = deferred_copy(r)))
            rc = errorf(msg, msglen, -ENOMEM, "out of memory");
    } else {
        rc = prepare(e, r, why, msg, msglen, &toks, &n, &max_gen);
    }
    if (rc < 0) return rc;
    engine_req_t *q = calloc(1, sizeof(*q));
    char err[128];
    if (!q || stop_init(&q->stops, r->stop_strs, r->n_stop_strs, err, sizeof err) < 0) {
        free(toks);
        deferred_free(def);
        free(q);
        return errorf(msg, msglen, -ENOMEM, "out of memory");
    }
    q->e = e;
    q->prompt = toks;
    q->n_prompt = n;
    q->max_gen = max_gen;
    q->deferred = def;
    q->n_stop = (int)r->n_stop;
    for (size_t i = 0; i < r->n_stop; i++)
        q->stop[i] = (int)r->stop_ids[i];
    q->ignore_eos = r->ignore_eos;
    q->flags = r->flags;
    q->user = r->user;
    q->sp.temperature = r->temperature;
    q->sp.top_p = r->top_p;
    q->sp.top_k = r->top_k > (uint32_t)e->model.v.c.vocab_size ? 0 : (int)r->top_k;
    q->submit_ns = engine_now_ns();
    q->slot = -1;
    q->refs = 2;
    rng_seed(&q->rng, r->seed);
    if (!def) detok_init(&q->dt, toks[n - 1]);

    pthread_mutex_lock(&e->smu);
    if (e->stop) {
        pthread_mutex_unlock(&e->smu);
        req_destroy(q);
        return errorf(msg, msglen, -ESHUTDOWN, "engine is shutting down");
    }
    if (e->nqueued >= e->max_queued) {
        pthread_mutex_unlock(&e->smu);
        req_destroy(q);
        return errorf(msg, msglen, -EAGAIN, "admission queue full (%d requests waiting)",
                      e->max_queued);
    }
    pthread_mutex_lock(&e->lmu);
    q->lnext = e->live;
    if (e->live) e->live->lprev = q;
    e->live = q;
    pthread_mutex_unlock(&e->lmu);
    q->qprev = e->qtail;
    if (e->qtail)
        e->qtail->qnext = q;
    else
        e->qhead = q;
    e->qtail = q;
    q->inq = true;
    e->nqueued++;
    atomic_store(&e->st_queued, (uint64_t)e->nqueued);
    e->kick = true;
    pthread_cond_signal(&e->scv);
    pthread_mutex_unlock(&e->smu);
    *out = q;
    return 0;
}

/* Driver: tokenize a deferred request before it takes its slot. Returns 0, or fails the request
 * (ERROR event with `invalid` set) and returns -1. */
static void fail_req(engine_t *e, engine_req_t *r, const char *msg);

static int admit_tokenize(engine_t *e, engine_req_t *q)
{
    deferred_t *d = q->deferred;
    if (!d) return 0;
    input_t in = {NULL, 0, d->prompt, d->parse_special, d->msgs, d->n_msgs, d->max_tokens};
    char msg[ENGINE_TEXT_MAX];
    engine_invalid_t w = ENGINE_INVALID_NONE;
    int rc = tokenize_input(e, &in, &q->prompt, &q->n_prompt, &q->max_gen, &w, msg, sizeof msg);
    q->deferred = NULL;
    deferred_free(d);
    if (rc < 0) {
        q->invalid = w;
        fail_req(e, q, msg);
        return -1;
    }
    detok_init(&q->dt, q->prompt[q->n_prompt - 1]);
    return 0;
}

int engine_tokenize(const engine_t *e, const char *text, bool bos, uint32_t *out, size_t max)
{
    if (!text) return -EINVAL;
    size_t len = strlen(text);
    int *t = malloc((3 * len + 8) * sizeof(int));
    if (!t) return -ENOMEM;
    int n = tokenizer_encode(&e->tok, text, len, bos ? TOK_ADD_SPECIAL : 0, t, 3 * len + 8);
    for (int i = 0; i < n && (size_t)i < max; i++)
        out[i] = (uint32_t)t[i];
    free(t);
    return n;
}

/* ---- the driver ------------------------------------------------------------------ */

/* A request's last step: its slot and KV cache go back, it counts as done. */
static void end_req(engine_t *e, engine_req_t *r)
{
    if (r->slot >= 0) {
        e->be->seq_free(e->bctx, r->slot);
        e->slots[r->slot] = NULL;
        r->slot = -1;
    }
    atomic_fetch_add(&e->st_requests, 1);
}

static void finish(engine_t *e, engine_req_t *r, engine_finish_t why)
{
    /* the end of the text: an unfinished character (as U+FFFD) and what stop strings held */
    char tail[8], buf[2 * STOP_MAX_BYTES + 16];
    size_t k = detok_flush(&r->dt, tail, sizeof(tail)), n = 0;
    if (!r->stops.hit) {
        n = stop_feed(&r->stops, tail, k, buf, sizeof buf);
        if (r->stops.hit)
            why = ENGINE_FINISH_STOP;
        else
            n += stop_flush(&r->stops, buf + n, sizeof buf - n);
    }
    end_req(e, r);
    emit(e, r, ENGINE_EV_FINISHED, 0, why, buf, n);
}

/* FINISHED(STOP) carrying the text that preceded a stop string. */
static void emit_finish_text(engine_t *e, engine_req_t *r, const char *text, size_t len)
{
    end_req(e, r);
    emit(e, r, ENGINE_EV_FINISHED, 0, ENGINE_FINISH_STOP, text, len);
}

static void fail_req(engine_t *e, engine_req_t *r, const char *msg)
{
    end_req(e, r);
    emit(e, r, ENGINE_EV_ERROR, 0, ENGINE_FINISH_NONE, msg, strlen(msg));
}

typedef struct {
    engine_t *e;
    int n;
} sample_job_t;

static void sample_run(void *arg, int tid, int nth)
{
    sample_job_t *j = arg;
    engine_t *e = j->e;
    int V = e->model.v.c.vocab_size;
    for (int i = tid; i < j->n; i += nth) {
        engine_req_t *r = e->lreq[i];
        e->sampled[i] =
            sample_token(e->logits + (size_t)i * V, V, &r->sp, &r->rng, e->scratch + (size_t)i * V);
    }
}

static void accept_token(engine_t *e, engine_req_t *r, int tok)
{
    if (!r->ignore_eos && tokenizer_is_eog(&e->tok, tok)) {
        finish(e, r, ENGINE_FINISH_EOS);
        return;
    }
    for (int i = 0; i < r->n_stop; i++) {
        if (r->stop[i] == tok) {
            finish(e, r, ENGINE_FINISH_STOP);
            return;
        }
    }
    uint64_t now = engine_now_ns();
    r->n_gen++;
    if (r->n_gen == 1) atomic_store(&r->first_ns, now);
    char piece[ENGINE_TEXT_MAX - STOP_MAX_BYTES - 8], text[ENGINE_TEXT_MAX];
    size_t plen = detok_push(&r->dt, &e->tok, tok, piece, sizeof(piece));
    size_t len = stop_feed(&r->stops, piece, plen, text, sizeof(text));
    if (r->stops.hit) {
        /* the text before the stop string ends the response; the token is not emitted */
        r->n_gen--;
        if (r->n_gen == 0) atomic_store(&r->first_ns, 0);
        atomic_store(&e->st_last_token, now);
        emit_finish_text(e, r, text, len);
        return;
    }
    atomic_fetch_add(&r->produced, 1);
    emit(e, r, ENGINE_EV_TOKEN, (uint32_t)tok, ENGINE_FINISH_NONE, text, len);
    atomic_fetch_add(&e->st_tokens, 1);
    atomic_store(&e->st_last_token, now);
    if (r->n_gen >= r->max_gen) {
        /* A stalled stream delivers its chunk and then never completes: a health check that
         * judges only the first chunk passes, one that waits for the finish does not. */
        if (atomic_load(&e->fault) == ENGINE_FAULT_STALL)
            r->finish_held = true;
        else
            finish(e, r, ENGINE_FINISH_LENGTH);
        return;
    }
    r->pending = tok;
    /* kept for a replay after a preemption (the KV positions it is fed at) */
    if (r->n_hist == r->cap_hist && !r->hist_lost) {
        int cap = r->cap_hist ? 2 * r->cap_hist : 64;
        int *h = realloc(r->hist, (size_t)cap * sizeof(*h));
        if (h) {
            r->hist = h;
            r->cap_hist = cap;
        } else {
            r->hist_lost = true;
        }
    }
    if (!r->hist_lost) r->hist[r->n_hist++] = tok;
}

/* The token at KV position pos of r: the prompt, then what it generated. */
static int token_at(const engine_req_t *r, int pos)
{
    return pos < r->n_prompt ? r->prompt[pos] : r->hist[pos - r->n_prompt];
}

/* One scheduler step over the current slots. Returns true if a forward ran. */
static bool step(engine_t *e, int fault)
{
    int V = e->model.v.c.vocab_size;
    int nrows = 0, nl = 0, budget = e->prefill_chunk, paused = 0, inflight = 0;
    for (int s = 0; s < e->max_batch; s++) {
        engine_req_t *r = e->slots[s];
        if (!r) continue;
        if (atomic_load(&r->cancel)) {
            finish(e, r, ENGINE_FINISH_CANCELLED);
            continue;
        }
        if (fault == ENGINE_FAULT_ERROR) {
            fail_req(e, r, "engine fault injected: request failed");
            continue;
        }
        inflight++;
        if (r->finish_held) {
            if (fault != ENGINE_FAULT_STALL) finish(e, r, ENGINE_FINISH_LENGTH);
            continue;
        }
        if (is_paused(e, r)) {
            paused++;
            continue;
        }
        if (fault == ENGINE_FAULT_STALL && r->n_gen >= 1) continue;
        /* the prompt, or after a preemption every position it had (then the next token is
         * already sampled: `pending` goes next, no logits here) */
        int target = r->replay ? r->replay : r->n_prompt;
        if (r->pos < target) {
            int k = target - r->pos;
            if (k > budget) k = budget;
            if (k == 0) continue;
            budget -= k;
            for (int i = 0; i < k; i++) {
                fwd_row_t *row = &e->rows[nrows++];
                row->slot = s;
                row->pos = r->pos + i;
                row->token = token_at(r, r->pos + i);
                row->logits_row = -1;
            }
            r->pos += k;
            if (r->pos == target && r->replay) {
                r->replay = 0;
            } else if (r->pos == target) {
                e->rows[nrows - 1].logits_row = nl;
                e->lreq[nl++] = r;
            }
        } else {
            fwd_row_t *row = &e->rows[nrows++];
            row->slot = s;
            row->pos = r->pos++;
            row->token = r->pending;
            row->logits_row = nl;
            e->lreq[nl++] = r;
        }
    }
    atomic_store(&e->st_inflight, (uint64_t)inflight);
    atomic_store(&e->st_paused, (uint64_t)(paused + e->n_parked));
    if (nrows == 0) return false;
    if (fault == ENGINE_FAULT_SLOW) {
        unsigned ms = atomic_load(&e->fault_arg);
        if (ms) usleep(ms * 1000u);
    }
    uint64_t t0 = engine_now_ns();
    int rc = e->be->forward(e->bctx, e->rows, nrows, e->logits);
    uint64_t t1 = engine_now_ns();
    atomic_fetch_add(&e->st_steps, 1);
    atomic_store(&e->st_last_step, t1);
    atomic_fetch_add(&e->st_step_ns_total, t1 - t0);
    atomic_store(&e->st_step_ns_last, t1 - t0);
    if (rc < 0) {
        char msg[ENGINE_TEXT_MAX];
        const char *why = e->be->error ? e->be->error(e->bctx) : NULL;
        snprintf(msg, sizeof msg, "engine forward pass failed on %s%s%.400s", e->device,
                 why && *why ? ": " : "", why ? why : "");
        for (int i = 0; i < nrows; i++) {
            engine_req_t *r = e->slots[e->rows[i].slot];
            if (r) fail_req(e, r, msg);
        }
        return true;
    }
    sample_job_t sj = {e, nl};
    if (nl > 1)
        pool_run(e->pool, sample_run, &sj);
    else if (nl == 1)
        sample_run(&sj, 0, 1);
    (void)V;
    for (int i = 0; i < nl; i++)
        accept_token(e, e->lreq[i], e->sampled[i]);
    return true;
}

static bool has_runnable(engine_t *e, int fault)
{
    for (int s = 0; s < e->max_batch; s++) {
        engine_req_t *r = e->slots[s];
        if (!r) continue;
        if (atomic_load(&r->cancel) || fault == ENGINE_FAULT_ERROR) return true;
        if (r->finish_held) {
            if (fault != ENGINE_FAULT_STALL) return true;
            continue;
        }
        if (is_paused(e, r)) continue;
        if (fault == ENGINE_FAULT_STALL && r->n_gen >= 1) continue;
        return true;
    }
    return false;
}

/* Preemption: a paused request (its client does not read) gives its slot and KV cache to work
 * that waits for one, and goes on the parked list; when its client reads again and a slot is
 * free it recomputes its positions (replay) and goes on where it stopped. */
static void preempt(engine_t *e, engine_req_t *r)
{
    e->be->seq_free(e->bctx, r->slot);
    e->slots[r->slot] = NULL;
    r->slot = -1;
    if (r->pos > r->replay) r->replay = r->pos; /* preempted again while replaying: same target */
    r->pos = 0;
    r->pnext = NULL;
    engine_req_t **pp = &e->parked; /* first parked, first resumed */
    while (*pp)
        pp = &(*pp)->pnext;
    *pp = r;
    e->n_parked++;
    atomic_store(&e->st_parked, (uint64_t)e->n_parked);
    atomic_fetch_add(&e->st_preemptions, 1);
}

static bool preemptible(const engine_t *e, const engine_req_t *r)
{
    return r && !atomic_load(&r->cancel) && !r->finish_held && !r->hist_lost &&
           (r->pos >= r->n_prompt || r->replay) && is_paused(e, r);
}

/* Frees up to `want` slots held by paused requests. */
static void preempt_paused(engine_t *e, int want)
{
    for (int s = 0; s < e->max_batch && want > 0; s++) {
        if (preemptible(e, e->slots[s])) {
            preempt(e, e->slots[s]);
            want--;
        }
    }
}

/* Parked requests: a cancelled one ends; one whose client read again takes a free slot (before
 * the admission queue: it was admitted first) and replays. Returns how many stay parked though
 * ready to run (they wait for a slot). */
static int unpark(engine_t *e, int fault)
{
    int ready = 0;
    for (engine_req_t **pp = &e->parked; *pp;) {
        engine_req_t *r = *pp;
        bool cancel = atomic_load(&r->cancel);
        int s = -1;
        if (!cancel && (fault == ENGINE_FAULT_HANG || is_paused(e, r))) {
            pp = &r->pnext;
            continue;
        }
        if (!cancel) {
            for (int i = 0; i < e->max_batch && s < 0; i++)
                if (!e->slots[i]) s = i;
            if (s < 0) {
                ready++;
                pp = &r->pnext;
                continue;
            }
        }
        *pp = r->pnext;
        r->pnext = NULL;
        e->n_parked--;
        atomic_store(&e->st_parked, (uint64_t)e->n_parked);
        if (cancel) {
            finish(e, r, ENGINE_FINISH_CANCELLED);
        } else if (e->be->seq_alloc(e->bctx, s, r->n_prompt + r->max_gen - 1) < 0) {
            fail_req(e, r, "out of memory for the KV cache");
        } else {
            r->slot = s;
            e->slots[s] = r;
        }
    }
    return ready;
}

static bool parked_runnable(const engine_t *e, bool free_slot)
{
    for (engine_req_t *r = e->parked; r; r = r->pnext)
        if (atomic_load(&r->cancel) || (free_slot && !is_paused(e, r))) return true;
    return false;
}

static void *driver_main(void *arg)
{
    engine_t *e = arg;
    for (;;) {
        int fault = atomic_load(&e->fault);
        int parked_ready = unpark(e, fault);
        bool free_slot = false;
        for (int s = 0; s < e->max_batch && !free_slot; s++)
            free_slot = !e->slots[s];
        bool runnable = (fault != ENGINE_FAULT_HANG && has_runnable(e, fault)) ||
                        parked_runnable(e, free_slot && fault != ENGINE_FAULT_HANG);
        engine_req_t *admitted = NULL, *cancelled = NULL, *tokenize = NULL, **atail = &admitted;

        pthread_mutex_lock(&e->smu);
        while (!e->stop && !e->kick && !runnable &&
               (fault == ENGINE_FAULT_HANG || !e->qhead || !free_slot)) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 50 * 1000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&e->scv, &e->smu, &ts);
            break; /* re-evaluate everything (fault mode, pauses) */
        }
        e->kick = false;
        if (e->stop) {
            pthread_mutex_unlock(&e->smu);
            break;
        }
        /* a fault set while we waited (before the submit that woke us) governs this admission */
        fault = atomic_load(&e->fault);
        /* requests cancelled while queued left the queue in engine_cancel; they end here,
         * without a slot */
        cancelled = e->dropped;
        e->dropped = NULL;
        /* tokenize-only requests take no slot: they go ahead of the batch */
        for (engine_req_t *q = e->qhead, *nx; q; q = nx) {
            nx = q->qnext;
            if (q->flags & ENGINE_REQ_TOKENIZE) {
                queue_unlink(e, q);
                q->qnext = tokenize;
                tokenize = q;
            }
        }
        if (fault != ENGINE_FAULT_HANG) {
            for (int s = 0; s < e->max_batch && e->qhead; s++) {
                if (e->slots[s]) continue;
                engine_req_t *q = e->qhead;
                queue_unlink(e, q);
                q->slot = s;
                e->slots[s] = q; /* reserve; KV allocated below */
                *atail = q;
                atail = &q->qnext;
            }
        }
        int waiting = e->nqueued + parked_ready;
        atomic_store(&e->st_queued, (uint64_t)e->nqueued);
        pthread_mutex_unlock(&e->smu);

        while (cancelled) {
            engine_req_t *q = cancelled;
            cancelled = q->qnext;
            q->qnext = NULL;
            finish(e, q, ENGINE_FINISH_CANCELLED);
        }
        while (tokenize) {
            engine_req_t *q = tokenize;
            tokenize = q->qnext;
            if (admit_tokenize(e, q) < 0) continue; /* failed with its ERROR event */
            end_req(e, q);
            emit(e, q, ENGINE_EV_FINISHED, 0, ENGINE_FINISH_NONE, "", 0);
        }
        while (admitted) {
            engine_req_t *q = admitted;
            admitted = q->qnext;
            q->qnext = NULL;
            if (q->deferred) {
                /* tokenized here, off the caller's (reactor's) thread; the slot is only
                 * reserved so far, so a rejected input gives it back without a KV free */
                int s = q->slot;
                e->slots[s] = NULL;
                q->slot = -1;
                if (admit_tokenize(e, q) < 0) continue;
                q->slot = s;
                e->slots[s] = q;
            }
            int cap = q->n_prompt + q->max_gen - 1;
            if (e->be->seq_alloc(e->bctx, q->slot, cap) < 0) {
                e->slots[q->slot] = NULL;
                q->slot = -1;
                fail_req(e, q, "out of memory for the KV cache");
            }
        }
        fault = atomic_load(&e->fault); /* a change made while we waited applies now */
        if (fault != ENGINE_FAULT_HANG) {
            /* work waits and every slot is taken: paused requests make room (their freed
             * slots are filled at the next turn) */
            int free_now = 0;
            for (int s = 0; s < e->max_batch; s++)
                free_now += !e->slots[s];
            if (waiting > free_now) preempt_paused(e, waiting - free_now);
            step(e, fault);
        }
        notify_if_needed(e);
    }
    return NULL;
}

/* ---- construction -------------------------------------------------------------------- */

static char *base_name(const char *path)
{
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    size_t n = strlen(b);
    const char *dot = strrchr(b, '.');
    if (dot && dot != b) n = (size_t)(dot - b);
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, b, n);
        s[n] = 0;
    }
    return s;
}

int device_parse(const char *s, int *index)
{
    *index = 0;
    if (!s) return -EINVAL;
    if (!strcmp(s, "auto")) return DEVICE_AUTO;
    if (!strcmp(s, "cpu")) return DEVICE_CPU;
    if (!strcmp(s, "cuda")) return DEVICE_CUDA;
    if (strncmp(s, "cuda:", 5) || !s[5]) return -EINVAL;
    int v = 0;
    for (const char *p = s + 5; *p; p++) {
        if (*p < '0' || *p > '9' || p - (s + 5) >= 3) return -EINVAL;
        v = v * 10 + (*p - '0');
    }
    if (v > 255) return -EINVAL;
    *index = v;
    return DEVICE_CUDA;
}

/* The KV cache's element type: 0 for "f32" (or NULL), 1 for "f16", or -EINVAL naming the
 * choices. */
static int kv_type_parse(const char *t, char *err, size_t errlen)
{
    if (!t || !strcmp(t, "f32")) return 0;
    if (!strcmp(t, "f16")) return 1;
    return errorf(err, errlen, -EINVAL, "kv cache type '%s' is not f32 or f16", t);
}

/* Pick and load the backend: cpu, or cuda when asked for (or, under auto, when a GPU is
 * usable and the CUDA backend can run this model); sets e->be, e->bctx, e->device and
 * e->device_note. */
static int backend_open(engine_t *e, const engine_config_t *cfg, char *err, size_t errlen)
{
    const char *dev = cfg->device ? cfg->device : "cpu";
    int idx, kind = device_parse(dev, &idx);
    if (kind < 0)
        return errorf(err, errlen, -EINVAL, "device '%s' is not one of auto, cpu, cuda, cuda:N",
                      dev);
    int bf16 = 0;
    if (cfg->dtype && !strcmp(cfg->dtype, "bf16"))
        bf16 = 1;
    else if (cfg->dtype && strcmp(cfg->dtype, "fp32"))
        return errorf(err, errlen, -EINVAL, "dtype '%s' is not fp32 or bf16", cfg->dtype);
    if (cfg->cuda_streams < 0 || cfg->cuda_streams > 64)
        return errorf(err, errlen, -EINVAL, "cuda_streams %d is outside 0..64", cfg->cuda_streams);
    if (kind == DEVICE_CPU && bf16)
        return errorf(err, errlen, -EINVAL, "dtype bf16 needs the CUDA backend (device cuda)");
    int kv_f16 = e->kv_f16; /* parsed by engine_new */
    if (kind == DEVICE_CUDA && kv_f16)
        return errorf(err, errlen, -EINVAL,
                      "kv cache type f16 (--kv-cache-type) needs the CPU backend (--device "
                      "cpu): the CUDA backend's cache is f32");
    backend_opts_t o = {
        .device = idx, .streams = cfg->cuda_streams, .bf16 = bf16, .kv_f16 = kv_f16};
    char why[384] = "";
    int unsupported = 0;
#ifdef INFERD_HAVE_CUDA
    if (kind == DEVICE_AUTO && kv_f16) {
        snprintf(why, sizeof why, "the kv cache type f16 runs on the CPU backend only");
        unsupported = 1;
    } else if (kind != DEVICE_CPU) {
        const backend_lib_t *lib = NULL;
        int rc = backend_lib_open(&lib, why, sizeof why);
        /* what the backend cannot run is known before any device is touched */
        if (rc == 0 && (rc = lib->check(&e->model.v, &o, why, sizeof why)) < 0) unsupported = 1;
        if (rc == 0) rc = lib->probe(idx, why, sizeof why);
        if (rc == 0) {
            rc = lib->backend->load(&e->bctx, &e->model.v, &o, NULL, e->max_rows, e->max_batch, err,
                                    errlen);
            if (rc < 0) return rc;
            e->be = lib->backend;
            snprintf(e->device, sizeof e->device, "cuda:%d", idx);
            snprintf(e->weights_note, sizeof e->weights_note,
                     "on the GPU (the host's are mapped from the file)");
            snprintf(e->device_note, sizeof e->device_note,
                     "%s: using %s, %s, %s weights, %d streams", dev, e->device, why,
                     bf16 ? "bf16" : "fp32", cfg->cuda_streams ? cfg->cuda_streams : 4);
            return 0;
        }
        if (kind == DEVICE_CUDA)
            return errorf(err, errlen, unsupported ? BACKEND_ENOTSUP : -ENODEV, "device %s: %s",
                          dev, why);
    }
#else
    snprintf(why, sizeof why, "inferd was built without CUDA");
    if (kind == DEVICE_CUDA)
        return errorf(err, errlen, -ENODEV,
                      "device %s: %s (build with the CUDA Toolkit and -DINFERD_CUDA=ON)", dev, why);
#endif
    int rc = model_hugepages(&e->model, cfg->hugepages, e->weights_note, sizeof e->weights_note,
                             err, errlen);
    if (rc < 0) return rc;
    e->be = &backend_cpu;
    rc = e->be->load(&e->bctx, &e->model.v, &o, e->pool, e->max_rows, e->max_batch, err, errlen);
    if (rc < 0) return rc;
    snprintf(e->device, sizeof e->device, "cpu");
    if (kind == DEVICE_AUTO && unsupported)
        snprintf(e->device_note, sizeof e->device_note,
                 "auto: the CUDA backend cannot run this model (%s); using cpu", why);
    else if (kind == DEVICE_AUTO)
        snprintf(e->device_note, sizeof e->device_note, "auto: no usable GPU (%s); using cpu%s",
                 why, bf16 ? " with fp32 weights (dtype bf16 applies to the GPU only)" : "");
    else
        snprintf(e->device_note, sizeof e->device_note, "cpu: as configured");
    return 0;
}

/* The tokenizer: from a GGUF file's metadata (the tokenizer path, or else the model itself
 * when it is a GGUF file), or llama2.c's tokenizer.bin. The file's magic decides. A GGUF
 * vocabulary brings its chat template. */
static int open_tokenizer(engine_t *e, const engine_config_t *cfg, char *err, size_t errlen)
{
    const char *path = cfg->tokenizer_path ? cfg->tokenizer_path : cfg->model_path;
    int vocab = e->model.v.c.vocab_size;
    gguf_t *own = NULL;
    const gguf_t *g = NULL;
    int rc;
    if (!cfg->tokenizer_path && e->model.format == MODEL_GGUF) {
        g = e->model.gguf; /* the model's own file, already mapped and validated */
    } else {
        unsigned char magic[4] = {0};
        FILE *f = fopen(path, "rb");
        size_t got = f ? fread(magic, 1, 4, f) : 0;
        if (f) fclose(f);
        if (!gguf_is_gguf(magic, got)) {
            if (!cfg->tokenizer_path)
                return errorf(err, errlen, -EINVAL,
                              "the llama2.c checkpoint %s needs its tokenizer.bin (--tokenizer)",
                              path);
            return tokenizer_load(&e->tok, path, vocab, err, errlen);
        }
        if ((rc = gguf_open(&own, path, err, errlen)) < 0) return rc;
        g = own;
    }
    rc = tokenizer_from_gguf(&e->tok, g, &e->chat_text, err, errlen);
    gguf_free(own);
    if (rc == 0 && e->tok.n_vocab != vocab) {
        rc = errorf(err, errlen, -EINVAL,
                    "%s: tokenizer.ggml.tokens has %d tokens but the model's vocabulary is %d",
                    path, e->tok.n_vocab, vocab);
        tokenizer_dispose(&e->tok);
        free(e->chat_text);
        e->chat_text = NULL;
    }
    return rc;
}

/* The template chat requests render with: --chat-template's name, else the model's own
 * tokenizer.chat_template when llama.cpp's detection recognizes a format inferd renders. A bad
 * override is a start-up error; a model without a usable template only makes chat requests
 * fail (with e->chat_note as the reason). */
static int resolve_template(engine_t *e, const engine_config_t *cfg, char *err, size_t errlen)
{
    if (cfg->chat_template) {
        if (!chat_supported(cfg->chat_template))
            return errorf(err, errlen, -EINVAL,
                          "chat template '%s' (--chat-template) is not one inferd renders "
                          "(supported: %s)",
                          cfg->chat_template, chat_supported_list());
        e->chat_name = chat_detect(cfg->chat_template); /* the table's own string */
        return 0;
    }
    if (!e->chat_text) {
        snprintf(e->chat_note, sizeof e->chat_note,
                 "the model has no chat template (tokenizer.chat_template); start inferd with "
                 "--chat-template NAME (one of: %s)",
                 chat_supported_list());
        return 0;
    }
    const char *name = chat_detect(e->chat_text);
    if (name && chat_supported(name)) {
        e->chat_name = name;
        return 0;
    }
    if (name)
        snprintf(e->chat_note, sizeof e->chat_note,
                 "the model's chat template is %s, which inferd does not render; start inferd "
                 "with --chat-template NAME (one of: %s)",
                 name, chat_supported_list());
    else
        snprintf(e->chat_note, sizeof e->chat_note,
                 "the model's chat template is not one inferd recognizes; start inferd with "
                 "--chat-template NAME (one of: %s)",
                 chat_supported_list());
    return 0;
}

int engine_new(engine_t **out, const engine_config_t *cfg, char *err, size_t errlen)
{
    int rc;
    if (!cfg || !cfg->model_path) return errorf(err, errlen, -EINVAL, "engine needs a model path");
    if (cfg->threads < 0 || cfg->max_batch < 0 || cfg->max_queued < 0 || cfg->max_backlog < 0 ||
        cfg->prefill_chunk < 0 || cfg->ctx_size < 0)
        return errorf(err, errlen, -EINVAL, "engine config values must not be negative");
    /* a bad mode fails before the model is loaded, not after */
    if ((rc = model_hugepages_mode(cfg->hugepages, err, errlen)) < 0) return rc;
    int kv_f16 = kv_type_parse(cfg->kv_cache_type, err, errlen);
    if (kv_f16 < 0) return kv_f16;
    engine_t *e = calloc(1, sizeof(*e));
    if (!e) return errorf(err, errlen, -ENOMEM, "out of memory");
    e->cfg = *cfg;
    e->kv_f16 = kv_f16;
    long nc = sysconf(_SC_NPROCESSORS_ONLN);
    e->threads = cfg->threads ? cfg->threads : (nc > 0 ? (int)nc : 1);
    e->max_batch = cfg->max_batch ? cfg->max_batch : 16;
    e->max_queued = cfg->max_queued ? cfg->max_queued : 256;
    e->max_backlog = cfg->max_backlog ? cfg->max_backlog : 64;
    e->prefill_chunk = cfg->prefill_chunk ? cfg->prefill_chunk : 64;
    e->max_rows = e->max_batch + e->prefill_chunk;
    pthread_mutex_init(&e->smu, NULL);
    pthread_cond_init(&e->scv, NULL);
    pthread_mutex_init(&e->cmu, NULL);
    pthread_mutex_init(&e->lmu, NULL);
    atomic_store(&e->notify_armed, 1);

    rc = model_load(&e->model, cfg->model_path, cfg->ctx_size, err, errlen);
    if (rc < 0) goto fail_model;
    rc = open_tokenizer(e, cfg, err, errlen);
    if (rc < 0) goto fail_tok;
    if ((rc = resolve_template(e, cfg, err, errlen)) < 0) goto fail_alloc;
    e->name = cfg->model_name ? strdup(cfg->model_name) : base_name(cfg->model_path);
    size_t V = (size_t)e->model.v.c.vocab_size, B = (size_t)e->max_batch;
    e->slots = calloc(B, sizeof(*e->slots));
    e->rows = calloc((size_t)e->max_rows, sizeof(*e->rows));
    e->lreq = calloc(B, sizeof(*e->lreq));
    e->sampled = calloc(B, sizeof(int));
    e->logits = malloc(B * V * sizeof(float));
    e->scratch = malloc(B * V * sizeof(prob_index_t));
    if (!e->name || !e->slots || !e->rows || !e->lreq || !e->sampled || !e->logits || !e->scratch) {
        rc = errorf(err, errlen, -ENOMEM, "out of memory");
        goto fail_alloc;
    }
    rc = pool_new(&e->pool, e->threads);
    if (rc < 0) {
        errorf(err, errlen, rc, "cannot start %d worker threads", e->threads);
        goto fail_alloc;
    }
    rc = backend_open(e, cfg, err, errlen);
    if (rc < 0) goto fail_backend;
    if (pthread_create(&e->driver, NULL, driver_main, e) != 0) {
        rc = errorf(err, errlen, -EAGAIN, "cannot start the engine driver thread");
        goto fail_driver;
    }
    e->driver_started = true;
    *out = e;
    return 0;

fail_driver:
    e->be->free(e->bctx);
fail_backend:
    pool_free(e->pool);
fail_alloc:
    free(e->name);
    free(e->chat_text);
    free(e->slots);
    free(e->rows);
    free(e->lreq);
    free(e->sampled);
    free(e->logits);
    free(e->scratch);
    tokenizer_dispose(&e->tok);
fail_tok:
    model_dispose(&e->model);
fail_model:
    pthread_mutex_destroy(&e->smu);
    pthread_cond_destroy(&e->scv);
    pthread_mutex_destroy(&e->cmu);
    pthread_mutex_destroy(&e->lmu);
    free(e);
    return rc;
}

void engine_free(engine_t *e)
{
    if (!e) return;
    pthread_mutex_lock(&e->smu);
    e->stop = true;
    pthread_cond_signal(&e->scv);
    pthread_mutex_unlock(&e->smu);
    if (e->driver_started) pthread_join(e->driver, NULL);
    for (engine_req_t *r = e->live, *next; r; r = next) {
        next = r->lnext;
        req_destroy(r);
    }
    e->be->free(e->bctx);
    pool_free(e->pool);
    free(e->ev);
    free(e->name);
    free(e->chat_text);
    free(e->slots);
    free(e->rows);
    free(e->lreq);
    free(e->sampled);
    free(e->logits);
    free(e->scratch);
    tokenizer_dispose(&e->tok);
    model_dispose(&e->model);
    pthread_mutex_destroy(&e->smu);
    pthread_cond_destroy(&e->scv);
    pthread_mutex_destroy(&e->cmu);
    pthread_mutex_destroy(&e->lmu);
    free(e);
}

void engine_model_info(const engine_t *e, engine_model_info_t *out)
{
    const model_config_t *c = &e->model.v.c;
    memset(out, 0, sizeof(*out));
    out->name = e->name;
    out->device = e->device;
    out->device_note = e->device_note;
    out->weights_note = e->weights_note;
    out->vocab_size = (uint32_t)c->vocab_size;
    out->max_seq_len = (uint32_t)c->seq_len;
    out->context_size = (uint32_t)c->seq_len;
    out->architecture = e->model.arch_name;
    out->quantization = e->model.quant;
    out->train_context = (uint32_t)c->train_ctx;
    out->kv_cache_bytes = e->be->kv_bytes ? e->be->kv_bytes(e->bctx) : 0;
    out->kv_cache_type = e->kv_f16 ? "f16" : "f32";
    out->kv_sequences = (uint32_t)e->max_batch;
    out->bos_id = (uint32_t)e->tok.bos;
    out->eos_id = (uint32_t)e->tok.eos;
    out->eot_id = e->tok.eot;
    out->unk_id = e->tok.unk;
    out->pad_id = e->tok.pad;
    out->eog_ids = (const uint32_t *)e->tok.eog;
    out->n_eog = (uint32_t)e->tok.n_eog;
    out->max_token_bytes = (uint32_t)e->tok.max_token_len;
    out->tokenizer = e->tok.kind == TOK_SPM ? "llama" : "gpt2";
    out->chat_template = e->chat_name;
    out->chat_template_note = e->chat_name ? "" : e->chat_note;
    out->dim = (uint32_t)c->dim;
    out->hidden_dim = (uint32_t)c->hidden_dim;
    out->n_layers = (uint32_t)c->n_layers;
    out->n_heads = (uint32_t)c->n_heads;
    out->n_kv_heads = (uint32_t)c->n_kv_heads;
    out->parameters = e->model.v.n_params;
    out->weight_bytes = e->model.v.weight_bytes;
    out->step_weight_bytes = e->model.v.weight_bytes;
    if (!c->shared) out->step_weight_bytes -= e->model.v.tok_embd.nbytes;
}

void engine_stats(const engine_t *e, engine_stats_t *out)
{
    engine_t *m = (engine_t *)e; /* atomics are read-only here */
    out->queued = atomic_load_explicit(&m->st_queued, memory_order_relaxed);
    out->inflight = atomic_load_explicit(&m->st_inflight, memory_order_relaxed);
    out->paused = atomic_load_explicit(&m->st_paused, memory_order_relaxed);
    out->tokens_total = atomic_load_explicit(&m->st_tokens, memory_order_relaxed);
    out->steps_total = atomic_load_explicit(&m->st_steps, memory_order_relaxed);
    out->requests_total = atomic_load_explicit(&m->st_requests, memory_order_relaxed);
    out->last_token_ns = atomic_load_explicit(&m->st_last_token, memory_order_relaxed);
    out->last_step_ns = atomic_load_explicit(&m->st_last_step, memory_order_relaxed);
    out->step_ns_total = atomic_load_explicit(&m->st_step_ns_total, memory_order_relaxed);
    out->step_ns_last = atomic_load_explicit(&m->st_step_ns_last, memory_order_relaxed);
    out->preempted = atomic_load_explicit(&m->st_parked, memory_order_relaxed);
    out->preemptions_total = atomic_load_explicit(&m->st_preemptions, memory_order_relaxed);
}

void engine_device_stats(const engine_t *e, engine_device_stats_t *out)
{
    memset(out, 0, sizeof(*out));
    out->device = e->device;
    if (e->be->stats) {
        backend_stats_t b = {0};
        e->be->stats(e->bctx, &b);
        out->has_memory = b.has_memory;
        out->mem_used = b.mem_used;
        out->mem_total = b.mem_total;
        out->mem_backend = b.mem_backend;
        out->gpu_steps = b.gpu_steps;
        out->gpu_step_ns_total = b.gpu_step_ns_total;
        out->gpu_step_ns_last = b.gpu_step_ns_last;
    }
}

int engine_set_fault(engine_t *e, engine_fault_t mode, uint32_t arg)
{
    if (mode < ENGINE_FAULT_NONE || mode > ENGINE_FAULT_SLOW) return -EINVAL;
    atomic_store(&e->fault_arg, arg);
    atomic_store(&e->fault, (int)mode);
    wake_driver(e);
    return 0;
}
