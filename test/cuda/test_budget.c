/*
 * test_budget - the CUDA backend's device memory budget arithmetic (host only, no GPU):
 * weights by dtype and classifier sharing, KV cache from max_batch x context, per-lane
 * scratch and cuBLAS workspaces. Links libinferd_cuda directly; loading it needs no driver.
 */
#include "cuda/cuda_backend.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

static void test_stories15m_shape(void **state)
{
    (void)state;
    /* stories15M: dim 288, hidden 768, 6 layers, 6 heads (MHA), vocab 32000, context 256 */
    model_config_t c = {288, 768, 6, 6, 6, 32000, 256, 1};
    uint64_t mats = 6ull * (3 * 288 * 288 + 288 * 288 + 3 * 768 * 288);
    uint64_t small = (2 * 6 * 288 + 288 + 24) * 4ull; /* norms + RoPE frequencies */
    cuda_opts_t o = {0, 4, 0};
    uint64_t w, kv, sc;
    uint64_t all = cuda_budget_bytes(&c, &o, 128, 64, &w, &kv, &sc);
    assert_int_equal(w, mats * 4 + 32000ull * 288 * 4 + small); /* shared classifier */
    assert_int_equal(kv, 64ull * 6 * 256 * 288 * 2 * 4);        /* 64 slots, fp32 K and V */
    assert_true(sc > 4ull * (32u << 20));                       /* 4 cuBLAS workspaces */
    assert_int_equal(all, w + kv + sc);

    o.bf16 = 1; /* bf16 matrices plus a bf16 copy of the classifier; fp32 embedding kept */
    cuda_budget_bytes(&c, &o, 128, 64, &w, NULL, NULL);
    assert_int_equal(w, mats * 2 + 32000ull * 288 * 4 + 32000ull * 288 * 2 + small);

    o.bf16 = 0;
    c.shared = 0;
    cuda_budget_bytes(&c, &o, 128, 64, &w, NULL, NULL);
    assert_int_equal(w, mats * 4 + 2 * 32000ull * 288 * 4 + small);
}

static void test_kv_rounds_up_to_lanes(void **state)
{
    (void)state;
    model_config_t c = {64, 172, 2, 4, 2, 512, 128, 1}; /* GQA: kv_dim 32 */
    cuda_opts_t o = {0, 4, 0};
    uint64_t kv;
    cuda_budget_bytes(&c, &o, 16, 10, NULL, &kv, NULL); /* 10 slots over 4 lanes: 3 each */
    assert_int_equal(kv, 12ull * 2 * 128 * 32 * 2 * 4);
    o.streams = 16; /* more streams than slots: one slot per lane */
    cuda_budget_bytes(&c, &o, 16, 10, NULL, &kv, NULL);
    assert_int_equal(kv, 10ull * 2 * 128 * 32 * 2 * 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories15m_shape),
        cmocka_unit_test(test_kv_rounds_up_to_lanes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
