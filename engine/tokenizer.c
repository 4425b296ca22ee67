/*
 * tokenizer.c - SentencePiece-style and byte-level BPE tokenizers built from a vocabulary
 * (GGUF metadata or llama2.c's tokenizer.bin), following llama.cpp's llama-vocab.cpp so that
 * the same file gives the same ids: special-token partitioning, the space prefix, the merge
 * order (best score / lowest rank first, leftmost on ties), byte fallback, the
 * end-of-generation set, and the UTF-8 safe incremental detokenizer.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

struct tok_merge_slot {
    int32_t left, right; /* token ids; left == TOK_NONE marks an empty slot */
    int32_t rank;
    int32_t result; /* token of left+right, or TOK_NONE when the vocabulary lacks it */
};

static uint32_t hash_bytes(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static uint32_t hash_pair(int32_t a, int32_t b)
{
    uint64_t x = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return (uint32_t)x;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* "<0xXX>" -> XX, else -1 */
static int byte_token_value(const char *s, size_t n)
{
    if (n != 6 || memcmp(s, "<0x", 3) || s[5] != '>') return -1;
    int h = hexval(s[3]), l = hexval(s[4]);
    return h < 0 || l < 0 ? -1 : h * 16 + l;
}

/* GPT-2's byte-to-unicode table: printable bytes map to themselves, the 68 others in order
 * to U+0100..U+0143 (0x00-0x20, then 0x7F-0xA0, then 0xAD). */
static uint32_t byte_to_cpt(int b)
{
    if (b <= 0x20) return 256u + (uint32_t)b;
    if (b >= 0x7F && b <= 0xA0) return 256u + 33u + (uint32_t)(b - 0x7F);
    if (b == 0xAD) return 256u + 67u;
    return (uint32_t)b;
}

/* The inverse: the byte a character stands for, or -1. */
static int cpt_to_byte(uint32_t c)
{
    if (c < 256) return byte_to_cpt((int)c) == c ? (int)c : -1;
    if (c < 256 + 33) return (int)(c - 256);
    if (c < 256 + 67) return 0x7F + (int)(c - 256 - 33);
    if (c == 256 + 67) return 0xAD;
    return -1;
}

const char *tokenizer_pre_name(tok_pre_t p)
{
    switch (p) {
    case TOK_PRE_LLAMA3:
        return "llama-bpe";
    case TOK_PRE_QWEN2:
        return "qwen2";
    case TOK_PRE_SMOLLM:
        return "smollm";
    case TOK_PRE_GPT2:
        return "gpt2";
    default:
        return "default";
    }
}

void tokenizer_dispose(tokenizer_t *t)
{
    free(t->text);
    free(t->off);
    free(t->len);
    free(t->score);
    free(t->type);
    free(t->hnext);
    free(t->hhead);
    free(t->piece);
    free(t->poff);
    free(t->special);
    free(t->merge);
    free(t->eog);
    free(t->rstrip);
    memset(t, 0, sizeof(*t));
}

int tokenizer_lookup(const tokenizer_t *t, const char *s, size_t len)
{
    if (!t->hhead) return TOK_NONE;
    uint32_t h = hash_bytes(s, len) & (t->hsize - 1);
    for (int32_t i = t->hhead[h]; i >= 0; i = t->hnext[i]) {
        if (t->len[i] == len && memcmp(t->text + t->off[i], s, len) == 0) return i;
    }
    return TOK_NONE;
}

static const char *tok_text(const tokenizer_t *t, int id, size_t *n)
{
    *n = t->len[id];
    return t->text + t->off[id];
}

static int merge_find(const tokenizer_t *t, int32_t a, int32_t b)
{
    if (!t->mcap || a < 0 || b < 0) return -1;
    uint32_t m = t->mcap - 1;
    for (uint32_t i = hash_pair(a, b) & m;; i = (i + 1) & m) {
        const tok_merge_slot_t *s = &t->merge[i];
        if (s->left == TOK_NONE) return -1;
        if (s->left == a && s->right == b) return (int)i;
    }
}

static int parse_pre(const char *pre, tok_pre_t *out)
{
    static const struct {
        const char *name;
        tok_pre_t pre;
    } names[] = {
        {"default", TOK_PRE_DEFAULT}, {"llama-bpe", TOK_PRE_LLAMA3}, {"llama3", TOK_PRE_LLAMA3},
        {"llama-v3", TOK_PRE_LLAMA3}, {"qwen2", TOK_PRE_QWEN2},      {"smollm", TOK_PRE_SMOLLM},
        {"gpt2", TOK_PRE_GPT2},
    };
    if (!pre || !*pre) {
        *out = TOK_PRE_DEFAULT;
        return 0;
    }
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (!strcmp(pre, names[i].name)) {
            *out = names[i].pre;
            return 0;
        }
    }
    return -EINVAL;
}

/* Decoded bytes of one token, as llama.cpp's token_to_piece(special = false) gives them. */
static size_t make_piece(const tokenizer_t *t, int id, char *o)
{
    size_t n;
    const char *s = tok_text(t, id, &n);
    switch (t->type[id]) {
    case TOK_TYPE_CONTROL:
    case TOK_TYPE_UNKNOWN:
    case TOK_TYPE_UNUSED:
    case TOK_TYPE_UNDEFINED:
        return 0;
    case TOK_TYPE_USER_DEFINED:
        memcpy(o, s, n);
        return n;
    case TOK_TYPE_BYTE: {
        int b = byte_token_value(s, n);
        if (b < 0) return 0;
        o[0] = (char)b;
        return 1;
    }
    default:
        break;
    }
    size_t w = 0;
    if (t->kind == TOK_SPM) {
        for (size_t i = 0; i < n; i++) {
            if (t->escape_spaces && i + 2 < n && (unsigned char)s[i] == 0xE2 &&
                (unsigned char)s[i + 1] == 0x96 && (unsigned char)s[i + 2] == 0x81) {
                o[w++] = ' ';
                i += 2;
            } else {
                o[w++] = s[i];
            }
        }
        return w;
    }
    /* byte-level BPE: every character of the token stands for one byte */
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        uint32_t cp;
        size_t k;
        if (c < 0x80)
            cp = c, k = 1;
        else if ((c & 0xE0) == 0xC0 && i + 1 < n)
            cp = ((uint32_t)(c & 0x1F) << 6) | ((unsigned char)s[i + 1] & 0x3F), k = 2;
        else
            cp = 0xFFFFFFFF, k = 1;
        int b = cp == 0xFFFFFFFF ? -1 : cpt_to_byte(cp);
        if (b >= 0) {
            o[w++] = (char)b;
        } else { /* not a byte character: keep the text as it is */
            memcpy(o + w, s + i, k);
            w += k;
        }
        i += k;
    }
    return w;
}

