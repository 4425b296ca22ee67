/*
 * test_budget - the CUDA backend's host-side decisions, no GPU needed: the device memory
 * budget (weights by dtype and classifier sharing, KV cache from max_batch x context,
 * per-lane scratch and cuBLAS workspaces) and cuda_check, which refuses at start-up what
 * its kernels do not implement (tensor types, architecture features), naming it. Links
 * libinferd_cuda directly; loading it needs no driver.
 */
#include "cuda/cuda_backend.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

/* A view with shapes only (data points at a dummy byte: the budget and the check read
 * types and shapes, never weights). */
typedef struct {
    model_view_t v;
    model_layer_t layers[8];
    float freq[64];
} fake_t;

static const char dummy = 0;

static void set(tensor_t *t, const char *name, int64_t cols, int64_t rows)
{
    memset(t, 0, sizeof *t);
    t->data = &dummy;
    t->type = DTYPE_F32;
    t->ne[0] = cols;
    t->ne[1] = rows;
    t->row_bytes = (size_t)cols * 4;
    t->nbytes = t->row_bytes * (size_t)rows;
    snprintf(t->name, sizeof t->name, "%s", name);
}

static void fake_init(fake_t *f, int dim, int hidden, int layers, int heads, int kv_heads,
                      int vocab, int ctx, int shared)
{
    memset(f, 0, sizeof *f);
    model_config_t *c = &f->v.c;
    c->arch = ARCH_LLAMA;
    c->dim = dim;
    c->hidden_dim = hidden;
    c->n_layers = layers;
    c->n_heads = heads;
    c->n_kv_heads = kv_heads;
    c->head_dim = dim / heads;
    c->vocab_size = vocab;
    c->train_ctx = c->seq_len = ctx;
    c->shared = shared;
    c->rms_eps = 1e-5f;
    c->rope_dim = c->head_dim;
    c->rope_mode = ROPE_NORM;
    int kvd = kv_heads * (dim / heads);
    char nm[64];
    for (int l = 0; l < layers; l++) {
        model_layer_t *y = &f->layers[l];
        snprintf(nm, sizeof nm, "blk.%d.attn_norm.weight", l);
        set(&y->attn_norm, nm, dim, 1);
        snprintf(nm, sizeof nm, "blk.%d.attn_q.weight", l);
        set(&y->wq, nm, dim, dim);
        snprintf(nm, sizeof nm, "blk.%d.attn_k.weight", l);
        set(&y->wk, nm, dim, kvd);
        snprintf(nm, sizeof nm, "blk.%d.attn_v.weight", l);
        set(&y->wv, nm, dim, kvd);
        snprintf(nm, sizeof nm, "blk.%d.attn_output.weight", l);
        set(&y->wo, nm, dim, dim);
        snprintf(nm, sizeof nm, "blk.%d.ffn_norm.weight", l);
        set(&y->ffn_norm, nm, dim, 1);
        snprintf(nm, sizeof nm, "blk.%d.ffn_gate.weight", l);
        set(&y->w_gate, nm, dim, hidden);
        snprintf(nm, sizeof nm, "blk.%d.ffn_down.weight", l);
        set(&y->w_down, nm, hidden, dim);
        snprintf(nm, sizeof nm, "blk.%d.ffn_up.weight", l);
        set(&y->w_up, nm, dim, hidden);
    }
    f->v.layers = f->layers;
    set(&f->v.tok_embd, "token_embd.weight", dim, vocab);
    set(&f->v.output_norm, "output_norm.weight", dim, 1);
    if (shared)
        f->v.output = f->v.tok_embd;
    else
        set(&f->v.output, "output.weight", dim, vocab);
    f->v.rope_freq = f->freq;
}

static void test_stories15m_shape(void **state)
{
    (void)state;
    /* stories15M: dim 288, hidden 768, 6 layers, 6 heads (MHA), vocab 32000, context 256 */
    fake_t f;
    fake_init(&f, 288, 768, 6, 6, 6, 32000, 256, 1);
    uint64_t mats = 6ull * (3 * 288 * 288 + 288 * 288 + 3 * 768 * 288);
    uint64_t small = (2 * 6 * 288 + 288 + 24) * 4ull; /* norms + RoPE frequencies */
    backend_opts_t o = {.device = 0, .streams = 4, .bf16 = 0};
    uint64_t w, kv, sc;
    uint64_t all = cuda_budget_bytes(&f.v, &o, 128, 64, &w, &kv, &sc);
    assert_int_equal(w, mats * 4 + 32000ull * 288 * 4 + small); /* shared classifier */
    assert_int_equal(kv, 64ull * 6 * 256 * 288 * 2 * 4);        /* 64 slots, fp32 K and V */
    assert_true(sc > 4ull * (32u << 20));                       /* 4 cuBLAS workspaces */
    assert_int_equal(all, w + kv + sc);

    o.bf16 = 1; /* bf16 matrices plus a bf16 copy of the classifier; fp32 embedding kept */
    cuda_budget_bytes(&f.v, &o, 128, 64, &w, NULL, NULL);
    assert_int_equal(w, mats * 2 + 32000ull * 288 * 4 + 32000ull * 288 * 2 + small);

    o.bf16 = 0;
    fake_init(&f, 288, 768, 6, 6, 6, 32000, 256, 0);
    cuda_budget_bytes(&f.v, &o, 128, 64, &w, NULL, NULL);
    assert_int_equal(w, mats * 4 + 2 * 32000ull * 288 * 4 + small);

    /* the KV cache follows the context in use (--ctx-size), not the model's */
    f.v.c.seq_len = 64;
    cuda_budget_bytes(&f.v, &o, 128, 64, NULL, &kv, NULL);
    assert_int_equal(kv, 64ull * 6 * 64 * 288 * 2 * 4);
}

