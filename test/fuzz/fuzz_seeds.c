/*
 * fuzz_seeds - writes the seed corpus of every harness from the tests' inputs (corpora are
 * generated, never committed): OUT/<harness>/<name>, in each harness's input format (see its
 * header comment).
 *
 *   fuzz_seeds OUT [--tok-corpus FILE]               tokenizer test corpus (JSON strings)
 *                  [--llama2c-model FILE]            a checkpoint mkmodel wrote
 *                  [--llama2c-tokenizer FILE VOCAB]  and its tokenizer.bin
 *                  [--gguf FILE]...                  GGUF files mkmodel wrote
 *   fuzz_seeds --hf-vocab DIR KIND                   a tiny tokenizer.json + tokenizer_config.json
 *                                                    (KIND bpe or spm) for mkmodel --vocab-from
 */
#include <errno.h>
#include <jansson.h>
#include <nghttp2/nghttp2.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine/dtype.h"
#include "engine/gguf.h"
#include "grpc/health/v1/health.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "grpc/reflection/v1alpha/reflection.pb-c.h"
#include "inferd/v1/inference.pb-c.h"
#include "server/base/config.h"
#include "server/core/call.h"
#include "tools/mkmodel/gguf_write.h"

static const char *out_dir;
static int n_written;

static void die(const char *what)
{
    fprintf(stderr, "fuzz_seeds: %s: %s\n", what, strerror(errno));
    exit(1);
}

/* ---- output ---- */
typedef struct {
    uint8_t *p;
    size_t n, cap;
} buf_t;

static void put(buf_t *b, const void *p, size_t n)
{
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n)
            cap *= 2;
        b->p = realloc(b->p, cap);
        if (!b->p) die("realloc");
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->n, p, n);
    b->n += n;
}

static void put_str(buf_t *b, const char *s)
{
    put(b, s, strlen(s));
}

static void put_u8(buf_t *b, unsigned v)
{
    uint8_t c = (uint8_t)v;
    put(b, &c, 1);
}

static void put_le32(buf_t *b, uint32_t v)
{
    uint8_t c[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put(b, c, 4);
}

static void mkdirs(const char *path)
{
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s", path);
    for (char *p = tmp + 1; *p; p++)
        if (*p == '/') {
            *p = 0;
            mkdir(tmp, 0755);
            *p = '/';
        }
    if (mkdir(tmp, 0755) && errno != EEXIST) die(path);
}

/* OUT/harness/name := bytes */
static void seed(const char *harness, const char *name, const void *data, size_t n)
{
    char dir[4096], path[4400];
    snprintf(dir, sizeof dir, "%s/%s", out_dir, harness);
    mkdirs(dir);
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(data, 1, n, f) != n) || fclose(f)) die(path);
    n_written++;
}

static void seed_buf(const char *harness, const char *name, buf_t *b)
{
    seed(harness, name, b->p, b->n);
    b->n = 0;
}

static uint8_t *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f) die(path);
    buf_t b = {0};
    uint8_t chunk[65536];
    size_t k;
    while ((k = fread(chunk, 1, sizeof chunk, f)) > 0)
        put(&b, chunk, k);
    fclose(f);
    *n = b.n;
    return b.p;
}

/* ---- tokenizer: [selector][text] ---- */
static const char *const extra_texts[] = {
    "Once upon a time, there was a little girl named Lily.",
    "  leading spaces and\ttabs\nnewlines  ",
    ("caf\xc3\xa9 \xc3\xbc\xc3\xb1\xc3\xaf\xc3\xa7\xc3\xb8 d\xc3\xa9 \xe2\x82\xac 100 "
     "\xe4\xb8\xad\xe6\x96"
     "\x87 \xf0\x9f\x98\x80!"),
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>",
    "<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n<think>\n</think>",
    "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]</s>",
    "\xff\xfe\xc3\x28\xe2\x82\xf0\x9f\x98 invalid utf-8 \xed\xa0\x80 surrogate \xc0\xaf overlong",
    "1234567890 3.14159 1e-9 0x1F 100,000",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "hello world xyz abc aa \xe2\x96\x81the <0x41>",
};

static void tokenizer_seeds(const char *corpus)
{
    buf_t b = {0};
    char name[64];
    int k = 0;
    json_t *root = NULL;
    if (corpus) {
        json_error_t je;
        root = json_load_file(corpus, 0, &je);
        if (!json_is_array(root)) {
            fprintf(stderr, "fuzz_seeds: %s: %s\n", corpus, je.text);
            exit(1);
        }
    }
    size_t n_corpus = json_array_size(root), n_extra = sizeof extra_texts / sizeof extra_texts[0];
    for (size_t i = 0; i < n_corpus + n_extra; i++) {
        const char *s;
        size_t len;
        if (i < n_corpus) {
            json_t *v = json_array_get(root, i);
            s = json_string_value(v);
            len = json_string_length(v);
        } else {
            s = extra_texts[i - n_corpus];
            len = strlen(s);
        }
        if (!s) continue;
        /* every text under every selector a run may have (built-in and real vocabularies) */
        for (unsigned sel = 0; sel < 12; sel++) {
            put_u8(&b, sel);
            put(&b, s, len);
            snprintf(name, sizeof name, "text%03d-%02u", k, sel);
            seed_buf("tokenizer", name, &b);
        }
        k++;
    }
    json_decref(root);
    free(b.p);
}

/* ---- llama2c: [mode][checkpoint] or [mode|1][vocab LE16][tokenizer.bin] ---- */
static void checkpoint(buf_t *b, int dim, int hidden, int layers, int heads, int kv, int vocab,
                       int seq, bool shared)
{
    int32_t h[7] = {dim, hidden, layers, heads, kv, shared ? vocab : -vocab, seq};
    put(b, h, sizeof h);
    int hd = dim / heads;
    uint64_t n = (uint64_t)vocab * dim +
                 (uint64_t)layers *
                     ((uint64_t)dim * 2 + (uint64_t)dim * heads * hd + (uint64_t)dim * kv * hd * 2 +
                      (uint64_t)heads * hd * dim + (uint64_t)hidden * dim * 3) +
                 dim + (uint64_t)seq * hd + (shared ? 0 : (uint64_t)vocab * dim);
    for (uint64_t i = 0; i < n; i++) {
        float x = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
        put(b, &x, 4);
    }
}

static void tokenizer_bin(buf_t *b, int vocab)
{
    put_le32(b, 8);
    static const char *const base[] = {"<unk>", "<s>", "</s>", " ", "a", "b", " a", "ab"};
    for (int i = 0; i < vocab; i++) {
        char s[16];
        if (i < 8)
            snprintf(s, sizeof s, "%s", base[i]);
        else
            snprintf(s, sizeof s, "<0x%02X>", (i - 8) & 255);
        float score = -(float)i;
        put(b, &score, 4);
        put_le32(b, (uint32_t)strlen(s));
        put_str(b, s);
    }
}

