/*
 * test_kernels.c - the matrix products of every weight type, on random valid blocks:
 *   - batch invariance: a product over many activation rows and any range of weight rows
 *     (so every tile shape and remainder the fast kernels have) gives, for each output,
 *     the very bits of that type's dot on one weight row and one activation row;
 *   - across ISAs: the quantized types give the same bits on every ISA this CPU has (their
 *     block sums are exact integers and their float order is shared); the float types
 *     agree within 1e-5 relative to the sum of magnitudes;
 *   - against arithmetic: every output is within a small tolerance of the float64 dot of
 *     the dequantized weight row and the dequantized activation row;
 *   - the k-quants at their extremes (every value its largest, activations +-127): the
 *     AVX-512 sums keep four products per 16-bit lane (4 * 63 * 127 fits), so these give the
 *     generic bits too;
 *   - the float types' order (kernels.h): on lengths that are no multiple of 8 or 32, every
 *     output of every ISA is the bits of the documented sum computed here (F32 one chain,
 *     F16/BF16 four chains; attention's scores as F32);
 *   - rows too long for the AVX-512 Q8_0/Q4_0 tiles' scale buffer give the dot's bits too;
 *   - the F16/BF16 weights' activation rows (values rounded as ggml rounds to f16/bf16, as
 *     f32 and as 16-bit) hold the 16-bit formats' very values;
 *   - attention (att_scores, att_mix_group of one head): on every ISA, the bits of F32's dot
 *     order times the scale, and of the value rows' weighted sum accumulated element by
 *     element in order; the grouped-query versions (a block of positions at a time for
 *     several heads) the same bits head by head; over an F16 KV cache (keys and values as
 *     IEEE halves, att_scores_group_f16, att_mix_group_f16) the bits of the f32 functions on
 *     the halves' values, and its writer (kernels_to_f16) fp32_to_fp16's bits on every ISA.
 *   - the exponential (kernels_exp) and what is built on it (kernels_exp_sub, kernels_silu_mul),
 *     and kernels_max: every ISA gives the generic bits on random values, the overflow and
 *     underflow thresholds, subnormal results, +-0, +-inf, NaNs and lengths that are no
 *     multiple of 8; the exponential is within 1 ULP of exp() in double rounded to float, and
 *     that rounding itself for all but a few in a million (a lost polynomial term or a wrong
 *     table entry shows there); test/engine/exp_exhaustive checks all 2^32 floats.
 * (The bit-for-bit comparison with llama.cpp's own dequantization is engine_quants_ref.)
 */
#include "internal.h"
#include "isa_each.h"
#include "kernels.h"

#include <float.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static uint64_t rs = 0x243f6a8885a308d3ull;
static uint64_t rnd(void)
{
    rs ^= rs << 13;
    rs ^= rs >> 7;
    rs ^= rs << 17;
    return rs;
}
static float unit(void)
{
    return (float)(rnd() >> 40) / (float)(1 << 24) * 2.0f - 1.0f;
}

/* byte offsets of the fp16 scale fields in a block */
static int scale_offsets(uint32_t t, int off[2])
{
    off[0] = 0;
    off[1] = -1;
    switch (t) {
    case DTYPE_Q4_1:
    case DTYPE_Q5_1:
    case DTYPE_Q4_K:
    case DTYPE_Q5_K:
        off[1] = 2;
        return 0;
    case DTYPE_Q6_K:
        off[0] = 208;
        return 0;
    default:
        return 0;
    }
}

/* random weights of type t: floats in [-1, 1], or random bytes with finite scales */
static void fill(uint32_t t, uint8_t *p, size_t nbytes)
{
    if (t == DTYPE_F32) {
        for (size_t i = 0; i < nbytes / 4; i++)
            ((float *)p)[i] = unit();
        return;
    }
    if (t == DTYPE_F16 || t == DTYPE_BF16) {
        for (size_t i = 0; i < nbytes / 2; i++)
            ((uint16_t *)p)[i] = t == DTYPE_F16 ? fp32_to_fp16(unit()) : fp32_to_bf16(unit());
        return;
    }
    for (size_t i = 0; i < nbytes; i++)
        p[i] = (uint8_t)rnd();
    size_t bs = dtype_info(t)->bytes;
    int off[2];
    scale_offsets(t, off);
    for (size_t b = 0; b + bs <= nbytes; b += bs)
        for (int k = 0; k < 2; k++)
            if (off[k] >= 0) {
                uint16_t h = fp32_to_fp16(unit() * 0.1f);
                memcpy(p + b + off[k], &h, 2);
            }
}

static const uint32_t types[] = {DTYPE_F32,  DTYPE_F16,  DTYPE_BF16, DTYPE_Q4_0,
                                 DTYPE_Q4_1, DTYPE_Q5_0, DTYPE_Q5_1, DTYPE_Q8_0,
                                 DTYPE_Q4_K, DTYPE_Q5_K, DTYPE_Q6_K, DTYPE_IQ4_NL};
#define NTYPES (sizeof types / sizeof types[0])
#define ROWS 37 /* weight rows: 9 tiles of 4 and a remainder */
/* activation rows: every tile height and remainder (F32: 3-row tiles; the AVX-512 Q4_0
 * tiles: 8 rows; Q8_0: groups of 16 rows in 16, 8 or 4 lanes; the k-quants: 16-row chunks of
 * 8-row groups), so 21 = two whole Q4_0 tiles and 5, a whole Q8_0 group and 5 (8 lanes), a whole
 * k-quant chunk and 5; the counts 1-4 take Q8_0's 4 lanes */
#define XROWS 21

typedef struct {
    tensor_t w;
    uint8_t *wdata;
    float *xf;  /* (XROWS, n) */
    uint8_t *x; /* (XROWS, xs) in the vec type */
    size_t xs;
    int n;
} case_t;

static void case_make(case_t *c, uint32_t t, int n)
{
    memset(c, 0, sizeof *c);
    c->n = n;
    c->w.type = t;
    c->w.ne[0] = n;
    c->w.ne[1] = ROWS;
    c->w.row_bytes = dtype_row_bytes(t, (uint64_t)n);
    c->w.nbytes = c->w.row_bytes * ROWS;
    c->wdata = malloc(c->w.nbytes);
    fill(t, c->wdata, c->w.nbytes);
    c->w.data = c->wdata;
    c->xf = malloc(sizeof(float) * XROWS * (size_t)n);
    for (int i = 0; i < XROWS * n; i++)
        c->xf[i] = unit() * 2.0f;
}

/* the activations in the vec type of the kernels now in use */
static void case_quantize(case_t *c)
{
    const kernel_type_t *kt = kernels_for(c->w.type);
    c->xs = kernels_act_row_bytes(kt->vec_type, c->n);
    free(c->x);
    c->x = malloc(c->xs * XROWS);
    for (int r = 0; r < XROWS; r++)
        kernels_quantize_row(kt->vec_type, c->x + (size_t)r * c->xs, c->xf + (size_t)r * c->n,
                             c->n);
}

static void case_free(case_t *c)
{
    free(c->wdata);
    free(c->xf);
    free(c->x);
}

/* out (XROWS, ROWS) through kernels_matmul over [i0, i1) in pieces of `step` rows */
static void product(const case_t *c, float *out, int nrows, int step)
{
    for (int i = 0; i < ROWS; i += step)
        kernels_matmul(out, ROWS, c->x, c->xs, nrows, &c->w, i, i + step < ROWS ? i + step : ROWS);
}

