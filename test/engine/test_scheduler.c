/* Scheduler and request lifecycle through the public API, on the tiny GQA model. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "engine.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    engine_req_t *req;
    uint32_t toks[256];
    int n;
    int done; /* 1 finished, 2 error */
    engine_finish_t fin;
    uint32_t prompt_tokens, completion_tokens;
    char text[4096];
    size_t tlen;
    uint64_t first_ns, submit_ns;
} res_t;

static atomic_int notifies;

static void on_notify(void *arg)
{
    (void)arg;
    atomic_fetch_add(&notifies, 1);
}

/* the KV cache type of the engines mk makes (a test's prestate: "f16"; NULL: f32) */
static const char *kv_type;

static int kv_type_reset(void **state)
{
    (void)state;
    kv_type = NULL;
    return 0;
}

static engine_t *mk(int threads, int max_batch, int max_queued, int backlog, int manual)
{
    engine_config_t cfg;
    engine_config_init(&cfg);
    cfg.model_path = TINY_MODEL;
    cfg.tokenizer_path = TINY_TOKENIZER;
    cfg.threads = threads;
    cfg.max_batch = max_batch;
    cfg.max_queued = max_queued;
    cfg.max_backlog = backlog;
    cfg.manual_ack = manual;
    cfg.prefill_chunk = 8;
    cfg.notify = on_notify;
    cfg.kv_cache_type = kv_type;
    char err[512];
    engine_t *e = NULL;
    if (engine_new(&e, &cfg, err, sizeof(err)) < 0) fail_msg("engine_new: %s", err);
    return e;
}

static void base_req(engine_request_t *r, const uint32_t *ids, size_t n, void *user)
{
    engine_request_init(r);
    r->token_ids = ids;
    r->n_tokens = n;
    r->user = user;
    r->ignore_eos = true;
}

static void submit(engine_t *e, const engine_request_t *r, res_t *res)
{
    memset(res, 0, sizeof(*res));
    char msg[256];
    int rc = engine_submit(e, r, &res->req, NULL, msg, sizeof(msg));
    if (rc < 0) fail_msg("submit: %d %s", rc, msg);
}

/* poll once; returns events seen */
static int pump(engine_t *e)
{
    engine_event_t ev[32];
    int total = 0, k;
    while ((k = engine_poll(e, ev, 32)) > 0) {
        total += k;
        for (int i = 0; i < k; i++) {
            res_t *r = ev[i].user;
            assert_ptr_equal(ev[i].req, r->req);
            assert_false(r->done);
            if (ev[i].len) {
                assert_true(r->tlen + ev[i].len < sizeof(r->text));
                memcpy(r->text + r->tlen, ev[i].text, ev[i].len);
                r->tlen += ev[i].len;
            }
            if (ev[i].type == ENGINE_EV_TOKEN) {
                assert_true(r->n < 256);
                r->toks[r->n++] = ev[i].token;
                r->first_ns = ev[i].first_token_ns;
                r->submit_ns = ev[i].submit_ns;
            } else {
                r->done = ev[i].type == ENGINE_EV_FINISHED ? 1 : 2;
                r->fin = ev[i].finish;
                r->prompt_tokens = ev[i].prompt_tokens;
                r->completion_tokens = ev[i].completion_tokens;
                engine_req_free(e, r->req);
            }
        }
        if (k < 32) break;
    }
    return total;
}

static int all_done(res_t *res, int n)
{
    for (int i = 0; i < n; i++)
        if (!res[i].done) return 0;
    return 1;
}

static void wait_done(engine_t *e, res_t *res, int n)
{
    for (int ms = 0; ms < 20000; ms++) {
        pump(e);
        if (all_done(res, n)) return;
        usleep(1000);
    }
    fail_msg("requests did not finish");
}

