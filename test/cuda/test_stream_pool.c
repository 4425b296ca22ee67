/*
 * test_stream_pool - the CUDA backend's host-side stream pool with the CPU backend
 * standing in for the device lanes (no GPU needed): dispatch by slot, logits remapping,
 * results identical to one CPU backend running the whole batch, lane-thread ownership,
 * error propagation, unwinding when a lane cannot start, row validation, counters.
 */
#include "cuda/stream_pool.h"
#include "engine/internal.h"

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

/* ---- a CPU lane: one backend_cpu instance per lane, its own 1-thread pool ---------- */

typedef struct {
    pool_t *pool;
    void *ctx;
    pthread_t owner;
    int idx;
} cpu_lane_t;

typedef struct {
    const model_t *m;
    pthread_t caller;
    int wrong_thread; /* lane ops seen on a thread other than the lane's */
    int created, freed;
    pthread_mutex_t mu;
} cpu_shared_t;

/* the shared object of the running test, set before the pool starts its lane threads */
static cpu_shared_t *g_shared;

static int cl_new(void **lane, void *shared, int idx, int max_rows, int max_slots, char *err,
                  size_t errlen)
{
    cpu_shared_t *S = shared;
    cpu_lane_t *L = calloc(1, sizeof(*L));
    if (!L) return -ENOMEM;
    L->owner = pthread_self();
    L->idx = idx;
    if (pthread_equal(L->owner, S->caller)) S->wrong_thread++;
    int rc = pool_new(&L->pool, 1);
    if (rc == 0)
        rc = backend_cpu.load(&L->ctx, &S->m->v, NULL, L->pool, max_rows, max_slots, err, errlen);
    if (rc < 0) {
        pool_free(L->pool);
        free(L);
        return rc;
    }
    pthread_mutex_lock(&S->mu);
    S->created++;
    pthread_mutex_unlock(&S->mu);
    *lane = L;
    return 0;
}

static int cl_seq_alloc(void *lane, int slot, int cap)
{
    cpu_lane_t *L = lane;
    return backend_cpu.seq_alloc(L->ctx, slot, cap);
}

static void cl_seq_free(void *lane, int slot)
{
    cpu_lane_t *L = lane;
    backend_cpu.seq_free(L->ctx, slot);
}

static int cl_forward(void *lane, const fwd_row_t *rows, int n, float *logits)
{
    cpu_lane_t *L = lane;
    if (!pthread_equal(pthread_self(), L->owner)) g_shared->wrong_thread++;
    return backend_cpu.forward(L->ctx, rows, n, logits);
}

static void cl_free(void *lane)
{
    cpu_lane_t *L = lane;
    if (!pthread_equal(pthread_self(), L->owner)) g_shared->wrong_thread++;
    backend_cpu.free(L->ctx);
    pool_free(L->pool);
    pthread_mutex_lock(&g_shared->mu);
    g_shared->freed++;
    pthread_mutex_unlock(&g_shared->mu);
    free(L);
}

static const spool_ops_t cpu_ops = {
    .lane_new = cl_new,
    .seq_alloc = cl_seq_alloc,
    .seq_free = cl_seq_free,
    .forward = cl_forward,
    .lane_free = cl_free,
};

static model_t g_model;

