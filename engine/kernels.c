/*
 * kernels.c - the dot-product kernels under every matmul. Each output element is
 * reduced in a fixed order that depends only on n (one 8-lane accumulator, a fixed
 * horizontal sum, then a scalar tail), never on how many rows are in the batch or
 * which thread computes it: that is what makes decoding batch invariant.
 * AVX2+FMA is used when the CPU has it (checked at run time); the generic path has
 * the same structure without FMA (so it differs from AVX2 in the last bits), so results are
 * deterministic on each machine.
 */
#include "internal.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define HAVE_X86 1
#endif

/* ---- generic ---------------------------------------------------------------- */

/* Reduction order for every dot product of length n (both paths): one 8-lane
 * accumulator over the 8-float blocks in order, a fixed pairwise horizontal sum, then
 * the scalar tail in order. */
static inline float hsum8(const float *v)
{
    return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
}

static float dot_generic(const float *a, const float *b, int n)
{
    float acc[8] = {0};
    int j = 0;
    for (; j + 8 <= n; j += 8)
        for (int l = 0; l < 8; l++)
            acc[l] += a[j + l] * b[j + l];
    float s = hsum8(acc);
    for (; j < n; j++)
        s += a[j] * b[j];
    return s;
}

static void matmul_generic(float *out, int ostride, const float *x, int nrows, const float *w,
                           int n, int i0, int i1)
{
    for (int i = i0; i < i1; i++) {
        const float *wi = w + (size_t)i * (size_t)n;
        for (int r = 0; r < nrows; r++)
            out[(size_t)r * (size_t)ostride + (size_t)i] = dot_generic(wi, x + (size_t)r * n, n);
    }
}

/* ---- AVX2 + FMA --------------------------------------------------------------- */

#ifdef HAVE_X86
#define AVX __attribute__((target("avx2,fma")))

AVX static inline float hsum_avx(__m256 v)
{
    __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
    __m128 s = _mm_add_ps(lo, hi);   /* (0+4)(1+5)(2+6)(3+7) */
    __m128 sh = _mm_movehl_ps(s, s); /* (2+6)(3+7) */
    __m128 t = _mm_add_ps(s, sh);    /* (0+4)+(2+6), (1+5)+(3+7) */
    __m128 u = _mm_add_ss(t, _mm_shuffle_ps(t, t, 1));
    return _mm_cvtss_f32(u);
}

AVX static float dot_avx(const float *a, const float *b, int n)
{
    __m256 acc = _mm256_setzero_ps();
    int j = 0;
    for (; j + 8 <= n; j += 8)
        acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + j), _mm256_loadu_ps(b + j), acc);
    float s = hsum_avx(acc);
    for (; j < n; j++)
        s += a[j] * b[j];
    return s;
}

/* WR weight rows x XR activation rows per tile; every (row, output) pair runs exactly
 * dot_avx's operation sequence, so the tiling never changes a result. */
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

AVX static void matmul_avx(float *out, int ostride, const float *x, int nrows, const float *w,
                           int n, int i0, int i1)
{
    int i = i0;
    for (; i + 4 <= i1; i += 4) {
        int r = 0;
        for (; r + 3 <= nrows; r += 3)
            tile_4_3(out, ostride, x, w, n, i, r);
        if (nrows - r == 2) tile_4_2(out, ostride, x, w, n, i, r);
        if (nrows - r == 1) tile_4_1(out, ostride, x, w, n, i, r);
    }
    for (; i < i1; i++) {
        int r = 0;
        for (; r + 3 <= nrows; r += 3)
            tile_1_3(out, ostride, x, w, n, i, r);
        if (nrows - r == 2) tile_1_2(out, ostride, x, w, n, i, r);
        if (nrows - r == 1) tile_1_1(out, ostride, x, w, n, i, r);
    }
}

static int have_avx2(void)
{
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#endif

float dot_fixed(const float *a, const float *b, int n)
{
#ifdef HAVE_X86
    if (have_avx2()) return dot_avx(a, b, n);
#endif
    return dot_generic(a, b, n);
}

void matmul_rows(float *out, int ostride, const float *x, int nrows, const float *w, int n, int i0,
                 int i1)
{
#ifdef HAVE_X86
    if (have_avx2()) {
        matmul_avx(out, ostride, x, nrows, w, n, i0, i1);
        return;
    }
#endif
    matmul_generic(out, ostride, x, nrows, w, n, i0, i1);
}
