/*
 * kernels.c - dequantization, activation formats and dot products for every weight type
 * inferd runs, generic and AVX2+FMA+F16C, chosen once per process (see kernels.h).
 *
 * Block layouts are ggml's (ggml-common.h): little-endian, packed, fp16 scales.
 * Quantized dots: each block's integer sum is exact (AVX2 or scalar alike) and the
 * blocks are combined in one scalar float order shared by both ISAs; float dots keep
 * one (F32) or four (F16, BF16) 8-lane accumulators, a fixed horizontal sum and a scalar
 * tail (kernels.h).
 */
#include "kernels.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>
#define HAVE_X86 1
#endif

#define QK 32          /* elements per block of the 32-blocks */
#define QKK DTYPE_QK_K /* elements per super-block of the k-quants */

/* ---- half precision ------------------------------------------------------------------------ */

float fp16_to_fp32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
    if (exp == 0) {
        if (!man) {
            bits = sign;
        } else { /* subnormal: normalize the mantissa */
            int e = -1;
            do {
                e++;
                man <<= 1;
            } while (!(man & 0x400u));
            bits = sign | ((uint32_t)(112 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 112) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t fp32_to_fp16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) /* inf stays inf, NaN stays a (quiet) NaN */
        return (uint16_t)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u | ((ax >> 13) & 0x3ffu) : 0));
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 rounds to inf */
    if (ax < 0x38800000u) { /* below 2^-14: a subnormal half, round(value * 2^24) */
        uint32_t e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u;
        int shift = 126 - (int)e;
        if (shift > 24) return (uint16_t)sign;
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return (uint16_t)(sign | q);
    }
    /* normal: rebias, round to nearest even on the 13 dropped bits (a carry moves into
     * the exponent, which is right) */
    uint32_t r = ax - (112u << 23);
    r += 0xfffu + ((r >> 13) & 1u);
    return (uint16_t)(sign | (r >> 13));
}

float bf16_to_fp32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t fp32_to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 64); /* quiet NaN */
    return (uint16_t)((u + (0x7fffu + ((u >> 16) & 1u))) >> 16);
}

static inline float h2f(const uint8_t *p)
{
    uint16_t h;
    memcpy(&h, p, 2);
    return fp16_to_fp32(h);
}

/* ---- block layouts ----------------------------------------------------------------------- */

typedef struct {
    uint16_t d;
    uint8_t qs[QK / 2];
} bq4_0_t;
typedef struct {
    uint16_t d, m;
    uint8_t qs[QK / 2];
} bq4_1_t;
typedef struct {
    uint16_t d;
    uint8_t qh[4];
    uint8_t qs[QK / 2];
} bq5_0_t;
typedef struct {
    uint16_t d, m;
    uint8_t qh[4];
    uint8_t qs[QK / 2];
} bq5_1_t;
typedef struct {
    uint16_t d;
    int8_t qs[QK];
} bq8_0_t;
typedef struct {
    uint16_t d, s; /* s = d * sum(qs) */
    int8_t qs[QK];
} bq8_1_t;
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qs[QKK / 2];
} bq4_k_t;
typedef struct {
    uint16_t d, dmin;
    uint8_t scales[12];
    uint8_t qh[QKK / 8];
    uint8_t qs[QKK / 2];
} bq5_k_t;
typedef struct {
    uint8_t ql[QKK / 2];
    uint8_t qh[QKK / 4];
    int8_t scales[QKK / 16];
    uint16_t d;
} bq6_k_t;
typedef struct {
    float d;
    int8_t qs[QKK];
    int16_t bsums[QKK / 16];
} bq8_k_t;

_Static_assert(sizeof(bq4_0_t) == 18, "q4_0");
_Static_assert(sizeof(bq4_1_t) == 20, "q4_1");
_Static_assert(sizeof(bq5_0_t) == 22, "q5_0");
_Static_assert(sizeof(bq5_1_t) == 24, "q5_1");
_Static_assert(sizeof(bq8_0_t) == 34, "q8_0");
_Static_assert(sizeof(bq8_1_t) == 36, "q8_1");
_Static_assert(sizeof(bq4_k_t) == 144, "q4_k");
_Static_assert(sizeof(bq5_k_t) == 176, "q5_k");
_Static_assert(sizeof(bq6_k_t) == 210, "q6_k");
_Static_assert(sizeof(bq8_k_t) == 292, "q8_k");

static const int8_t iq4nl_values[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                        1,    13,   25,  38,  53,  69,  89,  113};

/* The 6-bit scale and min of sub-block j of a Q4_K/Q5_K super-block. */
static inline void kscale(const uint8_t *s, int j, int *sc, int *m)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/* ---- dequantization (bit-exact to gguf-py/gguf/quants.py) ---------------------------------- */

static void dq_f32(float *out, const void *row, int64_t n)
{
    memcpy(out, row, (size_t)n * sizeof(float));
}

static void dq_f16(float *out, const void *row, int64_t n)
{
    const uint8_t *p = row;
    for (int64_t i = 0; i < n; i++)
        out[i] = h2f(p + 2 * i);
}

static void dq_bf16(float *out, const void *row, int64_t n)
{
    const uint8_t *p = row;
    for (int64_t i = 0; i < n; i++) {
        uint16_t h;
        memcpy(&h, p + 2 * i, 2);
        out[i] = bf16_to_fp32(h);
    }
}

static void dq_q4_0(float *out, const void *row, int64_t n)
{
    const bq4_0_t *b = row;
    for (int64_t i = 0; i < n / QK; i++, out += QK) {
        float d = fp16_to_fp32(b[i].d);
        for (int j = 0; j < QK / 2; j++) {
            out[j] = d * (float)((b[i].qs[j] & 0x0f) - 8);
            out[j + QK / 2] = d * (float)((b[i].qs[j] >> 4) - 8);
        }
    }
}

static void dq_q4_1(float *out, const void *row, int64_t n)
{
    const bq4_1_t *b = row;
    for (int64_t i = 0; i < n / QK; i++, out += QK) {
        float d = fp16_to_fp32(b[i].d), m = fp16_to_fp32(b[i].m);
        for (int j = 0; j < QK / 2; j++) {
            out[j] = d * (float)(b[i].qs[j] & 0x0f) + m;
            out[j + QK / 2] = d * (float)(b[i].qs[j] >> 4) + m;
        }
    }
}

/* the 5-bit value j (0..31) of a Q5_0/Q5_1 block */
static inline int q5(const uint8_t qh[4], const uint8_t qs[16], int j)
{
    uint32_t h;
    memcpy(&h, qh, 4);
    int lo = j < 16 ? qs[j] & 0x0f : qs[j - 16] >> 4;
    return lo | (int)(((h >> j) & 1u) << 4);
}

static void dq_q5_0(float *out, const void *row, int64_t n)
{
    const bq5_0_t *b = row;
    for (int64_t i = 0; i < n / QK; i++, out += QK) {
        float d = fp16_to_fp32(b[i].d);
        for (int j = 0; j < QK; j++)
            out[j] = d * (float)(q5(b[i].qh, b[i].qs, j) - 16);
    }
}

static void dq_q5_1(float *out, const void *row, int64_t n)
{
    const bq5_1_t *b = row;
    for (int64_t i = 0; i < n / QK; i++, out += QK) {
        float d = fp16_to_fp32(b[i].d), m = fp16_to_fp32(b[i].m);
        for (int j = 0; j < QK; j++)
            out[j] = d * (float)q5(b[i].qh, b[i].qs, j) + m;
    }
}

static void dq_q8_0(float *out, const void *row, int64_t n)
{
    const bq8_0_t *b = row;
    for (int64_t i = 0; i < n / QK; i++, out += QK) {
        float d = fp16_to_fp32(b[i].d);
        for (int j = 0; j < QK; j++)
            out[j] = (float)b[i].qs[j] * d;
    }
}

static void dq_iq4_nl(float *out, const void *row, int64_t n)
{
    const bq4_0_t *b = row; /* same layout: fp16 d, 16 bytes of nibbles */
    for (int64_t i = 0; i < n / QK; i++, out += QK) {
        float d = fp16_to_fp32(b[i].d);
        for (int j = 0; j < QK / 2; j++) {
            out[j] = d * (float)iq4nl_values[b[i].qs[j] & 0x0f];
            out[j + QK / 2] = d * (float)iq4nl_values[b[i].qs[j] >> 4];
        }
    }
}

static void dq_q4_k(float *out, const void *row, int64_t n)
{
    const bq4_k_t *b = row;
    for (int64_t i = 0; i < n / QKK; i++) {
        float d = fp16_to_fp32(b[i].d), dmin = fp16_to_fp32(b[i].dmin);
        for (int j = 0; j < 8; j++, out += 32) {
            int sc, m;
            kscale(b[i].scales, j, &sc, &m);
            float d1 = d * (float)sc, m1 = dmin * (float)m;
            const uint8_t *q = b[i].qs + 32 * (j / 2);
            for (int l = 0; l < 32; l++)
                out[l] = d1 * (float)((j & 1) ? q[l] >> 4 : q[l] & 0x0f) - m1;
        }
    }
}

static void dq_q5_k(float *out, const void *row, int64_t n)
{
    const bq5_k_t *b = row;
    for (int64_t i = 0; i < n / QKK; i++) {
        float d = fp16_to_fp32(b[i].d), dmin = fp16_to_fp32(b[i].dmin);
        for (int j = 0; j < 8; j++, out += 32) {
            int sc, m;
            kscale(b[i].scales, j, &sc, &m);
            float d1 = d * (float)sc, m1 = dmin * (float)m;
            const uint8_t *q = b[i].qs + 32 * (j / 2);
            for (int l = 0; l < 32; l++) {
                int v = ((j & 1) ? q[l] >> 4 : q[l] & 0x0f) | (((b[i].qh[l] >> j) & 1) << 4);
                out[l] = d1 * (float)v - m1;
            }
        }
    }
}

/* the 6-bit value (0..63) of element e (0..255) of a Q6_K super-block */
static inline int q6(const bq6_k_t *b, int e)
{
    int h = e / 128, k = (e % 128) / 32, l = e % 32;
    const uint8_t *ql = b->ql + 64 * h, *qh = b->qh + 32 * h;
    int lo = (k & 1) ? ql[l + 32] : ql[l];
    lo = k < 2 ? lo & 0x0f : lo >> 4;
    return lo | (((qh[l] >> (2 * k)) & 3) << 4);
}

static void dq_q6_k(float *out, const void *row, int64_t n)
{
    const bq6_k_t *b = row;
    for (int64_t i = 0; i < n / QKK; i++, out += QKK) {
        float d = fp16_to_fp32(b[i].d);
        for (int e = 0; e < QKK; e++)
            out[e] = d * (float)b[i].scales[e / 16] * (float)(q6(&b[i], e) - 32);
    }
}

/* ---- activation formats -------------------------------------------------------------------- */

/* round half to even, as ggml's nearest_int (valid for |f| <= 4194303) */
static inline int nearest_int(float f)
{
    float v = f + 12582912.f;
    int32_t i;
    memcpy(&i, &v, 4);
    return (i & 0x007fffff) - 0x00400000;
}

static int8_t clamp127(int v)
{
    return (int8_t)(v > 127 ? 127 : v < -127 ? -127 : v);
}

/* ggml's quantize_row_q8_0 as its x86 build runs it (id = 127 / amax, round half to even);
 * the reference quantizer (1 / d, round half away) differs in a rare last step, and such
 * a step moves a probability by ~1e-3, so inferd follows what llama.cpp runs */
static void quant_q8_0(void *dst, const float *x, int64_t n)
{
    bq8_0_t *y = dst;
    for (int64_t i = 0; i < n / QK; i++, x += QK) {
        float amax = 0.0f;
        for (int j = 0; j < QK; j++) /* fmaxf's result (no NaN can win), without its call */
            amax = fabsf(x[j]) > amax ? fabsf(x[j]) : amax;
        float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
        y[i].d = fp32_to_fp16(d);
        for (int j = 0; j < QK; j++)
            y[i].qs[j] = clamp127(nearest_int(x[j] * id));
    }
}

/* ggml's quantize_row_q8_1 as its x86 build runs it: as Q8_0, and s = d * sum(qs) */
static void quant_q8_1(void *dst, const float *x, int64_t n)
{
    bq8_1_t *y = dst;
    for (int64_t i = 0; i < n / QK; i++, x += QK) {
        float amax = 0.0f;
        for (int j = 0; j < QK; j++) /* fmaxf's result (no NaN can win), without its call */
            amax = fabsf(x[j]) > amax ? fabsf(x[j]) : amax;
        float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
        y[i].d = fp32_to_fp16(d);
        int sum = 0;
        for (int j = 0; j < QK; j++) {
            y[i].qs[j] = clamp127(nearest_int(x[j] * id));
            sum += y[i].qs[j];
        }
        y[i].s = fp32_to_fp16((float)sum * d);
    }
}

/* ggml's quantize_row_q8_K_ref: the scale comes from the signed value of largest
 * magnitude, which maps to -127 */
static void quant_q8_k(void *dst, const float *x, int64_t n)
{
    bq8_k_t *y = dst;
    for (int64_t i = 0; i < n / QKK; i++, x += QKK) {
        float max = 0.0f, amax = 0.0f;
        for (int j = 0; j < QKK; j++) {
            float ax = fabsf(x[j]);
            if (ax > amax) {
                amax = ax;
                max = x[j];
            }
        }
        if (amax == 0.0f) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        float iscale = -127.0f / max;
        for (int j = 0; j < QKK; j++)
            y[i].qs[j] = clamp127(nearest_int(iscale * x[j]));
        for (int g = 0; g < QKK / 16; g++) {
            int s = 0;
            for (int l = 0; l < 16; l++)
                s += y[i].qs[16 * g + l];
            y[i].bsums[g] = (int16_t)s;
        }
        y[i].d = 1.0f / iscale;
    }
}

size_t kernels_act_row_bytes(uint32_t vec_type, int64_t n)
{
    switch (vec_type) {
    case DTYPE_F32:
        return (size_t)n * 4;
    case KERNEL_VEC_F16R:
    case KERNEL_VEC_BF16R: /* n f32, n 16-bit, padded to whole f32 */
        return (size_t)(n + (n + 1) / 2) * 4;
    case DTYPE_F16:
    case DTYPE_BF16:
        return (size_t)n * 2;
    case DTYPE_Q8_0:
        return (size_t)(n / QK) * sizeof(bq8_0_t);
    case DTYPE_Q8_1:
        return (size_t)(n / QK) * sizeof(bq8_1_t);
    case DTYPE_Q8_K:
        return (size_t)(n / QKK) * sizeof(bq8_k_t);
    default:
        return 0;
    }
}

#ifdef HAVE_X86
static int quantize_row_avx512(uint32_t vec_type, void *dst, const float *x, int64_t n);
#endif

void kernels_quantize_row(uint32_t vec_type, void *dst, const float *x, int64_t n)
{
#ifdef HAVE_X86
    if (kernels_isa() == KERNEL_AVX512 && quantize_row_avx512(vec_type, dst, x, n)) return;
#endif
    switch (vec_type) {
    case DTYPE_F32:
        memcpy(dst, x, (size_t)n * 4);
        break;
    case DTYPE_F16:
        for (int64_t i = 0; i < n; i++)
            ((uint16_t *)dst)[i] = fp32_to_fp16(x[i]);
        break;
    case DTYPE_BF16:
        for (int64_t i = 0; i < n; i++)
            ((uint16_t *)dst)[i] = fp32_to_bf16(x[i]);
        break;
    case KERNEL_VEC_F16R:
    case KERNEL_VEC_BF16R: {
        int bf = vec_type == KERNEL_VEC_BF16R;
        float *f = dst;
        uint16_t *h = (uint16_t *)(f + n);
        for (int64_t i = 0; i < n; i++) {
            h[i] = bf ? fp32_to_bf16(x[i]) : fp32_to_fp16(x[i]);
            f[i] = bf ? bf16_to_fp32(h[i]) : fp16_to_fp32(h[i]);
        }
        break;
    }
    case DTYPE_Q8_0:
        quant_q8_0(dst, x, n);
        break;
    case DTYPE_Q8_1:
        quant_q8_1(dst, x, n);
        break;
    case DTYPE_Q8_K:
        quant_q8_k(dst, x, n);
        break;
    default:
        break;
    }
}

/* ---- generic dots ----------------------------------------------------------------------- */

/* Reduction order of the float dots (every ISA): the 8-element blocks in order into 8-lane
 * accumulators, a fixed pairwise horizontal sum, then the tail (n % 8 elements) in order.
 * F32 (and attention's scores) keeps one accumulator: its products are memory-bound at
 * one row and its tiles need one register per pair (4 x 3 on AVX2). F16 and BF16 put block
 * k into accumulator k % FCHAINS (independent chains, so one core keeps that many
 * multiply-adds in flight instead of waiting on one chain's latency: their conversions made
 * one chain compute-bound), summed lane by lane as (c0 + c1) + (c2 + c3) before the
 * horizontal sum. */
#define FCHAINS 4

static inline float hsum8(const float *v)
{
    return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

static inline float hsum_chains(float acc[FCHAINS][8])
{
    float v[8];
    for (int l = 0; l < 8; l++)
        v[l] = (acc[0][l] + acc[1][l]) + (acc[2][l] + acc[3][l]);
    return hsum8(v);
}

/* F32's dot in the generic C, over b's elements widened by CONV: dot_generic on f32 rows,
 * dot_generic_h on the halves of an F16 KV cache's keys (exact widening, so the same bits as
 * dot_generic on their f32 values) */
#define DOT_GENERIC(NAME, ET, CONV)                                                                \
    static float NAME(const float *a, const ET *b, int n)                                          \
    {                                                                                              \
        float acc[8] = {0};                                                                        \
        int j = 0;                                                                                 \
        for (; j + 8 <= n; j += 8)                                                                 \
            for (int l = 0; l < 8; l++)                                                            \
                acc[l] += a[j + l] * CONV(b[j + l]);                                               \
        float s = hsum8(acc);                                                                      \
        for (; j < n; j++)                                                                         \
            s += a[j] * CONV(b[j]);                                                                \
        return s;                                                                                  \
    }
#define F32_AS_IS(x) (x)

DOT_GENERIC(dot_generic, float, F32_AS_IS)
DOT_GENERIC(dot_generic_h, uint16_t, fp16_to_fp32)

static float g_dot_f32(int n, const void *w, const void *x)
{
    return dot_generic(w, x, n);
}

/* h: the type's 16-bit to f32 converter */
static inline float dot16_generic(const uint16_t *a, const uint16_t *b, int n, float (*h)(uint16_t))
{
    float acc[FCHAINS][8] = {{0}};
    int j = 0;
    for (int k = 0; j + 8 <= n; j += 8, k++)
        for (int l = 0; l < 8; l++)
            acc[k % FCHAINS][l] += h(a[j + l]) * h(b[j + l]);
    float s = hsum_chains(acc);
    for (; j < n; j++)
        s += h(a[j]) * h(b[j]);
    return s;
}

/* The 16-bit half of a KERNEL_VEC_F16R / BF16R row of n elements (after its n f32 values). */
static inline const uint16_t *half16(const void *x, int n)
{
    return (const uint16_t *)((const float *)x + n);
}

static float g_dot_f16(int n, const void *w, const void *x)
{
    return dot16_generic(w, half16(x, n), n, fp16_to_fp32);
}

static float g_dot_bf16(int n, const void *w, const void *x)
{
    return dot16_generic(w, half16(x, n), n, bf16_to_fp32);
}

/* Per-block integer sums, then one scalar float order shared by both ISAs. Each
 * `isum_*` returns the exact integer dot of one block. */

static int isum_q4_1(const bq4_1_t *b, const int8_t *y)
{
    int s = 0;
    for (int j = 0; j < 16; j++)
        s += (b->qs[j] & 0x0f) * y[j] + (b->qs[j] >> 4) * y[j + 16];
    return s;
}

static int isum_q5_1(const bq5_1_t *b, const int8_t *y)
{
    int s = 0;
    for (int j = 0; j < 32; j++)
        s += q5(b->qh, b->qs, j) * y[j];
    return s;
}

/* sub-block j (32 values) of a Q4_K / Q5_K super-block against 32 activations */
static int isum_q4_k_sub(const bq4_k_t *b, int j, const int8_t *y)
{
    const uint8_t *q = b->qs + 32 * (j / 2);
    int s = 0;
    for (int l = 0; l < 32; l++)
        s += ((j & 1) ? q[l] >> 4 : q[l] & 0x0f) * y[l];
    return s;
}

static int isum_q5_k_sub(const bq5_k_t *b, int j, const int8_t *y)
{
    const uint8_t *q = b->qs + 32 * (j / 2);
    int s = 0;
    for (int l = 0; l < 32; l++)
        s += (((j & 1) ? q[l] >> 4 : q[l] & 0x0f) | (((b->qh[l] >> j) & 1) << 4)) * y[l];
    return s;
}

/* group g (16 values, unsigned 0..63) of a Q6_K super-block against 16 activations */
static int isum_q6_k_group(const bq6_k_t *b, int g, const int8_t *y)
{
    int s = 0;
    for (int l = 0; l < 16; l++)
        s += q6(b, 16 * g + l) * y[l];
    return s;
}

/* The float combination of every quantized type, parameterized by the block integer
 * sums (generic or AVX2), so the two ISAs share it verbatim. */
#define DOT_32(attr, name, btype, ytype, isum, combine)                                            \
    attr static float name(int n, const void *w, const void *x)                                    \
    {                                                                                              \
        const btype *b = w;                                                                        \
        const ytype *y = x;                                                                        \
        float acc = 0.0f;                                                                          \
        for (int i = 0; i < n / QK; i++) {                                                         \
            int is = isum(&b[i], y[i].qs);                                                         \
            acc += combine;                                                                        \
        }                                                                                          \
        return acc;                                                                                \
    }

#define C_SYM (fp16_to_fp32(b[i].d) * fp16_to_fp32(y[i].d)) * (float)is
#define C_MIN C_SYM + fp16_to_fp32(b[i].m) * fp16_to_fp32(y[i].s)

#define DOT_K(attr, name, btype, sub)                                                              \
    attr static float name(int n, const void *w, const void *x)                                    \
    {                                                                                              \
        const btype *b = w;                                                                        \
        const bq8_k_t *y = x;                                                                      \
        float acc = 0.0f;                                                                          \
        for (int i = 0; i < n / QKK; i++) {                                                        \
            int isum = 0, msum = 0;                                                                \
            for (int j = 0; j < 8; j++) {                                                          \
                int sc, m;                                                                         \
                kscale(b[i].scales, j, &sc, &m);                                                   \
                isum += sc * sub(&b[i], j, y[i].qs + 32 * j);                                      \
                msum += m * (y[i].bsums[2 * j] + y[i].bsums[2 * j + 1]);                           \
            }                                                                                      \
            float d = y[i].d * fp16_to_fp32(b[i].d), dmin = y[i].d * fp16_to_fp32(b[i].dmin);      \
            acc += d * (float)isum - dmin * (float)msum;                                           \
        }                                                                                          \
        return acc;                                                                                \
    }

#define DOT_Q6K(attr, name, group)                                                                 \
    attr static float name(int n, const void *w, const void *x)                                    \
    {                                                                                              \
        const bq6_k_t *b = w;                                                                      \
        const bq8_k_t *y = x;                                                                      \
        float acc = 0.0f;                                                                          \
        for (int i = 0; i < n / QKK; i++) {                                                        \
            int isum = 0;                                                                          \
            for (int g = 0; g < 16; g++)                                                           \
                isum += b[i].scales[g] * (group(&b[i], g, y[i].qs + 16 * g) - 32 * y[i].bsums[g]); \
            acc += (y[i].d * fp16_to_fp32(b[i].d)) * (float)isum;                                  \
        }                                                                                          \
        return acc;                                                                                \
    }

/* The symmetric 32-blocks (Q8_0, Q4_0, Q5_0, IQ4_NL) keep eight float lanes instead of one
 * scalar chain: lane l takes each block's exact integer sum of elements 4l .. 4l+3, scaled by
 * (d_w * d_x), added block after block; the lanes are summed at the end in the order
 * hsum_avx uses. No horizontal sum per block (what made these types the slowest per byte),
 * and the generic, AVX2 and AVX-512 versions still give the same bits. */
static inline float hsum8_lanes(const float *v)
{
    return ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]));
}

static void vals_q4_0(const bq4_0_t *b, int *v)
{
    for (int j = 0; j < 16; j++) {
        v[j] = (b->qs[j] & 0x0f) - 8;
        v[j + 16] = (b->qs[j] >> 4) - 8;
    }
}
static void vals_q5_0(const bq5_0_t *b, int *v)
{
    for (int j = 0; j < 32; j++)
        v[j] = q5(b->qh, b->qs, j) - 16;
}
static void vals_iq4_nl(const bq4_0_t *b, int *v)
{
    for (int j = 0; j < 16; j++) {
        v[j] = iq4nl_values[b->qs[j] & 0x0f];
        v[j + 16] = iq4nl_values[b->qs[j] >> 4];
    }
}