static void drop_eog(tokenizer_t *t, int id)
{
    for (int i = 0; i < t->n_eog; i++) {
        if (t->eog[i] == id) {
            t->eog[i] = t->eog[--t->n_eog];
            return;
        }
    }
}

/* The end-of-generation set and the control-type fix-ups llama.cpp applies by token text. */
static int build_eog(tokenizer_t *t)
{
    static const char *const eog_names[] = {
        "<|eot_id|>",
        "<|im_end|>",
        "<|end|>",
        "<|return|>",
        "<|call|>",
        "<|flush|>",
        "<|calls|>",
        "<end_of_turn>",
        "<|endoftext|>",
        "</s>",
        "<|eom_id|>",
        "<EOT>",
        "_<EOT>",
        "[EOT]",
        "[EOS]",
        "<|end_of_text|>",
        "<end_of_utterance>",
        "<eos>",
        "<turn|>",
        "<|tool_response>",
        "<\xef\xbd\x9c"
        "end\xe2\x96\x81"
        "of\xe2\x96\x81"
        "sentence\xef\xbd\x9c>",
        "[e~[",
    };
    static const char *const fim_eog_names[] = {
        "<|fim_pad|>",  "<fim-pad>",     "<fim_pad>",  "<PAD>",  "[PAD]",      /* FIM pad */
        "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", /* FIM repo */
        "<|file_sep|>",                                                        /* FIM sep */
    };
    static const char *const eot_names[] = {
        "<|eot_id|>",      "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>",
        "<|end_of_text|>", "<EOT>",      "_<EOT>",  "[EOT]",         "<end_of_utterance>",
    };
    t->eog = malloc(64 * sizeof(int32_t));
    if (!t->eog) return -ENOMEM;
    t->n_eog = 0;
    /* an EOT/EOM the file did not declare is found by name, in llama.cpp's order */
    for (size_t k = 0; k < sizeof(eot_names) / sizeof(*eot_names) && t->eot == TOK_NONE; k++)
        t->eot = tokenizer_lookup(t, eot_names[k], strlen(eot_names[k]));
    if (t->eom == TOK_NONE) t->eom = tokenizer_lookup(t, "<|eom_id|>", 10);
    int32_t ids[3 + sizeof(eog_names) / sizeof(*eog_names) +
                sizeof(fim_eog_names) / sizeof(*fim_eog_names)];
    int nid = 0;
    ids[nid++] = t->eos;
    ids[nid++] = t->eot;
    ids[nid++] = t->eom;
    int first_named = nid;
    for (size_t k = 0; k < sizeof(eog_names) / sizeof(*eog_names); k++)
        ids[nid++] = tokenizer_lookup(t, eog_names[k], strlen(eog_names[k]));
    for (size_t k = 0; k < sizeof(fim_eog_names) / sizeof(*fim_eog_names); k++)
        ids[nid++] = tokenizer_lookup(t, fim_eog_names[k], strlen(fim_eog_names[k]));
    for (int k = 0; k < nid; k++) {
        int32_t id = ids[k];
        if (id == TOK_NONE) continue;
        /* llama.cpp makes every token it finds by name control-type; the ids the file
         * declares (eos, eot, eom) join the set as they are */
        if (k >= first_named && t->type[id] != TOK_TYPE_UNKNOWN) t->type[id] = TOK_TYPE_CONTROL;
        bool seen = false;
        for (int j = 0; j < t->n_eog && !seen; j++)
            seen = t->eog[j] == id;
        if (!seen) t->eog[t->n_eog++] = id;
    }
    /* llama.cpp's two exceptions: with <|return|> and <|call|> (or <|calls|> and <|flush|>)
     * <|end|> is a plain marker, and next to <|tool_response> </s> is ordinary text */
    int end = tokenizer_lookup(t, "<|end|>", 7), s_end = tokenizer_lookup(t, "</s>", 4);
    bool ret = tokenizer_lookup(t, "<|return|>", 10) != TOK_NONE;
    bool call = tokenizer_lookup(t, "<|call|>", 8) != TOK_NONE ||
                tokenizer_lookup(t, "<|calls|>", 9) != TOK_NONE;
    bool flush = tokenizer_lookup(t, "<|flush|>", 9) != TOK_NONE;
    if (end != TOK_NONE && call && (ret || flush)) {
        drop_eog(t, end);
        t->type[end] = TOK_TYPE_USER_DEFINED;
    }
    if (s_end != TOK_NONE && tokenizer_lookup(t, "<|tool_response>", 16) != TOK_NONE) {
        drop_eog(t, s_end);
        t->type[s_end] = TOK_TYPE_NORMAL;
    }
    return 0;
}

bool tokenizer_is_eog(const tokenizer_t *t, int token)
{
    for (int i = 0; i < t->n_eog; i++)
        if (t->eog[i] == token) return true;
    return false;
}

static int cmp_special(const void *a, const void *b, void *arg)
{
    const tokenizer_t *t = arg;
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    if (t->len[x] != t->len[y]) return t->len[x] > t->len[y] ? -1 : 1;
    return x < y ? -1 : x > y;
}

/* llama.cpp sets per-token attributes by model name (not stored in GGUF): for Phi-3 every
 * special token and </s> drop the whitespace after them, except <unk>, <s>, <|endoftext|>. */
