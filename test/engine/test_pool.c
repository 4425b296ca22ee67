/*
 * test_pool.c - the worker pool: every chunk of every job runs exactly once whatever the
 * thread count, a thread stalled inside one chunk holds back only that chunk (the others
 * are claimed by the threads that are running), a job finishes after its helpers have
 * gone to sleep, and running a job allocates nothing (malloc and calloc are wrapped at
 * link time and counted).
 */
#include "internal.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

/* ---- allocation counting (-Wl,--wrap=malloc,--wrap=calloc) ---- */
void *__real_malloc(size_t n);
void *__real_calloc(size_t k, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t k, size_t n);
static atomic_long allocs;

void *__wrap_malloc(size_t n)
{
    atomic_fetch_add(&allocs, 1);
    return __real_malloc(n);
}

void *__wrap_calloc(size_t k, size_t n)
{
    atomic_fetch_add(&allocs, 1);
    return __real_calloc(k, n);
}

/* ---- jobs ---- */
#define MAX_CHUNKS 512

typedef struct {
    atomic_int runs[MAX_CHUNKS];
    atomic_int bad_n; /* calls whose n was not the job's chunk count */
    int expect_n;
} count_job_t;

static void count_chunk(void *arg, int c, int n)
{
    count_job_t *j = arg;
    if (n != j->expect_n || c < 0 || c >= n)
        atomic_fetch_add(&j->bad_n, 1);
    else
        atomic_fetch_add(&j->runs[c], 1);
}

static void exactly_once(int threads)
{
    pool_t *p;
    assert_int_equal(pool_new(&p, threads), 0);
    assert_int_equal(pool_size(p), threads);
    static count_job_t j;
    uint32_t seed = 12345;
    for (int it = 0; it < 10000; it++) {
        seed = seed * 1103515245u + 12345u;
        int n = (int)((seed >> 8) % MAX_CHUNKS); /* 0 chunks included */
        memset(&j, 0, sizeof j);
        j.expect_n = n;
        pool_run_chunks(p, count_chunk, &j, n);
        assert_int_equal(atomic_load(&j.bad_n), 0);
        for (int c = 0; c < n; c++)
            assert_int_equal(atomic_load(&j.runs[c]), 1);
        for (int c = n; c < MAX_CHUNKS; c++)
            assert_int_equal(atomic_load(&j.runs[c]), 0);
    }
    /* pool_run: one chunk per thread */
    memset(&j, 0, sizeof j);
    j.expect_n = threads;
    pool_run(p, count_chunk, &j);
    for (int c = 0; c < threads; c++)
        assert_int_equal(atomic_load(&j.runs[c]), 1);
    pool_free(p);
}

static void test_exactly_once_1(void **state)
{
    (void)state;
    exactly_once(1);
}

static void test_exactly_once_2(void **state)
{
    (void)state;
    exactly_once(2);
}

static void test_exactly_once_4(void **state)
{
    (void)state;
    exactly_once(4);
}

/* chunk 0 stalls (as a preempted thread would); every other chunk records its thread */
typedef struct {
    pthread_t who[64];
} stall_job_t;

static void stall_chunk(void *arg, int c, int n)
{
    (void)n;
    stall_job_t *j = arg;
    j->who[c] = pthread_self();
    if (c == 0) {
        struct timespec ts = {0, 300 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

static void test_stalled_thread_holds_one_chunk(void **state)
{
    (void)state;
    pool_t *p;
    assert_int_equal(pool_new(&p, 2), 0);
    stall_job_t j;
    memset(&j, 0, sizeof j);
    pool_run_chunks(p, stall_chunk, &j, 64);
    /* while one thread slept 300 ms in chunk 0, the other claimed all 63 others: a split
     * made in advance would have left half of them to the sleeper */
    for (int c = 1; c < 64; c++)
        assert_false(pthread_equal(j.who[c], j.who[0]));
    pool_free(p);
}

static void test_after_sleep_and_no_allocation(void **state)
{
    (void)state;
    pool_t *p;
    assert_int_equal(pool_new(&p, 3), 0);
    static count_job_t j;
    /* long enough for the helpers to stop spinning and block on the condition variable */
    struct timespec ts = {0, 200 * 1000 * 1000};
    nanosleep(&ts, NULL);
    long before = atomic_load(&allocs);
    for (int it = 0; it < 200; it++) {
        memset(&j, 0, sizeof j);
        j.expect_n = 100;
        pool_run_chunks(p, count_chunk, &j, 100);
        for (int c = 0; c < 100; c++)
            assert_int_equal(atomic_load(&j.runs[c]), 1);
        if (it == 100) nanosleep(&ts, NULL); /* and once more from sleep */
    }
    assert_int_equal(atomic_load(&allocs), before);
    pool_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_exactly_once_1),
        cmocka_unit_test(test_exactly_once_2),
        cmocka_unit_test(test_exactly_once_4),
        cmocka_unit_test(test_stalled_thread_holds_one_chunk),
        cmocka_unit_test(test_after_sleep_and_no_allocation),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