#define DOT_32L(name, btype, vals)                                                                 \
    static float name(int n, const void *w, const void *x)                                         \
    {                                                                                              \
        const btype *b = w;                                                                        \
        const bq8_0_t *y = x;                                                                      \
        float acc[8] = {0.0f};                                                                     \
        for (int i = 0; i < n / QK; i++) {                                                         \
            int v[32];                                                                             \
            vals(&b[i], v);                                                                        \
            float prod = fp16_to_fp32(b[i].d) * fp16_to_fp32(y[i].d);                              \
            for (int l = 0; l < 8; l++) {                                                          \
                int p = 0;                                                                         \
                for (int k = 0; k < 4; k++)                                                        \
                    p += v[4 * l + k] * y[i].qs[4 * l + k];                                        \
                acc[l] = acc[l] + prod * (float)p;                                                 \
            }                                                                                      \
        }                                                                                          \
        return hsum8_lanes(acc);                                                                   \
    }

/* Q8_0 (kernels.h): a block's 32 products as one exact integer, then
 * c = fma(d_w * d_x, (float)sum, c) on chain c = block % 4, chains summed (c0 + c1) + (c2 + c3) */
static float g_dot_q8_0(int n, const void *w, const void *x)
{
    const bq8_0_t *b = w, *y = x;
    float c[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int i = 0; i < n / QK; i++) {
        int32_t sum = 0;
        for (int j = 0; j < 32; j++)
            sum += b[i].qs[j] * y[i].qs[j];
        c[i & 3] = fmaf(fp16_to_fp32(b[i].d) * fp16_to_fp32(y[i].d), (float)sum, c[i & 3]);
    }
    return (c[0] + c[1]) + (c[2] + c[3]);
}
DOT_32L(g_dot_q4_0, bq4_0_t, vals_q4_0)
DOT_32L(g_dot_q5_0, bq5_0_t, vals_q5_0)
DOT_32L(g_dot_iq4_nl, bq4_0_t, vals_iq4_nl)
DOT_32(, g_dot_q4_1, bq4_1_t, bq8_1_t, isum_q4_1, C_MIN)
DOT_32(, g_dot_q5_1, bq5_1_t, bq8_1_t, isum_q5_1, C_MIN)
DOT_K(, g_dot_q4_k, bq4_k_t, isum_q4_k_sub)
DOT_K(, g_dot_q5_k, bq5_k_t, isum_q5_k_sub)
DOT_Q6K(, g_dot_q6_k, isum_q6_k_group)

static void generic_mm(float *out, int ostride, const void *x, size_t xstride, int nrows,
                       const tensor_t *w, int i0, int i1);

static const kernel_type_t generic_table[] = {
    {DTYPE_F32, DTYPE_F32, dq_f32, g_dot_f32, NULL},
    {DTYPE_F16, KERNEL_VEC_F16R, dq_f16, g_dot_f16, NULL},
    {DTYPE_BF16, KERNEL_VEC_BF16R, dq_bf16, g_dot_bf16, NULL},
    {DTYPE_Q4_0, DTYPE_Q8_0, dq_q4_0, g_dot_q4_0, NULL},
    {DTYPE_Q4_1, DTYPE_Q8_1, dq_q4_1, g_dot_q4_1, NULL},
    {DTYPE_Q5_0, DTYPE_Q8_0, dq_q5_0, g_dot_q5_0, NULL},
    {DTYPE_Q5_1, DTYPE_Q8_1, dq_q5_1, g_dot_q5_1, NULL},
    {DTYPE_Q8_0, DTYPE_Q8_0, dq_q8_0, g_dot_q8_0, NULL},
    {DTYPE_IQ4_NL, DTYPE_Q8_0, dq_iq4_nl, g_dot_iq4_nl, NULL},
    {DTYPE_Q4_K, DTYPE_Q8_K, dq_q4_k, g_dot_q4_k, NULL},
    {DTYPE_Q5_K, DTYPE_Q8_K, dq_q5_k, g_dot_q5_k, NULL},
    {DTYPE_Q6_K, DTYPE_Q8_K, dq_q6_k, g_dot_q6_k, NULL},
};
#define N_TYPES (sizeof generic_table / sizeof generic_table[0])

size_t kernels_act_row_bytes_max(int64_t n)
{
    size_t most = 0;
    for (size_t i = 0; i < N_TYPES; i++) {
        size_t b = kernels_act_row_bytes(generic_table[i].vec_type, n);
        if (b > most) most = b;
    }
    return most;
}

static void generic_mm(float *out, int ostride, const void *x, size_t xstride, int nrows,
                       const tensor_t *w, int i0, int i1)
{
    const kernel_type_t *kt = kernels_for(w->type);
    int n = (int)w->ne[0];
    for (int i = i0; i < i1; i++) {
        const void *wi = (const char *)w->data + (size_t)i * w->row_bytes;
        for (int r = 0; r < nrows; r++)
            out[(size_t)r * ostride + i] = kt->dot(n, wi, (const char *)x + (size_t)r * xstride);
    }
}

/* ---- AVX2 + FMA + F16C -------------------------------------------------------------------- */

#ifdef HAVE_X86
#define AVX __attribute__((target("avx2,fma,f16c")))

AVX static inline float hsum_avx(__m256 v)
{
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    __m128 s = _mm_add_ps(lo, hi);   /* (0+4)(1+5)(2+6)(3+7) */
    __m128 sh = _mm_movehl_ps(s, s); /* (2+6)(3+7) */
    __m128 t = _mm_add_ps(s, sh);    /* (0+4)+(2+6), (1+5)+(3+7) */
    __m128 u = _mm_add_ss(t, _mm_shuffle_ps(t, t, 1));
    return _mm_cvtss_f32(u);
}

AVX static inline float hsum_chains_avx(__m256 c0, __m256 c1, __m256 c2, __m256 c3)
{
    return hsum_avx(_mm256_add_ps(_mm256_add_ps(c0, c1), _mm256_add_ps(c2, c3)));
}

AVX static inline __m256 f16x8(const uint16_t *p)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}

AVX static inline __m256 bf16x8(const uint16_t *p)
{
    __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
}

/* F32's dot: one FMA chain, as dot_generic orders it; LOAD widens 8 of b's elements, CONV one
 * (dot_avx on f32 rows, dot_avx_h on an F16 KV cache's keys: the same bits on their values) */
#define DOT_AVX(NAME, ET, LOAD, CONV)                                                              \
    AVX static float NAME(const float *a, const ET *b, int n)                                      \
    {                                                                                              \
        __m256 acc = _mm256_setzero_ps();                                                          \
        int j = 0;                                                                                 \
        for (; j + 8 <= n; j += 8)                                                                 \
            acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + j), LOAD(b + j), acc);                       \
        float s = hsum_avx(acc);                                                                   \
        for (; j < n; j++)                                                                         \
            s += a[j] * CONV(b[j]);                                                                \
        return s;                                                                                  \
    }

DOT_AVX(dot_avx, float, _mm256_loadu_ps, F32_AS_IS)
DOT_AVX(dot_avx_h, uint16_t, f16x8, fp16_to_fp32)

AVX static float a_dot_f32(int n, const void *w, const void *x)
{
    return dot_avx(w, x, n);
}

/* The F16/BF16 dots: FCHAINS (4) FMA chains, 8-block k into chain k % 4, as dot16_generic
 * orders them; LOAD widens 8 elements to f32, CONV one (the tail). One activation row takes
 * its row's 16-bit half: it stays in L1 beside the streaming weights where the f32 values of
 * a long row do not (1 thread, 2048 x 8192 F16 at one row: 1.8 ms a product with f16, 2.7
 * with f32 activations). */
#define DOTF(T, ET, LOAD, CONV)                                                                    \
    AVX static float dot_##T##_avx(const ET *a, const ET *b, int n)                                \
    {                                                                                              \
        __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;                                \
        int j = 0;                                                                                 \
        for (; j + 32 <= n; j += 32) {                                                             \
            c0 = _mm256_fmadd_ps(LOAD(a + j), LOAD(b + j), c0);                                    \
            c1 = _mm256_fmadd_ps(LOAD(a + j + 8), LOAD(b + j + 8), c1);                            \
            c2 = _mm256_fmadd_ps(LOAD(a + j + 16), LOAD(b + j + 16), c2);                          \
            c3 = _mm256_fmadd_ps(LOAD(a + j + 24), LOAD(b + j + 24), c3);                          \
        }                                                                                          \
        if (j + 8 <= n) c0 = _mm256_fmadd_ps(LOAD(a + j), LOAD(b + j), c0), j += 8;                \
        if (j + 8 <= n) c1 = _mm256_fmadd_ps(LOAD(a + j), LOAD(b + j), c1), j += 8;                \
        if (j + 8 <= n) c2 = _mm256_fmadd_ps(LOAD(a + j), LOAD(b + j), c2), j += 8;                \
        float s = hsum_chains_avx(c0, c1, c2, c3);                                                 \
        for (; j < n; j++)                                                                         \
            s += CONV(a[j]) * CONV(b[j]);                                                          \
        return s;                                                                                  \
    }                                                                                              \
    AVX static float a_dot_##T(int n, const void *w, const void *x)                                \
    {                                                                                              \
        return dot_##T##_avx(w, half16(x, n), n);                                                  \
    }

DOTF(f16, uint16_t, f16x8, fp16_to_fp32)
DOTF(bf16, uint16_t, bf16x8, bf16_to_fp32)

AVX static inline int hsum_i32(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1));
    return _mm_cvtsi128_si32(s);
}

/* sum of 32 products of unsigned bytes u (<= 128) and signed bytes y (|y| <= 127): the
 * pairwise 16-bit sums stay below 2^15, so nothing saturates */
AVX static inline int dot_u8s8(__m256i u, __m256i y)
{
    __m256i p = _mm256_maddubs_epi16(u, y);
    return hsum_i32(_mm256_madd_epi16(p, _mm256_set1_epi16(1)));
}

/* 16 bytes of nibbles -> 32 bytes: low nibbles first, then high nibbles */
AVX static inline __m256i nibbles(const uint8_t *qs)
{
    __m128i v = _mm_loadu_si128((const __m128i *)qs), m = _mm_set1_epi8(0x0f);
    __m128i lo = _mm_and_si128(v, m), hi = _mm_and_si128(_mm_srli_epi16(v, 4), m);
    return _mm256_set_m128i(hi, lo);
}

/* the 32 high bits of a Q5 block as 0x10 bytes */
AVX static inline __m256i q5_high(const uint8_t qh[4])
{
    uint32_t h;
    memcpy(&h, qh, 4);
    /* byte j takes bit j: spread the four bytes over the 32 lanes, select one bit each */
    __m256i v = _mm256_set1_epi32((int)h);
    __m256i shuf = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101,
                                     0x0000000000000000);
    v = _mm256_shuffle_epi8(v, shuf);
    __m256i bit = _mm256_set1_epi64x((int64_t)0x8040201008040201ull);
    v = _mm256_cmpeq_epi8(_mm256_and_si256(v, bit), bit);
    return _mm256_and_si256(v, _mm256_set1_epi8(0x10));
}

AVX static inline __m256i load32(const int8_t *y)
{
    return _mm256_loadu_si256((const __m256i *)y);
}

AVX static int a_isum_q4_1(const bq4_1_t *b, const int8_t *y)
{
    return dot_u8s8(nibbles(b->qs), load32(y));
}

AVX static int a_isum_q5_1(const bq5_1_t *b, const int8_t *y)
{
    return dot_u8s8(_mm256_or_si256(nibbles(b->qs), q5_high(b->qh)), load32(y));
}

AVX static int a_isum_q4_k_sub(const bq4_k_t *b, int j, const int8_t *y)
{
    __m256i v = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * (j / 2)));
    v = (j & 1) ? _mm256_srli_epi16(v, 4) : v;
    return dot_u8s8(_mm256_and_si256(v, _mm256_set1_epi8(0x0f)), load32(y));
}

AVX static int a_isum_q5_k_sub(const bq5_k_t *b, int j, const int8_t *y)
{
    __m256i v = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * (j / 2)));
    v = (j & 1) ? _mm256_srli_epi16(v, 4) : v;
    v = _mm256_and_si256(v, _mm256_set1_epi8(0x0f));
    __m256i h = _mm256_loadu_si256((const __m256i *)b->qh);
    h = _mm256_and_si256(_mm256_srl_epi16(h, _mm_cvtsi32_si128(j)), _mm256_set1_epi8(1));
    return dot_u8s8(_mm256_or_si256(v, _mm256_slli_epi16(h, 4)), load32(y));
}

/* two groups (32 values) of one 32-value run k of half h: groups 8h + 2k and 8h + 2k + 1 */
AVX static int a_isum_q6_k_group(const bq6_k_t *b, int g, const int8_t *y)
{
    int h = g / 8, k = (g % 8) / 2, half = g % 2;
    const uint8_t *ql = b->ql + 64 * h + ((k & 1) ? 32 : 0) + 16 * half;
    const uint8_t *qh = b->qh + 32 * h + 16 * half;
    __m128i lo = _mm_loadu_si128((const __m128i *)ql);
    lo = k < 2 ? lo : _mm_srli_epi16(lo, 4);
    lo = _mm_and_si128(lo, _mm_set1_epi8(0x0f));
    __m128i hi = _mm_srl_epi16(_mm_loadu_si128((const __m128i *)qh), _mm_cvtsi32_si128(2 * k));
    hi = _mm_slli_epi16(_mm_and_si128(hi, _mm_set1_epi8(3)), 4);
    __m128i q = _mm_or_si128(lo, hi);
    __m128i p = _mm_maddubs_epi16(q, _mm_loadu_si128((const __m128i *)y));
    p = _mm_madd_epi16(p, _mm_set1_epi16(1));
    p = _mm_add_epi32(p, _mm_shuffle_epi32(p, 0x4e));
    p = _mm_add_epi32(p, _mm_shuffle_epi32(p, 0xb1));
    return _mm_cvtsi128_si32(p);
}

/* the same float combinations as the generic dots, with AVX2 block sums */
DOT_32(AVX, a_dot_q4_1, bq4_1_t, bq8_1_t, a_isum_q4_1, C_MIN)
DOT_32(AVX, a_dot_q5_1, bq5_1_t, bq8_1_t, a_isum_q5_1, C_MIN)
DOT_K(AVX, a_dot_q4_k, bq4_k_t, a_isum_q4_k_sub)
DOT_K(AVX, a_dot_q5_k, bq5_k_t, a_isum_q5_k_sub)
DOT_Q6K(AVX, a_dot_q6_k, a_isum_q6_k_group)

/* One activation row reads the weight rows as one sequential stream, a dot per row (the
 * hardware prefetcher follows it; four interleaved row streams defeated it: stories15M's
 * fp32 decode on one thread went from ~120 to ~190 tok/s). With 2-4 activation rows the tiles
 * read several rows at once, and on short rows (a tile within PF_TILE_BYTES) the next tile's
 * rows are requested in one burst before the current one is computed. (The 32-block and the
 * F16/BF16 tiles instead request the next tile a few lines per step while computing, for any
 * row count: TNEXT, ZTILE32.) */
#define PF_TILE_BYTES (16 * 1024)

/* Requests `bytes` from p into the cache (prefetches never fault past the matrix's end). */
static inline void prefetch_block(const void *p, size_t bytes)
{
    for (size_t o = 0; o < bytes; o += 64)
        _mm_prefetch((const char *)p + o, _MM_HINT_T0);
}

/* Requests `bytes` from p into L2 only (for tiles over many activation rows, below). */
static inline void prefetch_l2(const void *p, size_t bytes)
{
    for (size_t o = 0; o < bytes; o += 64)
        _mm_prefetch((const char *)p + o, _MM_HINT_T1);
}

/* F32 product in tiles: WR weight rows x XR activation rows; every (row, output) pair runs
 * exactly dot_avx's operation sequence (one accumulator), so the tiling never changes a
 * result. AVX-512 CPUs run these too: 4 x 3 pairs hold 12 of 16 registers. */
#define TILE(WR, XR)                                                                               \
    AVX static void tile_##WR##_##XR(float *out, int ostride, const float *x, const float *w,      \
                                     int n, int i, int r)                                          \
    {                                                                                              \
        __m256 acc[WR][XR];                                                                        \
        for (int a = 0; a < WR; a++)                                                               \
            for (int b = 0; b < XR; b++)                                                           \
                acc[a][b] = _mm256_setzero_ps();                                                   \
        const float *wp[WR], *xp[XR];                                                              \
        for (int a = 0; a < WR; a++)                                                               \
            wp[a] = w + (size_t)(i + a) * n;                                                       \
        for (int b = 0; b < XR; b++)                                                               \
            xp[b] = x + (size_t)(r + b) * n;                                                       \
        int j = 0;                                                                                 \
        for (; j + 8 <= n; j += 8) {                                                               \
            __m256 xv[XR];                                                                         \
            for (int b = 0; b < XR; b++)                                                           \
                xv[b] = _mm256_loadu_ps(xp[b] + j);                                                \
            for (int a = 0; a < WR; a++) {                                                         \
                __m256 wv = _mm256_loadu_ps(wp[a] + j);                                            \
                for (int b = 0; b < XR; b++)                                                       \
                    acc[a][b] = _mm256_fmadd_ps(wv, xv[b], acc[a][b]);                             \
            }                                                                                      \
        }                                                                                          \
        for (int a = 0; a < WR; a++)                                                               \
            for (int b = 0; b < XR; b++) {                                                         \
                float s = hsum_avx(acc[a][b]);                                                     \
                for (int k = j; k < n; k++)                                                        \
                    s += wp[a][k] * xp[b][k];                                                      \
                out[(size_t)(r + b) * ostride + i + a] = s;                                        \
            }                                                                                      \
    }

TILE(4, 3)
TILE(4, 2)
TILE(4, 1)
TILE(1, 3)
TILE(1, 2)
TILE(1, 1)

/* All activation rows against weight rows i .. i + WR - 1 (WR 4 or 1), in tiles of 3 rows;
 * inlined into both drivers below so each keeps its own code */
#define F32_ROWS(WR)                                                                               \
    AVX static inline __attribute__((always_inline)) void f32_rows_##WR(                           \
        float *out, int ostride, const float *x, const float *w, int n, int i, int nrows)          \
    {                                                                                              \
        int r = 0;                                                                                 \
        for (; r + 3 <= nrows; r += 3)                                                             \
            tile_##WR##_3(out, ostride, x, w, n, i, r);                                            \
        if (nrows - r == 2) tile_##WR##_2(out, ostride, x, w, n, i, r);                            \
        if (nrows - r == 1) tile_##WR##_1(out, ostride, x, w, n, i, r);                            \
    }
F32_ROWS(4)
F32_ROWS(1)

/* Many activation rows (a batch, a prompt): each 4-row weight tile is read by every tile of
 * activation rows, from L1 after the first; on short rows the next weight tile is requested
 * into L2 meanwhile (into L1 it would evict the rows in use). Measured on stories15M's
 * classifier (32000 x 288, 16 rows, one thread): 7.0 -> 4.5 ms a product. A separate function:
 * one loop for both cases made the few-rows path 30% slower through code generation alone. */
AVX static void matmul_many_avx(float *out, int ostride, const float *x, int nrows, const float *w,
                                int n, int i0, int i1)
{
    int pf = (size_t)n * 16 <= PF_TILE_BYTES;
    int i = i0;
    for (; i + 4 <= i1; i += 4) {
        if (pf) prefetch_l2(w + (size_t)(i + 4) * n, (size_t)n * 16);
        f32_rows_4(out, ostride, x, w, n, i, nrows);
    }
    for (; i < i1; i++)
        f32_rows_1(out, ostride, x, w, n, i, nrows);
}

AVX static void matmul_avx(float *out, int ostride, const float *x, int nrows, const float *w,
                           int n, int i0, int i1)
{
    if (nrows == 1) { /* one sequential stream of weight rows */
        for (int i = i0; i < i1; i++)
            out[i] = dot_avx(w + (size_t)i * n, x, n);
        return;
    }
    if (nrows > 4) {
        matmul_many_avx(out, ostride, x, nrows, w, n, i0, i1);
        return;
    }
    int pf = (size_t)n * 16 <= PF_TILE_BYTES;
    int i = i0;
    for (; i + 4 <= i1; i += 4) {
        if (pf) prefetch_block(w + (size_t)(i + 4) * n, (size_t)n * 16);
        f32_rows_4(out, ostride, x, w, n, i, nrows);
    }
    for (; i < i1; i++)
        f32_rows_1(out, ostride, x, w, n, i, nrows);
}

AVX static void a_mm_f32(float *out, int ostride, const void *x, size_t xstride, int nrows,
                         const tensor_t *w, int i0, int i1)
{
    (void)xstride; /* f32 rows are packed: xstride == 4 * ne[0] */
    matmul_avx(out, ostride, x, nrows, w->data, (int)w->ne[0], i0, i1);
}

/* ---- AVX2 products over many rows ------------------------------------------------------------
 * Tiles of weight rows x activation rows. Every (weight row, activation row) pair goes through
 * the very operations of its type's dot, in the same order: the tiles only share loads and
 * unpacking between pairs and interleave independent pairs so that their dependency chains
 * overlap. So a result never depends on the tile it was computed in (batch invariance), and
 * the quantized ones stay bit-for-bit equal to the generic dots. */

/* The float tiles' weight stream: while the first activation group (r == 0) runs over a tile's
 * WR rows, the next WR rows (contiguous) are requested into L2 WR lines per 32 elements, spread
 * over the tile's work: from DRAM the tiles read WR rows at once, which the hardware prefetchers
 * follow worse than one stream, and a burst at the tile's start (the old way, and only for tiles
 * within 16 KiB) arrived too late (1 thread, 16384 x 8192 F16 from DRAM: 4 rows 20.8 -> 17.0 ms,
 * 16 rows 50 -> 45; llama1b-f16 at 4 sequences, 2 threads: 26-29 -> 34-35 tok/s; into L1 it
 * evicted the rows in use: 24.8 ms). */
#define TNEXT(WR, ET, jj)                                                                          \
    do {                                                                                           \
        if (r == 0)                                                                                \
            _Pragma("GCC unroll 4") for (int a = 0; a < WR; a++) _mm_prefetch(                     \
                pn + (size_t)((jj) / 32) * WR * 32 * sizeof(ET) + 64 * a, _MM_HINT_T1);            \
    } while (0)

/* F16/BF16 rows: WR weight rows x XR activation rows, each pair with its own
 * FCHAINS accumulators fed exactly as in dot_T_avx (8-block k into chain k % 4, the same
 * chain sum, horizontal sum and scalar tail). With 4 chains a pair holds 4 registers: the
 * AVX2 tiles are 1 x 3 (12 accumulators of 16 registers; AVX-512 has its own, ZTILE). */
#define TSTEP(LOAD, WR, XR, c, jj)                                                                 \
    do {                                                                                           \
        __m256 xv[XR];                                                                             \
        _Pragma("GCC unroll 4") for (int b = 0; b < XR; b++) xv[b] =                               \
            _mm256_loadu_ps(xp[b] + (jj));                                                         \
        _Pragma("GCC unroll 4") for (int a = 0; a < WR; a++)                                       \
        {                                                                                          \
            __m256 wv = LOAD(wp[a] + (jj));                                                        \
            _Pragma("GCC unroll 4") for (int b = 0; b < XR; b++) acc[a][b][c] =                    \
                _mm256_fmadd_ps(wv, xv[b], acc[a][b][c]);                                          \
        }                                                                                          \
    } while (0)

#define TILEF(ATTR, PFX, T, ET, LOAD, CONV, WR, XR)                                                \
    ATTR static void PFX##tile_##T##_##WR##_##XR(float *out, int ostride, const float *x,          \
                                                 size_t xs, const ET *w, size_t ws, int n, int i,  \
                                                 int r)                                            \
    {                                                                                              \
        __m256 acc[WR][XR][FCHAINS];                                                               \
        const ET *wp[WR];                                                                          \
        const float *xp[XR];                                                                       \
        _Pragma("GCC unroll 4") for (int a = 0; a < WR; a++)                                       \
        {                                                                                          \
            wp[a] = w + (size_t)(i + a) * ws;                                                      \
            _Pragma("GCC unroll 4") for (int b = 0; b < XR; b++)                                   \
                _Pragma("GCC unroll 4") for (int c = 0; c < FCHAINS; c++) acc[a][b][c] =           \
                    _mm256_setzero_ps();                                                           \
        }                                                                                          \
        _Pragma("GCC unroll 4") for (int b = 0; b < XR; b++) xp[b] = x + (size_t)(r + b) * xs;     \
        const char *pn = (const char *)(w + (size_t)(i + WR) * ws); /* never faults */             \
        int j = 0;                                                                                 \
        for (; j + 32 <= n; j += 32) {                                                             \
            TNEXT(WR, ET, j);                                                                      \
            TSTEP(LOAD, WR, XR, 0, j);                                                             \
            TSTEP(LOAD, WR, XR, 1, j + 8);                                                         \
            TSTEP(LOAD, WR, XR, 2, j + 16);                                                        \
            TSTEP(LOAD, WR, XR, 3, j + 24);                                                        \
        }                                                                                          \
        if (j + 8 <= n) {                                                                          \
            TSTEP(LOAD, WR, XR, 0, j);                                                             \
            j += 8;                                                                                \
        }                                                                                          \
        if (j + 8 <= n) {                                                                          \
            TSTEP(LOAD, WR, XR, 1, j);                                                             \
            j += 8;                                                                                \
        }                                                                                          \
        if (j + 8 <= n) {                                                                          \
            TSTEP(LOAD, WR, XR, 2, j);                                                             \
            j += 8;                                                                                \
        }                                                                                          \
        _Pragma("GCC unroll 4") for (int a = 0; a < WR; a++)                                       \
            _Pragma("GCC unroll 4") for (int b = 0; b < XR; b++)                                   \
        {                                                                                          \
            float s = hsum_chains_avx(acc[a][b][0], acc[a][b][1], acc[a][b][2], acc[a][b][3]);     \
            for (int k = j; k < n; k++)                                                            \
                s += CONV(wp[a][k]) * xp[b][k];                                                    \
            out[(size_t)(r + b) * ostride + i + a] = s;                                            \
        }                                                                                          \
    }

