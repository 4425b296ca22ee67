/* Checkpoint and tokenizer loading: every malformed file is a clear error. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "engine.h"
#include "internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char *read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc(*n + 64);
    assert_int_equal(fread(b, 1, *n, f), *n);
    fclose(f);
    return b;
}

/* parse a copy of buf with a modified header; the buffer is exactly `size` bytes so ASan
 * catches any read past it */
static int parse_hdr(const char *buf, size_t size, const int32_t hdr[7], char *err)
{
    char *copy = malloc(size ? size : 1);
    memcpy(copy, buf, size);
    if (size >= 28) memcpy(copy, hdr, 28);
    model_t m;
    int rc = model_parse(&m, copy, size, 0, err, 256);
    if (rc == 0) model_dispose(&m);
    free(copy);
    return rc;
}

static void test_model_valid(void **state)
{
    (void)state;
    model_t m;
    char err[256];
    assert_int_equal(model_load(&m, TINY_MODEL, 0, err, sizeof(err)), 0);
    assert_int_equal(m.v.c.dim, 64);
    assert_int_equal(m.v.c.n_kv_heads, 2);
    assert_int_equal(m.v.c.head_dim, 16);
    assert_int_equal(m.v.c.seq_len, 128); /* the model's context (below the 4096 cap) */
    assert_true(m.v.c.shared);
    assert_ptr_equal(m.v.output.data, m.v.tok_embd.data);
    /* the table's names and shapes: ne = {cols, rows} */
    assert_string_equal(m.v.layers[1].wk.name, "blk.1.attn_k.weight");
    assert_int_equal(m.v.layers[1].wk.ne[0], 64);
    assert_int_equal(m.v.layers[1].wk.ne[1], 32);
    assert_int_equal(m.v.layers[0].w_down.ne[0], 172);
    assert_int_equal(m.v.layers[0].w_down.ne[1], 64);
    assert_null(m.v.layers[0].bq.data);
    /* the second layer's wq follows the first one's in the file */
    assert_ptr_equal((const char *)m.v.layers[1].wq.data,
                     (const char *)m.v.layers[0].wq.data + 64 * 64 * 4);
    model_dispose(&m);
    assert_int_equal(model_load(&m, TINY_UNSHARED_MODEL, 0, err, sizeof(err)), 0);
    assert_false(m.v.c.shared);
    assert_ptr_not_equal(m.v.output.data, m.v.tok_embd.data);
    assert_true((const char *)m.v.output.data + (size_t)m.v.c.vocab_size * m.v.c.dim * 4 ==
                (const char *)m.map.base + m.map.size);
    model_dispose(&m);
    /* --ctx-size: smaller is fine, larger than the model's context is refused */
    assert_int_equal(model_load(&m, TINY_MODEL, 40, err, sizeof(err)), 0);
    assert_int_equal(m.v.c.seq_len, 40);
    assert_int_equal(m.v.c.train_ctx, 128);
    model_dispose(&m);
    assert_int_equal(model_load(&m, TINY_MODEL, 129, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "exceeds the model's context length 128"));
}

static void test_model_rejects(void **state)
{
    (void)state;
    size_t n;
    char *buf = read_all(TINY_MODEL, &n);
    int32_t h0[7], h[7];
    memcpy(h0, buf, 28);
    char err[256];
    /* truncated anywhere */
    size_t cuts[] = {0, 3, 27, 28, 100, n / 2, n - 4, n - 1};
    for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++) {
        assert_int_equal(parse_hdr(buf, cuts[i], h0, err), -EINVAL);
        assert_non_null(strstr(err, "truncated"));
    }
    /* one extra byte */
    char *big = calloc(1, n + 1);
    memcpy(big, buf, n);
    assert_int_equal(parse_hdr(big, n + 1, h0, err), -EINVAL);
    free(big);
    struct {
        int field;
        int32_t value;
        const char *msg;
    } cases[] = {
        {0, 0, "dim = 0 must be positive"},
        {0, -64, "must be positive"},
        {1, 0, "hidden_dim"},
        {2, -1, "n_layers"},
        {3, 0, "n_heads"},
        {4, 0, "n_kv_heads"},
        {5, 0, "vocab_size"},
        {5, INT32_MIN, "vocab_size"},
        {6, 0, "seq_len"},
        {3, 5, "not divisible"},
        {4, 3, "multiple of n_kv_heads"},
        {4, 8, "multiple of n_kv_heads"},
        {0, INT32_MAX, "exceeds the limit"},
        {1, 1 << 18, "needs"}, /* consistent header, file far too small */
        {5, -512, "unshared"}, /* unshared needs another vocab*dim floats */
        {6, 129, "needs"},     /* freq tables size follows seq_len */
        {3, 64, "must be even"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        memcpy(h, h0, 28);
        h[cases[i].field] = cases[i].value;
        err[0] = 0;
        assert_int_equal(parse_hdr(buf, n, h, err), -EINVAL);
        if (!strstr(err, cases[i].msg)) fail_msg("case %zu: '%s' lacks '%s'", i, err, cases[i].msg);
    }
    /* all-max sizes that would overflow 64-bit products are caught by the caps */
    int32_t hmax[7] = {65536, 262144, 1024, 1024, 1024, 4194304, 1048576};
    assert_int_equal(parse_hdr(buf, n, hmax, err), -EINVAL);
    free(buf);
    model_t m;
    assert_int_equal(model_load(&m, "/nonexistent/model.bin", 0, err, sizeof(err)), -ENOENT);
    assert_non_null(strstr(err, "cannot open"));
    assert_int_equal(model_load(&m, "/tmp", 0, err, sizeof(err)), -EINVAL);
}