static int name_attributes(tokenizer_t *t, const char *name)
{
    char low[128];
    size_t n = 0;
    for (; name && name[n] && n < sizeof low - 1; n++)
        low[n] = (char)(name[n] >= 'A' && name[n] <= 'Z' ? name[n] + 32 : name[n]);
    low[n] = 0;
    if (!strstr(low, "phi-3") && !strstr(low, "phi3")) return 0;
    t->rstrip = calloc((size_t)t->n_vocab, 1);
    if (!t->rstrip) return -ENOMEM;
    for (int i = 0; i < t->n_special; i++)
        t->rstrip[t->special[i]] = 1;
    static const char *const on[] = {"</s>"}, *const off[] = {"<unk>", "<s>", "<|endoftext|>"};
    int id = tokenizer_lookup(t, on[0], strlen(on[0]));
    if (id != TOK_NONE) t->rstrip[id] = 1;
    for (size_t k = 0; k < sizeof off / sizeof *off; k++)
        if ((id = tokenizer_lookup(t, off[k], strlen(off[k]))) != TOK_NONE) t->rstrip[id] = 0;
    return 0;
}

static int id_key(const tokenizer_t *t, const tok_vocab_t *v, int64_t id, const char *key,
                  int32_t dflt, int32_t *out, char *err, size_t errlen)
{
    if (id == TOK_NONE) {
        *out = dflt < t->n_vocab ? dflt : TOK_NONE;
        return 0;
    }
    if (id < 0 || id >= (int64_t)v->n_tokens)
        return errorf(err, errlen, -EINVAL,
                      "tokenizer.ggml.%s = %lld is outside the vocabulary (%zu tokens)", key,
                      (long long)id, v->n_tokens);
    *out = (int32_t)id;
    return 0;
}

