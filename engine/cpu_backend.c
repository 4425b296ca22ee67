/*
 * cpu_backend.c - the CPU implementation of the backend table: a batched forward pass
 * over n rows (one row = one token of one sequence at one position) for the llama,
 * qwen2 and qwen3 blocks. Every weight matrix is streamed once per step for all rows
 * (kernels_matmul on its blocks in place), the threads split the output features, and
 * each row's arithmetic is independent of the other rows: batch invariance by
 * construction. The KV cache of every slot is allocated once, at load.
 *
 * The numerics follow llama.cpp's CPU graph where it matters for agreeing token for
 * token: RMSNorm sums squares in double, softmax sums in double, activations are put in
 * the weight type's dot format before each product (kernels.h).
 */
#include "internal.h"
#include "kernels.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SEGS 3
/* attention's chunks for a pool of nth threads (each chunk has its own scores buffer) */
#define ATT_CHUNKS(nth) (8 * (nth))
#define ATT_GROUP 16 /* query heads of one KV head scored together, at most */

typedef struct {
    const model_view_t *m;
    pool_t *pool;
    int max_rows, max_slots, ctx;
    int q_dim, kv_dim, hs, wide; /* wide: max(dim, hidden, q_dim) */
    float *x;                    /* (max_rows, dim) residual stream */
    float *xb;                   /* (max_rows, wide) normed input / attention output */
    float *xb2;                  /* (max_rows, dim) */
    float *hb;                   /* (max_rows, hidden) */
    float *hb2;                  /* (max_rows, hidden) */
    float *q;                    /* (max_rows, q_dim) */
    float *k;                    /* (max_rows, kv_dim) */
    float *v;                    /* (max_rows, kv_dim) */
    float *att;         /* (att_chunks, att_group, ctx) scores of the unit in hand, per chunk */
    int att_group;      /* query heads per KV head scored together: min(n_heads / n_kv_heads, 16) */
    float *lx;          /* (max_rows, dim) final-normed rows that need logits */
    void *xq[MAX_SEGS]; /* (max_rows, act bytes of wide) activations in a vec format */
    size_t xq_bytes;    /* bytes of each xq buffer */
    void *key;   /* (max_slots, layer, kv_head, ctx, head_dim): a head's positions in a row */
    void *value; /* (max_slots, layer, kv_head, ctx, head_dim) */
    int kv_f16;  /* their elements: fp16 (uint16_t), else float */
    int *cap;    /* (max_slots) positions reserved, 0 = slot unused */
    uint64_t kv_bytes;
} cpu_t;

static void cpu_free(void *ctx)
{
    cpu_t *s = ctx;
    if (!s) return;
    free(s->key);
    free(s->value);
    free(s->cap);
    free(s->x);
    free(s->xb);
    free(s->xb2);
    free(s->hb);
    free(s->hb2);
    free(s->q);
    free(s->k);
    free(s->v);
    free(s->att);
    free(s->lx);
    for (int i = 0; i < MAX_SEGS; i++)
        free(s->xq[i]);
    free(s);
}

static float *falloc(size_t n)
{
    return malloc((n ? n : 1) * sizeof(float));
}

/* Every tensor must have CPU kernels; a matrix's rows must be whole blocks. */
typedef struct {
    char *err;
    size_t errlen;
    int rc;
} check_t;

static void check_one(const tensor_t *t, void *arg)
{
    check_t *c = arg;
    if (c->rc < 0) return;
    if (!kernels_for(t->type))
        c->rc = errorf(c->err, c->errlen, BACKEND_ENOTSUP,
                       "tensor %s has type %s, which inferd cannot run (supported: F32, F16, BF16, "
                       "Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, IQ4_NL, Q4_K, Q5_K, Q6_K)",
                       t->name, dtype_name(t->type));
}