static void wait_tokens(engine_t *e, res_t *res, int n, int min)
{
    for (int ms = 0; ms < 20000; ms++) {
        pump(e);
        int ok = 1;
        for (int i = 0; i < n; i++)
            ok &= res[i].n >= min || res[i].done;
        if (ok) return;
        usleep(1000);
    }
    fail_msg("no tokens");
}

static const uint32_t prompt1[] = {1, 45, 300, 12, 99, 7};

static void test_validate(void **state)
{
    (void)state;
    engine_t *e = mk(1, 4, 8, 0, 0);
    engine_request_t r;
    engine_invalid_t why;
    char msg[256];
    uint32_t ids[200];
    for (int i = 0; i < 200; i++)
        ids[i] = 5;
    base_req(&r, NULL, 0, NULL);
    assert_int_equal(engine_validate(e, &r, &why, msg, sizeof(msg)), -EINVAL);
    assert_int_equal(why, ENGINE_INVALID_EMPTY);
    r.prompt = "";
    assert_int_equal(engine_validate(e, &r, &why, msg, sizeof(msg)), -EINVAL);
    assert_int_equal(why, ENGINE_INVALID_EMPTY);
    r.prompt = "Once upon a time";
    assert_int_equal(engine_validate(e, &r, &why, msg, sizeof(msg)), 0);
    assert_int_equal(why, ENGINE_INVALID_NONE);
    ids[3] = 512;
    base_req(&r, ids, 10, NULL);
    assert_int_equal(engine_validate(e, &r, &why, msg, sizeof(msg)), -EINVAL);
    assert_int_equal(why, ENGINE_INVALID_TOKEN);
    assert_non_null(strstr(msg, "token_ids[3] = 512"));
    ids[3] = 5;
    base_req(&r, ids, 128, NULL);
    assert_int_equal(engine_validate(e, &r, &why, msg, sizeof(msg)), -EINVAL);
    assert_int_equal(why, ENGINE_INVALID_PROMPT_LONG);
    base_req(&r, ids, 127, NULL);
    assert_int_equal(engine_validate(e, &r, &why, msg, sizeof(msg)), 0);
    r.max_tokens = 1;
    assert_int_equal(engine_validate(e, &r, &why, msg, sizeof(msg)), 0);
    r.max_tokens = 2;
    assert_int_equal(engine_validate(e, &r, &why, msg, sizeof(msg)), -EINVAL);
    assert_int_equal(why, ENGINE_INVALID_MAX_TOKENS);
    assert_non_null(strstr(msg, "max_tokens 2"));
    char *long_prompt = malloc(5000);
    memset(long_prompt, 'q', 4999);
    long_prompt[4999] = 0;
    base_req(&r, NULL, 0, NULL);
    r.prompt = long_prompt;
    assert_int_equal(engine_validate(e, &r, &why, msg, sizeof(msg)), -EINVAL);
    assert_int_equal(why, ENGINE_INVALID_PROMPT_LONG);
    free(long_prompt);
    base_req(&r, ids, 4, NULL);
    r.temperature = -0.5f;
    assert_int_equal(engine_validate(e, &r, &why, msg, sizeof(msg)), -EINVAL);
    assert_int_equal(why, ENGINE_INVALID_TEMPERATURE);
    r.temperature = 0.7f;
    r.top_p = 0.0f;
    assert_int_equal(engine_validate(e, &r, &why, msg, sizeof(msg)), -EINVAL);
    assert_int_equal(why, ENGINE_INVALID_TOP_P);
    r.top_p = 1.01f;
    assert_int_equal(engine_validate(e, &r, &why, msg, sizeof(msg)), -EINVAL);
    assert_int_equal(why, ENGINE_INVALID_TOP_P);
    assert_string_equal(engine_invalid_name(why), "bad_top_p");
    r.top_p = 1.0f;
    assert_int_equal(engine_validate(e, &r, &why, msg, sizeof(msg)), 0);
    /* submit reports the same errors */
    r.temperature = -1.0f;
    engine_req_t *q = NULL;
    assert_int_equal(engine_submit(e, &r, &q, &why, msg, sizeof(msg)), -EINVAL);
    assert_int_equal(why, ENGINE_INVALID_TEMPERATURE);
    assert_null(q);
    uint32_t toks[32];
    int n = engine_tokenize(e, "Once upon a time", true, toks, 32);
    assert_true(n > 2 && n <= 17);
    assert_int_equal(toks[0], 1);
    engine_free(e);
}

