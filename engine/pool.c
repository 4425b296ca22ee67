/*
 * pool.c - fork/join thread pool for the forward pass.
 *
 * A step runs ~10 parallel regions per layer, so helpers spin briefly on the job word
 * before they sleep on a condition variable (a futex round trip per region would cost
 * more than many regions). Work is handed out in chunks that threads claim one at a time
 * from a shared counter, never split in advance: on a machine with as many threads as
 * cores, the reactor's per-token wakeup (or any other process) preempts one of them now
 * and then, and with a static split every other thread would wait at the join for the
 * preempted one's whole share; with claimed chunks they take over the chunks it has not
 * started, and only the chunk it is in can be late. The caller claims chunks too, so a
 * job finishes even while every helper is descheduled.
 *
 * The job word packs the job's generation (high 32 bits) and the next unclaimed chunk
 * (low 32 bits): a helper that woke late for job g can claim nothing from job g + 1 by
 * mistake, because its compare-and-swap carries g. Nothing is allocated per job.
 */
#include "internal.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* ~0.2-0.5 ms of pause: longer than the serial code between two regions of a step, far
 * shorter than the idle time between requests */
#define SPIN_ITERS 20000

struct pool {
    int n;                /* threads including the caller */
    pthread_t *threads;   /* (n - 1) helpers */
    _Atomic uint64_t job; /* generation << 32 | next chunk to claim */
    atomic_int done;      /* chunks of the current job finished */
    atomic_int sleepers;  /* helpers blocked on cv */
    atomic_bool stop;
    /* the job of generation g in slot[g & 1], written before g is published. Two slots: a
     * helper that loaded generation g reads g's slot while the caller writes g + 1's in the
     * other. With one slot it could read g + 1's fn, arg and chunk count, then win a claim
     * on g's word past g's last chunk (g + 1 not yet published) and run a chunk of g + 1 that
     * g + 1 would also hand out, counting it done early (ThreadSanitizer: a helper reading the
     * next job's struct on the caller's stack). Atomics (relaxed) because a helper that woke
     * two generations late may still read a slot being rewritten; its claim then fails. */
    struct {
        _Atomic(pool_fn) fn;
        _Atomic(void *) arg;
        atomic_int nchunks;
    } slot[2];
    pthread_mutex_t mu;
    pthread_cond_t cv;
};

/* Claims and runs chunks of the job whose word was last seen as w, until none is left or
 * the job is no longer the current one. Returns how many chunks this thread ran. */
static int work(pool_t *p, uint64_t w)
{
    uint32_t gen = (uint32_t)(w >> 32);
    pool_fn fn = atomic_load_explicit(&p->slot[gen & 1].fn, memory_order_relaxed);
    void *arg = atomic_load_explicit(&p->slot[gen & 1].arg, memory_order_relaxed);
    int nchunks = atomic_load_explicit(&p->slot[gen & 1].nchunks, memory_order_relaxed), ran = 0;
    for (;;) {
        uint32_t c = (uint32_t)w;
        if ((uint32_t)(w >> 32) != gen || c >= (uint32_t)nchunks) return ran;
        /* success proves job `gen` is still current, so fn/arg/nchunks read above are its */
        if (atomic_compare_exchange_weak_explicit(&p->job, &w, w + 1, memory_order_acquire,
                                                  memory_order_acquire)) {
            fn(arg, (int)c, nchunks);
            atomic_fetch_add_explicit(&p->done, 1, memory_order_release);
            ran++;
            w++;
        }
    }
}

static void *helper(void *a)
{
    pool_t *p = a;
    uint32_t seen = 0; /* generation last worked on; jobs start at generation 1 */
    for (;;) {
        int spins = 0;
        uint64_t w;
        while ((uint32_t)((w = atomic_load_explicit(&p->job, memory_order_acquire)) >> 32) ==
                   seen &&
               !atomic_load_explicit(&p->stop, memory_order_relaxed)) {
            if (++spins < SPIN_ITERS) {
                cpu_relax();
                continue;
            }
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleepers, 1);
            while ((uint32_t)(atomic_load(&p->job) >> 32) == seen && !atomic_load(&p->stop))
                pthread_cond_wait(&p->cv, &p->mu);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->mu);
            spins = 0;
        }
        if (atomic_load(&p->stop)) return NULL;
        seen = (uint32_t)(w >> 32);
        work(p, w);
    }
}

int pool_new(pool_t **out, int nthreads)
{
    if (nthreads < 1) nthreads = 1;
    pool_t *p = calloc(1, sizeof(*p));
    if (!p) return -ENOMEM;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->n = 1; /* only started helpers count, for unwinding */
    p->threads = calloc((size_t)nthreads, sizeof(pthread_t));
    if (!p->threads) {
        pool_free(p);
        return -ENOMEM;
    }
    for (int i = 1; i < nthreads; i++) {
        if (pthread_create(&p->threads[i - 1], NULL, helper, p) != 0) {
            pool_free(p);
            return -EAGAIN;
        }
        p->n = i + 1;
    }
    *out = p;
    return 0;
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

void pool_run_chunks(pool_t *p, pool_fn fn, void *arg, int nchunks)
{
    if (nchunks <= 0) return;
    if (!p || p->n == 1 || nchunks == 1) {
        for (int c = 0; c < nchunks; c++)
            fn(arg, c, nchunks);
        return;
    }
    uint64_t w = ((atomic_load_explicit(&p->job, memory_order_relaxed) >> 32) + 1) << 32;
    /* generation 0 is "none yet" for the helpers; past 2^32 - 1 (odd) the next is 2, keeping
     * consecutive generations in different slots */
    if ((w >> 32) == 0) w = 2ull << 32;
    int s = (int)((w >> 32) & 1);
    atomic_store_explicit(&p->slot[s].fn, fn, memory_order_relaxed);
    atomic_store_explicit(&p->slot[s].arg, arg, memory_order_relaxed);
    atomic_store_explicit(&p->slot[s].nchunks, nchunks, memory_order_relaxed);
    atomic_store_explicit(&p->done, 0, memory_order_relaxed);
    atomic_store_explicit(&p->job, w, memory_order_release);
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    work(p, w);
    /* every chunk is claimed now; wait for the ones still running elsewhere */
    int spins = 0;
    while (atomic_load_explicit(&p->done, memory_order_acquire) < nchunks) {
        if (++spins < SPIN_ITERS)
            cpu_relax();
        else
            sched_yield();
    }
}

void pool_run(pool_t *p, pool_fn fn, void *arg)
{
    pool_run_chunks(p, fn, arg, pool_size(p));
}