static int cpu_load(void **ctx, const model_view_t *m, const backend_opts_t *o, pool_t *pool,
                    int max_rows, int max_slots, char *err, size_t errlen)
{
    const model_config_t *c = &m->c;
    check_t chk = {err, errlen, 0};
    model_view_each(m, check_one, &chk);
    if (chk.rc < 0) return chk.rc;
    cpu_t *s = calloc(1, sizeof(*s));
    if (!s) return errorf(err, errlen, -ENOMEM, "out of memory");
    s->m = m;
    s->pool = pool;
    s->max_rows = max_rows;
    s->max_slots = max_slots;
    s->ctx = c->seq_len;
    s->kv_f16 = o && o->kv_f16;
    s->hs = c->head_dim;
    s->q_dim = c->n_heads * c->head_dim;
    s->kv_dim = c->n_kv_heads * c->head_dim;
    s->wide = c->dim;
    if (c->hidden_dim > s->wide) s->wide = c->hidden_dim;
    if (s->q_dim > s->wide) s->wide = s->q_dim;
    size_t R = (size_t)max_rows;
    s->x = falloc(R * c->dim);
    s->xb = falloc(R * s->wide);
    s->xb2 = falloc(R * c->dim);
    s->hb = falloc(R * c->hidden_dim);
    s->hb2 = falloc(R * c->hidden_dim);
    s->q = falloc(R * s->q_dim);
    s->k = falloc(R * s->kv_dim);
    s->v = falloc(R * s->kv_dim);
    s->att_group = c->n_heads / c->n_kv_heads < ATT_GROUP ? c->n_heads / c->n_kv_heads : ATT_GROUP;
    s->att = falloc((size_t)ATT_CHUNKS(pool_size(pool)) * (size_t)s->att_group * (size_t)s->ctx);
    s->lx = falloc(R * c->dim);
    s->xq_bytes = R * kernels_act_row_bytes_max(s->wide);
    for (int i = 0; i < MAX_SEGS; i++)
        s->xq[i] = malloc(s->xq_bytes);
    s->cap = calloc((size_t)max_slots, sizeof(int));
    if (!s->x || !s->xb || !s->xb2 || !s->hb || !s->hb2 || !s->q || !s->k || !s->v || !s->att ||
        !s->lx || !s->xq[0] || !s->xq[1] || !s->xq[2] || !s->cap) {
        cpu_free(s);
        return errorf(err, errlen, -ENOMEM, "out of memory for %d batch rows", max_rows);
    }
    /* the whole cache, once: slots x layers x kv heads x context x head_dim, for K and for V */
    uint64_t per =
        (uint64_t)max_slots * (uint64_t)c->n_layers * (uint64_t)s->ctx * (uint64_t)s->kv_dim;
    size_t el = s->kv_f16 ? sizeof(uint16_t) : sizeof(float);
    s->kv_bytes = per * 2 * el;
    s->key = per <= SIZE_MAX / el ? calloc((size_t)per, el) : NULL;
    s->value = s->key ? calloc((size_t)per, el) : NULL;
    if (!s->key || !s->value) {
        uint64_t kvb = s->kv_bytes;
        cpu_free(s);
        return errorf(err, errlen, -ENOMEM,
                      "out of memory for the KV cache: %.1f MiB for %d sequences x %d positions "
                      "(lower --max-batch or --ctx-size)",
                      (double)kvb / (1024.0 * 1024.0), max_slots, c->seq_len);
    }
    *ctx = s;
    return 0;
}

static int cpu_seq_alloc(void *ctx, int slot, int cap)
{
    cpu_t *s = ctx;
    if (slot < 0 || slot >= s->max_slots || cap <= 0 || cap > s->ctx) return -EINVAL;
    s->cap[slot] = cap; /* the cache was reserved at load */
    return 0;
}

static void cpu_seq_free(void *ctx, int slot)
{
    cpu_t *s = ctx;
    if (slot >= 0 && slot < s->max_slots) s->cap[slot] = 0;
}

static uint64_t cpu_kv_bytes(void *ctx)
{
    return ((cpu_t *)ctx)->kv_bytes;
}

/* K (or V) of `slot`, layer l: (kv_head, ctx, head_dim). Head-major, so attention reads one
 * head's keys and values as one sequential stream (position-major, a head's 256 bytes a
 * position at a 2 KiB stride ran a 1B model's decode at depth 1800 at 22.7 tok/s, this 29.6:
 * the prefetchers follow a stream, not a stride across pages). */
static void *kv_at(const cpu_t *s, void *base, int slot, int l)
{
    size_t i = (((size_t)slot * (size_t)s->m->c.n_layers + (size_t)l) * (size_t)s->ctx) *
               (size_t)s->kv_dim;
    return (char *)base + i * (s->kv_f16 ? sizeof(uint16_t) : sizeof(float));
}

/* ---- parallel jobs ------------------------------------------------------------ */

typedef struct {
    float *out; /* (nrows, ostride) */
    int ostride;
    const tensor_t *w; /* (nout, n) */
    const void *x;     /* (nrows, xstride bytes) activations in w's vec format */
    size_t xstride;
} mm_seg_t;