static void test_generate(void **state)
{
    (void)state;
    engine_t *e = mk(2, 4, 8, 0, 0);
    engine_request_t r;
    res_t res;
    base_req(&r, NULL, 0, &res);
    r.prompt = "Once upon a time";
    r.max_tokens = 10;
    submit(e, &r, &res);
    wait_done(e, &res, 1);
    assert_int_equal(res.done, 1);
    assert_int_equal(res.fin, ENGINE_FINISH_LENGTH);
    assert_int_equal(res.n, 10);
    assert_int_equal(res.completion_tokens, 10);
    uint32_t toks[32];
    assert_int_equal(res.prompt_tokens, (uint32_t)engine_tokenize(e, r.prompt, true, toks, 32));
    assert_true(res.first_ns >= res.submit_ns && res.submit_ns > 0);
    /* the whole context: 100 prompt tokens leave 28 */
    uint32_t ids[100];
    for (int i = 0; i < 100; i++)
        ids[i] = (uint32_t)(3 + (i * 37) % 500);
    base_req(&r, ids, 100, &res);
    submit(e, &r, &res);
    wait_done(e, &res, 1);
    assert_int_equal(res.fin, ENGINE_FINISH_LENGTH);
    assert_int_equal(res.n, 28);
    /* stop ids: stop at the first new token seen at index >= 3 */
    base_req(&r, prompt1, 6, &res);
    r.max_tokens = 30;
    submit(e, &r, &res);
    wait_done(e, &res, 1);
    res_t ref = res;
    int k = 3;
    for (;; k++) {
        assert_true(k < ref.n);
        int seen = 0;
        for (int j = 0; j < k; j++)
            seen |= ref.toks[j] == ref.toks[k];
        if (!seen) break;
    }
    uint32_t stop[2] = {511, ref.toks[k]};
    r.stop_ids = stop;
    r.n_stop = 2;
    submit(e, &r, &res);
    wait_done(e, &res, 1);
    assert_int_equal(res.fin, ENGINE_FINISH_STOP);
    assert_int_equal(res.n, k);
    assert_int_equal(res.completion_tokens, (uint32_t)k);
    assert_memory_equal(res.toks, ref.toks, (size_t)k * 4);
    engine_stats_t st;
    engine_stats(e, &st);
    assert_true(st.tokens_total >= 10 + 28 + 30);
    assert_int_equal(st.requests_total, 4);
    assert_true(st.last_token_ns > 0);
    assert_true(atomic_load(&notifies) > 0);
    engine_free(e);
}

static void run_alone(engine_t *e, const engine_request_t *r, res_t *res)
{
    submit(e, r, res);
    wait_done(e, res, 1);
    assert_int_equal(res->done, 1);
}

