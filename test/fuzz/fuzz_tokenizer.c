/*
 * fuzz_tokenizer - the tokenizer's encode of arbitrary bytes (a prompt is outside input).
 *
 * Input: one byte choosing the tokenizer, then the text. Every tokenizer is built once:
 *   - the llama2.c tokenizer.bin mkmodel writes for the tiny test model (SPM, no space
 *     escaping);
 *   - a small SentencePiece vocabulary as GGUF files carry it (U+2581 for spaces, byte
 *     fallback, a space prefix, special tokens);
 *   - a small byte-level BPE vocabulary under each pre-tokenizer llama.cpp names (default,
 *     llama-bpe, qwen2, smollm, gpt2), with CONTROL, USER_DEFINED and name-made-control
 *     tokens;
 *   - every real vocabulary found as *.gguf in INFERD_FUZZ_VOCAB_DIR (the build writes Llama 3,
 *     Qwen 3 and Llama 2 there with mkmodel when the npm references are installed).
 * tokenizer_fuzz_one() encodes with every flag combination and stream-decodes the ids; it
 * reports a broken invariant (an id outside the vocabulary, a count over the documented
 * bound or dependent on the room given, decoded text that is not UTF-8), which is a crash.
 */
#include "fuzz.h"

#include <dirent.h>

#include "engine/gguf.h"
#include "engine/internal.h"

#define MAX_TOKS 32

static tokenizer_t toks[MAX_TOKS];
static const char *names[MAX_TOKS];
static int ntoks;

/* ---- a small vocabulary, built in memory ---- */
typedef struct {
    char text[640][24];
    tok_str_t tok[640];
    int32_t type[640];
    float score[640];
    int n;
    char mtext[64][48];
    tok_str_t merge[64];
    int nm;
} vocab_t;

static int vadd(vocab_t *v, const char *s, int32_t type, float score)
{
    FUZZ_CHECK(v->n < 640 && strlen(s) < sizeof v->text[0], "vocabulary table too small");
    snprintf(v->text[v->n], sizeof v->text[0], "%s", s);
    v->tok[v->n] = (tok_str_t){v->text[v->n], strlen(s)};
    v->type[v->n] = type;
    v->score[v->n] = score;
    return v->n++;
}

static size_t utf8_put(uint32_t c, char *o)
{
    if (c < 0x80) return o[0] = (char)c, 1;
    if (c < 0x800) return o[0] = (char)(0xC0 | c >> 6), o[1] = (char)(0x80 | (c & 63)), 2;
    o[0] = (char)(0xE0 | c >> 12);
    o[1] = (char)(0x80 | ((c >> 6) & 63));
    o[2] = (char)(0x80 | (c & 63));
    return 3;
}

/* GPT-2's byte-to-character table: printable bytes stand for themselves, the others map in
 * order to U+0100 onwards. */
static void byte_char(int b, char out[4])
{
    uint32_t c;
    if (b <= 0x20)
        c = 256u + (uint32_t)b;
    else if (b >= 0x7F && b <= 0xA0)
        c = 256u + 33u + (uint32_t)(b - 0x7F);
    else if (b == 0xAD)
        c = 256u + 67u;
    else
        c = (uint32_t)b;
    out[utf8_put(c, out)] = 0;
}

static void vmerge(vocab_t *v, const char *a, const char *b)
{
    FUZZ_CHECK(v->nm < 64, "merge table too small");
    int n = snprintf(v->mtext[v->nm], sizeof v->mtext[0], "%s %s", a, b);
    v->merge[v->nm] = (tok_str_t){v->mtext[v->nm], (size_t)n};
    v->nm++;
    char res[48];
    snprintf(res, sizeof res, "%s%s", a, b);
    vadd(v, res, TOK_TYPE_NORMAL, 0);
}

static void build(const tok_vocab_t *tv, const char *name)
{
    char err[512];
    FUZZ_CHECK(ntoks < MAX_TOKS, "too many tokenizers");
    int rc = tokenizer_build(&toks[ntoks], tv, err, sizeof err);
    FUZZ_CHECK(rc == 0, "building the %s tokenizer: %s", name, err);
    names[ntoks++] = name;
}

static void bpe_tokenizer(const char *pre)
{
    static vocab_t v;
    memset(&v, 0, sizeof v);
    for (int b = 0; b < 256; b++) {
        char c[4];
        byte_char(b, c);
        vadd(&v, c, TOK_TYPE_NORMAL, 0);
    }
    static const char *const m[][2] = {
        {"h", "e"},
        {"l", "l"},
        {"he", "ll"},
        {"hell", "o"},
        {"\xc4\xa0", "w"},
        {"o", "r"},
        {"\xc4\xa0w", "or"},
        {"l", "d"},
        {"\xc4\xa0wor", "ld"},
        {"\xc4\xa0", "t"},
        {"\xc4\xa0t", "he"},
        {"i", "n"},
        {"e", "r"},
        {"a", "n"},
        {"\xc4\xa0", "a"},
        {"o", "n"},
        {"1", "2"},
        {"12", "3"},
        {"\xc4\x8a", "\xc4\x8a"},
        {"\xc3\xa9", "\xc3\xa9"},
        {"b", "c"},
        {"a", "b"},
        {"a", "a"},
    };
    for (size_t i = 0; i < sizeof m / sizeof m[0]; i++)
        vmerge(&v, m[i][0], m[i][1]);
    vadd(&v, "xyz", TOK_TYPE_NORMAL, 0); /* a token no merge forms */
    int bos = vadd(&v, "<|begin_of_text|>", TOK_TYPE_CONTROL, 0);
    int eot = vadd(&v, "<|eot_id|>", TOK_TYPE_CONTROL, 0);
    vadd(&v, "<think>", TOK_TYPE_USER_DEFINED, 0);
    vadd(&v, "<|im_end|>", TOK_TYPE_NORMAL, 0); /* made CONTROL by its name, as llama.cpp does */
    vadd(&v, "<|unused|>", TOK_TYPE_UNUSED, 0);
    tok_vocab_t tv = {.kind = TOK_BPE,
                      .pre = pre,
                      .n_tokens = (size_t)v.n,
                      .tokens = v.tok,
                      .types = v.type,
                      .n_merges = (size_t)v.nm,
                      .merges = v.merge,
                      .bos = bos,
                      .eos = eot,
                      .eot = eot,
                      .eom = TOK_NONE,
                      .unk = TOK_NONE,
                      .pad = TOK_NONE,
                      .add_bos = 1,
                      .add_eos = 0,
                      .add_space_prefix = -1};
    build(&tv, pre);
}

