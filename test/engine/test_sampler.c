/* Sampler: greedy, determinism per seed, top-k / top-p restrictions, the temperature
 * softmax's exact values on every ISA. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "internal.h"
#include "isa_each.h"
#include "kernels.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define N 1000

static void fill(float *l, uint64_t seed)
{
    rng_t r;
    rng_seed(&r, seed);
    for (int i = 0; i < N; i++)
        l[i] = rng_float(&r) * 8.0f - 4.0f;
}

static int draw(const float *src, sample_params_t p, rng_t *r)
{
    static float l[N];
    static prob_index_t scratch[N];
    memcpy(l, src, sizeof(l));
    return sample_token(l, N, &p, r, scratch);
}

static void test_greedy(void **state)
{
    (void)state;
    float l[N];
    fill(l, 1);
    l[123] = 50.0f;
    rng_t r;
    rng_seed(&r, 1);
    sample_params_t p = {0.0f, 1.0f, 0};
    assert_int_equal(draw(l, p, &r), 123);
    assert_int_equal(sample_argmax(l, N), 123);
    /* top_k 1 is greedy whatever the temperature */
    p = (sample_params_t){1.5f, 1.0f, 1};
    for (int i = 0; i < 20; i++)
        assert_int_equal(draw(l, p, &r), 123);
    /* ties: the lowest index */
    float t[4] = {1, 3, 3, 0};
    assert_int_equal(sample_argmax(t, 4), 1);
}

static void test_seed_determinism(void **state)
{
    (void)state;
    float l[N];
    fill(l, 2);
    sample_params_t ps[] = {{1.0f, 1.0f, 0}, {0.8f, 0.9f, 0}, {1.2f, 1.0f, 40}, {0.7f, 0.5f, 10}};
    for (size_t k = 0; k < sizeof(ps) / sizeof(ps[0]); k++) {
        rng_t a, b, c;
        rng_seed(&a, 42);
        rng_seed(&b, 42);
        rng_seed(&c, 43);
        int same = 1, diff = 0;
        for (int i = 0; i < 100; i++) {
            int x = draw(l, ps[k], &a), y = draw(l, ps[k], &b), z = draw(l, ps[k], &c);
            same &= x == y;
            diff += x != z;
        }
        assert_true(same);
        assert_true(diff > 0);
    }
}

static void test_top_k_top_p(void **state)
{
    (void)state;
    float l[N];
    fill(l, 3);
    /* the 5 best tokens */
    int best[5];
    float tmp[N];
    memcpy(tmp, l, sizeof(tmp));
    for (int k = 0; k < 5; k++) {
        best[k] = sample_argmax(tmp, N);
        tmp[best[k]] = -1e30f;
    }
    rng_t r;
    rng_seed(&r, 7);
    sample_params_t p = {2.0f, 1.0f, 5};
    int seen[5] = {0};
    for (int i = 0; i < 500; i++) {
        int x = draw(l, p, &r), ok = 0;
        for (int k = 0; k < 5; k++)
            if (x == best[k]) ok = 1, seen[k]++;
        assert_true(ok);
    }
    for (int k = 0; k < 5; k++)
        assert_true(seen[k] > 0);
    /* a dominant token with tiny top_p is always chosen */
    l[best[4]] = 30.0f;
    p = (sample_params_t){1.0f, 0.1f, 0};
    for (int i = 0; i < 50; i++)
        assert_int_equal(draw(l, p, &r), best[4]);
    /* two equal dominant tokens and top_p 0.6: only those two */
    l[best[3]] = 30.0f;
    p = (sample_params_t){1.0f, 0.6f, 0};
    int a = 0, b = 0;
    for (int i = 0; i < 200; i++) {
        int x = draw(l, p, &r);
        assert_true(x == best[3] || x == best[4]);
        a += x == best[3];
        b += x == best[4];
    }
    assert_true(a > 20 && b > 20);
}

static void test_rng(void **state)
{
    (void)state;
    rng_t r;
    rng_seed(&r, 0);
    double sum = 0;
    for (int i = 0; i < 10000; i++) {
        float f = rng_float(&r);
        assert_true(f >= 0.0f && f < 1.0f);
        sum += f;
    }
    assert_true(fabs(sum / 10000 - 0.5) < 0.02);
}

/* With a temperature the probabilities are kernels_exp((l - max) / T), each times 1 / their
 * float sum in order: these bits on every ISA. One logit sits where glibc's expf rounds e^x the
 * other way (kernels_exp gives exp() rounded there), so expf in the sampler fails this. */
static void test_softmax_values(void **state)
{
    (void)state;
    const float x = -0x1.000016p-7f;
    assert_true(kernels_exp(x) != expf(x)); /* what makes the check tell them apart */
    float l[N];
    fill(l, 3);
    for (int i = 0; i < N; i++)
        l[i] -= 4.5f; /* [-8.5, -0.5) */
    l[0] = 0.0f;      /* the largest */
    l[1] = x;
    static const float temps[] = {1.0f, 0.7f};
    FOR_EACH_ISA(k)
    {
        for (size_t t = 0; t < sizeof temps / sizeof temps[0]; t++) {
            float want[N], inv_t = 1.0f / temps[t], sum = 0.0f;
            for (int i = 0; i < N; i++) {
                want[i] = kernels_exp((l[i] - 0.0f) * inv_t);
                sum += want[i];
            }
            float inv = 1.0f / sum;
            for (int i = 0; i < N; i++)
                want[i] *= inv;
            static float got[N];
            static prob_index_t scratch[N];
            memcpy(got, l, sizeof got);
            rng_t r;
            rng_seed(&r, 9);
            sample_params_t p = {temps[t], 1.0f, 0};
            sample_token(got, N, &p, &r, scratch);
            for (int i = 0; i < N; i++)
                if (memcmp(&got[i], &want[i], sizeof(float)))
                    fail_msg("isa %d T %g: p[%d] = %a, want %a", (int)k, (double)temps[t], i,
                             (double)got[i], (double)want[i]);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy),         cmocka_unit_test(test_seed_determinism),
        cmocka_unit_test(test_top_k_top_p),    cmocka_unit_test(test_rng),
        cmocka_unit_test(test_softmax_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
