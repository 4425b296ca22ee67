/*
 * kernels.cu - RMSNorm, RoPE + KV write, GQA attention over the KV cache, SiLU-gated FFN
 * activation, final norm for the logits rows. The matrix products are cuBLAS calls made
 * by cuda_backend.cu. See kernels.cuh for the contracts.
 *
 * NOT YET RUN ON A GPU: compiled for sm_80/sm_90 only (see test/cuda/README.md).
 */
#include "kernels.cuh"

#define NORM_THREADS 256
#define ATT_THREADS 128

/* Block-wide sum with a fixed combination order (warp shuffles, then warp 0 over the
 * per-warp partials): deterministic for a fixed blockDim. `sh` holds 32 floats. */
__device__ static float block_sum(float v, float *sh)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_down_sync(0xffffffffu, v, o);
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    __syncthreads(); /* sh may still be read by a previous reduction */
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < nw ? sh[lane] : 0.0f;
        for (int o = 16; o > 0; o >>= 1)
            v += __shfl_down_sync(0xffffffffu, v, o);
        if (lane == 0) sh[0] = v;
    }
    __syncthreads();
    return sh[0];
}

__device__ static float block_max(float v, float *sh)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, o));
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    __syncthreads();
    if (lane == 0) sh[warp] = v;
    __syncthreads();
    if (warp == 0) {
        v = lane < nw ? sh[lane] : -INFINITY;
        for (int o = 16; o > 0; o >>= 1)
            v = fmaxf(v, __shfl_down_sync(0xffffffffu, v, o));
        if (lane == 0) sh[0] = v;
    }
    __syncthreads();
    return sh[0];
}

__device__ static inline void store(float *out, __nv_bfloat16 *out16, size_t i, float v)
{
    if (out16)
        out16[i] = __float2bfloat16_rn(v);
    else
        out[i] = v;
}

__global__ static void embed_kernel(float *x, const float *emb, const int4 *rows, int dim)
{
    int r = blockIdx.x;
    const float *e = emb + (size_t)rows[r].z * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        x[(size_t)r * dim + i] = e[i];
}

cudaError_t k_embed(cudaStream_t s, float *x, const float *emb, const int4 *rows, int n, int dim)
{
    embed_kernel<<<n, 128, 0, s>>>(x, emb, rows, dim);
    return cudaGetLastError();
}

/* One block per row; `dst_row` < 0 skips the row (final norm of rows without logits). */
__device__ static void rmsnorm_row(float *out, __nv_bfloat16 *out16, const float *x, const float *w,
                                   int dim, float *sh)
{
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        ss += x[i] * x[i];
    ss = block_sum(ss, sh);
    float scale = rsqrtf(ss / (float)dim + 1e-5f);
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
        store(out, out16, (size_t)i, w[i] * (scale * x[i]));
}

__global__ static void rmsnorm_kernel(float *out, __nv_bfloat16 *out16, const float *x,
                                      const float *w, int dim)
{
    __shared__ float sh[32];
    size_t off = (size_t)blockIdx.x * dim;
    rmsnorm_row(out ? out + off : NULL, out16 ? out16 + off : NULL, x + off, w, dim, sh);
}

cudaError_t k_rmsnorm(cudaStream_t s, float *out, __nv_bfloat16 *out16, const float *x,
                      const float *w, int n, int dim)
{
    rmsnorm_kernel<<<n, NORM_THREADS, 0, s>>>(out, out16, x, w, dim);
    return cudaGetLastError();
}

__global__ static void final_norm_kernel(float *out, __nv_bfloat16 *out16, const float *x,
                                         const float *w, const int4 *rows, int dim)
{
    __shared__ float sh[32];
    int lr = rows[blockIdx.x].w;
    if (lr < 0) return; /* whole block leaves together: no barrier is skipped */
    size_t off = (size_t)lr * dim;
    rmsnorm_row(out ? out + off : NULL, out16 ? out16 + off : NULL, x + (size_t)blockIdx.x * dim, w,
                dim, sh);
}

cudaError_t k_final_norm(cudaStream_t s, float *out, __nv_bfloat16 *out16, const float *x,
                         const float *w, const int4 *rows, int n, int dim)
{
    final_norm_kernel<<<n, NORM_THREADS, 0, s>>>(out, out16, x, w, rows, dim);
    return cudaGetLastError();
}

/* grid (ceil(pairs / 128), n): pairs = dim/2 (q) + kvd/2 (k) + kvd/2 (v copy) */
__global__ static void rope_kv_kernel(float *qkv, const int4 *rows, int dim, int kvd, int hs,
                                      const float *freq, float *kc, float *vc, size_t slot_stride,
                                      size_t layer_off)
{
    int r = blockIdx.y;
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    int qp = dim / 2, kp = kvd / 2;
    if (j >= qp + 2 * kp) return;
    int4 row = rows[r];
    float *v = qkv + (size_t)r * (size_t)(dim + 2 * kvd);
    size_t cache = (size_t)row.x * slot_stride + layer_off + (size_t)row.y * kvd;
    if (j < qp + kp) {
        bool isq = j < qp;
        int i = 2 * (isq ? j : j - qp); /* element index within q or k */
        float *p = isq ? v + i : v + dim + i;
        float ang = (float)row.y * freq[(i % hs) / 2];
        float sn, cs;
        sincosf(ang, &sn, &cs);
        float v0 = p[0], v1 = p[1];
        float r0 = v0 * cs - v1 * sn, r1 = v0 * sn + v1 * cs;
        p[0] = r0;
        p[1] = r1;
        if (!isq) {
            kc[cache + i] = r0;
            kc[cache + i + 1] = r1;
        }
    } else {
        int i = 2 * (j - qp - kp);
        const float *src = v + dim + kvd + i;
        vc[cache + i] = src[0];
        vc[cache + i + 1] = src[1];
    }
}