static void llama2c_seeds(const char *model, const char *tok, int tok_vocab)
{
    buf_t b = {0};
    static const struct {
        int dim, hidden, layers, heads, kv, vocab, seq;
        bool shared;
    } shapes[] = {
        {4, 8, 1, 2, 2, 3, 4, true},  {4, 8, 1, 2, 1, 5, 4, false}, {8, 12, 2, 2, 1, 4, 3, true},
        {6, 6, 1, 3, 3, 3, 2, false}, {2, 2, 1, 1, 1, 3, 8, true},
    };
    char name[64];
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        for (unsigned ctx = 0; ctx < 4; ctx++) {
            put_u8(&b, ctx << 1);
            checkpoint(&b, shapes[i].dim, shapes[i].hidden, shapes[i].layers, shapes[i].heads,
                       shapes[i].kv, shapes[i].vocab, shapes[i].seq, shapes[i].shared);
            snprintf(name, sizeof name, "model%zu-ctx%u", i, ctx);
            seed_buf("llama2c", name, &b);
        }
    static const int vocabs[] = {3, 8, 12, 264};
    for (size_t i = 0; i < sizeof vocabs / sizeof vocabs[0]; i++) {
        put_u8(&b, 1);
        put_u8(&b, (unsigned)vocabs[i] & 255);
        put_u8(&b, (unsigned)vocabs[i] >> 8);
        tokenizer_bin(&b, vocabs[i]);
        snprintf(name, sizeof name, "tokenizer-v%d", vocabs[i]);
        seed_buf("llama2c", name, &b);
    }
    if (model) {
        size_t n;
        uint8_t *p = read_file(model, &n);
        put_u8(&b, 0);
        put(&b, p, n);
        seed_buf("llama2c", "mkmodel-model", &b);
        free(p);
    }
    if (tok) {
        size_t n;
        uint8_t *p = read_file(tok, &n);
        put_u8(&b, 1);
        put_u8(&b, (unsigned)tok_vocab & 255);
        put_u8(&b, ((unsigned)tok_vocab >> 8) & 255);
        put(&b, p, n);
        seed_buf("llama2c", "mkmodel-tokenizer", &b);
        free(p);
    }
    free(b.p);
}

/* ---- gguf: images the writer produces ---- */
static void gguf_seed(gguf_writer_t *w, const char *name)
{
    uint8_t *p;
    size_t n;
    if (gguf_writer_bytes(w, &p, &n)) die("gguf_writer_bytes");
    seed("gguf", name, p, n);
    free(p);
    gguf_writer_free(w);
}

static gguf_writer_t *writer(uint32_t version, uint32_t alignment)
{
    gguf_writer_t *w;
    if (gguf_writer_new(&w, version, alignment)) die("gguf_writer_new");
    return w;
}

/* SentencePiece vocabulary as llama.cpp's convert writes it (U+2581, byte tokens) */
static void spm_keys(gguf_writer_t *w)
{
    static char bytes[256][8];
    const char *toks[3 + 256 + 8];
    float scores[3 + 256 + 8] = {0};
    int32_t types[3 + 256 + 8];
    int n = 0;
    toks[n] = "<unk>", types[n++] = 2;
    toks[n] = "<s>", types[n++] = 3;
    toks[n] = "</s>", types[n++] = 3;
    for (int b = 0; b < 256; b++) {
        snprintf(bytes[b], sizeof bytes[b], "<0x%02X>", b);
        toks[n] = bytes[b], types[n++] = 6;
    }
    static const char *const pieces[] = {
        "\xe2\x96\x81", "\xe2\x96\x81h", "\xe2\x96\x81hi", "i", "h", "e", "he", "<|user|>"};
    for (int i = 0; i < 8; i++) {
        toks[n] = pieces[i];
        scores[n] = -(float)i;
        types[n++] = i == 7 ? 4 : 1;
    }
    gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, (size_t)n);
    gguf_writer_set_arr_f32(w, "tokenizer.ggml.scores", scores, (size_t)n);
    gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type", types, (size_t)n);
    gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1);
    gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2);
    gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", true);
    gguf_writer_set_bool(w, "tokenizer.ggml.add_space_prefix", true);
    gguf_writer_set_str(w, "tokenizer.chat_template",
                        "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
                        "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}");
}

/* byte-level BPE with merges, as for Llama 3 / Qwen */
static void bpe_keys(gguf_writer_t *w, const char *pre)
{
    static char chars[256][4];
    const char *toks[256 + 16];
    int32_t types[256 + 16];
    int n = 0;
    for (int b = 0; b < 256; b++) {
        unsigned c = b <= 0x20                ? 256u + (unsigned)b
                     : b >= 0x7F && b <= 0xA0 ? 256u + 33u + (unsigned)(b - 0x7F)
                     : b == 0xAD              ? 256u + 67u
                                              : (unsigned)b;
        if (c < 0x80) {
            chars[b][0] = (char)c;
        } else {
            chars[b][0] = (char)(0xC0 | c >> 6);
            chars[b][1] = (char)(0x80 | (c & 63));
        }
        toks[n] = chars[b], types[n++] = 1;
    }
    static const char *const res[] = {"he", "ll",          "hell", "hello",        "\xc4\xa0w",
                                      "or", "\xc4\xa0wor", "ld",   "\xc4\xa0world"};
    static const char *const merges[] = {"h e",          "l l",        "he ll",
                                         "hell o",       "\xc4\xa0 w", "o r",
                                         "\xc4\xa0w or", "l d",        "\xc4\xa0wor ld"};
    for (int i = 0; i < 9; i++)
        toks[n] = res[i], types[n++] = 1;
    toks[n] = "<|begin_of_text|>", types[n++] = 3;
    toks[n] = "<|eot_id|>", types[n++] = 3;
    toks[n] = "<|im_end|>", types[n++] = 1;
    toks[n] = "<think>", types[n++] = 4;
    gguf_writer_set_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_writer_set_str(w, "tokenizer.ggml.pre", pre);
    gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, (size_t)n);
    gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type", types, (size_t)n);
    gguf_writer_set_arr_str(w, "tokenizer.ggml.merges", merges, 9);
    gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)n - 4);
    gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)n - 3);
    gguf_writer_set_u32(w, "tokenizer.ggml.eot_token_id", (uint32_t)n - 3);
    gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", true);
    gguf_writer_set_str(
        w, "tokenizer.chat_template",
        "{% set loop_messages = messages %}{% for message in loop_messages %}{% set "
        "content = '<|start_header_id|>' + message['role'] + "
        "'<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}"
        "{{ content }}{% endfor %}");
}

