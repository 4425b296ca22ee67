/*
 * stream_pool.c - lanes (host thread + device stream) behind the engine's backend seam.
 * See stream_pool.h. One mutex guards the hand-off: the driver posts a generation
 * number to each lane with rows and waits until `pending` drops to zero; each lane
 * runs its forward and its logits copy outside the lock.
 */
#include "stream_pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct {
    struct spool *p;
    int idx;
    pthread_t th;
    bool started;
    pthread_cond_t cv;
    void *lane;      /* ops object, created and freed on this thread */
    fwd_row_t *rows; /* (max_rows) this step's rows, local slots, compact logits rows */
    int n;
    int *lmap; /* (per_lane) caller's logits row of each compact logits row */
    int nl;
    float *out; /* (per_lane, vocab) compact logits */
    bool out_owned;
    unsigned gen; /* work generation posted by the driver (mu) */
    bool ready;   /* lane_new has returned (mu) */
    int rc;       /* lane_new result, then the last forward's (mu) */
    char err[256];
} lane_t;

struct spool {
    spool_ops_t ops;
    void *shared;
    int nlanes, per_lane, max_rows, max_slots, vocab;
    lane_t *lanes;
    pthread_mutex_t mu;
    pthread_cond_t done;
    int pending;            /* lanes still running the current step (mu) */
    int nready;             /* lanes past lane_new (mu) */
    bool stop;              /* (mu) */
    float *logits;          /* destination of the current step */
    unsigned char *seen_lr; /* (max_slots) duplicate logits-row check */
    char err[320];
    atomic_ullong st_steps, st_ns_total, st_ns_last, st_errors;
    atomic_ullong st_lane[SPOOL_MAX_LANES];
};

static void *lane_main(void *arg)
{
    lane_t *L = arg;
    struct spool *p = L->p;
    char err[256] = "";
    void *lane = NULL;
    int rc = p->ops.lane_new(&lane, p->shared, L->idx, p->max_rows, p->per_lane, err, sizeof err);
    if (rc == 0 && p->ops.out_buffer) {
        L->out = p->ops.out_buffer(lane);
        if (!L->out) rc = errorf(err, sizeof err, -ENOMEM, "lane %d has no output buffer", L->idx);
    }
    if (rc < 0 && lane) {
        p->ops.lane_free(lane);
        lane = NULL;
    }
    pthread_mutex_lock(&p->mu);
    L->lane = lane;
    L->rc = rc;
    memcpy(L->err, err, sizeof err);
    L->ready = true;
    p->nready++;
    pthread_cond_broadcast(&p->done);
    unsigned seen = 0;
    while (rc == 0) {
        while (!p->stop && L->gen == seen)
            pthread_cond_wait(&L->cv, &p->mu);
        if (p->stop) break;
        seen = L->gen;
        pthread_mutex_unlock(&p->mu);

        int frc = p->ops.forward(lane, L->rows, L->n, L->out);
        if (frc == 0) {
            size_t V = (size_t)p->vocab;
            for (int i = 0; i < L->nl; i++)
                memcpy(p->logits + (size_t)L->lmap[i] * V, L->out + (size_t)i * V,
                       V * sizeof(float));
        } else {
            const char *why = p->ops.error ? p->ops.error(lane) : NULL;
            snprintf(err, sizeof err, "%s", why && *why ? why : strerror(-frc));
        }
        atomic_fetch_add_explicit(&p->st_lane[L->idx], 1, memory_order_relaxed);

        pthread_mutex_lock(&p->mu);
        L->rc = frc;
        if (frc < 0) memcpy(L->err, err, sizeof err);
        if (--p->pending == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->mu);
    if (lane) p->ops.lane_free(lane);
    return NULL;
}

static void teardown(struct spool *p)
{
    pthread_mutex_lock(&p->mu);
    p->stop = true;
    for (int i = 0; i < p->nlanes; i++)
        pthread_cond_signal(&p->lanes[i].cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->nlanes; i++) {
        lane_t *L = &p->lanes[i];
        if (L->started) pthread_join(L->th, NULL);
        pthread_cond_destroy(&L->cv);
        free(L->rows);
        free(L->lmap);
        if (L->out_owned) free(L->out);
    }
    free(p->lanes);
    free(p->seen_lr);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->done);
    free(p);
}