static void test_batch_invariance(void **state)
{
    (void)state;
    /* 4096 + 256: k-quant rows of over 2 KiB, so the AVX-512 many-row paths split the 37
     * weight rows into blocks (KBLOCK_BYTES) when a call covers them all; 256, 512, 768 and
     * 2048 + 256: k-quant rows whose last 1, 2, 3 and 1 super-blocks are a partial step of
     * the one-row paths (four super-blocks per step) */
    int sizes[] = {256, 512, 768, 2048 + 256, 4096 + 256};
    int steps[] = {1, 9, 17, ROWS};
    float *all = malloc(sizeof(float) * XROWS * ROWS), *dots = malloc(sizeof(float) * XROWS * ROWS);
    FOR_EACH_ISA(isa)
    {
        for (size_t ti = 0; ti < NTYPES; ti++)
            for (size_t si = 0; si < sizeof sizes / sizeof sizes[0]; si++) {
                case_t c;
                case_make(&c, types[ti], sizes[si]);
                case_quantize(&c);
                const kernel_type_t *kt = kernels_for(types[ti]);
                for (int r = 0; r < XROWS; r++)
                    for (int i = 0; i < ROWS; i++)
                        dots[r * ROWS + i] = kt->dot(c.n, c.wdata + (size_t)i * c.w.row_bytes,
                                                     c.x + (size_t)r * c.xs);
                for (int nrows = 1; nrows <= XROWS; nrows++)
                    for (size_t sti = 0; sti < sizeof steps / sizeof steps[0]; sti++) {
                        int step = steps[sti];
                        memset(all, 0xff, sizeof(float) * XROWS * ROWS);
                        product(&c, all, nrows, step);
                        /* rows past nrows are not written (a tile's repeated last row) */
                        for (int r = nrows; r < XROWS; r++)
                            for (int i = 0; i < ROWS; i++) {
                                uint32_t u;
                                memcpy(&u, &all[r * ROWS + i], 4);
                                if (u != 0xffffffffu)
                                    fail_msg("isa %d %s n %d: %d activation rows, steps of %d: "
                                             "out[%d][%d] written",
                                             isa, dtype_name(types[ti]), c.n, nrows, step, r, i);
                            }
                        for (int r = 0; r < nrows; r++)
                            for (int i = 0; i < ROWS; i++) {
                                float d = dots[r * ROWS + i];
                                if (memcmp(&d, &all[r * ROWS + i], 4)) {
                                    fail_msg("isa %d %s n %d: %d activation rows, steps of %d: "
                                             "out[%d][%d] = %.9g, the dot gives %.9g",
                                             isa, dtype_name(types[ti]), c.n, nrows, step, r, i,
                                             (double)all[r * ROWS + i], (double)d);
                                }
                            }
                    }
                case_free(&c);
            }
    }
    free(all);
    free(dots);
}

static void test_isas_and_reference(void **state)
{
    (void)state;
    int n = 1024;
    float *ref = malloc(sizeof(float) * XROWS * ROWS), *got = malloc(sizeof(float) * XROWS * ROWS);
    float *wrow = malloc(sizeof(float) * (size_t)n), *xrow = malloc(sizeof(float) * (size_t)n);
    for (size_t ti = 0; ti < NTYPES; ti++) {
        case_t c;
        case_make(&c, types[ti], n);
        int quant = types[ti] != DTYPE_F32 && types[ti] != DTYPE_F16 && types[ti] != DTYPE_BF16;
        FOR_EACH_ISA(isa)
        {
            case_quantize(&c);
            product(&c, isa == KERNEL_GENERIC ? ref : got, XROWS, 16);
            const kernel_type_t *kt = kernels_for(types[ti]);
            const kernel_type_t *kv =
                kernels_for(kt->vec_type == DTYPE_Q8_K ? DTYPE_Q8_0 : kt->vec_type);
            for (int r = 0; r < XROWS; r++) {
                /* the activation row as the kernel sees it */
                if (kt->vec_type == DTYPE_Q8_K) {
                    /* Q8_K: float d, then 256 int8 per block (kernels.c's layout) */
                    const uint8_t *p = c.x + (size_t)r * c.xs;
                    for (int b = 0; b < n / 256; b++) {
                        float d;
                        memcpy(&d, p + (size_t)b * 292, 4);
                        for (int l = 0; l < 256; l++)
                            xrow[b * 256 + l] = d * (float)(int8_t)p[(size_t)b * 292 + 4 + l];
                    }
                } else if (kt->vec_type == DTYPE_Q8_1) {
                    const uint8_t *p = c.x + (size_t)r * c.xs;
                    for (int b = 0; b < n / 32; b++) {
                        uint16_t h;
                        memcpy(&h, p + (size_t)b * 36, 2);
                        for (int l = 0; l < 32; l++)
                            xrow[b * 32 + l] =
                                fp16_to_fp32(h) * (float)(int8_t)p[(size_t)b * 36 + 4 + l];
                    }
                } else if (kt->vec_type == KERNEL_VEC_F16R || kt->vec_type == KERNEL_VEC_BF16R) {
                    memcpy(xrow, c.x + (size_t)r * c.xs, sizeof(float) * (size_t)n);
                } else {
                    kv->dequant(xrow, c.x + (size_t)r * c.xs, n);
                }
                for (int i = 0; i < ROWS; i++) {
                    kt->dequant(wrow, c.wdata + (size_t)i * c.w.row_bytes, n);
                    double s = 0, mag = 0;
                    for (int j = 0; j < n; j++) {
                        s += (double)wrow[j] * (double)xrow[j];
                        mag += fabs((double)wrow[j] * (double)xrow[j]);
                    }
                    float v = (isa == KERNEL_GENERIC ? ref : got)[r * ROWS + i];
                    /* Q4_1/Q5_1: the min term uses the activation block's fp16 sum, not the
                     * exact one: allow the fp16 rounding of that sum */
                    double tol =
                        (types[ti] == DTYPE_Q4_1 || types[ti] == DTYPE_Q5_1 ? 2e-3 : 1e-5) * mag +
                        1e-6;
                    if (fabs((double)v - s) > tol)
                        fail_msg("isa %d %s: out[%d][%d] = %.9g, float64 %.9g (tolerance %.3g)",
                                 isa, dtype_name(types[ti]), r, i, (double)v, s, tol);
                    if (isa != KERNEL_GENERIC) {
                        float g = ref[r * ROWS + i];
                        if (quant ? memcmp(&v, &g, 4) != 0
                                  : fabs((double)v - (double)g) > 1e-5 * mag + 1e-6)
                            fail_msg("%s: isa %d gives %.9g, generic %.9g at [%d][%d]",
                                     dtype_name(types[ti]), isa, (double)v, (double)g, r, i);
                    }
                }
            }
        }
        case_free(&c);
    }
    free(ref);
    free(got);
    free(wrow);
    free(xrow);
}

/* The largest k-quant values (Q4_K 15, Q5_K 31, Q6_K 63, the 6-bit scales and mins 63, the
 * Q6_K scales +127 and -128 in turn) against activations of +-127 (Q8_K quantizes a block's
 * largest magnitude to -127: all +1 gives -127 everywhere, +1 then -1s gives +127 after the
 * first): every ISA's product, one row and many, gives the generic bits and the float64
 * value of the dequantized operands. A kernel whose 16-bit partial sums held more products
 * than fit would saturate here. */
