/*
 * model_gguf.c - a GGUF file as the model view: the architecture (llama, qwen2, qwen3),
 * hyper-parameters from the {arch}.* keys, every weight of the tensor table found by
 * name and checked against the shape the hyper-parameters give, RoPE frequencies (base,
 * linear scaling, Llama 3.1's llama3 scaling from keys or from rope_freqs.weight).
 * Weights stay in the mapping, in their own types; nothing is converted.
 */
#include "internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const arch_names[] = {"llama", "qwen2", "qwen3"};
#define SUPPORTED_ARCHS "llama, qwen2, qwen3"

/* llama.cpp's llama_ftype names (general.file_type) */
static const char *ftype_name(int64_t t)
{
    static const struct {
        int t;
        const char *name;
    } names[] = {{0, "F32"},      {1, "F16"},      {2, "Q4_0"},      {3, "Q4_1"},    {7, "Q8_0"},
                 {8, "Q5_0"},     {9, "Q5_1"},     {10, "Q2_K"},     {11, "Q3_K_S"}, {12, "Q3_K_M"},
                 {13, "Q3_K_L"},  {14, "Q4_K_S"},  {15, "Q4_K_M"},   {16, "Q5_K_S"}, {17, "Q5_K_M"},
                 {18, "Q6_K"},    {19, "IQ2_XXS"}, {20, "IQ2_XS"},   {21, "Q2_K_S"}, {22, "IQ3_XS"},
                 {23, "IQ3_XXS"}, {24, "IQ1_S"},   {25, "IQ4_NL"},   {26, "IQ3_S"},  {27, "IQ3_M"},
                 {28, "IQ2_S"},   {29, "IQ2_M"},   {30, "IQ4_XS"},   {31, "IQ1_M"},  {32, "BF16"},
                 {36, "TQ1_0"},   {37, "TQ2_0"},   {38, "MXFP4_MOE"}};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (names[i].t == t) return names[i].name;
    return NULL;
}

/* "{arch}.suffix" */
static const char *akey(char *buf, size_t len, const char *arch, const char *suffix)
{
    snprintf(buf, len, "%s.%s", arch, suffix);
    return buf;
}

/* an integer hyper-parameter: required unless dflt >= 0 */
static int hp_int(const gguf_t *g, const char *arch, const char *suffix, int64_t dflt, int64_t max,
                  int *out, char *err, size_t errlen)
{
    char k[96];
    int64_t v;
    int rc = gguf_get_int(g, akey(k, sizeof k, arch, suffix), 1, max, &v, err, errlen);
    if (rc == -ENOENT && dflt >= 0) {
        *out = (int)dflt;
        return 0;
    }
    if (rc < 0) return rc;
    *out = (int)v;
    return 0;
}

static int hp_f32(const gguf_t *g, const char *arch, const char *suffix, float dflt, bool required,
                  float *out, char *err, size_t errlen)
{
    char k[96];
    int rc = gguf_get_f32(g, akey(k, sizeof k, arch, suffix), out, err, errlen);
    if (rc == -ENOENT && !required) {
        *out = dflt;
        return 0;
    }
    return rc;
}

/* Which tensors a model of this architecture has: 1 required, 0 absent, -1 optional. */
static int presence(const model_config_t *c, const model_tensor_spec_t *s)
{
    if (!strcmp(s->name, "output.weight")) return -1; /* absent: tied to token_embd */
    if (strstr(s->name, ".bias")) return c->arch == ARCH_QWEN2 ? 1 : c->arch == ARCH_LLAMA ? -1 : 0;
    if (strstr(s->name, "attn_q_norm") || strstr(s->name, "attn_k_norm"))
        return c->arch == ARCH_QWEN3 ? 1 : 0;
    return 1;
}

static void dims_text(char *buf, size_t len, const gguf_tensor_t *t)
{
    int n = snprintf(buf, len, "[%lld", (long long)t->ne[0]);
    for (uint32_t d = 1; d < t->n_dims && n > 0 && (size_t)n < len; d++)
        n += snprintf(buf + n, len - (size_t)n, ", %lld", (long long)t->ne[d]);
    if (n > 0 && (size_t)n < len) snprintf(buf + n, len - (size_t)n, "]");
}