static void test_seed_and_batch_invariance(void **state)
{
    kv_type = *state;
    engine_t *e = mk(2, 16, 64, 0, 0);
    engine_request_t greedy, sampled;
    res_t g1, s1, s2, s3;
    base_req(&greedy, prompt1, 6, &g1);
    greedy.max_tokens = 40;
    sampled = greedy;
    sampled.temperature = 0.9f;
    sampled.top_p = 0.9f;
    sampled.top_k = 50;
    sampled.seed = 1234;
    run_alone(e, &greedy, &g1);
    sampled.user = &s1;
    run_alone(e, &sampled, &s1);
    sampled.user = &s2;
    run_alone(e, &sampled, &s2);
    assert_int_equal(s1.n, 40);
    assert_memory_equal(s1.toks, s2.toks, 40 * 4); /* same seed, same tokens */
    assert_string_equal(s1.text, s2.text);
    sampled.seed = 1235;
    sampled.user = &s3;
    run_alone(e, &sampled, &s3);
    assert_memory_not_equal(s1.toks, s3.toks, 40 * 4);
    sampled.seed = 1234;

    /* now each among 15 others with different prompts, lengths and sampling */
    for (int round = 0; round < 2; round++) {
        res_t res[16];
        engine_request_t rq[16];
        uint32_t ids[16][40];
        int target = round ? 11 : 4;
        for (int i = 0; i < 16; i++) {
            if (i == target) {
                rq[i] = round ? sampled : greedy;
            } else {
                int n = 1 + (i * 7) % 37;
                ids[i][0] = 1;
                for (int j = 1; j < n; j++)
                    ids[i][j] = (uint32_t)(3 + (i * 131 + j * 17) % 509);
                base_req(&rq[i], ids[i], (size_t)n, NULL);
                rq[i].max_tokens = (uint32_t)(5 + i * 3);
                rq[i].temperature = (i % 3) * 0.5f;
                rq[i].seed = (uint64_t)i;
            }
            rq[i].user = &res[i];
            submit(e, &rq[i], &res[i]);
        }
        wait_done(e, res, 16);
        const res_t *want = round ? &s1 : &g1;
        assert_int_equal(res[target].n, want->n);
        assert_memory_equal(res[target].toks, want->toks, (size_t)want->n * 4);
        assert_string_equal(res[target].text, want->text);
    }
    engine_free(e);
}

static void test_cancel(void **state)
{
    (void)state;
    engine_t *e = mk(2, 4, 16, 0, 0);
    engine_set_fault(e, ENGINE_FAULT_SLOW, 2);
    engine_request_t r;
    res_t res[4];
    for (int i = 0; i < 4; i++) {
        base_req(&r, prompt1, 6, &res[i]);
        submit(e, &r, &res[i]);
    }
    wait_tokens(e, res, 4, 1);
    for (int i = 0; i < 4; i++)
        engine_cancel(e, res[i].req);
    engine_cancel(e, res[0].req); /* idempotent */
    wait_done(e, res, 4);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(res[i].fin, ENGINE_FINISH_CANCELLED);
        assert_true(res[i].n < 122);
    }
    /* the slots are free again: a burst of 4 runs concurrently */
    for (int i = 0; i < 4; i++) {
        base_req(&r, prompt1, 6, &res[i]);
        submit(e, &r, &res[i]);
    }
    wait_tokens(e, res, 4, 2);
    for (int i = 0; i < 4; i++)
        assert_false(res[i].done);
    engine_stats_t st;
    engine_stats(e, &st);
    assert_int_equal(st.inflight, 4);
    assert_int_equal(st.queued, 0);
    /* the reactor may drop its reference early: no more events for those */
    for (int i = 0; i < 4; i++)
        engine_req_free(e, res[i].req);
    engine_set_fault(e, ENGINE_FAULT_NONE, 0);
    for (int ms = 0; ms < 300; ms++) {
        assert_int_equal(pump(e), 0);
        usleep(1000);
    }
    engine_stats(e, &st);
    assert_int_equal(st.inflight, 0);
    engine_free(e);
}

