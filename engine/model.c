/*
 * model.c - loading a model into the view backends read (backend.h): the one table of
 * every weight's name and shape, the llama2.c checkpoint reader (mmap, every size checked
 * before a pointer into the file is formed), and the RoPE frequencies.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Generous caps: they keep every product below 2^63 and reject nonsense early. */
#define CAP_DIM (1 << 16)
#define CAP_HIDDEN (1 << 18)
#define CAP_LAYERS 1024
#define CAP_HEADS 1024
#define CAP_VOCAB (1 << 22)
#define CAP_SEQ (1 << 20)

/* ---- the tensor table ---------------------------------------------------------------- */

/* A dimension in units of the hyper-parameters. */
enum { D_ONE, D_DIM, D_HIDDEN, D_QDIM, D_KVDIM, D_HEAD, D_VOCAB };

/* Which models have the tensor. */
enum {
    NEED_ALL,      /* every model */
    NEED_OPTIONAL, /* output.weight: absent means tied to token_embd */
    NEED_QKV_BIAS, /* qwen2 */
    NEED_QK_NORM,  /* qwen3 */
};

#define LAYER(f) offsetof(model_layer_t, f)
#define GLOBAL(f) offsetof(model_view_t, f)

/* Every weight: GGUF name, where it goes in the view, shape {cols, rows} and when it must
 * be present. The first twelve rows are also the llama2.c file order (with the legacy
 * RoPE tables between output_norm and output). */
static const model_tensor_spec_t tensor_specs[] = {
    {"token_embd.weight", GLOBAL(tok_embd), 0, D_DIM, D_VOCAB, NEED_ALL},
    {"blk.%d.attn_norm.weight", LAYER(attn_norm), 1, D_DIM, D_ONE, NEED_ALL},
    {"blk.%d.attn_q.weight", LAYER(wq), 1, D_DIM, D_QDIM, NEED_ALL},
    {"blk.%d.attn_k.weight", LAYER(wk), 1, D_DIM, D_KVDIM, NEED_ALL},
    {"blk.%d.attn_v.weight", LAYER(wv), 1, D_DIM, D_KVDIM, NEED_ALL},
    {"blk.%d.attn_output.weight", LAYER(wo), 1, D_QDIM, D_DIM, NEED_ALL},
    {"blk.%d.ffn_norm.weight", LAYER(ffn_norm), 1, D_DIM, D_ONE, NEED_ALL},
    {"blk.%d.ffn_gate.weight", LAYER(w_gate), 1, D_DIM, D_HIDDEN, NEED_ALL},
    {"blk.%d.ffn_down.weight", LAYER(w_down), 1, D_HIDDEN, D_DIM, NEED_ALL},
    {"blk.%d.ffn_up.weight", LAYER(w_up), 1, D_DIM, D_HIDDEN, NEED_ALL},
    {"output_norm.weight", GLOBAL(output_norm), 0, D_DIM, D_ONE, NEED_ALL},
    {"output.weight", GLOBAL(output), 0, D_DIM, D_VOCAB, NEED_OPTIONAL},
    {"blk.%d.attn_q.bias", LAYER(bq), 1, D_QDIM, D_ONE, NEED_QKV_BIAS},
    {"blk.%d.attn_k.bias", LAYER(bk), 1, D_KVDIM, D_ONE, NEED_QKV_BIAS},
    {"blk.%d.attn_v.bias", LAYER(bv), 1, D_KVDIM, D_ONE, NEED_QKV_BIAS},
    {"blk.%d.attn_q_norm.weight", LAYER(q_norm), 1, D_HEAD, D_ONE, NEED_QK_NORM},
    {"blk.%d.attn_k_norm.weight", LAYER(k_norm), 1, D_HEAD, D_ONE, NEED_QK_NORM},
};
#define N_SPECS (sizeof tensor_specs / sizeof tensor_specs[0])
#define LLAMA2C_SPECS 12 /* rows of the table a llama2.c file has */

const model_tensor_spec_t *model_tensor_specs(size_t *n)
{
    *n = N_SPECS;
    return tensor_specs;
}

