/* Tokenizers from GGUF metadata (tokenizer_from_gguf): a good file loads with its flags, ids
 * and chat template; every malformed key is a clear error that names the key. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "gguf.h"
#include "internal.h"
#include "tools/mkmodel/gguf_write.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NTOK (3 + 256 + 4)

/* <unk> <s> </s>, 256 byte tokens, then pieces with U+2581 for the space */
static const char *tokens[NTOK];
static char bytes[256][8];
static float scores[NTOK];
static int32_t types[NTOK];

static gguf_writer_t *spm_writer(void)
{
    tokens[0] = "<unk>";
    tokens[1] = "<s>";
    tokens[2] = "</s>";
    for (int b = 0; b < 256; b++) {
        snprintf(bytes[b], sizeof bytes[b], "<0x%02X>", b);
        tokens[3 + b] = bytes[b];
        types[3 + b] = TOK_TYPE_BYTE;
    }
    tokens[259] = "\xe2\x96\x81h";
    tokens[260] = "\xe2\x96\x81hi";
    tokens[261] = "i";
    tokens[262] = "h";
    types[0] = TOK_TYPE_UNKNOWN;
    types[1] = types[2] = TOK_TYPE_CONTROL;
    for (int i = 259; i < NTOK; i++)
        types[i] = TOK_TYPE_NORMAL;
    scores[259] = -1;
    scores[260] = -2;
    gguf_writer_t *w;
    assert_int_equal(gguf_writer_new(&w, 3, 32), 0);
    gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", tokens, NTOK);
    gguf_writer_set_arr_f32(w, "tokenizer.ggml.scores", scores, NTOK);
    gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type", types, NTOK);
    gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1);
    gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2);
    gguf_writer_set_str(w, "tokenizer.chat_template", "{{ '<|im_start|>' }}");
    return w;
}

/* Build from the writer's bytes; returns the rc, err filled. */
static int load(gguf_writer_t *w, tokenizer_t *t, char **tmpl, char *err, size_t errlen)
{
    uint8_t *buf;
    size_t size;
    assert_int_equal(gguf_writer_bytes(w, &buf, &size), 0);
    gguf_t *g;
    int rc = gguf_parse(&g, buf, size, "test.gguf", err, errlen);
    assert_int_equal(rc, 0);
    rc = tokenizer_from_gguf(t, g, tmpl, err, errlen);
    gguf_free(g);
    free(buf);
    gguf_writer_free(w);
    return rc;
}

static void bad(gguf_writer_t *w, int want_rc, const char *want)
{
    tokenizer_t t;
    char err[512] = "";
    int rc = load(w, &t, NULL, err, sizeof err);
    if (rc != want_rc || !strstr(err, want))
        fprintf(stderr, "rc %d, message '%s' (wanted %d and '%s')\n", rc, err, want_rc, want);
    assert_int_equal(rc, want_rc);
    assert_non_null(strstr(err, want));
}

static void test_good(void **state)
{
    (void)state;
    tokenizer_t t;
    char err[512], *tmpl;
    assert_int_equal(load(spm_writer(), &t, &tmpl, err, sizeof err), 0);
    assert_int_equal(t.kind, TOK_SPM);
    assert_int_equal(t.n_vocab, NTOK);
    assert_string_equal(tmpl, "{{ '<|im_start|>' }}");
    assert_string_equal(chat_detect(tmpl), "chatml");
    free(tmpl);
    int32_t ids[16];
    /* " hi" with the space prefix: one token; BOS first (llama default add_bos) */
    assert_int_equal(tokenizer_encode(&t, "hi", 2, TOK_ADD_SPECIAL, ids, 16), 2);
    assert_int_equal(ids[0], 1);
    assert_int_equal(ids[1], 260);
    size_t len;
    const char *p = tokenizer_piece(&t, 260, &len);
    assert_int_equal(len, 3);
    assert_memory_equal(p, " hi", 3);
    tokenizer_dispose(&t);
    /* add_bos_token false and add_space_prefix false are honoured */
    gguf_writer_t *w = spm_writer();
    gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", false);
    gguf_writer_set_bool(w, "tokenizer.ggml.add_space_prefix", false);
    gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", true);
    assert_int_equal(load(w, &t, NULL, err, sizeof err), 0);
    assert_int_equal(tokenizer_encode(&t, "hi", 2, TOK_ADD_SPECIAL, ids, 16), 3);
    assert_int_equal(ids[0], 262); /* "h" "i" without the space prefix */
    assert_int_equal(ids[1], 261);
    assert_int_equal(ids[2], 2);
    tokenizer_dispose(&t);
}

