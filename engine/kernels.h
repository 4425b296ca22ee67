/*
 * kernels.h - the arithmetic under every matrix product, per weight type and per ISA.
 *
 * A product out = W x runs on W's blocks in place. The activations x are first put in
 * the format the weight type's dot product consumes, as ggml does: F32 weights take f32
 * rows, F16 and BF16 weights rows rounded to f16 and bf16 as ggml rounds them (held both as
 * the f32 values they round to and as 16-bit values, KERNEL_VEC_F16R and KERNEL_VEC_BF16R:
 * each value is exact in f32, so the products are ggml's, and the tiles convert only the
 * weights instead of every activation block again for every weight row), Q4_0/Q5_0/Q8_0/
 * IQ4_NL weights Q8_0 blocks,
 * Q4_1/Q5_1 weights Q8_1 blocks, the k-quants Q8_K blocks. Each output element is one
 * call of the type's dot on one weight row and one activation row: its reduction order
 * depends on n alone, never on how many rows the batch has or which thread runs it
 * (batch invariance). The quantized dots sum integer products exactly and combine them
 * in one fixed float order shared by every ISA, so their generic, AVX2 and AVX-512 versions
 * agree bit for bit: the k-quants and Q4_1/Q5_1 in a scalar chain over blocks, Q8_0 in
 * four chains (block b's exact sum s, c = fma(d_w * d_x, (float)s, c) on chain b % 4, the
 * chains summed (c0 + c1) + (c2 + c3): the many-row tiles then hold activation rows in their
 * lanes and need no step across lanes; one chain would leave the single row waiting on the
 * fma latency), the other symmetric 32-blocks (Q4_0, Q5_0, IQ4_NL) in eight lanes (lane l:
 * the block's exact sum of elements 4l..4l+3 times d_w * d_x) summed at the end. The F16 and
 * BF16 dots run
 * four independent 8-lane chains (8-element block k into chain k % 4; one chain would leave
 * a core waiting on the multiply-add latency, ~2 weights per 4 cycles), summed lane by lane
 * as (c0 + c1) + (c2 + c3), then across lanes, then the n % 8 tail in order. The F32 dot
 * (and attention's scores) runs one 8-lane chain over the blocks in order, then across
 * lanes, then the tail: at one row it is memory-bound either way, and one accumulator per
 * output lets a tile keep 4 weight rows x 3 activation rows in registers (four chains
 * shrank the AVX2 tiles to 1 x 3 and cost 19% of stories15M's decode at 16 streams).
 * Each order is the same on every ISA and in every tile, with FMA on AVX2/AVX-512 and
 * without it (and with another across-lane order) in the generic version, so those differ
 * in the last bits while each ISA's result for a row is one fixed value.
 *
 * Dequantization (dequant) is bit-for-bit llama.cpp's reference (gguf-py/gguf/quants.py):
 * it feeds embedding lookups and the tests.
 *
 * To specialize: a type's table row may carry `mm` (tiles of weight rows x activation rows
 * that share loads and unpacking, never arithmetic) besides `dot`; kernels_isa() picks the
 * ISA once per process (AVX-512 F/BW/VL/VNNI, AVX2+FMA+F16C, or generic).
 */
#ifndef INFERD_ENGINE_KERNELS_H
#define INFERD_ENGINE_KERNELS_H

#include "engine/backend.h"

#include <stddef.h>
#include <stdint.h>

/** Instruction sets a kernel table is built for. */
typedef enum {
    KERNEL_GENERIC = 0,
    KERNEL_AVX2 = 1,   /* AVX2 + FMA + F16C */
    KERNEL_AVX512 = 2, /* AVX-512 F/BW/VL/VNNI besides: k-quants, Q8_0/Q4_0, float tiles */
    KERNEL_COUNT
} kernel_isa_t;

/** Activation formats that are no GGUF type (vec_type of F16 and BF16 weights): the row's n
 *  values rounded to fp16 (bf16) as ggml rounds them, as n f32 (for the tiles over many rows)
 *  and then as n 16-bit values (for one row's dot, which keeps a long row in L1 this way). */
#define KERNEL_VEC_F16R 0x10000u
#define KERNEL_VEC_BF16R 0x10001u

/** Product of weight rows [i0, i1) with nrows activation rows (already in vec_type):
 *  out[r * ostride + i] for every r < nrows. */
typedef void (*kernel_mm_fn)(float *out, int ostride, const void *x, size_t xstride, int nrows,
                             const tensor_t *w, int i0, int i1);

/** What one weight type needs. */
typedef struct {
    uint32_t type;     /* the weight's dtype_t */
    uint32_t vec_type; /* the activation format its dot consumes */
    /** out[0..n) = the row's values; n a multiple of the block. */
    void (*dequant)(float *out, const void *row, int64_t n);
    /** Dot of n elements of weight row w and activation row x. */
    float (*dot)(int n, const void *w, const void *x);
    kernel_mm_fn mm; /* optional tiled product with dot's exact per-element arithmetic */
} kernel_type_t;