static void test_kquant_extremes(void **state)
{
    (void)state;
    static const uint32_t kt3[] = {DTYPE_Q4_K, DTYPE_Q5_K, DTYPE_Q6_K};
    int n = 1024;
    float *ref = malloc(sizeof(float) * XROWS * ROWS), *got = malloc(sizeof(float) * XROWS * ROWS);
    float *wrow = malloc(sizeof(float) * (size_t)n), *xrow = malloc(sizeof(float) * (size_t)n);
    for (size_t ti = 0; ti < 3; ti++) {
        uint32_t t = kt3[ti];
        case_t c;
        case_make(&c, t, n);
        size_t bs = dtype_info(t)->bytes;
        for (size_t b = 0; b + bs <= c.w.nbytes; b += bs) {
            uint8_t *p = c.wdata + b;
            if (t == DTYPE_Q6_K) {
                memset(p, 0xff, 192); /* ql, qh */
                for (int g = 0; g < 16; g++)
                    p[192 + g] = g & 1 ? 0x80 : 0x7f;
            } else {
                memset(p + 4, 0xff, bs - 4); /* scales, mins, (qh,) qs after d, dmin */
            }
        }
        for (int r = 0; r < XROWS; r++)
            for (int j = 0; j < n; j++)
                c.xf[(size_t)r * n + j] = r % 3 == 0 || j % 256 == 0 ? 1.0f
                                          : r % 3 == 1               ? -1.0f
                                          : (rnd() & 1)              ? 1.0f
                                                                     : -1.0f;
        for (int pass = 0; pass < 2; pass++) {
            int nrows = pass == 0 ? 1 : XROWS;
            FOR_EACH_ISA(isa)
            {
                case_quantize(&c);
                if (isa == KERNEL_GENERIC && pass == 0) {
                    /* the activations really are at the extremes */
                    const int8_t *q = (const int8_t *)c.x + 4;
                    assert_int_equal(q[0], -127);
                    assert_int_equal(((const int8_t *)c.x + c.xs + 4)[1], 127);
                }
                product(&c, isa == KERNEL_GENERIC ? ref : got, nrows, 16);
                const kernel_type_t *kt = kernels_for(t);
                for (int r = 0; r < nrows; r++) {
                    const uint8_t *p = c.x + (size_t)r * c.xs;
                    for (int b = 0; b < n / 256; b++) {
                        float d;
                        memcpy(&d, p + (size_t)b * 292, 4);
                        for (int l = 0; l < 256; l++)
                            xrow[b * 256 + l] = d * (float)(int8_t)p[(size_t)b * 292 + 4 + l];
                    }
                    for (int i = 0; i < ROWS; i++) {
                        kt->dequant(wrow, c.wdata + (size_t)i * c.w.row_bytes, n);
                        double s = 0, mag = 0;
                        for (int j = 0; j < n; j++) {
                            s += (double)wrow[j] * (double)xrow[j];
                            mag += fabs((double)wrow[j] * (double)xrow[j]);
                        }
                        float v = (isa == KERNEL_GENERIC ? ref : got)[r * ROWS + i],
                              g = ref[r * ROWS + i];
                        if (fabs((double)v - s) > 1e-5 * mag + 1e-6)
                            fail_msg("isa %d %s, %d rows: out[%d][%d] = %.9g, float64 %.9g", isa,
                                     dtype_name(t), nrows, r, i, (double)v, s);
                        if (memcmp(&v, &g, 4) != 0)
                            fail_msg("isa %d %s, %d rows: out[%d][%d] = %.9g, generic %.9g", isa,
                                     dtype_name(t), nrows, r, i, (double)v, (double)g);
                    }
                }
            }
        }
        case_free(&c);
    }
    free(ref);
    free(got);
    free(wrow);
    free(xrow);
}

/* The float dots' documented order: with `chains` 4 (F16, BF16) 8-block k into chain k % 4,
 * the chains summed lane by lane as (c0 + c1) + (c2 + c3); with 1 (F32, attention's scores)
 * every 8-block into the one chain; then a horizontal sum and the tail in order. The generic
 * kernels multiply then add and sum the lanes ((0+4)+(1+5))+((2+6)+(3+7)); the x86 ones fuse
 * (fmaf: one rounding) and sum them ((0+4)+(2+6))+((1+5)+(3+7)), as hsum_avx does. */
static float dot_order(const float *a, const float *b, int n, int fused, int chains)
{
    float c[4][8] = {{0}};
    int j = 0;
    for (int k = 0; j + 8 <= n; j += 8, k++)
        for (int l = 0; l < 8; l++) {
            float p = a[j + l] * b[j + l];
            float *acc = &c[k % chains][l];
            *acc = fused ? fmaf(a[j + l], b[j + l], *acc) : *acc + p;
        }
    float v[8];
    for (int l = 0; l < 8; l++)
        v[l] = chains == 1 ? c[0][l] : (c[0][l] + c[1][l]) + (c[2][l] + c[3][l]);
    float s = fused ? ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]))
                    : ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7]));
    for (; j < n; j++) {
        float p = a[j] * b[j];
        s += p;
    }
    return s;
}

static void test_float_chains(void **state)
{
    (void)state;
    /* below, at and around one 8-block, one 32-element round, and each count of leftover
     * 8-blocks (0..3) with and without a tail */
    static const int lens[] = {1,  7,  8,  9,  15, 16, 24,  31,   32,  33,
                               40, 47, 56, 63, 64, 65, 100, 1000, 2051};
    static const uint32_t ftypes[] = {DTYPE_F32, DTYPE_F16, DTYPE_BF16};
    float *all = malloc(sizeof(float) * XROWS * ROWS);
    FOR_EACH_ISA(isa)
    {
        for (size_t ti = 0; ti < 3; ti++)
            for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
                int n = lens[li];
                case_t c;
                case_make(&c, ftypes[ti], n);
                case_quantize(&c);
                const kernel_type_t *kt = kernels_for(ftypes[ti]);
                float *wrow = malloc(sizeof(float) * (size_t)n * ROWS);
                float *xrow = malloc(sizeof(float) * (size_t)n * XROWS);
                for (int i = 0; i < ROWS; i++)
                    kt->dequant(wrow + (size_t)i * n, c.wdata + (size_t)i * c.w.row_bytes, n);
                /* the activation rows are f32 (F32) or begin with their rounded values as f32 */
                for (int r = 0; r < XROWS; r++)
                    memcpy(xrow + (size_t)r * n, c.x + (size_t)r * c.xs, sizeof(float) * (size_t)n);
                for (int nrows = 1; nrows <= XROWS; nrows += 2) {
                    memset(all, 0xff, sizeof(float) * XROWS * ROWS);
                    product(&c, all, nrows, 17);
                    for (int r = 0; r < nrows; r++)
                        for (int i = 0; i < ROWS; i++) {
                            const float *wr = wrow + (size_t)i * n, *xr = xrow + (size_t)r * n;
                            float want = dot_order(wr, xr, n, isa != KERNEL_GENERIC,
                                                   ftypes[ti] == DTYPE_F32 ? 1 : 4);
                            float d = kt->dot(n, c.wdata + (size_t)i * c.w.row_bytes,
                                              c.x + (size_t)r * c.xs);
                            double s = 0, mag = 0;
                            for (int j = 0; j < n; j++) {
                                s += (double)wr[j] * (double)xr[j];
                                mag += fabs((double)wr[j] * (double)xr[j]);
                            }
                            if (memcmp(&d, &want, 4) || memcmp(&all[r * ROWS + i], &want, 4) ||
                                fabs((double)want - s) > 1e-5 * mag + 1e-6)
                                fail_msg("isa %d %s n %d, %d rows: out[%d][%d] = %.9g, dot %.9g, "
                                         "the documented order %.9g, float64 %.9g",
                                         isa, dtype_name(ftypes[ti]), n, nrows, r, i,
                                         (double)all[r * ROWS + i], (double)d, (double)want, s);
                        }
                }
                if (ftypes[ti] == DTYPE_F32) {
                    /* attention's scores: F32's one-chain order at every length (scale 1) */
                    for (int r = 0; r < XROWS; r++)
                        for (int i = 0; i < ROWS; i++) {
                            float want = dot_order(wrow + (size_t)i * n, xrow + (size_t)r * n, n,
                                                   isa != KERNEL_GENERIC, 1);
                            float d;
                            att_scores(&d, wrow + (size_t)i * n, xrow + (size_t)r * n, 0, 1, n,
                                       1.0f);
                            if (memcmp(&d, &want, 4))
                                fail_msg("isa %d n %d: att_scores %.9g, the documented order "
                                         "%.9g at [%d][%d]",
                                         isa, n, (double)d, (double)want, r, i);
                        }
                }
                free(wrow);
                free(xrow);
                case_free(&c);
            }
    }
    free(all);
}