/* Point the view's tensor at the file's, after checking shape and type. */
static int bind(tensor_t *dst, const gguf_tensor_t *t, int64_t cols, int64_t rows, const char *name,
                const gguf_t *g, char *err, size_t errlen)
{
    const char *file = gguf_name(g);
    bool vec = rows == 1;
    bool ok = t->ne[0] == cols && t->ne[1] == rows && t->ne[2] == 1 && t->ne[3] == 1;
    if (!ok) {
        char have[96];
        dims_text(have, sizeof have, t);
        if (vec)
            return errorf(err, errlen, -EINVAL,
                          "%s: tensor '%s' has shape %s but the hyper-parameters need [%lld]", file,
                          name, have, (long long)cols);
        return errorf(err, errlen, -EINVAL,
                      "%s: tensor '%s' has shape %s but the hyper-parameters need [%lld, %lld]",
                      file, name, have, (long long)cols, (long long)rows);
    }
    /* the kernels read f32 values and fp16 scales in place */
    if ((uintptr_t)t->data % 4)
        return errorf(err, errlen, -EINVAL,
                      "%s: tensor '%s' is not 4-byte aligned in the file (general.alignment %u)",
                      file, name, gguf_alignment(g));
    /* vectors (norms, biases) are read as f32 by every backend; llama.cpp writes them so */
    if (vec && t->type != DTYPE_F32)
        return errorf(err, errlen, -EINVAL,
                      "%s: tensor '%s' is %s; inferd needs F32 for norm and bias vectors", file,
                      name, dtype_name(t->type));
    dst->data = t->data;
    dst->type = t->type;
    dst->ne[0] = cols;
    dst->ne[1] = rows;
    dst->row_bytes = dtype_row_bytes(t->type, (uint64_t)cols);
    dst->nbytes = dst->row_bytes * (size_t)rows;
    snprintf(dst->name, sizeof dst->name, "%s", name);
    return 0;
}

/* The quantization label: general.file_type when the file has it, else the types of the
 * matrices ("Q4_K/Q6_K"). */
static void quant_label(model_t *m)
{
    int64_t ft;
    const char *n = NULL;
    if (gguf_get_int(m->gguf, "general.file_type", 0, 1 << 20, &ft, NULL, 0) == 0)
        n = ftype_name(ft);
    if (n) {
        snprintf(m->quant, sizeof m->quant, "%s", n);
        return;
    }
    bool seen[DTYPE_COUNT] = {0};
    const model_view_t *v = &m->v;
    seen[v->tok_embd.type] = seen[v->output.type] = true;
    for (int l = 0; l < v->c.n_layers; l++) {
        const model_layer_t *y = &v->layers[l];
        const tensor_t *mats[] = {&y->wq, &y->wk, &y->wv, &y->wo, &y->w_gate, &y->w_down, &y->w_up};
        for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++)
            seen[mats[i]->type] = true;
    }
    size_t at = 0;
    m->quant[0] = 0;
    for (uint32_t t = 0; t < DTYPE_COUNT; t++)
        if (seen[t] && at + 12 < sizeof m->quant)
            at += (size_t)snprintf(m->quant + at, sizeof m->quant - at, "%s%s", at ? "/" : "",
                                   dtype_name(t));
}

/* RoPE: base, then either rope_freqs.weight (what llama.cpp's converter writes for Llama 3.1),
 * or {arch}.rope.scaling.type: none, linear (factor), llama3 (factor, low/high frequency
 * factors, original context). */
