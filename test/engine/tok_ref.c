/*
 * tok_ref - the tokenizer side of the reference tests (tok_reference.py drives it).
 *   tok_ref keys DIR                 tokenizer.ggml.* values imported from DIR (JSON)
 *   tok_ref gguf FILE CORPUS.json    the same as encode, with the vocabulary read from a GGUF
 *                                    file (tokenizer_from_gguf)
 *   tok_ref encode DIR CORPUS.json   ids of every corpus string: raw (no special tokens),
 *                                    special (control tokens matched), add (BOS/EOS added),
 *                                    and the streamed decode of the raw ids
 *   tok_ref chat DIR NAME CONV.json  render a conversation (NAME, or "auto": the vocabulary's
 *                                    own template) and tokenize it as a chat request would
 *   tok_ref render NAME CONV.json    render only
 *   tok_ref detect TEMPLATE.txt      the template name chat_detect gives (or null)
 *   tok_ref chatbatch JOB.json       {messages, templates: [...]}: for each template text the
 *                                    detected name and, when inferd renders it, the text
 * DIR holds tokenizer.json and tokenizer_config.json.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/gguf.h"
#include "engine/tokenizer.h"
#include "tools/mkmodel/vocab_import.h"

static int build(const char *dir, vocab_import_t *vi, tokenizer_t *t)
{
    char err[512];
    if (vocab_import(vi, dir, 0, err, sizeof err) < 0) {
        fprintf(stderr, "tok_ref: %s\n", err);
        return -1;
    }
    tok_vocab_t v;
    vocab_import_view(vi, &v);
    if (tokenizer_build(t, &v, err, sizeof err) < 0) {
        fprintf(stderr, "tok_ref: %s\n", err);
        vocab_import_free(vi);
        return -1;
    }
    return 0;
}

static json_t *ids_of(const tokenizer_t *t, const char *s, size_t n, unsigned flags)
{
    size_t cap = 3 * n + 8;
    int32_t *ids = malloc(cap * sizeof(*ids));
    int k = tokenizer_encode(t, s, n, flags, ids, cap);
    json_t *a = json_array();
    for (int i = 0; i < k; i++)
        json_array_append_new(a, json_integer(ids[i]));
    free(ids);
    return a;
}

static json_t *decode_of(const tokenizer_t *t, json_t *ids)
{
    size_t n = json_array_size(ids), w = 0;
    char *out = malloc(n * (3 * (size_t)t->max_token_len + 16) + 16);
    detok_t d;
    detok_init(&d, -1);
    for (size_t i = 0; i < n; i++)
        w += detok_push(&d, t, (int)json_integer_value(json_array_get(ids, i)), out + w,
                        3 * (size_t)t->max_token_len + 16);
    w += detok_flush(&d, out + w, 8);
    json_t *s = json_stringn(out, w);
    free(out);
    return s;
}

static json_t *opt_int(int64_t v);

static json_t *encode_all(const tokenizer_t *t, json_t *corpus)
{
    json_t *out = json_object();
    json_t *res = json_array();
    size_t i;
    json_t *s;
    json_array_foreach(corpus, i, s)
    {
        const char *txt = json_string_value(s);
        size_t n = json_string_length(s);
        json_t *e = json_object();
        json_t *raw = ids_of(t, txt, n, 0);
        json_object_set_new(e, "special", ids_of(t, txt, n, TOK_PARSE_SPECIAL));
        json_object_set_new(e, "add", ids_of(t, txt, n, TOK_ADD_SPECIAL));
        json_object_set_new(e, "chat", ids_of(t, txt, n, TOK_ADD_SPECIAL | TOK_PARSE_SPECIAL));
        json_object_set_new(e, "decode", decode_of(t, raw));
        json_object_set_new(e, "raw", raw);
        json_array_append_new(res, e);
    }
    json_object_set_new(out, "results", res);
    json_t *eog = json_array();
    for (int k = 0; k < t->n_eog; k++)
        json_array_append_new(eog, json_integer(t->eog[k]));
    json_object_set_new(out, "eog", eog);
    json_object_set_new(out, "bos", opt_int(t->bos));
    json_object_set_new(out, "eos", opt_int(t->eos));
    json_object_set_new(out, "add_bos", json_boolean(t->add_bos));
    return out;
}

static chat_msg_t *load_conv(const char *path, json_t **root, size_t *n)
{
    json_error_t je;
    *root = json_load_file(path, 0, &je);
    if (!*root) {
        fprintf(stderr, "tok_ref: %s: %s\n", path, je.text);
        return NULL;
    }
    *n = json_array_size(*root);
    chat_msg_t *m = calloc(*n ? *n : 1, sizeof(*m));
    for (size_t i = 0; i < *n; i++) {
        json_t *e = json_array_get(*root, i);
        m[i].role = json_string_value(json_object_get(e, "role"));
        m[i].content = json_string_value(json_object_get(e, "content"));
    }
    return m;
}

static json_t *strs(const tok_str_t *s, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_stringn(s[i].s, s[i].n));
    return a;
}

static json_t *opt_int(int64_t v)
{
    return v < 0 ? json_null() : json_integer(v);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: tok_ref keys|encode|chat|render|detect ...\n");
        return 2;
    }
    const char *cmd = argv[1];
    json_t *out = NULL;
    vocab_import_t vi = {0};
    tokenizer_t t = {0};
    char err[512];
    if (!strcmp(cmd, "keys")) {
        if (vocab_import(&vi, argv[2], 0, err, sizeof err) < 0) {
            fprintf(stderr, "tok_ref: %s\n", err);
            return 1;
        }
        out = json_object();
        json_object_set_new(out, "model", json_string(vi.model));
        json_object_set_new(out, "pre", json_string(vi.pre));
        json_object_set_new(out, "tokens", strs(vi.tokens, vi.n_tokens));
        json_t *types = json_array(), *scores = vi.scores ? json_array() : json_null();
        for (size_t i = 0; i < vi.n_tokens; i++) {
            json_array_append_new(types, json_integer(vi.types[i]));
            if (vi.scores) json_array_append_new(scores, json_real(vi.scores[i]));
        }
        json_object_set_new(out, "types", types);
        json_object_set_new(out, "scores", scores);
        json_object_set_new(out, "merges", vi.merges ? strs(vi.merges, vi.n_merges) : json_null());
        json_object_set_new(out, "bos", opt_int(vi.bos));
        json_object_set_new(out, "eos", opt_int(vi.eos));
        json_object_set_new(out, "unk", opt_int(vi.unk));
        json_object_set_new(out, "pad", opt_int(vi.pad));
        json_object_set_new(out, "add_bos",
                            vi.add_bos < 0 ? json_null() : json_boolean(vi.add_bos));
        json_object_set_new(out, "add_eos",
                            vi.add_eos < 0 ? json_null() : json_boolean(vi.add_eos));
        json_object_set_new(out, "chat_template",
                            vi.chat_template ? json_string(vi.chat_template) : json_null());
    } else if ((!strcmp(cmd, "encode") || !strcmp(cmd, "gguf")) && argc == 4) {
        if (!strcmp(cmd, "gguf")) {
            gguf_t *g;
            if (gguf_open(&g, argv[2], err, sizeof err) < 0 ||
                tokenizer_from_gguf(&t, g, NULL, err, sizeof err) < 0) {
                fprintf(stderr, "tok_ref: %s\n", err);
                return 1;
            }
            gguf_free(g);
        } else if (build(argv[2], &vi, &t) < 0) {
            return 1;
        }
        json_error_t je;
        json_t *corpus = json_load_file(argv[3], 0, &je);
        if (!corpus) {
            fprintf(stderr, "tok_ref: %s: %s\n", argv[3], je.text);
            return 1;
        }
        out = encode_all(&t, corpus);
        json_decref(corpus);
    } else if (!strcmp(cmd, "chat") && argc == 5) {
        if (build(argv[2], &vi, &t) < 0) return 1;
        const char *name = strcmp(argv[3], "auto") ? argv[3] : chat_detect(vi.chat_template);
        json_t *root;
        size_t n;
        chat_msg_t *m = load_conv(argv[4], &root, &n);
        char *text;
        if (!m || chat_render(name, m, n, true, &text, err, sizeof err) < 0) {
            fprintf(stderr, "tok_ref: %s\n", m ? err : "bad conversation");
            return 1;
        }
        out = json_object();
        json_object_set_new(out, "template", json_string(name));
        json_object_set_new(out, "text", json_string(text));
        json_object_set_new(out, "ids",
                            ids_of(&t, text, strlen(text), TOK_ADD_SPECIAL | TOK_PARSE_SPECIAL));
        free(text);
        free(m);
        json_decref(root);
    } else if (!strcmp(cmd, "render") && argc == 4) {
        json_t *root;
        size_t n;
        chat_msg_t *m = load_conv(argv[3], &root, &n);
        char *text;
        if (!m || chat_render(argv[2], m, n, true, &text, err, sizeof err) < 0) {
            fprintf(stderr, "tok_ref: %s\n", m ? err : "bad conversation");
            return 1;
        }
        out = json_string(text);
        free(text);
        free(m);
        json_decref(root);
    } else if (!strcmp(cmd, "chatbatch")) {
        json_error_t je;
        json_t *job = json_load_file(argv[2], 0, &je);
        if (!job) {
            fprintf(stderr, "tok_ref: %s: %s\n", argv[2], je.text);
            return 1;
        }
        json_t *msgs = json_object_get(job, "messages");
        size_t n = json_array_size(msgs);
        chat_msg_t *m = calloc(n ? n : 1, sizeof(*m));
        for (size_t i = 0; i < n; i++) {
            json_t *e = json_array_get(msgs, i);
            m[i].role = json_string_value(json_object_get(e, "role"));
            m[i].content = json_string_value(json_object_get(e, "content"));
        }
        out = json_array();
        size_t i;
        json_t *tj;
        json_array_foreach(json_object_get(job, "templates"), i, tj)
        {
            const char *name = chat_detect(json_string_value(tj));
            json_t *e = json_object();
            json_object_set_new(e, "detected", name ? json_string(name) : json_null());
            char *text = NULL;
            if (name && chat_supported(name) &&
                chat_render(name, m, n, true, &text, err, sizeof err) == 0)
                json_object_set_new(e, "text", json_string(text));
            else
                json_object_set_new(e, "text", json_null());
            free(text);
            json_array_append_new(out, e);
        }
        free(m);
        json_decref(job);
    } else if (!strcmp(cmd, "detect")) {
        FILE *f = fopen(argv[2], "rb");
        if (!f) return 1;
        static char buf[1 << 20];
        size_t k = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[k] = 0;
        const char *name = chat_detect(buf);
        out = name ? json_string(name) : json_null();
    } else {
        fprintf(stderr, "tok_ref: bad command\n");
        return 2;
    }
    char *s = json_dumps(out, JSON_ENCODE_ANY | JSON_COMPACT);
    fputs(s, stdout);
    fputc('\n', stdout);
    free(s);
    json_decref(out);
    tokenizer_dispose(&t);
    vocab_import_free(&vi);
    return 0;
}
