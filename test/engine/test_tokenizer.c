/* Tokenizer: BPE round trips, byte fallback, UTF-8 safe incremental decoding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int setup(void **state)
{
    tokenizer_t *t = malloc(sizeof(*t));
    char err[256];
    if (tokenizer_load(t, TINY_TOKENIZER, 512, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        free(t);
        return -1;
    }
    *state = t;
    return 0;
}

static int teardown(void **state)
{
    tokenizer_dispose(*state);
    free(*state);
    return 0;
}

/* strict UTF-8 validity (no overlongs, surrogates, > U+10FFFF) */
static int valid_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        int len;
        unsigned cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            len = 2;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            len = 3;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            len = 4;
            cp = c & 0x07;
        } else {
            return 0;
        }
        if (i + (size_t)len > n) return 0;
        for (int k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        i += (size_t)len;
    }
    return 1;
}

static size_t decode_all(const tokenizer_t *t, const int *ids, int n, char *out, size_t cap)
{
    detok_t d;
    detok_init(&d, ids[0]);
    size_t w = 0;
    for (int i = 1; i < n; i++) {
        char piece[512];
        size_t k = detok_push(&d, t, ids[i], piece, sizeof(piece));
        assert_true(valid_utf8((unsigned char *)piece, k));
        assert_true(w + k < cap);
        memcpy(out + w, piece, k);
        w += k;
    }
    w += detok_flush(&d, out + w, cap - w);
    out[w] = 0;
    return w;
}

static void test_roundtrip(void **state)
{
    const tokenizer_t *t = *state;
    const char *texts[] = {
        "Once upon a time, there was a little girl named Lily.",
        "The bird said thank you to Lily and flew into the nest.",
        "  leading spaces and\ttabs\nnewlines  ",
        "caf\xc3\xa9 \xc3\xbc\xc3\xb1\xc3\xaf\xc3\xa7\xc3\xb8"
        "d\xc3\xa9 \xe2\x82\xac 100 "
        "\xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80!",
        "x",
        "zzzz qqqq {}[]<>~`|\\",
    };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        int ids[512];
        int n = tokenizer_encode(t, texts[i], strlen(texts[i]), TOK_ADD_SPECIAL, ids, 512);
        assert_true(n > 1 && n < 512);
        assert_int_equal(ids[0], t->bos);
        char out[2048];
        decode_all(t, ids, n, out, sizeof(out));
        assert_string_equal(out, texts[i]);
        /* merges must make common English shorter than one token per byte */
        if (i < 2) assert_true((size_t)n < strlen(texts[i]) * 3 / 4);
    }
    /* empty text: just BOS (no dummy prefix); nothing without special tokens */
    int ids[4];
    assert_int_equal(tokenizer_encode(t, "", 0, TOK_ADD_SPECIAL, ids, 4), 1);
    assert_int_equal(ids[0], 1);
    assert_int_equal(tokenizer_encode(t, "", 0, 0, ids, 4), 0);
    /* count is returned even when out is too small */
    assert_int_equal(tokenizer_encode(t, "hello world", 11, 0, ids, 1) > 1, 1);
}

static void test_byte_fallback(void **state)
{
    const tokenizer_t *t = *state;
    /* U+00FC is not in the vocab: it must become <0xC3><0xBC> = ids 0xC3+3, 0xBC+3 */
    assert_int_equal(tokenizer_lookup(t, "\xc3\xbc", 2), -1);
    int ids[16];
    int n = tokenizer_encode(t, "\xc3\xbc", 2, 0, ids, 16);
    assert_int_equal(n, 3); /* dummy prefix + 2 bytes */
    assert_int_equal(ids[1], 0xC3 + 3);
    assert_int_equal(ids[2], 0xBC + 3);
    assert_int_equal(t->byte_tok[0xC3], 0xC3 + 3);
    size_t len;
    const char *p = tokenizer_piece(t, 0xC3 + 3, &len);
    assert_int_equal(len, 1);
    assert_int_equal((unsigned char)p[0], 0xC3);
    /* control tokens decode to nothing */
    for (int c = 0; c < 3; c++) {
        tokenizer_piece(t, c, &len);
        assert_int_equal(len, 0);
    }
}

static void test_utf8_split(void **state)
{
    const tokenizer_t *t = *state;
    detok_t d;
    detok_init(&d, 5);
    char out[64];
    /* euro sign E2 82 AC arrives one byte token at a time */
    assert_int_equal(detok_push(&d, t, 0xE2 + 3, out, sizeof(out)), 0);
    assert_int_equal(detok_push(&d, t, 0x82 + 3, out, sizeof(out)), 0);
    assert_int_equal(detok_push(&d, t, 0xAC + 3, out, sizeof(out)), 3);
    assert_memory_equal(out, "\xe2\x82\xac", 3);
    /* 4-byte emoji split 1 + 3 */
    assert_int_equal(detok_push(&d, t, 0xF0 + 3, out, sizeof(out)), 0);
    assert_int_equal(detok_push(&d, t, 0x9F + 3, out, sizeof(out)), 0);
    assert_int_equal(detok_push(&d, t, 0x98 + 3, out, sizeof(out)), 0);
    assert_int_equal(detok_push(&d, t, 0x80 + 3, out, sizeof(out)), 4);
    /* incomplete character interrupted by ASCII: U+FFFD then the ASCII */
    int a = tokenizer_lookup(t, "a", 1);
    assert_true(a > 0);
    assert_int_equal(detok_push(&d, t, 0xE2 + 3, out, sizeof(out)), 0);
    assert_int_equal(detok_push(&d, t, a, out, sizeof(out)), 4);
    assert_memory_equal(out,
                        "\xef\xbf\xbd"
                        "a",
                        4);
    /* invalid bytes, overlong and surrogate starts become U+FFFD */
    assert_int_equal(detok_push(&d, t, 0xFF + 3, out, sizeof(out)), 3);
    assert_int_equal(detok_push(&d, t, 0xC0 + 3, out, sizeof(out)), 3);
    assert_int_equal(detok_push(&d, t, 0xED + 3, out, sizeof(out)), 0);
    assert_int_equal(detok_push(&d, t, 0xA0 + 3, out, sizeof(out)), 6); /* FFFD FFFD */
    /* pending bytes at the end flush as one U+FFFD */
    assert_int_equal(detok_push(&d, t, 0xC3 + 3, out, sizeof(out)), 0);
    assert_int_equal(detok_flush(&d, out, sizeof(out)), 3);
    assert_int_equal(detok_flush(&d, out, sizeof(out)), 0);
}

static void test_random_tokens_valid(void **state)
{
    const tokenizer_t *t = *state;
    rng_t r;
    rng_seed(&r, 99);
    for (int iter = 0; iter < 200; iter++) {
        detok_t d;
        detok_init(&d, 1);
        for (int i = 0; i < 50; i++) {
            int tok = (int)(rng_next(&r) % 512);
            char out[512];
            size_t k = detok_push(&d, t, tok, out, sizeof(out));
            assert_true(valid_utf8((unsigned char *)out, k));
        }
        char out[8];
        size_t k = detok_flush(&d, out, sizeof(out));
        assert_true(valid_utf8((unsigned char *)out, k));
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_byte_fallback),
        cmocka_unit_test(test_utf8_split),
        cmocka_unit_test(test_random_tokens_valid),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
