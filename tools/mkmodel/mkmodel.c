/*
 * mkmodel - write a deterministic model: a GGUF file (--out x.gguf, or --format gguf) of any
 * architecture inferd runs, any shape and any per-tensor type mix (mkgguf.h), or a llama2.c
 * checkpoint and a matching tokenizer.bin.
 *
 * The tokenizer is a real BPE vocabulary: <unk>, <s>, </s>, the 256 byte tokens
 * <0x00>..<0xFF>, the characters of a small built-in English corpus (plus all of
 * printable ASCII), then merges learned on that corpus (most frequent pair first,
 * score = -merge index so llama2.c-style encoding replays them), then <unusedN>
 * fillers up to the requested vocab size. Weights come from a fixed xorshift PRNG
 * (Irwin-Hall normals), so the same options always give the same bytes.
 */
#include "mkgguf.h"
#include "vocab_import.h"

#include <errno.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char corpus[] =
    "Once upon a time, there was a little girl named Lily. She lived in a small house "
    "near the forest with her mother and her dog. Every morning Lily went outside to play "
    "in the sun. She liked to run and jump and look at the big trees. One day, Lily saw a "
    "bird in a tree. The bird was sad because it could not find its home. Lily wanted to "
    "help the bird. She said, \"Do not be sad, little bird. I will help you find your "
    "home.\" The bird was happy and sang a song. Lily and the bird walked into the forest. "
    "They saw a big river and a tall hill. The sun was warm and the sky was blue. They "
    "looked for the home of the bird all day. At last they found a nest in an old tree. "
    "The bird said thank you to Lily and flew into the nest. Lily smiled and went back to "
    "her house. Her mother gave her a hug and a warm cup of milk. Lily told her mother "
    "about the bird and the forest. Her mother said, \"You are a kind girl, Lily. I am "
    "proud of you.\" That night Lily went to sleep with a big smile on her face.\n"
    "Once there was a boy named Tim. Tim had a red ball. He liked to play with his ball "
    "in the park. One day, Tim went to the park with his friend Sam. They played with the "
    "ball and had a lot of fun. Then the ball went into the water. Tim was sad. He did not "
    "know what to do. Sam said, \"Let us ask for help.\" They saw a man with a long stick. "
    "The man helped them get the ball out of the water. Tim and Sam said thank you to the "
    "man. They were happy again and played until the sun went down. When it was time to "
    "go home, Tim gave Sam a hug. \"You are my best friend,\" he said. Sam smiled. The next "
    "day they met again at the park and played a new game.\n"
    "In a little town there lived a cat named Max. Max was very curious. He wanted to see "
    "everything. One morning he found a small box under the table. He pushed the box with "
    "his nose and it opened. Inside the box there was a shiny key. Max took the key and "
    "ran to show it to his friend, a mouse named Sue. Sue looked at the key and said, "
    "\"This key can open the old door in the garden.\" They went to the garden together "
    "and opened the door. Behind the door they found a beautiful room full of flowers and "
    "toys. Max and Sue played there all day. They learned that it is good to share and to "
    "be brave. From that day on, they were the best of friends and they visited the room "
    "every week. The end.\n"
    "The weather was cold and the wind was strong, but the children wanted to build a "
    "snowman. They put on their coats, hats and boots, and went outside. They rolled the "
    "snow into three big balls and made a happy snowman with a carrot nose. Mom made hot "
    "cocoa, and everyone laughed and talked about their day. It was a wonderful day for "
    "the whole family. Caf\xc3\xa9 na\xc3\xafve \xe2\x80\x94 \xe2\x80\x9cquoted\xe2\x80\x9d "
    "words and a smile \xf0\x9f\x98\x80 are here too.\n";

typedef struct {
    uint64_t s;
} prng_t;