/* the hyper-parameters a llama GGUF model carries, and F32 tensors of that shape */
static void model_keys(gguf_writer_t *w, const char *arch, int dim, int hidden, int layers,
                       int heads, int kv, int vocab)
{
    bool qwen2 = !strcmp(arch, "qwen2"), qwen3 = !strcmp(arch, "qwen3");
    char k[128];
#define KEY(s) (snprintf(k, sizeof k, "%s." s, arch), k)
    gguf_writer_set_str(w, "general.architecture", arch);
    gguf_writer_set_str(w, "general.name", "fuzz seed");
    gguf_writer_set_u32(w, KEY("context_length"), 16);
    gguf_writer_set_u32(w, KEY("embedding_length"), (uint32_t)dim);
    gguf_writer_set_u32(w, KEY("block_count"), (uint32_t)layers);
    gguf_writer_set_u32(w, KEY("feed_forward_length"), (uint32_t)hidden);
    gguf_writer_set_u32(w, KEY("attention.head_count"), (uint32_t)heads);
    gguf_writer_set_u32(w, KEY("attention.head_count_kv"), (uint32_t)kv);
    gguf_writer_set_f32(w, KEY("attention.layer_norm_rms_epsilon"), 1e-5f);
    gguf_writer_set_f32(w, KEY("rope.freq_base"), 10000.0f);
    gguf_writer_set_u32(w, KEY("vocab_size"), (uint32_t)vocab);
#undef KEY
    int hd = dim / heads;
    float *zero = calloc((size_t)vocab * (size_t)(dim > hidden ? dim : hidden) + 64, 4);
    if (!zero) die("calloc");
    struct {
        const char *name;
        int64_t c, r;
    } t[] = {{"token_embd.weight", dim, vocab},
             {"output_norm.weight", dim, 1},
             {"blk.%d.attn_norm.weight", dim, 1},
             {"blk.%d.attn_q.weight", dim, heads * hd},
             {"blk.%d.attn_k.weight", dim, kv * hd},
             {"blk.%d.attn_v.weight", dim, kv * hd},
             {"blk.%d.attn_output.weight", heads * hd, dim},
             {"blk.%d.ffn_norm.weight", dim, 1},
             {"blk.%d.ffn_gate.weight", dim, hidden},
             {"blk.%d.ffn_down.weight", hidden, dim},
             {"blk.%d.ffn_up.weight", dim, hidden},
             {"blk.%d.attn_q.bias", heads * hd, 1},
             {"blk.%d.attn_k.bias", kv * hd, 1},
             {"blk.%d.attn_v.bias", kv * hd, 1},
             {"blk.%d.attn_q_norm.weight", hd, 1},
             {"blk.%d.attn_k_norm.weight", hd, 1}};
    for (size_t i = 0; i < sizeof t / sizeof t[0]; i++) {
        if (strstr(t[i].name, ".bias") && !qwen2) continue;
        if ((strstr(t[i].name, "attn_q_norm") || strstr(t[i].name, "attn_k_norm")) && !qwen3)
            continue;
        int nl = strstr(t[i].name, "%d") ? layers : 1;
        for (int l = 0; l < nl; l++) {
            char nm[64];
            const char *pct = strstr(t[i].name, "%d");
            if (pct)
                snprintf(nm, sizeof nm, "%.*s%d%s", (int)(pct - t[i].name), t[i].name, l, pct + 2);
            else
                snprintf(nm, sizeof nm, "%s", t[i].name);
            int64_t ne[2] = {t[i].c, t[i].r};
            int nd = t[i].r == 1 ? 1 : 2;
            if (gguf_writer_add_tensor(w, nm, DTYPE_F32, (uint32_t)nd, ne, zero,
                                       (size_t)(t[i].c * t[i].r * 4)))
                die("gguf_writer_add_tensor");
        }
    }
    free(zero);
}

static void gguf_seeds(char **files, int n_files)
{
    gguf_writer_t *w = writer(3, 32);
    spm_keys(w);
    gguf_seed(w, "spm-vocab");

    static const char *const pres[] = {"llama-bpe", "qwen2", "smollm", "gpt2", "default"};
    for (int i = 0; i < 5; i++) {
        w = writer(3, 32);
        bpe_keys(w, pres[i]);
        char name[64];
        snprintf(name, sizeof name, "bpe-vocab-%s", pres[i]);
        gguf_seed(w, name);
    }

    /* every value type, both versions, a wider alignment */
    for (uint32_t v = 2; v <= 3; v++) {
        w = writer(v, v == 2 ? 64 : 32);
        gguf_writer_set_u8(w, "t.u8", 200);
        gguf_writer_set_i8(w, "t.i8", -100);
        gguf_writer_set_u16(w, "t.u16", 60000);
        gguf_writer_set_i16(w, "t.i16", -30000);
        gguf_writer_set_u32(w, "t.u32", 4000000000u);
        gguf_writer_set_i32(w, "t.i32", -2000000000);
        gguf_writer_set_u64(w, "t.u64", UINT64_MAX);
        gguf_writer_set_i64(w, "t.i64", INT64_MIN);
        gguf_writer_set_f32(w, "t.f32", 1.5f);
        gguf_writer_set_f64(w, "t.f64", -2.25);
        gguf_writer_set_bool(w, "t.bool", true);
        gguf_writer_set_str(w, "t.str", "caf\xc3\xa9");
        const char *strs[] = {"a", "", "bc"};
        gguf_writer_set_arr_str(w, "t.arr_str", strs, 3);
        const char *nul[] = {"x\0y"};
        size_t nul_len[] = {3};
        gguf_writer_set_arr_strn(w, "t.arr_strn", nul, nul_len, 1);
        float f[] = {1, 2, 3};
        gguf_writer_set_arr_f32(w, "t.arr_f32", f, 3);
        int32_t i32[] = {-1, 0, 1};
        gguf_writer_set_arr_i32(w, "t.arr_i32", i32, 3);
        uint32_t u32[] = {7, 8};
        gguf_writer_set_arr_u32(w, "t.arr_u32", u32, 2);
        uint8_t u8[] = {1, 0, 1};
        gguf_writer_set_arr(w, "t.arr_bool", 7, u8, 3);
        int64_t i64[] = {INT64_MAX, -5};
        gguf_writer_set_arr(w, "t.arr_i64", 11, i64, 2);
        double f64[] = {0.5};
        gguf_writer_set_arr(w, "t.arr_f64", 12, f64, 1);
        gguf_writer_set_arr(w, "t.arr_empty", 4, NULL, 0);
        /* tensors of several types, one block each */
        static const uint32_t dts[] = {DTYPE_F32,  DTYPE_F16,  DTYPE_BF16, DTYPE_Q8_0,
                                       DTYPE_Q4_0, DTYPE_Q4_K, DTYPE_Q5_K, DTYPE_Q6_K};
        uint8_t data[1024] = {0};
        for (size_t i = 0; i < sizeof dts / sizeof dts[0]; i++) {
            const dtype_info_t *di = dtype_info(dts[i]);
            int64_t ne[3] = {(int64_t)di->block, 1, 2};
            char nm[32];
            snprintf(nm, sizeof nm, "t.%s", dtype_name(dts[i]));
            if (gguf_writer_add_tensor(w, nm, dts[i], i % 2 ? 3 : 1, ne, data,
                                       dtype_row_bytes(dts[i], (uint64_t)ne[0]) * (i % 2 ? 2 : 1)))
                die("gguf_writer_add_tensor");
        }
        gguf_seed(w, v == 2 ? "types-v2" : "types-v3");
    }

    /* models: llama, qwen2 (q/k/v biases), qwen3 (q/k norms), with their vocabularies */
    w = writer(3, 32);
    model_keys(w, "llama", 8, 12, 1, 2, 1, 267);
    spm_keys(w);
    gguf_seed(w, "model-llama");
    w = writer(3, 32);
    model_keys(w, "qwen2", 8, 8, 1, 2, 2, 269);
    bpe_keys(w, "qwen2");
    gguf_seed(w, "model-qwen2");
    w = writer(3, 32);
    model_keys(w, "qwen3", 8, 8, 1, 2, 1, 269);
    bpe_keys(w, "qwen2");
    gguf_writer_set_u32(w, "qwen3.attention.key_length", 4);
    gguf_seed(w, "model-qwen3");

    for (int i = 0; i < n_files; i++) {
        size_t n;
        uint8_t *p = read_file(files[i], &n);
        const char *base = strrchr(files[i], '/');
        char name[256];
        snprintf(name, sizeof name, "mkmodel-%s", base ? base + 1 : files[i]);
        seed("gguf", name, p, n);
        free(p);
    }
}