int tokenizer_build(tokenizer_t *t, const tok_vocab_t *v, char *err, size_t errlen)
{
    int rc = -ENOMEM;
    memset(t, 0, sizeof(*t));
    if (v->kind != TOK_SPM && v->kind != TOK_BPE)
        return errorf(err, errlen, -EINVAL, "tokenizer.ggml.model: unsupported tokenizer kind");
    if (v->n_tokens == 0 || !v->tokens)
        return errorf(err, errlen, -EINVAL, "tokenizer.ggml.tokens is missing or empty");
    if (v->n_tokens > TOK_MAX_VOCAB)
        return errorf(err, errlen, -EINVAL,
                      "tokenizer.ggml.tokens has %zu entries, more than the %u allowed",
                      v->n_tokens, TOK_MAX_VOCAB);
    if (v->n_merges > TOK_MAX_MERGES)
        return errorf(err, errlen, -EINVAL,
                      "tokenizer.ggml.merges has %zu entries, more than the %u allowed",
                      v->n_merges, TOK_MAX_MERGES);
    if (v->kind == TOK_BPE && (v->n_merges == 0 || !v->merges))
        return errorf(err, errlen, -EINVAL,
                      "tokenizer.ggml.merges is missing (a gpt2 tokenizer needs it)");
    t->kind = v->kind;
    if (v->kind == TOK_BPE && parse_pre(v->pre, &t->pre) < 0)
        return errorf(err, errlen, -EINVAL,
                      "tokenizer.ggml.pre '%.64s' is not supported (supported: default, "
                      "llama-bpe, llama3, llama-v3, qwen2, smollm, gpt2)",
                      v->pre);
    int n = (int)v->n_tokens;
    t->n_vocab = n;
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        if (v->tokens[i].n > TOK_MAX_TOKEN_BYTES || (v->tokens[i].n && !v->tokens[i].s))
            return errorf(err, errlen, -EINVAL,
                          "tokenizer.ggml.tokens[%d] is %zu bytes long, more than the %d allowed",
                          i, v->tokens[i].n, TOK_MAX_TOKEN_BYTES);
        total += v->tokens[i].n;
        if (v->scores && !isfinite(v->scores[i]))
            return errorf(err, errlen, -EINVAL, "tokenizer.ggml.scores[%d] is not finite", i);
        if (v->types && (v->types[i] < 0 || v->types[i] > TOK_TYPE_BYTE))
            return errorf(err, errlen, -EINVAL,
                          "tokenizer.ggml.token_type[%d] = %d is not a token type (0..6)", i,
                          (int)v->types[i]);
    }
    uint32_t hs = 1;
    while (hs < 2u * (uint32_t)n)
        hs <<= 1;
    t->hsize = hs;
    t->text = malloc(total ? total : 1);
    t->off = malloc((size_t)n * sizeof(uint32_t));
    t->len = malloc((size_t)n * sizeof(uint32_t));
    t->score = malloc((size_t)n * sizeof(float));
    t->type = malloc((size_t)n);
    t->hnext = malloc((size_t)n * sizeof(int32_t));
    t->hhead = malloc((size_t)hs * sizeof(int32_t));
    t->poff = malloc(((size_t)n + 1) * sizeof(uint32_t));
    if (!t->text || !t->off || !t->len || !t->score || !t->type || !t->hnext || !t->hhead ||
        !t->poff)
        goto nomem;
    for (uint32_t i = 0; i < hs; i++)
        t->hhead[i] = TOK_NONE;
    size_t at = 0;
    for (int i = 0; i < n; i++) {
        if (v->tokens[i].n) memcpy(t->text + at, v->tokens[i].s, v->tokens[i].n);
        t->off[i] = (uint32_t)at;
        t->len[i] = (uint32_t)v->tokens[i].n;
        at += v->tokens[i].n;
        t->score[i] = v->scores ? v->scores[i] : 0.0f;
        t->type[i] = v->types ? (uint8_t)v->types[i] : TOK_TYPE_NORMAL;
        if ((int)t->len[i] > t->max_token_len) t->max_token_len = (int)t->len[i];
        if (t->len[i] == 0) { /* an empty text is never matched, so never repeated */
            t->hnext[i] = TOK_NONE;
            continue;
        }
        int dup = tokenizer_lookup(t, t->text + t->off[i], t->len[i]);
        if (dup != TOK_NONE) {
            rc = errorf(err, errlen, -EINVAL, "tokenizer.ggml.tokens[%d] repeats token %d ('%.*s')",
                        i, dup, (int)(t->len[i] < 40 ? t->len[i] : 40), t->text + t->off[i]);
            goto fail;
        }
        uint32_t h = hash_bytes(t->text + t->off[i], t->len[i]) & (hs - 1);
        t->hnext[i] = t->hhead[h];
        t->hhead[h] = i;
    }
    if (t->max_token_len < 1) t->max_token_len = 1;

    bool spm = v->kind == TOK_SPM;
    if ((rc = id_key(t, v, v->bos, "bos_token_id", spm ? 1 : 11, &t->bos, err, errlen)) < 0 ||
        (rc = id_key(t, v, v->eos, "eos_token_id", spm ? 2 : 11, &t->eos, err, errlen)) < 0 ||
        (rc = id_key(t, v, v->eot, "eot_token_id", TOK_NONE, &t->eot, err, errlen)) < 0 ||
        (rc = id_key(t, v, v->eom, "eom_token_id", TOK_NONE, &t->eom, err, errlen)) < 0 ||
        (rc = id_key(t, v, v->unk, "unknown_token_id", spm ? 0 : TOK_NONE, &t->unk, err, errlen)) <
            0 ||
        (rc = id_key(t, v, v->pad, "padding_token_id", TOK_NONE, &t->pad, err, errlen)) < 0)
        goto fail;
    t->escape_spaces = spm && v->escape_spaces;
    t->add_space_prefix = v->add_space_prefix >= 0 ? v->add_space_prefix : spm;
    t->add_bos = v->add_bos >= 0 ? v->add_bos : (spm || t->pre == TOK_PRE_LLAMA3);
    t->add_eos = v->add_eos >= 0 ? v->add_eos : false;
    t->ignore_merges = t->pre == TOK_PRE_LLAMA3;
    if (t->add_bos && t->bos == TOK_NONE) {
        rc = errorf(err, errlen, -EINVAL,
                    "tokenizer.ggml.add_bos_token is true but the vocabulary has no BOS token");
        goto fail;
    }
    if (t->add_eos && t->eos == TOK_NONE) {
        rc = errorf(err, errlen, -EINVAL,
                    "tokenizer.ggml.add_eos_token is true but the vocabulary has no EOS token");
        goto fail;
    }

    for (int b = 0; b < 256; b++)
        t->byte_tok[b] = TOK_NONE;
    for (int b = 0; b < 256; b++) {
        char buf[8];
        if (spm) {
            snprintf(buf, sizeof buf, "<0x%02X>", b);
            int id = tokenizer_lookup(t, buf, 6);
            if (id == TOK_NONE) id = tokenizer_lookup(t, (char[]){(char)b}, 1);
            t->byte_tok[b] = id;
        } else {
            size_t k = utf8_put(byte_to_cpt(b), buf);
            t->byte_tok[b] = tokenizer_lookup(t, buf, k);
        }
    }

    if (v->kind == TOK_BPE) {
        uint32_t mc = 1;
        while (mc < 2u * (uint32_t)v->n_merges)
            mc <<= 1;
        t->mcap = mc;
        t->merge = malloc((size_t)mc * sizeof(*t->merge));
        if (!t->merge) goto nomem;
        for (uint32_t i = 0; i < mc; i++)
            t->merge[i].left = TOK_NONE;
        char buf[2 * TOK_MAX_TOKEN_BYTES + 2];
        for (size_t r = 0; r < v->n_merges; r++) {
            const tok_str_t *m = &v->merges[r];
            /* "left right": the separator is the first space after the first byte */
            const char *sp = m->n > 1 && m->s ? memchr(m->s + 1, ' ', m->n - 1) : NULL;
            if (!sp) {
                rc = errorf(err, errlen, -EINVAL,
                            "tokenizer.ggml.merges[%zu] '%.*s' is not two tokens separated by "
                            "a space",
                            r, m->s ? (int)(m->n < 40 ? m->n : 40) : 0, m->s ? m->s : "");
                goto fail;
            }
            size_t ln = (size_t)(sp - m->s), rn = m->n - ln - 1;
            int a = tokenizer_lookup(t, m->s, ln), b = tokenizer_lookup(t, sp + 1, rn);
            /* a merge of strings that are not tokens can never apply to token symbols */
            if (a == TOK_NONE || b == TOK_NONE || ln + rn > sizeof buf) continue;
            if (merge_find(t, a, b) >= 0) continue; /* the first (lowest) rank wins */
            memcpy(buf, m->s, ln);
            memcpy(buf + ln, sp + 1, rn);
            uint32_t i = hash_pair(a, b) & (mc - 1);
            while (t->merge[i].left != TOK_NONE)
                i = (i + 1) & (mc - 1);
            t->merge[i].left = a;
            t->merge[i].right = b;
            t->merge[i].rank = (int32_t)r;
            t->merge[i].result = tokenizer_lookup(t, buf, ln + rn);
        }
    }

    if ((rc = build_eog(t)) < 0) goto fail;

    /* special tokens, longest first (llama.cpp's cache_special_tokens order) */
    t->special = malloc((size_t)n * sizeof(int32_t));
    if (!t->special) goto nomem;
    for (int i = 0; i < n; i++) {
        uint8_t ty = t->type[i];
        if ((ty == TOK_TYPE_CONTROL || ty == TOK_TYPE_USER_DEFINED || ty == TOK_TYPE_UNKNOWN) &&
            t->len[i] > 0)
            t->special[t->n_special++] = i;
    }
    qsort_r(t->special, (size_t)t->n_special, sizeof(int32_t), cmp_special, t);
    if ((rc = name_attributes(t, v->model_name)) < 0) goto fail;

    /* every token's decoded bytes, once */
    size_t psize = 0;
    char *tmp = malloc(TOK_MAX_TOKEN_BYTES + 1);
    if (!tmp) goto nomem;
    for (int i = 0; i < n; i++)
        psize += make_piece(t, i, tmp);
    t->piece = malloc(psize ? psize : 1);
    if (!t->piece) {
        free(tmp);
        goto nomem;
    }
    at = 0;
    for (int i = 0; i < n; i++) {
        t->poff[i] = (uint32_t)at;
        size_t k = make_piece(t, i, tmp);
        memcpy(t->piece + at, tmp, k);
        at += k;
    }
    t->poff[n] = (uint32_t)at;
    free(tmp);
    return 0;