/* The product over [i0, i1) x nrows of one float type: x (nrows, xs elements), w (rows, ws
 * elements); weight rows left over from the WR-row tiles take the dot itself (the same
 * arithmetic). Activation rows go three at a time, but four left as two twos: a one-row tile
 * converts each weight block for one product (1 thread, F16 8192 x 2048 at 4 rows: 3.9 ->
 * 3.2 ms a product; tiles of 2 or 1 weight rows x all 4 activation rows, reading each weight
 * tile once, measured 4.0 and 4.8: few weight rows ask more activation loads per product). */
#define MMF(TILEM, ATTR, PFX, T, ET, LOAD, CONV, WR)                                               \
    TILEM(ATTR, PFX, T, ET, LOAD, CONV, WR, 3)                                                     \
    TILEM(ATTR, PFX, T, ET, LOAD, CONV, WR, 2)                                                     \
    TILEM(ATTR, PFX, T, ET, LOAD, CONV, WR, 1)                                                     \
    ATTR static void PFX##mmf_##T(float *out, int ostride, const float *x, size_t xs, int nrows,   \
                                  const ET *w, size_t ws, int n, int i0, int i1)                   \
    {                                                                                              \
        int i = i0;                                                                                \
        if (nrows == 1) { /* one sequential stream of weight rows */                               \
            for (; i < i1; i++)                                                                    \
                out[i] = dot_##T##_avx(w + (size_t)i * ws, half16(x, n), n);                       \
            return;                                                                                \
        }                                                                                          \
        for (; i + WR <= i1; i += WR) {                                                            \
            int r = 0;                                                                             \
            for (; nrows - r >= 5 || nrows - r == 3; r += 3)                                       \
                PFX##tile_##T##_##WR##_3(out, ostride, x, xs, w, ws, n, i, r);                     \
            for (; nrows - r >= 2; r += 2)                                                         \
                PFX##tile_##T##_##WR##_2(out, ostride, x, xs, w, ws, n, i, r);                     \
            if (nrows - r == 1) PFX##tile_##T##_##WR##_1(out, ostride, x, xs, w, ws, n, i, r);     \
        }                                                                                          \
        for (; i < i1; i++)                                                                        \
            for (int r = 0; r < nrows; r++)                                                        \
                out[(size_t)r * ostride + i] =                                                     \
                    dot_##T##_avx(w + (size_t)i * ws, half16(x + (size_t)r * xs, n), n);           \
    }                                                                                              \
    ATTR static void PFX##mm_##T(float *out, int ostride, const void *x, size_t xstride,           \
                                 int nrows, const tensor_t *w, int i0, int i1)                     \
    {                                                                                              \
        PFX##mmf_##T(out, ostride, x, xstride / sizeof(float), nrows, w->data,                     \
                     w->row_bytes / sizeof(ET), (int)w->ne[0], i0, i1);                            \
    }

MMF(TILEF, AVX, a_, f16, uint16_t, f16x8, fp16_to_fp32, 1)
MMF(TILEF, AVX, a_, bf16, uint16_t, bf16x8, bf16_to_fp32, 1)

/* The 8 scales and 8 mins of a Q4_K/Q5_K super-block (kscale for every j at once) as 16
 * bytes sc0..sc7, m0..m7, computed in general registers: bytes stored one at a time and then
 * loaded as a vector would stall store forwarding. */
AVX static inline __m128i kscales16(const uint8_t *s)
{
    uint32_t w0, w1, w2;
    memcpy(&w0, s, 4);
    memcpy(&w1, s + 4, 4);
    memcpy(&w2, s + 8, 4);
    uint32_t sc_lo = w0 & 0x3f3f3f3fu;
    uint32_t sc_hi = (w2 & 0x0f0f0f0fu) | (((w0 >> 6) & 0x03030303u) << 4);
    uint32_t m_lo = w1 & 0x3f3f3f3fu;
    uint32_t m_hi = ((w2 >> 4) & 0x0f0f0f0fu) | (((w1 >> 6) & 0x03030303u) << 4);
    return _mm_setr_epi32((int)sc_lo, (int)sc_hi, (int)m_lo, (int)m_hi);
}

/* the mins of kscales16's result, each twice, as 16-bit lanes (for madd with the bsums) */
AVX static inline __m256i kmins_dup(__m128i sm)
{
    __m128i m8 = _mm_unpackhi_epi64(sm, sm);
    return _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m8, m8));
}

/* Four sums of 8 int32 lanes each, as one vector of four int32 (exact), by unpacks and adds:
 * vphaddd is two shuffles and an add (one per 2 cycles on Zen 4), and three of them per four
 * rows were a fifth of the many-row k-quant tiles' shuffle work. */
AVX static inline __m128i hsum4_i32(__m256i s0, __m256i s1, __m256i s2, __m256i s3)
{
    /* per 128-bit lane: [s0 0+2, s1 0+2, s0 1+3, s1 1+3], the same for s2, s3 */
    __m256i a = _mm256_add_epi32(_mm256_unpacklo_epi32(s0, s1), _mm256_unpackhi_epi32(s0, s1));
    __m256i b = _mm256_add_epi32(_mm256_unpacklo_epi32(s2, s3), _mm256_unpackhi_epi32(s2, s3));
    /* per 128-bit lane: the four rows' sums of that lane */
    __m256i h = _mm256_add_epi32(_mm256_unpacklo_epi64(a, b), _mm256_unpackhi_epi64(a, b));
    return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

/* 32-blocks with one fp16 scale and signed values (Q8_0, Q4_0, Q5_0, IQ4_NL): four weight
 * rows at a time against XR activation rows; per pair the block sums are exact and the
 * float chain is C_SYM's: acc += (d_w * d_x) * (float)sum, one block after another. The four
 * rows' chains advance together in one 4-lane vector. UNPACK gives a block's 32 values as
 * signed bytes. */
/* lane sums of a block: |q| x (y with q's sign), pairs then quads, exact */
AVX static inline __m256i lanes32(__m256i q, __m256i y)
{
    return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(q, q), _mm256_sign_epi8(y, q)),
                             _mm256_set1_epi16(1));
}

/* acc + prod * (float)lanes, as DOT_32L's lane step */
AVX static inline __m256 lane_step(__m256 acc, float prod, __m256i lanes)
{
    return _mm256_add_ps(acc, _mm256_mul_ps(_mm256_set1_ps(prod), _mm256_cvtepi32_ps(lanes)));
}

#define TILE32(T, BT, UNPACK, XR)                                                                  \
    AVX static void t32_##T##_##XR(float *out, int ostride, const bq8_0_t *const *yb,              \
                                   const BT *const *wb, int nb, int i, int r, const char *pf)      \
    {                                                                                              \
        __m256 acc[XR][4];                                                                         \
        for (int b = 0; b < XR; b++)                                                               \
            for (int a = 0; a < 4; a++)                                                            \
                acc[b][a] = _mm256_setzero_ps();                                                   \
        for (int ib = 0; ib < nb; ib++) {                                                          \
            if (pf) {                                                                              \
                _mm_prefetch(pf + 4 * sizeof(BT) * (size_t)ib, _MM_HINT_T0);                       \
                _mm_prefetch(pf + 4 * sizeof(BT) * (size_t)ib + 64, _MM_HINT_T0);                  \
            }                                                                                      \
            __m256i q[4];                                                                          \
            float wd[4];                                                                           \
            for (int a = 0; a < 4; a++) {                                                          \
                q[a] = UNPACK(&wb[a][ib]);                                                         \
                wd[a] = _cvtsh_ss(wb[a][ib].d);                                                    \
            }                                                                                      \
            for (int b = 0; b < XR; b++) {                                                         \
                __m256i y = _mm256_loadu_si256((const __m256i *)yb[b][ib].qs);                     \
                float yd = _cvtsh_ss(yb[b][ib].d);                                                 \
                for (int a = 0; a < 4; a++)                                                        \
                    acc[b][a] = lane_step(acc[b][a], wd[a] * yd, lanes32(q[a], y));                \
            }                                                                                      \
        }                                                                                          \
        for (int b = 0; b < XR; b++)                                                               \
            for (int a = 0; a < 4; a++)                                                            \
                out[(size_t)(r + b) * ostride + i + a] = hsum_avx(acc[b][a]);                      \
    }

/* The driver of a 32-block type's product: one weight row stream at one activation row,
 * else tiles of 4 weight rows x 2 (then 1) activation rows, the remainder by the dot. */
#define MM32_DRIVER(ATTR, NAME, TILE2, TILE1, BT, DOT)                                             \
    ATTR static void NAME(float *out, int ostride, const void *x, size_t xstride, int nrows,       \
                          const tensor_t *w, int i0, int i1)                                       \
    {                                                                                              \
        int n = (int)w->ne[0], nb = n / QK, i = i0;                                                \
        if (nrows == 1) { /* one sequential stream of weight rows: no tile needed */               \
            for (; i < i1; i++)                                                                    \
                out[i] = DOT(n, (const char *)w->data + (size_t)i * w->row_bytes, x);              \
            return;                                                                                \
        }                                                                                          \
        for (; i + 4 <= i1; i += 4) {                                                              \
            const BT *wb[4];                                                                       \
            for (int a = 0; a < 4; a++)                                                            \
                wb[a] = (const BT *)((const char *)w->data + (size_t)(i + a) * w->row_bytes);      \
            /* the next tile's rows, spread over the first activation rows' pass */                \
            const char *pf = (const char *)wb[0] + 4 * w->row_bytes;                               \
            int r = 0;                                                                             \
            for (; r + 2 <= nrows; r += 2) {                                                       \
                const bq8_0_t *yb[2] = {                                                           \
                    (const bq8_0_t *)((const char *)x + (size_t)r * xstride),                      \
                    (const bq8_0_t *)((const char *)x + (size_t)(r + 1) * xstride)};               \
                TILE2(out, ostride, yb, wb, nb, i, r, r == 0 ? pf : NULL);                         \
            }                                                                                      \
            if (r < nrows) {                                                                       \
                const bq8_0_t *yb[1] = {(const bq8_0_t *)((const char *)x + (size_t)r * xstride)}; \
                TILE1(out, ostride, yb, wb, nb, i, r, r == 0 ? pf : NULL);                         \
            }                                                                                      \
        }                                                                                          \
        for (; i < i1; i++) {                                                                      \
            const char *wi = (const char *)w->data + (size_t)i * w->row_bytes;                     \
            for (int r = 0; r < nrows; r++)                                                        \
                out[(size_t)r * ostride + i] = DOT(n, wi, (const char *)x + (size_t)r * xstride);  \
        }                                                                                          \
    }

#define MM32(T, BT, UNPACK, DOT)                                                                   \
    TILE32(T, BT, UNPACK, 1)                                                                       \
    TILE32(T, BT, UNPACK, 2)                                                                       \
    MM32_DRIVER(AVX, a_mm_##T, t32_##T##_2, t32_##T##_1, BT, DOT)

AVX static inline __m256i unpack_q8_0(const bq8_0_t *b)
{
    return _mm256_loadu_si256((const __m256i *)b->qs);
}

AVX static inline __m256i unpack_q4_0(const bq4_0_t *b)
{
    return _mm256_sub_epi8(nibbles(b->qs), _mm256_set1_epi8(8));
}

AVX static inline __m256i unpack_q5_0(const bq5_0_t *b)
{
    return _mm256_sub_epi8(_mm256_or_si256(nibbles(b->qs), q5_high(b->qh)), _mm256_set1_epi8(16));
}

AVX static inline __m256i unpack_iq4_nl(const bq4_0_t *b)
{
    __m128i tbl = _mm_loadu_si128((const __m128i *)iq4nl_values);
    return _mm256_shuffle_epi8(_mm256_set_m128i(tbl, tbl), nibbles(b->qs));
}

#define ADOT32L(T, BT, UNPACK)                                                                     \
    AVX static float a_dot_##T(int n, const void *w, const void *x)                                \
    {                                                                                              \
        const BT *b = w;                                                                           \
        const bq8_0_t *y = x;                                                                      \
        __m256 acc = _mm256_setzero_ps();                                                          \
        for (int i = 0; i < n / QK; i++)                                                           \
            acc = lane_step(acc, _cvtsh_ss(b[i].d) * _cvtsh_ss(y[i].d),                            \
                            lanes32(UNPACK(&b[i]), _mm256_loadu_si256((const __m256i *)y[i].qs))); \
        return hsum_avx(acc);                                                                      \
    }

ADOT32L(q4_0, bq4_0_t, unpack_q4_0)
ADOT32L(q5_0, bq5_0_t, unpack_q5_0)
ADOT32L(iq4_nl, bq4_0_t, unpack_iq4_nl)

/* Q8_0 in its own order (g_dot_q8_0): a block's exact sum, then one fused multiply-add a
 * block on chain block % 4. One row against one activation row takes 8 blocks a step: their 8
 * lane sums gathered into one vector of 8 block sums (hsum4_i32), the 8 scales inserted one
 * by one, and two 4-lane fmas, lane c being chain c. LANES: a block's 8 lane sums, exact. */
#define DOT_Q8_0(ATTR, NAME, LANES)                                                                \
    ATTR static float NAME(int n, const void *w, const void *x)                                    \
    {                                                                                              \
        const bq8_0_t *b = w, *y = x;                                                              \
        int nb = n / QK, ib = 0;                                                                   \
        __m128 acc = _mm_setzero_ps();                                                             \
        for (; ib + 8 <= nb; ib += 8) {                                                            \
            __m256i l[8];                                                                          \
            for (int j = 0; j < 8; j++)                                                            \
                l[j] = LANES(_mm256_loadu_si256((const __m256i *)b[ib + j].qs),                    \
                             _mm256_loadu_si256((const __m256i *)y[ib + j].qs));                   \
            __m256 f = _mm256_cvtepi32_ps(_mm256_set_m128i(hsum4_i32(l[4], l[5], l[6], l[7]),      \
                                                           hsum4_i32(l[0], l[1], l[2], l[3])));    \
            __m256 dd =                                                                            \
                _mm256_mul_ps(_mm256_cvtph_ps(q8_0_d8(b + ib)), _mm256_cvtph_ps(q8_0_d8(y + ib))); \
            acc = _mm_fmadd_ps(_mm256_castps256_ps128(dd), _mm256_castps256_ps128(f), acc);        \
            acc = _mm_fmadd_ps(_mm256_extractf128_ps(dd, 1), _mm256_extractf128_ps(f, 1), acc);    \
        }                                                                                          \
        float c[4];                                                                                \
        _mm_storeu_ps(c, acc);                                                                     \
        for (; ib < nb; ib++) {                                                                    \
            int32_t sum = hsum8_i32(LANES(_mm256_loadu_si256((const __m256i *)b[ib].qs),           \
                                          _mm256_loadu_si256((const __m256i *)y[ib].qs)));         \
            c[ib & 3] =                                                                            \
                _mm_cvtss_f32(_mm_fmadd_ss(_mm_set_ss(_cvtsh_ss(b[ib].d) * _cvtsh_ss(y[ib].d)),    \
                                           _mm_set_ss((float)sum), _mm_set_ss(c[ib & 3])));        \
        }                                                                                          \
        return (c[0] + c[1]) + (c[2] + c[3]);                                                      \
    }

/* the scales of 8 consecutive blocks (a gather took ~2 cycles a block on Zen 4) */
AVX static inline __m128i q8_0_d8(const bq8_0_t *b)
{
    return _mm_setr_epi16((short)b[0].d, (short)b[1].d, (short)b[2].d, (short)b[3].d, (short)b[4].d,
                          (short)b[5].d, (short)b[6].d, (short)b[7].d);
}

AVX static inline int32_t hsum8_i32(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4e));
    return _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 0xb1)));
}

DOT_Q8_0(AVX, a_dot_q8_0, lanes32)

/* AVX2 Q8_0 with 8 activation rows in the lanes (g_dot_q8_0's order, as the AVX-512 tiles): per
 * group of 8 rows and block, word k of each row's block at lane c (an 8 x 8 transpose) and the
 * rows' scales, prepared once per call for every group; a weight row's word k, broadcast, gives
 * |w| x (y with w's signs) by maddubs (|y| <= 127 keeps a pair's sum in int16) and madd, so 8
 * steps give the 8 rows' block sums with no step across lanes. One weight row a tile (16
 * registers); the pair tiles of the old order took ~7 operations per 32 products, these ~5. */
typedef struct {
    __m256i y[8];
    __m256 yd;
} atr_t;

#define AT_MAXNB 512 /* blocks per row the scratch covers for every group of a call */

AVX static void atprepare(atr_t *at, const char *x, size_t xstride, int r, int xr, int nb)
{
    const bq8_0_t *row[8];
    for (int c = 0; c < 8; c++)
        row[c] = (const bq8_0_t *)(x + (size_t)(r + (c < xr ? c : xr - 1)) * xstride);
    for (int ib = 0; ib < nb; ib++) {
        __m256i v[8], t[8], u[8];
        for (int j = 0; j < 8; j++)
            v[j] = _mm256_loadu_si256((const __m256i *)row[j][ib].qs);
        for (int j = 0; j < 8; j += 2) {
            t[j] = _mm256_unpacklo_epi32(v[j], v[j + 1]);
            t[j + 1] = _mm256_unpackhi_epi32(v[j], v[j + 1]);
        }
        for (int h = 0; h < 8; h += 4) { /* rows 0-3 (h 0) and 4-7 (h 4): words k | k + 4 */
            u[h] = _mm256_unpacklo_epi64(t[h], t[h + 2]);
            u[h + 1] = _mm256_unpackhi_epi64(t[h], t[h + 2]);
            u[h + 2] = _mm256_unpacklo_epi64(t[h + 1], t[h + 3]);
            u[h + 3] = _mm256_unpackhi_epi64(t[h + 1], t[h + 3]);
        }
        for (int k = 0; k < 4; k++) {
            at[ib].y[k] = _mm256_permute2x128_si256(u[k], u[k + 4], 0x20);
            at[ib].y[k + 4] = _mm256_permute2x128_si256(u[k], u[k + 4], 0x31);
        }
        at[ib].yd = _mm256_cvtph_ps(_mm_setr_epi16(
            (short)row[0][ib].d, (short)row[1][ib].d, (short)row[2][ib].d, (short)row[3][ib].d,
            (short)row[4][ib].d, (short)row[5][ib].d, (short)row[6][ib].d, (short)row[7][ib].d));
    }
}

/* weight row i (wb) x the prepared group (rows r .. r + xr - 1; only xr stored) */
AVX static void at_q8_0(float *out, int ostride, const atr_t *at, const bq8_0_t *wb, int nb, int i,
                        int r, int xr)
{
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[4];
    for (int c = 0; c < 4; c++)
        acc[c] = _mm256_setzero_ps();
    for (int ib0 = 0; ib0 < nb; ib0 += 4)
        _Pragma("GCC unroll 4") for (int c = 0; c < 4; c++) if (ib0 + c < nb)
        {
            int ib = ib0 + c;
            const atr_t *z = &at[ib];
            __m256i s = _mm256_setzero_si256();
            _Pragma("GCC unroll 8") for (int k = 0; k < 8; k++)
            {
                int32_t wv;
                memcpy(&wv, wb[ib].qs + 4 * k, 4);
                __m256i wk = _mm256_set1_epi32(wv);
                s = _mm256_add_epi32(
                    s, _mm256_madd_epi16(
                           _mm256_maddubs_epi16(_mm256_abs_epi8(wk), _mm256_sign_epi8(z->y[k], wk)),
                           ones));
            }
            __m256 dd = _mm256_mul_ps(_mm256_set1_ps(_cvtsh_ss(wb[ib].d)), z->yd);
            acc[c] = _mm256_fmadd_ps(dd, _mm256_cvtepi32_ps(s), acc[c]);
        }
    float o[8];
    _mm256_storeu_ps(o,
                     _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
    for (int c = 0; c < xr; c++)
        out[(size_t)(r + c) * ostride + i] = o[c];
}

static void *zscratch(size_t bytes);

/* Every group of 8 activation rows prepared, then each weight row against the groups (a row is
 * read once); up to 4 activation rows (half the lanes idle: 22-25 GMAC/s against the dot's 29),
 * or rows too long, by the dot per pair. */
AVX static void a_mm_q8_0(float *out, int ostride, const void *x, size_t xstride, int nrows,
                          const tensor_t *w, int i0, int i1)
{
    int n = (int)w->ne[0], nb = n / QK, ng = (nrows + 7) / 8;
    atr_t *at = NULL;
    if (nrows > 4 && nb <= AT_MAXNB) at = zscratch(sizeof(atr_t) * (size_t)nb * (size_t)ng);
    if (!at) {
        generic_mm(out, ostride, x, xstride, nrows, w, i0, i1); /* a_dot_q8_0 per pair */
        return;
    }
    for (int g = 0; g < ng; g++)
        atprepare(at + (size_t)g * nb, x, xstride, 8 * g, nrows - 8 * g < 8 ? nrows - 8 * g : 8,
                  nb);
    for (int i = i0; i < i1; i++) {
        const bq8_0_t *wb = (const bq8_0_t *)((const char *)w->data + (size_t)i * w->row_bytes);
        for (int g = 0; g < ng; g++)
            at_q8_0(out, ostride, at + (size_t)g * nb, wb, nb, i, 8 * g,
                    nrows - 8 * g < 8 ? nrows - 8 * g : 8);
    }
}
MM32(q4_0, bq4_0_t, unpack_q4_0, a_dot_q4_0)
MM32(q5_0, bq5_0_t, unpack_q5_0, a_dot_q5_0)
MM32(iq4_nl, bq4_0_t, unpack_iq4_nl, a_dot_iq4_nl)

/* Q4_K / Q5_K: one weight row against up to 4 activation rows. A super-block is unpacked once
 * (its 8 sub-blocks of 32 unsigned values, 8 scales, 8 mins) and used for every activation
 * row; per pair isum = sum_j sc_j * (q_j . y_j) and msum = sum_j m_j * (bsums of j) are exact,
 * and the float chain is DOT_K's. */
AVX static inline void unpack_q4_k(const bq4_k_t *b, __m256i q[8])
{
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    for (int k = 0; k < 4; k++) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * k));
        q[2 * k] = _mm256_and_si256(v, m4);
        q[2 * k + 1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), m4);
    }
}

AVX static inline void unpack_q5_k(const bq5_k_t *b, __m256i q[8])
{
    const __m256i m4 = _mm256_set1_epi8(0x0f), one = _mm256_set1_epi8(1);
    __m256i h = _mm256_loadu_si256((const __m256i *)b->qh);
    for (int k = 0; k < 4; k++) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * k));
        __m256i h0 = _mm256_and_si256(_mm256_srli_epi16(h, 2 * k), one);
        __m256i h1 = _mm256_and_si256(_mm256_srli_epi16(h, 2 * k + 1), one);
        q[2 * k] = _mm256_or_si256(_mm256_and_si256(v, m4), _mm256_slli_epi16(h0, 4));
        q[2 * k + 1] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(v, 4), m4),
                                       _mm256_slli_epi16(h1, 4));
    }
}

#define MMK(T, BT, UNPACK)                                                                         \
    AVX static void a_mm_##T(float *out, int ostride, const void *x, size_t xstride, int nrows,    \
                             const tensor_t *w, int i0, int i1)                                    \
    {                                                                                              \
        int nb = (int)w->ne[0] / QKK;                                                              \
        for (int i = i0; i < i1; i++) {                                                            \
            const BT *b = (const BT *)((const char *)w->data + (size_t)i * w->row_bytes);          \
            for (int r0 = 0; r0 < nrows; r0 += 16) {                                               \
                int nx = nrows - r0 < 16 ? nrows - r0 : 16;                                        \
                float acc[16] = {0.0f};                                                            \
                for (int ib = 0; ib < nb; ib++) {                                                  \
                    __m256i q[8];                                                                  \
                    UNPACK(&b[ib], q);                                                             \
                    __m128i sm = kscales16(b[ib].scales);                                          \
                    __m256i sc2 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));              \
                    __m256i mins = kmins_dup(sm);                                                  \
                    float dw = _cvtsh_ss(b[ib].d), dmw = _cvtsh_ss(b[ib].dmin);                    \
                    for (int rr = 0; rr < nx; rr++) {                                              \
                        const bq8_k_t *y =                                                         \
                            (const bq8_k_t *)((const char *)x + (size_t)(r0 + rr) * xstride) + ib; \
                        __m256i s = _mm256_setzero_si256();                                        \
                        for (int j = 0; j < 8; j++) {                                              \
                            __m256i p = _mm256_maddubs_epi16(                                      \
                                q[j], _mm256_loadu_si256((const __m256i *)(y->qs + 32 * j)));      \
                            __m256i scj = _mm256_shuffle_epi8(                                     \
                                sc2, _mm256_set1_epi16((short)(0x0100 + 0x0202 * j)));             \
                            s = _mm256_add_epi32(s, _mm256_madd_epi16(p, scj));                    \
                        }                                                                          \
                        __m256i ms = _mm256_madd_epi16(                                            \
                            _mm256_loadu_si256((const __m256i *)y->bsums), mins);                  \
                        __m128i both = hsum4_i32(s, ms, s, ms);                                    \
                        int isum = _mm_cvtsi128_si32(both);                                        \
                        int msum = _mm_extract_epi32(both, 1);                                     \
                        float d = y->d * dw, dmin = y->d * dmw;                                    \
                        acc[rr] += d * (float)isum - dmin * (float)msum;                           \
                    }                                                                              \
                }                                                                                  \
                for (int rr = 0; rr < nx; rr++)                                                    \
                    out[(size_t)(r0 + rr) * ostride + i] = acc[rr];                                \
            }                                                                                      \
        }                                                                                          \
    }