/* ---- grpc_message: [type|flags][pieces][stream] ---- */
static size_t packed(const ProtobufCMessage *m, uint8_t **out)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    *out = malloc(n ? n : 1);
    if (!*out) die("malloc");
    protobuf_c_message_pack(m, *out);
    return n;
}

static void frame(buf_t *b, const uint8_t *msg, size_t n, int compressed)
{
    uint8_t pre[5] = {(uint8_t)compressed, (uint8_t)(n >> 24), (uint8_t)(n >> 16),
                      (uint8_t)(n >> 8), (uint8_t)n};
    put(b, pre, 5);
    put(b, msg, n);
}

/* One framed message of m (gzip'ed when compressed). */
static void frame_msg(buf_t *b, const ProtobufCMessage *m, int compressed)
{
    uint8_t *p;
    size_t n = packed(m, &p);
    if (compressed) {
        unsigned char *z;
        size_t zl;
        if (gzip_compress(p, n, &z, &zl)) die("gzip");
        frame(b, z, zl, 1);
        free(z);
    } else {
        frame(b, p, n, 0);
    }
    free(p);
}

/* The request messages the tests send, by request type (the harnesses' type index). */
typedef struct {
    const char *name;
    int type; /* fuzz_grpc_message's table index */
    const char *path;
    const ProtobufCMessage *msg;
} request_t;

static Inferd__V1__GenerateRequest gen_tokens, gen_prompt, gen_full;
static Inferd__V1__SamplingOptions sampling;
static Inferd__V1__StopConditions stop, stop1;
static Inferd__V1__ModelInfoRequest info_req;
static Grpc__Health__V1__HealthCheckRequest check_empty, check_gen, check_unknown;
static Grpc__Health__V1__HealthListRequest list_req;
static Grpc__Reflection__V1__ServerReflectionRequest refl_list, refl_sym, refl_file, refl_ext,
    refl_exts;
static Grpc__Reflection__V1__ExtensionRequest ext_req;
static Grpc__Reflection__V1alpha__ServerReflectionRequest refla_list, refla_sym;
static uint32_t ids[] = {1, 45, 300}; /* inside the tiny test model's vocabulary */
static uint32_t stop_ids[] = {2};

