/*
 * test_gguf_model - GGUF files as models: the architectures and their hyper-parameters,
 * every model-level error (unsupported architecture, missing or mistyped key, missing,
 * misshaped, unknown or unrunnable tensor, bad RoPE scaling, context size) as a start-up
 * error naming the file and the key or tensor, the KV cache allocated once and reported,
 * and the memory bound: a quantized model is never expanded (resident memory after
 * loading and after a forward over every weight stays within the file size + the KV cache
 * + 64 MiB). Models come from tools/mkmodel's generator (mkgguf.h).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "engine/engine.h"
#include "engine/internal.h"
#include "tools/mkmodel/gguf_write.h"
#include "tools/mkmodel/mkgguf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[128];

static void opts_init(mkgguf_opts_t *o, const char *arch, const char *type)
{
    memset(o, 0, sizeof *o);
    o->arch = arch;
    o->type = type;
    o->dim = 64;
    o->hidden = 160;
    o->layers = 2;
    o->heads = 4;
    o->kv_heads = 2;
    o->vocab = 300;
    o->ctx = 8192;
    o->seed = 5;
}

/* a writer with a whole model and a small SentencePiece vocabulary (BOS 1, EOS 2) */
static gguf_writer_t *model(const mkgguf_opts_t *o)
{
    gguf_writer_t *w;
    char err[256];
    assert_int_equal(gguf_writer_new(&w, 3, 32), 0);
    if (mkgguf_model(w, o, err, sizeof err) < 0) fail_msg("mkgguf: %s", err);
    char **pieces = calloc((size_t)o->vocab, sizeof(char *));
    float *scores = calloc((size_t)o->vocab, sizeof(float));
    for (int i = 0; i < o->vocab; i++) {
        char b[32];
        if (i < 3)
            snprintf(b, sizeof b, "%s", i == 0 ? "<unk>" : i == 1 ? "<s>" : "</s>");
        else if (i < 259)
            snprintf(b, sizeof b, "<0x%02X>", i - 3);
        else
            snprintf(b, sizeof b, "w%d", i - 259); /* unique: the tokenizer refuses repeats */
        pieces[i] = strdup(b);
        scores[i] = -(float)i;
    }
    assert_int_equal(mkgguf_vocab_spm(w, pieces, scores, o->vocab), 0);
    for (int i = 0; i < o->vocab; i++)
        free(pieces[i]);
    free(pieces);
    free(scores);
    return w;
}