int spool_new(spool_t **out, const spool_ops_t *ops, void *shared, int lanes, int max_rows,
              int max_slots, int vocab, char *err, size_t errlen)
{
    if (!ops || !ops->lane_new || !ops->forward || !ops->lane_free || !ops->seq_alloc ||
        !ops->seq_free)
        return errorf(err, errlen, -EINVAL, "stream pool: incomplete lane operations");
    if (lanes < 1 || lanes > SPOOL_MAX_LANES || max_rows < 1 || max_slots < 1 || vocab < 1)
        return errorf(err, errlen, -EINVAL,
                      "stream pool: %d lanes (1..%d), %d rows, %d slots, vocab %d are not valid",
                      lanes, SPOOL_MAX_LANES, max_rows, max_slots, vocab);
    if (lanes > max_slots) lanes = max_slots; /* a lane without a slot would never run */
    struct spool *p = calloc(1, sizeof(*p));
    if (!p) return errorf(err, errlen, -ENOMEM, "out of memory");
    p->ops = *ops;
    p->shared = shared;
    p->nlanes = lanes;
    p->per_lane = (max_slots + lanes - 1) / lanes;
    p->max_rows = max_rows;
    p->max_slots = max_slots;
    p->vocab = vocab;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->done, NULL);
    p->lanes = calloc((size_t)lanes, sizeof(lane_t));
    p->seen_lr = calloc((size_t)max_slots, 1);
    if (!p->lanes || !p->seen_lr) {
        p->nlanes = p->lanes ? lanes : 0;
        teardown(p);
        return errorf(err, errlen, -ENOMEM, "out of memory");
    }
    for (int i = 0; i < lanes; i++)
        pthread_cond_init(&p->lanes[i].cv, NULL);
    int rc = 0;
    for (int i = 0; i < lanes; i++) {
        lane_t *L = &p->lanes[i];
        L->p = p;
        L->idx = i;
        L->rows = calloc((size_t)max_rows, sizeof(fwd_row_t));
        L->lmap = calloc((size_t)p->per_lane, sizeof(int));
        if (!ops->out_buffer) {
            L->out = malloc((size_t)p->per_lane * (size_t)vocab * sizeof(float));
            L->out_owned = true;
        }
        if (!L->rows || !L->lmap || (!ops->out_buffer && !L->out)) {
            rc = errorf(err, errlen, -ENOMEM, "out of memory for lane %d", i);
            break;
        }
        if (pthread_create(&L->th, NULL, lane_main, L) != 0) {
            rc = errorf(err, errlen, -EAGAIN, "cannot start the thread of lane %d", i);
            break;
        }
        L->started = true;
    }
    if (rc == 0) {
        pthread_mutex_lock(&p->mu);
        while (p->nready < lanes)
            pthread_cond_wait(&p->done, &p->mu);
        for (int i = 0; i < lanes && rc == 0; i++) {
            if (p->lanes[i].rc < 0) {
                rc = p->lanes[i].rc;
                errorf(err, errlen, rc, "%s", p->lanes[i].err);
            }
        }
        pthread_mutex_unlock(&p->mu);
    }
    if (rc < 0) {
        teardown(p);
        return rc;
    }
    *out = p;
    return 0;
}

void spool_free(spool_t *p)
{
    if (p) teardown(p);
}

int spool_lanes(const spool_t *p)
{
    return p->nlanes;
}

int spool_slots_per_lane(const spool_t *p)
{
    return p->per_lane;
}

void *spool_lane(const spool_t *p, int i)
{
    return i >= 0 && i < p->nlanes ? p->lanes[i].lane : NULL;
}