static size_t requests(request_t *r)
{
    inferd__v1__generate_request__init(&gen_tokens);
    inferd__v1__stop_conditions__init(&stop1);
    stop1.max_tokens = 2;
    gen_tokens.n_token_ids = 3;
    gen_tokens.token_ids = ids;
    gen_tokens.stop = &stop1;
    inferd__v1__generate_request__init(&gen_prompt);
    gen_prompt.prompt = "Once upon a time";
    gen_prompt.request_id = "req-1";
    gen_prompt.stop = &stop1;
    inferd__v1__sampling_options__init(&sampling);
    sampling.temperature = 0.8f;
    sampling.top_p = 0.9f;
    sampling.top_k = 40;
    sampling.seed = 42;
    inferd__v1__stop_conditions__init(&stop);
    stop.max_tokens = 3;
    stop.n_stop_token_ids = 1;
    stop.stop_token_ids = stop_ids;
    stop.ignore_eos = 1;
    inferd__v1__generate_request__init(&gen_full);
    gen_full.request_id = "r";
    gen_full.model = "inferd-default";
    gen_full.prompt = "Lily";
    gen_full.sampling = &sampling;
    gen_full.stop = &stop;
    inferd__v1__model_info_request__init(&info_req);
    info_req.model = "inferd-default";
    grpc__health__v1__health_check_request__init(&check_empty);
    grpc__health__v1__health_check_request__init(&check_gen);
    check_gen.service = "inferd.v1.Inference";
    grpc__health__v1__health_check_request__init(&check_unknown);
    check_unknown.service = "no.such.Service";
    grpc__health__v1__health_list_request__init(&list_req);
    grpc__reflection__v1__server_reflection_request__init(&refl_list);
    refl_list.message_request_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES;
    refl_list.list_services = "";
    grpc__reflection__v1__server_reflection_request__init(&refl_sym);
    refl_sym.message_request_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL;
    refl_sym.file_containing_symbol = "inferd.v1.Inference";
    grpc__reflection__v1__server_reflection_request__init(&refl_file);
    refl_file.message_request_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME;
    refl_file.file_by_filename = "grpc/health/v1/health.proto";
    grpc__reflection__v1__extension_request__init(&ext_req);
    ext_req.containing_type = "inferd.v1.GenerateRequest";
    ext_req.extension_number = 100;
    grpc__reflection__v1__server_reflection_request__init(&refl_ext);
    refl_ext.message_request_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION;
    refl_ext.file_containing_extension = &ext_req;
    grpc__reflection__v1__server_reflection_request__init(&refl_exts);
    refl_exts.message_request_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE;
    refl_exts.all_extension_numbers_of_type = "inferd.v1.GenerateRequest";
    grpc__reflection__v1alpha__server_reflection_request__init(&refla_list);
    refla_list.message_request_case =
        GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES;
    refla_list.list_services = "*";
    grpc__reflection__v1alpha__server_reflection_request__init(&refla_sym);
    refla_sym.message_request_case =
        GRPC__REFLECTION__V1ALPHA__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL;
    refla_sym.file_containing_symbol = "grpc.health.v1.Health";
    size_t n = 0;
#define R(nm, t, p, m) r[n++] = (request_t){nm, t, p, &(m).base}
    R("generate-tokens", 0, "/inferd.v1.Inference/Generate", gen_tokens);
    R("generate-prompt", 0, "/inferd.v1.Inference/Generate", gen_prompt);
    R("generate-full", 0, "/inferd.v1.Inference/Generate", gen_full);
    R("stream-tokens", 0, "/inferd.v1.Inference/GenerateStream", gen_tokens);
    R("model-info", 1, "/inferd.v1.Inference/GetModelInfo", info_req);
    R("check-empty", 2, "/grpc.health.v1.Health/Check", check_empty);
    R("check-inference", 2, "/grpc.health.v1.Health/Check", check_gen);
    R("check-unknown", 2, "/grpc.health.v1.Health/Check", check_unknown);
    R("watch", 2, "/grpc.health.v1.Health/Watch", check_empty);
    R("list", 3, "/grpc.health.v1.Health/List", list_req);
    R("reflection-list", 4, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", refl_list);
    R("reflection-symbol", 4, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
      refl_sym);
    R("reflection-file", 4, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", refl_file);
    R("reflection-extension", 4, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
      refl_ext);
    R("reflection-extensions", 4, "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
      refl_exts);
    R("reflection-v1alpha-list", 5,
      "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", refla_list);
    R("reflection-v1alpha-symbol", 5,
      "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", refla_sym);
#undef R
    return n;
}

static void grpc_message_seeds(const request_t *r, size_t n)
{
    buf_t b = {0};
    char name[96];
    for (size_t i = 0; i < n; i++) {
        /* plain, split in pieces, two messages, gzip'ed, over a small maximum */
        static const struct {
            const char *tag;
            unsigned flags, pieces;
            int count, gz;
        } v[] = {{"", 0, 0, 1, 0},      {"-pieces", 0, 7, 1, 0},   {"-two", 8, 0, 2, 0},
                 {"-gzip", 0, 0, 1, 1}, {"-max64", 0x10, 3, 1, 0}, {"-max1k-gzip", 0x28, 0, 2, 1}};
        for (size_t k = 0; k < sizeof v / sizeof v[0]; k++) {
            put_u8(&b, (unsigned)r[i].type | v[k].flags);
            put_u8(&b, v[k].pieces);
            for (int c = 0; c < v[k].count; c++)
                frame_msg(&b, r[i].msg, v[k].gz);
            snprintf(name, sizeof name, "%s%s", r[i].name, v[k].tag);
            seed_buf("grpc_message", name, &b);
        }
    }
    /* an empty message, a truncated one, a length over every maximum */
    put_u8(&b, 2);
    put_u8(&b, 0);
    frame(&b, NULL, 0, 0);
    seed_buf("grpc_message", "empty-message", &b);
    put_u8(&b, 0);
    put_u8(&b, 1);
    put(&b, "\x00\x00\x00\x00\x10\x0a\x03", 7);
    seed_buf("grpc_message", "truncated", &b);
    put_u8(&b, 0);
    put_u8(&b, 0);
    put(&b, "\x00\x7f\xff\xff\xff", 5);
    seed_buf("grpc_message", "huge-length", &b);
    free(b.p);
}

/* ---- options: NUL-separated words; \x01 first marks an environment entry ---- */
static void option_seed(const char *name, const char *const *words)
{
    buf_t b = {0};
    for (int i = 0; words[i]; i++) {
        if (i) put_u8(&b, 0);
        put_str(&b, words[i]);
    }
    seed_buf("options", name, &b);
    free(b.p);
}

#define ENV "\x01"

static void option_seeds(void)
{
    /* the sets test/server/test_config.c loads */
    const char *const *sets[] = {
        (const char *const[]){NULL},
        (const char *const[]){ENV "DYN_SYSTEM_PORT=9000", ENV "INFERD_MAX_CONCURRENT_STREAMS=7",
                              ENV "DYN_LOG=debug", NULL},
        (const char *const[]){ENV "DYN_SYSTEM_PORT=9000", ENV "INFERD_SYSTEM_PORT=9001",
                              "--max-concurrent-streams", "9", "--log=warn", NULL},
        (const char *const[]){ENV "DYN_LOGGING_JSONL=true", NULL},
        (const char *const[]){"--system-port", "70000", NULL},
        (const char *const[]){"--listen", "nohost", NULL},
        (const char *const[]){"--listen", "[::1]:50051", NULL},
        (const char *const[]){"--log-format", "xml", NULL},
        (const char *const[]){"--log", "info,server=debug,engine=off", NULL},
        (const char *const[]){"--drain-timeout", "5 parsecs", NULL},
        (const char *const[]){"--drain-timeout", "1.5m", "--shutdown-delay=250ms", NULL},
        (const char *const[]){"--metrics-prefix", "9bad", NULL},
        (const char *const[]){"--starting-health-status", "maybe", NULL},
        (const char *const[]){"--tls-cert", "/x.pem", "--tls-key", "/k.pem", "--tls-client-ca",
                              "/ca.pem", "--tls-allow-plaintext", NULL},
        (const char *const[]){"--no-such-flag", NULL},
        (const char *const[]){"--max-concurrent-streams", NULL},
        (const char *const[]){ENV "DYN_SYSTEM_PORT=-5", NULL},
        (const char *const[]){ENV "DYN_HEALTH_CHECK_ENABLED=perhaps", NULL},
        (const char *const[]){"--help", "--print-config", "--version", NULL},
        (const char *const[]){"--device", "cuda:3", "--health-check-enabled", "off", NULL},
        (const char *const[]){ENV "DYN_HEALTH_CHECK_PAYLOAD={\"token_ids\":[1]}",
                              ENV "DYN_SYSTEM_HOST=::1", ENV "DYN_CANARY_WAIT_TIME=2s", NULL},
    };
    char name[64];
    for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++) {
        snprintf(name, sizeof name, "set%02zu", i);
        option_seed(name, sets[i]);
    }
    /* every option of the table, as a flag and from each of its variables, with its default
     * value: --help lists them, so the seeds follow the table */
    char *help = NULL;
    size_t hl = 0;
    FILE *f = open_memstream(&help, &hl);
    if (!f) die("open_memstream");
    config_print_help(f);
    fclose(f);
    char flag[128] = "", env[3][128] = {"", "", ""};
    int k = 0;
    for (char *line = strtok(help, "\n"); line; line = strtok(NULL, "\n")) {
        while (*line == ' ')
            line++;
        if (!strncmp(line, "--", 2)) {
            snprintf(flag, sizeof flag, "%s", line);
            env[0][0] = env[1][0] = env[2][0] = 0;
        } else if (!strncmp(line, "env: ", 5)) {
            char tmp[400];
            snprintf(tmp, sizeof tmp, "%s", line + 5);
            int e = 0;
            char *save = NULL;
            for (char *s = strtok_r(tmp, ", ", &save); s && e < 3; s = strtok_r(NULL, ", ", &save))
                snprintf(env[e++], sizeof env[0], "%s", s);
        } else if (!strncmp(line, "default: ", 9) && flag[0]) {
            const char *def = strcmp(line + 9, "(unset)") ? line + 9 : "x";
            char a[400], e[400];
            snprintf(a, sizeof a, "%s=%s", flag, def);
            snprintf(name, sizeof name, "opt%02d-flag", k);
            option_seed(name, (const char *const[]){a, NULL});
            for (int j = 0; j < 3 && env[j][0]; j++) {
                snprintf(e, sizeof e, ENV "%s=%s", env[j], def);
                snprintf(name, sizeof name, "opt%02d-env%d", k, j);
                option_seed(name, (const char *const[]){e, NULL});
            }
            k++;
            flag[0] = 0;
        }
    }
    free(help);
}

/* ---- payload: DYN_HEALTH_CHECK_PAYLOAD JSON (the prober's and canary tests' payloads) ---- */
static void payload_seeds(void)
{
    static const char *const p[] = {
        "{\"token_ids\":[1],\"stop\":{\"max_tokens\":1}}",
        ("{\"token_ids\":[1,2,3],\"sampling\":{\"temperature\":0.5,\"topK\":4,\"seed\":"
         "\"18446744073709551615\"},\"stop\":{\"maxTokens\":2,\"stopTokenIds\":[2],"
         "\"ignoreEos\":true}}"),
        "{\"prompt\":\"Once upon\",\"stop\":{\"max_tokens\":3.0}}",
        ("{\"requestId\":\"canary\",\"model\":\"inferd-default\",\"prompt\":\"x\","
         "\"sampling\":{\"top_p\":0.9,\"top_k\":1,\"seed\":7},\"stop\":null}"),
        "{\"x\":1}",
        "{\"stop\":{\"max_tokens\":\"two\"}}",
        "{\"stop\":{\"max_tokens\":-1}}",
        "{\"token_ids\":[1,\"a\"]}",
        "{\"token_ids\":5}",
        "{\"max\":",
        "{\"stop\":{\"max_tokens\":1,\"maxTokens\":2}}",
        "{\"sampling\":[1]}",
        "[1,2]",
        "{\"token_ids\":[4294967295,4294967296,1e3,1.5]}",
        "{\"prompt\":\"\\u00e9\\ud83d\\ude00\\u0000\"}",
        "{\"sampling\":{\"seed\":\"0x10\",\"temperature\":\"hot\"}}",
        "{\"token_ids\":[],\"stop\":{\"stop_token_ids\":[null]}}",
    };
    char name[32];
    for (size_t i = 0; i < sizeof p / sizeof p[0]; i++) {
        snprintf(name, sizeof name, "payload%02zu", i);
        seed("payload", name, p[i], strlen(p[i]));
    }
}

/* ---- h2: a connection's bytes after the client preface ---- */
typedef struct {
    nghttp2_session *s;
    const uint8_t *body;
    size_t body_len, body_off;
    int end_stream;
} h2c_t;

static ssize_t body_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *ud)
{
    (void)s, (void)id, (void)src;
    h2c_t *c = ud;
    size_t n = c->body_len - c->body_off;
    if (n > len) n = len;
    if (n > 16) n = 9 + n % 7; /* several DATA frames: messages cross frame boundaries */
    if (n) memcpy(buf, c->body + c->body_off, n);
    c->body_off += n;
    if (c->body_off == c->body_len) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (!c->end_stream) *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
    }
    return (ssize_t)n;
}

