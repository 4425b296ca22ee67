/*
 * internal.h - engine internals shared by the engine's files and its tests.
 * Not part of the public API (engine.h is).
 */
#ifndef INFERD_ENGINE_INTERNAL_H
#define INFERD_ENGINE_INTERNAL_H

#include "engine/backend.h"
#include "engine/gguf.h"
#include "engine/wmap.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- model (model.c) ---------------------------------------------------- */

/** File formats (the file's magic decides). */
typedef enum { MODEL_LLAMA2C = 1, MODEL_GGUF = 2 } model_format_t;

/** A loaded model: the view backends read, and what the loader keeps to release it. */
typedef struct {
    model_view_t v;
    model_format_t format;
    gguf_t *gguf;          /* GGUF: the open file (metadata incl. tokenizer.ggml.*, mappings) */
    wmap_t map;            /* llama2.c: the file (map.base NULL for GGUF: gguf holds its own) */
    model_layer_t *layers; /* (n_layers) storage behind v.layers */
    float *rope_freq;      /* (rope_dim / 2) storage behind v.rope_freq */
    char arch_name[16];    /* "llama", "qwen2", "qwen3" */
    char quant[64];        /* weight type(s) for the model info ("F32", "Q4_K_M") */
} model_t;

/** Map and validate a checkpoint; ctx_size = KV positions per sequence (0: the model's
 *  context capped at MODEL_DEFAULT_CTX). 0, or negative errno with a message in err. */
int model_load(model_t *m, const char *path, int ctx_size, char *err, size_t errlen);
/** The model view of an open GGUF file: architecture, hyper-parameters, every tensor of
 *  the table checked. On success m owns g (model_dispose frees it); on failure the caller
 *  still does. 0 or -EINVAL / -ENOMEM with the file, key or tensor named in err. */
int model_from_gguf(model_t *m, gguf_t *g, int ctx_size, char *err, size_t errlen);
/** A GGUF image in memory (kept, not copied) as a model: the fuzz harness's entry point for
 *  whole models. 0, or -EINVAL / -ENOMEM with the reason in err. */
int model_parse_gguf(model_t *m, const void *buf, size_t size, int ctx_size, char *err,
                     size_t errlen);
/** Validate a llama2.c checkpoint held in memory (size bytes); views point into buf. */
int model_parse(model_t *m, const void *buf, size_t size, int ctx_size, char *err, size_t errlen);
void model_dispose(model_t *m);

/** Default context when --ctx-size is not given: the model's, capped at this. */
#define MODEL_DEFAULT_CTX 4096

/** One row of the tensor table (model.c): every weight's GGUF name ("blk.%d." prefix when
 *  per layer), where it lives in the view, its shape in units of the hyper-parameters
 *  and which models have it. The llama2.c reader, the GGUF reader and mkmodel's tests all
 *  go through this one table. */
typedef struct {
    const char *name;
    size_t off;     /* offsetof in model_layer_t (per_layer) or model_view_t */
    int per_layer;  /* 1: one per block */
    int cols, rows; /* ne[0], ne[1] as D_* units (model_spec_dim) */
    int need;       /* NEED_* (model.c) */
} model_tensor_spec_t;

/** The table and its length. */
const model_tensor_spec_t *model_tensor_specs(size_t *n);
/** Elements of a D_* dimension for config c. */
int64_t model_spec_dim(const model_config_t *c, int d);
/** Whether a model with config c must have the tensor. */
bool model_spec_wanted(const model_config_t *c, const model_tensor_spec_t *s);
/** Where the tensor of `layer` goes in m. */
tensor_t *model_spec_slot(model_t *m, const model_tensor_spec_t *s, int layer);
/** The tensor's name for `layer` ("blk.3.attn_q.weight"). */
void model_spec_name(const model_tensor_spec_t *s, int layer, char *out, size_t len);
/** Hyper-parameter sanity (positive, capped, heads divide, RoPE fits): 0 or -EINVAL. */
int model_check_config(const model_config_t *c, char *err, size_t errlen);
/** Set c.seq_len from --ctx-size (0: the model's, capped at MODEL_DEFAULT_CTX): 0 or -EINVAL. */
int model_set_context(model_t *m, int ctx_size, char *err, size_t errlen);
/** Fill the RoPE angles per position: base, linear freq_scale, per-pair factors (or NULL). */
int model_rope_init(model_t *m, float base, float freq_scale, const float *factors, char *err,
                    size_t errlen);
/** Sum n_params and weight_bytes over the view. */
void model_count(model_t *m);
/** The CPU engine's weights in transparent huge pages (wmap.h): mode "auto" (NULL) copies
 *  the mapped file(s) into huge pages when the kernel offers them, else leaves them mapped;
 *  "on" is an error (-ENOTSUP) without them or when the copy fails; "off" leaves them
 *  mapped. note says what was done (for the start-up log). The model's pointers stay valid
 *  (same addresses); call it before threads read the weights. */
int model_hugepages(model_t *m, const char *mode, char *note, size_t notelen, char *err,
                    size_t errlen);
/** model_hugepages' modes; model_hugepages_mode parses one ("auto" or NULL, "on", "off"), or
 *  is -EINVAL with err naming the value. */
enum { HUGEPAGES_AUTO = 0, HUGEPAGES_ON = 1, HUGEPAGES_OFF = 2 };
int model_hugepages_mode(const char *mode, char *err, size_t errlen);

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
/** One chunk of a job: chunk c of n (a chunk, not a thread: any thread may run it). */
typedef void (*pool_fn)(void *arg, int c, int n);

/** nthreads total including the caller of pool_run: 0, -ENOMEM or -EAGAIN (no thread). */
int pool_new(pool_t **out, int nthreads);
void pool_free(pool_t *p);
int pool_size(const pool_t *p);
/** Run fn(arg, c, nchunks) once for every c < nchunks on the pool's threads (the caller
 *  among them), chunks claimed one at a time; returns when all are done. */
void pool_run_chunks(pool_t *p, pool_fn fn, void *arg, int nchunks);
/** pool_run_chunks with one chunk per thread. */
void pool_run(pool_t *p, pool_fn fn, void *arg);

/* ---- backends ------------------------------------------------------------ */

extern const backend_t backend_cpu; /* cpu_backend.c */

/** Check the CUDA driver (libcuda.so.1, cuInit, a device count > 0), then dlopen the
 *  backend library ($INFERD_CUDA_LIB, else the path it was built at, else
 *  libinferd_cuda.so on the library path) and check its ABI version. 0 and *out, or
 *  -ENODEV with the reason in why (backend_lib.c). */
int backend_lib_open(const backend_lib_t **out, char *why, size_t whylen);

/* ---- device selection (engine.c) ----------------------------------------- */

typedef enum { DEVICE_AUTO = 1, DEVICE_CPU, DEVICE_CUDA } device_kind_t;

/** Parse "auto" | "cpu" | "cuda" | "cuda:N" (N decimal, 0..255). Returns the kind and sets
 *  *index (0 unless cuda:N), or -EINVAL. */
int device_parse(const char *s, int *index);

#endif