int64_t model_spec_dim(const model_config_t *c, int d)
{
    switch (d) {
    case D_DIM:
        return c->dim;
    case D_HIDDEN:
        return c->hidden_dim;
    case D_QDIM:
        return (int64_t)c->n_heads * c->head_dim;
    case D_KVDIM:
        return (int64_t)c->n_kv_heads * c->head_dim;
    case D_HEAD:
        return c->head_dim;
    case D_VOCAB:
        return c->vocab_size;
    default:
        return 1;
    }
}

bool model_spec_wanted(const model_config_t *c, const model_tensor_spec_t *s)
{
    switch (s->need) {
    case NEED_QKV_BIAS:
        return c->qkv_bias;
    case NEED_QK_NORM:
        return c->qk_norm;
    default:
        return true;
    }
}

tensor_t *model_spec_slot(model_t *m, const model_tensor_spec_t *s, int layer)
{
    char *base = s->per_layer ? (char *)&m->layers[layer] : (char *)&m->v;
    return (tensor_t *)(base + s->off);
}

void model_spec_name(const model_tensor_spec_t *s, int layer, char *out, size_t len)
{
    if (s->per_layer) {
        const char *p = strstr(s->name, "%d");
        snprintf(out, len, "%.*s%d%s", (int)(p - s->name), s->name, layer, p + 2);
    } else {
        snprintf(out, len, "%s", s->name);
    }
}

/* ---- shared steps ------------------------------------------------------------------------- */

/* a*b with overflow detection; sticky *ovf. */
static uint64_t mul(uint64_t a, uint64_t b, int *ovf)
{
    uint64_t r;
    if (__builtin_mul_overflow(a, b, &r)) *ovf = 1;
    return r;
}

static uint64_t add(uint64_t a, uint64_t b, int *ovf)
{
    uint64_t r;
    if (__builtin_add_overflow(a, b, &r)) *ovf = 1;
    return r;
}

int model_check_config(const model_config_t *c, char *err, size_t errlen)
{
    static const char *names[] = {"dim",        "hidden_dim", "n_layers",   "n_heads",
                                  "n_kv_heads", "head_dim",   "vocab_size", "context length"};
    static const int caps[] = {CAP_DIM,   CAP_HIDDEN, CAP_LAYERS, CAP_HEADS,
                               CAP_HEADS, CAP_DIM,    CAP_VOCAB,  CAP_SEQ};
    int vals[] = {c->dim,        c->hidden_dim, c->n_layers,   c->n_heads,
                  c->n_kv_heads, c->head_dim,   c->vocab_size, c->train_ctx};
    for (size_t i = 0; i < sizeof vals / sizeof vals[0]; i++) {
        if (vals[i] <= 0)
            return errorf(err, errlen, -EINVAL, "%s = %d must be positive", names[i], vals[i]);
        if (vals[i] > caps[i])
            return errorf(err, errlen, -EINVAL, "%s = %d exceeds the limit %d", names[i], vals[i],
                          caps[i]);
    }
    if (c->n_kv_heads > c->n_heads || c->n_heads % c->n_kv_heads)
        return errorf(err, errlen, -EINVAL, "n_heads %d is not a multiple of n_kv_heads %d",
                      c->n_heads, c->n_kv_heads);
    if (c->rope_dim <= 0 || c->rope_dim % 2 || c->rope_dim > c->head_dim)
        return errorf(err, errlen, -EINVAL,
                      "RoPE dimension %d must be even, positive and at most the head size %d",
                      c->rope_dim, c->head_dim);
    if (c->vocab_size < 3)
        return errorf(err, errlen, -EINVAL, "vocab_size %d too small (needs BOS/EOS)",
                      c->vocab_size);
    if (!(c->rms_eps > 0.0f) || !(c->rms_eps < 1.0f))
        return errorf(err, errlen, -EINVAL, "RMS epsilon %g outside (0, 1)", (double)c->rms_eps);
    return 0;
}

