/*
 * mkgguf.c - random-weight GGUF models (see mkgguf.h).
 */
#include "mkgguf.h"
#include "engine/dtype.h"
#include "engine/kernels.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    uint64_t s;
} rng_t;

static uint64_t next(rng_t *r)
{
    uint64_t x = r->s;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    r->s = x;
    return x * 0x2545F4914F6CDD1Dull;
}

static float uniform(rng_t *r) /* [0, 1) */
{
    return (float)(next(r) >> 40) / 16777216.0f;
}

static float normal(rng_t *r)
{
    float s = 0.0f;
    for (int i = 0; i < 12; i++)
        s += uniform(r);
    return s - 6.0f;
}

static int type_by_name(const char *s)
{
    for (uint32_t t = 0; t < DTYPE_COUNT; t++)
        if (dtype_info(t) && !strcmp(dtype_name(t), s)) return (int)t;
    return -1;
}

/* ---- llama.cpp's quantize mixes ------------------------------------------------------------ */

static int use_more_bits(int i, int n)
{
    return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

/* tensor_type_fallback: a type whose block does not divide the row gets a 32-block one */
static int fallback(int t, int64_t ncols)
{
    const dtype_info_t *i = dtype_info((uint32_t)t);
    if (ncols % i->block == 0) return t;
    int f = t == DTYPE_Q4_K   ? DTYPE_Q5_0
            : t == DTYPE_Q5_K ? DTYPE_Q5_1
            : t == DTYPE_Q6_K ? DTYPE_Q8_0
                              : t;
    if (ncols % dtype_info((uint32_t)f)->block) f = DTYPE_F16;
    return f;
}

int mkgguf_tensor_type(const char *type, const char *name, int layer, int layers, int64_t ncols,
                       int tied)
{
    int q4m = !strcmp(type, "Q4_K_M"), q5m = !strcmp(type, "Q5_K_M");
    if (!q4m && !q5m) return type_by_name(type);
    int base = q4m ? DTYPE_Q4_K : DTYPE_Q5_K, t = base;
    if (!strcmp(name, "output.weight") || (tied && !strcmp(name, "token_embd.weight"))) {
        /* the output (or the embedding it shares) gets Q6_K, Q8_0 when rows are not 256s */
        t = ncols % dtype_info((uint32_t)base)->block ? DTYPE_Q8_0 : DTYPE_Q6_K;
    } else if (strstr(name, "attn_v.weight") || strstr(name, "ffn_down.weight")) {
        if (use_more_bits(layer, layers)) t = DTYPE_Q6_K;
    }
    return fallback(t, ncols);
}

/* ---- random blocks ------------------------------------------------------------------------- */

static void h16(uint8_t *p, float v)
{
    uint16_t h = fp32_to_fp16(v);
    memcpy(p, &h, 2);
}

/* a scale jittered by [0.5, 1.5) */
static float jit(rng_t *r, float d)
{
    return d * (0.5f + uniform(r));
}

/* Fill `nb` blocks of type t whose values have about standard deviation sd. */
static void random_blocks(uint8_t *p, int t, size_t nb, float sd, rng_t *r)
{
    const dtype_info_t *di = dtype_info((uint32_t)t);
    for (size_t b = 0; b < nb; b++, p += di->bytes) {
        for (uint32_t k = 0; k < di->bytes; k++)
            p[k] = (uint8_t)next(r);
        switch (t) {
        case DTYPE_Q8_0: /* d * int8, int8 uniform: std 74 */
            h16(p, jit(r, sd / 74.0f));
            break;
        case DTYPE_Q4_0:   /* d * (q - 8): std 4.6 */
        case DTYPE_IQ4_NL: /* d * table[q]: std about 66 */
            h16(p, jit(r, sd / (t == DTYPE_Q4_0 ? 4.6f : 66.0f)));
            break;
        case DTYPE_Q5_0: /* d * (q - 16): std 9.2 */
            h16(p, jit(r, sd / 9.2f));
            break;
        case DTYPE_Q4_1:
        case DTYPE_Q5_1: { /* d * q + m, centred */
            float d = jit(r, sd / (t == DTYPE_Q4_1 ? 4.6f : 9.2f));
            h16(p, d);
            h16(p + 2, -d * (t == DTYPE_Q4_1 ? 7.5f : 15.5f) * (0.8f + 0.4f * uniform(r)));
            break;
        }
        case DTYPE_Q4_K:
        case DTYPE_Q5_K: { /* d*sc*q - dmin*m per 32: 6-bit sc, m with m near sc centres it */
            float c = t == DTYPE_Q4_K ? 7.5f : 15.5f, d = jit(r, sd / ((c / 1.63f) * 40.0f));
            h16(p, d);
            h16(p + 2, d * c);
            uint8_t *s = p + 4;
            memset(s, 0, 12);
            for (int j = 0; j < 8; j++) {
                int sc = 24 + (int)(next(r) % 40), m = sc - 4 + (int)(next(r) % 9);
                if (m > 63) m = 63;
                if (j < 4) {
                    s[j] |= (uint8_t)sc;
                    s[j + 4] |= (uint8_t)m;
                } else {
                    s[j + 4] = (uint8_t)((sc & 0x0f) | ((m & 0x0f) << 4));
                    s[j - 4] |= (uint8_t)((sc >> 4) << 6);
                    s[j] |= (uint8_t)((m >> 4) << 6);
                }
            }
            break;
        }
        case DTYPE_Q6_K: { /* d * scale * (q - 32), signed 8-bit scales: std 18.5 * |scale| */
            int8_t *sc = (int8_t *)(p + 192);
            for (int g = 0; g < 16; g++) {
                int v = 32 + (int)(next(r) % 64);
                sc[g] = (int8_t)(next(r) & 1 ? v : -v);
            }
            h16(p + 208, jit(r, sd / (18.5f * 64.0f)));
            break;
        }
        default:
            break;
        }
    }
}

/* Tensor bytes of type t: floats (F32/F16/BF16) from normals, quantized types as blocks. */
static uint8_t *make_tensor(int t, int64_t cols, int64_t rows, float sd, float mean, rng_t *r,
                            size_t *nbytes)
{
    size_t n = (size_t)(cols * rows);
    *nbytes = dtype_row_bytes((uint32_t)t, (uint64_t)cols) * (size_t)rows;
    uint8_t *p = malloc(*nbytes ? *nbytes : 1);
    if (!p) return NULL;
    if (t == DTYPE_F32 || t == DTYPE_F16 || t == DTYPE_BF16) {
        for (size_t i = 0; i < n; i++) {
            float v = mean + sd * normal(r);
            if (t == DTYPE_F32)
                memcpy(p + 4 * i, &v, 4);
            else {
                uint16_t h = t == DTYPE_F16 ? fp32_to_fp16(v) : fp32_to_bf16(v);
                memcpy(p + 2 * i, &h, 2);
            }
        }
    } else {
        random_blocks(p, t, *nbytes / dtype_info((uint32_t)t)->bytes, sd, r);
    }
    return p;
}

/* ---- the model ----------------------------------------------------------------------------- */

typedef struct {
    gguf_writer_t *w;
    const mkgguf_opts_t *o;
    rng_t *r;
    int layers, tied;
    char *err;
    size_t errlen;
} ctx_t;

static const char *override_of(const mkgguf_opts_t *o, const char *name)
{
    size_t n = strlen(name);
    for (const char *const *p = o->overrides; p && *p; p++)
        if (!strncmp(*p, name, n) && (*p)[n] == '=') return *p + n + 1;
    return NULL;
}

/* One tensor: 1-D ones are F32 (as llama.cpp keeps norms and biases); matrices take the
 * mix's type for their name, or an override. */
static int add(ctx_t *c, const char *name, int layer, int64_t cols, int64_t rows, float sd,
               float mean)
{
    int t = DTYPE_F32;
    const char *ov = override_of(c->o, name);
    if (ov) {
        t = type_by_name(ov);
    } else if (rows > 1) {
        t = mkgguf_tensor_type(c->o->type ? c->o->type : "F32", name, layer, c->layers, cols,
                               c->tied);
    }
    if (t < 0 || !dtype_info((uint32_t)t) || cols % dtype_info((uint32_t)t)->block) {
        snprintf(c->err, c->errlen,
                 "tensor %s: type %s unknown or not a whole number of blocks "
                 "for rows of %lld",
                 name, ov ? ov : c->o->type, (long long)cols);
        return -EINVAL;
    }
    size_t nbytes;
    uint8_t *p = make_tensor(t, cols, rows, sd, mean, c->r, &nbytes);
    if (!p) return -ENOMEM;
    int64_t ne[2] = {cols, rows};
    int rc = gguf_writer_add_tensor(c->w, name, (uint32_t)t, rows > 1 ? 2 : 1, ne, p, nbytes);
    free(p);
    return rc;
}

/* llama.cpp's ftype number for a whole-file type, or -1 (then general.file_type is left out) */
static int ftype_of(const char *type)
{
    static const struct {
        const char *name;
        int ft;
    } f[] = {{"F32", 0},     {"F16", 1},   {"Q4_0", 2},    {"Q4_1", 3},
             {"Q8_0", 7},    {"Q5_0", 8},  {"Q5_1", 9},    {"Q6_K", 18},
             {"IQ4_NL", 25}, {"BF16", 32}, {"Q4_K_M", 15}, {"Q5_K_M", 17}};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (!strcmp(f[i].name, type)) return f[i].ft;
    return -1;
}

static int set_hparams(ctx_t *c, const char *arch, int head_dim, int rope_dim)
{
    const mkgguf_opts_t *o = c->o;
    gguf_writer_t *w = c->w;
    char k[96];
    int rc = gguf_writer_set_str(w, "general.architecture", arch);
    if (!rc) rc = gguf_writer_set_str(w, "general.name", o->name ? o->name : "inferd-random");
    if (!rc) rc = gguf_writer_set_u32(w, "general.quantization_version", 2);
    int ft = ftype_of(o->type ? o->type : "F32");
    if (!rc && ft >= 0 && !o->overrides)
        rc = gguf_writer_set_u32(w, "general.file_type", (uint32_t)ft);
#define U32(sfx, v)                                                                                \
    if (!rc) rc = (snprintf(k, sizeof k, "%s." sfx, arch), gguf_writer_set_u32(w, k, (uint32_t)(v)))
#define F32(sfx, v)                                                                                \
    if (!rc) rc = (snprintf(k, sizeof k, "%s." sfx, arch), gguf_writer_set_f32(w, k, (v)))
    U32("context_length", o->ctx);
    U32("embedding_length", o->dim);
    U32("feed_forward_length", o->hidden);
    U32("block_count", o->layers);
    U32("attention.head_count", o->heads);
    U32("attention.head_count_kv", o->kv_heads);
    if (head_dim != o->dim / o->heads || o->dim % o->heads) {
        U32("attention.key_length", head_dim);
        U32("attention.value_length", head_dim);
    }
    U32("rope.dimension_count", rope_dim);
    F32("rope.freq_base", o->rope_base > 0 ? o->rope_base : 10000.0f);
    F32("attention.layer_norm_rms_epsilon", o->rms_eps > 0 ? o->rms_eps : 1e-5f);
    if (!strcmp(arch, "llama")) U32("vocab_size", o->vocab);
    const char *sc = o->rope_scaling;
    if (sc && !strcmp(sc, "linear")) {
        if (!rc)
            rc = (snprintf(k, sizeof k, "%s.rope.scaling.type", arch),
                  gguf_writer_set_str(w, k, "linear"));
        F32("rope.scaling.factor", o->rope_factor > 0 ? o->rope_factor : 2.0f);
    } else if (sc && !strcmp(sc, "llama3") && o->llama3_keys) {
        if (!rc)
            rc = (snprintf(k, sizeof k, "%s.rope.scaling.type", arch),
                  gguf_writer_set_str(w, k, "llama3"));
        F32("rope.scaling.factor", o->rope_factor > 0 ? o->rope_factor : 8.0f);
        F32("rope.scaling.low_freq_factor", 1.0f);
        F32("rope.scaling.high_freq_factor", 4.0f);
        U32("rope.scaling.original_context_length", 64);
    }
#undef U32
#undef F32
    return rc;
}

/* Llama 3.1's frequency factors as llama.cpp's converter computes them (conversion/llama.py),
 * with an original context small enough that a test model's positions reach the bands. */
static void llama3_factors(float *ff, int rope_dim, float base, float factor)
{
    const double lo = 1.0, hi = 4.0, orig = 64;
    for (int i = 0; i < rope_dim / 2; i++) {
        float freq = 1.0f / powf(base, (float)(2 * i) / (float)rope_dim);
        double wave = 2.0 * M_PI / freq;
        if (wave < orig / hi)
            ff[i] = 1.0f;
        else if (wave > orig / lo)
            ff[i] = factor;
        else {
            double smooth = (orig / wave - lo) / (hi - lo);
            ff[i] = (float)(1.0 / ((1.0 - smooth) / factor + smooth));
        }
    }
}

int mkgguf_model(gguf_writer_t *w, const mkgguf_opts_t *o, char *err, size_t errlen)
{
    const char *arch = o->arch ? o->arch : "llama";
    int qwen2 = !strcmp(arch, "qwen2"), qwen3 = !strcmp(arch, "qwen3");
    if (!qwen2 && !qwen3 && strcmp(arch, "llama")) {
        snprintf(err, errlen, "architecture %s: mkmodel writes llama, qwen2, qwen3", arch);
        return -EINVAL;
    }
    int head_dim = o->head_dim ? o->head_dim : o->dim / o->heads;
    int rope_dim = o->rope_dim ? o->rope_dim : head_dim;
    if (o->dim <= 0 || o->heads <= 0 || o->kv_heads <= 0 || o->heads % o->kv_heads ||
        head_dim <= 0 || rope_dim % 2 || rope_dim > head_dim || o->layers <= 0 || o->hidden <= 0) {
        snprintf(err, errlen,
                 "inconsistent shape (heads %% kv_heads, rope dim even and at most "
                 "the head size, positive values)");
        return -EINVAL;
    }
    rng_t r = {o->seed * 0x9E3779B97F4A7C15ull + 0x5151ull};
    if (!r.s) r.s = 1;
    ctx_t c = {w, o, &r, o->layers, !o->unshared, err, errlen};
    int rc = set_hparams(&c, arch, head_dim, rope_dim);
    if (rc) {
        snprintf(err, errlen, "out of memory");
        return rc;
    }
    int64_t D = o->dim, F = o->hidden, V = o->vocab, Q = (int64_t)o->heads * head_dim;
    int64_t KV = (int64_t)o->kv_heads * head_dim;
    float sd = 1.0f / sqrtf((float)D), sq = 1.0f / sqrtf((float)Q), sf = 1.0f / sqrtf((float)F);
    char n[64];
    if ((rc = add(&c, "token_embd.weight", 0, D, V, 0.1f, 0)) < 0) return rc;
    for (int l = 0; l < o->layers && rc == 0; l++) {
#define T(nm, cols, rows, s, m)                                                                    \
    if (rc == 0) rc = (snprintf(n, sizeof n, "blk.%d." nm, l), add(&c, n, l, cols, rows, s, m))
        T("attn_norm.weight", D, 1, 0.1f, 1.0f);
        T("attn_q.weight", D, Q, sd, 0);
        T("attn_k.weight", D, KV, sd, 0);
        T("attn_v.weight", D, KV, sd, 0);
        if (qwen2) {
            T("attn_q.bias", Q, 1, 0.1f, 0);
            T("attn_k.bias", KV, 1, 0.1f, 0);
            T("attn_v.bias", KV, 1, 0.1f, 0);
        }
        if (qwen3) {
            T("attn_q_norm.weight", head_dim, 1, 0.1f, 1.0f);
            T("attn_k_norm.weight", head_dim, 1, 0.1f, 1.0f);
        }
        T("attn_output.weight", Q, D, sq, 0);
        T("ffn_norm.weight", D, 1, 0.1f, 1.0f);
        T("ffn_gate.weight", D, F, sd, 0);
        T("ffn_up.weight", D, F, sd, 0);
        T("ffn_down.weight", F, D, sf, 0);
#undef T
    }
    if (rc == 0) rc = add(&c, "output_norm.weight", 0, D, 1, 0.1f, 1.0f);
    if (rc == 0 && o->unshared) rc = add(&c, "output.weight", 0, D, V, 0.1f, 0);
    if (rc == 0 && o->rope_scaling && !strcmp(o->rope_scaling, "llama3") && !o->llama3_keys) {
        float *ff = malloc((size_t)rope_dim / 2 * sizeof(float));
        if (!ff) return -ENOMEM;
        llama3_factors(ff, rope_dim, o->rope_base > 0 ? o->rope_base : 10000.0f,
                       o->rope_factor > 0 ? o->rope_factor : 8.0f);
        int64_t ne[1] = {rope_dim / 2};
        rc = gguf_writer_add_tensor(w, "rope_freqs.weight", DTYPE_F32, 1, ne, ff,
                                    (size_t)rope_dim / 2 * sizeof(float));
        free(ff);
    }
    if (rc == -ENOMEM) snprintf(err, errlen, "out of memory");
    return rc;
}

int mkgguf_vocab_spm(gguf_writer_t *w, char *const *pieces, const float *scores, int n)
{
    char **toks = calloc((size_t)n, sizeof(char *));
    int32_t *types = calloc((size_t)n, sizeof(int32_t));
    int rc = toks && types ? 0 : -ENOMEM;
    for (int i = 0; i < n && !rc; i++) {
        const char *p = pieces[i];
        size_t len = strlen(p), sp = 0;
        for (size_t k = 0; k < len; k++)
            sp += p[k] == ' ';
        char *t = malloc(len + 2 * sp + 1), *q = t;
        if (!t) {
            rc = -ENOMEM;
            break;
        }
        for (size_t k = 0; k < len; k++) {
            if (p[k] == ' ') {
                memcpy(q, "\xe2\x96\x81", 3); /* SentencePiece's word marker */
                q += 3;
            } else {
                *q++ = p[k];
            }
        }
        *q = 0;
        toks[i] = t;
        types[i] = !strcmp(p, "<unk>")                       ? 2
                   : !strcmp(p, "<s>") || !strcmp(p, "</s>") ? 3
                   : !strncmp(p, "<0x", 3) && len == 6       ? 6
                   : !strncmp(p, "<unused", 7)               ? 5
                                                             : 1;
    }
    if (!rc) rc = gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
    if (!rc) rc = gguf_writer_set_str(w, "tokenizer.ggml.pre", "default");
    if (!rc)
        rc = gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)toks,
                                     (size_t)n);
    if (!rc) rc = gguf_writer_set_arr_f32(w, "tokenizer.ggml.scores", scores, (size_t)n);
    if (!rc) rc = gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type", types, (size_t)n);
    if (!rc) rc = gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1);
    if (!rc) rc = gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2);
    if (!rc) rc = gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    if (!rc) rc = gguf_writer_set_bool(w, "tokenizer.ggml.add_bos_token", true);
    if (!rc) rc = gguf_writer_set_bool(w, "tokenizer.ggml.add_eos_token", false);
    for (int i = 0; toks && i < n; i++)
        free(toks[i]);
    free(toks);
    free(types);
    return rc;
}