MMK(q4_k, bq4_k_t, unpack_q4_k)
MMK(q5_k, bq5_k_t, unpack_q5_k)

/* Q6_K: one weight row against up to 4 activation rows; the 256 6-bit values unpacked once
 * (8 runs of 32), per pair isum = sum_g sc_g * (q_g . y_g) - 32 * sum_g sc_g * bsums_g, exact,
 * and DOT_Q6K's float chain. */
AVX static void a_mm_q6_k(float *out, int ostride, const void *x, size_t xstride, int nrows,
                          const tensor_t *w, int i0, int i1)
{
    int nb = (int)w->ne[0] / QKK;
    const __m256i m4 = _mm256_set1_epi8(0x0f), m2 = _mm256_set1_epi8(3);
    for (int i = i0; i < i1; i++) {
        const bq6_k_t *b = (const bq6_k_t *)((const char *)w->data + (size_t)i * w->row_bytes);
        for (int r0 = 0; r0 < nrows; r0 += 16) {
            int nx = nrows - r0 < 16 ? nrows - r0 : 16;
            float acc[16] = {0.0f};
            for (int ib = 0; ib < nb; ib++) {
                /* q[4h + k]: elements 128h + 32k .. +31, i.e. groups 8h + 2k and 8h + 2k + 1 */
                __m256i q[8], scv[8];
                for (int h = 0; h < 2; h++) {
                    __m256i l0 = _mm256_loadu_si256((const __m256i *)(b[ib].ql + 64 * h));
                    __m256i l1 = _mm256_loadu_si256((const __m256i *)(b[ib].ql + 64 * h + 32));
                    __m256i hb = _mm256_loadu_si256((const __m256i *)(b[ib].qh + 32 * h));
                    for (int k = 0; k < 4; k++) {
                        __m256i lo = (k & 1) ? l1 : l0;
                        lo = k < 2 ? _mm256_and_si256(lo, m4)
                                   : _mm256_and_si256(_mm256_srli_epi16(lo, 4), m4);
                        __m256i hi = _mm256_and_si256(_mm256_srli_epi16(hb, 2 * k), m2);
                        q[4 * h + k] = _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4));
                        int g = 8 * h + 2 * k;
                        scv[4 * h + k] = _mm256_set_m128i(_mm_set1_epi16(b[ib].scales[g + 1]),
                                                          _mm_set1_epi16(b[ib].scales[g]));
                    }
                }
                __m256i sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b[ib].scales));
                float dw = _cvtsh_ss(b[ib].d);
                for (int rr = 0; rr < nx; rr++) {
                    const bq8_k_t *y =
                        (const bq8_k_t *)((const char *)x + (size_t)(r0 + rr) * xstride) + ib;
                    __m256i s = _mm256_setzero_si256();
                    for (int t = 0; t < 8; t++) {
                        __m256i p = _mm256_maddubs_epi16(
                            q[t], _mm256_loadu_si256((const __m256i *)(y->qs + 32 * t)));
                        s = _mm256_add_epi32(s, _mm256_madd_epi16(p, scv[t]));
                    }
                    __m256i bs =
                        _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)y->bsums), sc16);
                    __m128i both = hsum4_i32(s, bs, s, bs);
                    int isum = _mm_cvtsi128_si32(both) - 32 * _mm_extract_epi32(both, 1);
                    acc[rr] += (y->d * dw) * (float)isum;
                }
            }
            for (int rr = 0; rr < nx; rr++)
                out[(size_t)(r0 + rr) * ostride + i] = acc[rr];
        }
    }
}

static const kernel_type_t avx2_table[] = {
    {DTYPE_F32, DTYPE_F32, dq_f32, a_dot_f32, a_mm_f32},
    {DTYPE_F16, KERNEL_VEC_F16R, dq_f16, a_dot_f16, a_mm_f16},
    {DTYPE_BF16, KERNEL_VEC_BF16R, dq_bf16, a_dot_bf16, a_mm_bf16},
    {DTYPE_Q4_0, DTYPE_Q8_0, dq_q4_0, a_dot_q4_0, a_mm_q4_0},
    {DTYPE_Q4_1, DTYPE_Q8_1, dq_q4_1, a_dot_q4_1, NULL},
    {DTYPE_Q5_0, DTYPE_Q8_0, dq_q5_0, a_dot_q5_0, a_mm_q5_0},
    {DTYPE_Q5_1, DTYPE_Q8_1, dq_q5_1, a_dot_q5_1, NULL},
    {DTYPE_Q8_0, DTYPE_Q8_0, dq_q8_0, a_dot_q8_0, a_mm_q8_0},
    {DTYPE_IQ4_NL, DTYPE_Q8_0, dq_iq4_nl, a_dot_iq4_nl, a_mm_iq4_nl},
    {DTYPE_Q4_K, DTYPE_Q8_K, dq_q4_k, a_dot_q4_k, a_mm_q4_k},
    {DTYPE_Q5_K, DTYPE_Q8_K, dq_q5_k, a_dot_q5_k, a_mm_q5_k},
    {DTYPE_Q6_K, DTYPE_Q8_K, dq_q6_k, a_dot_q6_k, a_mm_q6_k},
};
_Static_assert(sizeof avx2_table == sizeof generic_table, "one row per type in both tables");

static int have_avx2(void)
{
    /* F16C from CPUID itself: clang before 15 does not know "f16c" in __builtin_cpu_supports */
    unsigned a, b, c, d;
    int f16c = __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
}

/* ---- AVX-512 (F, BW, VL, VNNI) ---------------------------------------------------------------
 * The k-quants with two sub-blocks per 512-bit register: half the instructions per weight of
 * the AVX2 tiles for the same exact integer sums and the same float chains, so the results
 * are the generic dots' bits here too; Q8_0/Q4_0 on VNNI; the float tiles with 32 registers
 * (below). Every other kernel is the AVX2 one. */
#define AVX512 __attribute__((target("avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")))

AVX512 static inline __m512i pair512(__m256i lo, __m256i hi)
{
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

/* The exact integer sum of one activation row against one unpacked k-quant super-block, as
 * 8 int32 lanes: q[k] holds the 64 unsigned values of y + 64k, sp[2] the scale of each 16-bit
 * lane after the packs (packed_idx). dpbusd sums four products per 32-bit lane; such a sum
 * fits 16 bits (|4 * 63 * -128| = 32256 at most, Q6_K), so packs keeps it exact and one
 * dpwssd scales two lanes at once: 6 multiply-pipe operations per super-block and row where
 * maddubs + madd took 8. Any order of an exact integer sum is the same integer, so the float
 * chains downstream see DOT_K's and DOT_Q6K's integers. */
AVX512 static inline __m256i kdot512(const __m512i q[4], const __m512i sp[2], const int8_t *y)
{
    __m512i z = _mm512_setzero_si512(), d[4];
    for (int k = 0; k < 4; k++)
        d[k] = _mm512_dpbusd_epi32(z, q[k], _mm512_loadu_si512((const void *)(y + 64 * k)));
    __m512i s = _mm512_dpwssd_epi32(_mm512_madd_epi16(_mm512_packs_epi32(d[0], d[1]), sp[0]),
                                    _mm512_packs_epi32(d[2], d[3]), sp[1]);
    return _mm256_add_epi32(_mm512_castsi512_si256(s), _mm512_extracti64x4_epi64(s, 1));
}

/* index vector for permutexvar_epi16: the scale of each 16-bit lane of packs_epi32(d0, d1),
 * where d0's 128-bit lane m belongs to scale base + m / per and d1's to base + hop + m / per
 * (packs takes four lanes from d0, then four from d1, per 128-bit lane) */
AVX512 static inline __m512i packed_idx(int base, int per, int hop)
{
    uint16_t v[32];
    for (int l = 0; l < 32; l++)
        v[l] = (uint16_t)(base + (l / 8) / per + (l % 8 >= 4 ? hop : 0));
    return _mm512_loadu_si512(v);
}

/* the scales of a Q4_K / Q5_K super-block (kscales16) in kdot512's order: q[k] holds
 * sub-blocks 2k and 2k + 1, 128-bit lanes 0-1 and 2-3 */
AVX512 static inline void kscales512(__m128i sm, const __m512i pidx[2], __m512i sp[2])
{
    __m512i sm16 = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(sm));
    sp[0] = _mm512_permutexvar_epi16(pidx[0], sm16);
    sp[1] = _mm512_permutexvar_epi16(pidx[1], sm16);
}

/* The many-row k-quant products run blocks of weight rows of about KBLOCK_BYTES (they stay in
 * L2) against every KXR activation rows (KXR x 292 bytes per super-block: in L1 for 2048
 * columns), one weight row at a time. A prompt's activations (512 rows: megabytes) are read
 * once per block instead of once per weight row, and 16 rows no longer bring 16 x 292 bytes
 * per super-block from L2 for each weight row (1 thread, 8192 x 2048, 16 rows: Q4_K about 5%
 * faster than 16-row groups without blocks; llama1b-q4km pp512 ttft about 7% shorter; 4-row
 * groups, 256 KiB blocks, and 2 weight rows x 16 activation rows per tile measured worse).
 * Every output is still one weight row's chain over its activation row, so no bit changes. */
#define KXR 8
#define KBLOCK_BYTES (64 * 1024)
_Static_assert(KXR % 4 == 0 && KXR <= 16, "whole 4-lane float groups");

static inline int kblock_rows(const tensor_t *w)
{
    int n = (int)(KBLOCK_BYTES / w->row_bytes);
    return n < 1 ? 1 : n;
}

/* While the first KXR group runs through a block of weight rows (from DRAM), the next block's
 * bytes are asked for into L2 (prefetch_l2), a super-block's worth per super-block done: the
 * next block's stream spread over this block's work. The hardware prefetcher alone left the
 * many-row products ~12% slower with weights from DRAM than from L3. Their pf: the next block's
 * row in this row's place (prefetches never fault), or NULL past the first group. */

/* The activation rows r0 .. r0 + nx - 1 of a KXR group, the last repeated to fill the group's
 * final four (their sums are computed and never stored): every loop over a group's rows has a
 * constant count, so its sums stay in registers (with nx-long loops they went through the stack,
 * 1 thread, 512 x 2048, 16 rows: Q4_K 65 -> 77 GMAC/s, Q6_K 65 -> 77, 4 rows: Q4_K 51 -> 66) */
static inline void kxr_rows(const bq8_k_t *yr[KXR], const void *x, size_t xstride, int r0, int nx)
{
    for (int rr = 0; rr < KXR; rr++)
        yr[rr] =
            (const bq8_k_t *)((const char *)x + (size_t)(r0 + (rr < nx ? rr : nx - 1)) * xstride);
}

/* the scales d of super-block ib of four activation rows */
AVX512 static inline __m128 kxr_d4(const bq8_k_t *const yr[4], int ib)
{
    return _mm_setr_ps(yr[0][ib].d, yr[1][ib].d, yr[2][ib].d, yr[3][ib].d);
}

/* the first nx of a group's KXR chains to out[(r0 + rr) * ostride + i] */
AVX512 static inline void kxr_store(float *out, int ostride, int r0, int nx, int i,
                                    const __m128 acc[KXR / 4])
{
    float a[KXR];
    for (int g = 0; g < KXR / 4; g++)
        _mm_storeu_ps(a + 4 * g, acc[g]);
    for (int rr = 0; rr < nx; rr++)
        out[(size_t)(r0 + rr) * ostride + i] = a[rr];
}

/* q[k] = sub-blocks 2k and 2k+1 (64 values, the order of y->qs + 64k) */
AVX512 static inline void unpack512_q4_k(const bq4_k_t *b, __m512i q[4])
{
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    for (int k = 0; k < 4; k++) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * k));
        q[k] = _mm512_and_si512(pair512(v, _mm256_srli_epi16(v, 4)), m4);
    }
}

AVX512 static inline void unpack512_q5_k(const bq5_k_t *b, __m512i q[4])
{
    const __m512i m4 = _mm512_set1_epi8(0x0f), one = _mm512_set1_epi8(1);
    __m256i h = _mm256_loadu_si256((const __m256i *)b->qh);
    for (int k = 0; k < 4; k++) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * k));
        __m512i lo = _mm512_and_si512(pair512(v, _mm256_srli_epi16(v, 4)), m4);
        __m512i hb = _mm512_and_si512(
            pair512(_mm256_srli_epi16(h, 2 * k), _mm256_srli_epi16(h, 2 * k + 1)), one);
        q[k] = _mm512_or_si512(lo, _mm512_slli_epi16(hb, 4));
    }
}

/* ---- one activation row (decode) for Q4_K / Q5_K -------------------------------------------
 * A step takes four items, item g = weight super-block w[g] against activation super-block
 * y[g]: four consecutive super-blocks of one weight row, so the row is read as one sequential
 * stream (two rows at once, 1 KiB apart, ran at half the pace from DRAM). Items 0, 1 and 2, 3
 * share their packs, multiplies and one reduction. Per item the integer sums are exact (the
 * same integers as DOT_K's) and the float term d * (float)isum - dmin * (float)msum is
 * computed in one lane with DOT_K's operations; the caller adds the terms to the row's chain
 * in super-block order. */

/* pshufb controls giving the 16-bit scale of each lane of packs_epi32(dpbusd(item a, k),
 * dpbusd(item b, k)) from a lane holding sc0..sc7 of item a, then of item b: 128-bit lane m
 * of dpbusd(q[k]) belongs to sub-block 2k + m / 2 */
AVX512 static inline __m512i kmv_sctl(int k)
{
    int8_t v[64];
    for (int l = 0; l < 32; l++) {
        int m = l / 8;
        v[2 * l] = (int8_t)((l % 8 >= 4 ? 8 : 0) + 2 * k + m / 2);
        v[2 * l + 1] = -1;
    }
    return _mm512_loadu_si512(v);
}

/* the 8 scales and 8 mins of the four super-blocks whose 16-byte headers (d, dmin, scales[12])
 * are the 128-bit lanes of h, as bytes sc0..sc7, m0..m7 of the same lane (kscale's values) */
AVX512 static inline __m512i kmv_scales(__m512i h)
{
    const __m512i ca = _mm512_broadcast_i32x4(
                      _mm_setr_epi8(4, 5, 6, 7, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15)),
                  cb = _mm512_broadcast_i32x4(
                      _mm_setr_epi8(-1, -1, -1, -1, 4, 5, 6, 7, -1, -1, -1, -1, 8, 9, 10, 11)),
                  cs = _mm512_broadcast_i32x4(_mm_setr_epi32(0, 0, 0, 4)),
                  cm = _mm512_broadcast_i32x4(
                      _mm_setr_epi32(0x3f3f3f3f, 0x0f0f0f0f, 0x3f3f3f3f, 0x0f0f0f0f));
    /* low parts: s0..s3 & 63, s8..s11 & 15, s4..s7 & 63, s8..s11 >> 4 */
    __m512i lo = _mm512_and_si512(_mm512_srlv_epi32(_mm512_shuffle_epi8(h, ca), cs), cm);
    /* high parts of sc4..sc7 and m4..m7: the top 2 bits of s0..s3 and s4..s7, at bit 4 */
    __m512i hi =
        _mm512_and_si512(_mm512_srli_epi32(_mm512_shuffle_epi8(h, cb), 2), _mm512_set1_epi8(0x30));
    return _mm512_or_si512(lo, hi);
}

/* q[k] = the 64 values of sub-blocks 2k and 2k+1 (the order of y->qs + 64k) */
AVX512 static inline void kmv_unpack_q4_k(const bq4_k_t *b, __m512i q[4])
{
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    for (int k = 0; k < 4; k++) {
        __m512i v = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(b->qs + 32 * k)));
        q[k] = _mm512_and_si512(_mm512_mask_srli_epi16(v, 0xffff0000u, v, 4), m4);
    }
}

AVX512 static inline void kmv_unpack_q5_k(const bq5_k_t *b, __m512i q[4])
{
    const __m512i m4 = _mm512_set1_epi8(0x0f), b4 = _mm512_set1_epi8(0x10);
    __m512i h = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)b->qh));
    /* bit 2k of qh (sub-block 2k) in the low half, bit 2k + 1 in the high half, at bit 0 */
    h = _mm512_mask_srli_epi16(h, 0xffff0000u, h, 1);
    for (int k = 0; k < 4; k++) {
        __m512i v = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(b->qs + 32 * k)));
        __m512i hk = k < 2 ? _mm512_slli_epi16(h, 4 - 2 * k) : _mm512_srli_epi16(h, 2 * k - 4);
        q[k] = _mm512_or_si512(_mm512_and_si512(_mm512_mask_srli_epi16(v, 0xffff0000u, v, 4), m4),
                               _mm512_and_si512(hk, b4));
    }
}

/* the four items' float terms t_g = d * (float)isum - dmin * (float)msum, lanes 0..3 */
#define KMV4(T, BT, UNPACK)                                                                        \
    AVX512 static inline __m128 kmv4_##T(const BT *const w[4], const bq8_k_t *const y[4],          \
                                         const __m512i sctl[4])                                    \
    {                                                                                              \
        __m512i h = _mm512_castsi128_si512(_mm_loadu_si128((const __m128i *)w[0]));                \
        h = _mm512_inserti32x4(h, _mm_loadu_si128((const __m128i *)w[1]), 1);                      \
        h = _mm512_inserti32x4(h, _mm_loadu_si128((const __m128i *)w[2]), 2);                      \
        h = _mm512_inserti32x4(h, _mm_loadu_si128((const __m128i *)w[3]), 3);                      \
        __m512i sm = kmv_scales(h);                                                                \
        /* lane 0, 2: the scales of items 0, 1 and of items 2, 3; then each pair's in every lane   \
         */                                                                                        \
        __m512i sc2 = _mm512_unpacklo_epi64(sm, _mm512_shuffle_i64x2(sm, sm, 0xb1));               \
        __m512i scp[2] = {_mm512_shuffle_i64x2(sc2, sc2, 0x00),                                    \
                          _mm512_shuffle_i64x2(sc2, sc2, 0xaa)};                                   \
        /* isums: per pair of items, one packs per k, so both items' lanes share the               \
         * multiplies and the reduction; r[p] lane m = [a, a, b, b] partial sums */                \
        __m512i r[2];                                                                              \
        for (int p = 0; p < 2; p++) {                                                              \
            const bq8_k_t *ya = y[2 * p], *yb = y[2 * p + 1];                                      \
            __m512i qa[4], qb[4], z = _mm512_setzero_si512(), acc = z;                             \
            UNPACK(w[2 * p], qa);                                                                  \
            UNPACK(w[2 * p + 1], qb);                                                              \
            for (int k = 0; k < 4; k++) {                                                          \
                __m512i pk = _mm512_packs_epi32(                                                   \
                    _mm512_dpbusd_epi32(z, qa[k],                                                  \
                                        _mm512_loadu_si512((const void *)(ya->qs + 64 * k))),      \
                    _mm512_dpbusd_epi32(z, qb[k],                                                  \
                                        _mm512_loadu_si512((const void *)(yb->qs + 64 * k))));     \
                __m512i sk = _mm512_shuffle_epi8(scp[p], sctl[k]);                                 \
                acc = k ? _mm512_dpwssd_epi32(acc, pk, sk) : _mm512_madd_epi16(pk, sk);            \
            }                                                                                      \
            r[p] = acc;                                                                            \
        }                                                                                          \
        /* msums: the mins (each twice) against the bsums; lane g = 4 partial sums of item g */    \
        /* the bsums of y[0], y[1] and of y[2], y[3] */                                            \
        __m512i ba = _mm512_inserti64x4(                                                           \
                    _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)y[0]->bsums)),      \
                    _mm256_loadu_si256((const __m256i *)y[1]->bsums), 1),                          \
                bb = _mm512_inserti64x4(                                                           \
                    _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)y[2]->bsums)),      \
                    _mm256_loadu_si256((const __m256i *)y[3]->bsums), 1);                          \
        __m512i m1 = _mm512_shuffle_epi8(                                                          \
                    sm, _mm512_broadcast_i32x4(_mm_setr_epi8(8, -1, 8, -1, 9, -1, 9, -1, 10, -1,   \
                                                             10, -1, 11, -1, 11, -1))),            \
                m2 = _mm512_shuffle_epi8(                                                          \
                    sm, _mm512_broadcast_i32x4(_mm_setr_epi8(12, -1, 12, -1, 13, -1, 13, -1, 14,   \
                                                             -1, 14, -1, 15, -1, 15, -1)));        \
        __m512i ms =                                                                               \
            _mm512_dpwssd_epi32(_mm512_madd_epi16(m1, _mm512_shuffle_i64x2(ba, bb, 0x88)), m2,     \
                                _mm512_shuffle_i64x2(ba, bb, 0xdd));                               \
        /* isums: fold the four 128-bit lanes; lane 0, 1 = pair 0's [a, a, b, b], 2, 3 pair 1's */ \
        __m512i x = _mm512_add_epi32(_mm512_shuffle_i64x2(r[0], r[1], 0x44),                       \
                                     _mm512_shuffle_i64x2(r[0], r[1], 0xee));                      \
        x = _mm512_add_epi32(x, _mm512_shuffle_i64x2(x, x, 0xb1));                                 \
        x = _mm512_add_epi32(x, _mm512_shuffle_epi32(x, (_MM_PERM_ENUM)0xb1));                     \
        ms = _mm512_add_epi32(ms, _mm512_shuffle_epi32(ms, (_MM_PERM_ENUM)0x4e));                  \
        ms = _mm512_add_epi32(ms, _mm512_shuffle_epi32(ms, (_MM_PERM_ENUM)0xb1));                  \
        /* lane g: [isum, msum] at dwords 0, 1 (g even) or 2, 3 (g odd) */                         \
        __m512i s = _mm512_mask_blend_epi32(0x8282, x, ms);                                        \
        /* [isum, msum] and [d, dmin] of items 0..3 in turn; [d, dmin] times each y.d */           \
        __m256 sf = _mm256_cvtepi32_ps(_mm512_castsi512_si256(_mm512_permutexvar_epi32(            \
            _mm512_setr_epi32(0, 1, 6, 7, 8, 9, 14, 15, 0, 0, 0, 0, 0, 0, 0, 0), s)));             \
        __m256 dh = _mm256_cvtph_ps(_mm512_castsi512_si128(_mm512_permutexvar_epi32(               \
            _mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), h)));              \
        __m128 y4 = _mm_setr_ps(y[0]->d, y[1]->d, y[2]->d, y[3]->d);                               \
        __m256 yd = _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_unpacklo_ps(y4, y4)),          \
                                         _mm_unpackhi_ps(y4, y4), 1);                              \
        __m256 t = _mm256_mul_ps(_mm256_mul_ps(yd, dh), sf);                                       \
        t = _mm256_hsub_ps(t, t); /* d * isum - dmin * msum: [t0, t1, ., . | t2, t3, ., .] */      \
        return _mm_castpd_ps(_mm_unpacklo_pd(_mm_castps_pd(_mm256_castps256_ps128(t)),             \
                                             _mm_castps_pd(_mm256_extractf128_ps(t, 1))));         \
    }

/* The one-row product of a k-quant from its kmv4_T: per weight row, steps of four
 * consecutive super-blocks (past the row's end the last one again, its term unused), the terms
 * added to the row's chain in super-block order; IDX(k) gives the kmv4's four index vectors. */