static void test_queue_full_and_hang(void **state)
{
    (void)state;
    engine_t *e = mk(1, 1, 2, 0, 0);
    engine_set_fault(e, ENGINE_FAULT_HANG, 0);
    engine_request_t r;
    res_t res[3];
    char msg[128];
    for (int i = 0; i < 2; i++) {
        base_req(&r, prompt1, 6, &res[i]);
        r.max_tokens = 5;
        submit(e, &r, &res[i]);
    }
    base_req(&r, prompt1, 6, &res[2]);
    engine_req_t *q = NULL;
    assert_int_equal(engine_submit(e, &r, &q, NULL, msg, sizeof(msg)), -EAGAIN);
    assert_non_null(strstr(msg, "queue full"));
    engine_stats_t st;
    engine_stats(e, &st);
    assert_int_equal(st.queued, 2);
    usleep(100000);
    assert_int_equal(pump(e), 0); /* hung: nothing happens */
    /* a queued request can be cancelled even while the engine hangs */
    engine_cancel(e, res[1].req);
    wait_done(e, &res[1], 1);
    assert_int_equal(res[1].fin, ENGINE_FINISH_CANCELLED);
    assert_int_equal(res[1].n, 0);
    engine_set_fault(e, ENGINE_FAULT_NONE, 0);
    wait_done(e, res, 1);
    assert_int_equal(res[0].n, 5);
    engine_free(e);
}

static void test_faults(void **state)
{
    (void)state;
    engine_t *e = mk(2, 4, 8, 0, 0);
    engine_request_t r;
    res_t res;
    engine_set_fault(e, ENGINE_FAULT_ERROR, 0);
    base_req(&r, prompt1, 6, &res);
    submit(e, &r, &res);
    wait_done(e, &res, 1);
    assert_int_equal(res.done, 2);
    assert_non_null(strstr(res.text, "fault"));
    engine_set_fault(e, ENGINE_FAULT_STALL, 0);
    base_req(&r, prompt1, 6, &res);
    r.max_tokens = 20;
    submit(e, &r, &res);
    wait_tokens(e, &res, 1, 1);
    usleep(150000);
    pump(e);
    assert_int_equal(res.n, 1);
    assert_false(res.done);
    engine_stats_t st;
    engine_stats(e, &st);
    assert_int_equal(st.inflight, 1);
    engine_set_fault(e, ENGINE_FAULT_NONE, 0);
    wait_done(e, &res, 1);
    assert_int_equal(res.n, 20);
    assert_int_equal(engine_set_fault(e, (engine_fault_t)99, 0), -EINVAL);
    engine_free(e);
}

static void test_slow_reader(void **state)
{
    (void)state;
    engine_t *e = mk(1, 4, 8, 4, 1);
    engine_request_t r;
    res_t res;
    base_req(&r, prompt1, 6, &res);
    r.max_tokens = 20;
    submit(e, &r, &res);
    wait_tokens(e, &res, 1, 4);
    usleep(100000);
    pump(e);
    assert_int_equal(res.n, 4); /* paused at the backlog bound */
    engine_stats_t st;
    engine_stats(e, &st);
    assert_int_equal(st.paused, 1);
    assert_int_equal(st.inflight, 1);
    engine_req_consumed(e, res.req, 2);
    wait_tokens(e, &res, 1, 6);
    usleep(50000);
    pump(e);
    assert_int_equal(res.n, 6);
    /* ack what was delivered, as the server does (a slow engine under TSan may have
     * delivered fewer than the backlog allows) */
    int acked = 2;
    for (int i = 0; i < 100 && !res.done; i++) {
        engine_req_consumed(e, res.req, (uint32_t)(res.n - acked));
        acked = res.n;
        wait_tokens(e, &res, 1, res.n + 1);
    }
    wait_done(e, &res, 1);
    assert_int_equal(res.n, 20);
    engine_free(e);
}

/* Acknowledging ahead of delivery (more than was produced) is no backlog: the request runs
 * to the end instead of pausing on a wrapped difference. */
static void test_ack_ahead(void **state)
{
    (void)state;
    engine_t *e = mk(1, 4, 8, 4, 1);
    engine_request_t r;
    res_t res;
    base_req(&r, prompt1, 6, &res);
    r.max_tokens = 12;
    submit(e, &r, &res);
    engine_req_consumed(e, res.req, 100);
    wait_done(e, &res, 1);
    assert_int_equal(res.n, 12);
    engine_free(e);
}