nomem:
    rc = errorf(err, errlen, -ENOMEM, "tokenizer: out of memory");
fail:
    tokenizer_dispose(t);
    return rc;
}

/* ---- llama2.c tokenizer.bin ------------------------------------------------------------ */

/* Token ids by text (length, bytes), then id. */
static int cmp_piece(const void *a, const void *b, void *arg)
{
    const tok_str_t *t = arg;
    int i = *(const int *)a, j = *(const int *)b;
    size_t n = t[i].n < t[j].n ? t[i].n : t[j].n;
    if (t[i].n != t[j].n) return t[i].n < t[j].n ? -1 : 1;
    int c = n ? memcmp(t[i].s, t[j].s, n) : 0;
    if (c) return c;
    return (i > j) - (i < j);
}

int tokenizer_parse(tokenizer_t *t, const void *buf, size_t size, int vocab_size, char *err,
                    size_t errlen)
{
    memset(t, 0, sizeof(*t));
    const unsigned char *p = buf, *end = p + size;
    if (vocab_size <= 0 || (unsigned)vocab_size > TOK_MAX_VOCAB)
        return errorf(err, errlen, -EINVAL, "tokenizer: bad vocab size %d", vocab_size);
    if (size < 4) return errorf(err, errlen, -EINVAL, "tokenizer file truncated (no header)");
    int32_t maxlen;
    memcpy(&maxlen, p, 4);
    p += 4;
    if (maxlen <= 0 || maxlen > TOK_MAX_BIN_PIECE)
        return errorf(err, errlen, -EINVAL, "tokenizer: max_token_length %d outside [1, %d]",
                      maxlen, TOK_MAX_BIN_PIECE);
    tok_str_t *toks = malloc((size_t)vocab_size * sizeof(*toks));
    float *scores = malloc((size_t)vocab_size * sizeof(float));
    int32_t *types = malloc((size_t)vocab_size * sizeof(int32_t));
    int *order = NULL;
    int rc;
    if (!toks || !scores || !types) {
        rc = errorf(err, errlen, -ENOMEM, "tokenizer: out of memory");
        goto out;
    }
    for (int i = 0; i < vocab_size; i++) {
        if ((size_t)(end - p) < 8) {
            rc = errorf(err, errlen, -EINVAL, "tokenizer truncated at token %d of %d", i,
                        vocab_size);
            goto out;
        }
        int32_t len;
        memcpy(&scores[i], p, 4);
        memcpy(&len, p + 4, 4);
        p += 8;
        if (!isfinite(scores[i])) {
            rc = errorf(err, errlen, -EINVAL, "tokenizer: token %d has a non-finite score", i);
            goto out;
        }
        if (len < 0 || len > maxlen) {
            rc = errorf(err, errlen, -EINVAL,
                        "tokenizer: token %d has length %d outside [0, max_token_length %d]", i,
                        len, maxlen);
            goto out;
        }
        if ((size_t)(end - p) < (size_t)len) {
            rc = errorf(err, errlen, -EINVAL, "tokenizer truncated in token %d of %d", i,
                        vocab_size);
            goto out;
        }
        toks[i].s = (const char *)p;
        toks[i].n = (size_t)len;
        types[i] = byte_token_value(toks[i].s, toks[i].n) >= 0 ? TOK_TYPE_BYTE : TOK_TYPE_NORMAL;
        p += len;
    }
    if (p != end) {
        rc = errorf(err, errlen, -EINVAL,
                    "tokenizer has %zu bytes after its %d tokens (vocab does not match the model)",
                    (size_t)(end - p), vocab_size);
        goto out;
    }
    /* llama2.c's ids: 0 <unk>, 1 <s>, 2 </s> */
    if (vocab_size > 0) types[0] = TOK_TYPE_UNKNOWN;
    if (vocab_size > 1) types[1] = TOK_TYPE_CONTROL;
    if (vocab_size > 2) types[2] = TOK_TYPE_CONTROL;
    /* llama2.c exports can repeat a piece; the first id wins, as llama2.c's lookup did.
     * Sorted by text, then id, repeats are neighbours behind their lowest id: O(n log n), so
     * a hostile file of millions of distinct same-length pieces is read at once instead of
     * hanging start-up in a pairwise scan. */
    order = malloc((size_t)vocab_size * sizeof(*order));
    if (!order) {
        rc = errorf(err, errlen, -ENOMEM, "tokenizer: out of memory");
        goto out;
    }
    for (int i = 0; i < vocab_size; i++)
        order[i] = i;
    qsort_r(order, (size_t)vocab_size, sizeof(*order), cmp_piece, toks);
    for (int k = 1, head = order[0]; k < vocab_size; k++) {
        const tok_str_t *h = &toks[head], *c = &toks[order[k]];
        if (c->n && c->n == h->n && !memcmp(c->s, h->s, c->n)) {
            toks[order[k]].n = 0; /* an empty text is never matched */
            types[order[k]] = TOK_TYPE_UNUSED;
        } else {
            head = order[k];
        }
    }
    tok_vocab_t v = {
        .kind = TOK_SPM,
        .n_tokens = (size_t)vocab_size,
        .tokens = toks,
        .scores = scores,
        .types = types,
        .bos = vocab_size > 1 ? 1 : TOK_NONE,
        .eos = vocab_size > 2 ? 2 : TOK_NONE,
        .eot = TOK_NONE,
        .eom = TOK_NONE,
        .unk = 0,
        .pad = TOK_NONE,
        .add_bos = 1,
        .add_eos = 0,
        .add_space_prefix = 1,
        .escape_spaces = false,
    };
    rc = tokenizer_build(t, &v, err, errlen);
    if (rc == 0) t->max_token_len = maxlen;
out:
    free(order);
    free(toks);
    free(scores);
    free(types);
    return rc;
}