/* Rows longer than the AVX-512 Q8_0/Q4_0 driver converts the activation scales of at once
 * (32768 elements) go by the dot: the same bits, every row count, nothing past them written. */
/* KERNEL_VEC_F16R / BF16R hold exactly the values of the f16 / bf16 rows ggml makes (whose
 * rounding engine_quants_ref checks against numpy and gguf-py), on every ISA: random values
 * over the whole f32 range, halfway cases, signed zeros, subnormals, overflow and NaN. */
static void test_rounded_activations(void **state)
{
    (void)state;
    enum { N = 4096 };
    float *x = malloc(sizeof(float) * N), *got = malloc(6 * N);
    uint16_t *h = malloc(sizeof(uint16_t) * N);
    for (int i = 0; i < N; i++) {
        uint32_t u = (uint32_t)rnd();
        if (i % 4 == 1) u = (u & 0x8fffe000u) | 0x1000u; /* f16 halfway, within f16's range */
        if (i % 4 == 2) u = (u & 0xffff0000u) | 0x8000u; /* bf16 halfway */
        memcpy(&x[i], &u, 4);
    }
    x[0] = 0.0f, x[1] = -0.0f, x[2] = 65520.0f, x[3] = 1e-7f, x[4] = -1e-30f, x[5] = NAN;
    FOR_EACH_ISA(isa)
    {
        for (int bf = 0; bf < 2; bf++) {
            uint32_t vec = bf ? KERNEL_VEC_BF16R : KERNEL_VEC_F16R;
            assert_int_equal(kernels_for(bf ? DTYPE_BF16 : DTYPE_F16)->vec_type, vec);
            assert_int_equal(kernels_act_row_bytes(vec, N), 6 * N);
            /* what the CPU backend sizes its activation buffers by */
            assert_int_equal(kernels_act_row_bytes_max(N), 6 * N);
            kernels_quantize_row(vec, got, x, N);
            kernels_quantize_row(bf ? DTYPE_BF16 : DTYPE_F16, h, x, N);
            /* the 16-bit half: the very row of the 16-bit format */
            assert_memory_equal((const char *)got + 4 * N, h, 2 * N);
            for (int i = 0; i < N; i++) {
                float want = bf ? bf16_to_fp32(h[i]) : fp16_to_fp32(h[i]);
                if (memcmp(&want, &got[i], 4) && !(isnan(want) && isnan(got[i])))
                    fail_msg("isa %d %s: x[%d] = %.9g rounds to %.9g, the 16-bit row has %.9g", isa,
                             bf ? "bf16" : "f16", i, (double)x[i], (double)got[i], (double)want);
            }
            /* odd lengths pad the row to whole f32 */
            assert_int_equal(kernels_act_row_bytes(vec, 7), 4 * 7 + 16);
        }
    }
    free(x);
    free(got);
    free(h);
}

/* Every activation format is the generic quantizer's bytes on every ISA (the AVX-512 one is
 * vector code): random rows at several scales, and blocks built to hit what a vector rewrite
 * gets wrong: all zero, products on a rounding tie, the largest magnitude twice with both
 * signs (Q8_K takes the first), inf, NaN, subnormals, a row length that leaves a tail. The
 * 16-bit conversions also over a sweep of all float bit patterns. */
static void test_quantize_isas(void **state)
{
    (void)state;
    enum { N = 4096, TAIL = 4096 - 9 };
    static const uint32_t vecs[] = {DTYPE_Q8_0, DTYPE_Q8_1,      DTYPE_Q8_K,      DTYPE_F16,
                                    DTYPE_BF16, KERNEL_VEC_F16R, KERNEL_VEC_BF16R};
    float *x = malloc(sizeof(float) * N);
    char *want = malloc(6 * N + 64), *got = malloc(6 * N + 64);
    for (int i = 0; i < N; i++)
        x[i] = unit() * (i < 1024 ? 1.0f : i < 2048 ? 1e-3f : i < 3072 ? 300.0f : 1e-38f);
    for (int j = 0; j < 32; j++) {
        x[j] = 0.0f;                                          /* block 0: zeros */
        x[32 + j] = j == 0 ? 127.0f : (float)(j - 16) + 0.5f; /* block 1: ties at id = 1 */
        x[64 + j] = unit();                                   /* block 2: -m first, then m */
    }
    x[64 + 3] = -2.0f, x[64 + 20] = 2.0f;
    x[96 + 5] = INFINITY, x[128 + 7] = NAN, x[160 + 1] = -INFINITY;
    x[256 + 9] = 5.0f, x[256 + 200] = -5.0f; /* a Q8_K block: +m first */
    x[512 + 9] = -7.0f, x[512 + 100] = 7.0f; /* and -m first */
    x[768 + 2] = 6.0f, x[768 + 7] = -6.0f;   /* both within one vector */
    for (size_t v = 0; v < sizeof vecs / sizeof vecs[0]; v++)
        for (int len = N; len >= TAIL; len -= N - TAIL) {
            int qk = vecs[v] == DTYPE_Q8_K                            ? 256
                     : vecs[v] == DTYPE_Q8_0 || vecs[v] == DTYPE_Q8_1 ? 32
                                                                      : 1;
            int n = len / qk * qk;
            size_t bytes = kernels_act_row_bytes(vecs[v], n);
            assert_int_equal(kernels_force(KERNEL_GENERIC), 0);
            memset(want, 0, bytes); /* the F16R/BF16R padding is not written */
            kernels_quantize_row(vecs[v], want, x, n);
            FOR_EACH_ISA(isa)
            {
                memset(got, 0, bytes);
                kernels_quantize_row(vecs[v], got, x, n);
                for (size_t b = 0; b < bytes; b++)
                    if (want[b] != got[b])
                        fail_msg("isa %s, format %u, %d values: byte %zu is %d, generic %d",
                                 kernels_isa_name(isa), vecs[v], n, b, got[b], want[b]);
            }
        }
    /* every 16-bit conversion of a sweep over all bit patterns (a prime stride), 4096 at a time */
    for (uint64_t u0 = 0; u0 < (1ull << 32); u0 += 4096ull * 1021) {
        for (int i = 0; i < N; i++) {
            uint32_t u = (uint32_t)(u0 + (uint64_t)i * 1021);
            memcpy(&x[i], &u, 4);
        }
        for (int bf = 0; bf < 2; bf++) {
            uint32_t vec = bf ? DTYPE_BF16 : DTYPE_F16;
            assert_int_equal(kernels_force(KERNEL_GENERIC), 0);
            kernels_quantize_row(vec, want, x, N);
            FOR_EACH_ISA(isa)
            {
                kernels_quantize_row(vec, got, x, N);
                if (memcmp(want, got, 2 * N)) {
                    for (int i = 0; i < N; i++)
                        if (memcmp(want + 2 * i, got + 2 * i, 2))
                            fail_msg("isa %s, %s of %#x differs from generic",
                                     kernels_isa_name(isa), bf ? "bf16" : "f16",
                                     (unsigned)(u0 + (uint64_t)i * 1021));
                }
            }
        }
    }
    free(x);
    free(want);
    free(got);
}