int spool_lane_of(const spool_t *p, int slot, int *local)
{
    if (slot < 0 || slot >= p->max_slots) return -EINVAL;
    if (local) *local = slot % p->per_lane;
    return slot / p->per_lane;
}

int spool_seq_alloc(spool_t *p, int slot, int cap)
{
    int local, l = spool_lane_of(p, slot, &local);
    if (l < 0) return l;
    return p->ops.seq_alloc(p->lanes[l].lane, local, cap);
}

void spool_seq_free(spool_t *p, int slot)
{
    int local, l = spool_lane_of(p, slot, &local);
    if (l >= 0) p->ops.seq_free(p->lanes[l].lane, local);
}

int spool_forward(spool_t *p, const fwd_row_t *rows, int n, float *logits)
{
    if (n <= 0 || n > p->max_rows) return -EINVAL;
    uint64_t t0 = backend_now_ns();
    for (int i = 0; i < p->nlanes; i++)
        p->lanes[i].n = p->lanes[i].nl = 0;
    memset(p->seen_lr, 0, (size_t)p->max_slots);
    for (int r = 0; r < n; r++) {
        fwd_row_t row = rows[r];
        int local, l = spool_lane_of(p, row.slot, &local);
        if (l < 0) return -EINVAL;
        lane_t *L = &p->lanes[l];
        row.slot = local;
        if (row.logits_row >= 0) {
            /* the caller's logits buffer holds max_slots rows; each row written once */
            if (row.logits_row >= p->max_slots || p->seen_lr[row.logits_row] ||
                L->nl >= p->per_lane)
                return -EINVAL;
            p->seen_lr[row.logits_row] = 1;
            L->lmap[L->nl] = row.logits_row;
            row.logits_row = L->nl++;
        } else {
            row.logits_row = -1;
        }
        L->rows[L->n++] = row;
    }
    pthread_mutex_lock(&p->mu);
    p->logits = logits;
    p->pending = 0;
    for (int i = 0; i < p->nlanes; i++) {
        lane_t *L = &p->lanes[i];
        if (!L->n) continue;
        p->pending++;
        L->gen++;
        pthread_cond_signal(&L->cv);
    }
    while (p->pending > 0)
        pthread_cond_wait(&p->done, &p->mu);
    int rc = 0;
    for (int i = 0; i < p->nlanes && rc == 0; i++) {
        lane_t *L = &p->lanes[i];
        if (L->n && L->rc < 0) {
            rc = L->rc;
            snprintf(p->err, sizeof p->err, "lane %d: %s", i, L->err);
        }
    }
    pthread_mutex_unlock(&p->mu);
    uint64_t dt = backend_now_ns() - t0;
    atomic_fetch_add_explicit(&p->st_steps, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&p->st_ns_total, dt, memory_order_relaxed);
    atomic_store_explicit(&p->st_ns_last, dt, memory_order_relaxed);
    if (rc < 0) atomic_fetch_add_explicit(&p->st_errors, 1, memory_order_relaxed);
    return rc;
}

const char *spool_error(const spool_t *p)
{
    return p->err;
}

void spool_stats(const spool_t *p, spool_stats_t *out)
{
    struct spool *m = (struct spool *)p; /* atomics only */
    memset(out, 0, sizeof(*out));
    out->steps = atomic_load_explicit(&m->st_steps, memory_order_relaxed);
    out->step_ns_total = atomic_load_explicit(&m->st_ns_total, memory_order_relaxed);
    out->step_ns_last = atomic_load_explicit(&m->st_ns_last, memory_order_relaxed);
    out->errors = atomic_load_explicit(&m->st_errors, memory_order_relaxed);
    for (int i = 0; i < p->nlanes && i < SPOOL_MAX_LANES; i++)
        out->lane_steps[i] = atomic_load_explicit(&m->st_lane[i], memory_order_relaxed);
}