static void test_hostile(void **state)
{
    (void)state;
    gguf_writer_t *w;
    assert_int_equal(gguf_writer_new(&w, 3, 32), 0);
    bad(w, -ENOENT, "tokenizer.ggml.model");

    w = spm_writer();
    gguf_writer_set_str(w, "tokenizer.ggml.model", "bert");
    bad(w, -EINVAL, "tokenizer.ggml.model 'bert' is not supported");

    w = spm_writer();
    int32_t ints[3] = {1, 2, 3};
    gguf_writer_set_arr_i32(w, "tokenizer.ggml.tokens", ints, 3);
    bad(w, -EINVAL, "tokenizer.ggml.tokens");

    w = spm_writer();
    gguf_writer_set_arr_f32(w, "tokenizer.ggml.scores", scores, NTOK - 1);
    bad(w, -EINVAL, "tokenizer.ggml.scores has 262 entries for 263 tokens");

    w = spm_writer();
    gguf_writer_set_arr_f32(w, "tokenizer.ggml.token_type", scores, NTOK);
    bad(w, -EINVAL, "tokenizer.ggml.token_type");

    w = spm_writer();
    int32_t t9[NTOK];
    memcpy(t9, types, sizeof t9);
    t9[7] = 9;
    gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type", t9, NTOK);
    bad(w, -EINVAL, "tokenizer.ggml.token_type[7] = 9");

    w = spm_writer();
    gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", NTOK);
    bad(w, -EINVAL, "tokenizer.ggml.bos_token_id = 263 is outside the vocabulary");

    w = spm_writer();
    gguf_writer_set_i32(w, "tokenizer.ggml.eos_token_id", -1);
    bad(w, -EINVAL, "tokenizer.ggml.eos_token_id");

    w = spm_writer();
    gguf_writer_set_u64(w, "tokenizer.ggml.padding_token_id", 1ull << 40);
    bad(w, -EINVAL, "tokenizer.ggml.padding_token_id");

    w = spm_writer();
    gguf_writer_set_str(w, "tokenizer.ggml.add_bos_token", "yes");
    bad(w, -EINVAL, "tokenizer.ggml.add_bos_token");

    w = spm_writer();
    gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    bad(w, -EINVAL, "tokenizer.ggml.merges is missing");

    w = spm_writer();
    gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_writer_set_str(w, "tokenizer.ggml.pre", "tekken");
    const char *m[] = {"h i"};
    gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", m, 1);
    bad(w, -EINVAL, "tokenizer.ggml.pre 'tekken' is not supported");

    w = spm_writer();
    gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    const char *m2[] = {"h i", "hi"};
    gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", m2, 2);
    bad(w, -EINVAL, "tokenizer.ggml.merges[1]");

    w = spm_writer();
    const char *dup[NTOK];
    memcpy(dup, tokens, sizeof dup);
    dup[262] = "i";
    gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", dup, NTOK);
    bad(w, -EINVAL, "tokenizer.ggml.tokens[262] repeats token 261");

    w = spm_writer();
    gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", tokens, 0);
    bad(w, -EINVAL, "tokenizer.ggml.tokens has 0 entries");

    w = spm_writer();
    gguf_writer_set_u32(w, "tokenizer.chat_template", 7);
    bad(w, -EINVAL, "tokenizer.chat_template");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good),
        cmocka_unit_test(test_hostile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