#define KMV_ROWS(T, BT, IDX)                                                                       \
    AVX512 static void x_mv_##T(float *out, const bq8_k_t *y, const tensor_t *w, int i0, int i1)   \
    {                                                                                              \
        int nb = (int)w->ne[0] / QKK;                                                              \
        __m512i idx[4];                                                                            \
        for (int k = 0; k < 4; k++)                                                                \
            idx[k] = IDX(k);                                                                       \
        for (int i = i0; i < i1; i++) {                                                            \
            const BT *b = (const BT *)((const char *)w->data + (size_t)i * w->row_bytes);          \
            float acc = 0.0f;                                                                      \
            for (int ib = 0; ib < nb; ib += 4) {                                                   \
                const BT *wv[4];                                                                   \
                const bq8_k_t *yv[4];                                                              \
                for (int g = 0; g < 4; g++) {                                                      \
                    int j = ib + g < nb ? ib + g : nb - 1;                                         \
                    wv[g] = b + j;                                                                 \
                    yv[g] = y + j;                                                                 \
                }                                                                                  \
                float t[4];                                                                        \
                _mm_storeu_ps(t, kmv4_##T(wv, yv, idx));                                           \
                for (int g = 0; g < 4 && ib + g < nb; g++)                                         \
                    acc += t[g];                                                                   \
            }                                                                                      \
            out[i] = acc;                                                                          \
        }                                                                                          \
    }

KMV4(q4_k, bq4_k_t, kmv_unpack_q4_k)
KMV4(q5_k, bq5_k_t, kmv_unpack_q5_k)
KMV_ROWS(q4_k, bq4_k_t, kmv_sctl)
KMV_ROWS(q5_k, bq5_k_t, kmv_sctl)

/* One weight row against up to KXR activation rows per unpacking of a super-block (in blocks
 * of weight rows, above); one activation row by x_mv_T (KMV4, four super-blocks a step); the
 * integer sums by kdot512; groups of four activation rows run their four float chains as the
 * lanes of one vector (each lane the very operations of DOT_K's scalar chain; padding lanes
 * are zero and never stored). */
#define MMK512(T, BT, UNPACK)                                                                      \
    AVX512 static void x_mm_##T(float *out, int ostride, const void *x, size_t xstride, int nrows, \
                                const tensor_t *w, int i0, int i1)                                 \
    {                                                                                              \
        int nb = (int)w->ne[0] / QKK;                                                              \
        const __m512i pidx[2] = {packed_idx(0, 2, 2), packed_idx(4, 2, 2)};                        \
        if (nrows == 1) {                                                                          \
            x_mv_##T(out, (const bq8_k_t *)x, w, i0, i1);                                          \
            return;                                                                                \
        }                                                                                          \
        int blk = kblock_rows(w);                                                                  \
        for (int c0 = i0; c0 < i1; c0 += blk) {                                                    \
            int c1 = i1 - c0 < blk ? i1 : c0 + blk;                                                \
            for (int r0 = 0; r0 < nrows; r0 += KXR) {                                              \
                int nx = nrows - r0 < KXR ? nrows - r0 : KXR;                                      \
                const bq8_k_t *yr[KXR];                                                            \
                kxr_rows(yr, x, xstride, r0, nx);                                                  \
                for (int i = c0; i < c1; i++) {                                                    \
                    const BT *b = (const BT *)((const char *)w->data + (size_t)i * w->row_bytes);  \
                    const char *pf = r0 ? NULL : (const char *)b + (size_t)blk * w->row_bytes;     \
                    __m128 acc[KXR / 4] = {_mm_setzero_ps(), _mm_setzero_ps()};                    \
                    for (int ib = 0; ib < nb; ib++) {                                              \
                        __m512i q[4], sp[2];                                                       \
                        if (pf) prefetch_l2(pf + (size_t)ib * sizeof(BT), sizeof(BT));             \
                        UNPACK(&b[ib], q);                                                         \
                        __m128i sm = kscales16(b[ib].scales);                                      \
                        kscales512(sm, pidx, sp);                                                  \
                        __m256i mins = kmins_dup(sm);                                              \
                        __m128 dw = _mm_set1_ps(_cvtsh_ss(b[ib].d)),                               \
                               dmw = _mm_set1_ps(_cvtsh_ss(b[ib].dmin));                           \
                        _Pragma("GCC unroll 2") for (int g = 0; g < KXR / 4; g++)                  \
                        {                                                                          \
                            if (4 * g >= nx) break;                                                \
                            __m256i si[4], mi[4];                                                  \
                            _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++)                    \
                            {                                                                      \
                                const bq8_k_t *y = yr[4 * g + k] + ib;                             \
                                si[k] = kdot512(q, sp, y->qs);                                     \
                                mi[k] = _mm256_madd_epi16(                                         \
                                    _mm256_loadu_si256((const __m256i *)y->bsums), mins);          \
                            }                                                                      \
                            __m128i is = hsum4_i32(si[0], si[1], si[2], si[3]);                    \
                            __m128i ms = hsum4_i32(mi[0], mi[1], mi[2], mi[3]);                    \
                            __m128 y4 = kxr_d4(yr + 4 * g, ib);                                    \
                            __m128 d = _mm_mul_ps(y4, dw), dmin = _mm_mul_ps(y4, dmw);             \
                            acc[g] = _mm_add_ps(                                                   \
                                acc[g], _mm_sub_ps(_mm_mul_ps(d, _mm_cvtepi32_ps(is)),             \
                                                   _mm_mul_ps(dmin, _mm_cvtepi32_ps(ms))));        \
                        }                                                                          \
                    }                                                                              \
                    kxr_store(out, ostride, r0, nx, i, acc);                                       \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }

MMK512(q4_k, bq4_k_t, unpack512_q4_k)
MMK512(q5_k, bq5_k_t, unpack512_q5_k)

/* the 256 values of a Q6_K super-block as q[t] = 64 values from element 64t (groups 4t ..
 * 4t + 3, one per 128-bit lane), sp = the 16 scales in kdot512's order, sc16 = the 16 scales
 * as 16-bit lanes (for the bsums) */
AVX512 static inline void unpack512_q6_k(const bq6_k_t *b, const __m512i pidx[2], __m512i q[4],
                                         __m512i sp[2], __m256i *sc16)
{
    const __m256i m4 = _mm256_set1_epi8(0x0f), m2 = _mm256_set1_epi8(3);
    for (int h = 0; h < 2; h++) {
        __m256i l0 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h));
        __m256i l1 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32));
        __m256i hb = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
        __m256i v[4];
        for (int k = 0; k < 4; k++) {
            __m256i lo = (k & 1) ? l1 : l0;
            lo = k < 2 ? _mm256_and_si256(lo, m4) : _mm256_and_si256(_mm256_srli_epi16(lo, 4), m4);
            __m256i hi = _mm256_and_si256(_mm256_srli_epi16(hb, 2 * k), m2);
            v[k] = _mm256_or_si256(lo, _mm256_slli_epi16(hi, 4));
        }
        q[2 * h] = pair512(v[0], v[1]);
        q[2 * h + 1] = pair512(v[2], v[3]);
    }
    *sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b->scales));
    for (int t = 0; t < 2; t++)
        sp[t] = _mm512_permutexvar_epi16(pidx[t], _mm512_castsi256_si512(*sc16));
}

/* One activation row of Q6_K: KMV4's scheme (four consecutive super-blocks of one weight row
 * per step, two items' dpbusd sums packed together, one reduction per four items); per item the
 * exact integer sum - 32 * (the scales against the bsums) is DOT_Q6K's isum and its float term (y.d
 * * d) * (float)isum, added to each row's chain in super-block order. */

/* vpermw indices: the scale of each 16-bit lane of packs_epi32(dpbusd(item a, t),
 * dpbusd(item b, t)) from [a's 16 scales, b's 16 scales] as words; 128-bit lane m of
 * dpbusd(q[t]) is group 4t + m */
AVX512 static inline __m512i kmv6_idx(int t)
{
    uint16_t v[32];
    for (int l = 0; l < 32; l++)
        v[l] = (uint16_t)((l % 8 >= 4 ? 16 : 0) + 4 * t + l / 8);
    return _mm512_loadu_si512(v);
}

/* q[t] = the 64 values (0..63) from element 64t, the order of y->qs + 64t */
AVX512 static inline void kmv_unpack_q6_k(const bq6_k_t *b, __m512i q[4])
{
    const __m512i m4 = _mm512_set1_epi8(0x0f), m30 = _mm512_set1_epi8(0x30);
    /* the high bits of values 32k .. 32k + 31 of a half are qh's bits 2k, 2k + 1: to bit 4 */
    const __m512i up = _mm512_inserti64x4(_mm512_set1_epi16(4), _mm256_set1_epi16(2), 1),
                  dn = _mm512_inserti64x4(_mm512_setzero_si512(), _mm256_set1_epi16(2), 1);
    for (int h = 0; h < 2; h++) {
        /* ql as two 256-bit loads: 512-bit ones, nearly all across two lines in 210-byte
         * blocks, read a row from DRAM ~5% slower (one thread, 128256 x 2048, noisy) */
        __m512i l = _mm512_inserti64x4(
            _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(b->ql + 64 * h))),
            _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32)), 1);
        __m512i hb = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(b->qh + 32 * h)));
        q[2 * h] = _mm512_or_si512(_mm512_and_si512(l, m4),
                                   _mm512_and_si512(_mm512_sllv_epi16(hb, up), m30));
        q[2 * h + 1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), m4),
                                       _mm512_and_si512(_mm512_srlv_epi16(hb, dn), m30));
    }
}

/* the four items' float terms (y.d * d) * (float)isum, lanes 0..3 */
AVX512 static inline __m128 kmv4_q6_k(const bq6_k_t *const w[4], const bq8_k_t *const y[4],
                                      const __m512i idx[4])
{
    __m512i r[2], bs[2];
    for (int p = 0; p < 2; p++) {
        const bq8_k_t *ya = y[2 * p], *yb = y[2 * p + 1];
        const bq6_k_t *wa = w[2 * p], *wb = w[2 * p + 1];
        /* the blocks' bytes in address order (ql, qh, then the scales after them): the other
         * way round the row's stream from DRAM was slower */
        __m512i qa[4], qb[4], z = _mm512_setzero_si512(), acc = z;
        kmv_unpack_q6_k(wa, qa);
        kmv_unpack_q6_k(wb, qb);
        /* [a's scales, b's scales] as words */
        __m512i sc = _mm512_cvtepi8_epi16(_mm256_inserti128_si256(
            _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)wa->scales)),
            _mm_loadu_si128((const __m128i *)wb->scales), 1));
        /* low half: a's 8 partial sums of scale x bsum, high half: b's */
        bs[p] = _mm512_madd_epi16(
            sc, _mm512_inserti64x4(
                    _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)ya->bsums)),
                    _mm256_loadu_si256((const __m256i *)yb->bsums), 1));
        for (int t = 0; t < 4; t++) {
            __m512i pt = _mm512_packs_epi32(
                _mm512_dpbusd_epi32(z, qa[t], _mm512_loadu_si512((const void *)(ya->qs + 64 * t))),
                _mm512_dpbusd_epi32(z, qb[t], _mm512_loadu_si512((const void *)(yb->qs + 64 * t))));
            __m512i st = _mm512_permutexvar_epi16(idx[t], sc);
            acc = t ? _mm512_dpwssd_epi32(acc, pt, st) : _mm512_madd_epi16(pt, st);
        }
        r[p] = acc;
    }
    /* isums: lane 0, 1 = pair 0's [a, a, b, b], 2, 3 pair 1's, as in KMV4 */
    __m512i x = _mm512_add_epi32(_mm512_shuffle_i64x2(r[0], r[1], 0x44),
                                 _mm512_shuffle_i64x2(r[0], r[1], 0xee));
    x = _mm512_add_epi32(x, _mm512_shuffle_i64x2(x, x, 0xb1));
    x = _mm512_add_epi32(x, _mm512_shuffle_epi32(x, (_MM_PERM_ENUM)0xb1));
    /* bsum terms: lane g = item g's 4 partial sums, then their total in every dword */
    __m512i b = _mm512_add_epi32(_mm512_shuffle_i64x2(bs[0], bs[1], 0x88),
                                 _mm512_shuffle_i64x2(bs[0], bs[1], 0xdd));
    b = _mm512_add_epi32(b, _mm512_shuffle_epi32(b, (_MM_PERM_ENUM)0x4e));
    b = _mm512_add_epi32(b, _mm512_shuffle_epi32(b, (_MM_PERM_ENUM)0xb1));
    /* isum of item g at dword 0 (g even) or 2 (g odd) of lane g */
    __m512i is = _mm512_sub_epi32(x, _mm512_slli_epi32(b, 5));
    __m128i is4 = _mm512_castsi512_si128(_mm512_permutexvar_epi32(
        _mm512_setr_epi32(0, 6, 8, 14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), is));
    /* the four fp16 d: bytes 14, 15 of the 4 bytes before the block's end */
    __m128i d01 = _mm_unpacklo_epi32(_mm_loadu_si32((const uint8_t *)w[0] + 206),
                                     _mm_loadu_si32((const uint8_t *)w[1] + 206)),
            d23 = _mm_unpacklo_epi32(_mm_loadu_si32((const uint8_t *)w[2] + 206),
                                     _mm_loadu_si32((const uint8_t *)w[3] + 206));
    __m128i dh = _mm_srli_epi32(_mm_unpacklo_epi64(d01, d23), 16);
    __m128 d = _mm_cvtph_ps(_mm_packus_epi32(dh, dh));
    __m128 yd = _mm_setr_ps(y[0]->d, y[1]->d, y[2]->d, y[3]->d);
    return _mm_mul_ps(_mm_mul_ps(yd, d), _mm_cvtepi32_ps(is4));
}

KMV_ROWS(q6_k, bq6_k_t, kmv6_idx)

/* Many activation rows: MMK512's scheme, with DOT_Q6K's chain acc += (y.d * d) * (float)isum
 * in the lanes of one vector per four activation rows. */
AVX512 static void x_mm_q6_k(float *out, int ostride, const void *x, size_t xstride, int nrows,
                             const tensor_t *w, int i0, int i1)
{
    int nb = (int)w->ne[0] / QKK;
    const __m512i pidx[2] = {packed_idx(0, 1, 4), packed_idx(8, 1, 4)};
    if (nrows == 1) {
        x_mv_q6_k(out, x, w, i0, i1);
        return;
    }
    int blk = kblock_rows(w);
    for (int c0 = i0; c0 < i1; c0 += blk) {
        int c1 = i1 - c0 < blk ? i1 : c0 + blk;
        for (int r0 = 0; r0 < nrows; r0 += KXR) {
            int nx = nrows - r0 < KXR ? nrows - r0 : KXR;
            const bq8_k_t *yr[KXR];
            kxr_rows(yr, x, xstride, r0, nx);
            for (int i = c0; i < c1; i++) {
                const bq6_k_t *b =
                    (const bq6_k_t *)((const char *)w->data + (size_t)i * w->row_bytes);
                const char *pf = r0 ? NULL : (const char *)b + (size_t)blk * w->row_bytes;
                __m128 acc[KXR / 4] = {_mm_setzero_ps(), _mm_setzero_ps()};
                for (int ib = 0; ib < nb; ib++) {
                    __m512i q[4], sp[2];
                    __m256i sc16;
                    if (pf) prefetch_l2(pf + (size_t)ib * sizeof(bq6_k_t), sizeof(bq6_k_t));
                    unpack512_q6_k(&b[ib], pidx, q, sp, &sc16);
                    __m128 dw = _mm_set1_ps(_cvtsh_ss(b[ib].d));
                    _Pragma("GCC unroll 2") for (int g = 0; g < KXR / 4; g++)
                    {
                        if (4 * g >= nx) break;
                        __m256i si[4], bi[4];
                        _Pragma("GCC unroll 4") for (int k = 0; k < 4; k++)
                        {
                            const bq8_k_t *y = yr[4 * g + k] + ib;
                            si[k] = kdot512(q, sp, y->qs);
                            bi[k] = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)y->bsums),
                                                      sc16);
                        }
                        __m128i is = hsum4_i32(si[0], si[1], si[2], si[3]);
                        __m128i bs = hsum4_i32(bi[0], bi[1], bi[2], bi[3]);
                        __m128 d = _mm_mul_ps(kxr_d4(yr + 4 * g, ib), dw);
                        __m128 isum = _mm_cvtepi32_ps(_mm_sub_epi32(is, _mm_slli_epi32(bs, 5)));
                        acc[g] = _mm_add_ps(acc[g], _mm_mul_ps(d, isum));
                    }
                }
                kxr_store(out, ostride, r0, nx, i, acc);
            }
        }
    }
}

/* 32-blocks with signed values on VNNI: the values made unsigned by a bias (Q8_0: +128 by
 * flipping the sign bit, Q4_0: the raw nibbles, bias 8), so one dpbusd per block and pair
 * replaces sign/sign/maddubs/madd. The bias times the activation block's lane sums is the
 * dpbusd's start value (-BIAS * sum y, exact), so the integer it leaves is the same integer
 * as the AVX2 and generic sums. A 512-bit register holds two pairs' 8-lane chains: lanes 0-7
 * weight row a against activation row 2p, lanes 8-15 the same weight block (broadcast to
 * both halves) against row 2p + 1; per lane the steps are C_SYM's, acc + (d_w * d_x) *
 * (float)sum, so the cvt, the two muls and the add serve 64 products each. Tiles of 4 weight
 * rows x NP pairs (up to 4: 16 accumulators of 32 registers); the per-block work on a weight
 * row (unpack, scale) is shared by 8 activation rows and that on an activation pair (load,
 * start value, scales) by 4 weight rows. */

/* the blocks of two activation rows as one register: [y0's 32 | y1's 32] */
AVX512 static inline __m512i zpair_q8(const bq8_0_t *y0, const bq8_0_t *y1)
{
    return _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)y0->qs)),
                              _mm256_loadu_si256((const __m256i *)y1->qs), 1);
}

AVX512 static inline __m512i unpackz_q4_0(const bq4_0_t *b)
{
    /* [qs qs qs qs], the upper 8 bytes of each 16 shifted by 4: low nibbles, high nibbles, twice */
    __m512i v = _mm512_broadcast_i32x4(_mm_loadu_si128((const __m128i *)b->qs));
    return _mm512_and_si512(_mm512_srlv_epi64(v, _mm512_setr_epi64(0, 0, 4, 4, 0, 0, 4, 4)),
                            _mm512_set1_epi8(0x0f));
}

/* the half h (0: lanes 0-7) of a 16-lane chain */
AVX512 static inline __m256 zhalf(__m512 v, int h)
{
    return h ? _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))
             : _mm512_castps512_ps256(v);
}

/* What the tiles need of an activation pair p in block ib, prepared once per group of 8
 * activation rows and read by every weight tile of the range: the pair's blocks as one register,
 * the dpbusd start value -BIAS * (lane sums of y) and the two rows' scales as 8 + 8 lanes.
 * Preparing them per tile (a load-insert, a dpbusd and a permute per pair and block, shared by
 * 4 weight rows only) cost a sixth of the tile (1 thread, 8192 x 2048 Q8_0 at 16 rows: 51.7 ->
 * 61 GMAC/s once prepared per group). */
typedef struct {
    __m512i y, start;
    __m512 yd;
} zpair_t;

/* Per-thread scratch for the prepared pairs, grown on demand (up to ZD_MAXNB x 4 pairs, 768
 * KiB) and freed when the thread exits. NULL when it cannot be had (the caller falls back to
 * the dot). */
static pthread_key_t zscratch_key;
static pthread_once_t zscratch_once = PTHREAD_ONCE_INIT;
static int zscratch_ok;

typedef struct {
    size_t cap; /* bytes of p */
    void *p;    /* 64-byte aligned */
} zscratch_t;

static void zscratch_free(void *v)
{
    zscratch_t *z = v;
    free(z->p);
    free(z);
}

static void zscratch_init(void)
{
    zscratch_ok = pthread_key_create(&zscratch_key, zscratch_free) == 0;
}

static void *zscratch(size_t bytes)
{
    pthread_once(&zscratch_once, zscratch_init);
    if (!zscratch_ok) return NULL;
    zscratch_t *z = pthread_getspecific(zscratch_key);
    if (!z) {
        z = calloc(1, sizeof *z);
        if (!z) return NULL;
        if (pthread_setspecific(zscratch_key, z) != 0) {
            free(z);
            return NULL;
        }
    }
    if (z->cap < bytes) {
        void *n = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
        if (!n) return NULL;
        free(z->p);
        z->p = n;
        z->cap = bytes;
    }
    return z->p;
}

/* Tile: weight rows i .. i + 3 (wb) x activation rows r .. r + xr - 1 (NP pairs prepared in
 * zp[ib * 4 + p]; the last row repeated when xr is odd; only xr rows are stored); pf: the next
 * tile's 4 weight rows (contiguous), requested 4 blocks' bytes per block, so their stream is
 * spread over this tile's work instead of one burst (16 rows, 8192 x 2048 Q8_0: 46 -> 51
 * GMAC/s; 4 rows: 36 -> 46); every line of them (Q8_0's 136 bytes a block are 3 requests: 2
 * missed a line in 8, and 4 rows from DRAM on 2 threads went 67.5 -> 73 GMAC/s with the third). */
#define ZTILE32(T, BT, UNPACKZ, NP)                                                                \
    AVX512 static void z32_##T##_##NP(float *out, int ostride, const zpair_t *zp,                  \
                                      const BT *const *wb, int nb, int i, int r, int xr,           \
                                      const char *pf)                                              \
    {                                                                                              \
        __m512 acc[4][NP];                                                                         \
        for (int a = 0; a < 4; a++)                                                                \
            for (int p = 0; p < NP; p++)                                                           \
                acc[a][p] = _mm512_setzero_ps();                                                   \
        for (int ib = 0; ib < nb; ib++) {                                                          \
            prefetch_block(pf + 4 * sizeof(BT) * (size_t)ib, 4 * sizeof(BT));                      \
            __m512i u[4];                                                                          \
            __m512 wd[4];                                                                          \
            for (int a = 0; a < 4; a++) {                                                          \
                u[a] = UNPACKZ(&wb[a][ib]);                                                        \
                wd[a] = _mm512_cvtph_ps(_mm256_set1_epi16((short)wb[a][ib].d));                    \
            }                                                                                      \
            for (int p = 0; p < NP; p++) {                                                         \
                const zpair_t *z = &zp[(size_t)ib * 4 + (size_t)p];                                \
                for (int a = 0; a < 4; a++) {                                                      \
                    __m512 s = _mm512_cvtepi32_ps(_mm512_dpbusd_epi32(z->start, u[a], z->y));      \
                    acc[a][p] =                                                                    \
                        _mm512_add_ps(acc[a][p], _mm512_mul_ps(_mm512_mul_ps(wd[a], z->yd), s));   \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        for (int p = 0; p < NP; p++)                                                               \
            for (int h = 0; h < 2 && 2 * p + h < xr; h++)                                          \
                for (int a = 0; a < 4; a++)                                                        \
                    out[(size_t)(r + 2 * p + h) * ostride + i + a] =                               \
                        hsum_avx(zhalf(acc[a][p], h));                                             \
    }

/* Blocks per row the prepared pairs cover (768 KiB of scratch per thread at most); longer rows
 * (n > 32768) go by the dot. */
#define ZD_MAXNB 1024

/* Prepares the np pairs of rows yb[0 .. 2 np - 1] for every block: zp (nb * 4). */
AVX512 static void zprepare(zpair_t *zp, const bq8_0_t *const *yb, int np, int nb, int bias)
{
    const __m512i b = _mm512_set1_epi8((char)bias), zero = _mm512_setzero_si512();
    const __m512i halves = _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1);
    for (int ib = 0; ib < nb; ib++)
        for (int p = 0; p < np; p++) {
            zpair_t *z = &zp[(size_t)ib * 4 + (size_t)p];
            z->y = zpair_q8(&yb[2 * p][ib], &yb[2 * p + 1][ib]);
            z->start = _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, b, z->y));
            __m128 d2 = _mm_cvtph_ps(_mm_setr_epi16((short)yb[2 * p][ib].d,
                                                    (short)yb[2 * p + 1][ib].d, 0, 0, 0, 0, 0, 0));
            z->yd = _mm512_permutexvar_ps(halves, _mm512_castps128_ps512(d2));
        }
}

/* The driver: one weight row stream at one activation row (the dot), else per group of 8
 * activation rows (the last 1-7 by a tile of fewer pairs) the group's pairs prepared, then
 * tiles of 4 weight rows over the range (a range's rows are read once per group: a thread's
 * chunk stays in L2 for the next group); weight rows past the last 4 by the dot. */