#define NV(n, v)                                                                                   \
    {                                                                                              \
        (uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE                 \
    }

static void h2_open(h2c_t *c)
{
    memset(c, 0, sizeof *c);
    nghttp2_session_callbacks *cb;
    if (nghttp2_session_callbacks_new(&cb)) die("nghttp2");
    if (nghttp2_session_client_new(&c->s, cb, c)) die("nghttp2");
    nghttp2_session_callbacks_del(cb);
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
                                   {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}};
    nghttp2_submit_settings(c->s, NGHTTP2_FLAG_NONE, iv, 2);
}

/* A request; body may be NULL. extra: name, value, ..., NULL. Returns the stream id. */
static int32_t h2_request(h2c_t *c, const char *method, const char *path, const char *ctype,
                          const uint8_t *body, size_t len, int end_stream, const char *const *extra)
{
    nghttp2_nv nva[16] = {NV(":method", method), NV(":scheme", "http"), NV(":path", path),
                          NV(":authority", "localhost")};
    size_t n = 4;
    if (ctype) nva[n++] = (nghttp2_nv)NV("content-type", ctype);
    for (int i = 0; extra && extra[i]; i += 2)
        nva[n++] = (nghttp2_nv)NV(extra[i], extra[i + 1]);
    c->body = body;
    c->body_len = len;
    c->body_off = 0;
    c->end_stream = end_stream;
    nghttp2_data_provider prd = {.read_callback = body_read};
    int32_t id = nghttp2_submit_request(c->s, NULL, nva, n, body ? &prd : NULL, NULL);
    if (id < 0) die("nghttp2_submit_request");
    return id;
}

/* Everything queued, into b. */
static void h2_drain(h2c_t *c, buf_t *b)
{
    const uint8_t *out;
    ssize_t n;
    while ((n = nghttp2_session_mem_send(c->s, &out)) > 0)
        put(b, out, (size_t)n);
}

/* The listener byte (0: the main port, 1: the system port), then the session's bytes less the
 * preface, with the first HEADERS frame's block split across CONTINUATION frames when split is
 * set (as a client with big headers sends them). */