typedef struct {
    int nrows;
    mm_seg_t seg[MAX_SEGS];
    int nseg;
    int rows_per_chunk; /* output rows (across the segments, in order) per claimed chunk */
} mm_job_t;

/* Output rows per claimed chunk: about 8 chunks per thread, so a preempted thread holds
 * back at most an eighth of its share, in multiples of 16 rows (the tiles' 4-row steps). */
static int chunk_rows(int total, int nth)
{
    int per = (total + 8 * nth - 1) / (8 * nth);
    per = (per + 15) & ~15;
    return per < 16 ? 16 : per;
}

static void mm_run(void *arg, int c, int nchunks)
{
    (void)nchunks;
    mm_job_t *j = arg;
    int a = c * j->rows_per_chunk, b = a + j->rows_per_chunk;
    int base = 0;
    for (int s = 0; s < j->nseg; s++) {
        const mm_seg_t *g = &j->seg[s];
        int nout = (int)g->w->ne[1];
        int lo = a > base ? a - base : 0;
        int hi = b - base < nout ? b - base : nout;
        if (lo < hi) kernels_matmul(g->out, g->ostride, g->x, g->xstride, j->nrows, g->w, lo, hi);
        base += nout;
    }
}

/* out_k = x W_k^T for the k segments sharing input x (nrows, n): x is put in each weight's
 * dot format once per format, then the threads split the outputs of all segments. */
typedef struct {
    uint32_t vec_type;
    void *dst; /* (nrows, stride bytes) */
    size_t stride;
    const float *x; /* (nrows, n) */
    int n, nrows;
} quant_job_t;

static void quant_run(void *arg, int c, int nchunks)
{
    quant_job_t *q = arg;
    for (int r = c; r < q->nrows; r += nchunks)
        kernels_quantize_row(q->vec_type, (char *)q->dst + (size_t)r * q->stride,
                             q->x + (size_t)r * q->n, q->n);
}

static void mm(cpu_t *s, const float *x, int nrows, int nseg, float *const *outs,
               const int *ostrides, const tensor_t *const *ws)
{
    mm_job_t j = {.nrows = nrows, .nseg = nseg};
    int n = (int)ws[0]->ne[0];
    for (int g = 0; g < nseg; g++) {
        const kernel_type_t *kt = kernels_for(ws[g]->type);
        size_t stride = kernels_act_row_bytes(kt->vec_type, n);
        const void *xq = NULL;
        for (int p = 0; p < g && !xq; p++)
            if (kernels_for(ws[p]->type)->vec_type == kt->vec_type) xq = j.seg[p].x;
        if (!xq && kt->vec_type == DTYPE_F32) xq = x;
        if (!xq) {
            /* a prompt's rows are many: their conversion is split too */
            quant_job_t qj = {kt->vec_type, s->xq[g], stride, x, n, nrows};
            int nth = pool_size(s->pool);
            pool_run_chunks(s->pool, quant_run, &qj, nrows < 8 * nth ? nrows : 8 * nth);
            xq = s->xq[g];
        }
        j.seg[g] = (mm_seg_t){outs[g], ostrides[g], ws[g], xq, stride};
    }
    int total = 0;
    for (int g = 0; g < nseg; g++)
        total += (int)ws[g]->ne[1];
    j.rows_per_chunk = chunk_rows(total, pool_size(s->pool));
    pool_run_chunks(s->pool, mm_run, &j, (total + j.rows_per_chunk - 1) / j.rows_per_chunk);
}

typedef struct {
    cpu_t *s;
    const fwd_row_t *rows;
    int n, layer;
    int split; /* each KV head's query heads in this many parts (units of work) */
} att_job_t;

/* Units of work (KV head, part, row), KV-head-major: the rows of one KV head in turn read the
 * same keys and values (a prompt's stay in L2 across its rows), and a unit's query heads
 * (grouped-query attention: n_heads / n_kv_heads of them share the KV head) are scored and
 * mixed together, a block of positions at a time, so the keys and values are read once for
 * all of them instead of once per head (att_scores_group, att_mix_group: the same bits). */
