/*
 * vocab_import.c - tokenizer.json + tokenizer_config.json -> tokenizer.ggml.* values, as
 * llama.cpp's convert_hf_to_gguf.py (get_vocab_base, SpecialVocab, LlamaHfVocab) writes them.
 */
#include "vocab_import.h"
#include "engine/backend.h"

#include "gguf_write.h"

#include <errno.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Files are read with every number as a double (tokenizer_config.json holds 1e30-sized
 * integers): ids are exact doubles well below 2^53. */
static int64_t jint(const json_t *j)
{
    return json_is_number(j) ? (int64_t)json_number_value(j) : -1;
}

static json_t *load_json(const char *dir, const char *name, int *rc, char *err, size_t errlen)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        *rc = errorf(err, errlen, -ENOENT, "cannot open %s", path);
        return NULL;
    }
    fclose(f);
    json_error_t je;
    json_t *j = json_load_file(path, JSON_DECODE_INT_AS_REAL, &je);
    if (!j) *rc = errorf(err, errlen, -EINVAL, "%s: line %d: %s", path, je.line, je.text);
    return j;
}

static int set_str(tok_str_t *t, const char *s, size_t n)
{
    char *c = malloc(n + 1);
    if (!c) return -ENOMEM;
    memcpy(c, s, n);
    c[n] = 0;
    t->s = c;
    t->n = n;
    return 0;
}

/* convert's does_token_look_special */
static int looks_special(const char *s)
{
    size_t n = strlen(s);
    if (!strcmp(s, "<pad>") || !strcmp(s, "<mask>") || !strcmp(s, "<2mass>") ||
        !strcmp(s, "[@BOS@]"))
        return 1;
    if (n >= 4 && !strncmp(s, "<|", 2) && !strcmp(s + n - 2, "|>")) return 1;
    if (n >= 8 && !strncmp(s, "<\xef\xbd\x9c", 4) && !strcmp(s + n - 4, "\xef\xbd\x9c>")) return 1;
    if (!strncmp(s, "<unused", 7) && s[n - 1] == '>') return 1;
    return 0;
}

static int is_byte_token(const char *s)
{
    static const char hex[] = "0123456789ABCDEFabcdef";
    return strlen(s) == 6 && !strncmp(s, "<0x", 3) && s[5] == '>' && strchr(hex, s[3]) &&
           strchr(hex, s[4]);
}

/* The id of the added token whose content is a tokenizer_config entry (string or {content}). */
static int64_t special_id(json_t *cfg, const char *key, json_t *added)
{
    json_t *e = json_object_get(cfg, key);
    const char *content = json_is_string(e)   ? json_string_value(e)
                          : json_is_object(e) ? json_string_value(json_object_get(e, "content"))
                                              : NULL;
    if (!content) return TOK_NONE;
    size_t i;
    json_t *a;
    json_array_foreach(added, i, a)
    {
        const char *c = json_string_value(json_object_get(a, "content"));
        if (c && !strcmp(c, content)) return jint(json_object_get(a, "id"));
    }
    return TOK_NONE;
}

/* The regexes of the Split pre-tokenizers convert recognizes for these models. */
static const char RX_LLAMA3[] =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char RX_QWEN2[] = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
                               "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

static const char *pre_name(json_t *pt, char *why, size_t whylen)
{
    const char *type = json_string_value(json_object_get(pt, "type"));
    if (!type) {
        snprintf(why, whylen, "no pre_tokenizer");
        return NULL;
    }
    if (!strcmp(type, "ByteLevel") && json_is_true(json_object_get(pt, "use_regex"))) return "gpt2";
    if (!strcmp(type, "Sequence")) {
        json_t *l = json_object_get(pt, "pretokenizers");
        size_t n = json_array_size(l);
        json_t *a = json_array_get(l, 0), *b = json_array_get(l, 1);
        const char *ta = json_string_value(json_object_get(a, "type"));
        const char *tb = json_string_value(json_object_get(b, "type"));
        if (n == 2 && ta && tb && !strcmp(tb, "ByteLevel")) {
            if (!strcmp(ta, "Split")) {
                const char *rx =
                    json_string_value(json_object_get(json_object_get(a, "pattern"), "Regex"));
                if (rx && !strcmp(rx, RX_LLAMA3)) return "llama-bpe";
                if (rx && !strcmp(rx, RX_QWEN2)) return "qwen2";
                snprintf(why, whylen, "Split regex '%.120s'", rx ? rx : "(none)");
                return NULL;
            }
            if (!strcmp(ta, "Digits") && json_is_true(json_object_get(a, "individual_digits")) &&
                json_is_true(json_object_get(b, "use_regex")))
                return "smollm";
        }
    }
    snprintf(why, whylen, "pre_tokenizer of type %s", type);
    return NULL;
}