static uint64_t prng_next(prng_t *r)
{
    uint64_t x = r->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* N(0,1) approximation with no libm: sum of 12 uniforms minus 6 */
static float prng_normal(prng_t *r)
{
    float s = 0.0f;
    for (int i = 0; i < 12; i++)
        s += (float)(prng_next(r) >> 40) / 16777216.0f;
    return s - 6.0f;
}

/* ---- BPE training ------------------------------------------------------------ */

typedef struct {
    char **piece; /* vocab pieces */
    float *score;
    int n, cap;
} vocab_t;

static int vocab_find(const vocab_t *v, const char *s)
{
    for (int i = 0; i < v->n; i++)
        if (strcmp(v->piece[i], s) == 0) return i;
    return -1;
}

static void vocab_add(vocab_t *v, const char *s, float score)
{
    if (v->n >= v->cap) return;
    v->piece[v->n] = strdup(s);
    v->score[v->n] = score;
    v->n++;
}

typedef struct {
    char **sym; /* symbols of the word */
    int n;
    int count;
} word_t;

static int utf8_len(unsigned char c)
{
    return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int build_vocab(vocab_t *v, int vocab_size)
{
    char buf[64];
    v->cap = vocab_size;
    v->piece = calloc((size_t)vocab_size, sizeof(char *));
    v->score = calloc((size_t)vocab_size, sizeof(float));
    if (!v->piece || !v->score) return -ENOMEM;
    vocab_add(v, "<unk>", 0.0f);
    vocab_add(v, "<s>", 0.0f);
    vocab_add(v, "</s>", 0.0f);
    for (int b = 0; b < 256; b++) {
        snprintf(buf, sizeof(buf), "<0x%02X>", b);
        vocab_add(v, buf, 0.0f);
    }
    /* alphabet: printable ASCII plus every code point of the corpus, sorted */
    char *alpha[512];
    int na = 0;
    for (int c = 0x20; c < 0x7F; c++) {
        buf[0] = (char)c;
        buf[1] = 0;
        alpha[na++] = strdup(buf);
    }
    for (const char *p = corpus; *p;) {
        int l = utf8_len((unsigned char)*p);
        if (l > 1) {
            memcpy(buf, p, (size_t)l);
            buf[l] = 0;
            int dup = 0;
            for (int i = 0; i < na; i++)
                dup |= strcmp(alpha[i], buf) == 0;
            if (!dup && na < 512) alpha[na++] = strdup(buf);
        }
        p += l;
    }
    qsort(alpha, (size_t)na, sizeof(char *), cmp_str);
    for (int i = 0; i < na; i++) {
        vocab_add(v, alpha[i], -1e6f);
        free(alpha[i]);
    }
    if (v->n >= vocab_size) return v->n == vocab_size ? 0 : -EINVAL;

    /* words with a leading space, like sentencepiece's dummy prefix */
    word_t *words = NULL;
    int nw = 0;
    const char *p = corpus;
    while (*p) {
        while (*p == ' ' || *p == '\n')
            p++;
        if (!*p) break;
        const char *q = p;
        while (*q && *q != ' ' && *q != '\n')
            q++;
        char tmp[128];
        size_t len = (size_t)(q - p);
        if (len > sizeof(tmp) - 2) len = sizeof(tmp) - 2;
        tmp[0] = ' ';
        memcpy(tmp + 1, p, len);
        tmp[len + 1] = 0;
        int found = -1;
        for (int i = 0; i < nw; i++) {
            size_t tl = 0;
            for (int k = 0; k < words[i].n; k++)
                tl += strlen(words[i].sym[k]);
            if (tl != len + 1) continue;
            char joined[128] = {0};
            for (int k = 0; k < words[i].n; k++)
                strcat(joined, words[i].sym[k]);
            if (strcmp(joined, tmp) == 0) {
                found = i;
                break;
            }
        }
        if (found >= 0) {
            words[found].count++;
        } else {
            words = realloc(words, (size_t)(nw + 1) * sizeof(word_t));
            word_t *w = &words[nw++];
            w->count = 1;
            w->n = 0;
            w->sym = malloc((len + 2) * sizeof(char *));
            for (const char *s = tmp; *s;) {
                int l = utf8_len((unsigned char)*s);
                char c[8];
                memcpy(c, s, (size_t)l);
                c[l] = 0;
                w->sym[w->n++] = strdup(c);
                s += l;
            }
        }
        p = q;
    }
    int merges = 0;
    while (v->n < vocab_size) {
        /* count pairs by joined string in a hash table; best = highest count, ties
         * broken by the smallest joined string (deterministic) */
        enum { HS = 1 << 14 };
        static char *keys[HS];
        static int counts[HS];
        memset(counts, 0, sizeof(counts));
        for (int i = 0; i < HS; i++)
            keys[i] = NULL;
        for (int i = 0; i < nw; i++) {
            for (int k = 0; k + 1 < words[i].n; k++) {
                char j[256];
                snprintf(j, sizeof(j), "%s%s", words[i].sym[k], words[i].sym[k + 1]);
                if (strlen(j) > 32) continue;
                uint32_t h = 2166136261u;
                for (const char *s = j; *s; s++)
                    h = (h ^ (unsigned char)*s) * 16777619u;
                for (h &= HS - 1; keys[h] && strcmp(keys[h], j) != 0; h = (h + 1) & (HS - 1)) {
                }
                if (!keys[h]) keys[h] = strdup(j);
                counts[h] += words[i].count;
            }
        }
        char best[256] = {0};
        int best_count = 1;
        for (int h = 0; h < HS; h++) {
            if (!keys[h]) continue;
            int cnt = counts[h];
            if ((cnt > best_count || (cnt == best_count && best[0] && strcmp(keys[h], best) < 0)) &&
                vocab_find(v, keys[h]) < 0) {
                best_count = cnt;
                snprintf(best, sizeof(best), "%s", keys[h]);
            }
            free(keys[h]);
        }
        if (!best[0]) break;
        vocab_add(v, best, -(float)merges);
        merges++;
        for (int i = 0; i < nw; i++) {
            for (int k = 0; k + 1 < words[i].n; k++) {
                char j[256];
                snprintf(j, sizeof(j), "%s%s", words[i].sym[k], words[i].sym[k + 1]);
                if (strcmp(j, best) != 0) continue;
                free(words[i].sym[k]);
                free(words[i].sym[k + 1]);
                words[i].sym[k] = strdup(best);
                memmove(&words[i].sym[k + 1], &words[i].sym[k + 2],
                        (size_t)(words[i].n - k - 2) * sizeof(char *));
                words[i].n--;
            }
        }
    }
    for (int i = 0; i < nw; i++) {
        for (int k = 0; k < words[i].n; k++)
            free(words[i].sym[k]);
        free(words[i].sym);
    }
    free(words);
    for (int u = 0; v->n < vocab_size; u++) {
        snprintf(buf, sizeof(buf), "<unused%d>", u);
        vocab_add(v, buf, -1e9f);
    }
    return 0;
}

static int write_tokenizer(const vocab_t *v, const char *path)
{
    FILE *f = fopen(path, "wb");
    if (!f) return -errno;
    int32_t maxlen = 0;
    for (int i = 0; i < v->n; i++)
        if ((int32_t)strlen(v->piece[i]) > maxlen) maxlen = (int32_t)strlen(v->piece[i]);
    fwrite(&maxlen, 4, 1, f);
    for (int i = 0; i < v->n; i++) {
        int32_t len = (int32_t)strlen(v->piece[i]);
        fwrite(&v->score[i], 4, 1, f);
        fwrite(&len, 4, 1, f);
        fwrite(v->piece[i], 1, (size_t)len, f);
    }
    return fclose(f) == 0 ? 0 : -EIO;
}

/* ---- weights ------------------------------------------------------------------ */

typedef struct {
    FILE *f;
    prng_t *r;
    float buf[4096];
    int nbuf;
} wout_t;

static void put(wout_t *w, float x)
{
    w->buf[w->nbuf++] = x;
    if (w->nbuf == 4096) {
        fwrite(w->buf, 4, 4096, w->f);
        w->nbuf = 0;
    }
}

static void tensor(wout_t *w, uint64_t n, float std, float constant)
{
    for (uint64_t i = 0; i < n; i++)
        put(w, std > 0 ? prng_normal(w->r) * std : constant);
}

/* 1/sqrt(n) without libm (Newton iterations) */
static float inv_sqrt(float n)
{
    float x = 1.0f;
    while (x * x * n > 1.0f)
        x *= 0.5f; /* Newton converges for x*x*n < 3 */
    for (int i = 0; i < 30; i++)
        x = x * (1.5f - 0.5f * n * x * x);
    return x;
}

static void usage(FILE *o)
{
    fprintf(o, "usage: mkmodel [options]\n"
               "  --dim N          (288)      --hidden-dim N (768)\n"
               "  --layers N       (6)        --heads N      (6)\n"
               "  --kv-heads N     (=heads)   --vocab N      (512)\n"
               "  --seq-len N      (256)      --unshared     (separate classifier)\n"
               "  --seed N         (1)\n"
               "  --out PATH       (model.bin; a .gguf name writes GGUF)\n"
               "  --tokenizer-out PATH (tokenizer.bin; llama2.c only)\n"
               "  --format gguf|llama2c      (default: from --out)\n"
               "GGUF only:\n"
               "  --arch llama|qwen2|qwen3   (llama)\n"
               "  --type T         matrices: F32 F16 BF16 Q8_0 Q4_0 Q4_1 Q5_0 Q5_1 IQ4_NL Q4_K\n"
               "                   Q5_K Q6_K, or llama.cpp's mixes Q4_K_M Q5_K_M (F32)\n"
               "  --tensor-type NAME=T       one tensor's type (repeatable)\n"
               "  --head-dim N     (dim/heads) --rope-dim N (head dim)\n"
               "  --rope-base F    (10000)    --rms-eps F    (1e-5)\n"
               "  --rope-scaling none|linear|llama3  --rope-factor F\n"
               "  --llama3-keys    llama3 scaling as keys, not rope_freqs.weight\n"
               "  --name S         general.name\n"
               "  --vocab-from DIR import DIR/tokenizer.json + tokenizer_config.json as the\n"
               "                   tokenizer.ggml.* keys convert_hf_to_gguf.py would write\n"
               "                   (instead of the built-in vocabulary; --vocab is ignored)\n"
               "  --vocab-size N   pad the imported vocabulary to N tokens ([PADn], unused)\n"
               "  --vocab-only     with --vocab-from: a vocabulary-only GGUF (no tensors;\n"
               "                   the shape options as llama hyper-parameters)\n");
}

/* A GGUF holding the imported vocabulary and the hyper-parameters llama.cpp reads even for a
 * vocabulary-only load; no tensors. */
static int write_vocab_gguf(const char *dir, long n_vocab, long dim, long hidden, long layers,
                            long heads, long kv_heads, long seq, const char *out)
{
    vocab_import_t v;
    char err[512];
    if (vocab_import(&v, dir, (uint32_t)(n_vocab > 0 ? n_vocab : 0), err, sizeof err) < 0) {
        fprintf(stderr, "mkmodel: %s\n", err);
        return 1;
    }
    gguf_writer_t *w = NULL;
    int rc = gguf_writer_new(&w, 3, 32);
    if (rc == 0) {
        rc |= gguf_writer_set_str(w, "general.architecture", "llama");
        rc |= gguf_writer_set_str(w, "general.name", "inferd vocabulary");
        rc |= gguf_writer_set_u32(w, "llama.context_length", (uint32_t)seq);
        rc |= gguf_writer_set_u32(w, "llama.embedding_length", (uint32_t)dim);
        rc |= gguf_writer_set_u32(w, "llama.block_count", (uint32_t)layers);
        rc |= gguf_writer_set_u32(w, "llama.feed_forward_length", (uint32_t)hidden);
        rc |= gguf_writer_set_u32(w, "llama.attention.head_count", (uint32_t)heads);
        rc |= gguf_writer_set_u32(w, "llama.attention.head_count_kv", (uint32_t)kv_heads);
        rc |= gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
        rc |= gguf_writer_set_u32(w, "llama.vocab_size", (uint32_t)v.n_tokens);
        rc |= vocab_import_write(&v, w);
    }
    if (rc == 0)
        rc = gguf_writer_write(w, out, err, sizeof err);
    else
        snprintf(err, sizeof err, "out of memory");
    gguf_writer_free(w);
    vocab_import_free(&v);
    if (rc < 0) {
        fprintf(stderr, "mkmodel: cannot write %s: %s\n", out, err);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    long dim = 288, hidden = 768, layers = 6, heads = 6, kv_heads = -1, vocab = 512, seq = 256;
    unsigned long long seed = 1;
    int unshared = 0;
    const char *out = "model.bin", *tok_out = "tokenizer.bin", *format = NULL;
    mkgguf_opts_t g = {0};
    const char *overrides[65] = {0};
    int n_over = 0, vocab_only = 0;
    long vocab_size = 0;
    const char *vocab_from = NULL;
    static const struct option opts[] = {{"dim", required_argument, 0, 'd'},
                                         {"hidden-dim", required_argument, 0, 'h'},
                                         {"layers", required_argument, 0, 'l'},
                                         {"heads", required_argument, 0, 'H'},
                                         {"kv-heads", required_argument, 0, 'k'},
                                         {"vocab", required_argument, 0, 'v'},
                                         {"seq-len", required_argument, 0, 's'},
                                         {"unshared", no_argument, 0, 'u'},
                                         {"seed", required_argument, 0, 'S'},
                                         {"out", required_argument, 0, 'o'},
                                         {"tokenizer-out", required_argument, 0, 't'},
                                         {"format", required_argument, 0, 'f'},
                                         {"arch", required_argument, 0, 'A'},
                                         {"type", required_argument, 0, 'T'},
                                         {"tensor-type", required_argument, 0, 'X'},
                                         {"head-dim", required_argument, 0, 'D'},
                                         {"rope-dim", required_argument, 0, 'R'},
                                         {"rope-base", required_argument, 0, 'B'},
                                         {"rope-scaling", required_argument, 0, 'C'},
                                         {"rope-factor", required_argument, 0, 'F'},
                                         {"llama3-keys", no_argument, 0, 'K'},
                                         {"rms-eps", required_argument, 0, 'E'},
                                         {"name", required_argument, 0, 'N'},
                                         {"vocab-from", required_argument, 0, 'V'},
                                         {"vocab-size", required_argument, 0, 'Z'},
                                         {"vocab-only", no_argument, 0, 'O'},
                                         {"help", no_argument, 0, '?'},
                                         {0, 0, 0, 0}};
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'd':
            dim = strtol(optarg, NULL, 10);
            break;
        case 'h':
            hidden = strtol(optarg, NULL, 10);
            break;
        case 'l':
            layers = strtol(optarg, NULL, 10);
            break;
        case 'H':
            heads = strtol(optarg, NULL, 10);
            break;
        case 'k':
            kv_heads = strtol(optarg, NULL, 10);
            break;
        case 'v':
            vocab = strtol(optarg, NULL, 10);
            break;
        case 's':
            seq = strtol(optarg, NULL, 10);
            break;
        case 'u':
            unshared = 1;
            break;
        case 'S':
            seed = strtoull(optarg, NULL, 10);
            break;
        case 'o':
            out = optarg;
            break;
        case 't':
            tok_out = optarg;
            break;
        case 'f':
            format = optarg;
            break;
        case 'A':
            g.arch = optarg;
            break;
        case 'T':
            g.type = optarg;
            break;
        case 'X':
            if (n_over == 64 || !strchr(optarg, '=')) {
                fprintf(stderr, "mkmodel: --tensor-type NAME=TYPE (at most 64)\n");
                return 2;
            }
            overrides[n_over++] = optarg;
            break;
        case 'D':
            g.head_dim = (int)strtol(optarg, NULL, 10);
            break;
        case 'R':
            g.rope_dim = (int)strtol(optarg, NULL, 10);
            break;
        case 'B':
            g.rope_base = strtof(optarg, NULL);
            break;
        case 'C':
            g.rope_scaling = optarg;
            break;
        case 'F':
            g.rope_factor = strtof(optarg, NULL);
            break;
        case 'K':
            g.llama3_keys = 1;
            break;
        case 'E':
            g.rms_eps = strtof(optarg, NULL);
            break;
        case 'N':
            g.name = optarg;
            break;
        case 'V':
            vocab_from = optarg;
            break;
        case 'Z':
            vocab_size = strtol(optarg, NULL, 10);
            break;
        case 'O':
            vocab_only = 1;
            break;
        default:
            usage(c == '?' && optopt == 0 ? stdout : stderr);
            return c == '?' ? 0 : 2;
        }
    }
    if (kv_heads < 0) kv_heads = heads;
    if (vocab_size < 0 || vocab_size > 4000000 || (vocab_only && !vocab_from)) {
        fprintf(stderr,
                "mkmodel: --vocab-only needs --vocab-from DIR; --vocab-size is 0..4000000\n");
        return 2;
    }
    if (vocab_only)
        return write_vocab_gguf(vocab_from, vocab_size, dim, hidden, layers, heads, kv_heads, seq,
                                out);
    if (dim <= 0 || hidden <= 0 || layers <= 0 || heads <= 0 || kv_heads <= 0 || seq <= 0 ||
        dim > 65536 || hidden > 262144 || layers > 1024 || vocab > 4000000 || seq > 1000000 ||
        heads % kv_heads || (!g.head_dim && (dim % heads || (dim / heads) % 2))) {
        fprintf(stderr, "mkmodel: inconsistent shape (dim %% heads, heads %% kv_heads, even "
                        "head size, positive values)\n");
        return 2;
    }
    vocab_t v = {0};
    if (vocab < 3 + 256 + 95 || build_vocab(&v, (int)vocab) < 0) {
        fprintf(stderr, "mkmodel: vocab %ld too small (needs at least %d)\n", vocab,
                3 + 256 + 95 + 10);
        return 2;
    }
    size_t olen = strlen(out);
    int gguf = format ? !strcmp(format, "gguf") : olen > 5 && !strcmp(out + olen - 5, ".gguf");
    if (format && !gguf && strcmp(format, "llama2c")) {
        fprintf(stderr, "mkmodel: --format %s is not gguf or llama2c\n", format);
        return 2;
    }
    if (vocab_from && !gguf) {
        fprintf(stderr, "mkmodel: --vocab-from writes GGUF (--out x.gguf or --format gguf)\n");
        return 2;
    }
    if (gguf) {
        g.dim = (int)dim;
        g.hidden = (int)hidden;
        g.layers = (int)layers;
        g.heads = (int)heads;
        g.kv_heads = (int)kv_heads;
        g.vocab = (int)vocab;
        g.ctx = (int)seq;
        g.unshared = unshared;
        g.seed = seed;
        g.overrides = n_over ? overrides : NULL;
        gguf_writer_t *w = NULL;
        char err[512] = "out of memory";
        vocab_import_t iv = {0};
        int rc = 0;
        if (vocab_from) {
            rc = vocab_import(&iv, vocab_from, (uint32_t)vocab_size, err, sizeof err);
            g.vocab = (int)iv.n_tokens;
        }
        if (rc == 0) rc = gguf_writer_new(&w, 3, 32);
        if (rc == 0) rc = mkgguf_model(w, &g, err, sizeof err);
        if (rc == 0 && (rc = vocab_from ? vocab_import_write(&iv, w)
                                        : mkgguf_vocab_spm(w, v.piece, v.score, v.n)) < 0)
            snprintf(err, sizeof err, "out of memory");
        vocab_import_free(&iv);
        if (rc == 0) rc = gguf_writer_write(w, out, err, sizeof err);
        gguf_writer_free(w);
        for (int i = 0; i < v.n; i++)
            free(v.piece[i]);
        free(v.piece);
        free(v.score);
        if (rc < 0) {
            fprintf(stderr, "mkmodel: %s\n", err);
            return rc == -EINVAL ? 2 : 1;
        }
        return 0;
    }
    if (write_tokenizer(&v, tok_out) < 0) {
        fprintf(stderr, "mkmodel: cannot write %s: %s\n", tok_out, strerror(errno));
        return 1;
    }
    for (int i = 0; i < v.n; i++)
        free(v.piece[i]);
    free(v.piece);
    free(v.score);

    prng_t r = {seed * 0x9E3779B97F4A7C15ull + 0x1234567ull};
    if (!r.s) r.s = 1;
    wout_t w = {.r = &r};
    w.f = fopen(out, "wb");
    if (!w.f) {
        fprintf(stderr, "mkmodel: cannot write %s: %s\n", out, strerror(errno));
        return 1;
    }
    int32_t hdr[7] = {(int32_t)dim,   (int32_t)hidden,   (int32_t)layers,
                      (int32_t)heads, (int32_t)kv_heads, (int32_t)(unshared ? -vocab : vocab),
                      (int32_t)seq};
    fwrite(hdr, 4, 7, w.f);
    uint64_t D = (uint64_t)dim, F = (uint64_t)hidden, L = (uint64_t)layers, V = (uint64_t)vocab;
    uint64_t kvd = D * (uint64_t)kv_heads / (uint64_t)heads, hs = D / (uint64_t)heads;
    float sd = inv_sqrt((float)dim), sf = inv_sqrt((float)hidden);
    tensor(&w, V * D, 0.1f, 0);               /* token_embedding */
    tensor(&w, L * D, 0, 1.0f);               /* rms_att */
    tensor(&w, L * D * D, sd, 0);             /* wq */
    tensor(&w, L * kvd * D, sd, 0);           /* wk */
    tensor(&w, L * kvd * D, sd, 0);           /* wv */
    tensor(&w, L * D * D, sd, 0);             /* wo */
    tensor(&w, L * D, 0, 1.0f);               /* rms_ffn */
    tensor(&w, L * F * D, sd, 0);             /* w1 */
    tensor(&w, L * D * F, sf, 0);             /* w2 */
    tensor(&w, L * F * D, sd, 0);             /* w3 */
    tensor(&w, D, 0, 1.0f);                   /* rms_final */
    tensor(&w, (uint64_t)seq * hs, 0, 0.0f);  /* legacy freq_cis_real + imag (unused) */
    if (unshared) tensor(&w, V * D, 0.1f, 0); /* wcls */
    if (w.nbuf) fwrite(w.buf, 4, (size_t)w.nbuf, w.f);
    if (fclose(w.f) != 0) {
        fprintf(stderr, "mkmodel: write error on %s\n", out);
        return 1;
    }
    return 0;
}
