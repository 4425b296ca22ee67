/*
 * pool.c - fork/join thread pool for the forward pass. A step runs ~30 parallel
 * regions per token, so helpers spin briefly on a generation counter before they
 * sleep on a condition variable (a futex round trip per region would cost more
 * than the region itself).
 */
#include "internal.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

#define SPIN_ITERS 20000

struct pool {
    int n;                /* threads including the caller */
    pthread_t *threads;   /* (n - 1) helpers */
    _Atomic unsigned gen; /* bumped once per pool_run */
    atomic_int pending;   /* helpers still running the current job */
    atomic_int sleepers;  /* helpers blocked on cv */
    atomic_bool stop;
    pool_fn fn;
    void *arg;
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

typedef struct {
    pool_t *p;
    int tid;
} helper_arg_t;

static void *helper(void *a)
{
    helper_arg_t ha = *(helper_arg_t *)a;
    free(a);
    pool_t *p = ha.p;
    unsigned seen = 0; /* gen at creation: a job may be posted before we get here */
    for (;;) {
        int spins = 0;
        while (atomic_load_explicit(&p->gen, memory_order_acquire) == seen &&
               !atomic_load(&p->stop)) {
            if (++spins < SPIN_ITERS) {
                cpu_relax();
                continue;
            }
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleepers, 1);
            while (atomic_load(&p->gen) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->cv, &p->mu);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->mu);
        }
        if (atomic_load(&p->stop)) return NULL;
        seen++; /* exactly one job per generation: pool_run waits for every helper */
        p->fn(p->arg, ha.tid, p->n);
        atomic_fetch_sub_explicit(&p->pending, 1, memory_order_release);
    }
}

int pool_new(pool_t **out, int nthreads)
{
    if (nthreads < 1) nthreads = 1;
    pool_t *p = calloc(1, sizeof(*p));
    if (!p) return -ENOMEM;
    p->n = nthreads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->threads = calloc((size_t)nthreads, sizeof(pthread_t));
    if (!p->threads) goto fail;
    for (int i = 1; i < nthreads; i++) {
        helper_arg_t *ha = malloc(sizeof(*ha));
        if (!ha) goto fail_threads;
        ha->p = p;
        ha->tid = i;
        if (pthread_create(&p->threads[i - 1], NULL, helper, ha) != 0) {
            free(ha);
            goto fail_threads;
        }
        p->n = i + 1; /* count only started helpers for unwinding */
    }
    p->n = nthreads;
    *out = p;
    return 0;
fail_threads:
    pool_free(p);
    return -EAGAIN;
fail:
    free(p);
    return -ENOMEM;
}

void pool_free(pool_t *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->stop, true);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++)
        pthread_join(p->threads[i - 1], NULL);
    free(p->threads);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p);
}

int pool_size(const pool_t *p)
{
    return p ? p->n : 1;
}

void pool_run(pool_t *p, pool_fn fn, void *arg)
{
    if (!p || p->n == 1) {
        fn(arg, 0, 1);
        return;
    }
    p->fn = fn;
    p->arg = arg;
    atomic_store(&p->pending, p->n - 1);
    atomic_fetch_add(&p->gen, 1);
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    fn(arg, 0, p->n);
    int spins = 0;
    while (atomic_load_explicit(&p->pending, memory_order_acquire) > 0) {
        if (++spins < SPIN_ITERS)
            cpu_relax();
        else
            sched_yield();
    }
}