static void test_kv_rounds_up_to_lanes(void **state)
{
    (void)state;
    fake_t f;
    fake_init(&f, 64, 172, 2, 4, 2, 512, 128, 1); /* GQA: kv_dim 32 */
    backend_opts_t o = {.device = 0, .streams = 4, .bf16 = 0};
    uint64_t kv;
    cuda_budget_bytes(&f.v, &o, 16, 10, NULL, &kv, NULL); /* 10 slots over 4 lanes: 3 each */
    assert_int_equal(kv, 12ull * 2 * 128 * 32 * 2 * 4);
    o.streams = 16; /* more streams than slots: one slot per lane */
    cuda_budget_bytes(&f.v, &o, 16, 10, NULL, &kv, NULL);
    assert_int_equal(kv, 10ull * 2 * 128 * 32 * 2 * 4);
}

/* every refusal names what the kernels lack; an F32 llama passes */
static void test_check_refuses(void **state)
{
    (void)state;
    fake_t f;
    backend_opts_t o = {.device = 0, .streams = 4, .bf16 = 0};
    char why[256];
    fake_init(&f, 64, 172, 2, 4, 2, 512, 128, 1);
    assert_int_equal(cuda_check(&f.v, &o, why, sizeof why), 0);

    static const uint32_t types[] = {DTYPE_F16,  DTYPE_BF16, DTYPE_Q8_0, DTYPE_Q4_0,
                                     DTYPE_Q4_K, DTYPE_Q5_K, DTYPE_Q6_K, DTYPE_Q5_0};
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
        fake_init(&f, 64, 172, 2, 4, 2, 512, 128, 1);
        f.layers[1].wv.type = types[i];
        why[0] = 0;
        assert_int_equal(cuda_check(&f.v, &o, why, sizeof why), BACKEND_ENOTSUP);
        char want[96];
        snprintf(want, sizeof want, "tensor blk.1.attn_v.weight is %s", dtype_name(types[i]));
        if (!strstr(why, want)) fail_msg("'%s' lacks '%s'", why, want);
    }
    fake_init(&f, 64, 172, 2, 4, 2, 512, 128, 0);
    f.v.output.type = DTYPE_Q6_K;
    assert_int_equal(cuda_check(&f.v, &o, why, sizeof why), BACKEND_ENOTSUP);
    assert_non_null(strstr(why, "output.weight is Q6_K"));

    fake_init(&f, 64, 172, 2, 4, 2, 512, 128, 1);
    f.v.c.arch = ARCH_QWEN2;
    f.v.c.qkv_bias = 1;
    assert_int_equal(cuda_check(&f.v, &o, why, sizeof why), BACKEND_ENOTSUP);
    assert_non_null(strstr(why, "llama architecture only"));
    fake_init(&f, 64, 172, 2, 4, 2, 512, 128, 1);
    f.v.c.rope_mode = ROPE_NEOX;
    assert_int_equal(cuda_check(&f.v, &o, why, sizeof why), BACKEND_ENOTSUP);
    assert_non_null(strstr(why, "adjacent pairs"));
    fake_init(&f, 64, 172, 2, 4, 2, 512, 128, 1);
    f.v.c.rope_dim = 8;
    assert_int_equal(cuda_check(&f.v, &o, why, sizeof why), BACKEND_ENOTSUP);
    assert_non_null(strstr(why, "RoPE dimension 8"));
    fake_init(&f, 64, 172, 2, 4, 2, 512, 128, 1);
    f.v.c.rms_eps = 1e-6f;
    assert_int_equal(cuda_check(&f.v, &o, why, sizeof why), BACKEND_ENOTSUP);
    assert_non_null(strstr(why, "RMS epsilon"));
    fake_init(&f, 64, 172, 2, 4, 2, 512, 128, 1);
    f.v.c.head_dim = 32; /* q wider than the model */
    f.v.c.rope_dim = 32;
    assert_int_equal(cuda_check(&f.v, &o, why, sizeof why), BACKEND_ENOTSUP);
    assert_non_null(strstr(why, "head size"));
}

/* the exported entry carries this header's ABI version and the check */
static void test_entry(void **state)
{
    (void)state;
    assert_int_equal(inferd_backend_entry.abi, BACKEND_ABI_VERSION);
    assert_ptr_equal(inferd_backend_entry.check, cuda_check);
    assert_ptr_equal(inferd_backend_entry.backend, &backend_cuda);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories15m_shape),
        cmocka_unit_test(test_kv_rounds_up_to_lanes),
        cmocka_unit_test(test_check_refuses),
        cmocka_unit_test(test_entry),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