#define ZMM32(T, BT, UNPACKZ, BIAS, DOT)                                                           \
    ZTILE32(T, BT, UNPACKZ, 1)                                                                     \
    ZTILE32(T, BT, UNPACKZ, 2)                                                                     \
    ZTILE32(T, BT, UNPACKZ, 3)                                                                     \
    ZTILE32(T, BT, UNPACKZ, 4)                                                                     \
    AVX512 static void x_mm_##T(float *out, int ostride, const void *x, size_t xstride, int nrows, \
                                const tensor_t *w, int i0, int i1)                                 \
    {                                                                                              \
        int n = (int)w->ne[0], nb = n / QK, i4 = i0 + (i1 - i0) / 4 * 4;                           \
        zpair_t *zp = NULL;                                                                        \
        if (nrows > 1 && nb <= ZD_MAXNB) zp = zscratch(sizeof(zpair_t) * 4 * (size_t)nb);          \
        if (!zp) { /* one row: a sequential stream, no tile needed */                              \
            i4 = i0;                                                                               \
        } else {                                                                                   \
            for (int r = 0; r < nrows; r += 8) {                                                   \
                int xr = nrows - r < 8 ? nrows - r : 8, np = (xr + 1) / 2;                         \
                const bq8_0_t *yb[8];                                                              \
                for (int b = 0; b < 8; b++)                                                        \
                    yb[b] = (const bq8_0_t *)((const char *)x +                                    \
                                              (size_t)(r + (b < xr ? b : xr - 1)) * xstride);      \
                zprepare(zp, yb, np, nb, BIAS);                                                    \
                for (int i = i0; i < i4; i += 4) {                                                 \
                    const BT *wb[4];                                                               \
                    for (int a = 0; a < 4; a++)                                                    \
                        wb[a] =                                                                    \
                            (const BT *)((const char *)w->data + (size_t)(i + a) * w->row_bytes);  \
                    const char *pf = (const char *)wb[0] + 4 * w->row_bytes; /* never faults */    \
                    switch (np) {                                                                  \
                    case 1:                                                                        \
                        z32_##T##_1(out, ostride, zp, wb, nb, i, r, xr, pf);                       \
                        break;                                                                     \
                    case 2:                                                                        \
                        z32_##T##_2(out, ostride, zp, wb, nb, i, r, xr, pf);                       \
                        break;                                                                     \
                    case 3:                                                                        \
                        z32_##T##_3(out, ostride, zp, wb, nb, i, r, xr, pf);                       \
                        break;                                                                     \
                    default:                                                                       \
                        z32_##T##_4(out, ostride, zp, wb, nb, i, r, xr, pf);                       \
                        break;                                                                     \
                    }                                                                              \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
        for (int i = i4; i < i1; i++) {                                                            \
            const char *wi = (const char *)w->data + (size_t)i * w->row_bytes;                     \
            for (int r = 0; r < nrows; r++)                                                        \
                out[(size_t)r * ostride + i] = DOT(n, wi, (const char *)x + (size_t)r * xstride);  \
        }                                                                                          \
    }

/* ---- Q8_0 on AVX-512 (g_dot_q8_0's order: a block's exact sum, one fma a block, 4 chains) ----
 * One activation row: DOT_Q8_0 with dpbusd on |q| and y with q's sign. Many: the activation
 * rows are the lanes. A group of 16 activation rows is prepared once per block, transposed:
 * register k holds bytes 4k..4k+3 of each row's block (lane c: row c), so a weight block's
 * bytes 4k..4k+3, + 128 and broadcast, times register k by one dpbusd add 4 products to every
 * row's sum, and 8 dpbusd give one weight row's 16 block sums, exact, with no horizontal step;
 * then one convert, one multiply (d_w x the rows' d) and one fma serve 16 outputs. The pair
 * tiles this replaced spent a convert, two multiplies and an add per dpbusd (8 lanes of one
 * block) and ran at ~87% of what the multiply pipes allow for that arithmetic. */
AVX512 static inline __m256i zlanes8(__m256i q, __m256i y)
{
    return _mm256_dpbusd_epi32(_mm256_setzero_si256(), _mm256_abs_epi8(q), _mm256_sign_epi8(y, q));
}

DOT_Q8_0(AVX512, x_dot_q8_0, zlanes8)

/* what the tiles read of a group's block: the transposed bytes, the start value (-128 x each
 * row's block sum) and the rows' scales */
typedef struct {
    __m512i y[8], start;
    __m512 yd;
} ztr_t;

/* the same for a group of up to 4 rows (their first 4 lanes), in place of ztr_t */
typedef struct {
    __m128i y[8], start;
    __m128 yd;
} ztr4_t;

/* 32 bytes of each of 16 rows (p[c]) as 8 registers, register k lane c = word k of row c: two
 * rows per register (rows j and j + 8), then an 8 x 8 transpose of 32-bit words in each half
 * (unpacks, then a two-source permute across the 128-bit lanes) */
AVX512 static inline void ztrans16(__m512i y[8], const int8_t *const p[16])
{
    const __m512i lo = _mm512_setr_epi64(0, 1, 8, 9, 4, 5, 12, 13);
    const __m512i hi = _mm512_setr_epi64(2, 3, 10, 11, 6, 7, 14, 15);
    __m512i z[8], t[8], u[8];
    for (int j = 0; j < 8; j++)
        z[j] = _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)p[j])),
                                  _mm256_loadu_si256((const __m256i *)p[j + 8]), 1);
    for (int j = 0; j < 8; j += 2) {
        t[j] = _mm512_unpacklo_epi32(z[j], z[j + 1]);
        t[j + 1] = _mm512_unpackhi_epi32(z[j], z[j + 1]);
    }
    for (int h = 0; h < 8; h += 4) { /* rows 0-3 (h 0) and 4-7 (h 4) of each half */
        u[h] = _mm512_unpacklo_epi64(t[h], t[h + 2]);         /* words 0, 4 */
        u[h + 1] = _mm512_unpackhi_epi64(t[h], t[h + 2]);     /* 1, 5 */
        u[h + 2] = _mm512_unpacklo_epi64(t[h + 1], t[h + 3]); /* 2, 6 */
        u[h + 3] = _mm512_unpackhi_epi64(t[h + 1], t[h + 3]); /* 3, 7 */
    }
    for (int k = 0; k < 4; k++) {
        y[k] = _mm512_permutex2var_epi64(u[k], lo, u[k + 4]);
        y[k + 4] = _mm512_permutex2var_epi64(u[k], hi, u[k + 4]);
    }
}

/* rows r .. r + xr - 1 of x as 16 lanes (the last row repeated past xr), every block */
AVX512 static void ztprepare(ztr_t *zt, const char *x, size_t xstride, int r, int xr, int nb)
{
    const bq8_0_t *row[16];
    int off[16];
    for (int c = 0; c < 16; c++) {
        off[c] = (int)((size_t)(r + (c < xr ? c : xr - 1)) * xstride);
        row[c] = (const bq8_0_t *)(x + off[c]);
    }
    const __m512i vi = _mm512_loadu_si512(off), b = _mm512_set1_epi8(-128);
    for (int ib = 0; ib < nb; ib++) {
        const int8_t *p[16];
        for (int c = 0; c < 16; c++)
            p[c] = row[c][ib].qs;
        __m512i s = _mm512_setzero_si512(), y[8];
        ztrans16(y, p);
        for (int k = 0; k < 8; k++)
            s = _mm512_dpbusd_epi32(s, b, y[k]);
        __m512i start = _mm512_sub_epi32(_mm512_setzero_si512(), s);
        __m512i d = _mm512_i32gather_epi32(vi, x + (size_t)ib * sizeof(bq8_0_t), 1);
        __m512 yd = _mm512_cvtph_ps(_mm512_cvtepi32_epi16(d)); /* d (the low 16 bits) */
        if (xr <= 4) {                                         /* the first 4 lanes only, for zq4 */
            ztr4_t *z4 = (ztr4_t *)zt + ib;
            for (int k = 0; k < 8; k++)
                z4->y[k] = _mm512_castsi512_si128(y[k]);
            z4->start = _mm512_castsi512_si128(start);
            z4->yd = _mm512_castps512_ps128(yd);
        } else {
            for (int k = 0; k < 8; k++)
                zt[ib].y[k] = y[k];
            zt[ib].start = start;
            zt[ib].yd = yd;
        }
    }
}

/* Weight rows i .. i + 3 (wb) x the prepared group (rows r .. r + xr - 1; only xr stored), in
 * VI/VF vectors of L lanes (16 or 8: the group's first L rows of each prepared register).
 * A weight block + 128 goes through a small buffer, 8 blocks at a time, so each 4 bytes of it
 * is a broadcast load. pf: the next tile's rows (contiguous), requested a block's worth per
 * block. */
#define ZT_Q8_0(NAME, VI, VF, PFX, L)                                                              \
    AVX512 static void NAME(float *out, int ostride, const ztr_t *zt, const bq8_0_t *const *wb,    \
                            int nb, int i, int r, int xr, const char *pf)                          \
    {                                                                                              \
        VF acc[4][4];                                                                              \
        for (int a = 0; a < 4; a++)                                                                \
            for (int c = 0; c < 4; c++)                                                            \
                acc[a][c] = PFX##_setzero_ps();                                                    \
        _Alignas(64) uint32_t wu[8][4][8];                                                         \
        const __m256i flip = _mm256_set1_epi8(-128);                                               \
        for (int ib0 = 0; ib0 < nb; ib0 += 8) {                                                    \
            int m = nb - ib0 < 8 ? nb - ib0 : 8;                                                   \
            for (int j = 0; j < m; j++)                                                            \
                for (int a = 0; a < 4; a++)                                                        \
                    _mm256_store_si256(                                                            \
                        (__m256i *)wu[j][a],                                                       \
                        _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)wb[a][ib0 + j].qs),   \
                                         flip));                                                   \
            for (int j4 = 0; j4 < m; j4 += 4)                                                      \
                _Pragma("GCC unroll 4") for (int c = 0; c < 4; c++) if (j4 + c < m)                \
                {                                                                                  \
                    int j = j4 + c, ib = ib0 + j;                                                  \
                    prefetch_block(pf + 4 * sizeof(bq8_0_t) * (size_t)ib, 4 * sizeof(bq8_0_t));    \
                    const ztr_t *z = &zt[ib];                                                      \
                    _Pragma("GCC unroll 4") for (int a = 0; a < 4; a++)                            \
                    {                                                                              \
                        VI s0 = *(const VI *)&z->start, s1 = PFX##_set1_epi32(0);                  \
                        _Pragma("GCC unroll 4") for (int k = 0; k < 8; k += 2)                     \
                        {                                                                          \
                            s0 = PFX##_dpbusd_epi32(s0, PFX##_set1_epi32((int)wu[j][a][k]),        \
                                                    *(const VI *)&z->y[k]);                        \
                            s1 = PFX##_dpbusd_epi32(s1, PFX##_set1_epi32((int)wu[j][a][k + 1]),    \
                                                    *(const VI *)&z->y[k + 1]);                    \
                        }                                                                          \
                        VF dd = PFX##_mul_ps(PFX##_set1_ps(_cvtsh_ss(wb[a][ib].d)),                \
                                             *(const VF *)&z->yd);                                 \
                        acc[a][c] = PFX##_fmadd_ps(dd, PFX##_cvtepi32_ps(PFX##_add_epi32(s0, s1)), \
                                                   acc[a][c]);                                     \
                    }                                                                              \
                }                                                                                  \
        }                                                                                          \
        _Alignas(64) float o[4][L];                                                                \
        for (int a = 0; a < 4; a++)                                                                \
            PFX##_store_ps(o[a], PFX##_add_ps(PFX##_add_ps(acc[a][0], acc[a][1]),                  \
                                              PFX##_add_ps(acc[a][2], acc[a][3])));                \
        for (int c = 0; c < xr; c++)                                                               \
            for (int a = 0; a < 4; a++)                                                            \
                out[(size_t)(r + c) * ostride + i + a] = o[a][c];                                  \
    }

ZT_Q8_0(zt16_q8_0, __m512i, __m512, _mm512, 16)
ZT_Q8_0(zt8_q8_0, __m256i, __m256, _mm256, 8)

/* blocks ib0 .. ib0 + 7 (those below nb) of 4 weight rows + 128, transposed for zq4 */
AVX512 static inline void zq4_pass(uint32_t (*wt)[32], const bq8_0_t *const *wb, int ib0, int nb)
{
    const __m256i flip = _mm256_set1_epi8(-128);
    int m = nb - ib0 < 8 ? nb - ib0 : 8;
    for (int j = 0; j < m; j++) {
        __m256i v[4];
        for (int a = 0; a < 4; a++)
            v[a] = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)wb[a][ib0 + j].qs), flip);
        __m256i t0 = _mm256_unpacklo_epi32(v[0], v[1]), t1 = _mm256_unpackhi_epi32(v[0], v[1]);
        __m256i t2 = _mm256_unpacklo_epi32(v[2], v[3]), t3 = _mm256_unpackhi_epi32(v[2], v[3]);
        _mm256_store_si256((__m256i *)&wt[j][0], _mm256_unpacklo_epi64(t0, t2));
        _mm256_store_si256((__m256i *)&wt[j][8], _mm256_unpackhi_epi64(t0, t2));
        _mm256_store_si256((__m256i *)&wt[j][16], _mm256_unpacklo_epi64(t1, t3));
        _mm256_store_si256((__m256i *)&wt[j][24], _mm256_unpackhi_epi64(t1, t3));
    }
}

/* word k of weight rows 0-3 (transposed, 4 words at w) each in 4 lanes: lane 4a + c */
AVX512 static inline __m512i wrep(const uint32_t *w, __m512i rep4)
{
    return _mm512_permutexvar_epi32(rep4,
                                    _mm512_castsi128_si512(_mm_load_si128((const __m128i *)w)));
}

/* Up to 4 activation rows (a decode step of 4 sequences): 16 lanes = the 4 weight rows x 4
 * activation rows (lane 4a + c), so 8 dpbusd give all 16 block sums where 4 lanes a weight row
 * took 32. The prepared rows are 4 lanes (ztr4_t: a quarter of ztr_t's bytes, which the tiles
 * read again for every 4 weight rows) broadcast to the four groups; the weight blocks + 128 are
 * transposed on the way through the buffer and each word spread to its group by a permute. */

AVX512 static void zq4_q8_0(float *out, int ostride, const ztr4_t *zt, const bq8_0_t *const *wb,
                            int nb, int i, int r, int xr, const char *pf)
{
    const __m512i rep4 = _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3);
    __m512 acc[4];
    for (int c = 0; c < 4; c++)
        acc[c] = _mm512_setzero_ps();
    /* per block: [k0 k4 | k1 k5 | k2 k6 | k3 k7] x rows 0-3; word k at 8 (k % 4) + 4 (k / 4);
     * two halves, the next 8 blocks written while these are read (a load right after the
     * store it reads stalled) */
    _Alignas(64) uint32_t wbuf[2][8][32];
    zq4_pass(wbuf[0], wb, 0, nb);
    for (int ib0 = 0; ib0 < nb; ib0 += 8) {
        int m = nb - ib0 < 8 ? nb - ib0 : 8;
        uint32_t(*wt)[32] = wbuf[(ib0 / 8) & 1];
        if (ib0 + 8 < nb) zq4_pass(wbuf[(ib0 / 8 + 1) & 1], wb, ib0 + 8, nb);
        for (int j4 = 0; j4 < m; j4 += 4)
            _Pragma("GCC unroll 4") for (int c = 0; c < 4; c++) if (j4 + c < m)
            {
                int j = j4 + c, ib = ib0 + j;
                prefetch_block(pf + 4 * sizeof(bq8_0_t) * (size_t)ib, 4 * sizeof(bq8_0_t));
                const ztr4_t *z = &zt[ib];
                __m512i s0 = _mm512_broadcast_i32x4(z->start), s1 = _mm512_setzero_si512();
                _Pragma("GCC unroll 8") for (int k = 0; k < 8; k += 2)
                {
                    const uint32_t *w0 = &wt[j][8 * (k % 4) + 4 * (k / 4)];
                    const uint32_t *w1 = &wt[j][8 * ((k + 1) % 4) + 4 * ((k + 1) / 4)];
                    s0 = _mm512_dpbusd_epi32(s0, wrep(w0, rep4), _mm512_broadcast_i32x4(z->y[k]));
                    s1 = _mm512_dpbusd_epi32(s1, wrep(w1, rep4),
                                             _mm512_broadcast_i32x4(z->y[k + 1]));
                }
                __m128 d4 = _mm_cvtph_ps(_mm_setr_epi16((short)wb[0][ib].d, (short)wb[1][ib].d,
                                                        (short)wb[2][ib].d, (short)wb[3][ib].d, 0,
                                                        0, 0, 0));
                __m512 dd = _mm512_mul_ps(_mm512_permutexvar_ps(rep4, _mm512_castps128_ps512(d4)),
                                          _mm512_broadcast_f32x4(z->yd));
                acc[c] = _mm512_fmadd_ps(dd, _mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)), acc[c]);
            }
    }
    _Alignas(64) float o[16];
    _mm512_store_ps(o, _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
    for (int c = 0; c < xr; c++)
        for (int a = 0; a < 4; a++)
            out[(size_t)(r + c) * ostride + i + a] = o[4 * a + c];
}

/* One activation row (or rows too long for the scratch): the dot, row after row; else per
 * group of 16 activation rows the group prepared, then tiles of 4 weight rows over the range
 * (a thread's range stays in L2 for the next group), in 8 lanes for a group of 5-8 rows and
 * zq4's 4 x 4 for up to 4; weight rows past the last 4 by the dot. */
AVX512 static void x_mm_q8_0(float *out, int ostride, const void *x, size_t xstride, int nrows,
                             const tensor_t *w, int i0, int i1)
{
    int n = (int)w->ne[0], nb = n / QK, i4 = i0 + (i1 - i0) / 4 * 4;
    ztr_t *zt = NULL;
    if (nrows > 1 && nb <= ZD_MAXNB) zt = zscratch(sizeof(ztr_t) * (size_t)nb);
    if (!zt) i4 = i0;
    for (int r = 0; zt && r < nrows; r += 16) {
        int xr = nrows - r < 16 ? nrows - r : 16;
        ztprepare(zt, x, xstride, r, xr, nb);
        for (int i = i0; i < i4; i += 4) {
            const bq8_0_t *wb[4];
            for (int a = 0; a < 4; a++)
                wb[a] = (const bq8_0_t *)((const char *)w->data + (size_t)(i + a) * w->row_bytes);
            const char *pf = (const char *)wb[0] + 4 * w->row_bytes; /* never faults */
            if (xr > 8)
                zt16_q8_0(out, ostride, zt, wb, nb, i, r, xr, pf);
            else if (xr > 4)
                zt8_q8_0(out, ostride, zt, wb, nb, i, r, xr, pf);
            else
                zq4_q8_0(out, ostride, (const ztr4_t *)zt, wb, nb, i, r, xr, pf);
        }
    }
    generic_mm(out, ostride, x, xstride, nrows, w, i4, i1); /* x_dot_q8_0 per pair */
}
ZMM32(q4_0, bq4_0_t, unpackz_q4_0, 8, a_dot_q4_0)

/* The F16 and BF16 tiles with 512-bit registers: a register holds two chains of a pair (16
 * consecutive elements are 8-blocks 2h and 2h + 1 of a 32-element round: chains 2h and
 * 2h + 1, lanes 0-7 and 8-15), so a pair needs two registers and 4 x 3 pairs fit in 32.
 * Per lane the FMAs are the AVX2 ones; the leftover 8-blocks and the sums run on the four
 * 256-bit halves exactly as dot_T_avx, so every output is its dot's bits. Only the weights
 * are converted (the activations come rounded, as f32): F16 had 256-bit 2 x 3 tiles while it
 * converted both with Zen 4's slow 512-bit vcvtph2ps. F32 (one chain) keeps AVX2's 4 x 3
 * tiles. */
AVX512 static inline __m512 bf16x16(const uint16_t *p)
{
    __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}

AVX512 static inline __m256 hi256(__m512 v)
{
    return _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
}

#define ZSTEP(LOAD16, WR, XR, h, jj)                                                               \
    do {                                                                                           \
        __m512 xv[XR];                                                                             \
        _Pragma("GCC unroll 4") for (int b = 0; b < XR; b++) xv[b] =                               \
            _mm512_loadu_ps(xp[b] + (jj));                                                         \
        _Pragma("GCC unroll 4") for (int a = 0; a < WR; a++)                                       \
        {                                                                                          \
            __m512 wv = LOAD16(wp[a] + (jj));                                                      \
            _Pragma("GCC unroll 4") for (int b = 0; b < XR; b++) acc[a][b][h] =                    \
                _mm512_fmadd_ps(wv, xv[b], acc[a][b][h]);                                          \
        }                                                                                          \
    } while (0)