static void att_run(void *arg, int ci, int nchunks)
{
    att_job_t *j = arg;
    cpu_t *s = j->s;
    const model_config_t *c = &s->m->c;
    int hs = s->hs, kv_mul = c->n_heads / c->n_kv_heads, gs = kv_mul / j->split;
    int total = j->n * c->n_kv_heads * j->split;
    int per = total / nchunks, extra = total % nchunks;
    int a = ci * per + (ci < extra ? ci : extra);
    int b = a + per + (ci < extra ? 1 : 0);
    float scale = 1.0f / sqrtf((float)hs);
    size_t ctx = (size_t)s->ctx;
    float *att = s->att + (size_t)ci * ctx * (size_t)s->att_group; /* (att_group, ctx) */
    for (int t = a; t < b; t++) {
        int u = t / j->n, r = t % j->n;
        int kvh = u / j->split, h1 = kvh * kv_mul + (u % j->split) * gs;
        const fwd_row_t *row = &j->rows[r];
        int np = row->pos + 1;
        size_t kvo = (size_t)kvh * ctx * (size_t)hs; /* head kvh's (ctx, hs), in elements */
        const void *kb = kv_at(s, s->key, row->slot, j->layer);
        const void *vb = kv_at(s, s->value, row->slot, j->layer);
        for (int h0 = h1; h0 < h1 + gs; h0 += ATT_GROUP) {
            int g = h1 + gs - h0 < ATT_GROUP ? h1 + gs - h0 : ATT_GROUP;
            const float *qh = s->q + (size_t)r * s->q_dim + (size_t)h0 * hs;
            if (s->kv_f16)
                att_scores_group_f16(att, ctx, qh, (size_t)hs, g, (const uint16_t *)kb + kvo,
                                     (size_t)hs, np, hs, scale);
            else
                att_scores_group(att, ctx, qh, (size_t)hs, g, (const float *)kb + kvo, (size_t)hs,
                                 np, hs, scale);
            float inv[ATT_GROUP];
            for (int i = 0; i < g; i++) {
                /* the exponentials on vector lanes; their sum stays one double chain in
                 * position order, so its bits are the same on every ISA */
                float *ai = att + (size_t)i * ctx;
                kernels_exp_sub(ai, np, kernels_max(ai, np), 1.0f);
                double sum = 0.0;
                for (int p = 0; p < np; p++)
                    sum += (double)ai[p];
                inv[i] = (float)(1.0 / sum);
            }
            float *o = s->xb + (size_t)r * s->q_dim + (size_t)h0 * hs;
            if (s->kv_f16)
                att_mix_group_f16(o, (size_t)hs, att, ctx, inv, g, (const uint16_t *)vb + kvo,
                                  (size_t)hs, np, hs);
            else
                att_mix_group(o, (size_t)hs, att, ctx, inv, g, (const float *)vb + kvo, (size_t)hs,
                              np, hs);
        }
    }
}

/* ---- serial per-row kernels (output first) ------------------------------------ */

/* o = x / rms(x) * w; the sum of squares in double, as ggml's rms_norm */
static void rmsnorm(float *o, const float *x, const float *w, int n, float eps)
{
    double ss = 0.0;
    for (int i = 0; i < n; i++)
        ss += (double)(x[i] * x[i]);
    float mean = (float)(ss / n);
    float scale = 1.0f / sqrtf(mean + eps);
    for (int i = 0; i < n; i++)
        o[i] = (x[i] * scale) * w[i];
}

/* Rotate every head of q (nq heads) and k (nk heads, hs each) at position pos: adjacent pairs
 * (NORM) or halves (NEOX) of the first rope_dim dims; the rest pass through. The angles are
 * the same for every head: their cos/sin are taken once per row (a 512-token prompt of a
 * 32-head model took 40 sincosf per pair otherwise). */
static void rope(float *q, int nq, float *k, int nk, int hs, const model_config_t *c,
                 const float *freq, int pos)
{
    int half = c->rope_dim / 2;
    float fcr[64], fci[64]; /* the angles of pairs [i0, i0 + 64) */
    for (int i0 = 0; i0 < half; i0 += 64) {
        int ni = half - i0 < 64 ? half - i0 : 64;
        for (int i = 0; i < ni; i++) {
            float theta = (float)pos * freq[i0 + i];
            fcr[i] = cosf(theta);
            fci[i] = sinf(theta);
        }
        for (int h = 0; h < nq + nk; h++) {
            float *v = h < nq ? q + (size_t)h * hs : k + (size_t)(h - nq) * hs;
            for (int i = 0; i < ni; i++) {
                int e = i0 + i;
                int a = c->rope_mode == ROPE_NEOX ? e : 2 * e;
                int b = c->rope_mode == ROPE_NEOX ? e + half : 2 * e + 1;
                float v0 = v[a], v1 = v[b];
                v[a] = v0 * fcr[i] - v1 * fci[i];
                v[b] = v0 * fci[i] + v1 * fcr[i];
            }
        }
    }
}