static void h2_seed(h2c_t *c, buf_t *raw, const char *name, int split, int listener)
{
    h2_drain(c, raw);
    nghttp2_session_del(c->s);
    buf_t b = {0};
    put_u8(&b, (unsigned)listener);
    size_t off = 24; /* the client preface: the harness sends it */
    while (off + 9 <= raw->n) {
        const uint8_t *h = raw->p + off;
        size_t len = (size_t)h[0] << 16 | (size_t)h[1] << 8 | h[2];
        if (off + 9 + len > raw->n) break;
        if (split && h[3] == NGHTTP2_HEADERS && len > 6 && !(h[4] & NGHTTP2_FLAG_PADDED) &&
            !(h[4] & NGHTTP2_FLAG_PRIORITY)) {
            size_t first = len / 3, second = len / 3, third = len - first - second;
            const uint8_t *p = h + 9;
            uint8_t f[9];
            memcpy(f, h, 9);
            f[0] = 0, f[1] = (uint8_t)(first >> 8), f[2] = (uint8_t)first;
            f[4] = h[4] & (uint8_t)~NGHTTP2_FLAG_END_HEADERS;
            put(&b, f, 9);
            put(&b, p, first);
            f[3] = NGHTTP2_CONTINUATION;
            f[1] = (uint8_t)(second >> 8), f[2] = (uint8_t)second;
            f[4] = 0;
            put(&b, f, 9);
            put(&b, p + first, second);
            f[1] = (uint8_t)(third >> 8), f[2] = (uint8_t)third;
            f[4] = NGHTTP2_FLAG_END_HEADERS;
            put(&b, f, 9);
            put(&b, p + first + second, third);
            split = 0;
        } else {
            put(&b, h, 9 + len);
        }
        off += 9 + len;
    }
    seed_buf("h2", name, &b);
    free(b.p);
    raw->n = 0;
}

static const char *const grpc_hdrs[] = {"te", "trailers", NULL};