int tokenizer_load(tokenizer_t *t, const char *path, int vocab_size, char *err, size_t errlen)
{
    memset(t, 0, sizeof(*t));
    if (!path) return errorf(err, errlen, -EINVAL, "no tokenizer path");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return errorf(err, errlen, -e, "cannot open tokenizer %s: %s", path, strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > (1 << 30)) {
        close(fd);
        return errorf(err, errlen, -EINVAL, "tokenizer %s is not a regular file under 1 GiB", path);
    }
    size_t size = (size_t)st.st_size;
    char *buf = malloc(size ? size : 1);
    if (!buf) {
        close(fd);
        return errorf(err, errlen, -ENOMEM, "tokenizer: out of memory");
    }
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r <= 0) {
            if (r < 0 && errno == EINTR) continue;
            break;
        }
        got += (size_t)r;
    }
    close(fd);
    char why[300];
    int rc = got == size ? tokenizer_parse(t, buf, size, vocab_size, why, sizeof(why))
                         : (snprintf(why, sizeof(why), "short read"), -EIO);
    free(buf);
    if (rc < 0) return errorf(err, errlen, rc, "tokenizer %s: %s", path, why);
    return 0;
}

/* ---- encoding ---------------------------------------------------------------------------- */

/* Growable output: ids are counted even past max (the caller learns the full count). */
typedef struct {
    int32_t *out;
    size_t max, count;
} ids_t;

static void put_id(ids_t *o, int32_t id)
{
    if (o->count < o->max) o->out[o->count] = id;
    o->count++;
}

/* One symbol of a word being merged: a span of the text and its token (or TOK_NONE). */
typedef struct {
    uint32_t start, n;
    int32_t prev, next;
    int32_t id;
} sym_t;

/* A candidate merge of symbols left and right. SPM orders by score (higher first), BPE by
 * rank (lower first); ties go to the leftmost pair. */
typedef struct {
    float key; /* SPM: -score; BPE: rank (lower is better either way) */
    int32_t left, right;
    uint32_t size;      /* SPM: bytes of the merged text when queued (stale check) */
    int32_t l_id, r_id; /* BPE: the ids when queued (stale check) */
    int32_t result;
} cand_t;

typedef struct {
    cand_t *v;
    size_t n, cap;
} heap_t;

static bool cand_less(const cand_t *a, const cand_t *b)
{
    return a->key < b->key || (a->key == b->key && a->left < b->left);
}

static int heap_push(heap_t *h, cand_t c)
{
    if (h->n == h->cap) {
        size_t nc = h->cap ? h->cap * 2 : 64;
        cand_t *nv = realloc(h->v, nc * sizeof(*nv));
        if (!nv) return -ENOMEM;
        h->v = nv;
        h->cap = nc;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!cand_less(&c, &h->v[p])) break;
        h->v[i] = h->v[p];
        i = p;
    }
    h->v[i] = c;
    return 0;
}

static cand_t heap_pop(heap_t *h)
{
    cand_t top = h->v[0], last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const cand_t *best = &last;
        if (l < h->n && cand_less(&h->v[l], best)) m = l, best = &h->v[l];
        if (r < h->n && cand_less(&h->v[r], best)) m = r;
        if (m == i) break;
        h->v[i] = h->v[m];
        i = m;
    }
    if (h->n) h->v[i] = last;
    return top;
}

typedef struct {
    const tokenizer_t *t;
    const char *text; /* the word being merged */
    sym_t *sym;
    heap_t heap;
    int rc;
} merger_t;

static void spm_try(merger_t *m, int32_t l, int32_t r)
{
    if (l < 0 || r < 0) return;
    const sym_t *a = &m->sym[l], *b = &m->sym[r];
    uint32_t size = a->n + b->n;
    int id = tokenizer_lookup(m->t, m->text + a->start, size);
    if (id == TOK_NONE) return;
    cand_t c = {.key = -m->t->score[id], .left = l, .right = r, .size = size, .result = id};
    if (heap_push(&m->heap, c) < 0) m->rc = -ENOMEM;
}

static void bpe_try(merger_t *m, int32_t l, int32_t r)
{
    if (l < 0 || r < 0) return;
    const sym_t *a = &m->sym[l], *b = &m->sym[r];
    int k = merge_find(m->t, a->id, b->id);
    if (k < 0) return;
    const tok_merge_slot_t *s = &m->t->merge[k];
    cand_t c = {.key = (float)s->rank,
                .left = l,
                .right = r,
                .l_id = a->id,
                .r_id = b->id,
                .result = s->result};
    /* ranks stay below TOK_MAX_MERGES = 2^23, exact in a float */
    if (heap_push(&m->heap, c) < 0) m->rc = -ENOMEM;
}

/* Merge the symbols of one word (nsym >= 1, linked 0..nsym-1) until no candidate is left. */
static void merge_word(merger_t *m, bool spm, int nsym)
{
    m->heap.n = 0;
    for (int i = 1; i < nsym; i++)
        spm ? spm_try(m, i - 1, i) : bpe_try(m, i - 1, i);
    while (m->heap.n && m->rc == 0) {
        cand_t c = heap_pop(&m->heap);
        sym_t *a = &m->sym[c.left], *b = &m->sym[c.right];
        if (a->n == 0 || b->n == 0 || a->next != c.right) continue;
        if (spm ? a->n + b->n != c.size : (a->id != c.l_id || b->id != c.r_id)) continue;
        a->n += b->n;
        a->id = c.result;
        b->n = 0;
        a->next = b->next;
        if (b->next >= 0) m->sym[b->next].prev = c.left;
        if (spm) {
            spm_try(m, a->prev, c.left);
            spm_try(m, c.left, a->next);
        } else {
            bpe_try(m, a->prev, c.left);
            bpe_try(m, c.left, a->next);
        }
    }
}