static const char *save(gguf_writer_t *w, const char *name)
{
    static char path[256];
    char err[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    assert_int_equal(gguf_writer_write(w, path, err, sizeof err), 0);
    gguf_writer_free(w);
    return path;
}

/* model_load must fail with -EINVAL and a message holding `want` and the file's name */
static void expect_model_error(gguf_writer_t *w, int ctx, const char *want)
{
    const char *path = save(w, "bad.gguf");
    model_t m;
    char err[512] = "";
    int rc = model_load(&m, path, ctx, err, sizeof err);
    if (rc != -EINVAL) fail_msg("'%s': expected -EINVAL, got %d (%s)", want, rc, err);
    if (!strstr(err, want)) fail_msg("message '%s' lacks '%s'", err, want);
    if (!strstr(err, "bad.gguf")) fail_msg("message '%s' does not name the file", err);
}

static void test_architectures(void **state)
{
    (void)state;
    mkgguf_opts_t o;
    char err[512];
    model_t m;
    static const struct {
        const char *arch;
        int rope_mode, bias, qk_norm;
    } archs[] = {
        {"llama", ROPE_NORM, 0, 0}, {"qwen2", ROPE_NEOX, 1, 0}, {"qwen3", ROPE_NEOX, 0, 1}};
    for (size_t i = 0; i < 3; i++) {
        opts_init(&o, archs[i].arch, "Q8_0");
        o.head_dim = i == 2 ? 24 : 0; /* qwen3: q wider than the model */
        o.rms_eps = 1e-6f;
        o.unshared = i == 1;
        const char *path = save(model(&o), "m.gguf");
        assert_int_equal(model_load(&m, path, 0, err, sizeof err), 0);
        const model_config_t *c = &m.v.c;
        assert_int_equal(m.format, MODEL_GGUF);
        assert_string_equal(m.arch_name, archs[i].arch);
        assert_int_equal(c->arch, (int)i);
        assert_int_equal(c->rope_mode, archs[i].rope_mode);
        assert_int_equal(c->qkv_bias, archs[i].bias);
        assert_int_equal(c->qk_norm, archs[i].qk_norm);
        assert_int_equal(c->head_dim, i == 2 ? 24 : 16);
        assert_int_equal(c->rope_dim, c->head_dim);
        assert_true(c->rms_eps == 1e-6f);
        assert_int_equal(c->shared, i != 1);
        assert_int_equal(c->train_ctx, 8192);
        assert_int_equal(c->seq_len, 4096); /* default: the model's context capped at 4096 */
        assert_string_equal(m.quant, "Q8_0");
        assert_int_equal(m.v.layers[1].wq.type, DTYPE_Q8_0);
        assert_int_equal(m.v.layers[1].wq.ne[1], c->n_heads * c->head_dim);
        assert_int_equal(m.v.layers[0].attn_norm.type, DTYPE_F32);
        assert_int_equal(m.v.layers[0].bq.data != NULL, archs[i].bias);
        assert_int_equal(m.v.layers[0].k_norm.data != NULL, archs[i].qk_norm);
        model_dispose(&m);
    }
    /* a Q4_K_M file: the label from general.file_type; --ctx-size below the model's */
    opts_init(&o, "llama", "Q4_K_M");
    o.dim = 256;
    o.hidden = 512;
    const char *path = save(model(&o), "m.gguf");
    assert_int_equal(model_load(&m, path, 100, err, sizeof err), 0);
    assert_string_equal(m.quant, "Q4_K_M");
    assert_int_equal(m.v.c.seq_len, 100);
    assert_int_equal(m.v.layers[0].wv.type, DTYPE_Q4_K);
    assert_int_equal(m.v.layers[1].wv.type, DTYPE_Q6_K); /* use_more_bits(1, 2): the last 1/8 */
    assert_int_equal(m.v.layers[1].wq.type, DTYPE_Q4_K);
    assert_int_equal(m.v.output.type, DTYPE_Q6_K); /* tied: token_embd is the output */
    model_dispose(&m);
    /* an override: no file type, the label lists the types */
    const char *ov[] = {"blk.0.ffn_up.weight=BF16", NULL};
    o.type = "Q8_0";
    o.overrides = ov;
    path = save(model(&o), "m.gguf");
    assert_int_equal(model_load(&m, path, 0, err, sizeof err), 0);
    assert_string_equal(m.quant, "Q8_0/BF16");
    model_dispose(&m);
}

static void test_model_errors(void **state)
{
    (void)state;
    mkgguf_opts_t o;
    gguf_writer_t *w;
    opts_init(&o, "llama", "F32");

    w = model(&o);
    gguf_writer_set_str(w, "general.architecture", "gemma2");
    expect_model_error(w, 0,
                       "architecture 'gemma2' is not supported (inferd runs llama, qwen2, "
                       "qwen3)");
    w = model(&o);
    gguf_writer_remove(w, "general.architecture");
    expect_model_error(w, 0, "metadata key 'general.architecture' is missing");
    w = model(&o);
    gguf_writer_remove(w, "llama.block_count");
    expect_model_error(w, 0, "metadata key 'llama.block_count' is missing");
    w = model(&o);
    gguf_writer_set_str(w, "llama.embedding_length", "64");
    expect_model_error(w, 0, "'llama.embedding_length' must be an integer, found STRING");
    w = model(&o);
    gguf_writer_remove(w, "llama.attention.layer_norm_rms_epsilon");
    expect_model_error(w, 0, "'llama.attention.layer_norm_rms_epsilon' is missing");
    w = model(&o);
    gguf_writer_set_u32(w, "llama.attention.head_count_kv", 3);
    expect_model_error(w, 0, "n_heads 4 is not a multiple of n_kv_heads 3");
    w = model(&o);
    gguf_writer_set_u32(w, "llama.block_count", 100000);
    expect_model_error(w, 0, "'llama.block_count' = 100000 is outside the accepted range");
    w = model(&o);
    gguf_writer_set_u32(w, "llama.rope.dimension_count", 15);
    expect_model_error(w, 0, "RoPE dimension 15 must be even");
    w = model(&o);
    gguf_writer_set_u32(w, "llama.vocab_size", 301);
    expect_model_error(w, 0, "llama.vocab_size is 301 but token_embd.weight has 300 rows");

    w = model(&o);
    gguf_writer_remove(w, "blk.1.ffn_up.weight");
    expect_model_error(w, 0, "tensor 'blk.1.ffn_up.weight' is missing (llama needs it)");
    w = model(&o);
    gguf_writer_remove(w, "blk.0.attn_k.weight");
    float z[64 * 40] = {0};
    gguf_writer_add_tensor(w, "blk.0.attn_k.weight", DTYPE_F32, 2, (int64_t[]){64, 40}, z,
                           sizeof z);
    expect_model_error(w, 0,
                       "tensor 'blk.0.attn_k.weight' has shape [64, 40] but the "
                       "hyper-parameters need [64, 32]");
    w = model(&o);
    gguf_writer_remove(w, "blk.0.attn_norm.weight");
    uint16_t h[64] = {0};
    gguf_writer_add_tensor(w, "blk.0.attn_norm.weight", DTYPE_F16, 1, (int64_t[]){64}, h, sizeof h);
    expect_model_error(w, 0, "tensor 'blk.0.attn_norm.weight' is F16; inferd needs F32");
    w = model(&o);
    gguf_writer_add_tensor(w, "blk.0.ffn_gate_inp.weight", DTYPE_F32, 1, (int64_t[]){64}, z,
                           64 * 4);
    expect_model_error(w, 0, "tensor 'blk.0.ffn_gate_inp.weight' is not part of a llama model");
    w = model(&o); /* qwen2 biases in a qwen3 file */
    o.arch = "qwen2";
    gguf_writer_free(w);
    w = model(&o);
    gguf_writer_set_str(w, "general.architecture", "qwen3");
    /* its keys are qwen2.*: the qwen3 keys are missing first */
    expect_model_error(w, 0, "metadata key 'qwen3.embedding_length' is missing");
    o.arch = "qwen2";
    w = model(&o);
    gguf_writer_remove(w, "blk.1.attn_v.bias");
    expect_model_error(w, 0, "tensor 'blk.1.attn_v.bias' is missing (qwen2 needs it)");
    o.arch = "qwen3";
    w = model(&o);
    gguf_writer_remove(w, "blk.0.attn_q_norm.weight");
    expect_model_error(w, 0, "tensor 'blk.0.attn_q_norm.weight' is missing (qwen3 needs it)");
    o.arch = "llama";

    w = model(&o);
    gguf_writer_set_str(w, "llama.rope.scaling.type", "yarn");
    expect_model_error(w, 0,
                       "llama.rope.scaling.type = 'yarn' is not supported (inferd "
                       "supports none, linear, llama3)");
    w = model(&o);
    gguf_writer_set_str(w, "llama.rope.scaling.type", "linear");
    expect_model_error(w, 0, "metadata key 'llama.rope.scaling.factor' is missing");
    w = model(&o);
    float ff[4] = {1, 1, 1, 1};
    gguf_writer_add_tensor(w, "rope_freqs.weight", DTYPE_F32, 1, (int64_t[]){4}, ff, sizeof ff);
    expect_model_error(w, 0,
                       "tensor 'rope_freqs.weight' is F32 [4]; the RoPE dimension 16 "
                       "needs F32 [8]");
    w = model(&o);
    expect_model_error(w, 8193, "context size 8193 exceeds the model's context length 8192");

    /* general.alignment 1: where a tensor lands off a 4-byte boundary, it is refused (the
     * kernels read f32 and fp16 in place); the pad key moves the data section */
    int refused = 0;
    for (int k = 0; k < 4; k++) {
        gguf_writer_t *a;
        assert_int_equal(gguf_writer_new(&a, 3, 1), 0);
        char err[256];
        assert_int_equal(mkgguf_model(a, &o, err, sizeof err), 0);
        char pad[4] = "xxx";
        pad[k] = 0;
        gguf_writer_set_str(a, "x.pad", pad);
        const char *path = save(a, "align1.gguf");
        model_t m;
        char e2[512];
        int rc = model_load(&m, path, 0, e2, sizeof e2);
        if (rc == 0) {
            model_dispose(&m);
        } else {
            assert_int_equal(rc, -EINVAL);
            assert_non_null(strstr(e2, "is not 4-byte aligned in the file (general.alignment 1)"));
            refused++;
        }
    }
    assert_true(refused >= 1);
}

/* what engine_new says: unrunnable types, and the interim vocabulary's limits */
static void test_engine_errors(void **state)
{
    (void)state;
    mkgguf_opts_t o;
    opts_init(&o, "llama", "F32");
    o.dim = o.hidden = 256;
    const char *ov[] = {"blk.1.ffn_down.weight=Q2_K", NULL};
    o.overrides = ov;
    const char *path = save(model(&o), "q2k.gguf");
    engine_config_t cfg;
    engine_config_init(&cfg);
    cfg.model_path = path;
    cfg.threads = 1;
    cfg.max_batch = 2;
    engine_t *e = NULL;
    char err[512];
    assert_int_equal(engine_new(&e, &cfg, err, sizeof err), -ENOTSUP);
    assert_non_null(strstr(err, "tensor blk.1.ffn_down.weight has type Q2_K, which inferd "
                                "cannot run (supported: F32, F16, BF16,"));
    assert_null(e);

    o.overrides = NULL;
    gguf_writer_t *w = model(&o);
    gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    path = save(w, "gpt2.gguf");
    cfg.model_path = path;
    assert_int_equal(engine_new(&e, &cfg, err, sizeof err), -EINVAL);
    /* a byte-level BPE vocabulary without its merges is a start-up error naming the key */
    assert_non_null(strstr(err, "gpt2.gguf: tokenizer.ggml.merges is missing"));
    /* a llama2.c checkpoint still needs its tokenizer */
    cfg.model_path = TINY_MODEL;
    assert_int_equal(engine_new(&e, &cfg, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "needs its tokenizer.bin (--tokenizer)"));
}

/* The KV cache: sized at start-up from max_batch x context, reported in the model info. */
static void test_kv_report(void **state)
{
    (void)state;
    mkgguf_opts_t o;
    opts_init(&o, "llama", "Q8_0");
    const char *path = save(model(&o), "kv.gguf");
    engine_config_t cfg;
    engine_config_init(&cfg);
    cfg.model_path = path;
    cfg.threads = 1;
    cfg.max_batch = 3;
    cfg.ctx_size = 200;
    engine_t *e;
    char err[512];
    assert_int_equal(engine_new(&e, &cfg, err, sizeof err), 0);
    engine_model_info_t mi;
    engine_model_info(e, &mi);
    /* 3 sequences x 200 positions x 2 layers x kv width 32 x (K and V) x 4 bytes */
    assert_int_equal(mi.kv_cache_bytes, 3ull * 200 * 2 * 32 * 2 * 4);
    assert_int_equal(mi.kv_sequences, 3);
    assert_int_equal(mi.context_size, 200);
    assert_int_equal(mi.max_seq_len, 200);
    assert_int_equal(mi.train_context, 8192);
    assert_string_equal(mi.architecture, "llama");
    assert_string_equal(mi.quantization, "Q8_0");
    assert_int_equal(mi.vocab_size, 300);
    /* a prompt plus max_tokens beyond the context in use is refused */
    uint32_t t[3] = {1, 5, 6};
    engine_request_t r;
    engine_request_init(&r);
    r.token_ids = t;
    r.n_tokens = 3;
    r.max_tokens = 198;
    engine_invalid_t why;
    assert_int_equal(engine_validate(e, &r, &why, err, sizeof err), -EINVAL);
    assert_int_equal(why, ENGINE_INVALID_MAX_TOKENS);
    r.max_tokens = 197;
    assert_int_equal(engine_validate(e, &r, &why, err, sizeof err), 0);
    engine_free(e);
}

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long v = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmRSS:", 6)) v = strtol(line + 6, NULL, 10);
    if (f) fclose(f);
    return v;
}