static void h2_seeds(const request_t *r, size_t n)
{
    buf_t raw = {0}, body = {0};
    h2c_t c;
    char name[96];
    for (size_t i = 0; i < n; i++) {
        frame_msg(&body, r[i].msg, 0);
        h2_open(&c);
        h2_request(&c, "POST", r[i].path, "application/grpc", body.p, body.n, 1, grpc_hdrs);
        snprintf(name, sizeof name, "%s", r[i].name);
        h2_seed(&c, &raw, name, 0, 0);
        /* the same on the system port, whose scope serves health only */
        h2_open(&c);
        h2_request(&c, "POST", r[i].path, "application/grpc", body.p, body.n, 1, grpc_hdrs);
        snprintf(name, sizeof name, "%s-system-port", r[i].name);
        h2_seed(&c, &raw, name, 0, 1);
        /* gzip, a deadline, metadata, headers over CONTINUATION */
        body.n = 0;
        frame_msg(&body, r[i].msg, 1);
        h2_open(&c);
        h2_request(&c, "POST", r[i].path, "application/grpc+proto", body.p, body.n, 1,
                   (const char *const[]){"te", "trailers", "grpc-encoding", "gzip",
                                         "grpc-accept-encoding", "identity,gzip", "grpc-timeout",
                                         "250m", "x-request-id", "fuzz-1", "traceparent",
                                         "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                                         NULL});
        snprintf(name, sizeof name, "%s-gzip-continuation", r[i].name);
        h2_seed(&c, &raw, name, 1, 0);
        body.n = 0;
    }
    /* two streams on one connection, a bidi stream left open then reset, a PING */
    h2_open(&c);
    frame_msg(&body, r[0].msg, 0);
    h2_request(&c, "POST", "/inferd.v1.Inference/Generate", "application/grpc", body.p, body.n, 1,
               grpc_hdrs);
    h2_drain(&c, &raw);
    int32_t id = h2_request(&c, "POST", "/inferd.v1.Inference/GenerateStream", "application/grpc",
                            body.p, body.n, 0, grpc_hdrs);
    h2_drain(&c, &raw);
    nghttp2_submit_rst_stream(c.s, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
    nghttp2_submit_ping(c.s, NGHTTP2_FLAG_NONE, (const uint8_t *)"fuzzping");
    nghttp2_submit_window_update(c.s, NGHTTP2_FLAG_NONE, 0, 1 << 16);
    h2_seed(&c, &raw, "two-streams-reset-ping", 0, 0);
    body.n = 0;
    /* the HTTP routes over h2, and requests the gRPC layer refuses */
    static const struct {
        const char *name, *method, *path, *ctype;
    } h[] = {{"get-live", "GET", "/live", NULL},
             {"get-health", "GET", "/health", NULL},
             {"get-metrics", "GET", "/metrics", NULL},
             {"head-live", "HEAD", "/live", NULL},
             {"get-unknown", "GET", "/nope?x=1", NULL},
             {"post-live", "POST", "/live", NULL},
             {"grpc-get", "GET", "/grpc.health.v1.Health/Check", "application/grpc"},
             {"grpc-wrong-type", "POST", "/grpc.health.v1.Health/Check", "application/json"},
             {"grpc-unknown-method", "POST", "/no.Such/Method", "application/grpc"},
             {"post-fault", "POST", "/debug/fault?mode=clear", NULL}};
    for (size_t i = 0; i < sizeof h / sizeof h[0]; i++) {
        h2_open(&c);
        h2_request(&c, h[i].method, h[i].path, h[i].ctype, NULL, 0, 1,
                   (const char *const[]){"accept-encoding", "gzip", "accept",
                                         "application/openmetrics-text", NULL});
        h2_seed(&c, &raw, h[i].name, 0, (int)(i % 2));
    }
    free(raw.p);
    free(body.p);
}

/* ---- http1: the listener byte, then a connection's bytes ---- */
static void http1_seeds(void)
{
    static const struct {
        const char *name, *req;
    } s[] = {
        {"get-live", "GET /live HTTP/1.1\r\nHost: x\r\n\r\n"},
        {"get-health", "GET /health HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n\r\n"},
        {"get-metrics-gzip", "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip, "
                             "deflate;q=0\r\nAccept: application/openmetrics-text; "
                             "version=1.0.0\r\n\r\n"},
        {"head-live", "HEAD /live HTTP/1.1\r\nHost: x\r\n\r\n"},
        {"pipelined", "GET /live HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: "
                      "x\r\n\r\nGET /live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"},
        {"http10", "GET /live HTTP/1.0\r\n\r\n"},
        {"post-body", "POST /live HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"},
        {"post-chunked", "POST /debug/fault?mode=clear HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: "
                         "chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"},
        {"smuggle-cl-te",
         "POST /live HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
         "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /health HTTP/1.1\r\n\r\n"},
        {"cl-space-colon", "POST /live HTTP/1.1\r\nHost: x\r\nContent-Length : 5\r\n\r\nhello"},
        {"http99", "GET /live HTTP/9.9\r\nHost: x\r\n\r\n"},
        {"absolute-form", "GET http://x/health?verbose HTTP/1.1\r\nHost: x\r\n\r\n"},
        {"unknown-path", "GET /nope#frag HTTP/1.1\r\nHost: x\r\nX-Request-Id: abc\r\n\r\n"},
        {"method-405", "DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n"},
        {"obs-fold", "GET /live HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n 2\r\n\r\n"},
        {"upgrade-h2c",
         "GET /live HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, "
         "HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"},
        {"big-body", "POST /live HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n"},
        {"lf-only", "GET /live HTTP/1.1\nHost: x\n\n"},
    };
    buf_t b = {0};
    char name[64];
    for (size_t i = 0; i < sizeof s / sizeof s[0]; i++)
        for (unsigned listener = 0; listener < 2; listener++) {
            put_u8(&b, listener);
            put_str(&b, s[i].req);
            snprintf(name, sizeof name, "%s%s", s[i].name, listener ? "-system-port" : "");
            seed_buf("http1", name, &b);
        }
    free(b.p);
}

/* ---- tiny Hugging Face vocabularies for mkmodel --vocab-from ---- */
static void hf_vocab(const char *dir, const char *kind)
{
    mkdirs(dir);
    json_t *vocab = json_object(), *merges = json_array(), *added = json_array();
    bool spm = !strcmp(kind, "spm");
    int id = 0;
    if (spm) {
        static const char *const sp[] = {"<unk>", "<s>", "</s>"};
        for (int i = 0; i < 3; i++)
            json_object_set_new(vocab, sp[i], json_integer(id++));
        for (int b = 0; b < 256; b++) {
            char s[8];
            snprintf(s, sizeof s, "<0x%02X>", b);
            json_object_set_new(vocab, s, json_integer(id++));
        }
        static const char *const pieces[] = {"\xe2\x96\x81",   "t", "h", "e", "\xe2\x96\x81t", "he",
                                             "\xe2\x96\x81the"};
        for (int i = 0; i < 7; i++)
            json_object_set_new(vocab, pieces[i], json_integer(id++));
        json_array_append_new(merges, json_string("\xe2\x96\x81 t"));
        json_array_append_new(merges, json_string("h e"));
        json_array_append_new(merges, json_string("\xe2\x96\x81t he"));
    } else {
        for (int b = 0; b < 256; b++) {
            unsigned c = b <= 0x20                ? 256u + (unsigned)b
                         : b >= 0x7F && b <= 0xA0 ? 256u + 33u + (unsigned)(b - 0x7F)
                         : b == 0xAD              ? 256u + 67u
                                                  : (unsigned)b;
            char s[4] = {0};
            if (c < 0x80) {
                s[0] = (char)c;
            } else {
                s[0] = (char)(0xC0 | c >> 6);
                s[1] = (char)(0x80 | (c & 63));
            }
            json_object_set_new(vocab, s, json_integer(id++));
        }
        static const char *const m[][2] = {{"h", "e"}, {"l", "l"}, {"he", "ll"}, {"\xc4\xa0", "w"}};
        for (int i = 0; i < 4; i++) {
            char cat[16];
            snprintf(cat, sizeof cat, "%s%s", m[i][0], m[i][1]);
            json_object_set_new(vocab, cat, json_integer(id++));
            json_array_append_new(merges, json_pack("[ss]", m[i][0], m[i][1]));
        }
    }
    json_array_append_new(added, json_pack("{s:i,s:s,s:b}", "id", id, "content",
                                           spm ? "<|user|>" : "<|begin_of_text|>", "special", 1));
    json_array_append_new(added, json_pack("{s:i,s:s,s:b}", "id", id + 1, "content",
                                           spm ? "<|end|>" : "<|eot_id|>", "special", 1));
    json_t *model = json_pack("{s:s,s:o,s:o}", "type", "BPE", "vocab", vocab, "merges", merges);
    if (spm) json_object_set_new(model, "byte_fallback", json_true());
    json_t *tj = json_pack("{s:o,s:o}", "model", model, "added_tokens", added);
    if (spm)
        json_object_set_new(tj, "decoder", json_pack("{s:s}", "type", "Sequence"));
    else
        json_object_set_new(tj, "pre_tokenizer",
                            json_pack("{s:s,s:b}", "type", "ByteLevel", "use_regex", 1));
    json_t *cj = spm ? json_pack("{s:s,s:s,s:s,s:b,s:s}", "bos_token", "<s>", "eos_token", "</s>",
                                 "unk_token", "<unk>", "add_bos_token", 1, "chat_template",
                                 "{{ bos_token }}{% for m in messages %}[INST] {{ m['content'] }} "
                                 "[/INST]{% endfor %}")
                     : json_pack("{s:s,s:s,s:b,s:s}", "bos_token", "<|begin_of_text|>", "eos_token",
                                 "<|eot_id|>", "add_bos_token", 1, "chat_template",
                                 "{% for message in messages %}<|start_header_id|>{{ "
                                 "message['role'] }}<|end_header_id|>\n\n{{ message['content'] "
                                 "}}<|eot_id|>{% endfor %}");
    char path[4200];
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    if (json_dump_file(tj, path, 0)) die(path);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    if (json_dump_file(cj, path, 0)) die(path);
    json_decref(tj);
    json_decref(cj);
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "--hf-vocab")) {
        hf_vocab(argv[2], argv[3]);
        return 0;
    }
    if (argc < 2 || argv[1][0] == '-') {
        fprintf(stderr, "usage: fuzz_seeds OUT [--tok-corpus F] [--llama2c-model F] "
                        "[--llama2c-tokenizer F VOCAB] [--gguf F]...\n"
                        "       fuzz_seeds --hf-vocab DIR bpe|spm\n");
        return 2;
    }
    out_dir = argv[1];
    const char *corpus = NULL, *model = NULL, *tok = NULL;
    int tok_vocab = 0, n_gguf = 0;
    char *gguf[16];
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--tok-corpus") && i + 1 < argc)
            corpus = argv[++i];
        else if (!strcmp(argv[i], "--llama2c-model") && i + 1 < argc)
            model = argv[++i];
        else if (!strcmp(argv[i], "--llama2c-tokenizer") && i + 2 < argc)
            tok = argv[++i], tok_vocab = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--gguf") && i + 1 < argc && n_gguf < 16)
            gguf[n_gguf++] = argv[++i];
        else {
            fprintf(stderr, "fuzz_seeds: unexpected argument '%s'\n", argv[i]);
            return 2;
        }
    }
    request_t req[32];
    size_t n_req = requests(req);
    tokenizer_seeds(corpus);
    llama2c_seeds(model, tok, tok_vocab);
    gguf_seeds(gguf, n_gguf);
    grpc_message_seeds(req, n_req);
    option_seeds();
    payload_seeds();
    h2_seeds(req, n_req);
    http1_seeds();
    printf("fuzz_seeds: %d seeds in %s\n", n_written, out_dir);
    return 0;
}