void vocab_import_free(vocab_import_t *v)
{
    for (size_t i = 0; v->tokens && i < v->n_tokens; i++)
        free((char *)v->tokens[i].s);
    for (size_t i = 0; v->merges && i < v->n_merges; i++)
        free((char *)v->merges[i].s);
    free(v->tokens);
    free(v->merges);
    free(v->scores);
    free(v->types);
    free(v->pre);
    free(v->chat_template);
    memset(v, 0, sizeof(*v));
}

void vocab_import_view(const vocab_import_t *v, tok_vocab_t *out)
{
    memset(out, 0, sizeof(*out));
    out->kind = !strcmp(v->model, "llama") ? TOK_SPM : TOK_BPE;
    out->pre = v->pre;
    out->n_tokens = v->n_tokens;
    out->tokens = v->tokens;
    out->scores = v->scores;
    out->types = v->types;
    out->n_merges = v->n_merges;
    out->merges = v->merges;
    out->bos = v->bos;
    out->eos = v->eos;
    out->eot = TOK_NONE;
    out->eom = TOK_NONE;
    out->unk = v->unk;
    out->pad = v->pad;
    out->add_bos = v->add_bos;
    out->add_eos = v->add_eos;
    out->add_space_prefix = -1;
    out->escape_spaces = true;
}

/* A merge as a "left right" string; list pairs get their spaces encoded as U+0120 first, as
 * gguf-py's SpecialVocab does. */
static int merge_string(json_t *m, tok_str_t *out)
{
    if (json_is_string(m)) return set_str(out, json_string_value(m), json_string_length(m));
    if (!json_is_array(m) || json_array_size(m) != 2) return -EINVAL;
    char buf[2 * 3 * 4096 + 2];
    size_t k = 0;
    for (int part = 0; part < 2; part++) {
        const char *s = json_string_value(json_array_get(m, (size_t)part));
        if (!s) return -EINVAL;
        if (part) buf[k++] = ' ';
        for (; *s; s++) {
            if (k + 3 >= sizeof buf) return -EINVAL;
            if (*s == ' ') {
                buf[k++] = (char)0xC4; /* U+0120 */
                buf[k++] = (char)0xA0;
            } else {
                buf[k++] = *s;
            }
        }
    }
    return set_str(out, buf, k);
}

