/*
 * tokenizer_gguf.c - a tokenizer from a GGUF file's tokenizer.ggml.* metadata, checked the
 * way every loader error in inferd is: a wrong type, a missing key, an array shorter than the
 * token list or an id outside it is a start-up error that names the key.
 */
#include "gguf.h"
#include "internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* An optional id key: TOK_NONE when absent. */
static int id_key(const gguf_t *g, const char *key, int64_t *out, char *err, size_t errlen)
{
    *out = TOK_NONE;
    if (gguf_find_key(g, key) < 0) return 0;
    return gguf_get_int(g, key, 0, UINT32_MAX, out, err, errlen);
}

/* An optional bool key: -1 when absent. */
static int flag_key(const gguf_t *g, const char *key, int *out, char *err, size_t errlen)
{
    *out = -1;
    if (gguf_find_key(g, key) < 0) return 0;
    bool b;
    int rc = gguf_get_bool(g, key, &b, err, errlen);
    if (rc == 0) *out = b;
    return rc;
}

int tokenizer_from_gguf(tokenizer_t *t, const gguf_t *g, char **chat_template, char *err,
                        size_t errlen)
{
    memset(t, 0, sizeof(*t));
    if (chat_template) *chat_template = NULL;
    tok_vocab_t v = {0};
    gguf_str_t model, pre = {0}, tmpl = {0};
    gguf_arr_t toks, scores = {0}, types = {0}, merges = {0};
    tok_str_t *ts = NULL, *ms = NULL;
    float *sc = NULL;
    int32_t *ty = NULL;
    char prebuf[64];
    int rc = gguf_get_str(g, "tokenizer.ggml.model", &model, err, errlen);
    if (rc < 0) return rc;
    if (gguf_str_eq(model, "llama"))
        v.kind = TOK_SPM;
    else if (gguf_str_eq(model, "gpt2"))
        v.kind = TOK_BPE;
    else
        return errorf(err, errlen, -EINVAL,
                      "%s: tokenizer.ggml.model '%.*s' is not supported (supported: llama, gpt2)",
                      gguf_name(g), (int)(model.len < 64 ? model.len : 64), model.ptr);
    if ((rc = gguf_get_arr(g, "tokenizer.ggml.tokens", GGUF_STRING, &toks, err, errlen)) < 0)
        return rc;
    if (toks.n == 0 || toks.n > TOK_MAX_VOCAB)
        return errorf(err, errlen, -EINVAL,
                      "%s: tokenizer.ggml.tokens has %llu entries (1 to %u allowed)", gguf_name(g),
                      (unsigned long long)toks.n, TOK_MAX_VOCAB);
    size_t n = (size_t)toks.n;
    if (gguf_find_key(g, "tokenizer.ggml.scores") >= 0) {
        if ((rc = gguf_get_arr(g, "tokenizer.ggml.scores", GGUF_TYPE_COUNT, &scores, err, errlen)) <
            0)
            return rc;
        if (scores.type != GGUF_FLOAT32 && scores.type != GGUF_INT32)
            return errorf(err, errlen, -EINVAL,
                          "%s: tokenizer.ggml.scores holds %s, expected FLOAT32", gguf_name(g),
                          gguf_type_name(scores.type));
        if (scores.n < n)
            return errorf(err, errlen, -EINVAL,
                          "%s: tokenizer.ggml.scores has %llu entries for %zu tokens", gguf_name(g),
                          (unsigned long long)scores.n, n);
    }
    if (gguf_find_key(g, "tokenizer.ggml.token_type") >= 0) {
        if ((rc = gguf_get_arr(g, "tokenizer.ggml.token_type", GGUF_INT32, &types, err, errlen)) <
            0)
            return rc;
        if (types.n < n)
            return errorf(err, errlen, -EINVAL,
                          "%s: tokenizer.ggml.token_type has %llu entries for %zu tokens",
                          gguf_name(g), (unsigned long long)types.n, n);
    }
    if (gguf_find_key(g, "tokenizer.ggml.merges") >= 0) {
        if ((rc = gguf_get_arr(g, "tokenizer.ggml.merges", GGUF_STRING, &merges, err, errlen)) < 0)
            return rc;
        if (merges.n > TOK_MAX_MERGES)
            return errorf(err, errlen, -EINVAL,
                          "%s: tokenizer.ggml.merges has %llu entries, more than the %u allowed",
                          gguf_name(g), (unsigned long long)merges.n, TOK_MAX_MERGES);
    }
    if (gguf_find_key(g, "tokenizer.ggml.pre") >= 0) {
        if ((rc = gguf_get_str(g, "tokenizer.ggml.pre", &pre, err, errlen)) < 0) return rc;
        size_t k = pre.len < sizeof prebuf - 1 ? (size_t)pre.len : sizeof prebuf - 1;
        memcpy(prebuf, pre.ptr, k);
        prebuf[k] = 0;
        v.pre = prebuf;
    }
    if ((rc = id_key(g, "tokenizer.ggml.bos_token_id", &v.bos, err, errlen)) < 0 ||
        (rc = id_key(g, "tokenizer.ggml.eos_token_id", &v.eos, err, errlen)) < 0 ||
        (rc = id_key(g, "tokenizer.ggml.eot_token_id", &v.eot, err, errlen)) < 0 ||
        (rc = id_key(g, "tokenizer.ggml.eom_token_id", &v.eom, err, errlen)) < 0 ||
        (rc = id_key(g, "tokenizer.ggml.unknown_token_id", &v.unk, err, errlen)) < 0 ||
        (rc = id_key(g, "tokenizer.ggml.padding_token_id", &v.pad, err, errlen)) < 0 ||
        (rc = flag_key(g, "tokenizer.ggml.add_bos_token", &v.add_bos, err, errlen)) < 0 ||
        (rc = flag_key(g, "tokenizer.ggml.add_eos_token", &v.add_eos, err, errlen)) < 0 ||
        (rc = flag_key(g, "tokenizer.ggml.add_space_prefix", &v.add_space_prefix, err, errlen)) < 0)
        return rc;
    gguf_str_t gname = {0};
    char namebuf[128] = "";
    if (gguf_find_key(g, "general.name") >= 0 &&
        gguf_get_str(g, "general.name", &gname, NULL, 0) == 0) {
        size_t k = gname.len < sizeof namebuf - 1 ? (size_t)gname.len : sizeof namebuf - 1;
        memcpy(namebuf, gname.ptr, k);
        namebuf[k] = 0;
        v.model_name = namebuf;
    }
    if (gguf_find_key(g, "tokenizer.chat_template") >= 0 &&
        (rc = gguf_get_str(g, "tokenizer.chat_template", &tmpl, err, errlen)) < 0)
        return rc;

    rc = -ENOMEM;
    ts = malloc(n * sizeof(*ts));
    if (scores.n) sc = malloc(n * sizeof(*sc));
    if (types.n) ty = malloc(n * sizeof(*ty));
    if (merges.n) ms = malloc((size_t)merges.n * sizeof(*ms));
    if (!ts || (scores.n && !sc) || (types.n && !ty) || (merges.n && !ms)) goto out;
    for (size_t i = 0; i < n; i++) {
        gguf_str_t s = gguf_arr_str(&toks, i);
        ts[i] = (tok_str_t){s.ptr, (size_t)s.len};
        if (sc)
            sc[i] = scores.type == GGUF_FLOAT32 ? gguf_arr_f32(&scores, i)
                                                : (float)gguf_arr_int(&scores, i);
        if (ty) {
            int64_t x = gguf_arr_int(&types, i);
            ty[i] = x < INT32_MIN || x > INT32_MAX ? -1 : (int32_t)x; /* build names it */
        }
    }
    for (size_t i = 0; i < (size_t)merges.n; i++) {
        gguf_str_t s = gguf_arr_str(&merges, i);
        ms[i] = (tok_str_t){s.ptr, (size_t)s.len};
    }
    v.n_tokens = n;
    v.tokens = ts;
    v.scores = sc;
    v.types = ty;
    v.n_merges = (size_t)merges.n;
    v.merges = ms;
    v.escape_spaces = true;
    char why[400];
    rc = tokenizer_build(t, &v, why, sizeof why);
    if (rc < 0) {
        errorf(err, errlen, rc, "%s: %s", gguf_name(g), why);
        goto out;
    }
    if (chat_template && tmpl.len) {
        *chat_template = malloc((size_t)tmpl.len + 1);
        if (!*chat_template) {
            tokenizer_dispose(t);
            rc = errorf(err, errlen, -ENOMEM, "out of memory");
            goto out;
        }
        memcpy(*chat_template, tmpl.ptr, (size_t)tmpl.len);
        (*chat_template)[tmpl.len] = 0;
    }
    rc = 0;
out:
    if (rc == -ENOMEM && err && !err[0]) errorf(err, errlen, rc, "out of memory");
    free(ts);
    free(sc);
    free(ty);
    free(ms);
    return rc;
}
