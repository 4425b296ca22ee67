/*
 * backend.h - the seam between the engine and a compute backend: the model view a backend
 * reads, the table a backend implements, the entry point a separately built backend
 * library exports, and the one error helper every loader and backend uses.
 *
 * It is the only engine header cuda/ includes, and it is the ABI between the engine and
 * the dlopen'ed libinferd_cuda.so: change a struct here and bump BACKEND_ABI_VERSION (the
 * loader refuses a library built against another version). Plain C, also compiled as
 * C++ by nvcc: no designated array initializers, no VLAs.
 *
 * The model view. The engine maps the file (llama2.c checkpoint or GGUF) and describes
 * it: hyper-parameters (model_config_t) and, for every weight, a tensor_t that points into
 * the mapping with its element type and shape. Weights are never converted as a whole; a
 * backend reads them in place (the CPU) or uploads what it can run (a device), and refuses
 * at load what it cannot (BACKEND_ENOTSUP, naming the tensor and type).
 */
#ifndef INFERD_ENGINE_BACKEND_H
#define INFERD_ENGINE_BACKEND_H

#include "engine/dtype.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Version of every struct below; the backend library exports the one it was built with. */
#define BACKEND_ABI_VERSION 2u

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

/* CLOCK_MONOTONIC in nanoseconds: the engine's and every backend's time base (engine_now_ns,
 * event times, step times). Inline for the same reason as errorf. */
static inline uint64_t backend_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- the model view -------------------------------------------------------------------- */

/** One weight in place. A matrix of `rows` outputs by `cols` inputs is ne = {cols, rows}
 *  (GGUF's order: ne[0] is contiguous); a vector is ne = {n, 1}. data == NULL: absent. */
typedef struct {
    const void *data; /* into the model mapping (read-only), or NULL */
    uint32_t type;    /* dtype_t */
    int64_t ne[2];    /* {row length, rows} */
    size_t row_bytes; /* bytes of one row (dtype_row_bytes(type, ne[0])) */
    size_t nbytes;    /* row_bytes * ne[1] */
    char name[64];    /* GGUF tensor name ("blk.3.attn_q.weight"), also for llama2.c files */
} tensor_t;

/** Architectures (GGUF general.architecture). */
typedef enum { ARCH_LLAMA = 0, ARCH_QWEN2 = 1, ARCH_QWEN3 = 2 } model_arch_t;

/** RoPE layouts, numbered as ggml numbers them: NORM rotates adjacent pairs (x[2i],
 *  x[2i+1]) (llama, llama2.c); NEOX rotates halves (x[i], x[i + rope_dim/2]) (qwen2/3). */
typedef enum { ROPE_NORM = 0, ROPE_NEOX = 2 } rope_mode_t;

/** Hyper-parameters. Widths: q is n_heads * head_dim, k and v n_kv_heads * head_dim. */
typedef struct {
    int arch;       /* model_arch_t */
    int dim;        /* residual width (embedding length) */
    int hidden_dim; /* FFN width */
    int n_layers;
    int n_heads;    /* query heads */
    int n_kv_heads; /* key/value heads (GQA when < n_heads) */
    int head_dim;   /* per-head width of q, k and v */
    int vocab_size;
    int train_ctx; /* the model's context length (from the file) */
    int seq_len;   /* context in use: KV positions per sequence (--ctx-size) */
    int shared;    /* 1: the output projection is the token embedding */
    int qkv_bias;  /* 1: q, k, v have biases (qwen2) */
    int qk_norm;   /* 1: per-head RMSNorm of q and k before RoPE (qwen3) */
    float rms_eps; /* RMSNorm epsilon */
    int rope_dim;  /* rotated dims per head, even, <= head_dim */
    int rope_mode; /* rope_mode_t */
} model_config_t;

/** One transformer block's weights (absent ones have data == NULL). */
typedef struct {
    tensor_t attn_norm; /* (dim) */
    tensor_t wq;        /* (q_dim, dim) */
    tensor_t wk;        /* (kv_dim, dim) */
    tensor_t wv;        /* (kv_dim, dim) */
    tensor_t wo;        /* (dim, q_dim) */
    tensor_t bq;        /* (q_dim) qwen2 */
    tensor_t bk;        /* (kv_dim) qwen2 */
    tensor_t bv;        /* (kv_dim) qwen2 */
    tensor_t q_norm;    /* (head_dim) qwen3 */
    tensor_t k_norm;    /* (head_dim) qwen3 */
    tensor_t ffn_norm;  /* (dim) */
    tensor_t w_gate;    /* (hidden, dim) llama2.c's w1 */
    tensor_t w_down;    /* (dim, hidden) w2 */
    tensor_t w_up;      /* (hidden, dim) w3 */
} model_layer_t;

/** What a backend sees of a loaded model. */
typedef struct {
    model_config_t c;
    tensor_t tok_embd;      /* (vocab, dim) */
    tensor_t output_norm;   /* (dim) */
    tensor_t output;        /* (vocab, dim); a copy of tok_embd's view when shared */
    model_layer_t *layers;  /* (n_layers) */
    const float *rope_freq; /* (rope_dim / 2) angle per position of each rotated pair,
                               with the file's frequency scaling applied */
    uint64_t n_params;      /* weights (elements), for the model info */
    uint64_t weight_bytes;  /* bytes of every tensor above (the shared output once) */
} model_view_t;

