/* FOR_EACH_ISA: a test's loop body once per kernel ISA this CPU runs (generic first), with that
 * ISA forced; after the last, the best one is forced again (what the rest of the process
 * expects). Shared by the tests that compare the ISAs' bits (test_kernels, test_sampler). */
#ifndef INFERD_TEST_ENGINE_ISA_EACH_H
#define INFERD_TEST_ENGINE_ISA_EACH_H

#include "kernels.h"

/* Drives FOR_EACH_ISA: forces the next ISA this CPU runs after *isa (KERNEL_COUNT: the first)
 * and returns 1; after the last, forces the best one again and returns 0. */
static inline int isa_next(kernel_isa_t *isa)
{
    for (int i = *isa == KERNEL_COUNT ? KERNEL_GENERIC : (int)*isa + 1; i < KERNEL_COUNT; i++)
        if (kernels_force((kernel_isa_t)i) == 0) {
            *isa = (kernel_isa_t)i;
            return 1;
        }
    for (int i = KERNEL_COUNT - 1; i > KERNEL_GENERIC; i--)
        if (kernels_force((kernel_isa_t)i) == 0) return 0;
    kernels_force(KERNEL_GENERIC);
    return 0;
}

#define FOR_EACH_ISA(isa) for (kernel_isa_t isa = KERNEL_COUNT; isa_next(&isa);)

#endif
