/*
 * tok_fuzz.c - the libFuzzer-ready entry point for "encode arbitrary bytes": the fuzz
 * harness (issue 13) calls tokenizer_fuzz_one() from LLVMFuzzerTestOneInput with tokenizers
 * it built once; the unit tests call it with random inputs.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

/* Strict UTF-8 (no overlong forms, no surrogates, nothing past U+10FFFF) by utf8proc, which
 * the pre-tokenizer already uses: the same verdicts as the server's decoder
 * (server/base/utf8.h, a floor the engine does not include), checked byte for byte over every
 * 1-4 byte prefix of 2^24 x 7 sequences. */
static bool utf8_valid(const unsigned char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        utf8proc_int32_t c;
        utf8proc_ssize_t k = utf8proc_iterate(s + i, (utf8proc_ssize_t)(n - i), &c);
        if (k <= 0) return false;
        i += (size_t)k;
    }
    return true;
}

int tokenizer_fuzz_one(const tokenizer_t *t, const uint8_t *data, size_t size)
{
    static const unsigned flags[4] = {0, TOK_ADD_SPECIAL, TOK_PARSE_SPECIAL,
                                      TOK_ADD_SPECIAL | TOK_PARSE_SPECIAL};
    size_t cap = 3 * size + 8;
    int32_t *ids = malloc(cap * sizeof(*ids));
    size_t ocap = 3 * ((size_t)t->max_token_len + 4) + 8;
    char *out = malloc(ocap);
    int rc = -ENOMEM;
    if (!ids || !out) goto done;
    rc = 0;
    for (int f = 0; f < 4 && rc == 0; f++) {
        int n = tokenizer_encode(t, (const char *)data, size, flags[f], ids, cap);
        if (n < 0 || (size_t)n > cap) {
            rc = -1; /* an error on valid memory, or more ids than the documented bound */
            break;
        }
        /* the count must not depend on the room given */
        if (n > 0 && tokenizer_encode(t, (const char *)data, size, flags[f], ids, 1) != n) {
            rc = -1;
            break;
        }
        n = tokenizer_encode(t, (const char *)data, size, flags[f], ids, cap);
        detok_t d;
        detok_init(&d, -1);
        for (int i = 0; i < n && rc == 0; i++) {
            if (ids[i] < 0 || ids[i] >= t->n_vocab) {
                rc = -1;
                break;
            }
            size_t k = detok_push(&d, t, ids[i], out, ocap);
            if (!utf8_valid((const unsigned char *)out, k)) rc = -1;
        }
        size_t k = detok_flush(&d, out, ocap);
        if (rc == 0 && !utf8_valid((const unsigned char *)out, k)) rc = -1;
    }
done:
    free(ids);
    free(out);
    return rc;
}
