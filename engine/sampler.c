/*
 * sampler.c - per-request PRNG and token sampling (greedy, temperature, top-k, top-p).
 * Everything is a pure function of (logits, params, rng state): same seed, same tokens.
 */
#include "internal.h"
#include "kernels.h"

#include <math.h>
#include <stdlib.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void rng_seed(rng_t *r, uint64_t seed)
{
    uint64_t x = seed;
    r->s[0] = splitmix64(&x);
    r->s[1] = splitmix64(&x);
    if (!r->s[0] && !r->s[1]) r->s[1] = 1;
}

uint64_t rng_next(rng_t *r)
{
    uint64_t s1 = r->s[0];
    const uint64_t s0 = r->s[1];
    r->s[0] = s0;
    s1 ^= s1 << 23;
    r->s[1] = s1 ^ s0 ^ (s1 >> 17) ^ (s0 >> 26);
    return r->s[1] + s0;
}

float rng_float(rng_t *r)
{
    return (float)(rng_next(r) >> 40) / 16777216.0f;
}

int sample_argmax(const float *logits, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    return best;
}

/* descending prob, ascending index on ties: a total order, so the result is defined */
static int cmp_desc(const void *a, const void *b)
{
    const prob_index_t *x = a, *y = b;
    if (x->prob > y->prob) return -1;
    if (x->prob < y->prob) return 1;
    return (x->index > y->index) - (x->index < y->index);
}

static int less(const prob_index_t *x, const prob_index_t *y)
{
    return cmp_desc(x, y) > 0; /* x ranks after y */
}

/* restores the min-heap c[0..k) below p */
static void sift_down(prob_index_t *c, int k, int p)
{
    for (;;) {
        int l = 2 * p + 1, r = l + 1, m = p;
        if (l < k && less(&c[l], &c[m])) m = l;
        if (r < k && less(&c[r], &c[m])) m = r;
        if (m == p) return;
        prob_index_t t = c[p];
        c[p] = c[m];
        c[m] = t;
        p = m;
    }
}

/* keep the k best of c[0..n) in c[0..k) using a min-heap (root = worst kept) */
static int top_k_select(prob_index_t *c, int n, int k)
{
    for (int i = k / 2 - 1; i >= 0; i--)
        sift_down(c, k, i);
    for (int i = k; i < n; i++) {
        if (!less(&c[0], &c[i])) continue;
        c[0] = c[i];
        sift_down(c, k, 0);
    }
    return k;
}

int sample_token(float *logits, int n, const sample_params_t *p, rng_t *rng, prob_index_t *scratch)
{
    if (p->temperature <= 0.0f) return sample_argmax(logits, n);
    /* the vocabulary's exponentials on vector lanes (a scalar expf each was ~0.6 ms a token for
     * 152k entries); the sum stays one float chain in order */
    float inv_t = 1.0f / p->temperature, sum = 0.0f;
    kernels_exp_sub(logits, n, kernels_max(logits, n), inv_t);
    for (int i = 0; i < n; i++)
        sum += logits[i];
    float inv = 1.0f / sum;
    for (int i = 0; i < n; i++)
        logits[i] *= inv;
    float coin = rng_float(rng);
    bool use_k = p->top_k > 0 && p->top_k < n;
    bool use_p = p->top_p > 0.0f && p->top_p < 1.0f;
    if (!use_k && !use_p) {
        float cdf = 0.0f;
        for (int i = 0; i < n; i++) {
            cdf += logits[i];
            if (coin < cdf) return i;
        }
        return n - 1;
    }
    /* tokens below this cannot be in the nucleus (llama2.c's cutoff) */
    float cutoff = use_p ? (1.0f - p->top_p) / (float)(n - 1) : -1.0f;
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (logits[i] >= cutoff) {
            scratch[m].index = i;
            scratch[m].prob = logits[i];
            m++;
        }
    }
    if (m == 0) return sample_argmax(logits, n);
    if (use_k && m > p->top_k) m = top_k_select(scratch, m, p->top_k);
    qsort(scratch, (size_t)m, sizeof(*scratch), cmp_desc);
    int last = m - 1;
    float cum = 0.0f;
    if (use_p) {
        for (int i = 0; i < m; i++) {
            cum += scratch[i].prob;
            if (cum > p->top_p) {
                last = i;
                break;
            }
        }
    }
    cum = 0.0f;
    for (int i = 0; i <= last; i++)
        cum += scratch[i].prob;
    float r = coin * cum, cdf = 0.0f;
    for (int i = 0; i <= last; i++) {
        cdf += scratch[i].prob;
        if (r < cdf) return scratch[i].index;
    }
    return scratch[last].index;
}
