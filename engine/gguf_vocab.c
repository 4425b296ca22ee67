/*
 * gguf_vocab.c - INTERIM: a GGUF file's SentencePiece vocabulary (tokenizer.ggml.model =
 * "llama") loaded into the llama2.c tokenizer (tokenizer.c), so GGUF models built by
 * tools/mkmodel serve prompts end to end before the real tokenizers land (branch `tok`
 * replaces this file: gpt2/BPE vocabularies, special tokens, the end-of-generation set).
 *
 * What it accepts is exactly what tokenizer.c can run faithfully: a "llama" vocabulary
 * with BOS 1 and EOS 2 (tokenizer.c's fixed ids). Anything else is a start-up error that
 * says so, never a model that silently tokenizes wrong.
 */
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int tokenizer_from_gguf(tokenizer_t *t, const gguf_t *g, int vocab_size, char *err, size_t errlen)
{
    const char *file = gguf_name(g);
    gguf_str_t model;
    int rc = gguf_get_str(g, "tokenizer.ggml.model", &model, err, errlen);
    if (rc < 0) return rc == -ENOENT ? -EINVAL : rc;
    if (!gguf_str_eq(model, "llama"))
        return errorf(err, errlen, -EINVAL,
                      "%s: tokenizer.ggml.model '%.*s': this build reads SentencePiece ('llama') "
                      "vocabularies only",
                      file, (int)(model.len > 32 ? 32 : model.len), model.ptr);
    static const struct {
        const char *key;
        int64_t want;
    } ids[] = {{"tokenizer.ggml.bos_token_id", TOK_BOS}, {"tokenizer.ggml.eos_token_id", TOK_EOS}};
    for (size_t i = 0; i < 2; i++) {
        int64_t v;
        rc = gguf_get_int(g, ids[i].key, 0, INT32_MAX, &v, err, errlen);
        if (rc == -ENOENT) continue;
        if (rc < 0) return rc;
        if (v != ids[i].want)
            return errorf(err, errlen, -EINVAL,
                          "%s: %s is %lld; this build's SentencePiece tokenizer needs %lld", file,
                          ids[i].key, (long long)v, (long long)ids[i].want);
    }
    gguf_arr_t tok, sc = {0};
    if ((rc = gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_STRING, &tok, err, errlen)) < 0)
        return rc == -ENOENT ? -EINVAL : rc;
    if (tok.n != (uint64_t)vocab_size)
        return errorf(err, errlen, -EINVAL,
                      "%s: tokenizer.ggml.tokens has %llu tokens but token_embd.weight has %d rows",
                      file, (unsigned long long)tok.n, vocab_size);
    rc = gguf_get_arr(g, "tokenizer.ggml.scores", GGUF_FLOAT32, &sc, err, errlen);
    if (rc < 0 && rc != -ENOENT) return rc;
    if (rc == 0 && sc.n != tok.n)
        return errorf(err, errlen, -EINVAL,
                      "%s: tokenizer.ggml.scores has %llu entries for %llu tokens", file,
                      (unsigned long long)sc.n, (unsigned long long)tok.n);
    bool have_scores = rc == 0;
    /* the tokenizer.bin image: max length, then (score, length, bytes) per token, with
     * SentencePiece's U+2581 word marker written back as the space llama2.c expects */
    size_t cap = 4;
    for (uint64_t i = 0; i < tok.n; i++)
        cap += 8 + (size_t)gguf_arr_str(&tok, i).len;
    unsigned char *img = malloc(cap);
    if (!img) return errorf(err, errlen, -ENOMEM, "out of memory");
    size_t at = 4;
    int32_t maxlen = 1;
    for (uint64_t i = 0; i < tok.n; i++) {
        gguf_str_t s = gguf_arr_str(&tok, i);
        float score = have_scores ? gguf_arr_f32(&sc, i) : 0.0f;
        size_t lat = at + 4;
        at += 8;
        int32_t len = 0;
        for (uint64_t k = 0; k < s.len; k++) {
            if (k + 2 < s.len && !memcmp(s.ptr + k, "\xe2\x96\x81", 3)) {
                img[at + (size_t)len++] = ' ';
                k += 2;
            } else {
                img[at + (size_t)len++] = (unsigned char)s.ptr[k];
            }
        }
        memcpy(img + lat - 4, &score, 4);
        memcpy(img + lat, &len, 4);
        at += (size_t)len;
        if (len > maxlen) maxlen = len;
    }
    memcpy(img, &maxlen, 4);
    char why[256];
    rc = tokenizer_parse(t, img, at, vocab_size, why, sizeof why);
    free(img);
    if (rc < 0) return errorf(err, errlen, rc, "%s: vocabulary: %s", file, why);
    return 0;
}