static void test_long_rows(void **state)
{
    (void)state;
    static const uint32_t ltypes[] = {DTYPE_Q8_0, DTYPE_Q4_0};
    static const int lens[] = {32768, 32768 + 32};
    float *all = malloc(sizeof(float) * XROWS * ROWS);
    FOR_EACH_ISA(isa)
    {
        for (size_t ti = 0; ti < sizeof ltypes / sizeof ltypes[0]; ti++)
            for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++) {
                case_t c;
                case_make(&c, ltypes[ti], lens[li]);
                case_quantize(&c);
                const kernel_type_t *kt = kernels_for(ltypes[ti]);
                for (int nrows = 2; nrows <= 11; nrows += 9) {
                    memset(all, 0xff, sizeof(float) * XROWS * ROWS);
                    product(&c, all, nrows, 17);
                    for (int r = 0; r < XROWS; r++)
                        for (int i = 0; i < ROWS; i++) {
                            float d = kt->dot(c.n, c.wdata + (size_t)i * c.w.row_bytes,
                                              c.x + (size_t)r * c.xs);
                            uint32_t u;
                            memcpy(&u, &all[r * ROWS + i], 4);
                            if (r < nrows ? memcmp(&d, &all[r * ROWS + i], 4) != 0
                                          : u != 0xffffffffu)
                                fail_msg("isa %d %s n %d, %d rows: out[%d][%d] = %.9g, dot %.9g",
                                         isa, dtype_name(ltypes[ti]), c.n, nrows, r, i,
                                         (double)all[r * ROWS + i], (double)d);
                        }
                }
                case_free(&c);
            }
    }
    free(all);
}

static void test_attention(void **state)
{
    (void)state;
    /* head sizes around the 8- and 32-element steps of the vector paths; positions from one
     * to more than a register tile's reuse */
    static const int heads[] = {1, 5, 8, 31, 32, 40, 48, 64, 71, 96, 128};
    static const int positions[] = {1, 2, 7, 33, 300};
    enum { KSTRIDE = 136, MAXPOS = 300 };
    float *k = malloc(sizeof(float) * KSTRIDE * MAXPOS),
          *v = malloc(sizeof(float) * KSTRIDE * MAXPOS);
    float q[KSTRIDE], att[MAXPOS], got[MAXPOS], out[KSTRIDE];
    for (int i = 0; i < KSTRIDE * MAXPOS; i++) {
        k[i] = unit();
        v[i] = unit();
    }
    for (int i = 0; i < KSTRIDE; i++)
        q[i] = unit();
    FOR_EACH_ISA(isa)
    {
        for (size_t hi = 0; hi < sizeof heads / sizeof heads[0]; hi++)
            for (size_t pi = 0; pi < sizeof positions / sizeof positions[0]; pi++) {
                int n = heads[hi], np = positions[pi];
                float scale = 1.0f / sqrtf((float)n);
                const float *kh = k + 3, *vh = v + 5; /* a head that starts mid-row */
                att_scores(got, q, kh, KSTRIDE, np, n, scale);
                for (int p = 0; p < np; p++) {
                    float want =
                        dot_order(q, kh + (size_t)p * KSTRIDE, n, isa != KERNEL_GENERIC, 1) * scale;
                    if (memcmp(&got[p], &want, 4))
                        fail_msg("isa %d att_scores n %d npos %d: [%d] = %.9g, want %.9g", isa, n,
                                 np, p, (double)got[p], (double)want);
                    att[p] = (float)(p % 5) * 0.25f - 0.3f;
                }
                float inv = 1.0f / 3.0f;
                att_mix_group(out, 0, att, 0, &inv, 1, vh, KSTRIDE, np, n);
                for (int i = 0; i < n; i++) {
                    float want = 0.0f;
                    for (int p = 0; p < np; p++) {
                        float a = att[p] * inv;
                        float t = a * vh[(size_t)p * KSTRIDE + i];
                        want += t;
                    }
                    if (memcmp(&out[i], &want, 4))
                        fail_msg("isa %d att_mix_group n %d npos %d: out[%d] = %.9g, want %.9g",
                                 isa, n, np, i, (double)out[i], (double)want);
                }
            }
    }
    free(k);
    free(v);
}

/* Grouped-query attention: g heads over one key and value sequence, a block of positions at a
 * time (blocks of 24 positions at this stride, so the counts below cross zero, one and many
 * block boundaries), give each head's att_scores bits and its one-head mix's on every ISA. */
static void test_attention_group(void **state)
{
    (void)state;
    static const int heads[] = {8, 40, 64, 128};
    static const int positions[] = {1, 23, 24, 25, 49, 300};
    static const int groups[] = {1, 3, 4};
    enum { KSTRIDE = 136, MAXPOS = 300, G = 4 };
    float *k = malloc(sizeof(float) * KSTRIDE * MAXPOS),
          *v = malloc(sizeof(float) * KSTRIDE * MAXPOS);
    float q[G * KSTRIDE], att[G * MAXPOS], want[MAXPOS], out[G * KSTRIDE], one[KSTRIDE];
    for (int i = 0; i < KSTRIDE * MAXPOS; i++) {
        k[i] = unit();
        v[i] = unit();
    }
    for (int i = 0; i < G * KSTRIDE; i++)
        q[i] = unit();
    FOR_EACH_ISA(isa)
    {
        for (size_t hi = 0; hi < sizeof heads / sizeof heads[0]; hi++)
            for (size_t pi = 0; pi < sizeof positions / sizeof positions[0]; pi++)
                for (size_t gi = 0; gi < sizeof groups / sizeof groups[0]; gi++) {
                    int n = heads[hi], np = positions[pi], g = groups[gi];
                    float scale = 1.0f / sqrtf((float)n), inv[G];
                    att_scores_group(att, MAXPOS, q, KSTRIDE, g, k + 3, KSTRIDE, np, n, scale);
                    for (int j = 0; j < g; j++) {
                        att_scores(want, q + (size_t)j * KSTRIDE, k + 3, KSTRIDE, np, n, scale);
                        if (memcmp(att + (size_t)j * MAXPOS, want, sizeof(float) * (size_t)np))
                            fail_msg("isa %d att_scores_group n %d npos %d g %d: head %d differs",
                                     isa, n, np, g, j);
                        inv[j] = 1.0f / (float)(j + 3);
                    }
                    att_mix_group(out, KSTRIDE, att, MAXPOS, inv, g, v + 5, KSTRIDE, np, n);
                    for (int j = 0; j < g; j++) {
                        att_mix_group(one, 0, att + (size_t)j * MAXPOS, 0, &inv[j], 1, v + 5,
                                      KSTRIDE, np, n);
                        if (memcmp(out + (size_t)j * KSTRIDE, one, sizeof(float) * (size_t)n))
                            fail_msg("isa %d att_mix_group n %d npos %d g %d: head %d differs", isa,
                                     n, np, g, j);
                    }
                }
    }
    free(k);
    free(v);
}