#define ZTILE(ATTR, PFX, T, ET, LOAD, CONV, WR, XR)                                                \
    ATTR static void PFX##tile_##T##_##WR##_##XR(float *out, int ostride, const float *x,          \
                                                 size_t xs, const ET *w, size_t ws, int n, int i,  \
                                                 int r)                                            \
    {                                                                                              \
        __m512 acc[WR][XR][2];                                                                     \
        const ET *wp[WR];                                                                          \
        const float *xp[XR];                                                                       \
        _Pragma("GCC unroll 4") for (int a = 0; a < WR; a++)                                       \
        {                                                                                          \
            wp[a] = w + (size_t)(i + a) * ws;                                                      \
            _Pragma("GCC unroll 4") for (int b = 0; b < XR; b++) acc[a][b][0] = acc[a][b][1] =     \
                _mm512_setzero_ps();                                                               \
        }                                                                                          \
        _Pragma("GCC unroll 4") for (int b = 0; b < XR; b++) xp[b] = x + (size_t)(r + b) * xs;     \
        const char *pn = (const char *)(w + (size_t)(i + WR) * ws); /* never faults */             \
        int j = 0;                                                                                 \
        for (; j + 32 <= n; j += 32) {                                                             \
            TNEXT(WR, ET, j);                                                                      \
            ZSTEP(T##x16, WR, XR, 0, j);                                                           \
            ZSTEP(T##x16, WR, XR, 1, j + 16);                                                      \
        }                                                                                          \
        _Pragma("GCC unroll 4") for (int a = 0; a < WR; a++)                                       \
            _Pragma("GCC unroll 4") for (int b = 0; b < XR; b++)                                   \
        {                                                                                          \
            __m256 c0 = _mm512_castps512_ps256(acc[a][b][0]), c1 = hi256(acc[a][b][0]);            \
            __m256 c2 = _mm512_castps512_ps256(acc[a][b][1]), c3 = hi256(acc[a][b][1]);            \
            int k = j;                                                                             \
            if (k + 8 <= n)                                                                        \
                c0 = _mm256_fmadd_ps(LOAD(wp[a] + k), _mm256_loadu_ps(xp[b] + k), c0), k += 8;     \
            if (k + 8 <= n)                                                                        \
                c1 = _mm256_fmadd_ps(LOAD(wp[a] + k), _mm256_loadu_ps(xp[b] + k), c1), k += 8;     \
            if (k + 8 <= n)                                                                        \
                c2 = _mm256_fmadd_ps(LOAD(wp[a] + k), _mm256_loadu_ps(xp[b] + k), c2), k += 8;     \
            float s = hsum_chains_avx(c0, c1, c2, c3);                                             \
            for (; k < n; k++)                                                                     \
                s += CONV(wp[a][k]) * xp[b][k];                                                    \
            out[(size_t)(r + b) * ostride + i + a] = s;                                            \
        }                                                                                          \
    }

AVX512 static inline __m512 f16x16(const uint16_t *p)
{
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}

MMF(ZTILE, AVX512, x_, f16, uint16_t, f16x8, fp16_to_fp32, 4)
MMF(ZTILE, AVX512, x_, bf16, uint16_t, bf16x8, bf16_to_fp32, 4)

/* ---- Q4_K with 16 activation rows in the lanes ------------------------------------------------
 * DOT_K's arithmetic, each output still one chain over its super-blocks: isum = sum of sc_j x
 * S_j and msum = sum of m_j x bsum_j exact, then acc + ((y.d * d) * isum - (y.d * dmin) * msum).
 * As Q8_0's tiles: a group of 16 activation rows prepared once per super-block, transposed
 * (register k: bytes 4k..4k+3 of each row's 256), so 8 dpbusd of a weight row's 4-nibble
 * words, broadcast, give its 16 sub-block sums S_j with no step across lanes; a vpmulld and an
 * add scale them, and the mins take 4 dpwssd on the rows' bsum pairs. The tiles of 1 weight row
 * x 8 activation rows (MMK512) spent a horizontal step per row and super-block; they keep
 * groups of up to 8 rows. */
typedef struct {
    __m512i y[64];
    union {
        __m512i bsp[4]; /* Q4_K: lane c, int16 pair (bsum 2t, bsum 2t + 1) of row c's sub-blocks */
        __m512i bs6[8]; /* Q6_K: lane c, row c's bsums 2t and 2t + 1 (groups of 16) */
    };
    __m512 yd;
} zk_t;

#define ZK_MAXNB 64     /* super-blocks per row the scratch covers (n <= 16384); longer: MMK512 */
#define XBLOCK_GROUPS 3 /* groups of 16 in a kernels_matmul call (XBLOCK rows) */

/* q6: the bsum pairs Q6_K reads (bs6), else Q4_K's (bsp) */
AVX512 static void zkprepare(zk_t *zk, const char *x, size_t xstride, int r, int xr, int nb, int q6)
{
    const bq8_k_t *row[16];
    for (int c = 0; c < 16; c++)
        row[c] = (const bq8_k_t *)(x + (size_t)(r + (c < xr ? c : xr - 1)) * xstride);
    for (int ib = 0; ib < nb; ib++) {
        for (int h = 0; h < 8; h++) {
            const int8_t *p[16];
            for (int c = 0; c < 16; c++)
                p[c] = row[c][ib].qs + 32 * h;
            ztrans16(zk[ib].y + 8 * h, p);
        }
        /* bp[t] lane c: Q4_K's pairs of 32-value sums, or Q6_K's pairs of 16-value bsums */
        _Alignas(64) int32_t bp[8][16];
        _Alignas(64) float yd[16];
        int np = q6 ? 8 : 4;
        for (int c = 0; c < 16; c++) {
            const int16_t *bs = row[c][ib].bsums;
            for (int t = 0; t < np; t++) {
                int lo = q6 ? bs[2 * t] : bs[4 * t] + bs[4 * t + 1];
                int hi = q6 ? bs[2 * t + 1] : bs[4 * t + 2] + bs[4 * t + 3];
                bp[t][c] = (int32_t)(((uint32_t)(uint16_t)lo) | ((uint32_t)(uint16_t)hi << 16));
            }
            yd[c] = row[c][ib].d;
        }
        __m512i *dst = q6 ? zk[ib].bs6 : zk[ib].bsp;
        for (int t = 0; t < np; t++)
            dst[t] = _mm512_load_si512(bp[t]);
        zk[ib].yd = _mm512_load_ps(yd);
    }
}

/* the tiles' 4 weight rows x 16 lanes (rows r ..) to out, the first xr lanes */
AVX512 static inline void zk_store(float *out, int ostride, const __m512 acc[4], int i, int r,
                                   int xr)
{
    _Alignas(64) float o[4][16];
    for (int a = 0; a < 4; a++)
        _mm512_store_ps(o[a], acc[a]);
    for (int c = 0; c < xr; c++)
        for (int a = 0; a < 4; a++)
            out[(size_t)(r + c) * ostride + i + a] = o[a][c];
}

/* a super-block of 4 weight rows for zk4: the values as bytes (sub-block j at 32 j), the scales
 * as int32 and the mins as int16 pairs (m 2t, m 2t + 1) */
typedef struct {
    _Alignas(64) uint8_t q[4][256];
    int32_t sc[4][8];
    int32_t mp[4][4];
} zkw_t;

AVX512 static inline void zk_pass(zkw_t *p, const bq4_k_t *const *wb, int ib)
{
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    for (int a = 0; a < 4; a++) {
        const bq4_k_t *b = &wb[a][ib];
        for (int h = 0; h < 4; h++) {
            __m256i v = _mm256_loadu_si256((const __m256i *)(b->qs + 32 * h));
            _mm256_store_si256((__m256i *)&p->q[a][64 * h], _mm256_and_si256(v, m4));
            _mm256_store_si256((__m256i *)&p->q[a][64 * h + 32],
                               _mm256_and_si256(_mm256_srli_epi16(v, 4), m4));
        }
        __m128i sm = kscales16(b->scales);
        _mm256_storeu_si256((__m256i *)p->sc[a], _mm256_cvtepu8_epi32(sm));
        _mm_storeu_si128((__m128i *)p->mp[a], _mm_cvtepu8_epi16(_mm_unpackhi_epi64(sm, sm)));
    }
}

/* is[a] = the sum over the ng groups of wpg words (4 values each) of sc[a][g] x weight row a's
 * group sums against the prepared rows y (16 lanes), exact; sc: ng int32 a row */
AVX512 static inline void zk_sums(__m512i is[4], const __m512i *y, const uint8_t (*q)[256],
                                  const int32_t *sc, int ng, int wpg)
{
    for (int a = 0; a < 4; a++)
        is[a] = _mm512_setzero_si512();
    for (int g = 0; g < ng; g++) {
        __m512i sg[4];
        for (int a = 0; a < 4; a++)
            sg[a] = _mm512_setzero_si512();
        _Pragma("GCC unroll 8") for (int k = 0; k < wpg; k++)
        {
            __m512i yv = y[wpg * g + k];
            _Pragma("GCC unroll 4") for (int a = 0; a < 4; a++)
            {
                int32_t wv;
                memcpy(&wv, &q[a][4 * (wpg * g + k)], 4);
                sg[a] = _mm512_dpbusd_epi32(sg[a], _mm512_set1_epi32(wv), yv);
            }
        }
        for (int a = 0; a < 4; a++)
            is[a] = _mm512_add_epi32(is[a],
                                     _mm512_mullo_epi32(sg[a], _mm512_set1_epi32(sc[a * ng + g])));
    }
}

/* weight rows i .. i + 3 x the prepared group (rows r .. r + xr - 1; only xr stored); the
 * weight pass one super-block ahead of its reads; pf: the next tile's rows (contiguous) */
AVX512 static void zk4_q4_k(float *out, int ostride, const zk_t *zk, const bq4_k_t *const *wb,
                            int nb, int i, int r, int xr, const char *pf)
{
    __m512 acc[4];
    for (int a = 0; a < 4; a++)
        acc[a] = _mm512_setzero_ps();
    zkw_t wp[2];
    zk_pass(&wp[0], wb, 0);
    for (int ib = 0; ib < nb; ib++) {
        const zkw_t *p = &wp[ib & 1];
        if (ib + 1 < nb) zk_pass(&wp[(ib + 1) & 1], wb, ib + 1);
        prefetch_block(pf + 4 * sizeof(bq4_k_t) * (size_t)ib, 4 * sizeof(bq4_k_t));
        const zk_t *z = &zk[ib];
        __m512i is[4], ms[4];
        zk_sums(is, z->y, p->q, &p->sc[0][0], 8, 8);
        for (int a = 0; a < 4; a++)
            ms[a] = _mm512_setzero_si512();
        for (int t = 0; t < 4; t++)
            for (int a = 0; a < 4; a++)
                ms[a] = _mm512_dpwssd_epi32(ms[a], z->bsp[t], _mm512_set1_epi32(p->mp[a][t]));
        for (int a = 0; a < 4; a++) {
            __m512 d = _mm512_mul_ps(z->yd, _mm512_set1_ps(_cvtsh_ss(wb[a][ib].d)));
            __m512 dmin = _mm512_mul_ps(z->yd, _mm512_set1_ps(_cvtsh_ss(wb[a][ib].dmin)));
            acc[a] = _mm512_add_ps(acc[a],
                                   _mm512_sub_ps(_mm512_mul_ps(d, _mm512_cvtepi32_ps(is[a])),
                                                 _mm512_mul_ps(dmin, _mm512_cvtepi32_ps(ms[a]))));
        }
    }
    zk_store(out, ostride, acc, i, r, xr);
}

/* Groups of more than 8 activation rows by the 16-lane tile (TILE) over blocks of weight rows
 * (every group of the call prepared first: a call has at most XBLOCK rows), the rest (groups of
 * up to 8, weight rows past the last 4, rows too long) by MMK512's OLD: the same bits either
 * way. */
#define ZKMM(NAME, BT, Q6, TILE, OLD)                                                              \
    AVX512 static void NAME(float *out, int ostride, const void *x, size_t xstride, int nrows,     \
                            const tensor_t *w, int i0, int i1)                                     \
    {                                                                                              \
        int nb = (int)w->ne[0] / QKK, ng = 0, gr[XBLOCK_GROUPS], gx[XBLOCK_GROUPS];                \
        for (int r = 0; r < nrows && ng < XBLOCK_GROUPS; r += 16) {                                \
            int xr = nrows - r < 16 ? nrows - r : 16;                                              \
            if (xr > 8) gr[ng] = r, gx[ng++] = xr;                                                 \
        }                                                                                          \
        zk_t *zk = NULL;                                                                           \
        if (ng && nb <= ZK_MAXNB && nrows <= 16 * XBLOCK_GROUPS)                                   \
            zk = zscratch(sizeof(zk_t) * (size_t)nb * (size_t)ng);                                 \
        if (!zk) {                                                                                 \
            OLD(out, ostride, x, xstride, nrows, w, i0, i1);                                       \
            return;                                                                                \
        }                                                                                          \
        const char *xc = x;                                                                        \
        for (int g = 0; g < ng; g++)                                                               \
            zkprepare(zk + (size_t)g * nb, xc, xstride, gr[g], gx[g], nb, Q6);                     \
        int i4 = i0 + (i1 - i0) / 4 * 4, blk = (kblock_rows(w) + 3) / 4 * 4;                       \
        for (int c0 = i0; c0 < i4; c0 += blk) {                                                    \
            int c1 = i4 - c0 < blk ? i4 : c0 + blk;                                                \
            for (int g = 0; g < ng; g++)                                                           \
                for (int i = c0; i < c1; i += 4) {                                                 \
                    const BT *wb[4];                                                               \
                    for (int a = 0; a < 4; a++)                                                    \
                        wb[a] =                                                                    \
                            (const BT *)((const char *)w->data + (size_t)(i + a) * w->row_bytes);  \
                    TILE(out, ostride, zk + (size_t)g * nb, wb, nb, i, gr[g], gx[g],               \
                         (const char *)wb[0] + 4 * w->row_bytes /* never faults */);               \
                }                                                                                  \
        }                                                                                          \
        /* the rows the tiles left: groups of up to 8 over every weight row, rows past i4 */       \
        for (int r = 0, g = 0; r < nrows; r += 16) {                                               \
            int xr = nrows - r < 16 ? nrows - r : 16;                                              \
            float *o = out + (size_t)r * ostride;                                                  \
            const char *xr0 = xc + (size_t)r * xstride;                                            \
            if (g < ng && gr[g] == r) {                                                            \
                g++;                                                                               \
                if (i4 < i1) OLD(o, ostride, xr0, xstride, xr, w, i4, i1);                         \
            } else {                                                                               \
                OLD(o, ostride, xr0, xstride, xr, w, i0, i1);                                      \
            }                                                                                      \
        }                                                                                          \
    }

ZKMM(x_mmt_q4_k, bq4_k_t, 0, zk4_q4_k, x_mm_q4_k)

/* Q6_K as Q4_K above in DOT_Q6K's arithmetic: per group g of 16 values 4 dpbusd give the rows'
 * sums S_g, isum = sum of sc_g x S_g - 32 x (sum of sc_g x bsum_g) (the second by 8 dpwssd on
 * the rows' bsum pairs), then acc + (y.d * d) * isum */
typedef struct {
    _Alignas(64) uint8_t q[4][256];
    int32_t sc[4][16];
    int32_t sp[4][8]; /* int16 pairs (sc 2t, sc 2t + 1) */
} zkw6_t;

AVX512 static inline void zk_pass6(zkw6_t *p, const bq6_k_t *const *wb, int ib)
{
    const __m256i m4 = _mm256_set1_epi8(0x0f), m30 = _mm256_set1_epi8(0x30);
    for (int a = 0; a < 4; a++) {
        const bq6_k_t *b = &wb[a][ib];
        for (int h = 0; h < 2; h++) {
            __m256i l0 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h));
            __m256i l1 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32));
            __m256i qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
            uint8_t *q = &p->q[a][128 * h];
            _mm256_store_si256((__m256i *)q,
                               _mm256_or_si256(_mm256_and_si256(l0, m4),
                                               _mm256_and_si256(_mm256_slli_epi16(qh, 4), m30)));
            _mm256_store_si256((__m256i *)(q + 32),
                               _mm256_or_si256(_mm256_and_si256(l1, m4),
                                               _mm256_and_si256(_mm256_slli_epi16(qh, 2), m30)));
            _mm256_store_si256((__m256i *)(q + 64),
                               _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4),
                                               _mm256_and_si256(qh, m30)));
            _mm256_store_si256((__m256i *)(q + 96),
                               _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                               _mm256_and_si256(_mm256_srli_epi16(qh, 2), m30)));
        }
        __m128i sc = _mm_loadu_si128((const __m128i *)b->scales);
        _mm512_storeu_si512(p->sc[a], _mm512_cvtepi8_epi32(sc));
        _mm256_storeu_si256((__m256i *)p->sp[a], _mm256_cvtepi8_epi16(sc));
    }
}

AVX512 static void zk4_q6_k(float *out, int ostride, const zk_t *zk, const bq6_k_t *const *wb,
                            int nb, int i, int r, int xr, const char *pf)
{
    __m512 acc[4];
    for (int a = 0; a < 4; a++)
        acc[a] = _mm512_setzero_ps();
    zkw6_t wp[2];
    zk_pass6(&wp[0], wb, 0);
    for (int ib = 0; ib < nb; ib++) {
        const zkw6_t *p = &wp[ib & 1];
        if (ib + 1 < nb) zk_pass6(&wp[(ib + 1) & 1], wb, ib + 1);
        prefetch_block(pf + 4 * sizeof(bq6_k_t) * (size_t)ib, 4 * sizeof(bq6_k_t));
        const zk_t *z = &zk[ib];
        __m512i is[4], bt[4];
        zk_sums(is, z->y, p->q, &p->sc[0][0], 16, 4);
        for (int a = 0; a < 4; a++)
            bt[a] = _mm512_setzero_si512();
        for (int t = 0; t < 8; t++)
            for (int a = 0; a < 4; a++)
                bt[a] = _mm512_dpwssd_epi32(bt[a], z->bs6[t], _mm512_set1_epi32(p->sp[a][t]));
        for (int a = 0; a < 4; a++) {
            __m512 d = _mm512_mul_ps(z->yd, _mm512_set1_ps(_cvtsh_ss(wb[a][ib].d)));
            __m512i isum = _mm512_sub_epi32(is[a], _mm512_slli_epi32(bt[a], 5));
            acc[a] = _mm512_add_ps(acc[a], _mm512_mul_ps(d, _mm512_cvtepi32_ps(isum)));
        }
    }
    zk_store(out, ostride, acc, i, r, xr);
}

ZKMM(x_mmt_q6_k, bq6_k_t, 1, zk4_q6_k, x_mm_q6_k)

/* ---- activation formats on AVX-512 ----------------------------------------------------------
 * The generic quantizers' results, bit for bit (test_kernels compares every format on every
 * ISA): the block maximum is exact in any order, the scales are the same scalar operations,
 * cvtps2dq rounds half to even as nearest_int does (|x * id| <= 127 here), NaN products give 0
 * as nearest_int's bits do, and the 16-bit conversions round to nearest even as
 * fp32_to_fp16/fp32_to_bf16 (their quiet NaNs included). A prompt's conversion ran the scalar
 * loops at about a twelfth of a Qwen decode step at 16 sequences (perf: 3.2%). */

/* 16 values as int32 rounded half to even, NaN -> 0 */
AVX512 static inline __m512i zround(__m512 v)
{
    return _mm512_maskz_cvtps_epi32(_mm512_cmp_ps_mask(v, v, _CMP_ORD_Q), v);
}

/* the largest |x| of 32 values, NaN never winning */
AVX512 static inline float zamax32(const float *x)
{
    const __m512 z = _mm512_setzero_ps();
    __m512 a = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x)), z);
    __m512 b = _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + 16)), z);
    return _mm512_reduce_max_ps(_mm512_max_ps(a, b));
}

/* 32 values times id to signed bytes (clamped to +-127); returns their sum */
AVX512 static inline int zquant32(int8_t *q, const float *x, float id)
{
    const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127);
    __m512 s = _mm512_set1_ps(id);
    __m512i a = zround(_mm512_mul_ps(_mm512_loadu_ps(x), s));
    __m512i b = zround(_mm512_mul_ps(_mm512_loadu_ps(x + 16), s));
    a = _mm512_min_epi32(_mm512_max_epi32(a, lo), hi);
    b = _mm512_min_epi32(_mm512_max_epi32(b, lo), hi);
    _mm_storeu_si128((__m128i *)q, _mm512_cvtepi32_epi8(a));
    _mm_storeu_si128((__m128i *)(q + 16), _mm512_cvtepi32_epi8(b));
    return _mm512_reduce_add_epi32(_mm512_add_epi32(a, b));
}

AVX512 static void zquant_q8_0(bq8_0_t *y, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n / QK; i++, x += QK) {
        float amax = zamax32(x);
        float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
        y[i].d = fp32_to_fp16(d);
        zquant32(y[i].qs, x, id);
    }
}

AVX512 static void zquant_q8_1(bq8_1_t *y, const float *x, int64_t n)
{
    for (int64_t i = 0; i < n / QK; i++, x += QK) {
        float amax = zamax32(x);
        float d = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
        y[i].d = fp32_to_fp16(d);
        y[i].s = fp32_to_fp16((float)zquant32(y[i].qs, x, id) * d);
    }
}

AVX512 static void zquant_q8_k(bq8_k_t *y, const float *x, int64_t n)
{
    const __m512 z = _mm512_setzero_ps();
    for (int64_t i = 0; i < n / QKK; i++, x += QKK) {
        __m512 m = z;
        for (int j = 0; j < QKK; j += 16)
            m = _mm512_max_ps(m, _mm512_max_ps(_mm512_abs_ps(_mm512_loadu_ps(x + j)), z));
        float amax = _mm512_reduce_max_ps(m);
        if (amax == 0.0f) {
            memset(&y[i], 0, sizeof y[i]);
            continue;
        }
        /* the signed value of the first element of largest magnitude, as the scalar scan */
        __m512 am = _mm512_set1_ps(amax);
        float max = 0.0f;
        for (int j = 0; j < QKK; j += 16) {
            __mmask16 k = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_loadu_ps(x + j)), am, _CMP_EQ_OQ);
            if (k) {
                max = x[j + __builtin_ctz(k)];
                break;
            }
        }
        float iscale = -127.0f / max;
        for (int g = 0; g < QKK / 32; g++)
            zquant32(y[i].qs + 32 * g, x + 32 * g, iscale);
        for (int g = 0; g < QKK / 16; g++)
            y[i].bsums[g] = (int16_t)_mm512_reduce_add_epi32(
                _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(y[i].qs + 16 * g))));
        y[i].d = 1.0f / iscale;
    }
}

/* 16 values to fp16 / bf16 bits, rounded to nearest even */
AVX512 static inline __m256i zf16(__m512 v)
{
    return _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
}

AVX512 static inline __m256i zbf16(__m512 v)
{
    __m512i u = _mm512_castps_si512(v);
    __m512i r = _mm512_add_epi32(
        u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff),
                            _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1))));
    __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
    r = _mm512_mask_or_epi32(r, nan, u, _mm512_set1_epi32(64 << 16));
    return _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16));
}

/* the 16-bit formats and F16R/BF16R: n values, 16 at a time, the rest by the scalar code */
AVX512 static void zquant_16(uint32_t vec_type, void *dst, const float *x, int64_t n)
{
    int bf = vec_type == DTYPE_BF16 || vec_type == KERNEL_VEC_BF16R;
    int rounded = vec_type == KERNEL_VEC_F16R || vec_type == KERNEL_VEC_BF16R;
    float *f = dst;
    uint16_t *h = rounded ? (uint16_t *)(f + n) : dst;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256i v = bf ? zbf16(_mm512_loadu_ps(x + i)) : zf16(_mm512_loadu_ps(x + i));
        _mm256_storeu_si256((__m256i *)(h + i), v);
        if (rounded)
            _mm512_storeu_ps(
                f + i, bf ? _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16))
                          : _mm512_cvtph_ps(v));
    }
    for (; i < n; i++) {
        h[i] = bf ? fp32_to_bf16(x[i]) : fp32_to_fp16(x[i]);
        if (rounded) f[i] = bf ? bf16_to_fp32(h[i]) : fp16_to_fp32(h[i]);
    }
}

/* 1 when vec_type is one of the formats above (dst written), else 0 */
static int quantize_row_avx512(uint32_t vec_type, void *dst, const float *x, int64_t n)
{
    switch (vec_type) {
    case DTYPE_Q8_0:
        zquant_q8_0(dst, x, n);
        return 1;
    case DTYPE_Q8_1:
        zquant_q8_1(dst, x, n);
        return 1;
    case DTYPE_Q8_K:
        zquant_q8_k(dst, x, n);
        return 1;
    case DTYPE_F16:
    case DTYPE_BF16:
    case KERNEL_VEC_F16R:
    case KERNEL_VEC_BF16R:
        zquant_16(vec_type, dst, x, n);
        return 1;
    default:
        return 0;
    }
}

static const kernel_type_t avx512_table[] = {
    {DTYPE_F32, DTYPE_F32, dq_f32, a_dot_f32, a_mm_f32},
    {DTYPE_F16, KERNEL_VEC_F16R, dq_f16, a_dot_f16, x_mm_f16},
    {DTYPE_BF16, KERNEL_VEC_BF16R, dq_bf16, a_dot_bf16, x_mm_bf16},
    {DTYPE_Q4_0, DTYPE_Q8_0, dq_q4_0, a_dot_q4_0, x_mm_q4_0},
    {DTYPE_Q4_1, DTYPE_Q8_1, dq_q4_1, a_dot_q4_1, NULL},
    {DTYPE_Q5_0, DTYPE_Q8_0, dq_q5_0, a_dot_q5_0, a_mm_q5_0},
    {DTYPE_Q5_1, DTYPE_Q8_1, dq_q5_1, a_dot_q5_1, NULL},
    {DTYPE_Q8_0, DTYPE_Q8_0, dq_q8_0, x_dot_q8_0, x_mm_q8_0},
    {DTYPE_IQ4_NL, DTYPE_Q8_0, dq_iq4_nl, a_dot_iq4_nl, a_mm_iq4_nl},
    {DTYPE_Q4_K, DTYPE_Q8_K, dq_q4_k, a_dot_q4_k, x_mmt_q4_k},
    {DTYPE_Q5_K, DTYPE_Q8_K, dq_q5_k, a_dot_q5_k, x_mm_q5_k},
    {DTYPE_Q6_K, DTYPE_Q8_K, dq_q6_k, a_dot_q6_k, x_mmt_q6_k},
};
_Static_assert(sizeof avx512_table == sizeof generic_table, "one row per type in every table");

static int have_avx512(void)
{
    return have_avx2() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
}
#endif

/* ---- selection --------------------------------------------------------------------------- */

/* Chosen once (or forced by a test before any product): read-mostly process state, like
 * the CPU features it mirrors. -1 = not chosen yet. */
static atomic_int isa_in_use = -1;

kernel_isa_t kernels_isa(void)
{
    int v = atomic_load_explicit(&isa_in_use, memory_order_relaxed);
    if (v < 0) {
        v = KERNEL_GENERIC;
#ifdef HAVE_X86
        if (have_avx2()) v = KERNEL_AVX2;
        if (have_avx512()) v = KERNEL_AVX512;
#endif
        atomic_store_explicit(&isa_in_use, v, memory_order_relaxed);
    }
    return (kernel_isa_t)v;
}

int kernels_force(kernel_isa_t isa)
{
    int ok = isa == KERNEL_GENERIC;
#ifdef HAVE_X86
    if (isa == KERNEL_AVX2) ok = have_avx2();
    if (isa == KERNEL_AVX512) ok = have_avx512();
#endif
    if (!ok) return -ENOTSUP;
    atomic_store(&isa_in_use, (int)isa);
    return 0;
}

const char *kernels_isa_name(kernel_isa_t isa)
{
    static const char *const names[] = {"generic", "avx2", "avx512"};
    return isa >= 0 && isa < KERNEL_COUNT ? names[isa] : "unknown";
}

const kernel_type_t *kernels_for(uint32_t t)
{
    const kernel_type_t *tab = generic_table;
#ifdef HAVE_X86
    kernel_isa_t isa = kernels_isa();
    if (isa == KERNEL_AVX2) tab = avx2_table;
    if (isa == KERNEL_AVX512) tab = avx512_table;
#endif
    for (size_t i = 0; i < N_TYPES; i++)
        if (tab[i].type == t) return &tab[i];
    return NULL;
}

/* Activation rows per pass over a range of weight rows. A prompt's rows (hundreds) do not fit
 * in L2 at once; every weight row would stream all of them from L3 again. In blocks of
 * XBLOCK, one block stays in L1/L2 while the range's weight rows (a thread's chunk) pass
 * over it, and the chunk stays in L2 for the next block. Each output is still one call of
 * the same per-element arithmetic (a multiple of the tiles' 16, 8 and 3 rows). */
#define XBLOCK 48
_Static_assert(XBLOCK <= 16 * XBLOCK_GROUPS, "x_mmt_q4_k prepares every group of a call");

void kernels_matmul(float *out, int ostride, const void *x, size_t xstride, int nrows,
                    const tensor_t *w, int i0, int i1)
{
    const kernel_type_t *kt = kernels_for(w->type);
    for (int r = 0; r < nrows; r += XBLOCK) {
        int n = nrows - r < XBLOCK ? nrows - r : XBLOCK;
        float *o = out + (size_t)r * (size_t)ostride;
        const void *xr = (const char *)x + (size_t)r * xstride;
        if (kt->mm)
            kt->mm(o, ostride, xr, xstride, n, w, i0, i1);
        else
            generic_mm(o, ostride, xr, xstride, n, w, i0, i1);
    }
}

/* ---- attention ------------------------------------------------------------------------------
 * A prompt row attends to hundreds of positions per head: a dispatched dot per position and
 * the scalar (SSE2) weighted sum of the value rows were a tenth of a 512-token prefill. Both
 * keep their scalar definitions' arithmetic: the scores are F32's dot chain,
 * the mix accumulates each output element over the positions in order (vector lanes are
 * independent elements). */

/* The attention steps are written once for the keys' and values' element type: ET is float
 * (an f32 KV cache; the public att_* functions) or uint16_t holding IEEE halves (an F16 cache;
 * the *_h functions and the _f16 group functions). A half widens to f32 exactly (CONV:
 * fp16_to_fp32; LOAD, 8 at a time: F16C's vcvtph2ps), and every step after the load is the
 * same, so an F16 cache's scores and mix have the bits of the f32 path on the halves' values,
 * ISA by ISA. */

/* cont: go on from out's values (a later block of positions) instead of from 0.0f */
#define ATT_MIX_GENERIC(NAME, ET, CONV)                                                            \
    static void NAME(float *out, const float *att, float inv, const ET *v, size_t vstride,         \
                     int npos, int n, int cont)                                                    \
    {                                                                                              \
        for (int i = 0; i < n && !cont; i++)                                                       \
            out[i] = 0.0f;                                                                         \
        for (int p = 0; p < npos; p++) {                                                           \
            const ET *vp = v + (size_t)p * vstride;                                                \
            float a = att[p] * inv;                                                                \
            for (int i = 0; i < n; i++)                                                            \
                out[i] += a * CONV(vp[i]);                                                         \
        }                                                                                          \
    }