int vocab_import(vocab_import_t *v, const char *dir, uint32_t n_vocab, char *err, size_t errlen)
{
    int rc = 0;
    memset(v, 0, sizeof(*v));
    v->bos = v->eos = v->unk = v->pad = TOK_NONE;
    v->add_bos = v->add_eos = -1;
    json_t *tj = load_json(dir, "tokenizer.json", &rc, err, errlen);
    if (!tj) return rc;
    json_t *cj = load_json(dir, "tokenizer_config.json", &rc, err, errlen);
    if (!cj) {
        json_decref(tj);
        return rc;
    }
    json_t *model = json_object_get(tj, "model");
    json_t *vocab = json_object_get(model, "vocab");
    json_t *merges = json_object_get(model, "merges");
    json_t *added = json_object_get(tj, "added_tokens");
    const char *mtype = json_string_value(json_object_get(model, "type"));
    if (!mtype || strcmp(mtype, "BPE") || !json_is_object(vocab) || !json_is_array(merges)) {
        rc = errorf(err, errlen, -EINVAL,
                    "%s/tokenizer.json: model is not a BPE with vocab and merges", dir);
        goto out;
    }
    const char *dec = json_string_value(json_object_get(json_object_get(tj, "decoder"), "type"));
    bool spm =
        json_is_true(json_object_get(model, "byte_fallback")) && dec && !strcmp(dec, "Sequence");
    char why[200];
    const char *pre =
        spm ? "default" : pre_name(json_object_get(tj, "pre_tokenizer"), why, sizeof why);
    if (!pre) {
        rc = errorf(err, errlen, -EINVAL,
                    "%s/tokenizer.json: %s is not a pre-tokenizer inferd knows (llama-bpe, qwen2, "
                    "smollm, gpt2)",
                    dir, why);
        goto out;
    }
    v->model = spm ? "llama" : "gpt2";
    v->pre = strdup(pre);

    /* ids: the base vocabulary, then added tokens; the count is the largest id + 1 */
    int64_t maxid = -1;
    const char *key;
    json_t *val;
    json_object_foreach(vocab, key, val)
    {
        if (jint(val) > maxid) maxid = jint(val);
    }
    size_t i;
    json_t *a;
    json_array_foreach(added, i, a)
    {
        if (jint(json_object_get(a, "id")) > maxid) maxid = jint(json_object_get(a, "id"));
    }
    size_t n = (size_t)(maxid + 1);
    if (n_vocab > n) n = n_vocab;
    if (maxid < 0 || n > TOK_MAX_VOCAB) {
        rc = errorf(err, errlen, -EINVAL,
                    "%s/tokenizer.json: %lld tokens is not a usable vocabulary", dir,
                    (long long)(maxid + 1));
        goto out;
    }
    v->n_tokens = n;
    v->tokens = calloc(n, sizeof(*v->tokens));
    v->types = calloc(n, sizeof(*v->types));
    if (spm) v->scores = calloc(n, sizeof(*v->scores));
    if (!v->pre || !v->tokens || !v->types || (spm && !v->scores)) goto nomem;
    json_object_foreach(vocab, key, val)
    {
        int64_t id = jint(val);
        if (id < 0) continue;
        if (set_str(&v->tokens[id], key, strlen(key)) < 0) goto nomem;
        v->types[id] = spm && is_byte_token(key) ? TOK_TYPE_BYTE : TOK_TYPE_NORMAL;
    }
    json_array_foreach(added, i, a)
    {
        int64_t id = jint(json_object_get(a, "id"));
        const char *c = json_string_value(json_object_get(a, "content"));
        if (id < 0 || !c) continue;
        bool base = v->tokens[id].s != NULL;
        free((char *)v->tokens[id].s);
        if (set_str(&v->tokens[id], c, strlen(c)) < 0) goto nomem;
        bool special = json_is_true(json_object_get(a, "special"));
        if (spm) /* LlamaHfVocab: special ids are CONTROL; other added tokens USER_DEFINED */
            v->types[id] = special ? TOK_TYPE_CONTROL : base ? v->types[id] : TOK_TYPE_USER_DEFINED;
        else
            v->types[id] = special || looks_special(c) ? TOK_TYPE_CONTROL : TOK_TYPE_USER_DEFINED;
    }
    for (size_t id = 0; id < n; id++) {
        if (v->tokens[id].s) continue;
        char pad[32];
        int k = snprintf(pad, sizeof pad, "[PAD%zu]", id);
        if (set_str(&v->tokens[id], pad, (size_t)k) < 0) goto nomem;
        v->types[id] = TOK_TYPE_UNUSED;
    }

    if (spm) {
        /* score = minus the rank of the first merge forming the token (see the header) */
        for (size_t id = 0; id < n; id++)
            v->scores[id] = v->types[id] == TOK_TYPE_NORMAL && v->tokens[id].n > 1 ? -1e9f : 0.0f;
        json_t *m;
        json_array_foreach(merges, i, m)
        {
            tok_str_t s;
            if (merge_string(m, &s) < 0) {
                rc = errorf(err, errlen, -EINVAL, "%s/tokenizer.json: merge %zu is malformed", dir,
                            i);
                goto out;
            }
            /* "left right" -> "leftright" */
            const char *sp = s.n > 1 ? memchr(s.s + 1, ' ', s.n - 1) : NULL;
            if (sp) {
                char *cat = (char *)s.s;
                memmove(cat + (sp - s.s), sp + 1, s.n - (size_t)(sp - s.s) - 1);
                cat[s.n - 1] = 0;
                json_t *id = json_object_get(vocab, cat);
                if (json_is_number(id) && v->scores[jint(id)] == -1e9f)
                    v->scores[jint(id)] = -(float)i;
            }
            free((char *)s.s);
        }
    } else {
        v->n_merges = json_array_size(merges);
        v->merges = calloc(v->n_merges ? v->n_merges : 1, sizeof(*v->merges));
        if (!v->merges) goto nomem;
        json_t *m;
        json_array_foreach(merges, i, m)
        {
            int r = merge_string(m, &v->merges[i]);
            if (r == -ENOMEM) goto nomem;
            if (r < 0) {
                rc = errorf(err, errlen, -EINVAL, "%s/tokenizer.json: merge %zu is malformed", dir,
                            i);
                goto out;
            }
        }
    }

    /* SpecialVocab: ids of the tokens tokenizer_config.json names; add_*_token flags */
    v->bos = special_id(cj, "bos_token", added);
    v->eos = special_id(cj, "eos_token", added);
    v->unk = special_id(cj, "unk_token", added);
    v->pad = special_id(cj, "pad_token", added);
    json_t *ab = json_object_get(cj, "add_bos_token"), *ae = json_object_get(cj, "add_eos_token");
    if (json_is_boolean(ab)) v->add_bos = json_is_true(ab);
    if (json_is_boolean(ae)) v->add_eos = json_is_true(ae);
    json_t *ct = json_object_get(cj, "chat_template");
    if (json_is_array(ct)) { /* named templates: the default one */
        json_t *e;
        json_array_foreach(ct, i, e)
        {
            const char *nm = json_string_value(json_object_get(e, "name"));
            if (nm && !strcmp(nm, "default")) ct = json_object_get(e, "template");
        }
    }
    if (json_is_string(ct) && !(v->chat_template = strdup(json_string_value(ct)))) goto nomem;
    rc = 0;
    goto out;
nomem:
    rc = errorf(err, errlen, -ENOMEM, "out of memory importing %s", dir);
out:
    json_decref(tj);
    json_decref(cj);
    if (rc < 0) vocab_import_free(v);
    return rc;
}