/* An F16 KV cache's key or value: mostly in [-1, 1], some large (up to 65504), some subnormal
 * halves (and +-0), some over many magnitudes */
static uint16_t kv_half(void)
{
    switch (rnd() % 16) {
    case 0:
        return (uint16_t)(rnd() & 0x83ffu); /* subnormal or zero, either sign */
    case 1:
        return fp32_to_fp16(unit() * 65504.0f);
    case 2:
        return fp32_to_fp16(ldexpf(unit(), (int)(rnd() % 30) - 14));
    default:
        return fp32_to_fp16(unit());
    }
}

/* Attention over an F16 KV cache: att_scores_group_f16 and att_mix_group_f16 give, on every ISA,
 * the bits att_scores_group and att_mix_group give on the halves' f32 values (and those are
 * the documented orders, checked here too: F32's dot chain times the scale, and each mix
 * element summed over the positions in order). Head sizes below, at and past the 8- and
 * 32-element steps (5 and 37: the element tail); positions around one 8-position tile and
 * across blocks (a block is 4096 / stride positions of f32 rows, 8192 / stride of f16 rows,
 * rounded down to 8: 1100 positions cross at least one f16 block boundary for every row but
 * the 5-wide at stride 5, so a mix chain must go on across it); key strides of n and n + 3;
 * large and subnormal halves; gaps between the heads' rows of att and out, which neither
 * writes. */
static void test_attention_f16(void **state)
{
    (void)state;
    static const int heads[] = {5, 8, 37, 40, 64, 128};
    static const int positions[] = {1, 7, 8, 9, 23, 300, 1100};
    static const int groups[] = {1, 3, 4, 7};
    enum { MAXN = 128, MAXPOS = 1100, G = 7, QSTRIDE = MAXN + 5, ASTRIDE = MAXPOS + 5 };
    enum { OSTRIDE = MAXN + 7, KOFF = 3, KSIZE = KOFF + (MAXN + 3) * MAXPOS };
    uint16_t *kh = malloc(sizeof(uint16_t) * KSIZE), *vh = malloc(sizeof(uint16_t) * KSIZE);
    float *kf = malloc(sizeof(float) * KSIZE), *vf = malloc(sizeof(float) * KSIZE);
    float *q = malloc(sizeof(float) * G * QSTRIDE), *w = malloc(sizeof(float) * G * ASTRIDE);
    float *att = malloc(sizeof(float) * G * ASTRIDE), *want = malloc(sizeof(float) * G * ASTRIDE);
    float *out = malloc(sizeof(float) * G * OSTRIDE), *wout = malloc(sizeof(float) * G * OSTRIDE);
    float inv[G];
    assert_non_null(kh && vh && kf && vf && q && w && att && want && out && wout);
    for (int i = 0; i < KSIZE; i++) {
        kh[i] = kv_half();
        vh[i] = kv_half();
        kf[i] = fp16_to_fp32(kh[i]);
        vf[i] = fp16_to_fp32(vh[i]);
    }
    for (int i = 0; i < G * QSTRIDE; i++)
        q[i] = unit();
    for (int i = 0; i < G * ASTRIDE; i++)
        w[i] = unit() * 0.5f + 0.5f;
    for (int j = 0; j < G; j++)
        inv[j] = 1.0f / (float)(j + 3);
    FOR_EACH_ISA(isa)
    {
        for (size_t hi = 0; hi < sizeof heads / sizeof heads[0]; hi++)
            for (size_t pi = 0; pi < sizeof positions / sizeof positions[0]; pi++)
                for (size_t gi = 0; gi < sizeof groups / sizeof groups[0]; gi++)
                    for (int sx = 0; sx <= 3; sx += 3) {
                        int n = heads[hi], np = positions[pi], g = groups[gi];
                        size_t ks = (size_t)(n + sx);
                        float scale = 1.0f / sqrtf((float)n);
                        memset(att, 0x5a, sizeof(float) * G * ASTRIDE);
                        memset(want, 0x5a, sizeof(float) * G * ASTRIDE);
                        att_scores_group_f16(att, ASTRIDE, q, QSTRIDE, g, kh + KOFF, ks, np, n,
                                             scale);
                        att_scores_group(want, ASTRIDE, q, QSTRIDE, g, kf + KOFF, ks, np, n, scale);
                        if (memcmp(att, want, sizeof(float) * G * ASTRIDE))
                            fail_msg("isa %d att_scores_group_f16 n %d npos %d g %d kstride %zu: "
                                     "not att_scores_group's bits",
                                     isa, n, np, g, ks);
                        for (int j = 0; j < g; j++)
                            for (int p = 0; p < np; p++) {
                                float ref =
                                    dot_order(q + (size_t)j * QSTRIDE, kf + KOFF + (size_t)p * ks,
                                              n, isa != KERNEL_GENERIC, 1) *
                                    scale;
                                if (memcmp(&att[(size_t)j * ASTRIDE + p], &ref, 4))
                                    fail_msg("isa %d att_scores_group_f16 n %d npos %d g %d "
                                             "kstride %zu: head %d [%d] = %.9g, want %.9g",
                                             isa, n, np, g, ks, j, p,
                                             (double)att[(size_t)j * ASTRIDE + p], (double)ref);
                            }

                        memset(out, 0x5a, sizeof(float) * G * OSTRIDE);
                        memset(wout, 0x5a, sizeof(float) * G * OSTRIDE);
                        att_mix_group_f16(out, OSTRIDE, w, ASTRIDE, inv, g, vh + KOFF, ks, np, n);
                        att_mix_group(wout, OSTRIDE, w, ASTRIDE, inv, g, vf + KOFF, ks, np, n);
                        if (memcmp(out, wout, sizeof(float) * G * OSTRIDE))
                            fail_msg("isa %d att_mix_group_f16 n %d npos %d g %d vstride %zu: "
                                     "not att_mix_group's bits",
                                     isa, n, np, g, ks);
                        for (int j = 0; j < g; j++)
                            for (int i = 0; i < n; i++) {
                                float ref = 0.0f;
                                for (int p = 0; p < np; p++) {
                                    float a = w[(size_t)j * ASTRIDE + p] * inv[j];
                                    float t = a * vf[KOFF + (size_t)p * ks + (size_t)i];
                                    ref += t;
                                }
                                if (memcmp(&out[(size_t)j * OSTRIDE + i], &ref, 4))
                                    fail_msg("isa %d att_mix_group_f16 n %d npos %d g %d vstride "
                                             "%zu: head %d out[%d] = %.9g, want %.9g",
                                             isa, n, np, g, ks, j, i,
                                             (double)out[(size_t)j * OSTRIDE + i], (double)ref);
                            }
                    }
    }
    free(kh);
    free(vh);
    free(kf);
    free(vf);
    free(q);
    free(w);
    free(att);
    free(want);
    free(out);
    free(wout);
}