static int rope(model_t *m, const char *arch, const char *file, int *used, char *err, size_t errlen)
{
    const gguf_t *g = m->gguf;
    model_config_t *c = &m->v.c;
    float base, scale = 1.0f;
    int rc = hp_f32(g, arch, "rope.freq_base", 10000.0f, false, &base, err, errlen);
    if (rc < 0) return rc;
    int half = c->rope_dim / 2;
    float *ff = calloc((size_t)half, sizeof(float));
    if (!ff) return errorf(err, errlen, -ENOMEM, "out of memory");
    const float *factors = NULL;
    const gguf_tensor_t *rf = gguf_find_tensor(g, "rope_freqs.weight");
    char k[96];
    gguf_str_t type = {"none", 4};
    rc = gguf_get_str(g, akey(k, sizeof k, arch, "rope.scaling.type"), &type, err, errlen);
    if (rc == -ENOENT) {
        type = (gguf_str_t){"none", 4};
        rc = 0;
    }
    if (rc < 0) goto out;
    if (rf) {
        (*used)++;
        if (rf->n_dims != 1 || rf->ne[0] != half || rf->type != DTYPE_F32) {
            char have[96];
            dims_text(have, sizeof have, rf);
            rc = errorf(err, errlen, -EINVAL,
                        "%s: tensor 'rope_freqs.weight' is %s %s; the RoPE dimension %d needs F32 "
                        "[%d]",
                        file, dtype_name(rf->type), have, c->rope_dim, half);
            goto out;
        }
        memcpy(ff, rf->data, (size_t)half * sizeof(float));
        factors = ff;
    }
    if (gguf_str_eq(type, "linear")) {
        float f;
        rc = hp_f32(g, arch, "rope.scaling.factor", 1.0f, true, &f, err, errlen);
        if (rc < 0) goto out;
        if (!(f > 0.0f)) {
            rc = errorf(err, errlen, -EINVAL, "%s: %s = %g must be positive", file, k, (double)f);
            goto out;
        }
        scale = 1.0f / f;
    } else if (gguf_str_eq(type, "llama3")) {
        /* the frequency factors Llama 3.1's config describes, computed as llama.cpp's
         * converter does (conversion/llama.py) unless the file already has them */
        float factor, lo, hi;
        int orig;
        if ((rc = hp_f32(g, arch, "rope.scaling.factor", 8.0f, false, &factor, err, errlen)) < 0 ||
            (rc = hp_f32(g, arch, "rope.scaling.low_freq_factor", 1.0f, false, &lo, err, errlen)) <
                0 ||
            (rc = hp_f32(g, arch, "rope.scaling.high_freq_factor", 4.0f, false, &hi, err, errlen)) <
                0 ||
            (rc = hp_int(g, arch, "rope.scaling.original_context_length", 8192, 1 << 24, &orig, err,
                         errlen)) < 0)
            goto out;
        if (!(factor > 0.0f) || !(hi > lo) || !(lo > 0.0f)) {
            rc = errorf(err, errlen, -EINVAL,
                        "%s: llama3 RoPE scaling needs factor > 0 and high_freq_factor > "
                        "low_freq_factor > 0 (got %g, %g, %g)",
                        file, (double)factor, (double)hi, (double)lo);
            goto out;
        }
        if (!factors) {
            double lo_wave = orig / lo, hi_wave = orig / hi;
            for (int i = 0; i < half; i++) {
                float freq = 1.0f / powf(base, (float)(2 * i) / (float)c->rope_dim);
                double wave = 2.0 * M_PI / freq;
                if (wave < hi_wave)
                    ff[i] = 1.0f;
                else if (wave > lo_wave)
                    ff[i] = factor;
                else {
                    double smooth = (orig / wave - lo) / (hi - lo);
                    ff[i] = (float)(1.0 / ((1.0 - smooth) / factor + smooth));
                }
            }
            factors = ff;
        }
    } else if (!gguf_str_eq(type, "none")) {
        rc = errorf(err, errlen, -EINVAL,
                    "%s: %s = '%.*s' is not supported (inferd supports none, linear, llama3)", file,
                    k, (int)(type.len > 32 ? 32 : type.len), type.ptr);
        goto out;
    }
    rc = model_rope_init(m, base, scale, factors, err, errlen);
out:
    free(ff);
    return rc;
}