/* A quantized model is used in place: resident memory grows by at most the file size +
 * the KV cache + 64 MiB, after loading and after a forward that reads every weight. Its
 * weights as f32 would be ~7x the file (Q4_K: 4.5 bits a weight). */
static void test_memory_bound(void **state)
{
    (void)state;
    mkgguf_opts_t o;
    opts_init(&o, "llama", "Q4_K");
    o.dim = 1024;
    o.hidden = 2816;
    o.layers = 6;
    o.heads = 16;
    o.kv_heads = 4;
    o.vocab = 8192;
    o.ctx = 256;
    const char *path = save(model(&o), "big.gguf");
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    long file_kib = (long)(st.st_size / 1024);
    long before = rss_kib();
    engine_config_t cfg;
    engine_config_init(&cfg);
    cfg.model_path = path;
    cfg.threads = 2;
    cfg.max_batch = 2;
    engine_t *e;
    char err[512];
    assert_int_equal(engine_new(&e, &cfg, err, sizeof err), 0);
    engine_model_info_t mi;
    engine_model_info(e, &mi);
    long kv_kib = (long)(mi.kv_cache_bytes / 1024), slack = 64 * 1024;
    long loaded = rss_kib() - before;
    /* every weight read: a few tokens through the whole model */
    uint32_t t[4] = {1, 300, 301, 302};
    engine_request_t r;
    engine_request_init(&r);
    r.token_ids = t;
    r.n_tokens = 4;
    r.max_tokens = 2;
    engine_req_t *req;
    assert_int_equal(engine_submit(e, &r, &req, NULL, err, sizeof err), 0);
    for (int done = 0; !done;) {
        engine_event_t ev[8];
        int n = engine_poll(e, ev, 8);
        for (int i = 0; i < n; i++)
            done |= ev[i].type != ENGINE_EV_TOKEN;
        if (!n) usleep(1000);
    }
    engine_req_free(e, req);
    long used = rss_kib() - before;
    print_message("file %ld KiB, KV %ld KiB: resident +%ld KiB after loading, +%ld KiB after a "
                  "forward (bound %ld KiB; as f32 the weights alone would be ~%ld KiB)\n",
                  file_kib, kv_kib, loaded, used, file_kib + kv_kib + slack,
                  (long)(mi.parameters * 4 / 1024));
    assert_true(loaded <= file_kib + kv_kib + slack);
    assert_true(used <= file_kib + kv_kib + slack);
    assert_true((long)(mi.parameters * 4 / 1024) > file_kib + kv_kib + slack); /* it could fail */
    engine_free(e);
}