int model_set_context(model_t *m, int ctx_size, char *err, size_t errlen)
{
    model_config_t *c = &m->v.c;
    if (ctx_size < 0)
        return errorf(err, errlen, -EINVAL, "context size %d must not be negative", ctx_size);
    if (ctx_size > c->train_ctx)
        return errorf(err, errlen, -EINVAL,
                      "context size %d exceeds the model's context length %d (--ctx-size)",
                      ctx_size, c->train_ctx);
    c->seq_len =
        ctx_size ? ctx_size : (c->train_ctx < MODEL_DEFAULT_CTX ? c->train_ctx : MODEL_DEFAULT_CTX);
    if (c->seq_len < 2)
        return errorf(err, errlen, -EINVAL, "context size %d leaves no room for output",
                      c->seq_len);
    return 0;
}

int model_rope_init(model_t *m, float base, float freq_scale, const float *factors, char *err,
                    size_t errlen)
{
    const model_config_t *c = &m->v.c;
    int half = c->rope_dim / 2;
    if (!(base > 0.0f) || !isfinite(base))
        return errorf(err, errlen, -EINVAL, "RoPE frequency base %g must be positive",
                      (double)base);
    m->rope_freq = malloc((size_t)half * sizeof(float));
    if (!m->rope_freq) return errorf(err, errlen, -ENOMEM, "out of memory");
    /* ggml's order: theta_scale = base^(-2/n), the angle of pair i is pos * theta_scale^i
     * (built by repeated multiplication), divided by the pair's factor, times freq_scale */
    float theta_scale = powf(base, -2.0f / (float)c->rope_dim), f = 1.0f;
    for (int i = 0; i < half; i++) {
        float ff = factors ? factors[i] : 1.0f;
        if (!(ff > 0.0f) || !isfinite(ff))
            return errorf(err, errlen, -EINVAL, "RoPE frequency factor %d is %g, not positive", i,
                          (double)ff);
        m->rope_freq[i] = f / ff * freq_scale;
        f *= theta_scale;
    }
    m->v.rope_freq = m->rope_freq;
    return 0;
}

/* Sum weights and parameters once the view is complete. */
static void count_one(const tensor_t *t, void *arg)
{
    model_view_t *v = arg;
    v->n_params += (uint64_t)t->ne[0] * (uint64_t)t->ne[1];
    v->weight_bytes += t->nbytes;
}

void model_count(model_t *m)
{
    m->v.n_params = 0;
    m->v.weight_bytes = 0;
    model_view_each(&m->v, count_one, &m->v);
}

/* ---- llama2.c checkpoints --------------------------------------------------------------- */