/* SentencePiece as GGUF carries it: U+2581 for the space, <0xXX> byte tokens, scores. */
static void spm_tokenizer(void)
{
    static vocab_t v;
    memset(&v, 0, sizeof v);
    vadd(&v, "<unk>", TOK_TYPE_UNKNOWN, 0);
    vadd(&v, "<s>", TOK_TYPE_CONTROL, 0);
    vadd(&v, "</s>", TOK_TYPE_CONTROL, 0);
    for (int b = 0; b < 256; b++) {
        char s[8];
        snprintf(s, sizeof s, "<0x%02X>", b);
        vadd(&v, s, TOK_TYPE_BYTE, 0);
    }
    static const char *const pieces[] = {
        "\xe2\x96\x81",
        "\xe2\x96\x81t",
        "\xe2\x96\x81th",
        "\xe2\x96\x81the",
        "he",
        "h",
        "e",
        "t",
        "o",
        "n",
        "on",
        "\xe2\x96\x81on",
        "ce",
        "c",
        ("\xe2\x96\x81"
         "a"),
        "a",
        "i",
        "in",
        "\xe2\x96\x81in",
        "caf",
        "\xc3\xa9",
        "\xe4\xb8\xad",
        "1",
        "2",
        "12",
    };
    for (size_t i = 0; i < sizeof pieces / sizeof pieces[0]; i++)
        vadd(&v, pieces[i], TOK_TYPE_NORMAL, -(float)i);
    vadd(&v, "<|user|>", TOK_TYPE_USER_DEFINED, 0);
    vadd(&v, "<|end|>", TOK_TYPE_CONTROL, 0);
    tok_vocab_t tv = {.kind = TOK_SPM,
                      .n_tokens = (size_t)v.n,
                      .tokens = v.tok,
                      .scores = v.score,
                      .types = v.type,
                      .bos = 1,
                      .eos = 2,
                      .eot = TOK_NONE,
                      .eom = TOK_NONE,
                      .unk = 0,
                      .pad = TOK_NONE,
                      .add_bos = 1,
                      .add_eos = 0,
                      .add_space_prefix = 1,
                      .escape_spaces = true};
    build(&tv, "spm-gguf");
}

static void gguf_tokenizers(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    char *files[MAX_TOKS];
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) && n < MAX_TOKS) {
        size_t l = strlen(e->d_name);
        if (l > 5 && !strcmp(e->d_name + l - 5, ".gguf")) files[n++] = strdup(e->d_name);
    }
    closedir(d);
    /* a fixed order, so an input means the same tokenizer in every run */
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (strcmp(files[j], files[i]) < 0) {
                char *t = files[i];
                files[i] = files[j];
                files[j] = t;
            }
    for (int i = 0; i < n; i++) {
        char path[4096], err[512];
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        gguf_t *g;
        FUZZ_CHECK(gguf_open(&g, path, err, sizeof err) == 0, "%s", err);
        FUZZ_CHECK(ntoks < MAX_TOKS, "too many tokenizers");
        int rc = tokenizer_from_gguf(&toks[ntoks], g, NULL, err, sizeof err);
        gguf_free(g);
        FUZZ_CHECK(rc == 0, "%s", err);
        names[ntoks++] = files[i]; /* kept for the log line */
        fprintf(stderr, "fuzz_tokenizer: %s: %d tokens\n", path, toks[ntoks - 1].n_vocab);
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char err[512];
    FUZZ_CHECK(tokenizer_load(&toks[0], INFERD_FUZZ_TOKENIZER_BIN, INFERD_FUZZ_TOKENIZER_VOCAB, err,
                              sizeof err) == 0,
               "%s", err);
    names[ntoks++] = "tokenizer.bin";
    spm_tokenizer();
    static const char *const pres[] = {"default", "llama-bpe", "qwen2", "smollm", "gpt2"};
    for (size_t i = 0; i < sizeof pres / sizeof pres[0]; i++)
        bpe_tokenizer(pres[i]);
    const char *dir = getenv("INFERD_FUZZ_VOCAB_DIR");
    gguf_tokenizers(dir ? dir : INFERD_FUZZ_VOCAB_DIR);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    int which = data[0] % ntoks;
    uint8_t *text = fuzz_copy(data + 1, size - 1);
    int rc = tokenizer_fuzz_one(&toks[which], text, size - 1);
    FUZZ_CHECK(rc == 0, "tokenizer_fuzz_one on the %s tokenizer returned %d", names[which], rc);
    free(text);
    return 0;
}