/* strings and lengths for the writer */
static int write_strs(struct gguf_writer *w, const char *key, const tok_str_t *s, size_t n)
{
    const char **p = malloc((n ? n : 1) * sizeof(*p));
    size_t *l = malloc((n ? n : 1) * sizeof(*l));
    int rc = -ENOMEM;
    if (p && l) {
        for (size_t i = 0; i < n; i++) {
            p[i] = s[i].s;
            l[i] = s[i].n;
        }
        rc = gguf_writer_set_arr_strn(w, key, p, l, n);
    }
    free(p);
    free(l);
    return rc;
}

int vocab_import_write(const vocab_import_t *v, struct gguf_writer *w)
{
    int rc = 0;
    rc |= gguf_writer_set_str(w, "tokenizer.ggml.model", v->model);
    rc |= gguf_writer_set_str(w, "tokenizer.ggml.pre", v->pre);
    rc |= write_strs(w, "tokenizer.ggml.tokens", v->tokens, v->n_tokens);
    if (v->scores)
        rc |= gguf_writer_set_arr_f32(w, "tokenizer.ggml.scores", v->scores, v->n_tokens);
    rc |= gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type", v->types, v->n_tokens);
    if (v->merges) rc |= write_strs(w, "tokenizer.ggml.merges", v->merges, v->n_merges);
    static const char *const id_keys[4] = {
        "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
        "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id"};
    const int64_t ids[4] = {v->bos, v->eos, v->unk, v->pad};
    for (int i = 0; i < 4; i++)
        if (ids[i] >= 0) rc |= gguf_writer_set_u32(w, id_keys[i], (uint32_t)ids[i]);
    if (v->add_bos >= 0) rc |= gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", v->add_bos);
    if (v->add_eos >= 0) rc |= gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", v->add_eos);
    if (v->chat_template) rc |= gguf_writer_set_str(w, "tokenizer.chat_template", v->chat_template);
    return rc ? -ENOMEM : 0;
}