/* floats in one order as integers: two floats' distance in ULPs (inf is one past FLT_MAX) */
static int64_t ordered(float f)
{
    int32_t i;
    memcpy(&i, &f, sizeof i);
    return i < 0 ? -(int64_t)(i & 0x7fffffff) : (int64_t)i;
}

static float from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* the edge cases: around e's overflow (88.72) and underflow (-103.97) thresholds and where its
 * results turn subnormal (-87.34), zeros, infinities, NaNs (quiet, signaling, negative, with a
 * payload), the clamp bounds, huge and tiny magnitudes; then random bit patterns and random
 * values in [-110, 95). Returns the count written (n >= 8000). */
static int exp_inputs(float *x, int n)
{
    static const float centers[] = {88.7228394f, -103.972076f, -87.3365479f, -150.0f,
                                    100.0f,      0.0f,         1.0f,         -1.0f};
    int k = 0;
    for (size_t c = 0; c < sizeof centers / sizeof centers[0]; c++) {
        float up = centers[c], down = centers[c];
        for (int j = 0; j < 300; j++) {
            x[k++] = up;
            x[k++] = down;
            up = nextafterf(up, INFINITY);
            down = nextafterf(down, -INFINITY);
        }
    }
    static const uint32_t specials[] = {0x00000000u, 0x80000000u, 0x7f800000u, 0xff800000u,
                                        0x7fc00000u, 0xffc00000u, 0x7fa12345u, 0xff812345u,
                                        0x7f7fffffu, 0xff7fffffu, 0x00000001u, 0x80000001u,
                                        0x00800000u, 0x33000000u, 0xb3000000u, 0xb2ffffffu};
    for (size_t j = 0; j < sizeof specials / sizeof specials[0]; j++)
        x[k++] = from_bits(specials[j]);
    for (; k < n; k++)
        x[k] = k % 2 ? from_bits((uint32_t)rnd())
                     : (float)((double)(rnd() >> 11) / 9007199254740992.0 * 205.0 - 110.0);
    return n;
}

/* The F16 cache's writer: kernels_to_f16 gives fp32_to_fp16's bits on every ISA, for the
 * overflow threshold (65520 rounds to inf, the float below it to 65504), infinities, NaNs
 * (quiet, signaling, negative, with payloads), zeros, subnormal halves and their ties (2^-25
 * to 0, 3 * 2^-25 to 2 * 2^-24), the smallest normal, ties to even between normals, f32
 * subnormals and extremes, random bit patterns and random values over many magnitudes; each
 * edge value at every place of short rows (1, 7, 8, 9, 37 values: the 8-wide steps and the
 * tail), nothing written past n. fp32_to_fp16 itself is pinned on some of them. */
static void test_to_f16(void **state)
{
    (void)state;
    static const uint32_t specials[] = {0x00000000u,
                                        0x80000000u,
                                        0x477fe000u /* 65504 */,
                                        0xc77fe000u,
                                        0x477fefffu /* 65519.996 */,
                                        0x477ff000u /* 65520 */,
                                        0xc77ff000u,
                                        0x7f800000u,
                                        0xff800000u,
                                        0x7fc00000u,
                                        0xffc00000u,
                                        0x7f800001u,
                                        0x7fa12345u,
                                        0xff812345u,
                                        0x7fbfffffu,
                                        0xffffffffu,
                                        0x33800000u /* 2^-24 */,
                                        0x33000000u /* 2^-25: tie to 0 */,
                                        0xb3000000u,
                                        0x33000001u,
                                        0x32ffffffu,
                                        0x33c00000u /* 3 * 2^-25: tie to 2 * 2^-24 */,
                                        0x34200000u /* 5 * 2^-25: tie to 2 * 2^-24 */,
                                        0x38800000u /* 2^-14 */,
                                        0x387fffffu,
                                        0x387fc000u /* 2^-14 - 2^-24 */,
                                        0x387fe000u /* tie to 2^-14 */,
                                        0x3f801000u /* 1 + 2^-11: tie to 1 */,
                                        0x3f803000u /* 1 + 3 * 2^-11: tie up */,
                                        0x3f801001u,
                                        0x3f800fffu,
                                        0x44fff000u /* 2047.5 */,
                                        0x00000001u,
                                        0x807fffffu,
                                        0x00800000u,
                                        0x7f7fffffu,
                                        0xff7fffffu,
                                        0x3f800000u,
                                        0xbf800000u};
    static const struct {
        uint32_t f;
        uint16_t h;
    } pinned[] = {{0x477fefffu, 0x7bffu}, {0x477ff000u, 0x7c00u}, {0xc77ff000u, 0xfc00u},
                  {0x33000000u, 0x0000u}, {0x33000001u, 0x0001u}, {0x33c00000u, 0x0002u},
                  {0x34200000u, 0x0002u}, {0x387fe000u, 0x0400u}, {0x3f801000u, 0x3c00u},
                  {0x3f803000u, 0x3c02u}, {0x44fff000u, 0x6800u}, {0x7fa12345u, 0x7f09u},
                  {0x7f800001u, 0x7e00u}, {0x80000000u, 0x8000u}};
    for (size_t i = 0; i < sizeof pinned / sizeof pinned[0]; i++)
        if (fp32_to_fp16(from_bits(pinned[i].f)) != pinned[i].h)
            fail_msg("fp32_to_fp16(0x%08x) = 0x%04x, want 0x%04x", (unsigned)pinned[i].f,
                     (unsigned)fp32_to_fp16(from_bits(pinned[i].f)), (unsigned)pinned[i].h);
    enum { NS = sizeof specials / sizeof specials[0], N = 4096, PAD = 8 };
    static const int lens[] = {1, 7, 8, 9, 37};
    float *x = malloc(sizeof(float) * N);
    uint16_t *got = malloc(sizeof(uint16_t) * (N + PAD)), *want = malloc(sizeof(uint16_t) * N);
    assert_non_null(x && got && want);
    for (int i = 0; i < N; i++) {
        if (i < NS)
            x[i] = from_bits(specials[i]);
        else if (i % 3 == 0)
            x[i] = from_bits((uint32_t)rnd());
        else
            x[i] = ldexpf(unit(), (int)(rnd() % 48) - 30);
        want[i] = fp32_to_fp16(x[i]);
    }
    FOR_EACH_ISA(isa)
    {
        for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
            for (int off = 0; off < NS; off++) {
                int n = lens[li];
                memset(got, 0xa5, sizeof(uint16_t) * (size_t)(n + PAD));
                kernels_to_f16(got, x + off, n);
                for (int i = 0; i < n + PAD; i++)
                    if (got[i] != (i < n ? want[off + i] : 0xa5a5u))
                        fail_msg("isa %d kernels_to_f16 n %d of x + %d: [%d] = 0x%04x, want "
                                 "0x%04x (x = %a)",
                                 isa, n, off, i, (unsigned)got[i],
                                 (unsigned)(i < n ? want[off + i] : 0xa5a5u),
                                 i < n ? (double)x[off + i] : 0.0);
            }
        for (int n = N - 9; n <= N; n++) {
            got[n] = 0xa5a5u;
            kernels_to_f16(got, x, n);
            if (memcmp(got, want, sizeof(uint16_t) * (size_t)n) || got[n] != 0xa5a5u)
                fail_msg("isa %d kernels_to_f16 n %d: not fp32_to_fp16's bits", isa, n);
        }
    }
    free(x);
    free(got);
    free(want);
}