/* x (n) += b when the layer has that bias */
static void add_bias(float *x, const tensor_t *b, int n)
{
    if (!b->data) return;
    const float *bv = b->data;
    for (int i = 0; i < n; i++)
        x[i] += bv[i];
}

/* 1-D weights (norms, biases) are F32 in every file llama.cpp writes; the loader checks. */
static const float *f32(const tensor_t *t)
{
    return (const float *)t->data;
}

/* The per-row steps between the products, split over the pool by rows when a step has
 * enough of them (a prompt, a large batch): each row's arithmetic is the same wherever it
 * runs. */
typedef enum {
    ROWS_ATTN_NORM, /* (x += xb, the previous layer's FFN output, then) xb = norm(x) */
    ROWS_QKV,       /* biases, q/k norms, RoPE, K and V into the cache */
    ROWS_FFN_NORM,  /* x += xb2 (attention output), xb = norm(x) */
    ROWS_SWIGLU,    /* hb = silu(hb) * hb2 */
    ROWS_RESIDUAL,  /* x += xb (the last layer's FFN output) */
} rows_step_t;

typedef struct {
    cpu_t *s;
    const fwd_row_t *rows;
    int n, layer;
    rows_step_t step;
} rows_job_t;

static void rows_run(void *arg, int ci, int nchunks)
{
    rows_job_t *j = arg;
    cpu_t *s = j->s;
    const model_view_t *m = s->m;
    const model_config_t *c = &m->c;
    const model_layer_t *L = &m->layers[j->layer];
    int dim = c->dim, hid = c->hidden_dim, kvd = s->kv_dim, hs = s->hs, qd = s->q_dim;
    for (int r = ci; r < j->n; r += nchunks) {
        float *x = s->x + (size_t)r * dim, *xb = s->xb + (size_t)r * dim;
        switch (j->step) {
        case ROWS_ATTN_NORM:
            if (j->layer > 0)
                for (int i = 0; i < dim; i++)
                    x[i] += xb[i];
            rmsnorm(xb, x, f32(&L->attn_norm), dim, c->rms_eps);
            break;
        case ROWS_QKV: {
            const fwd_row_t *row = &j->rows[r];
            float *q = s->q + (size_t)r * qd, *k = s->k + (size_t)r * kvd;
            float *v = s->v + (size_t)r * kvd;
            add_bias(q, &L->bq, qd);
            add_bias(k, &L->bk, kvd);
            add_bias(v, &L->bv, kvd);
            if (c->qk_norm) {
                for (int h = 0; h < c->n_heads; h++)
                    rmsnorm(q + (size_t)h * hs, q + (size_t)h * hs, f32(&L->q_norm), hs,
                            c->rms_eps);
                for (int h = 0; h < c->n_kv_heads; h++)
                    rmsnorm(k + (size_t)h * hs, k + (size_t)h * hs, f32(&L->k_norm), hs,
                            c->rms_eps);
            }
            rope(q, c->n_heads, k, c->n_kv_heads, hs, c, m->rope_freq, row->pos);
            void *kc = kv_at(s, s->key, row->slot, j->layer);
            void *vc = kv_at(s, s->value, row->slot, j->layer);
            for (int h = 0; h < c->n_kv_heads; h++) {
                size_t off = ((size_t)h * (size_t)s->ctx + (size_t)row->pos) * (size_t)hs;
                if (s->kv_f16) { /* rounded once, as written: every later read sees the same */
                    kernels_to_f16((uint16_t *)kc + off, k + (size_t)h * hs, hs);
                    kernels_to_f16((uint16_t *)vc + off, v + (size_t)h * hs, hs);
                } else {
                    memcpy((float *)kc + off, k + (size_t)h * hs, (size_t)hs * sizeof(float));
                    memcpy((float *)vc + off, v + (size_t)h * hs, (size_t)hs * sizeof(float));
                }
            }
            break;
        }
        case ROWS_FFN_NORM: {
            const float *o = s->xb2 + (size_t)r * dim;
            for (int i = 0; i < dim; i++)
                x[i] += o[i];
            rmsnorm(xb, x, f32(&L->ffn_norm), dim, c->rms_eps);
            break;
        }
        case ROWS_SWIGLU: {
            float *g = s->hb + (size_t)r * hid;
            kernels_silu_mul(g, s->hb2 + (size_t)r * hid, hid);
            break;
        }
        case ROWS_RESIDUAL:
            for (int i = 0; i < dim; i++)
                x[i] += xb[i];
            break;
        }
    }
}