/* Random mutations of a valid model file: every one is refused with -EINVAL or, when
 * accepted, a forward over it stays inside the buffer (ASan): the loader's checks are
 * enough for the kernels, whatever the weights' values. */
static void test_model_mutations(void **state)
{
    (void)state;
    mkgguf_opts_t o;
    opts_init(&o, "qwen2", "Q4_0");
    o.layers = 1;
    o.ctx = 64;
    gguf_writer_t *w = model(&o);
    uint8_t *good;
    size_t n;
    assert_int_equal(gguf_writer_bytes(w, &good, &n), 0);
    gguf_writer_free(w);
    pool_t *pool;
    assert_int_equal(pool_new(&pool, 1), 0);
    uint64_t s = 0x2545f4914f6cdd1dull;
    int accepted = 0, refused = 0;
    for (int iter = 0; iter < 600; iter++) {
        uint8_t *c = malloc(n);
        memcpy(c, good, n);
        for (int k = 0; k < 1 + (int)(s % 3); k++) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            /* mostly the header and metadata, where the structure lives */
            size_t at = (s >> 8) % (iter % 3 ? 4096 : n);
            c[at] = (s >> 40) % 2 ? (uint8_t)(s >> 32) : c[at] ^ (uint8_t)(1u << (s % 8));
        }
        model_t m;
        char err[512];
        int rc = model_parse_gguf(&m, c, n, 0, err, sizeof err);
        if (rc == 0) {
            accepted++;
            void *ctx;
            if (backend_cpu.load(&ctx, &m.v, NULL, pool, 2, 1, err, sizeof err) == 0) {
                assert_int_equal(backend_cpu.seq_alloc(ctx, 0, 2), 0);
                fwd_row_t rows[2] = {{0, 0, 1, 0}, {0, 1, 7, 1}};
                float *lg = malloc(2 * (size_t)m.v.c.vocab_size * sizeof(float));
                assert_int_equal(backend_cpu.forward(ctx, rows, 2, lg), 0);
                free(lg);
                backend_cpu.free(ctx);
            }
            model_dispose(&m);
        } else {
            assert_int_equal(rc, -EINVAL);
            refused++;
        }
        free(c);
    }
    print_message("%d mutated models refused, %d accepted and run\n", refused, accepted);
    assert_true(refused > 100 && accepted > 10);
    pool_free(pool);
    free(good);
}

static int setup(void **state)
{
    (void)state;
    snprintf(dir, sizeof dir, "/tmp/test_gguf_model.XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[200];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_architectures), cmocka_unit_test(test_model_errors),
        cmocka_unit_test(test_engine_errors), cmocka_unit_test(test_kv_report),
        cmocka_unit_test(test_memory_bound),  cmocka_unit_test(test_model_mutations),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
