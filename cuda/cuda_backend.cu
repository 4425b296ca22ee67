/*
 * cuda_backend.cu - the CUDA backend: device weights, lanes (stream + cuBLAS + scratch +
 * KV cache + decode graphs) under the stream pool, and the backend table.
 *
 * It runs the llama block on F32 weights (cuda_check refuses anything else before a
 * device is touched, so the engine can fall back to the CPU).
 * Layout on the device (row-major, like the checkpoint):
 *   emb      (vocab, dim) fp32            token lookups
 *   wqkv     (layer, dim + 2 kvd, dim)    wq, wk, wv fused: one GEMM per layer
 *   wo       (layer, dim, dim)
 *   w13      (layer, 2 hidden, dim)       w1, w3 fused
 *   w2       (layer, dim, hidden)
 *   wcls     (vocab, dim)                 the embedding itself when shared and fp32
 *   matrices are fp32, or bf16 with opts.bf16; norms, embedding and KV cache are fp32.
 * A product Y (n, out) = X (n, in) W^T is cuBLAS column-major Y^T = W^T' X^T':
 *   gemm(OP_T, OP_N, m = out, n = rows, k = in, A = W (lda in), B = X (ldb in), C = Y).
 *
 * NOT YET RUN ON A GPU: compiled for sm_80/sm_90; see test/cuda/README.md.
 */
extern "C" {
#include "cuda/cuda_backend.h"
#include "cuda/stream_pool.h"
}
#include "kernels.cuh"

#include <atomic>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <errno.h>
#include <math.h>
#include <new>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define WORKSPACE_BYTES (32u << 20)  /* per cuBLAS handle (Hopper's recommended size) */
#define RESERVE_BYTES (256ull << 20) /* left free for the context, cuBLAS kernels, graphs */

typedef __nv_bfloat16 bf16;

typedef struct cmodel {
    int device, bf16, streams;
    model_config_t c;
    int kvd, hs, qkvs; /* kv_dim, head size, dim + 2 kvd */
    float *emb, *rms_att, *rms_ffn, *rms_final, *freq;
    void *wqkv, *wo, *w13, *w2, *wcls;
    bool wcls_owned;
    bool graphs; /* capture pure-decode steps (INFERD_CUDA_GRAPHS=0 turns it off) */
    spool_t *pool;
    std::atomic<uint64_t> bytes; /* device bytes allocated by this backend */
    uint64_t kv_bytes;           /* of which the KV cache */
    std::atomic<uint64_t> mem_free, mem_total, mem_sampled_ns;
    std::atomic<uint64_t> gpu_steps, gpu_ns_total, gpu_ns_last;
} cmodel_t;

typedef struct lane {
    cmodel_t *M;
    int idx, max_rows, max_slots;
    cudaStream_t st;
    cublasHandle_t blas;
    void *ws;            /* cuBLAS workspace */
    float *kc, *vc;      /* (max_slots, layer, seq_len, kvd) */
    size_t slot_stride;  /* layer * seq_len * kvd */
    int *cap;            /* host (max_slots): positions reserved, 0 = free */
    int4 *hrows, *drows; /* (max_rows) pinned host / device row tables */
    float *x, *xb, *qkv, *h13, *hb, *lx, *logits; /* device scratch, see lane_new */
    bf16 *x16;              /* (max_rows, max(dim, hidden)) GEMM input on the bf16 path */
    float *hlogits;         /* pinned (max_slots, vocab): where the logits land */
    cudaGraphExec_t *graph; /* (max_rows + 1) decode step of n rows, or NULL */
    cudaEvent_t ev0, ev1;
    bool broken; /* a sticky device error: every forward fails fast */
    char err[384];
} lane_t;

/* ---- error checking ----------------------------------------------------------------- */

/* Errors after which the context is unusable (CUDA reports them from every later call). */
static bool sticky(cudaError_t e)
{
    switch (e) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorLaunchTimeout:
    case cudaErrorECCUncorrectable:
    case cudaErrorContextIsDestroyed:
    case cudaErrorDevicesUnavailable:
    case cudaErrorNoDevice:
    case cudaErrorUnknown:
        return true;
    default:
        return false;
    }
}

static int cuda_err(char *err, size_t errlen, cudaError_t e, const char *call, const char *file,
                    int line)
{
    return errorf(err, errlen, e == cudaErrorMemoryAllocation ? -ENOMEM : -EIO, "%s: %s (%s:%d)",
                  call, cudaGetErrorString(e), file, line);
}

static const char *blas_str(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_NOT_INITIALIZED:
        return "cuBLAS not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED:
        return "cuBLAS allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE:
        return "cuBLAS invalid value";
    case CUBLAS_STATUS_ARCH_MISMATCH:
        return "cuBLAS architecture mismatch";
    case CUBLAS_STATUS_MAPPING_ERROR:
        return "cuBLAS mapping error";
    case CUBLAS_STATUS_EXECUTION_FAILED:
        return "cuBLAS execution failed";
    case CUBLAS_STATUS_INTERNAL_ERROR:
        return "cuBLAS internal error";
    case CUBLAS_STATUS_NOT_SUPPORTED:
        return "cuBLAS not supported";
    default:
        return "cuBLAS error";
    }
}