static size_t utf8_len(unsigned char c)
{
    static const unsigned char lookup[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return lookup[c >> 4];
}

/* SentencePiece-style: split into UTF-8 characters, merge by score, then byte fallback. */
static int encode_spm(const tokenizer_t *t, const char *text, size_t len, ids_t *o, merger_t *m)
{
    size_t nsym = 0;
    for (size_t off = 0; off < len; nsym++) {
        size_t k = utf8_len((unsigned char)text[off]);
        if (k > len - off) k = len - off;
        sym_t *s = &m->sym[nsym];
        s->start = (uint32_t)off;
        s->n = (uint32_t)k;
        s->prev = (int32_t)nsym - 1;
        s->next = off + k == len ? -1 : (int32_t)nsym + 1;
        s->id = tokenizer_lookup(t, text + off, k);
        off += k;
    }
    if (!nsym) return 0;
    m->text = text;
    merge_word(m, true, (int)nsym);
    if (m->rc < 0) return m->rc;
    for (int i = 0; i >= 0; i = m->sym[i].next) {
        const sym_t *s = &m->sym[i];
        if (s->id != TOK_NONE) {
            put_id(o, s->id);
            continue;
        }
        for (uint32_t j = 0; j < s->n; j++) {
            int32_t b = t->byte_tok[(unsigned char)text[s->start + j]];
            put_id(o, b != TOK_NONE ? b : (t->unk != TOK_NONE ? t->unk : 0));
        }
    }
    return 0;
}

/* Byte-level BPE of one pre-tokenized word (raw bytes). */
static int encode_bpe_word(const tokenizer_t *t, const char *w, size_t n, ids_t *o, merger_t *m,
                           char *enc)
{
    if (t->ignore_merges) {
        size_t k = 0;
        for (size_t i = 0; i < n; i++)
            k += utf8_put(byte_to_cpt((unsigned char)w[i]), enc + k);
        int id = tokenizer_lookup(t, enc, k);
        if (id != TOK_NONE) {
            put_id(o, id);
            return 0;
        }
    }
    for (size_t i = 0; i < n; i++) {
        sym_t *s = &m->sym[i];
        s->start = (uint32_t)i;
        s->n = 1;
        s->prev = (int32_t)i - 1;
        s->next = i + 1 == n ? -1 : (int32_t)i + 1;
        s->id = t->byte_tok[(unsigned char)w[i]];
    }
    m->text = w;
    merge_word(m, false, (int)n);
    if (m->rc < 0) return m->rc;
    for (int i = 0; i >= 0; i = m->sym[i].next) {
        const sym_t *s = &m->sym[i];
        if (s->id != TOK_NONE) {
            put_id(o, s->id);
            continue;
        }
        /* a merge whose result is not a token: fall back to one token per byte */
        for (uint32_t j = 0; j < s->n; j++) {
            int32_t b = t->byte_tok[(unsigned char)w[s->start + j]];
            if (b != TOK_NONE) put_id(o, b);
        }
    }
    return 0;
}

/* A piece of the input: raw text, or a special token matched in it. */
typedef struct {
    size_t off, len;
    int32_t token; /* TOK_NONE for text */
} frag_t;

typedef struct {
    frag_t *v;
    size_t n, cap;
} frags_t;

static int frags_insert(frags_t *f, size_t at, frag_t x)
{
    if (f->n == f->cap) {
        size_t nc = f->cap ? f->cap * 2 : 16;
        frag_t *nv = realloc(f->v, nc * sizeof(*nv));
        if (!nv) return -ENOMEM;
        f->v = nv;
        f->cap = nc;
    }
    memmove(f->v + at + 1, f->v + at, (f->n - at) * sizeof(*f->v));
    f->v[at] = x;
    f->n++;
    return 0;
}

/* llama.cpp's tokenizer_st_partition: for each special token, longest first, split every
 * text fragment at its occurrences (leftmost first). */
static int partition(const tokenizer_t *t, const char *text, size_t len, bool parse_special,
                     frags_t *f)
{
    f->n = 0;
    if (len == 0) return 0;
    if (frags_insert(f, 0, (frag_t){0, len, TOK_NONE}) < 0) return -ENOMEM;
    for (int k = 0; k < t->n_special; k++) {
        int32_t id = t->special[k];
        uint8_t ty = t->type[id];
        if (!parse_special && (ty == TOK_TYPE_CONTROL || ty == TOK_TYPE_UNKNOWN)) continue;
        size_t tl;
        const char *tt = tok_text(t, id, &tl);
        for (size_t i = 0; i < f->n; i++) {
            if (f->v[i].token != TOK_NONE || f->v[i].len < tl) continue;
            const char *base = text + f->v[i].off;
            const char *hit = memmem(base, f->v[i].len, tt, tl);
            if (!hit) continue;
            size_t pre = (size_t)(hit - base), rest = f->v[i].len - pre - tl;
            size_t roff = f->v[i].off + pre + tl;
            if (t->rstrip && t->rstrip[id]) { /* llama.cpp: isspace() on each byte */
                while (rest && (text[roff] == ' ' || (text[roff] >= '\t' && text[roff] <= '\r'))) {
                    roff++;
                    rest--;
                }
            }
            /* [text before][token][text after]; the text after is searched next */
            if (pre) {
                f->v[i].len = pre;
                if (frags_insert(f, ++i, (frag_t){0, 0, id}) < 0) return -ENOMEM;
            } else {
                f->v[i] = (frag_t){0, 0, id};
            }
            if (rest && frags_insert(f, i + 1, (frag_t){roff, rest, TOK_NONE}) < 0) return -ENOMEM;
        }
    }
    return 0;
}

int tokenizer_encode(const tokenizer_t *t, const char *text, size_t len, unsigned flags,
                     int32_t *out, size_t max)
{
    ids_t o = {out, max, 0};
    frags_t f = {0};
    merger_t m = {.t = t};
    char *buf = NULL, *words = NULL, *enc = NULL;
    size_t *ends = NULL;
    int rc = partition(t, text, len, flags & TOK_PARSE_SPECIAL, &f);
    if (rc < 0) goto out;
    bool add = flags & TOK_ADD_SPECIAL;
    if (add && t->add_bos) put_id(&o, t->bos);
    rc = -ENOMEM;
    if (t->kind == TOK_SPM) {
        /* the longest text any fragment becomes: a space prefix and 3 bytes per space */
        buf = malloc(3 * len + 4);
        m.sym = malloc((3 * len + 4) * sizeof(*m.sym));
        if (!buf || !m.sym) goto out;
        bool prev_special = true; /* the first text fragment gets the space prefix */
        for (size_t i = 0; i < f.n; i++) {
            if (f.v[i].token != TOK_NONE) {
                put_id(&o, f.v[i].token);
                prev_special = true;
                continue;
            }
            size_t k = 0;
            if (t->add_space_prefix && prev_special) {
                if (t->escape_spaces) {
                    memcpy(buf, "\xe2\x96\x81", 3);
                    k = 3;
                } else {
                    buf[k++] = ' ';
                }
            }
            for (size_t j = 0; j < f.v[i].len; j++) {
                char c = text[f.v[i].off + j];
                if (c == ' ' && t->escape_spaces) {
                    memcpy(buf + k, "\xe2\x96\x81", 3);
                    k += 3;
                } else {
                    buf[k++] = c;
                }
            }
            if ((rc = encode_spm(t, buf, k, &o, &m)) < 0) goto out;
            rc = -ENOMEM;
            prev_special = false;
        }
    } else {
        for (size_t i = 0; i < f.n; i++) {
            if (f.v[i].token != TOK_NONE) {
                put_id(&o, f.v[i].token);
                continue;
            }
            size_t nw;
            free(words);
            free(ends);
            words = NULL;
            ends = NULL;
            if ((rc = pretok_split(t->pre, text + f.v[i].off, f.v[i].len, &words, &ends, &nw)) < 0)
                goto out;
            rc = -ENOMEM;
            size_t longest = 0, prev = 0;
            for (size_t w = 0; w < nw; w++) {
                if (ends[w] - prev > longest) longest = ends[w] - prev;
                prev = ends[w];
            }
            sym_t *ns = realloc(m.sym, (longest + 1) * sizeof(*m.sym));
            char *ne = realloc(enc, 2 * longest + 1);
            if (!ns || !ne) {
                if (ns) m.sym = ns;
                if (ne) enc = ne;
                goto out;
            }
            m.sym = ns;
            enc = ne;
            prev = 0;
            for (size_t w = 0; w < nw; w++) {
                if (ends[w] > prev &&
                    (rc = encode_bpe_word(t, words + prev, ends[w] - prev, &o, &m, enc)) < 0)
                    goto out;
                prev = ends[w];
            }
        }
    }
    if (add && t->add_eos) put_id(&o, t->eos);
    rc = o.count > INT32_MAX ? -EINVAL : (int)o.count;
out:
    free(f.v);
    free(m.sym);
    free(m.heap.v);
    free(buf);
    free(words);
    free(ends);
    free(enc);
    return rc;
}

/* ---- decoding ------------------------------------------------------------------------------ */

const char *tokenizer_piece(const tokenizer_t *t, int token, size_t *len)
{
    if (token < 0 || token >= t->n_vocab) {
        *len = 0;
        return "";
    }
    *len = t->poff[token + 1] - t->poff[token];
    return t->piece + t->poff[token];
}

void detok_init(detok_t *d, int prev)
{
    memset(d, 0, sizeof(*d));
    d->prev = prev;
}

static size_t put_fffd(char *out)
{
    out[0] = (char)0xEF;
    out[1] = (char)0xBF;
    out[2] = (char)0xBD;
    return 3;
}

/* Is b acceptable as the second byte after lead? (rejects overlongs, surrogates, > U+10FFFF) */
static int second_ok(unsigned char lead, unsigned char b)
{
    if ((b & 0xC0) != 0x80) return 0;
    if (lead == 0xE0) return b >= 0xA0;
    if (lead == 0xED) return b <= 0x9F;
    if (lead == 0xF0) return b >= 0x90;
    if (lead == 0xF4) return b <= 0x8F;
    return 1;
}

static size_t feed(detok_t *d, unsigned char b, char *out)
{
    size_t w = 0;
    if (d->npend > 0) {
        int ok = d->npend == 1 ? second_ok(d->pend[0], b) : (b & 0xC0) == 0x80;
        if (ok) {
            d->pend[d->npend++] = b;
            if (d->npend == d->need) {
                memcpy(out, d->pend, (size_t)d->need);
                w = (size_t)d->need;
                d->npend = 0;
            }
            return w;
        }
        w += put_fffd(out);
        d->npend = 0;
    }
    if (b < 0x80) {
        out[w++] = (char)b;
    } else if (b >= 0xC2 && b <= 0xF4) {
        d->need = b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
        d->pend[0] = b;
        d->npend = 1;
    } else {
        w += put_fffd(out + w);
    }
    return w;
}

size_t detok_push(detok_t *d, const tokenizer_t *t, int token, char *out, size_t cap)
{
    size_t len;
    const char *p = tokenizer_piece(t, token, &len);
    /* SentencePiece's space prefix: the first word after BOS starts without it */
    if (t->kind == TOK_SPM && t->add_space_prefix && d->prev == t->bos && len > 0 && p[0] == ' ') {
        p++;
        len--;
    }
    d->prev = token;
    size_t w = 0;
    for (size_t i = 0; i < len && w + 6 < cap; i++)
        w += feed(d, (unsigned char)p[i], out + w);
    if (w < cap) out[w] = 0;
    return w;
}

size_t detok_flush(detok_t *d, char *out, size_t cap)
{
    size_t w = 0;
    if (d->npend > 0 && cap >= 4) {
        w = put_fffd(out);
        d->npend = 0;
    }
    if (w < cap) out[w] = 0;
    return w;
}