/* one per-row step over n rows: on the pool from 8 rows (a prompt, a batch), else here */
static void rows_step(cpu_t *s, const fwd_row_t *rows, int n, int layer, rows_step_t step)
{
    rows_job_t j = {s, rows, n, layer, step};
    int nth = pool_size(s->pool);
    pool_run_chunks(s->pool, rows_run, &j, n < 8 ? 1 : n < 8 * nth ? n : 8 * nth);
}

static int cpu_forward(void *ctx, const fwd_row_t *rows, int n, float *logits)
{
    cpu_t *s = ctx;
    const model_view_t *m = s->m;
    const model_config_t *c = &m->c;
    int dim = c->dim, hid = c->hidden_dim, kvd = s->kv_dim, qd = s->q_dim;
    if (n <= 0 || n > s->max_rows) return -EINVAL;
    const kernel_type_t *ke = kernels_for(m->tok_embd.type);
    for (int r = 0; r < n; r++) {
        const fwd_row_t *row = &rows[r];
        if (row->slot < 0 || row->slot >= s->max_slots || row->pos < 0 ||
            row->pos >= s->cap[row->slot] || row->token < 0 || row->token >= c->vocab_size)
            return -EINVAL;
        ke->dequant(s->x + (size_t)r * dim,
                    (const char *)m->tok_embd.data + (size_t)row->token * m->tok_embd.row_bytes,
                    dim);
    }
    for (int l = 0; l < c->n_layers; l++) {
        const model_layer_t *L = &m->layers[l];
        rows_step(s, rows, n, l, ROWS_ATTN_NORM);
        mm(s, s->xb, n, 3, (float *const[]){s->q, s->k, s->v}, (const int[]){qd, kvd, kvd},
           (const tensor_t *const[]){&L->wq, &L->wk, &L->wv});
        rows_step(s, rows, n, l, ROWS_QKV);
        /* split a KV head's query heads only when there are too few units for the threads */
        int nth = pool_size(s->pool), split = 1, kv_mul = c->n_heads / c->n_kv_heads;
        while (kv_mul % (2 * split) == 0 && n * c->n_kv_heads * split < 2 * nth)
            split *= 2;
        att_job_t aj = {s, rows, n, l, split};
        int units = n * c->n_kv_heads * split, most = ATT_CHUNKS(nth);
        pool_run_chunks(s->pool, att_run, &aj, units < most ? units : most);
        mm(s, s->xb, n, 1, (float *const[]){s->xb2}, (const int[]){dim},
           (const tensor_t *const[]){&L->wo});
        rows_step(s, rows, n, l, ROWS_FFN_NORM);
        mm(s, s->xb, n, 2, (float *const[]){s->hb, s->hb2}, (const int[]){hid, hid},
           (const tensor_t *const[]){&L->w_gate, &L->w_up});
        rows_step(s, rows, n, l, ROWS_SWIGLU);
        mm(s, s->hb, n, 1, (float *const[]){s->xb}, (const int[]){dim},
           (const tensor_t *const[]){&L->w_down});
    }
    rows_step(s, rows, n, c->n_layers - 1, ROWS_RESIDUAL);
    int nl = 0;
    for (int r = 0; r < n; r++) {
        int lr = rows[r].logits_row;
        if (lr < 0) continue;
        if (lr >= s->max_rows) return -EINVAL;
        rmsnorm(s->lx + (size_t)lr * dim, s->x + (size_t)r * dim, f32(&m->output_norm), dim,
                c->rms_eps);
        if (lr + 1 > nl) nl = lr + 1;
    }
    if (nl > 0)
        mm(s, s->lx, nl, 1, (float *const[]){logits}, (const int[]){c->vocab_size},
           (const tensor_t *const[]){&m->output});
    return 0;
}

const backend_t backend_cpu = {
    .name = "cpu",
    .device = "cpu",
    .load = cpu_load,
    .seq_alloc = cpu_seq_alloc,
    .seq_free = cpu_seq_free,
    .forward = cpu_forward,
    .free = cpu_free,
    .kv_bytes = cpu_kv_bytes,
};