static void test_tokenizer_rejects(void **state)
{
    (void)state;
    size_t n;
    char *buf = read_all(TINY_TOKENIZER, &n);
    tokenizer_t t;
    char err[256];
    assert_int_equal(tokenizer_parse(&t, buf, n, 512, err, sizeof(err)), 0);
    tokenizer_dispose(&t);
    for (size_t cut = 0; cut < n; cut += (cut < 64 ? 1 : 97)) {
        char *c = malloc(cut ? cut : 1);
        memcpy(c, buf, cut);
        assert_int_equal(tokenizer_parse(&t, c, cut, 512, err, sizeof(err)), -EINVAL);
        assert_non_null(strstr(err, "truncated"));
        free(c);
    }
    /* vocab mismatch with the model */
    assert_int_equal(tokenizer_parse(&t, buf, n, 500, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "does not match"));
    assert_int_equal(tokenizer_parse(&t, buf, n, 513, err, sizeof(err)), -EINVAL);
    /* hostile max_token_length and token lengths */
    int32_t v = -1;
    memcpy(buf, &v, 4);
    assert_int_equal(tokenizer_parse(&t, buf, n, 512, err, sizeof(err)), -EINVAL);
    v = 1 << 30;
    memcpy(buf, &v, 4);
    assert_int_equal(tokenizer_parse(&t, buf, n, 512, err, sizeof(err)), -EINVAL);
    v = 64;
    memcpy(buf, &v, 4);
    int32_t big = 0x7fffffff;
    memcpy(buf + 8, &big, 4); /* first token length */
    assert_int_equal(tokenizer_parse(&t, buf, n, 512, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "length"));
    big = -5;
    memcpy(buf + 8, &big, 4);
    assert_int_equal(tokenizer_parse(&t, buf, n, 512, err, sizeof(err)), -EINVAL);
    free(buf);
}

static void test_engine_new_errors(void **state)
{
    (void)state;
    engine_config_t cfg;
    engine_config_init(&cfg);
    char err[512];
    engine_t *e = NULL;
    assert_int_equal(engine_new(&e, &cfg, err, sizeof(err)), -EINVAL);
    cfg.model_path = TINY_MODEL;
    cfg.tokenizer_path = TINY_UNSHARED_TOKENIZER; /* 420 entries for a 512 vocab */
    assert_int_equal(engine_new(&e, &cfg, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "tokenizer"));
    cfg.tokenizer_path = TINY_TOKENIZER;
    cfg.threads = 1;
    assert_int_equal(engine_new(&e, &cfg, err, sizeof(err)), 0);
    engine_model_info_t mi;
    engine_model_info(e, &mi);
    assert_string_equal(mi.name, "tiny_gqa");
    assert_string_equal(mi.device, "cpu");
    assert_int_equal(mi.vocab_size, 512);
    assert_int_equal(mi.max_seq_len, 128);
    assert_int_equal(mi.bos_id, 1);
    assert_int_equal(mi.eos_id, 2);
    /* emb + 2 * (rms + q + k + v + o + rms + w1 + w2 + w3) + rms_final */
    uint64_t want = 512 * 64 + 2 * (64 + 64 * 64 + 2 * 32 * 64 + 64 * 64 + 64 + 3 * 172 * 64) + 64;
    assert_int_equal(mi.parameters, want);
    assert_string_equal(mi.kv_cache_type, "f32");
    uint64_t kv32 = mi.kv_cache_bytes;
    engine_free(e);
    engine_free(NULL);
    /* --kv-cache-type: f16 holds half the bytes; anything else is refused before the model
     * loads; the CUDA backend's cache is f32 only */
    cfg.kv_cache_type = "f16";
    assert_int_equal(engine_new(&e, &cfg, err, sizeof(err)), 0);
    engine_model_info(e, &mi);
    assert_string_equal(mi.kv_cache_type, "f16");
    assert_true(kv32 > 0);
    assert_int_equal(mi.kv_cache_bytes * 2, kv32);
    engine_free(e);
    cfg.kv_cache_type = "q8_0";
    assert_int_equal(engine_new(&e, &cfg, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "kv cache type 'q8_0' is not f32 or f16"));
    cfg.kv_cache_type = "f16";
    cfg.device = "cuda";
    assert_int_equal(engine_new(&e, &cfg, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "needs the CPU backend"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_model_valid),
        cmocka_unit_test(test_model_rejects),
        cmocka_unit_test(test_tokenizer_rejects),
        cmocka_unit_test(test_engine_new_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