static void test_exp_isas(void **state)
{
    (void)state;
    enum { N = 12003 }; /* no multiple of 8 or 16 */
    float *x = malloc(sizeof(float) * N), *u = malloc(sizeof(float) * N),
          *want = malloc(sizeof(float) * N), *got = malloc(sizeof(float) * N);
    exp_inputs(x, N);
    for (int i = 0; i < N; i++)
        u[i] = unit() * 4.0f;
    u[7] = INFINITY;
    u[8] = NAN;
    /* e(x) = exp_sub with m = 0, s = 1; then shifted and scaled as a softmax over a vocabulary
     * with temperature 0.7; then SwiGLU */
    static const float ms[][2] = {{0.0f, 1.0f}, {3.25f, 1.0f / 0.7f}, {-1.5f, 0.5f}};
    FOR_EACH_ISA(isa)
    {
        for (size_t mi = 0; mi < sizeof ms / sizeof ms[0]; mi++) {
            float m = ms[mi][0], s = ms[mi][1];
            for (int i = 0; i < N; i++)
                want[i] = kernels_exp((x[i] - m) * s);
            /* the whole array, then pieces of every length up to 40 */
            memcpy(got, x, sizeof(float) * N);
            kernels_exp_sub(got, N, m, s);
            for (int i = 0; i < N; i++)
                if (memcmp(&got[i], &want[i], 4))
                    fail_msg("isa %d exp_sub m %g s %g: e(%a) = %a, want %a", isa, (double)m,
                             (double)s, (double)x[i], (double)got[i], (double)want[i]);
            memcpy(got, x, sizeof(float) * N);
            for (int off = 0, len = 1; off + len <= N && len <= 40; off += len, len++)
                kernels_exp_sub(got + off, len, m, s);
            for (int i = 0; i < 800; i++)
                if (memcmp(&got[i], &want[i], 4))
                    fail_msg("isa %d exp_sub pieces: [%d] = %a, want %a", isa, i, (double)got[i],
                             (double)want[i]);
        }
        for (int i = 0; i < N; i++) {
            float v = x[i];
            want[i] = v / (1.0f + kernels_exp(-v)) * u[i];
        }
        memcpy(got, x, sizeof(float) * N);
        kernels_silu_mul(got, u, N);
        for (int off = 0, len = 1; off + len <= 800 && len <= 40; off += len, len++) {
            memcpy(got + off, x + off, sizeof(float) * (size_t)len);
            kernels_silu_mul(got + off, u + off, len);
        }
        for (int i = 0; i < N; i++)
            if (memcmp(&got[i], &want[i], 4))
                fail_msg("isa %d silu_mul: g %a u %a: %a, want %a", isa, (double)x[i], (double)u[i],
                         (double)got[i], (double)want[i]);
        /* the largest at every position of short arrays, and in a long one's tail */
        for (int n = 1; n <= 40; n++)
            for (int at = 0; at < n; at++) {
                float a[40];
                for (int i = 0; i < n; i++)
                    a[i] = unit() * 100.0f;
                a[at] = 100.5f;
                assert_true(kernels_max(a, n) == 100.5f);
            }
        for (int i = 0; i < N; i++)
            got[i] = unit() - 3.0f;
        got[N - 2] = -1.0f;
        assert_true(kernels_max(got, N) == -1.0f);
        got[5] = -0.5f;
        assert_true(kernels_max(got, N) == -0.5f);
    }
    free(x);
    free(u);
    free(want);
    free(got);
}

/* one float: within 1 ULP of exp() in double rounded to float; counts those not that rounding */
static void exp_check(float x, uint64_t *checked, uint64_t *off)
{
    float got = kernels_exp(x), want = (float)exp((double)x);
    if (isnan(x)) {
        if (!isnan(got)) fail_msg("e(%a) = %a, want NaN", (double)x, (double)got);
        return;
    }
    ++*checked;
    if (memcmp(&got, &want, 4) == 0) return;
    ++*off;
    if (llabs(ordered(got) - ordered(want)) > 1)
        fail_msg("e(%a) = %a, exp %a: more than 1 ULP apart", (double)x, (double)got, (double)want);
}

/* kernels_exp against exp() in double, rounded to float: the edge cases and random values of
 * exp_inputs, every 1021st float (all 2^32 in steps of 1021: 4.2 million, every binade) and 2^15
 * values in each slot of the table: within 1 ULP, and that rounding exactly for all but a few
 * in 10^5 overall and 4 in a slot (measured: 593 of all 2^32 floats, ~1 in 10^6 of those in
 * range). Without the polynomial's last term ~1 in 3000 are not; with a table entry off by 2^-32
 * (its 8th hex digit), ~60 in its slot are not (off by 2^-36, 3 to 5: not seen). */
static void test_exp_accuracy(void **state)
{
    (void)state;
    assert_true(kernels_exp(0.0f) == 1.0f && kernels_exp(-0.0f) == 1.0f);
    assert_true(kernels_exp(INFINITY) == INFINITY && kernels_exp(88.73f) == INFINITY);
    assert_true(kernels_exp(88.72f) < INFINITY && kernels_exp(FLT_MAX) == INFINITY);
    assert_true(kernels_exp(-INFINITY) == 0.0f && kernels_exp(-104.0f) == 0.0f);
    assert_true(!signbit(kernels_exp(-INFINITY)) && kernels_exp(-103.9f) > 0.0f);
    assert_true(isnan(kernels_exp(NAN)) && isnan(kernels_exp(-NAN)));
    float sub = kernels_exp(-100.0f); /* 3.7e-44: subnormal */
    assert_true(sub > 0.0f && sub < FLT_MIN);
    enum { NE = 8000 };
    float *x = malloc(sizeof(float) * NE);
    exp_inputs(x, NE);
    uint64_t checked = 0, off = 0;
    for (int i = 0; i < NE; i++)
        exp_check(x[i], &checked, &off);
    for (uint64_t b = 0; b <= 0xffffffffu; b += 1021)
        exp_check(from_bits((uint32_t)b), &checked, &off);
    /* 2^15 values in each slot of the table: (32 j + i + d) ln2/32, d in [-0.4, 0.4], results
     * from 2^-126 to 2^127 */
    uint64_t worst = 0;
    for (int i = 0; i < 32; i++) {
        uint64_t slot = 0;
        for (int t = 0; t < 32768; t++) {
            double j = (double)(rnd() % 252) - 125.0, d = unit() * 0.4;
            exp_check((float)((32.0 * j + i + d) * 0.693147180559945309 / 32.0), &checked, &slot);
        }
        off += slot;
        worst = slot > worst ? slot : worst;
    }
    free(x);
    print_message("exp: worst table slot %llu of 32768 not exp() rounded\n",
                  (unsigned long long)worst);
    assert_true(worst <= 4);
    print_message("exp: %llu of %llu not exp() rounded\n", (unsigned long long)off,
                  (unsigned long long)checked);
    assert_true(checked > 5000000);
    assert_true(off * 100000 < checked * 3);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_batch_invariance), cmocka_unit_test(test_isas_and_reference),
        cmocka_unit_test(test_kquant_extremes),  cmocka_unit_test(test_float_chains),
        cmocka_unit_test(test_long_rows),        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_attention_group),  cmocka_unit_test(test_rounded_activations),
        cmocka_unit_test(test_quantize_isas),    cmocka_unit_test(test_exp_isas),
        cmocka_unit_test(test_exp_accuracy),     cmocka_unit_test(test_attention_f16),
        cmocka_unit_test(test_to_f16),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