ATT_MIX_GENERIC(att_mix_generic, float, F32_AS_IS)
ATT_MIX_GENERIC(att_mix_generic_h, uint16_t, fp16_to_fp32)

#ifdef HAVE_X86
/* hsum_avx of eight vectors at once, lane p = hsum_avx(v[p]): the same additions in the same
 * tree (lanes i and i + 4, then 0 + 2 and 1 + 3, then those two), done on transposed lanes */
AVX static inline __m256 hsum_avx8(const __m256 v[8])
{
    __m256 s[4]; /* s[j]: [v[j] lo + hi | v[j + 4] lo + hi] */
    for (int j = 0; j < 4; j++)
        s[j] = _mm256_add_ps(_mm256_permute2f128_ps(v[j], v[j + 4], 0x20),
                             _mm256_permute2f128_ps(v[j], v[j + 4], 0x31));
    __m256 t01 =
        _mm256_add_ps(_mm256_shuffle_ps(s[0], s[1], 0x44), _mm256_shuffle_ps(s[0], s[1], 0xee));
    __m256 t23 =
        _mm256_add_ps(_mm256_shuffle_ps(s[2], s[3], 0x44), _mm256_shuffle_ps(s[2], s[3], 0xee));
    return _mm256_add_ps(_mm256_shuffle_ps(t01, t23, 0x88), _mm256_shuffle_ps(t01, t23, 0xdd));
}

/* Eight positions at a time when the head has whole 8-blocks: eight independent chains in
 * flight where one dot's chain of n / 8 dependent FMAs left the core waiting (13 cycles a
 * 64-element score, one at a time); each chain and its sum are dot_avx's (DOT: dot_avx or
 * dot_avx_h, the same ET). */
#define ATT_SCORES_AVX(NAME, ET, LOAD, DOT)                                                        \
    AVX static void NAME(float *att, const float *q, const ET *k, size_t kstride, int npos, int n, \
                         float scale)                                                              \
    {                                                                                              \
        int p = 0;                                                                                 \
        if (n % 8 == 0)                                                                            \
            for (; p + 8 <= npos; p += 8) {                                                        \
                const ET *kp = k + (size_t)p * kstride;                                            \
                __m256 c[8];                                                                       \
                for (int r = 0; r < 8; r++)                                                        \
                    c[r] = _mm256_setzero_ps();                                                    \
                for (int j = 0; j < n; j += 8) {                                                   \
                    __m256 qj = _mm256_loadu_ps(q + j);                                            \
                    for (int r = 0; r < 8; r++)                                                    \
                        c[r] = _mm256_fmadd_ps(qj, LOAD(kp + (size_t)r * kstride + j), c[r]);      \
                }                                                                                  \
                _mm256_storeu_ps(att + p, _mm256_mul_ps(hsum_avx8(c), _mm256_set1_ps(scale)));     \
            }                                                                                      \
        for (; p < npos; p++)                                                                      \
            att[p] = DOT(q, k + (size_t)p * kstride, n) * scale;                                   \
    }

ATT_SCORES_AVX(att_scores_avx, float, _mm256_loadu_ps, dot_avx)
ATT_SCORES_AVX(att_scores_avx_h, uint16_t, f16x8, dot_avx_h)

/* 32 output elements per pass over the positions in four registers, then 8, then one (MIXG:
 * att_mix_generic or att_mix_generic_h, the same ET) */
#define ATT_MIX_AVX(NAME, ET, LOAD, MIXG)                                                          \
    AVX static void NAME(float *out, const float *att, float inv, const ET *v, size_t vstride,     \
                         int npos, int n, int cont)                                                \
    {                                                                                              \
        int i = 0;                                                                                 \
        for (; i + 32 <= n; i += 32) {                                                             \
            __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;                            \
            if (cont) {                                                                            \
                c0 = _mm256_loadu_ps(out + i);                                                     \
                c1 = _mm256_loadu_ps(out + i + 8);                                                 \
                c2 = _mm256_loadu_ps(out + i + 16);                                                \
                c3 = _mm256_loadu_ps(out + i + 24);                                                \
            }                                                                                      \
            for (int p = 0; p < npos; p++) {                                                       \
                const ET *vp = v + (size_t)p * vstride + i;                                        \
                __m256 a = _mm256_set1_ps(att[p] * inv);                                           \
                c0 = _mm256_add_ps(c0, _mm256_mul_ps(a, LOAD(vp)));                                \
                c1 = _mm256_add_ps(c1, _mm256_mul_ps(a, LOAD(vp + 8)));                            \
                c2 = _mm256_add_ps(c2, _mm256_mul_ps(a, LOAD(vp + 16)));                           \
                c3 = _mm256_add_ps(c3, _mm256_mul_ps(a, LOAD(vp + 24)));                           \
            }                                                                                      \
            _mm256_storeu_ps(out + i, c0);                                                         \
            _mm256_storeu_ps(out + i + 8, c1);                                                     \
            _mm256_storeu_ps(out + i + 16, c2);                                                    \
            _mm256_storeu_ps(out + i + 24, c3);                                                    \
        }                                                                                          \
        for (; i + 8 <= n; i += 8) {                                                               \
            __m256 c = cont ? _mm256_loadu_ps(out + i) : _mm256_setzero_ps();                      \
            for (int p = 0; p < npos; p++)                                                         \
                c = _mm256_add_ps(c, _mm256_mul_ps(_mm256_set1_ps(att[p] * inv),                   \
                                                   LOAD(v + (size_t)p * vstride + i)));            \
            _mm256_storeu_ps(out + i, c);                                                          \
        }                                                                                          \
        if (i < n) MIXG(out + i, att, inv, v + i, vstride, npos, n - i, cont);                     \
    }

ATT_MIX_AVX(att_mix_avx, float, _mm256_loadu_ps, att_mix_generic)
ATT_MIX_AVX(att_mix_avx_h, uint16_t, f16x8, att_mix_generic_h)

/* a dispatcher's AVX2 branch (AVX-512 CPUs take it too); nothing without x86 */
#define ATT_ON_AVX(call)                                                                           \
    if (kernels_isa() != KERNEL_GENERIC) {                                                         \
        call;                                                                                      \
        return;                                                                                    \
    }
#else
#define ATT_ON_AVX(call)
#endif

/* One head's scores, and one head's mix of a block of positions (cont as above), on the ISA in
 * use (AVX2's code on AVX-512 too): QUAL NAME is the public f32 function or the static F16
 * one. */
#define ATT_SCORES(QUAL, NAME, ET, AVXF, DOTG)                                                     \
    QUAL void NAME(float *att, const float *q, const ET *k, size_t kstride, int npos, int n,       \
                   float scale)                                                                    \
    {                                                                                              \
        ATT_ON_AVX(AVXF(att, q, k, kstride, npos, n, scale))                                       \
        for (int p = 0; p < npos; p++)                                                             \
            att[p] = DOTG(q, k + (size_t)p * kstride, n) * scale;                                  \
    }
#define ATT_MIX_FROM(NAME, ET, AVXF, MIXG)                                                         \
    static void NAME(float *out, const float *att, float inv, const ET *v, size_t vstride,         \
                     int npos, int n, int cont)                                                    \
    {                                                                                              \
        ATT_ON_AVX(AVXF(out, att, inv, v, vstride, npos, n, cont))                                 \
        MIXG(out, att, inv, v, vstride, npos, n, cont);                                            \
    }

ATT_SCORES(, att_scores, float, att_scores_avx, dot_generic)
ATT_SCORES(static, att_scores_h, uint16_t, att_scores_avx_h, dot_generic_h)
ATT_MIX_FROM(att_mix_from, float, att_mix_avx, att_mix_generic)
ATT_MIX_FROM(att_mix_from_h, uint16_t, att_mix_avx_h, att_mix_generic_h)

/* Heads sharing one key and value sequence (grouped-query attention) take each block of
 * positions in turn, so its keys (values) come from L1 for every head but the first; a block
 * is ~16 KiB of rows (of esize-byte elements: an F16 cache's block holds twice the positions).
 * A score is a per-position dot, and a mix element's chain only goes on from where the last
 * block stored it, so the bits are att_scores' and one head's mix whatever the block. */
static int att_block(int n, size_t stride, size_t esize)
{
    size_t b = (16384 / esize) / (stride > (size_t)n ? stride : (size_t)n);
    return b < 8 ? 8 : (int)(b & ~(size_t)7);
}

#define ATT_SCORES_GROUP(NAME, ET, SCORES)                                                         \
    void NAME(float *att, size_t astride, const float *q, size_t qstride, int g, const ET *k,      \
              size_t kstride, int npos, int n, float scale)                                        \
    {                                                                                              \
        int blk = att_block(n, kstride, sizeof(ET));                                               \
        for (int p0 = 0; p0 < npos; p0 += blk) {                                                   \
            int nb = npos - p0 < blk ? npos - p0 : blk;                                            \
            for (int j = 0; j < g; j++)                                                            \
                SCORES(att + (size_t)j * astride + p0, q + (size_t)j * qstride,                    \
                       k + (size_t)p0 * kstride, kstride, nb, n, scale);                           \
        }                                                                                          \
    }
#define ATT_MIX_GROUP(NAME, ET, MIXFROM)                                                           \
    void NAME(float *out, size_t ostride, const float *att, size_t astride, const float *inv,      \
              int g, const ET *v, size_t vstride, int npos, int n)                                 \
    {                                                                                              \
        int blk = att_block(n, vstride, sizeof(ET));                                               \
        for (int p0 = 0; p0 < npos; p0 += blk) {                                                   \
            int nb = npos - p0 < blk ? npos - p0 : blk;                                            \
            for (int j = 0; j < g; j++)                                                            \
                MIXFROM(out + (size_t)j * ostride, att + (size_t)j * astride + p0, inv[j],         \
                        v + (size_t)p0 * vstride, vstride, nb, n, p0 > 0);                         \
        }                                                                                          \
    }

ATT_SCORES_GROUP(att_scores_group, float, att_scores)
ATT_SCORES_GROUP(att_scores_group_f16, uint16_t, att_scores_h)
ATT_MIX_GROUP(att_mix_group, float, att_mix_from)
ATT_MIX_GROUP(att_mix_group_f16, uint16_t, att_mix_from_h)

/* An F16 cache's writer: fp32_to_fp16's bits. vcvtps2ph rounds to nearest even as it does, to
 * subnormal halves too (it does not flush them under MXCSR.FTZ, and the f32 subnormals that DAZ
 * would flush are far below the smallest half: 0 either way), overflows to inf from 65520 on,
 * and turns a NaN (signaling ones too) into the quiet NaN with its sign and the top 10 bits of
 * its payload, as fp32_to_fp16 does (test_kernels compares them on such values). */
#ifdef HAVE_X86
AVX static void to_f16_avx(uint16_t *dst, const float *x, int n)
{
    int i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128(
            (__m128i *)(dst + i),
            _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    for (; i < n; i++)
        dst[i] = fp32_to_fp16(x[i]);
}
#endif

void kernels_to_f16(uint16_t *dst, const float *x, int n)
{
#ifdef HAVE_X86
    if (kernels_isa() != KERNEL_GENERIC) {
        to_f16_avx(dst, x, n);
        return;
    }
#endif
    for (int i = 0; i < n; i++)
        dst[i] = fp32_to_fp16(x[i]);
}

/* ---- exponential -----------------------------------------------------------------------------
 * kernels_exp(x): with N = 32, x * N/ln2 = k + r, k the nearest integer (rounded by adding
 * 1.5 * 2^52 in double, whose last bits are then k), |r| <= 1/2; e^x = 2^(k/N) * 2^(r/N), where
 * 2^(k/N) = 2^floor(k/N) * T[k mod N] (the exponent added to T's bits) and 2^(r/N) = e^t,
 * t = r ln2/N, |t| <= 0.0109, by its Taylor polynomial to t^4 (the next term is < 2^-39.5 of
 * it): q = ((((c4 r + c3) r + c2) r + c1) r), e^x ~ s * q + s with s = 2^(k/N), then rounded
 * once to float (so overflow to inf and subnormal results are that conversion's). Every step is
 * one IEEE double mul or add (no FMA: the generic C has none, and the vector paths must give its
 * bits; this file is C11, where GCC contracts nothing, and every step is its own statement for
 * compilers that contract within one). x is first clamped to [-150, 100], where every result is
 * 0 or inf already and k/N keeps the scale's exponent in range; a NaN gives x + x (the NaN,
 * quiet). The table holds 2^(i/32) correctly rounded to double, made with Python's decimal at 80
 * digits: float((Decimal(2).ln() * i / 32).exp()).hex(); c_j = (ln2/32)^j / j! and 32/ln2 the
 * same way. Under 2^-39 relative error before the float rounding: within 1 ULP of e^x, and e^x
 * correctly rounded for all but 593 of the 2^32 floats (test/engine/exp_exhaustive checks every
 * one, on every ISA). */

#define EXP_N 32
#define EXP_SHIFT 0x1.8p52
#define EXP_N_LN2 0x1.71547652b82fep+5 /* 32 / ln2 */
#define EXP_C1 0x1.62e42fefa39efp-6    /* (ln2/32)^j / j! */
#define EXP_C2 0x1.ebfbdff82c58fp-13
#define EXP_C3 0x1.c6b08d704a0c0p-20
#define EXP_C4 0x1.3b2ab6fba4e77p-27
#define EXP_LO -150.0f
#define EXP_HI 100.0f

/* 64-byte aligned: the AVX-512 path keeps it in four registers */
static const double exp_tab[EXP_N] __attribute__((aligned(64))) = {
    0x1.0000000000000p+0, 0x1.059b0d3158574p+0, 0x1.0b5586cf9890fp+0, 0x1.11301d0125b51p+0,
    0x1.172b83c7d517bp+0, 0x1.1d4873168b9aap+0, 0x1.2387a6e756238p+0, 0x1.29e9df51fdee1p+0,
    0x1.306fe0a31b715p+0, 0x1.371a7373aa9cbp+0, 0x1.3dea64c123422p+0, 0x1.44e086061892dp+0,
    0x1.4bfdad5362a27p+0, 0x1.5342b569d4f82p+0, 0x1.5ab07dd485429p+0, 0x1.6247eb03a5585p+0,
    0x1.6a09e667f3bcdp+0, 0x1.71f75e8ec5f74p+0, 0x1.7a11473eb0187p+0, 0x1.82589994cce13p+0,
    0x1.8ace5422aa0dbp+0, 0x1.93737b0cdc5e5p+0, 0x1.9c49182a3f090p+0, 0x1.a5503b23e255dp+0,
    0x1.ae89f995ad3adp+0, 0x1.b7f76f2fb5e47p+0, 0x1.c199bdd85529cp+0, 0x1.cb720dcef9069p+0,
    0x1.d5818dcfba487p+0, 0x1.dfc97337b9b5fp+0, 0x1.ea4afa2a490dap+0, 0x1.f50765b6e4540p+0,
};

float kernels_exp(float x)
{
    if (x != x) return x + x;
    x = EXP_LO > x ? EXP_LO : x;
    x = EXP_HI < x ? EXP_HI : x;
    double z = (double)x * EXP_N_LN2;
    double kd = z + EXP_SHIFT;
    uint64_t ki, tb;
    memcpy(&ki, &kd, sizeof ki);
    kd = kd - EXP_SHIFT;
    double r = z - kd;
    uint64_t i = ki & (EXP_N - 1);
    /* ki is 1.5 * 2^52 + k in two's complement; (ki - i) << 47 = floor(k/32) << 52 mod 2^64
     * (the shift constant's bits leave the word): the exponent to add to T's */
    memcpy(&tb, &exp_tab[i], sizeof tb);
    tb += (ki - i) << 47;
    double s;
    memcpy(&s, &tb, sizeof s);
    double q = EXP_C4 * r;
    q = q + EXP_C3;
    q = q * r;
    q = q + EXP_C2;
    q = q * r;
    q = q + EXP_C1;
    q = q * r;
    double y = s * q;
    y = y + s;
    return (float)y;
}

static void exp_sub_generic(float *x, int n, float m, float s)
{
    for (int i = 0; i < n; i++)
        x[i] = kernels_exp((x[i] - m) * s);
}

static void silu_mul_generic(float *g, const float *u, int n)
{
    for (int i = 0; i < n; i++) {
        float v = g[i];
        g[i] = v / (1.0f + kernels_exp(-v)) * u[i];
    }
}

static float max_generic(const float *x, int n)
{
    float m = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > m) m = x[i];
    return m;
}

#ifdef HAVE_X86
/* kernels_exp's steps on four lanes of clamped x. A NaN lane needs no test: a float NaN widened
 * to double has its low 29 bits 0, so its index and exponent bits are 0 and s = 1, and the NaN
 * is the only NaN operand of every step after: it comes out as the generic x + x (x quieted,
 * sign and payload kept: x86's rule for one NaN operand; exp_exhaustive checks every NaN). */
AVX static inline __m256d exp4_avx(__m128 x)
{
    const __m256d shift = _mm256_set1_pd(EXP_SHIFT);
    __m256d z = _mm256_mul_pd(_mm256_cvtps_pd(x), _mm256_set1_pd(EXP_N_LN2));
    __m256d kd = _mm256_add_pd(z, shift);
    __m256i ki = _mm256_castpd_si256(kd);
    kd = _mm256_sub_pd(kd, shift);
    __m256d r = _mm256_sub_pd(z, kd);
    __m256i i = _mm256_and_si256(ki, _mm256_set1_epi64x(EXP_N - 1));
    __m256i tb = _mm256_castpd_si256(_mm256_i64gather_pd(exp_tab, i, 8));
    tb = _mm256_add_epi64(tb, _mm256_slli_epi64(_mm256_sub_epi64(ki, i), 47));
    __m256d s = _mm256_castsi256_pd(tb);
    __m256d q = _mm256_mul_pd(_mm256_set1_pd(EXP_C4), r);
    q = _mm256_add_pd(q, _mm256_set1_pd(EXP_C3));
    q = _mm256_mul_pd(q, r);
    q = _mm256_add_pd(q, _mm256_set1_pd(EXP_C2));
    q = _mm256_mul_pd(q, r);
    q = _mm256_add_pd(q, _mm256_set1_pd(EXP_C1));
    q = _mm256_mul_pd(q, r);
    return _mm256_add_pd(_mm256_mul_pd(s, q), s);
}

AVX static inline __m256 exp8_avx(__m256 x)
{
    /* max/min return their second operand when either is NaN: a NaN lane stays NaN, as the
     * generic comparisons leave it (the clamp is kernels_exp's) */
    __m256 c = _mm256_min_ps(_mm256_set1_ps(EXP_HI), _mm256_max_ps(_mm256_set1_ps(EXP_LO), x));
    __m128 lo = _mm256_cvtpd_ps(exp4_avx(_mm256_castps256_ps128(c)));
    __m128 hi = _mm256_cvtpd_ps(exp4_avx(_mm256_extractf128_ps(c, 1)));
    return _mm256_insertf128_ps(_mm256_castps128_ps256(lo), hi, 1);
}

/* EXP8: the exponential of 8 floats on this ISA. The last n % 8 elements go through a zero-padded
 * register too (lanes are independent, so their bits are the generic ones) rather than the
 * generic loop: a call into SSE code here would run it with the upper halves dirty, which
 * costs on some CPUs (no vzeroupper before a tail call: the softmax after it ran at 10 ns an
 * element instead of 4 in a micro-benchmark). */
#define ELEMWISE(ATTR, PFX, EXP8)                                                                  \
    ATTR static void PFX##exp_sub(float *x, int n, float m, float s)                               \
    {                                                                                              \
        __m256 vm = _mm256_set1_ps(m), vs = _mm256_set1_ps(s);                                     \
        int i = 0;                                                                                 \
        for (; i + 8 <= n; i += 8) {                                                               \
            __m256 v = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm), vs);               \
            _mm256_storeu_ps(x + i, EXP8(v));                                                      \
        }                                                                                          \
        if (i == n) return;                                                                        \
        float t[8] = {0};                                                                          \
        memcpy(t, x + i, sizeof(float) * (size_t)(n - i));                                         \
        _mm256_storeu_ps(t, EXP8(_mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(t), vm), vs)));       \
        memcpy(x + i, t, sizeof(float) * (size_t)(n - i));                                         \
    }                                                                                              \
    ATTR static inline __m256 PFX##silu8(__m256 v, __m256 u)                                       \
    {                                                                                              \
        __m256 d =                                                                                 \
            _mm256_add_ps(_mm256_set1_ps(1.0f), EXP8(_mm256_xor_ps(v, _mm256_set1_ps(-0.0f))));    \
        return _mm256_mul_ps(_mm256_div_ps(v, d), u);                                              \
    }                                                                                              \
    ATTR static void PFX##silu_mul(float *g, const float *u, int n)                                \
    {                                                                                              \
        int i = 0;                                                                                 \
        for (; i + 8 <= n; i += 8)                                                                 \
            _mm256_storeu_ps(g + i, PFX##silu8(_mm256_loadu_ps(g + i), _mm256_loadu_ps(u + i)));   \
        if (i == n) return;                                                                        \
        float t[8] = {0}, w[8] = {0};                                                              \
        memcpy(t, g + i, sizeof(float) * (size_t)(n - i));                                         \
        memcpy(w, u + i, sizeof(float) * (size_t)(n - i));                                         \
        _mm256_storeu_ps(t, PFX##silu8(_mm256_loadu_ps(t), _mm256_loadu_ps(w)));                   \
        memcpy(g + i, t, sizeof(float) * (size_t)(n - i));                                         \
    }

ELEMWISE(AVX, a_, exp8_avx)

AVX static float max_avx(const float *x, int n)
{
    if (n < 8) return max_generic(x, n);
    __m256 m = _mm256_loadu_ps(x);
    int i = 8;
    for (; i + 8 <= n; i += 8)
        m = _mm256_max_ps(m, _mm256_loadu_ps(x + i));
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_shuffle_ps(h, h, 1));
    float r = _mm_cvtss_f32(h);
    for (; i < n; i++)
        if (x[i] > r) r = x[i];
    return r;
}

/* the same steps on eight lanes in one register (NaN lanes as there); the table in four
 * registers, picked by the index's low 4 bits within a pair and its bit 4 between the pairs
 * (no gather) */
AVX512 static inline __m256 exp8_512(__m256 x)
{
    const __m512d shift = _mm512_set1_pd(EXP_SHIFT);
    __m256 c = _mm256_min_ps(_mm256_set1_ps(EXP_HI), _mm256_max_ps(_mm256_set1_ps(EXP_LO), x));
    __m512d z = _mm512_mul_pd(_mm512_cvtps_pd(c), _mm512_set1_pd(EXP_N_LN2));
    __m512d kd = _mm512_add_pd(z, shift);
    __m512i ki = _mm512_castpd_si512(kd);
    kd = _mm512_sub_pd(kd, shift);
    __m512d r = _mm512_sub_pd(z, kd);
    __m512i i = _mm512_and_si512(ki, _mm512_set1_epi64(EXP_N - 1));
    __m512d t0 = _mm512_permutex2var_pd(_mm512_load_pd(exp_tab), i, _mm512_load_pd(exp_tab + 8));
    __m512d t1 =
        _mm512_permutex2var_pd(_mm512_load_pd(exp_tab + 16), i, _mm512_load_pd(exp_tab + 24));
    __m512d t = _mm512_mask_blend_pd(_mm512_test_epi64_mask(i, _mm512_set1_epi64(16)), t0, t1);
    __m512i tb =
        _mm512_add_epi64(_mm512_castpd_si512(t), _mm512_slli_epi64(_mm512_sub_epi64(ki, i), 47));
    __m512d s = _mm512_castsi512_pd(tb);
    __m512d q = _mm512_mul_pd(_mm512_set1_pd(EXP_C4), r);
    q = _mm512_add_pd(q, _mm512_set1_pd(EXP_C3));
    q = _mm512_mul_pd(q, r);
    q = _mm512_add_pd(q, _mm512_set1_pd(EXP_C2));
    q = _mm512_mul_pd(q, r);
    q = _mm512_add_pd(q, _mm512_set1_pd(EXP_C1));
    q = _mm512_mul_pd(q, r);
    return _mm512_cvtpd_ps(_mm512_add_pd(_mm512_mul_pd(s, q), s));
}

ELEMWISE(AVX512, x_, exp8_512)
#endif

void kernels_exp_sub(float *x, int n, float m, float s)
{
#ifdef HAVE_X86
    kernel_isa_t isa = kernels_isa();
    if (isa == KERNEL_AVX512) {
        x_exp_sub(x, n, m, s);
        return;
    }
    if (isa == KERNEL_AVX2) {
        a_exp_sub(x, n, m, s);
        return;
    }
#endif
    exp_sub_generic(x, n, m, s);
}

void kernels_silu_mul(float *g, const float *u, int n)
{
#ifdef HAVE_X86
    kernel_isa_t isa = kernels_isa();
    if (isa == KERNEL_AVX512) {
        x_silu_mul(g, u, n);
        return;
    }
    if (isa == KERNEL_AVX2) {
        a_silu_mul(g, u, n);
        return;
    }
#endif
    silu_mul_generic(g, u, n);
}

float kernels_max(const float *x, int n)
{
#ifdef HAVE_X86
    if (kernels_isa() != KERNEL_GENERIC) return max_avx(x, n);
#endif
    return max_generic(x, n);
}