int model_parse(model_t *m, const void *buf, size_t size, int ctx_size, char *err, size_t errlen)
{
    int32_t h[7];
    memset(m, 0, sizeof(*m));
    m->format = MODEL_LLAMA2C;
    if (size < sizeof(h))
        return errorf(err, errlen, -EINVAL, "model file truncated: %zu bytes, header needs 28",
                      size);
    memcpy(h, buf, sizeof(h));
    model_config_t *c = &m->v.c;
    if (h[5] == INT32_MIN) return errorf(err, errlen, -EINVAL, "model vocab_size out of range");
    c->arch = ARCH_LLAMA;
    c->dim = h[0];
    c->hidden_dim = h[1];
    c->n_layers = h[2];
    c->n_heads = h[3];
    c->n_kv_heads = h[4];
    c->shared = h[5] > 0;
    c->vocab_size = h[5] < 0 ? -h[5] : h[5];
    c->train_ctx = h[6];
    c->rms_eps = 1e-5f;
    c->rope_mode = ROPE_NORM;
    static const char *names[7] = {"dim",        "hidden_dim", "n_layers", "n_heads",
                                   "n_kv_heads", "vocab_size", "seq_len"};
    int vals[7] = {c->dim,        c->hidden_dim, c->n_layers, c->n_heads,
                   c->n_kv_heads, c->vocab_size, c->train_ctx};
    static const int caps[7] = {CAP_DIM,   CAP_HIDDEN, CAP_LAYERS, CAP_HEADS,
                                CAP_HEADS, CAP_VOCAB,  CAP_SEQ};
    for (int i = 0; i < 7; i++) {
        if (vals[i] <= 0)
            return errorf(err, errlen, -EINVAL, "model header: %s = %d must be positive", names[i],
                          h[i]);
        if (vals[i] > caps[i])
            return errorf(err, errlen, -EINVAL, "model header: %s = %d exceeds the limit %d",
                          names[i], vals[i], caps[i]);
    }
    if (c->dim % c->n_heads)
        return errorf(err, errlen, -EINVAL, "model header: dim %d not divisible by n_heads %d",
                      c->dim, c->n_heads);
    c->head_dim = c->dim / c->n_heads;
    c->rope_dim = c->head_dim;
    if (c->head_dim % 2)
        return errorf(err, errlen, -EINVAL, "model header: head size %d must be even (RoPE)",
                      c->head_dim);
    char why[256];
    int rc = model_check_config(c, why, sizeof why);
    if (rc < 0) return errorf(err, errlen, rc, "model header: %s", why);

    /* sizes of the table's first rows in file order, then the legacy RoPE tables */
    int ovf = 0;
    uint64_t off[LLAMA2C_SPECS], n = 0, params = 0;
    for (size_t i = 0; i < LLAMA2C_SPECS; i++) {
        const model_tensor_spec_t *s = &tensor_specs[i];
        uint64_t one =
            mul((uint64_t)model_spec_dim(c, s->cols), (uint64_t)model_spec_dim(c, s->rows), &ovf);
        uint64_t all = s->per_layer ? mul(one, (uint64_t)c->n_layers, &ovf) : one;
        if (s->need == NEED_OPTIONAL) { /* output.weight: after the RoPE tables, if any */
            n = add(n, mul((uint64_t)c->train_ctx, (uint64_t)c->head_dim, &ovf), &ovf);
            if (c->shared) all = 0;
        }
        off[i] = n;
        n = add(n, all, &ovf);
        params = add(params, all, &ovf);
    }
    uint64_t bytes = add(28, mul(n, 4, &ovf), &ovf);
    if (ovf || bytes > (uint64_t)SIZE_MAX)
        return errorf(err, errlen, -EINVAL, "model header: sizes overflow");
    if ((uint64_t)size != bytes)
        return errorf(err, errlen, -EINVAL,
                      "model file is %zu bytes but its header (dim %d hidden %d layers %d heads "
                      "%d kv_heads %d vocab %d%s seq_len %d) needs %llu%s",
                      size, c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads,
                      c->vocab_size, c->shared ? "" : " unshared", c->train_ctx,
                      (unsigned long long)bytes, (uint64_t)size < bytes ? " (truncated)" : "");
    rc = model_set_context(m, ctx_size, err, errlen);
    if (rc < 0) return rc;
    m->layers = calloc((size_t)c->n_layers, sizeof(model_layer_t));
    if (!m->layers) return errorf(err, errlen, -ENOMEM, "out of memory");
    m->v.layers = m->layers;

    const float *f = (const float *)((const char *)buf + 28);
    for (size_t i = 0; i < LLAMA2C_SPECS; i++) {
        const model_tensor_spec_t *s = &tensor_specs[i];
        int64_t cols = model_spec_dim(c, s->cols), rows = model_spec_dim(c, s->rows);
        int nl = s->per_layer ? c->n_layers : 1;
        for (int l = 0; l < nl; l++) {
            tensor_t *t = model_spec_slot(m, s, l);
            if (s->need == NEED_OPTIONAL && c->shared) {
                *t = m->v.tok_embd;
                continue;
            }
            t->data = f + off[i] + (uint64_t)l * (uint64_t)(cols * rows);
            t->type = DTYPE_F32;
            t->ne[0] = cols;
            t->ne[1] = rows;
            t->row_bytes = (size_t)cols * 4;
            t->nbytes = t->row_bytes * (size_t)rows;
            model_spec_name(s, l, t->name, sizeof t->name);
        }
    }
    snprintf(m->arch_name, sizeof m->arch_name, "llama");
    snprintf(m->quant, sizeof m->quant, "F32");
    rc = model_rope_init(m, 10000.0f, 1.0f, NULL, err, errlen);
    if (rc < 0) {
        model_dispose(m);
        return rc;
    }
    model_count(m);
    return 0;
}

