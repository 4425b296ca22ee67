/*
 * internal.h - engine internals shared by the engine's files and its tests.
 * Not part of the public API (engine.h is).
 */
#ifndef INFERD_ENGINE_INTERNAL_H
#define INFERD_ENGINE_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <stdbool.h>
#include <stdarg.h>
#include <stdio.h>

/* Formats a reason into err (may be NULL) and returns rc: the one way every loader and
 * backend reports an error. Inline so the separately loaded CUDA library shares it too. */
static inline int errorf(char *err, size_t errlen, int rc, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static inline int errorf(char *err, size_t errlen, int rc, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return rc;
}

/* ---- model (model.c) ---------------------------------------------------- */

/** The 7-int32 llama2.c header, validated. */
typedef struct {
    int dim;        /* transformer width */
    int hidden_dim; /* FFN width */
    int n_layers;
    int n_heads;    /* query heads */
    int n_kv_heads; /* key/value heads (GQA when < n_heads) */
    int vocab_size; /* always positive here; `shared` says whether wcls = embedding */
    int seq_len;    /* max context */
    int shared;     /* 1: classifier shares the token embedding */
} model_config_t;

/** Pointers into the mmapped checkpoint (read-only). */
typedef struct {
    const float *token_embedding; /* (vocab, dim) */
    const float *rms_att;         /* (layer, dim) */
    const float *wq;              /* (layer, dim, dim)  [out][in] */
    const float *wk;              /* (layer, kv_dim, dim) */
    const float *wv;              /* (layer, kv_dim, dim) */
    const float *wo;              /* (layer, dim, dim) */
    const float *rms_ffn;         /* (layer, dim) */
    const float *w1;              /* (layer, hidden, dim) */
    const float *w2;              /* (layer, dim, hidden) */
    const float *w3;              /* (layer, hidden, dim) */
    const float *rms_final;       /* (dim) */
    const float *wcls;            /* (vocab, dim) */
} model_weights_t;

typedef struct {
    model_config_t c;
    model_weights_t w;
    void *map;       /* mmap base */
    size_t map_size; /* file size */
    uint64_t n_params;
} model_t;

/** Map and validate a checkpoint. 0, or negative errno with a message in err. */
int model_load(model_t *m, const char *path, char *err, size_t errlen);
/** Validate a checkpoint held in memory (size bytes); sets m->w into buf. */
int model_parse(model_t *m, const void *buf, size_t size, char *err, size_t errlen);
void model_dispose(model_t *m);

/* ---- tokenizer, chat templates, stop strings: tokenizer.h ------------------- */

#include "tokenizer.h"

/* ---- sampler (sampler.c) ------------------------------------------------ */

typedef struct {
    uint64_t s[2]; /* xorshift128+ state */
} rng_t;

void rng_seed(rng_t *r, uint64_t seed);
uint64_t rng_next(rng_t *r);
float rng_float(rng_t *r); /* [0, 1) with 24 bits */

typedef struct {
    int index;
    float prob;
} prob_index_t;

typedef struct {
    float temperature;
    float top_p;
    int top_k;
} sample_params_t;

/** Sample one token from logits (vocab n); logits are overwritten. scratch: (n). */
int sample_token(float *logits, int n, const sample_params_t *p, rng_t *rng, prob_index_t *scratch);
int sample_argmax(const float *logits, int n);

/* ---- thread pool (pool.c) ----------------------------------------------- */

typedef struct pool pool_t;
typedef void (*pool_fn)(void *arg, int tid, int nthreads);

/** nthreads total including the caller of pool_run. */
int pool_new(pool_t **out, int nthreads);
void pool_free(pool_t *p);
int pool_size(const pool_t *p);
/** Run fn on every thread (tid 0 = the caller) and wait for all. */
void pool_run(pool_t *p, pool_fn fn, void *arg);

/* ---- backend seam ------------------------------------------------------- */

struct engine_device_stats; /* engine.h */

/** One row of a batched forward: feed `token` at `pos` of sequence `slot`. */
typedef struct {
    int slot;
    int pos;
    int token;
    int logits_row; /* index into the logits output, or -1 when not needed */
} fwd_row_t;

typedef struct backend backend_t;
struct backend {
    const char *name;   /* "cpu" */
    const char *device; /* reported device */
    /** Prepare weights and state for up to max_rows rows and max_slots sequences. */
    int (*load)(void **ctx, const model_t *m, pool_t *pool, int max_rows, int max_slots, char *err,
                size_t errlen);
    /** Allocate the KV cache of `slot` for positions [0, cap). 0 or -ENOMEM. */
    int (*seq_alloc)(void *ctx, int slot, int cap);
    void (*seq_free)(void *ctx, int slot);
    /** Forward n rows; rows of one slot must be in increasing pos order and every
     *  earlier pos must already be in the cache or in this batch. logits: (n_logits, vocab). */
    int (*forward)(void *ctx, const fwd_row_t *rows, int n, float *logits);
    void (*free)(void *ctx);
    /** Optional: fill device figures from cached values (never touches the device). */
    void (*stats)(void *ctx, struct engine_device_stats *out);
    /** Optional: why the last forward failed (driver thread), or NULL. */
    const char *(*error)(void *ctx);
};

extern const backend_t backend_cpu;

/* ---- device selection (engine.c) ----------------------------------------- */

typedef enum { DEVICE_AUTO = 1, DEVICE_CPU, DEVICE_CUDA } device_kind_t;

/** Parse "auto" | "cpu" | "cuda" | "cuda:N" (N decimal, 0..255). Returns the kind and sets
 *  *index (0 unless cuda:N), or -EINVAL. */
int device_parse(const char *s, int *index);

/* ---- kernels (kernels.c), exposed for tests ----------------------------- */

/** out[r][i] = sum_j w[i][j] * x[r][j] for r < nrows, i in [i0, i1). Fixed reduction
 *  order per element, independent of nrows. x: (nrows, n), out: (nrows, ostride). */
void matmul_rows(float *out, int ostride, const float *x, int nrows, const float *w, int n, int i0,
                 int i1);
/** Dot product with the same reduction order as matmul_rows. */
float dot_fixed(const float *a, const float *b, int n);

#endif
