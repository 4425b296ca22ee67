/*
 * stream_pool.h - the host side of the CUDA backend: a pool of lanes, each one a host
 * worker thread that owns one device stream (and everything created on it: cuBLAS
 * handle, scratch buffers, captured graphs, the KV cache of its slots).
 *
 * Plain C with no CUDA dependency, so the dispatch logic is built and unit-tested on
 * every machine: the lane operations are a table (spool_ops_t); the CUDA backend
 * provides one, the tests put the CPU backend (or a fake) behind it.
 *
 * Slots. The engine's slots [0, max_slots) are split into contiguous blocks, one per
 * lane: slot s belongs to lane s / per_lane, where it is local slot s % per_lane.
 * The engine fills the lowest free slot first, so a few sequences share lane 0 (one
 * batched forward, weights read once) and only a full batch spreads over every lane.
 *
 * A step. spool_forward() (engine driver thread) splits the rows by lane, keeping
 * their order (rows of one slot stay in increasing pos order), renumbers each lane's
 * logits rows compactly, wakes the lanes that have rows, and waits for all of them.
 * Each lane thread runs ops->forward on its rows, then copies its compact logits into
 * the caller's logits rows. The driver never calls into the device; the reactor never
 * sees any of this (the engine's completion queue carries the results on).
 */
#ifndef INFERD_CUDA_STREAM_POOL_H
#define INFERD_CUDA_STREAM_POOL_H

#include "engine/backend.h"

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct spool spool_t;

/** What one lane can do. lane_new, forward and lane_free run on the lane's own thread;
 *  seq_alloc and seq_free run on the caller's thread while the lane is idle, so they must
 *  not use the lane's stream (host bookkeeping only). */
typedef struct {
    /** Create lane `idx` for up to max_rows rows per forward and max_slots local slots. */
    int (*lane_new)(void **lane, void *shared, int idx, int max_rows, int max_slots, char *err,
                    size_t errlen);
    /** Reserve the cache of local `slot` for positions [0, cap). 0, -EINVAL or -ENOMEM. */
    int (*seq_alloc)(void *lane, int slot, int cap);
    void (*seq_free)(void *lane, int slot);
    /** Forward n rows (local slots; logits_row compact in [0, n_logits)); logits:
     *  (n_logits, vocab). 0 or a negative errno (the lane stays usable unless it says
     *  otherwise through `error`). */
    int (*forward)(void *lane, const fwd_row_t *rows, int n, float *logits);
    void (*lane_free)(void *lane);
    /** Optional: a host buffer of at least max_slots * vocab floats the lane's forward
     *  writes fastest into (pinned memory for a device); NULL = the pool allocates one. */
    float *(*out_buffer)(void *lane);
    /** Optional: text of the lane's last error (valid until its next forward). */
    const char *(*error)(void *lane);
} spool_ops_t;

/** Counters, read with relaxed atomics. */
typedef struct {
    uint64_t steps;         /* spool_forward calls that ran rows */
    uint64_t step_ns_total; /* wall time of those calls */
    uint64_t step_ns_last;
    uint64_t lane_steps[64]; /* forwards run by each lane (first 64 lanes) */
    uint64_t errors;         /* forwards that failed */
} spool_stats_t;

#define SPOOL_MAX_LANES 64

/** Start `lanes` lane threads and create each lane on its thread. shared is handed to
 *  every lane_new. Slots per lane: ceil(max_slots / lanes); a lane gets max_rows rows at
 *  most (all of a step's prefill can land on one lane). vocab sizes the logits copies.
 *  Returns 0, -EINVAL (bad sizes), -ENOMEM, -EAGAIN (thread), or the first lane_new
 *  error (message in err); on failure everything started is torn down. */
int spool_new(spool_t **out, const spool_ops_t *ops, void *shared, int lanes, int max_rows,
              int max_slots, int vocab, char *err, size_t errlen);

/** Stop the lane threads (each frees its lane on its own thread). NULL is a no-op. */
void spool_free(spool_t *p);

int spool_lanes(const spool_t *p);
int spool_slots_per_lane(const spool_t *p);

/** The lane owning `slot` (and its local slot in *local), or -EINVAL. */
int spool_lane_of(const spool_t *p, int slot, int *local);

/** The lane object of lane i (for the backend's own getters), or NULL. */
void *spool_lane(const spool_t *p, int i);

/** Backend-table shaped entry points (same contracts as backend_t). */
int spool_seq_alloc(spool_t *p, int slot, int cap);
void spool_seq_free(spool_t *p, int slot);
int spool_forward(spool_t *p, const fwd_row_t *rows, int n, float *logits);

/** The message of the last failed spool_forward ("" if none). Driver thread only. */
const char *spool_error(const spool_t *p);

void spool_stats(const spool_t *p, spool_stats_t *out);

#ifdef __cplusplus
}
#endif
#endif
