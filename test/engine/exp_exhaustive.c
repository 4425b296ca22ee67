/*
 * exp_exhaustive - kernels_exp over all 2^32 floats: every ISA this CPU has gives the generic
 * path's bits (through kernels_exp_sub with m = 0, s = 1, which is e(x) itself), and the result
 * is within 1 ULP of exp((double)x) rounded to float. Prints the count of floats where the
 * result is not that rounding, the largest distance in ULPs, and exits 1 on a failure. Too slow
 * for the sanitized suite (a minute or two in a Release build); test_kernels samples densely.
 *   exp_exhaustive [first_bits last_bits]   (a sub-range of the bit patterns, hex)
 */
#include "kernels.h"

#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* floats in one order as integers: the distance of two finite (or infinite) floats in ULPs */
static int64_t ordered(float f)
{
    int32_t i;
    memcpy(&i, &f, sizeof i);
    return i < 0 ? -(int64_t)(i & 0x7fffffff) : (int64_t)i;
}

enum { BLOCK = 1 << 16 };

int main(int argc, char **argv)
{
    uint64_t first = 0, last = 0xffffffffu;
    if (argc == 3) {
        first = strtoull(argv[1], NULL, 16);
        last = strtoull(argv[2], NULL, 16);
    }
    kernel_isa_t isas[KERNEL_COUNT];
    int nisa = 0;
    for (int i = KERNEL_GENERIC; i < KERNEL_COUNT; i++)
        if (kernels_force((kernel_isa_t)i) == 0) isas[nisa++] = (kernel_isa_t)i;
    static float in[BLOCK], got[KERNEL_COUNT][BLOCK];
    uint64_t misrounded = 0, checked = 0, mismatches = 0;
    int64_t worst = 0;
    float worst_x = 0.0f;
    for (uint64_t b = first; b <= last; b += BLOCK) {
        int n = last - b + 1 < BLOCK ? (int)(last - b + 1) : BLOCK;
        for (int i = 0; i < n; i++) {
            uint32_t u = (uint32_t)(b + (uint64_t)i);
            memcpy(&in[i], &u, sizeof u);
        }
        for (int k = 0; k < nisa; k++) {
            kernels_force(isas[k]);
            memcpy(got[k], in, sizeof(float) * (size_t)n);
            kernels_exp_sub(got[k], n, 0.0f, 1.0f);
        }
        for (int i = 0; i < n; i++) {
            float x = in[i], e = kernels_exp(x);
            for (int k = 0; k < nisa; k++)
                if (memcmp(&got[k][i], &e, sizeof e) && mismatches++ < 10)
                    printf("%s: e(%a) = %a, generic %a\n", kernels_isa_name(isas[k]), (double)x,
                           (double)got[k][i], (double)e);
            float want = (float)exp((double)x);
            if (isnan(x) || isnan(want)) {
                if (!isnan(e) || !isnan(x)) {
                    printf("e(%a) = %a, want NaN only for NaN\n", (double)x, (double)e);
                    mismatches++;
                }
                continue;
            }
            checked++;
            if (memcmp(&e, &want, sizeof e) == 0) continue;
            misrounded++;
            int64_t d = llabs(ordered(e) - ordered(want));
            if (d > worst) {
                worst = d;
                worst_x = x;
            }
        }
    }
    printf("floats %" PRIu64 " (non-NaN), not exp rounded %" PRIu64 " (%.3g), largest %" PRId64
           " ULP (at %a), ISA mismatches %" PRIu64 " over %d ISAs\n",
           checked, misrounded, (double)misrounded / (double)checked, worst, (double)worst_x,
           mismatches, nisa);
    return worst > 1 || mismatches ? 1 : 0;
}