/* Lane-side checks: record the failure in the lane (and whether it is sticky), return. */
static int lane_cuda_fail(lane_t *L, cudaError_t e, const char *call, const char *file, int line)
{
    if (sticky(e)) L->broken = true;
    return cuda_err(L->err, sizeof L->err, e, call, file, line);
}

#define LCK(call)                                                                                  \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) return lane_cuda_fail(L, e_, #call, __FILE__, __LINE__);            \
    } while (0)
#define LBL(call)                                                                                  \
    do {                                                                                           \
        cublasStatus_t s_ = (call);                                                                \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                           \
            return errorf(L->err, sizeof L->err, -EIO, "%s: %s (%s:%d)", #call, blas_str(s_),      \
                          __FILE__, __LINE__);                                                     \
    } while (0)
/* Load-side checks write into (err, errlen) and jump to the unwind label `out`. */
#define CK(call)                                                                                   \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) {                                                                   \
            rc = cuda_err(err, errlen, e_, #call, __FILE__, __LINE__);                             \
            goto out;                                                                              \
        }                                                                                          \
    } while (0)

/* ---- probe and budget ---------------------------------------------------------------------- */

extern "C" int cuda_probe(int device, char *info, size_t infolen)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return errorf(info, infolen, -ENODEV, "cudaGetDeviceCount: %s", cudaGetErrorString(e));
    }
    if (n == 0) return errorf(info, infolen, -ENODEV, "no CUDA device is present");
    if (device < 0 || device >= n)
        return errorf(info, infolen, -ENODEV, "cuda:%d does not exist (%d device%s)", device, n,
                      n == 1 ? "" : "s");
    cudaDeviceProp p;
    e = cudaGetDeviceProperties(&p, device);
    if (e != cudaSuccess)
        return errorf(info, infolen, -ENODEV, "cudaGetDeviceProperties(%d): %s", device,
                      cudaGetErrorString(e));
    if (p.major < 8)
        return errorf(info, infolen, -ENODEV,
                      "%s is sm_%d%d; inferd's CUDA kernels need sm_80 or newer", p.name, p.major,
                      p.minor);
    e = cudaSetDevice(device);
    if (e == cudaSuccess) e = cudaFree(0); /* creates the context */
    if (e != cudaSuccess) {
        cudaGetLastError();
        return errorf(info, infolen, -ENODEV, "cannot create a context on %s: %s", p.name,
                      cudaGetErrorString(e));
    }
    return errorf(info, infolen, 0, "%s, sm_%d%d, %.1f GiB", p.name, p.major, p.minor,
                  (double)p.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
}

/* ---- what the kernels implement -------------------------------------------------------- */

typedef struct {
    char *why;
    size_t whylen;
    int rc;
} check_t;

static void check_f32(const tensor_t *t, void *arg)
{
    check_t *c = (check_t *)arg;
    if (c->rc == 0 && t->type != DTYPE_F32)
        c->rc = errorf(c->why, c->whylen, BACKEND_ENOTSUP,
                       "tensor %s is %s; the CUDA backend runs F32 weights only", t->name,
                       dtype_name(t->type));
}

extern "C" int cuda_check(const model_view_t *m, const backend_opts_t *o, char *why, size_t whylen)
{
    const model_config_t *c = &m->c;
    (void)o;
    if (c->arch != ARCH_LLAMA || c->qkv_bias || c->qk_norm)
        return errorf(why, whylen, BACKEND_ENOTSUP,
                      "the CUDA backend runs the llama architecture only (no q/k/v biases, no "
                      "q/k norms)");
    if (c->rope_mode != ROPE_NORM || c->rope_dim != c->head_dim)
        return errorf(why, whylen, BACKEND_ENOTSUP,
                      "the CUDA backend rotates whole heads in adjacent pairs (RoPE dimension %d, "
                      "head size %d)",
                      c->rope_dim, c->head_dim);
    if (c->head_dim * c->n_heads != c->dim)
        return errorf(why, whylen, BACKEND_ENOTSUP,
                      "the CUDA backend needs heads x head size = width (%d x %d != %d)",
                      c->n_heads, c->head_dim, c->dim);
    if (c->rms_eps != 1e-5f)
        return errorf(why, whylen, BACKEND_ENOTSUP, "RMS epsilon %g: the CUDA kernels use 1e-5",
                      (double)c->rms_eps);
    check_t k = {why, whylen, 0};
    model_view_each(m, check_f32, &k);
    return k.rc;
}