/** The ISA in use (chosen once from the CPU, or forced). */
kernel_isa_t kernels_isa(void);
/** Its name ("generic", "avx2", "avx512"), for logs and benchmarks. */
const char *kernels_isa_name(kernel_isa_t isa);
/** Force an ISA for the whole process (tests compare the paths): 0, or -ENOTSUP when this
 *  CPU lacks it. Call before any product runs. */
int kernels_force(kernel_isa_t isa);
/** The kernels of weight type t under the ISA in use, or NULL when inferd cannot run t. */
const kernel_type_t *kernels_for(uint32_t t);
/** Bytes of one activation row of n elements in vec_type (n a multiple of its block). */
size_t kernels_act_row_bytes(uint32_t vec_type, int64_t n);
/** The most bytes an activation row of n elements takes in any vec_type (scratch sizing). */
size_t kernels_act_row_bytes_max(int64_t n);
/** Convert an f32 row of n elements into vec_type (as ggml's quantize_row_* / converters). */
void kernels_quantize_row(uint32_t vec_type, void *dst, const float *x, int64_t n);
/** out[r][i] = W[i] . x[r] for r < nrows, i in [i0, i1): through the type's mm or dot.
 *  x: (nrows, xstride bytes) in the weight's vec_type. */
void kernels_matmul(float *out, int ostride, const void *x, size_t xstride, int nrows,
                    const tensor_t *w, int i0, int i1);

/** IEEE half and bfloat16 conversions as ggml does them (round to nearest even). */
float fp16_to_fp32(uint16_t h);
uint16_t fp32_to_fp16(float f);
float bf16_to_fp32(uint16_t h);
uint16_t fp32_to_bf16(float f);

/* ---- attention (f32 rows of the KV cache) ------------------------------------------------- */

/** Attention scores: att[p] = (q . k[p * kstride ..]) * scale for p < npos, each dot in the F32
 *  dot's order (one 8-lane chain, above) on every ISA. */
void att_scores(float *att, const float *q, const float *k, size_t kstride, int npos, int n,
                float scale);
/** att_scores for g heads over one key sequence (grouped-query attention): head j from
 *  q + j * qstride into att + j * astride; the keys are read once per block of positions for
 *  all g heads. Every score has att_scores' bits. */
void att_scores_group(float *att, size_t astride, const float *q, size_t qstride, int g,
                      const float *k, size_t kstride, int npos, int n, float scale);
/** Attention mix for g heads over one value sequence (grouped-query attention; g = 1 for
 *  one head): head j's out_j = out + j * ostride, (n), from att_j = att + j * astride and
 *  inv[j]: out_j[i] = sum over p < npos, in order from 0.0f, of (att_j[p] * inv[j]) *
 *  v[p * vstride + i] (a mul then an add per term, the same bits on every path and for every
 *  g); the values are read once per block of positions for all g heads. */
void att_mix_group(float *out, size_t ostride, const float *att, size_t astride, const float *inv,
                   int g, const float *v, size_t vstride, int npos, int n);

/** att_scores_group over keys kept as IEEE half (an F16 KV cache): every score has the bits
 *  att_scores_group gives on the keys' f32 values (fp16_to_fp32), on every ISA. */
void att_scores_group_f16(float *att, size_t astride, const float *q, size_t qstride, int g,
                          const uint16_t *k, size_t kstride, int npos, int n, float scale);
/** att_mix_group over values kept as IEEE half: the bits att_mix_group gives on their f32
 *  values, on every ISA. */
void att_mix_group_f16(float *out, size_t ostride, const float *att, size_t astride,
                       const float *inv, int g, const uint16_t *v, size_t vstride, int npos, int n);
/** dst[i] = fp32_to_fp16(x[i]) for i < n (round to nearest even; every ISA the same bits). */
void kernels_to_f16(uint16_t *dst, const float *x, int n);

/* ---- exponential and the element-wise steps built on it ------------------------------------
 * kernels_exp is the engine's e^x: one definition that the generic C and the AVX2 and AVX-512
 * paths compute to the same bits (kernels.c says how), so a step that uses it gives one result
 * for a row whichever ISA runs it. Within 1 ULP of e^x correctly rounded over all floats, ranges
 * as expf: +inf above ~88.72, 0 below ~-103.97, NaN -> NaN, -inf -> 0. */

/** e^x as every ISA computes it (the scalar definition of the vector kernels below). */
float kernels_exp(float x);
/** x[i] = kernels_exp((x[i] - m) * s) for i < n (softmax: attention with s = 1, sampling with
 *  s = 1 / temperature). */
void kernels_exp_sub(float *x, int n, float m, float s);
/** SwiGLU: g[i] = g[i] / (1.0f + kernels_exp(-g[i])) * u[i] for i < n, in that order. */
void kernels_silu_mul(float *g, const float *u, int n);
/** The largest of x[0..n), n >= 1 (exact in any order; with a NaN in x, or +0 and -0 both the
 *  largest, which one comes back depends on the ISA). */
float kernels_max(const float *x, int n);

#endif
