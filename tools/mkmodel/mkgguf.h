/*
 * mkgguf.h - random-weight GGUF models for tests and benchmarks: any architecture inferd
 * runs (llama, qwen2, qwen3), any shape, any per-tensor type mix, written through
 * gguf_write.h. Quantized tensors are random *valid* blocks (finite fp16 scales, every
 * bit pattern of the quants possible) sized so the dequantized weights have the standard
 * deviation a trained layer of that width would; mixes follow llama.cpp's quantize
 * (src/llama-quant.cpp): Q4_K_M and Q5_K_M, with its fallbacks for rows that are not a
 * multiple of 256.
 *
 * The vocabulary is written separately (mkgguf_vocab_spm for mkmodel's built-in one), so
 * an importer of real tokenizer.json vocabularies can write its own keys into the same
 * writer before mkgguf_write.
 */
#ifndef INFERD_TOOLS_MKGGUF_H
#define INFERD_TOOLS_MKGGUF_H

#include "gguf_write.h"

#include <stdint.h>

/** What to generate. Zero fields take the defaults noted. */
typedef struct {
    const char *arch; /* "llama" (default), "qwen2", "qwen3" */
    int dim, hidden, layers, heads, kv_heads, vocab, ctx;
    int head_dim;             /* attention.key_length; 0 = dim / heads */
    int rope_dim;             /* 0 = head_dim */
    float rope_base;          /* 0 = 10000 */
    const char *rope_scaling; /* NULL/"none", "linear", "llama3" */
    float rope_factor;        /* linear / llama3 factor (default 8 for llama3, 2 for linear) */
    int llama3_keys;          /* llama3: write the scaling keys instead of rope_freqs.weight */
    float rms_eps;            /* 0 = 1e-5 */
    int unshared;             /* a separate output.weight */
    const char *type;         /* matrices: a ggml type name or "Q4_K_M" / "Q5_K_M"; NULL = F32 */
    const char *const *overrides; /* "tensor.name=TYPE" entries, NULL-terminated, or NULL */
    uint64_t seed;
    const char *name; /* general.name */
} mkgguf_opts_t;

/** Add hyper-parameters and every weight to w. 0, or -EINVAL with the reason in err. */
int mkgguf_model(gguf_writer_t *w, const mkgguf_opts_t *o, char *err, size_t errlen);

/** A SentencePiece ("llama") vocabulary as llama.cpp's converter writes it: tokens (spaces
 *  as U+2581), scores, token types (<unk> unknown, <s> </s> control, <0xXX> byte,
 *  <unusedN> unused, the rest normal), BOS 1, EOS 2, UNK 0, add_bos_token. */
int mkgguf_vocab_spm(gguf_writer_t *w, char *const *pieces, const float *scores, int n);

/** The ggml type of a matrix called `name` (layer `layer` of `layers`, row length ncols)
 *  under mix `type` (exposed for the tests of the mix rules). -1 for an unknown type. */
int mkgguf_tensor_type(const char *type, const char *name, int layer, int layers, int64_t ncols,
                       int tied);

#endif