extern "C" uint64_t cuda_budget_bytes(const model_view_t *m, const backend_opts_t *o, int max_rows,
                                      int max_slots, uint64_t *weights, uint64_t *kv,
                                      uint64_t *scratch)
{
    const model_config_t *c = &m->c;
    uint64_t dim = (uint64_t)c->dim, hid = (uint64_t)c->hidden_dim, L = (uint64_t)c->n_layers;
    uint64_t V = (uint64_t)c->vocab_size, S = (uint64_t)c->seq_len;
    uint64_t kvd = (uint64_t)c->n_kv_heads * (uint64_t)c->head_dim;
    uint64_t es = o->bf16 ? 2 : 4;
    /* the view's matrices (per layer) at es bytes an element, its vectors at 4 */
    uint64_t mats = 0, vecs = 0;
    for (int l = 0; l < c->n_layers; l++) {
        const model_layer_t *y = &m->layers[l];
        const tensor_t *mt[] = {&y->wq, &y->wk, &y->wv, &y->wo, &y->w_gate, &y->w_down, &y->w_up};
        for (size_t i = 0; i < sizeof mt / sizeof mt[0]; i++)
            mats += (uint64_t)mt[i]->ne[0] * (uint64_t)mt[i]->ne[1];
        vecs += (uint64_t)y->attn_norm.ne[0] + (uint64_t)y->ffn_norm.ne[0];
    }
    vecs += (uint64_t)m->output_norm.ne[0] + (uint64_t)c->rope_dim / 2;
    uint64_t w = mats * es + V * dim * 4 + vecs * 4;
    if (!c->shared || o->bf16) w += V * dim * es; /* a separate classifier */
    int lanes = o->streams > 0 ? o->streams : 4;
    if (lanes > max_slots) lanes = max_slots;
    uint64_t per_lane = ((uint64_t)max_slots + (uint64_t)lanes - 1) / (uint64_t)lanes;
    uint64_t k = (uint64_t)lanes * per_lane * L * S * kvd * 2 * 4;
    uint64_t R = (uint64_t)max_rows, wide = dim > hid ? dim : hid;
    uint64_t lane = R * (2 * dim + (dim + 2 * kvd) + 2 * hid + hid) * 4 /* x xb qkv h13 hb */
                    + per_lane * (dim + V) * 4                          /* lx logits */
                    + R * wide * 2 + R * 16 + WORKSPACE_BYTES;
    uint64_t sc = (uint64_t)lanes * lane;
    if (weights) *weights = w;
    if (kv) *kv = k;
    if (scratch) *scratch = sc;
    return w + k + sc;
}

static void sample_mem(cmodel_t *M)
{
    size_t fr = 0, tot = 0;
    if (cudaMemGetInfo(&fr, &tot) == cudaSuccess) {
        M->mem_free.store(fr, std::memory_order_relaxed);
        M->mem_total.store(tot, std::memory_order_relaxed);
    } else {
        cudaGetLastError();
    }
    M->mem_sampled_ns.store(backend_now_ns(), std::memory_order_relaxed);
}

/* ---- lanes ------------------------------------------------------------------------------------
 */

static int dev_alloc(lane_t *L, void **p, size_t bytes)
{
    cudaError_t e = cudaMalloc(p, bytes ? bytes : 16);
    if (e != cudaSuccess) {
        *p = NULL;
        return lane_cuda_fail(L, e, "cudaMalloc", __FILE__, __LINE__);
    }
    L->M->bytes.fetch_add(bytes, std::memory_order_relaxed);
    return 0;
}

static void lane_free(void *arg)
{
    lane_t *L = (lane_t *)arg;
    if (!L) return;
    cudaSetDevice(L->M->device);
    if (L->st) cudaStreamSynchronize(L->st);
    for (int i = 0; L->graph && i <= L->max_rows; i++)
        if (L->graph[i]) cudaGraphExecDestroy(L->graph[i]);
    free(L->graph);
    if (L->blas) cublasDestroy(L->blas);
    void *dev[] = {L->ws,  L->kc,  L->vc, L->drows, L->x,      L->xb,
                   L->qkv, L->h13, L->hb, L->lx,    L->logits, L->x16};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        if (dev[i]) cudaFree(dev[i]);
    if (L->hrows) cudaFreeHost(L->hrows);
    if (L->hlogits) cudaFreeHost(L->hlogits);
    if (L->ev0) cudaEventDestroy(L->ev0);
    if (L->ev1) cudaEventDestroy(L->ev1);
    if (L->st) cudaStreamDestroy(L->st);
    cudaGetLastError();
    free(L->cap);
    delete L;
}