int model_from_gguf(model_t *m, gguf_t *g, int ctx_size, char *err, size_t errlen)
{
    memset(m, 0, sizeof(*m));
    m->format = MODEL_GGUF;
    m->gguf = g;
    const char *file = gguf_name(g);
    model_config_t *c = &m->v.c;
    gguf_str_t an;
    int rc = gguf_get_str(g, "general.architecture", &an, err, errlen);
    if (rc < 0) goto fail;
    c->arch = -1;
    for (int i = 0; i < 3; i++)
        if (gguf_str_eq(an, arch_names[i])) c->arch = i;
    if (c->arch < 0) {
        rc = errorf(err, errlen, -EINVAL,
                    "%s: architecture '%.*s' is not supported (inferd runs " SUPPORTED_ARCHS ")",
                    file, (int)(an.len > 64 ? 64 : an.len), an.ptr);
        goto fail;
    }
    const char *arch = arch_names[c->arch];
    snprintf(m->arch_name, sizeof m->arch_name, "%s", arch);
    int head_v = 0;
    if ((rc = hp_int(g, arch, "embedding_length", -1, 1 << 16, &c->dim, err, errlen)) < 0 ||
        (rc = hp_int(g, arch, "feed_forward_length", -1, 1 << 18, &c->hidden_dim, err, errlen)) <
            0 ||
        (rc = hp_int(g, arch, "block_count", -1, 1024, &c->n_layers, err, errlen)) < 0 ||
        (rc = hp_int(g, arch, "attention.head_count", -1, 1024, &c->n_heads, err, errlen)) < 0 ||
        (rc = hp_int(g, arch, "attention.head_count_kv", c->n_heads, 1024, &c->n_kv_heads, err,
                     errlen)) < 0 ||
        (rc = hp_int(g, arch, "context_length", -1, 1 << 24, &c->train_ctx, err, errlen)) < 0 ||
        (rc = hp_f32(g, arch, "attention.layer_norm_rms_epsilon", 0, true, &c->rms_eps, err,
                     errlen)) < 0)
        goto fail;
    /* key_length defaults to width / heads, and must be given when that is not whole */
    if ((rc =
             hp_int(g, arch, "attention.key_length", c->dim % c->n_heads ? -1 : c->dim / c->n_heads,
                    1 << 14, &c->head_dim, err, errlen)) < 0 ||
        (rc = hp_int(g, arch, "attention.value_length", c->head_dim, 1 << 14, &head_v, err,
                     errlen)) < 0 ||
        (rc = hp_int(g, arch, "rope.dimension_count", c->head_dim, 1 << 14, &c->rope_dim, err,
                     errlen)) < 0)
        goto fail;
    if (head_v != c->head_dim) {
        rc = errorf(err, errlen, -EINVAL,
                    "%s: %s.attention.value_length %d differs from key_length %d (not supported)",
                    file, arch, head_v, c->head_dim);
        goto fail;
    }
    c->qk_norm = c->arch == ARCH_QWEN3;
    c->rope_mode = c->arch == ARCH_LLAMA ? ROPE_NORM : ROPE_NEOX;
    const gguf_tensor_t *emb = gguf_find_tensor(g, "token_embd.weight");
    if (!emb) {
        rc = errorf(err, errlen, -EINVAL, "%s: tensor 'token_embd.weight' is missing", file);
        goto fail;
    }
    if (emb->ne[1] < 1 || emb->ne[1] > (1 << 22)) {
        rc = errorf(err, errlen, -EINVAL, "%s: tensor 'token_embd.weight' has %lld rows", file,
                    (long long)emb->ne[1]);
        goto fail;
    }
    c->vocab_size = (int)emb->ne[1];
    int vs;
    if ((rc = hp_int(g, arch, "vocab_size", c->vocab_size, 1 << 22, &vs, err, errlen)) < 0)
        goto fail;
    if (vs != c->vocab_size) {
        rc = errorf(err, errlen, -EINVAL,
                    "%s: %s.vocab_size is %d but token_embd.weight has %d rows", file, arch, vs,
                    c->vocab_size);
        goto fail;
    }
    char why[256];
    if ((rc = model_check_config(c, why, sizeof why)) < 0) {
        rc = errorf(err, errlen, rc, "%s: %s", file, why);
        goto fail;
    }
    if ((rc = model_set_context(m, ctx_size, why, sizeof why)) < 0) {
        rc = errorf(err, errlen, rc, "%s: %s", file, why);
        goto fail;
    }
    m->layers = calloc((size_t)c->n_layers, sizeof(model_layer_t));
    if (!m->layers) {
        rc = errorf(err, errlen, -ENOMEM, "out of memory");
        goto fail;
    }
    m->v.layers = m->layers;

    /* every tensor of the table: found, of the right shape; count what is used */
    size_t nspec, used = 0;
    const model_tensor_spec_t *specs = model_tensor_specs(&nspec);
    bool any_bias = false;
    for (size_t i = 0; i < nspec; i++) {
        const model_tensor_spec_t *s = &specs[i];
        int want = presence(c, s);
        int nl = s->per_layer ? c->n_layers : 1;
        for (int l = 0; l < nl; l++) {
            char name[64];
            model_spec_name(s, l, name, sizeof name);
            const gguf_tensor_t *t = gguf_find_tensor(g, name);
            if (!t) {
                if (want == 1) {
                    rc = errorf(err, errlen, -EINVAL, "%s: tensor '%s' is missing (%s needs it)",
                                file, name, arch);
                    goto fail;
                }
                continue;
            }
            if (want == 0) continue; /* reported below as unused */
            if ((rc = bind(model_spec_slot(m, s, l), t, model_spec_dim(c, s->cols),
                           model_spec_dim(c, s->rows), name, g, err, errlen)) < 0)
                goto fail;
            used++;
            if (strstr(name, ".bias")) any_bias = true;
        }
    }
    if (any_bias) {
        /* llama files may carry q/k/v biases; then every layer must have all three */
        for (int l = 0; l < c->n_layers; l++) {
            const model_layer_t *y = &m->layers[l];
            if (!y->bq.data || !y->bk.data || !y->bv.data) {
                rc = errorf(err, errlen, -EINVAL,
                            "%s: layer %d has only some of attn_q.bias, attn_k.bias, attn_v.bias",
                            file, l);
                goto fail;
            }
        }
        c->qkv_bias = 1;
    }
    if (!m->v.output.data) {
        c->shared = 1;
        m->v.output = m->v.tok_embd;
    }
    int used_rope = 0;
    if ((rc = rope(m, arch, file, &used_rope, err, errlen)) < 0) goto fail;
    used += (size_t)used_rope;
    /* llama.cpp refuses files with tensors it does not know what to do with; so do we */
    if (used != gguf_n_tensors(g)) {
        for (size_t i = 0; i < gguf_n_tensors(g); i++) {
            const gguf_tensor_t *t = gguf_tensor_at(g, i);
            bool known = !strcmp(t->name, "rope_freqs.weight");
            for (size_t j = 0; j < nspec && !known; j++) {
                const model_tensor_spec_t *s = &specs[j];
                int nl = s->per_layer ? c->n_layers : 1;
                for (int l = 0; l < nl && !known; l++) {
                    char name[64];
                    model_spec_name(s, l, name, sizeof name);
                    known = !strcmp(name, t->name) && presence(c, s) != 0;
                }
            }
            if (!known) {
                rc = errorf(err, errlen, -EINVAL,
                            "%s: tensor '%s' is not part of a %s model with %d layers (inferd "
                            "would ignore it)",
                            file, t->name, arch, c->n_layers);
                goto fail;
            }
        }
    }
    quant_label(m);
    model_count(m);
    return 0;
fail:
    m->gguf = NULL; /* the caller still owns g */
    model_dispose(m);
    return rc == -ENOENT ? -EINVAL : rc; /* a missing key is a bad file */
}

int model_parse_gguf(model_t *m, const void *buf, size_t size, int ctx_size, char *err,
                     size_t errlen)
{
    gguf_t *g;
    memset(m, 0, sizeof(*m));
    int rc = gguf_parse(&g, buf, size, "(memory)", err, errlen);
    if (rc < 0) return rc;
    rc = model_from_gguf(m, g, ctx_size, err, errlen);
    if (rc < 0) gguf_free(g);
    return rc;
}
