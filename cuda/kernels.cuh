/*
 * kernels.cuh - the CUDA kernels of one llama2 forward (CUDA C++, internal to cuda/).
 * Every launcher enqueues on `s`, takes its output first (llama2.c style) and returns
 * cudaGetLastError() so the caller's check macro sees launch failures. Shapes are in
 * rows; `rows` is the step's row table in device memory (int4: slot, pos, token,
 * logits_row), which is how a captured graph sees new positions on every replay.
 * Kernels that feed a matrix product write either fp32 (out) or bf16 (out16, when not
 * NULL) so the bf16 path needs no separate conversion launches.
 * Reductions run in a fixed order for a fixed launch shape: a row's result does not
 * depend on the other rows of the batch.
 */
#ifndef INFERD_CUDA_KERNELS_CUH
#define INFERD_CUDA_KERNELS_CUH

#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stddef.h>

/** x[r] = emb[token_r]. x: (n, dim). */
cudaError_t k_embed(cudaStream_t s, float *x, const float *emb, const int4 *rows, int n, int dim);

/** out[r] = w * x[r] / rms(x[r]). x: (n, dim); out or out16: (n, dim). */
cudaError_t k_rmsnorm(cudaStream_t s, float *out, __nv_bfloat16 *out16, const float *x,
                      const float *w, int n, int dim);

/** RoPE on the q and k parts of qkv (n, qkv_stride = dim + 2 kvd) in place, then k and v
 *  into the cache: kc/vc + slot * slot_stride + layer_off + pos * kvd. freq: (hs / 2). */
cudaError_t k_rope_kv(cudaStream_t s, float *qkv, const int4 *rows, int n, int dim, int kvd, int hs,
                      const float *freq, float *kc, float *vc, size_t slot_stride,
                      size_t layer_off);

/** Causal attention of each row's query heads over its cached positions [0, pos]
 *  (head h reads kv head h / (n_heads / n_kv_heads)). out/out16: (n, dim). */
cudaError_t k_attention(cudaStream_t s, float *out, __nv_bfloat16 *out16, const float *qkv,
                        const int4 *rows, int n, int n_heads, int n_kv_heads, int hs,
                        const float *kc, const float *vc, size_t slot_stride, size_t layer_off,
                        int seq_len);

/** out[r][i] = silu(h13[r][i]) * h13[r][hid + i]. h13: (n, 2 hid); out/out16: (n, hid). */
cudaError_t k_silu_mul(cudaStream_t s, float *out, __nv_bfloat16 *out16, const float *h13, int n,
                       int hid);

/** For rows with logits_row >= 0: out[logits_row] = rmsnorm(x[r], w). out/out16: (nl, dim). */
cudaError_t k_final_norm(cudaStream_t s, float *out, __nv_bfloat16 *out16, const float *x,
                         const float *w, const int4 *rows, int n, int dim);

/** Dynamic shared memory k_attention needs for a context of seq_len. */
size_t k_attention_smem(int seq_len, int hs);

/** Allow k_attention its shared memory (beyond 48 KiB for long contexts); call once per
 *  device before the first launch. */
cudaError_t k_attention_prepare(int seq_len, int hs);

#endif