cudaError_t k_rope_kv(cudaStream_t s, float *qkv, const int4 *rows, int n, int dim, int kvd, int hs,
                      const float *freq, float *kc, float *vc, size_t slot_stride, size_t layer_off)
{
    int pairs = dim / 2 + kvd;
    dim3 grid((pairs + 127) / 128, n);
    rope_kv_kernel<<<grid, 128, 0, s>>>(qkv, rows, dim, kvd, hs, freq, kc, vc, slot_stride,
                                        layer_off);
    return cudaGetLastError();
}

size_t k_attention_smem(int seq_len, int hs)
{
    return ((size_t)seq_len + (size_t)hs + 32) * sizeof(float);
}

/* grid (n_heads, n), ATT_THREADS threads; shared: att (seq_len), q (hs), reduction (32).
 * Scores: thread t takes positions t, t + blockDim, ...; each dot runs over hs in order.
 * Output: thread t takes dims t, t + blockDim, ...; each sums positions in order. */
__global__ static void attention_kernel(float *out, __nv_bfloat16 *out16, const float *qkv,
                                        const int4 *rows, int n_heads, int n_kv_heads, int hs,
                                        const float *kc, const float *vc, size_t slot_stride,
                                        size_t layer_off, int seq_len)
{
    extern __shared__ float smem[];
    float *att = smem, *q = smem + seq_len, *sh = q + hs;
    int h = blockIdx.x, r = blockIdx.y;
    int4 row = rows[r];
    int dim = n_heads * hs, kvd = n_kv_heads * hs;
    int kvh = h / (n_heads / n_kv_heads);
    const float *qs = qkv + (size_t)r * (size_t)(dim + 2 * kvd) + (size_t)h * hs;
    for (int i = threadIdx.x; i < hs; i += blockDim.x)
        q[i] = qs[i];
    __syncthreads();
    const float *kb = kc + (size_t)row.x * slot_stride + layer_off + (size_t)kvh * hs;
    const float *vb = vc + (size_t)row.x * slot_stride + layer_off + (size_t)kvh * hs;
    float scale = rsqrtf((float)hs);
    int np = row.y + 1;
    float mx = -INFINITY;
    for (int p = threadIdx.x; p < np; p += blockDim.x) {
        const float *k = kb + (size_t)p * kvd;
        float d = 0.0f;
        for (int i = 0; i < hs; i++)
            d += q[i] * k[i];
        d *= scale;
        att[p] = d;
        mx = fmaxf(mx, d);
    }
    mx = block_max(mx, sh);
    float sum = 0.0f;
    for (int p = threadIdx.x; p < np; p += blockDim.x) {
        float e = expf(att[p] - mx);
        att[p] = e;
        sum += e;
    }
    sum = block_sum(sum, sh); /* its barriers also publish att[] */
    float inv = 1.0f / sum;
    size_t o = (size_t)r * dim + (size_t)h * hs;
    for (int i = threadIdx.x; i < hs; i += blockDim.x) {
        float acc = 0.0f;
        for (int p = 0; p < np; p++)
            acc += att[p] * vb[(size_t)p * kvd + i];
        store(out, out16, o + i, acc * inv);
    }
}

cudaError_t k_attention(cudaStream_t s, float *out, __nv_bfloat16 *out16, const float *qkv,
                        const int4 *rows, int n, int n_heads, int n_kv_heads, int hs,
                        const float *kc, const float *vc, size_t slot_stride, size_t layer_off,
                        int seq_len)
{
    dim3 grid(n_heads, n);
    attention_kernel<<<grid, ATT_THREADS, k_attention_smem(seq_len, hs), s>>>(
        out, out16, qkv, rows, n_heads, n_kv_heads, hs, kc, vc, slot_stride, layer_off, seq_len);
    return cudaGetLastError();
}

cudaError_t k_attention_prepare(int seq_len, int hs)
{
    size_t smem = k_attention_smem(seq_len, hs);
    if (smem <= 48 * 1024) return cudaSuccess;
    return cudaFuncSetAttribute(attention_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                (int)smem);
}

__global__ static void silu_mul_kernel(float *out, __nv_bfloat16 *out16, const float *h13, int n,
                                       int hid)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= (size_t)n * hid) return;
    size_t r = i / hid, c = i % hid;
    float a = h13[r * 2 * hid + c], b = h13[r * 2 * hid + hid + c];
    store(out, out16, i, a * (1.0f / (1.0f + expf(-a))) * b);
}

cudaError_t k_silu_mul(cudaStream_t s, float *out, __nv_bfloat16 *out16, const float *h13, int n,
                       int hid)
{
    size_t total = (size_t)n * hid;
    silu_mul_kernel<<<(unsigned)((total + 255) / 256), 256, 0, s>>>(out, out16, h13, n, hid);
    return cudaGetLastError();
}