/** Offsets of every tensor in model_layer_t, in declaration order. */
static const size_t model_layer_tensors[] = {
    offsetof(model_layer_t, attn_norm), offsetof(model_layer_t, wq),
    offsetof(model_layer_t, wk),        offsetof(model_layer_t, wv),
    offsetof(model_layer_t, wo),        offsetof(model_layer_t, bq),
    offsetof(model_layer_t, bk),        offsetof(model_layer_t, bv),
    offsetof(model_layer_t, q_norm),    offsetof(model_layer_t, k_norm),
    offsetof(model_layer_t, ffn_norm),  offsetof(model_layer_t, w_gate),
    offsetof(model_layer_t, w_down),    offsetof(model_layer_t, w_up),
};

/** Calls fn on every present tensor of m, the output once even when shared. */
static inline void model_view_each(const model_view_t *m, void (*fn)(const tensor_t *, void *),
                                   void *arg)
{
    fn(&m->tok_embd, arg);
    for (int l = 0; l < m->c.n_layers; l++) {
        for (size_t i = 0; i < sizeof model_layer_tensors / sizeof model_layer_tensors[0]; i++) {
            const tensor_t *t =
                (const tensor_t *)((const char *)&m->layers[l] + model_layer_tensors[i]);
            if (t->data) fn(t, arg);
        }
    }
    fn(&m->output_norm, arg);
    if (!m->c.shared) fn(&m->output, arg);
}

/* ---- the backend table ------------------------------------------------------------------- */

/** One row of a batched forward: feed `token` at `pos` of sequence `slot`. */
typedef struct {
    int slot;
    int pos;
    int token;
    int logits_row; /* index into the logits output, or -1 when not needed */
} fwd_row_t;

/** Device figures a backend caches for metrics (reading them never touches the device). */
typedef struct {
    int has_memory;             /* 1: the mem_* fields are filled */
    uint64_t mem_used;          /* device memory in use (all processes), bytes */
    uint64_t mem_total;         /* device memory, bytes */
    uint64_t mem_backend;       /* bytes this backend allocated on the device */
    uint64_t gpu_steps;         /* lane steps timed on the device */
    uint64_t gpu_step_ns_total; /* device time of those steps, summed */
    uint64_t gpu_step_ns_last;  /* device time of the last one */
} backend_stats_t;

/** How a backend should run: device ordinal, streams, weight format on the device. */
typedef struct {
    int device;  /* device ordinal (CUDA) */
    int streams; /* lanes, one stream and host thread each; 0 = 4 */
    int bf16;    /* 1: matrices stored and multiplied in bf16 on the device */
    int kv_f16;  /* 1: the KV cache holds fp16 keys and values (the CPU backend only) */
} backend_opts_t;

typedef struct pool pool_t; /* the engine's worker pool (CPU backend only) */

/** Returned by load when the backend cannot run this model (a tensor type, an
 *  architecture feature): the engine may fall back to the CPU. */
#define BACKEND_ENOTSUP (-ENOTSUP)

typedef struct backend backend_t;
struct backend {
    const char *name;   /* "cpu", "cuda" */
    const char *device; /* reported device */
    /** Prepare weights and state for up to max_rows rows per forward and max_slots
     *  sequences of m->c.seq_len positions each, the whole KV cache allocated here, once.
     *  0, or -ENOMEM, -EINVAL, BACKEND_ENOTSUP (err names the tensor or feature), -ENODEV,
     *  -EIO. `pool` is the engine's worker pool (a device backend ignores it). */
    int (*load)(void **ctx, const model_view_t *m, const backend_opts_t *o, pool_t *pool,
                int max_rows, int max_slots, char *err, size_t errlen);
    /** Reserve `slot` for positions [0, cap): 0, or -EINVAL (cap beyond the context). */
    int (*seq_alloc)(void *ctx, int slot, int cap);
    void (*seq_free)(void *ctx, int slot);
    /** Forward n rows; rows of one slot must be in increasing pos order and every
     *  earlier pos must already be in the cache or in this batch. logits: (n_logits, vocab). */
    int (*forward)(void *ctx, const fwd_row_t *rows, int n, float *logits);
    void (*free)(void *ctx);
    /** Optional: fill device figures from cached values (never touches the device). */
    void (*stats)(void *ctx, backend_stats_t *out);
    /** Optional: why the last forward failed (driver thread), or NULL. */
    const char *(*error)(void *ctx);
    /** Bytes of KV cache load allocated (for the start-up report). */
    uint64_t (*kv_bytes)(void *ctx);
};

/* ---- a backend built as a separate library -------------------------------------------------- */

/** What a backend library exports under the symbol `inferd_backend_entry`. */
typedef struct {
    uint32_t abi; /* BACKEND_ABI_VERSION it was built with */
    /** Is device `device` usable? 0 with a description in info, or -ENODEV and the reason. */
    int (*probe)(int device, char *info, size_t infolen);
    /** Can this backend run m? 0, or BACKEND_ENOTSUP naming the tensor, type or feature.
     *  Pure host arithmetic: callable without a device. */
    int (*check)(const model_view_t *m, const backend_opts_t *o, char *why, size_t whylen);
    const backend_t *backend; /* its table; load runs check first */
} backend_lib_t;

#ifdef __cplusplus
}
#endif
#endif