static void test_notify_coalesced(void **state)
{
    (void)state;
    engine_t *e = mk(1, 4, 8, 0, 0);
    atomic_store(&notifies, 0);
    engine_request_t r;
    res_t res;
    base_req(&r, prompt1, 6, &res);
    r.max_tokens = 8;
    submit(e, &r, &res);
    engine_stats_t st;
    for (int ms = 0; ms < 10000; ms++) {
        engine_stats(e, &st);
        if (st.requests_total == 1) break;
        usleep(1000);
    }
    assert_int_equal(atomic_load(&notifies), 1); /* not re-armed until poll */
    wait_done(e, &res, 1);
    assert_int_equal(res.n, 8);
    engine_free(e);
}

/* A paused request (its client stopped reading) gives its slot to a request that waits for
 * one, and goes on with the same tokens once it is read again: greedy and seeded sampling
 * alike, through a recompute of its positions. */
static void test_paused_request_preempted(void **state)
{
    kv_type = *state;
    for (int seeded = 0; seeded < 2; seeded++) {
        /* the reference: A alone, read at once */
        engine_t *e = mk(1, 1, 8, 4, 0);
        engine_request_t ra, rb;
        res_t ref, a, b;
        base_req(&ra, prompt1, 6, &ref);
        ra.max_tokens = 24;
        if (seeded) {
            ra.temperature = 0.9f;
            ra.seed = 1234;
        }
        submit(e, &ra, &ref);
        wait_done(e, &ref, 1);
        assert_int_equal(ref.n, 24);
        engine_free(e);

        e = mk(1, 1, 8, 4, 1); /* one slot; manual acks: A is never read at first */
        ra.user = &a;
        submit(e, &ra, &a);
        wait_tokens(e, &a, 1, 4);
        usleep(50000);
        pump(e);
        assert_int_equal(a.n, 4); /* paused at the backlog bound, in the only slot */
        base_req(&rb, prompt1 + 1, 5, &b);
        rb.max_tokens = 6;
        submit(e, &rb, &b);
        for (int i = 0; i < 2000 && !b.done; i++) { /* B is read as it comes */
            int had = b.n;
            pump(e);
            if (b.n > had && !b.done) engine_req_consumed(e, b.req, (uint32_t)(b.n - had));
            usleep(1000);
        }
        assert_int_equal(b.done, 1); /* without preemption B never gets the slot */
        assert_int_equal(b.n, 6);
        engine_stats_t st;
        engine_stats(e, &st);
        assert_true(st.preemptions_total >= 1);
        assert_int_equal(st.preempted, 1); /* A waits without a slot */
        assert_int_equal(st.paused, 1);
        assert_int_equal(a.n, 4);
        /* A's client reads again: A takes the free slot, replays, and finishes */
        int acked = 0;
        for (int i = 0; i < 200 && !a.done; i++) {
            engine_req_consumed(e, a.req, (uint32_t)(a.n - acked));
            acked = a.n;
            for (int ms = 0; ms < 2000 && !a.done && a.n == acked; ms++) {
                pump(e);
                usleep(1000);
            }
        }
        assert_int_equal(a.done, 1);
        assert_int_equal(a.n, 24);
        assert_memory_equal(a.toks, ref.toks, 24 * sizeof(uint32_t));
        assert_int_equal(a.completion_tokens, 24);
        assert_int_equal(a.prompt_tokens, 6);
        engine_stats(e, &st);
        assert_int_equal(st.preempted, 0);
        engine_free(e);
    }
}

/* A paused request with no one waiting keeps its slot (no needless recompute), and a request
 * cancelled while preempted ends with its final event. */