static int lane_new(void **out, void *shared, int idx, int max_rows, int max_slots, char *err,
                    size_t errlen)
{
    cmodel_t *M = (cmodel_t *)shared;
    const model_config_t *c = &M->c;
    lane_t *L = new (std::nothrow) lane_t();
    if (!L) return errorf(err, errlen, -ENOMEM, "out of memory");
    L->M = M;
    L->idx = idx;
    L->max_rows = max_rows;
    L->max_slots = max_slots;
    size_t R = (size_t)max_rows, S = (size_t)max_slots, dim = (size_t)c->dim;
    size_t hid = (size_t)c->hidden_dim, V = (size_t)c->vocab_size;
    size_t wide = dim > hid ? dim : hid;
    L->slot_stride = (size_t)c->n_layers * (size_t)c->seq_len * (size_t)M->kvd;
    int rc = 0;
    L->cap = (int *)calloc(S, sizeof(int));
    L->graph = (cudaGraphExec_t *)calloc(R + 1, sizeof(cudaGraphExec_t));
    if (!L->cap || !L->graph) {
        rc = errorf(err, errlen, -ENOMEM, "out of memory");
        goto done;
    }
    /* this thread drives the lane: make the device current here */
#define LNEW(call)                                                                                 \
    do {                                                                                           \
        rc = (call);                                                                               \
        if (rc < 0) {                                                                              \
            errorf(err, errlen, rc, "lane %d: %s", idx, L->err);                                   \
            goto done;                                                                             \
        }                                                                                          \
    } while (0)
#define LCALL(call)                                                                                \
    do {                                                                                           \
        cudaError_t e_ = (call);                                                                   \
        if (e_ != cudaSuccess) LNEW(lane_cuda_fail(L, e_, #call, __FILE__, __LINE__));             \
    } while (0)
    LCALL(cudaSetDevice(M->device));
    LCALL(cudaStreamCreateWithFlags(&L->st, cudaStreamNonBlocking));
    LCALL(cudaEventCreate(&L->ev0));
    LCALL(cudaEventCreate(&L->ev1));
    {
        cublasStatus_t bs = cublasCreate(&L->blas);
        if (bs == CUBLAS_STATUS_SUCCESS) bs = cublasSetStream(L->blas, L->st);
        /* fp32 stays fp32: no TF32 tensor-op shortcuts (the 1e-4 reference check) */
        if (bs == CUBLAS_STATUS_SUCCESS) bs = cublasSetMathMode(L->blas, CUBLAS_DEFAULT_MATH);
        if (bs != CUBLAS_STATUS_SUCCESS) {
            rc = errorf(err, errlen, -EIO, "lane %d: cuBLAS setup: %s", idx, blas_str(bs));
            goto done;
        }
    }
    LNEW(dev_alloc(L, &L->ws, WORKSPACE_BYTES));
    {
        /* an explicit workspace keeps cuBLAS from allocating inside graph capture, and one
         * per handle keeps concurrent lanes from sharing one */
        cublasStatus_t bs = cublasSetWorkspace(L->blas, L->ws, WORKSPACE_BYTES);
        if (bs != CUBLAS_STATUS_SUCCESS) {
            rc = errorf(err, errlen, -EIO, "lane %d: cublasSetWorkspace: %s", idx, blas_str(bs));
            goto done;
        }
    }
    LNEW(dev_alloc(L, (void **)&L->kc, S * L->slot_stride * sizeof(float)));
    LNEW(dev_alloc(L, (void **)&L->vc, S * L->slot_stride * sizeof(float)));
    LNEW(dev_alloc(L, (void **)&L->drows, R * sizeof(int4)));
    LNEW(dev_alloc(L, (void **)&L->x, R * dim * sizeof(float)));
    LNEW(dev_alloc(L, (void **)&L->xb, R * dim * sizeof(float)));
    LNEW(dev_alloc(L, (void **)&L->qkv, R * (size_t)M->qkvs * sizeof(float)));
    LNEW(dev_alloc(L, (void **)&L->h13, R * 2 * hid * sizeof(float)));
    LNEW(dev_alloc(L, (void **)&L->hb, R * hid * sizeof(float)));
    LNEW(dev_alloc(L, (void **)&L->lx, S * dim * sizeof(float)));
    LNEW(dev_alloc(L, (void **)&L->logits, S * V * sizeof(float)));
    LNEW(dev_alloc(L, (void **)&L->x16, R * wide * sizeof(bf16)));
    LCALL(cudaHostAlloc((void **)&L->hrows, R * sizeof(int4), cudaHostAllocDefault));
    LCALL(cudaHostAlloc((void **)&L->hlogits, S * V * sizeof(float), cudaHostAllocDefault));
    /* zeroed cache: a bug that reads an unwritten position gives finite garbage, not NaN */
    LCALL(cudaMemsetAsync(L->kc, 0, S * L->slot_stride * sizeof(float), L->st));
    LCALL(cudaMemsetAsync(L->vc, 0, S * L->slot_stride * sizeof(float), L->st));
    LCALL(cudaStreamSynchronize(L->st));
#undef LCALL
#undef LNEW
done:
    if (rc < 0) {
        lane_free(L);
        return rc;
    }
    *out = L;
    return 0;
}

static float *lane_out_buffer(void *arg)
{
    return ((lane_t *)arg)->hlogits;
}

static const char *lane_error(void *arg)
{
    return ((lane_t *)arg)->err;
}

static int lane_seq_alloc(void *arg, int slot, int cap)
{
    lane_t *L = (lane_t *)arg;
    if (slot < 0 || slot >= L->max_slots || cap <= 0 || cap > L->M->c.seq_len) return -EINVAL;
    L->cap[slot] = cap; /* the cache is reserved at load: nothing to allocate */
    return 0;
}

static void lane_seq_free(void *arg, int slot)
{
    lane_t *L = (lane_t *)arg;
    if (slot >= 0 && slot < L->max_slots) L->cap[slot] = 0;
}

/* y (n, out) [+]= x (n, in) W^T; x is fp32 or (bf16 path) bf16, row stride `in`. */
static int gemm(lane_t *L, const void *W, const void *x, float *y, int n, int in, int out, int ldy,
                float beta)
{
    const float alpha = 1.0f;
    if (!L->M->bf16) {
        LBL(cublasSgemm(L->blas, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &alpha, (const float *)W, in,
                        (const float *)x, in, &beta, y, ldy));
    } else {
        LBL(cublasGemmEx(L->blas, CUBLAS_OP_T, CUBLAS_OP_N, out, n, in, &alpha, W, CUDA_R_16BF, in,
                         x, CUDA_R_16BF, in, &beta, y, CUDA_R_32F, ldy, CUBLAS_COMPUTE_32F,
                         CUBLAS_GEMM_DEFAULT));
    }
    return 0;
}

static inline const void *mat(const void *base, size_t elems, int bf16)
{
    return (const char *)base + elems * (bf16 ? 2 : 4);
}

/* Enqueue one forward of n rows (nl logits rows) on the lane's stream. Graph-capturable:
 * no host synchronization, no allocation, row data read from L->drows. */
static int enqueue(lane_t *L, int n, int nl)
{
    const cmodel_t *M = L->M;
    const model_config_t *c = &M->c;
    int dim = c->dim, hid = c->hidden_dim, kvd = M->kvd, hs = M->hs, b16 = M->bf16;
    size_t seq = (size_t)c->seq_len;
    float *f_out = b16 ? NULL : L->xb; /* GEMM input: fp32 xb, or bf16 x16 */
    bf16 *h_out = b16 ? L->x16 : NULL;
    const void *gin = b16 ? (const void *)L->x16 : (const void *)L->xb;
    LCK(k_embed(L->st, L->x, M->emb, L->drows, n, dim));
    for (int l = 0; l < c->n_layers; l++) {
        size_t loff = (size_t)l * seq * (size_t)kvd;
        LCK(k_rmsnorm(L->st, f_out, h_out, L->x, M->rms_att + (size_t)l * dim, n, dim));
        int rc = gemm(L, mat(M->wqkv, (size_t)l * M->qkvs * dim, b16), gin, L->qkv, n, dim, M->qkvs,
                      M->qkvs, 0.0f);
        if (rc < 0) return rc;
        LCK(k_rope_kv(L->st, L->qkv, L->drows, n, dim, kvd, hs, M->freq, L->kc, L->vc,
                      L->slot_stride, loff));
        LCK(k_attention(L->st, f_out, h_out, L->qkv, L->drows, n, c->n_heads, c->n_kv_heads, hs,
                        L->kc, L->vc, L->slot_stride, loff, c->seq_len));
        rc = gemm(L, mat(M->wo, (size_t)l * dim * dim, b16), gin, L->x, n, dim, dim, dim, 1.0f);
        if (rc < 0) return rc;
        LCK(k_rmsnorm(L->st, f_out, h_out, L->x, M->rms_ffn + (size_t)l * dim, n, dim));
        rc = gemm(L, mat(M->w13, (size_t)l * 2 * hid * dim, b16), gin, L->h13, n, dim, 2 * hid,
                  2 * hid, 0.0f);
        if (rc < 0) return rc;
        LCK(k_silu_mul(L->st, b16 ? NULL : L->hb, h_out, L->h13, n, hid));
        const void *hin = b16 ? (const void *)L->x16 : (const void *)L->hb;
        rc = gemm(L, mat(M->w2, (size_t)l * dim * hid, b16), hin, L->x, n, hid, dim, dim, 1.0f);
        if (rc < 0) return rc;
    }
    if (nl > 0) {
        LCK(k_final_norm(L->st, b16 ? NULL : L->lx, h_out, L->x, M->rms_final, L->drows, n, dim));
        const void *lin = b16 ? (const void *)L->x16 : (const void *)L->lx;
        int rc = gemm(L, M->wcls, lin, L->logits, nl, dim, c->vocab_size, c->vocab_size, 0.0f);
        if (rc < 0) return rc;
    }
    return 0;
}

/* Capture enqueue(n, n) into L->graph[n]; capture is thread-local so other lanes go on. */
static int capture(lane_t *L, int n)
{
    cudaGraph_t g = NULL;
    LCK(cudaStreamBeginCapture(L->st, cudaStreamCaptureModeThreadLocal));
    int rc = enqueue(L, n, n);
    cudaError_t e = cudaStreamEndCapture(L->st, &g);
    if (rc < 0) {
        if (g) cudaGraphDestroy(g);
        return rc;
    }
    if (e != cudaSuccess) return lane_cuda_fail(L, e, "cudaStreamEndCapture", __FILE__, __LINE__);
    e = cudaGraphInstantiate(&L->graph[n], g, 0);
    cudaGraphDestroy(g);
    if (e != cudaSuccess) {
        L->graph[n] = NULL;
        return lane_cuda_fail(L, e, "cudaGraphInstantiate", __FILE__, __LINE__);
    }
    return 0;
}

static int run(lane_t *L, const fwd_row_t *rows, int n, float *logits)
{
    const cmodel_t *M = L->M;
    const model_config_t *c = &M->c;
    int nl = 0;
    bool decode = true;
    for (int r = 0; r < n; r++) {
        const fwd_row_t *w = &rows[r];
        if (w->slot < 0 || w->slot >= L->max_slots || w->pos < 0 || w->pos >= L->cap[w->slot] ||
            w->token < 0 || w->token >= c->vocab_size || w->logits_row >= L->max_slots)
            return errorf(L->err, sizeof L->err, -EINVAL,
                          "row %d (slot %d pos %d token %d) is out of range", r, w->slot, w->pos,
                          w->token);
        L->hrows[r] = make_int4(w->slot, w->pos, w->token, w->logits_row);
        if (w->logits_row + 1 > nl) nl = w->logits_row + 1;
        if (w->logits_row != r) decode = false;
    }
    LCK(cudaEventRecord(L->ev0, L->st));
    LCK(cudaMemcpyAsync(L->drows, L->hrows, (size_t)n * sizeof(int4), cudaMemcpyHostToDevice,
                        L->st));
    if (decode && M->graphs) {
        if (!L->graph[n]) {
            int rc = capture(L, n);
            if (rc < 0) return rc;
        }
        LCK(cudaGraphLaunch(L->graph[n], L->st));
    } else {
        int rc = enqueue(L, n, nl);
        if (rc < 0) return rc;
    }
    if (nl > 0)
        LCK(cudaMemcpyAsync(logits, L->logits, (size_t)nl * c->vocab_size * sizeof(float),
                            cudaMemcpyDeviceToHost, L->st));
    LCK(cudaEventRecord(L->ev1, L->st));
    LCK(cudaEventSynchronize(L->ev1));
    float ms = 0.0f;
    LCK(cudaEventElapsedTime(&ms, L->ev0, L->ev1));
    cmodel_t *mm = L->M;
    uint64_t ns = (uint64_t)((double)ms * 1e6);
    mm->gpu_steps.fetch_add(1, std::memory_order_relaxed);
    mm->gpu_ns_total.fetch_add(ns, std::memory_order_relaxed);
    mm->gpu_ns_last.store(ns, std::memory_order_relaxed);
    if (L->idx == 0 &&
        backend_now_ns() - mm->mem_sampled_ns.load(std::memory_order_relaxed) > 1000000000ull)
        sample_mem(mm);
    return 0;
}

static int lane_forward(void *arg, const fwd_row_t *rows, int n, float *logits)
{
    lane_t *L = (lane_t *)arg;
    if (L->broken) return -EIO; /* L->err keeps the first sticky error */
    L->err[0] = 0;
    int rc = run(L, rows, n, logits);
    if (rc < 0 && !L->broken) {
        /* leave the stream idle and the error state clear for the next step; a failed
         * capture may have left a half-built graph slot */
        cudaStreamSynchronize(L->st);
        cudaError_t e = cudaGetLastError();
        if (sticky(e)) L->broken = true;
        if (n > 0 && n <= L->max_rows && L->graph[n]) {
            cudaGraphExecDestroy(L->graph[n]);
            L->graph[n] = NULL;
        }
    }
    return rc;
}

static const spool_ops_t lane_ops = {
    .lane_new = lane_new,
    .seq_alloc = lane_seq_alloc,
    .seq_free = lane_seq_free,
    .forward = lane_forward,
    .lane_free = lane_free,
    .out_buffer = lane_out_buffer,
    .error = lane_error,
};

/* ---- weights ----------------------------------------------------------------------------------
 */

static inline uint16_t to_bf16_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even */
    return (uint16_t)(u >> 16);
}

/* Copy `count` floats from host `src` to device `dst` at element offset `at`, converting
 * to bf16 through the host staging buffer when bf16. */
static cudaError_t upload(void *dst, size_t at, const float *src, size_t count, int b16,
                          uint16_t *stage, size_t stage_n)
{
    if (!b16) return cudaMemcpy((float *)dst + at, src, count * 4, cudaMemcpyHostToDevice);
    for (size_t done = 0; done < count;) {
        size_t k = count - done < stage_n ? count - done : stage_n;
        for (size_t i = 0; i < k; i++)
            stage[i] = to_bf16_bits(src[done + i]);
        cudaError_t e =
            cudaMemcpy((uint16_t *)dst + at + done, stage, k * 2, cudaMemcpyHostToDevice);
        if (e != cudaSuccess) return e;
        done += k;
    }
    return cudaSuccess;
}

static void model_free(cmodel_t *M)
{
    if (!M) return;
    spool_free(M->pool);
    cudaSetDevice(M->device);
    void *dev[] = {M->emb,  M->rms_att, M->rms_ffn, M->rms_final, M->freq,
                   M->wqkv, M->wo,      M->w13,     M->w2,        M->wcls_owned ? M->wcls : NULL};
    for (size_t i = 0; i < sizeof dev / sizeof dev[0]; i++)
        if (dev[i]) cudaFree(dev[i]);
    cudaGetLastError();
    delete M;
}

static int malloc_dev(cmodel_t *M, void **p, size_t bytes, char *err, size_t errlen)
{
    cudaError_t e = cudaMalloc(p, bytes ? bytes : 16);
    if (e != cudaSuccess) {
        *p = NULL;
        return cuda_err(err, errlen, e, "cudaMalloc (weights)", __FILE__, __LINE__);
    }
    M->bytes.fetch_add(bytes, std::memory_order_relaxed);
    return 0;
}

static int be_load(void **ctx, const model_view_t *m, const backend_opts_t *o, pool_t *pool,
                   int max_rows, int max_slots, char *err, size_t errlen)
{
    const model_config_t *c = &m->c;
    (void)pool;
    if (!o || o->streams < 0 || o->streams > SPOOL_MAX_LANES || max_rows < 1 || max_slots < 1)
        return errorf(err, errlen, -EINVAL, "cuda backend: bad options");
    char info[256];
    int rc = cuda_check(m, o, err, errlen);
    if (rc < 0) return rc;
    rc = cuda_probe(o->device, info, sizeof info);
    if (rc < 0) return errorf(err, errlen, rc, "cuda:%d: %s", o->device, info);
    uint64_t wb, kvb, scb;
    uint64_t need = cuda_budget_bytes(m, o, max_rows, max_slots, &wb, &kvb, &scb);
    size_t fr = 0, tot = 0;
    cudaError_t e0 = cudaMemGetInfo(&fr, &tot);
    if (e0 != cudaSuccess) return cuda_err(err, errlen, e0, "cudaMemGetInfo", __FILE__, __LINE__);
    if (need + RESERVE_BYTES > fr) {
        const double MiB = 1024.0 * 1024.0;
        return errorf(err, errlen, -ENOMEM,
                      "device memory budget does not fit cuda:%d: need %.0f MiB (weights %.0f, KV "
                      "cache %.0f for max_batch %d x context %d, scratch %.0f) + %.0f MiB reserve, "
                      "but %.0f MiB of %.0f MiB are free; lower --max-batch or --cuda-streams, or "
                      "use --dtype bf16",
                      o->device, need / MiB, wb / MiB, kvb / MiB, max_slots, c->seq_len, scb / MiB,
                      RESERVE_BYTES / MiB, fr / MiB, tot / MiB);
    }
    cmodel_t *M = new (std::nothrow) cmodel_t();
    if (!M) return errorf(err, errlen, -ENOMEM, "out of memory");
    M->device = o->device;
    M->bf16 = o->bf16;
    M->streams = o->streams > 0 ? o->streams : 4;
    M->c = *c;
    M->hs = c->head_dim;
    M->kvd = c->n_kv_heads * c->head_dim;
    M->kv_bytes = kvb;
    M->qkvs = c->dim + 2 * M->kvd;
    const char *g = getenv("INFERD_CUDA_GRAPHS");
    M->graphs = !(g && !strcmp(g, "0"));
    size_t dim = (size_t)c->dim, hid = (size_t)c->hidden_dim, L = (size_t)c->n_layers;
    size_t V = (size_t)c->vocab_size, kvd = (size_t)M->kvd, es = o->bf16 ? 2 : 4;
    size_t stage_n = 1u << 20;
    uint16_t *stage = o->bf16 ? (uint16_t *)malloc(stage_n * 2) : NULL;
    const float *freq = m->rope_freq; /* (head_dim / 2): cuda_check ensured rope_dim == hs */
    rc = 0;
    if (o->bf16 && !stage) {
        rc = errorf(err, errlen, -ENOMEM, "out of memory");
        goto out;
    }
    CK(cudaSetDevice(o->device));
    if ((rc = malloc_dev(M, (void **)&M->emb, V * dim * 4, err, errlen)) < 0) goto out;
    if ((rc = malloc_dev(M, (void **)&M->rms_att, L * dim * 4, err, errlen)) < 0) goto out;
    if ((rc = malloc_dev(M, (void **)&M->rms_ffn, L * dim * 4, err, errlen)) < 0) goto out;
    if ((rc = malloc_dev(M, (void **)&M->rms_final, dim * 4, err, errlen)) < 0) goto out;
    if ((rc = malloc_dev(M, (void **)&M->freq, (size_t)M->hs / 2 * 4, err, errlen)) < 0) goto out;
    if ((rc = malloc_dev(M, &M->wqkv, L * (dim + 2 * kvd) * dim * es, err, errlen)) < 0) goto out;
    if ((rc = malloc_dev(M, &M->wo, L * dim * dim * es, err, errlen)) < 0) goto out;
    if ((rc = malloc_dev(M, &M->w13, L * 2 * hid * dim * es, err, errlen)) < 0) goto out;
    if ((rc = malloc_dev(M, &M->w2, L * dim * hid * es, err, errlen)) < 0) goto out;
    CK(cudaMemcpy(M->emb, m->tok_embd.data, V * dim * 4, cudaMemcpyHostToDevice));
    for (size_t l = 0; l < L; l++) {
        const model_layer_t *y = &m->layers[l];
        CK(cudaMemcpy(M->rms_att + l * dim, y->attn_norm.data, dim * 4, cudaMemcpyHostToDevice));
        CK(cudaMemcpy(M->rms_ffn + l * dim, y->ffn_norm.data, dim * 4, cudaMemcpyHostToDevice));
    }
    CK(cudaMemcpy(M->rms_final, m->output_norm.data, dim * 4, cudaMemcpyHostToDevice));
    CK(cudaMemcpy(M->freq, freq, (size_t)M->hs / 2 * 4, cudaMemcpyHostToDevice));
    for (size_t l = 0; l < L; l++) {
        const model_layer_t *y = &m->layers[l];
        size_t q0 = l * (dim + 2 * kvd) * dim;
        CK(upload(M->wqkv, q0, (const float *)y->wq.data, dim * dim, o->bf16, stage, stage_n));
        CK(upload(M->wqkv, q0 + dim * dim, (const float *)y->wk.data, kvd * dim, o->bf16, stage,
                  stage_n));
        CK(upload(M->wqkv, q0 + (dim + kvd) * dim, (const float *)y->wv.data, kvd * dim, o->bf16,
                  stage, stage_n));
        CK(upload(M->wo, l * dim * dim, (const float *)y->wo.data, dim * dim, o->bf16, stage,
                  stage_n));
        CK(upload(M->w13, l * 2 * hid * dim, (const float *)y->w_gate.data, hid * dim, o->bf16,
                  stage, stage_n));
        CK(upload(M->w13, l * 2 * hid * dim + hid * dim, (const float *)y->w_up.data, hid * dim,
                  o->bf16, stage, stage_n));
        CK(upload(M->w2, l * dim * hid, (const float *)y->w_down.data, dim * hid, o->bf16, stage,
                  stage_n));
    }
    if (c->shared && !o->bf16) {
        M->wcls = M->emb;
    } else {
        if ((rc = malloc_dev(M, &M->wcls, V * dim * es, err, errlen)) < 0) goto out;
        M->wcls_owned = true;
        CK(upload(M->wcls, 0, (const float *)m->output.data, V * dim, o->bf16, stage, stage_n));
    }
    CK(k_attention_prepare(c->seq_len, M->hs));
    rc = spool_new(&M->pool, &lane_ops, M, M->streams, max_rows, max_slots, c->vocab_size, err,
                   errlen);
    if (rc < 0) goto out;
    sample_mem(M);
out:
    free(stage);
    if (rc < 0) {
        cudaGetLastError();
        model_free(M);
        return rc;
    }
    *ctx = M;
    return 0;
}

/* ---- the backend table ------------------------------------------------------------------------
 */

static int be_seq_alloc(void *ctx, int slot, int cap)
{
    return spool_seq_alloc(((cmodel_t *)ctx)->pool, slot, cap);
}

static void be_seq_free(void *ctx, int slot)
{
    spool_seq_free(((cmodel_t *)ctx)->pool, slot);
}

static int be_forward(void *ctx, const fwd_row_t *rows, int n, float *logits)
{
    return spool_forward(((cmodel_t *)ctx)->pool, rows, n, logits);
}

static void be_free(void *ctx)
{
    model_free((cmodel_t *)ctx);
}

static void be_stats(void *ctx, backend_stats_t *out)
{
    cmodel_t *M = (cmodel_t *)ctx;
    uint64_t fr = M->mem_free.load(std::memory_order_relaxed);
    uint64_t tot = M->mem_total.load(std::memory_order_relaxed);
    out->has_memory = tot > 0;
    out->mem_total = tot;
    out->mem_used = tot > fr ? tot - fr : 0;
    out->mem_backend = M->bytes.load(std::memory_order_relaxed);
    out->gpu_steps = M->gpu_steps.load(std::memory_order_relaxed);
    out->gpu_step_ns_total = M->gpu_ns_total.load(std::memory_order_relaxed);
    out->gpu_step_ns_last = M->gpu_ns_last.load(std::memory_order_relaxed);
}

static const char *be_error(void *ctx)
{
    return spool_error(((cmodel_t *)ctx)->pool);
}

static uint64_t be_kv_bytes(void *ctx)
{
    return ((cmodel_t *)ctx)->kv_bytes;
}

extern "C" const backend_t backend_cuda = {
    .name = "cuda",
    .device = "cuda",
    .load = be_load,
    .seq_alloc = be_seq_alloc,
    .seq_free = be_seq_free,
    .forward = be_forward,
    .free = be_free,
    .stats = be_stats,
    .error = be_error,
    .kv_bytes = be_kv_bytes,
};

extern "C" const backend_lib_t inferd_backend_entry = {
    BACKEND_ABI_VERSION,
    cuda_probe,
    cuda_check,
    &backend_cuda,
};

/* ---- benchmark helper -------------------------------------------------------------------------
 */

extern "C" int cuda_measure_bandwidth(int device, double *bytes_per_s, char *err, size_t errlen)
{
    char info[256];
    int rc = cuda_probe(device, info, sizeof info);
    if (rc < 0) return errorf(err, errlen, rc, "%s", info);
    const size_t bytes = 512u << 20;
    void *a = NULL, *b = NULL;
    cudaEvent_t e0 = NULL, e1 = NULL;
    float ms = 0.0f;
    const int reps = 20;
    CK(cudaMalloc(&a, bytes));
    CK(cudaMalloc(&b, bytes));
    CK(cudaEventCreate(&e0));
    CK(cudaEventCreate(&e1));
    CK(cudaMemcpy(b, a, bytes, cudaMemcpyDeviceToDevice)); /* warm-up */
    CK(cudaEventRecord(e0, 0));
    for (int i = 0; i < reps; i++)
        CK(cudaMemcpyAsync(i & 1 ? a : b, i & 1 ? b : a, bytes, cudaMemcpyDeviceToDevice, 0));
    CK(cudaEventRecord(e1, 0));
    CK(cudaEventSynchronize(e1));
    CK(cudaEventElapsedTime(&ms, e0, e1));
    *bytes_per_s = 2.0 * (double)bytes * reps / ((double)ms / 1e3);
out:
    if (a) cudaFree(a);
    if (b) cudaFree(b);
    if (e0) cudaEventDestroy(e0);
    if (e1) cudaEventDestroy(e1);
    cudaGetLastError();
    return rc;
}