static int setup(void **state)
{
    (void)state;
    char err[256];
    if (model_load(&g_model, TINY_MODEL, 0, err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    model_dispose(&g_model);
    return 0;
}

static void shared_init(cpu_shared_t *S)
{
    memset(S, 0, sizeof(*S));
    S->m = &g_model;
    S->caller = pthread_self();
    pthread_mutex_init(&S->mu, NULL);
    g_shared = S;
}

/* ---- the pool computes exactly what one backend computes for the whole batch --------- */

typedef struct {
    int len, pos, next; /* prompt length, positions fed, token to feed */
    int prompt[24];
} seq_t;

static void run_scenario(int lanes, int slots, int steps, unsigned seed)
{
    const int V = g_model.v.c.vocab_size, max_rows = slots + 32;
    cpu_shared_t S;
    shared_init(&S);
    spool_t *p;
    char err[256];
    assert_int_equal(spool_new(&p, &cpu_ops, &S, lanes, max_rows, slots, V, err, sizeof err), 0);
    pool_t *rpool;
    void *ref;
    assert_int_equal(pool_new(&rpool, 1), 0);
    assert_int_equal(
        backend_cpu.load(&ref, &g_model.v, NULL, rpool, max_rows, slots, err, sizeof err), 0);

    seq_t *seqs = calloc((size_t)slots, sizeof(seq_t));
    fwd_row_t *rows = calloc((size_t)max_rows, sizeof(fwd_row_t));
    float *la = malloc((size_t)slots * V * sizeof(float));
    float *lb = malloc((size_t)slots * V * sizeof(float));
    int *lslot = calloc((size_t)slots, sizeof(int));
    srand(seed);
    for (int s = 0; s < slots; s++) {
        seqs[s].len = 1 + rand() % 20;
        seqs[s].prompt[0] = 1;
        for (int i = 1; i < seqs[s].len; i++)
            seqs[s].prompt[i] = 3 + rand() % (V - 3);
        int cap = seqs[s].len + steps;
        assert_int_equal(spool_seq_alloc(p, s, cap), 0);
        assert_int_equal(backend_cpu.seq_alloc(ref, s, cap), 0);
    }
    for (int step = 0; step < steps; step++) {
        int n = 0, nl = 0;
        for (int s = 0; s < slots; s++) {
            seq_t *q = &seqs[s];
            if (rand() % 4 == 0 && q->pos > 0) continue; /* some sequences sit a step out */
            if (q->pos < q->len) {                       /* prefill chunk of up to 5 */
                int k = q->len - q->pos < 5 ? q->len - q->pos : 5;
                if (n + k > max_rows) continue;
                for (int i = 0; i < k; i++)
                    rows[n++] = (fwd_row_t){s, q->pos + i, q->prompt[q->pos + i], -1};
                q->pos += k;
                if (q->pos == q->len) {
                    rows[n - 1].logits_row = nl;
                    lslot[nl++] = s;
                }
            } else {
                if (n + 1 > max_rows) continue;
                rows[n++] = (fwd_row_t){s, q->pos++, q->next, nl};
                lslot[nl++] = s;
            }
        }
        if (!n) continue;
        if (step % 3 == 2) { /* logits rows in another order than the slots */
            for (int i = 0; i < n; i++)
                if (rows[i].logits_row >= 0) rows[i].logits_row = nl - 1 - rows[i].logits_row;
            for (int i = 0; i < nl / 2; i++) {
                int t = lslot[i];
                lslot[i] = lslot[nl - 1 - i];
                lslot[nl - 1 - i] = t;
            }
        }
        assert_int_equal(spool_forward(p, rows, n, la), 0);
        assert_int_equal(backend_cpu.forward(ref, rows, n, lb), 0);
        assert_memory_equal(la, lb, (size_t)nl * V * sizeof(float));
        for (int i = 0; i < nl; i++)
            seqs[lslot[i]].next = sample_argmax(la + (size_t)i * V, V);
    }
    spool_stats_t st;
    spool_stats(p, &st);
    assert_true(st.steps > 0);
    assert_int_equal(st.errors, 0);
    uint64_t lane_total = 0;
    for (int i = 0; i < spool_lanes(p); i++)
        lane_total += st.lane_steps[i];
    assert_true(lane_total >= st.steps);
    spool_free(p);
    assert_int_equal(S.wrong_thread, 0);
    assert_int_equal(S.created, S.freed);
    backend_cpu.free(ref);
    pool_free(rpool);
    free(seqs);
    free(rows);
    free(la);
    free(lb);
    free(lslot);
    pthread_mutex_destroy(&S.mu);
}

static void test_matches_one_backend(void **state)
{
    (void)state;
    run_scenario(3, 8, 40, 1);  /* uneven blocks: 3 + 3 + 2 slots */
    run_scenario(4, 16, 30, 2); /* the default 4 streams, 4 slots each */
    run_scenario(1, 5, 20, 3);  /* a single lane */
    run_scenario(8, 4, 20, 4);  /* more lanes than slots: clamped to 4 */
}

/* ---- mapping --------------------------------------------------------------------------- */

static void test_mapping(void **state)
{
    (void)state;
    cpu_shared_t S;
    shared_init(&S);
    spool_t *p;
    char err[256];
    assert_int_equal(spool_new(&p, &cpu_ops, &S, 4, 8, 14, g_model.v.c.vocab_size, err, sizeof err),
                     0);
    assert_int_equal(spool_lanes(p), 4);
    assert_int_equal(spool_slots_per_lane(p), 4); /* ceil(14 / 4) */
    int local;
    assert_int_equal(spool_lane_of(p, 0, &local), 0);
    assert_int_equal(local, 0);
    assert_int_equal(spool_lane_of(p, 5, &local), 1);
    assert_int_equal(local, 1);
    assert_int_equal(spool_lane_of(p, 13, &local), 3);
    assert_int_equal(local, 1);
    assert_int_equal(spool_lane_of(p, 14, &local), -EINVAL);
    assert_int_equal(spool_lane_of(p, -1, &local), -EINVAL);
    assert_non_null(spool_lane(p, 3));
    assert_null(spool_lane(p, 4));
    spool_free(p);
    spool_free(NULL);
    pthread_mutex_destroy(&S.mu);
}

/* ---- invalid rows never reach a lane ----------------------------------------------------- */

static void test_invalid_rows(void **state)
{
    (void)state;
    cpu_shared_t S;
    shared_init(&S);
    spool_t *p;
    char err[256];
    int V = g_model.v.c.vocab_size;
    assert_int_equal(spool_new(&p, &cpu_ops, &S, 2, 4, 4, V, err, sizeof err), 0);
    float *lg = malloc((size_t)4 * V * sizeof(float));
    assert_int_equal(spool_seq_alloc(p, 0, 8), 0);
    assert_int_equal(spool_seq_alloc(p, 3, 8), 0);
    assert_int_equal(spool_seq_alloc(p, 4, 8), -EINVAL);
    assert_int_equal(spool_seq_alloc(p, 1, 100000), -EINVAL); /* beyond the context */
    fwd_row_t r[5] = {{0, 0, 1, 0}, {3, 0, 1, 1}};
    assert_int_equal(spool_forward(p, r, 0, lg), -EINVAL);
    assert_int_equal(spool_forward(p, r, 5, lg), -EINVAL); /* > max_rows */
    r[1].slot = 9;
    assert_int_equal(spool_forward(p, r, 2, lg), -EINVAL); /* slot out of range */
    r[1].slot = 3;
    r[1].logits_row = 0;
    assert_int_equal(spool_forward(p, r, 2, lg), -EINVAL); /* logits row twice */
    r[1].logits_row = 4;
    assert_int_equal(spool_forward(p, r, 2, lg), -EINVAL); /* beyond the logits buffer */
    r[1].logits_row = 1;
    assert_int_equal(spool_forward(p, r, 2, lg), 0);
    r[0] = (fwd_row_t){0, 1, 5, 0};
    r[1] = (fwd_row_t){0, 2, 6, 1}; /* two logits rows of one slot: fine (both positions) */
    assert_int_equal(spool_forward(p, r, 2, lg), 0);
    spool_seq_free(p, 0);
    spool_seq_free(p, 99); /* ignored */
    free(lg);
    spool_free(p);
    pthread_mutex_destroy(&S.mu);
}

/* ---- a failing lane ------------------------------------------------------------------------ */

typedef struct {
    int fail_new_lane;     /* lane_new of this lane fails (-1: none) */
    int fail_forward_lane; /* forward of this lane fails (-1: none) */
    int created, freed, forwards;
    pthread_mutex_t mu;
} fake_t;

typedef struct {
    fake_t *f;
    int idx;
    char err[64];
} fake_lane_t;

static int fk_new(void **lane, void *shared, int idx, int max_rows, int max_slots, char *err,
                  size_t errlen)
{
    (void)max_rows;
    (void)max_slots;
    fake_t *f = shared;
    if (idx == f->fail_new_lane) {
        snprintf(err, errlen, "lane %d: device out of memory", idx);
        return -ENOMEM;
    }
    fake_lane_t *L = calloc(1, sizeof(*L));
    L->f = f;
    L->idx = idx;
    pthread_mutex_lock(&f->mu);
    f->created++;
    pthread_mutex_unlock(&f->mu);
    *lane = L;
    return 0;
}

static int fk_seq_alloc(void *lane, int slot, int cap)
{
    (void)lane;
    (void)slot;
    (void)cap;
    return 0;
}

static void fk_seq_free(void *lane, int slot)
{
    (void)lane;
    (void)slot;
}

static int fk_forward(void *lane, const fwd_row_t *rows, int n, float *logits)
{
    fake_lane_t *L = lane;
    pthread_mutex_lock(&L->f->mu);
    L->f->forwards++;
    pthread_mutex_unlock(&L->f->mu);
    if (L->idx == L->f->fail_forward_lane) {
        snprintf(L->err, sizeof L->err, "cudaGraphLaunch: an illegal memory access");
        return -EIO;
    }
    for (int r = 0; r < n; r++)
        if (rows[r].logits_row >= 0)
            logits[rows[r].logits_row] = (float)(rows[r].token + L->idx * 1000);
    return 0;
}

static void fk_free(void *lane)
{
    fake_lane_t *L = lane;
    pthread_mutex_lock(&L->f->mu);
    L->f->freed++;
    pthread_mutex_unlock(&L->f->mu);
    free(L);
}

static const char *fk_error(void *lane)
{
    return ((fake_lane_t *)lane)->err;
}

static const spool_ops_t fake_ops = {
    .lane_new = fk_new,
    .seq_alloc = fk_seq_alloc,
    .seq_free = fk_seq_free,
    .forward = fk_forward,
    .lane_free = fk_free,
    .error = fk_error,
};

static void test_lane_new_failure_unwinds(void **state)
{
    (void)state;
    fake_t f = {.fail_new_lane = 2, .fail_forward_lane = -1};
    pthread_mutex_init(&f.mu, NULL);
    spool_t *p = NULL;
    char err[256] = "";
    assert_int_equal(spool_new(&p, &fake_ops, &f, 4, 4, 8, 1, err, sizeof err), -ENOMEM);
    assert_null(p);
    assert_non_null(strstr(err, "lane 2: device out of memory"));
    assert_int_equal(f.created, f.freed); /* the lanes that started were freed */
    assert_int_equal(spool_new(&p, &fake_ops, &f, 0, 4, 8, 1, err, sizeof err), -EINVAL);
    spool_ops_t bad = fake_ops;
    bad.forward = NULL;
    assert_int_equal(spool_new(&p, &bad, &f, 2, 4, 8, 1, err, sizeof err), -EINVAL);
    pthread_mutex_destroy(&f.mu);
}

static void test_forward_error_reported(void **state)
{
    (void)state;
    fake_t f = {.fail_new_lane = -1, .fail_forward_lane = 1};
    pthread_mutex_init(&f.mu, NULL);
    spool_t *p;
    char err[256];
    assert_int_equal(spool_new(&p, &fake_ops, &f, 2, 4, 4, 1, err, sizeof err), 0);
    float lg[4] = {0};
    fwd_row_t r[2] = {{0, 0, 7, 0}, {2, 0, 9, 1}}; /* slot 0 -> lane 0, slot 2 -> lane 1 */
    assert_int_equal(spool_forward(p, r, 2, lg), -EIO);
    assert_non_null(strstr(spool_error(p), "lane 1: cudaGraphLaunch: an illegal memory access"));
    assert_true(lg[0] == 7.0f); /* lane 0 still delivered */
    /* a step that only touches the healthy lane succeeds */
    assert_int_equal(spool_forward(p, r, 1, lg), 0);
    f.fail_forward_lane = -1;
    assert_int_equal(spool_forward(p, r, 2, lg), 0);
    assert_true(lg[1] == 1009.0f);
    spool_stats_t st;
    spool_stats(p, &st);
    assert_int_equal(st.steps, 3);
    assert_int_equal(st.errors, 1);
    assert_int_equal(st.lane_steps[0], 3);
    assert_int_equal(st.lane_steps[1], 2);
    assert_true(st.step_ns_total >= st.step_ns_last);
    spool_free(p);
    assert_int_equal(f.created, 2);
    assert_int_equal(f.freed, 2);
    pthread_mutex_destroy(&f.mu);
}

/* many steps back to back: the hand-off never loses or duplicates a wake-up */
static void test_handoff_stress(void **state)
{
    (void)state;
    fake_t f = {.fail_new_lane = -1, .fail_forward_lane = -1};
    pthread_mutex_init(&f.mu, NULL);
    spool_t *p;
    char err[256];
    assert_int_equal(spool_new(&p, &fake_ops, &f, 4, 16, 16, 1, err, sizeof err), 0);
    fwd_row_t r[16];
    float lg[16];
    int expect = 0;
    srand(7);
    for (int it = 0; it < 20000; it++) {
        int n = 0;
        for (int s = 0; s < 16; s++)
            if (rand() % 3 == 0) {
                r[n] = (fwd_row_t){s, 0, s, n};
                n++;
            }
        if (!n) continue;
        int lanes_used = 0, seen[4] = {0};
        for (int i = 0; i < n; i++)
            if (!seen[r[i].slot / 4]++) lanes_used++;
        expect += lanes_used;
        assert_int_equal(spool_forward(p, r, n, lg), 0);
        for (int i = 0; i < n; i++)
            assert_true(lg[i] == (float)(r[i].slot + (r[i].slot / 4) * 1000));
    }
    assert_int_equal(f.forwards, expect);
    spool_free(p);
    pthread_mutex_destroy(&f.mu);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_one_backend),
        cmocka_unit_test(test_mapping),
        cmocka_unit_test(test_invalid_rows),
        cmocka_unit_test(test_lane_new_failure_unwinds),
        cmocka_unit_test(test_forward_error_reported),
        cmocka_unit_test(test_handoff_stress),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