static void test_preempted_cancel(void **state)
{
    (void)state;
    engine_t *e = mk(1, 1, 8, 4, 1);
    engine_request_t ra, rb;
    res_t a, b;
    base_req(&ra, prompt1, 6, &a);
    ra.max_tokens = 40;
    submit(e, &ra, &a);
    wait_tokens(e, &a, 1, 4);
    usleep(100000);
    engine_stats_t st;
    engine_stats(e, &st);
    assert_int_equal(st.preemptions_total, 0);
    assert_int_equal(st.inflight, 1);
    base_req(&rb, prompt1, 6, &b);
    rb.max_tokens = 3;
    submit(e, &rb, &b);
    for (int i = 0; i < 5000 && !b.done; i++) {
        int had = b.n;
        pump(e);
        if (b.n > had && !b.done) engine_req_consumed(e, b.req, (uint32_t)(b.n - had));
        usleep(1000);
    }
    assert_int_equal(b.done, 1);
    engine_cancel(e, a.req);
    wait_done(e, &a, 1);
    assert_int_equal(a.fin, ENGINE_FINISH_CANCELLED);
    for (int ms = 0; ms < 2000; ms++) { /* the counters follow at the driver's next turn */
        engine_stats(e, &st);
        if (st.paused == 0) break;
        usleep(1000);
    }
    assert_int_equal(st.preempted, 0);
    assert_int_equal(st.paused, 0);
    engine_free(e);
}

/* A cancelled request leaves the admission queue at once: while the driver is inside a long
 * step, a full queue takes a new request as soon as a queued one is cancelled. */
static void test_cancel_leaves_queue_at_once(void **state)
{
    (void)state;
    engine_t *e = mk(1, 1, 2, 64, 0);
    engine_request_t r;
    res_t run, q[3];
    base_req(&r, prompt1, 6, &run);
    r.max_tokens = 50;
    submit(e, &r, &run);
    wait_tokens(e, &run, 1, 1);
    assert_int_equal(engine_set_fault(e, ENGINE_FAULT_SLOW, 3000), 0);
    usleep(200000); /* the driver is now asleep inside a 3 s step */
    for (int i = 0; i < 2; i++) {
        base_req(&r, prompt1, 6, &q[i]);
        r.max_tokens = 2;
        submit(e, &r, &q[i]);
    }
    base_req(&r, prompt1, 6, &q[2]);
    r.max_tokens = 2;
    char msg[256];
    engine_req_t *h = NULL;
    assert_int_equal(engine_submit(e, &r, &h, NULL, msg, sizeof msg), -EAGAIN);
    engine_req_free(e, q[0].req); /* the client reset its stream */
    q[0].done = 1;
    engine_stats_t st;
    engine_stats(e, &st);
    assert_int_equal(st.queued, 1);
    memset(&q[2], 0, sizeof q[2]);
    assert_int_equal(engine_submit(e, &r, &q[2].req, NULL, msg, sizeof msg), 0);
    assert_int_equal(engine_set_fault(e, ENGINE_FAULT_NONE, 0), 0);
    wait_done(e, q + 1, 2);
    if (!run.done) engine_req_free(e, run.req);
    engine_free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validate),
        cmocka_unit_test(test_generate),
        cmocka_unit_test(test_seed_and_batch_invariance),
        /* with an F16 KV cache: a request's tokens the same alone and among 15 others, and
         * after a preemption's replay (the cache is rounded as written, so a recompute
         * writes the same halves) */
        {"test_seed_and_batch_invariance (kv f16)", test_seed_and_batch_invariance, NULL,
         kv_type_reset, "f16"},
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_queue_full_and_hang),
        cmocka_unit_test(test_faults),
        cmocka_unit_test(test_slow_reader),
        cmocka_unit_test(test_ack_ahead),
        cmocka_unit_test(test_notify_coalesced),
        cmocka_unit_test(test_paused_request_preempted),
        {"test_paused_request_preempted (kv f16)", test_paused_request_preempted, NULL,
         kv_type_reset, "f16"},
        cmocka_unit_test(test_preempted_cancel),
        cmocka_unit_test(test_cancel_leaves_queue_at_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