/* The first bytes of the file: GGUF's magic, or a llama2.c header. */
static int sniff_gguf(const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return errorf(err, errlen, -e, "cannot open model %s: %s", path, strerror(e));
    }
    char magic[4] = {0};
    ssize_t n = read(fd, magic, 4);
    close(fd);
    return n == 4 && gguf_is_gguf(magic, 4);
}

int model_load(model_t *m, const char *path, int ctx_size, char *err, size_t errlen)
{
    memset(m, 0, sizeof(*m));
    if (!path) return errorf(err, errlen, -EINVAL, "no model path");
    int is_gguf = sniff_gguf(path, err, errlen);
    if (is_gguf < 0) return is_gguf;
    if (is_gguf) {
        gguf_t *g;
        int rc = gguf_open(&g, path, err, errlen);
        if (rc < 0) return rc;
        rc = model_from_gguf(m, g, ctx_size, err, errlen);
        if (rc < 0) gguf_free(g);
        return rc;
    }
    wmap_t w;
    int rc = wmap_open(&w, path, "model ", err, errlen);
    if (rc < 0) return rc;
    char why[400];
    rc = model_parse(m, w.base, w.size, ctx_size, why, sizeof(why));
    if (rc < 0) {
        wmap_close(&w);
        return errorf(err, errlen, rc, "model %s: %s", path, why);
    }
    madvise(w.base, w.size, MADV_WILLNEED);
    m->map = w;
    return 0;
}

int model_hugepages_mode(const char *mode, char *err, size_t errlen)
{
    if (!mode || !strcmp(mode, "auto")) return HUGEPAGES_AUTO;
    if (!strcmp(mode, "on")) return HUGEPAGES_ON;
    if (!strcmp(mode, "off")) return HUGEPAGES_OFF;
    return errorf(err, errlen, -EINVAL, "hugepages '%s' is not auto, on or off", mode);
}

int model_hugepages(model_t *m, const char *mode, char *note, size_t notelen, char *err,
                    size_t errlen)
{
    int hp = model_hugepages_mode(mode, err, errlen);
    if (hp < 0) return hp;
    if (hp == HUGEPAGES_OFF) {
        snprintf(note, notelen, "mapped from the file (hugepages off)");
        return 0;
    }
    char why[256];
    if (!wmap_thp_available(why, sizeof why)) {
        if (hp == HUGEPAGES_ON) return errorf(err, errlen, -ENOTSUP, "hugepages on: %s", why);
        snprintf(note, notelen, "mapped from the file: %s", why);
        return 0;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    size_t bytes = 0, huge = 0;
    int rc = 0;
    if (m->gguf)
        rc = gguf_hugepages(m->gguf, &bytes, &huge, why, sizeof why);
    else if (m->map.base && (rc = wmap_hugepages(&m->map, why, sizeof why)) == 0)
        bytes = m->map.size, huge = m->map.huge_bytes;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (rc < 0 && hp == HUGEPAGES_ON) return errorf(err, errlen, rc, "hugepages on: %s", why);
    if (rc < 0)
        snprintf(note, notelen, "mapped from the file: the copy into huge pages failed: %s", why);
    else
        snprintf(note, notelen,
                 "%.1f MiB copied into transparent huge pages in %.2f s (%.1f MiB of it in 2 MiB "
                 "pages)",
                 (double)bytes / (1 << 20),
                 (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9,
                 (double)huge / (1 << 20));
    return 0;
}

void model_dispose(model_t *m)
{
    if (m->map.base) wmap_close(&m->map);
    gguf_free(m->gguf);
    free(m->layers);
    free(m->rope_freq);
    memset(m, 0, sizeof(*m));
}
