/*
 * cpu_backend.c - the CPU implementation of the backend table: a batched llama2
 * forward pass over n rows (one row = one token of one sequence at one position).
 * Every weight matrix is streamed once per step for all rows (matmul_rows), the
 * threads split the output features, and each row's arithmetic is independent of
 * the other rows: batch invariance by construction.
 */
#include "internal.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    float *key;   /* (layer, cap, kv_dim) */
    float *value; /* (layer, cap, kv_dim) */
    int cap;      /* positions allocated; 0 = slot unused */
} kv_t;

typedef struct {
    const model_t *m;
    pool_t *pool;
    int max_rows, max_slots;
    int kv_dim, head_size;
    float *x;    /* (max_rows, dim) residual stream */
    float *xb;   /* (max_rows, dim) normed input / attention output */
    float *xb2;  /* (max_rows, dim) */
    float *hb;   /* (max_rows, hidden) */
    float *hb2;  /* (max_rows, hidden) */
    float *q;    /* (max_rows, dim) */
    float *k;    /* (max_rows, kv_dim) */
    float *v;    /* (max_rows, kv_dim) */
    float *att;  /* (max_rows, n_heads, seq_len) */
    float *lx;   /* (max_rows, dim) final-normed rows that need logits */
    float *freq; /* (head_size / 2) RoPE inverse frequencies */
    kv_t *kv;    /* (max_slots) */
} cpu_t;

static void cpu_free(void *ctx)
{
    cpu_t *s = ctx;
    if (!s) return;
    for (int i = 0; s->kv && i < s->max_slots; i++) {
        free(s->kv[i].key);
        free(s->kv[i].value);
    }
    free(s->kv);
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
    free(s->freq);
    free(s);
}

static float *falloc(size_t n)
{
    return malloc((n ? n : 1) * sizeof(float));
}

static int cpu_load(void **ctx, const model_t *m, pool_t *pool, int max_rows, int max_slots,
                    char *err, size_t errlen)
{
    const model_config_t *c = &m->c;
    cpu_t *s = calloc(1, sizeof(*s));
    if (!s) return errorf(err, errlen, -ENOMEM, "out of memory");
    s->m = m;
    s->pool = pool;
    s->max_rows = max_rows;
    s->max_slots = max_slots;
    s->head_size = c->dim / c->n_heads;
    s->kv_dim = c->dim * c->n_kv_heads / c->n_heads;
    size_t R = (size_t)max_rows;
    s->x = falloc(R * c->dim);
    s->xb = falloc(R * c->dim);
    s->xb2 = falloc(R * c->dim);
    s->hb = falloc(R * c->hidden_dim);
    s->hb2 = falloc(R * c->hidden_dim);
    s->q = falloc(R * c->dim);
    s->k = falloc(R * s->kv_dim);
    s->v = falloc(R * s->kv_dim);
    s->att = falloc(R * c->n_heads * (size_t)c->seq_len);
    s->lx = falloc(R * c->dim);
    s->freq = falloc((size_t)s->head_size / 2);
    s->kv = calloc((size_t)max_slots, sizeof(kv_t));
    if (!s->x || !s->xb || !s->xb2 || !s->hb || !s->hb2 || !s->q || !s->k || !s->v || !s->att ||
        !s->lx || !s->freq || !s->kv) {
        cpu_free(s);
        return errorf(err, errlen, -ENOMEM, "out of memory for %d batch rows", max_rows);
    }
    for (int i = 0; i < s->head_size / 2; i++)
        s->freq[i] = 1.0f / powf(10000.0f, (float)(2 * i) / (float)s->head_size);
    *ctx = s;
    return 0;
}

static int cpu_seq_alloc(void *ctx, int slot, int cap)
{
    cpu_t *s = ctx;
    if (slot < 0 || slot >= s->max_slots || cap <= 0 || cap > s->m->c.seq_len) return -EINVAL;
    kv_t *kv = &s->kv[slot];
    free(kv->key);
    free(kv->value);
    size_t n = (size_t)s->m->c.n_layers * (size_t)cap * (size_t)s->kv_dim;
    kv->key = falloc(n);
    kv->value = falloc(n);
    kv->cap = cap;
    if (!kv->key || !kv->value) {
        free(kv->key);
        free(kv->value);
        memset(kv, 0, sizeof(*kv));
        return -ENOMEM;
    }
    return 0;
}

static void cpu_seq_free(void *ctx, int slot)
{
    cpu_t *s = ctx;
    if (slot < 0 || slot >= s->max_slots) return;
    free(s->kv[slot].key);
    free(s->kv[slot].value);
    memset(&s->kv[slot], 0, sizeof(kv_t));
}

/* ---- parallel jobs ------------------------------------------------------------ */

typedef struct {
    float *out; /* (nrows, ostride) */
    int ostride;
    const float *w; /* (nout, n) */
    int nout;
} mm_seg_t;

typedef struct {
    const float *x; /* (nrows, n) */
    int nrows, n;
    mm_seg_t seg[3];
    int nseg;
} mm_job_t;

/* split [0, total) into nth contiguous chunks, aligned to 8 outputs */
static void chunk(int total, int tid, int nth, int *a, int *b)
{
    int units = (total + 7) / 8;
    int per = units / nth, extra = units % nth;
    int ua = tid * per + (tid < extra ? tid : extra);
    int ub = ua + per + (tid < extra ? 1 : 0);
    *a = ua * 8 < total ? ua * 8 : total;
    *b = ub * 8 < total ? ub * 8 : total;
}

static void mm_run(void *arg, int tid, int nth)
{
    mm_job_t *j = arg;
    int total = 0;
    for (int s = 0; s < j->nseg; s++)
        total += j->seg[s].nout;
    int a, b;
    chunk(total, tid, nth, &a, &b);
    int base = 0;
    for (int s = 0; s < j->nseg; s++) {
        const mm_seg_t *g = &j->seg[s];
        int lo = a > base ? a - base : 0;
        int hi = b - base < g->nout ? b - base : g->nout;
        if (lo < hi) matmul_rows(g->out, g->ostride, j->x, j->nrows, g->w, j->n, lo, hi);
        base += g->nout;
    }
}

static void mm(cpu_t *s, mm_job_t *j)
{
    pool_run(s->pool, mm_run, j);
}

typedef struct {
    cpu_t *s;
    const fwd_row_t *rows;
    int n, layer;
} att_job_t;

static void att_run(void *arg, int tid, int nth)
{
    att_job_t *j = arg;
    cpu_t *s = j->s;
    const model_config_t *c = &s->m->c;
    int hs = s->head_size, kvd = s->kv_dim, kv_mul = c->n_heads / c->n_kv_heads;
    int total = j->n * c->n_heads;
    int per = total / nth, extra = total % nth;
    int a = tid * per + (tid < extra ? tid : extra);
    int b = a + per + (tid < extra ? 1 : 0);
    float scale = 1.0f / sqrtf((float)hs);
    for (int t = a; t < b; t++) {
        int r = t / c->n_heads, h = t % c->n_heads;
        const fwd_row_t *row = &j->rows[r];
        const kv_t *kv = &s->kv[row->slot];
        size_t loff = (size_t)j->layer * (size_t)kv->cap * (size_t)kvd;
        const float *q = s->q + (size_t)r * c->dim + (size_t)h * hs;
        float *att = s->att + ((size_t)r * c->n_heads + h) * (size_t)c->seq_len;
        int kvh = h / kv_mul;
        for (int p = 0; p <= row->pos; p++) {
            const float *k = kv->key + loff + (size_t)p * kvd + (size_t)kvh * hs;
            att[p] = dot_fixed(q, k, hs) * scale;
        }
        float maxv = att[0];
        for (int p = 1; p <= row->pos; p++)
            if (att[p] > maxv) maxv = att[p];
        float sum = 0.0f;
        for (int p = 0; p <= row->pos; p++) {
            att[p] = expf(att[p] - maxv);
            sum += att[p];
        }
        float inv = 1.0f / sum;
        float *out = s->xb + (size_t)r * c->dim + (size_t)h * hs;
        memset(out, 0, (size_t)hs * sizeof(float));
        for (int p = 0; p <= row->pos; p++) {
            const float *v = kv->value + loff + (size_t)p * kvd + (size_t)kvh * hs;
            float a_p = att[p] * inv;
            for (int i = 0; i < hs; i++)
                out[i] += a_p * v[i];
        }
    }
}

/* ---- serial per-row kernels (output first) ------------------------------------ */

static void rmsnorm(float *o, const float *x, const float *w, int n)
{
    float ss = dot_fixed(x, x, n);
    ss = 1.0f / sqrtf(ss / (float)n + 1e-5f);
    for (int i = 0; i < n; i++)
        o[i] = w[i] * (ss * x[i]);
}

static void rope(float *vec, int n, int hs, const float *freq, int pos)
{
    for (int i = 0; i < n; i += 2) {
        float val = (float)pos * freq[(i % hs) / 2];
        float fcr = cosf(val), fci = sinf(val);
        float v0 = vec[i], v1 = vec[i + 1];
        vec[i] = v0 * fcr - v1 * fci;
        vec[i + 1] = v0 * fci + v1 * fcr;
    }
}

static int cpu_forward(void *ctx, const fwd_row_t *rows, int n, float *logits)
{
    cpu_t *s = ctx;
    const model_t *m = s->m;
    const model_config_t *c = &m->c;
    const model_weights_t *w = &m->w;
    int dim = c->dim, hid = c->hidden_dim, kvd = s->kv_dim, hs = s->head_size;
    if (n <= 0 || n > s->max_rows) return -EINVAL;
    for (int r = 0; r < n; r++) {
        const fwd_row_t *row = &rows[r];
        if (row->slot < 0 || row->slot >= s->max_slots || row->pos < 0 ||
            row->pos >= s->kv[row->slot].cap || row->token < 0 || row->token >= c->vocab_size)
            return -EINVAL;
        memcpy(s->x + (size_t)r * dim, w->token_embedding + (size_t)row->token * dim,
               (size_t)dim * sizeof(float));
    }
    for (int l = 0; l < c->n_layers; l++) {
        size_t ld = (size_t)l * dim;
        for (int r = 0; r < n; r++)
            rmsnorm(s->xb + (size_t)r * dim, s->x + (size_t)r * dim, w->rms_att + ld, dim);
        mm_job_t j = {.x = s->xb, .nrows = n, .n = dim, .nseg = 3};
        j.seg[0] = (mm_seg_t){s->q, dim, w->wq + ld * dim, dim};
        j.seg[1] = (mm_seg_t){s->k, kvd, w->wk + (size_t)l * kvd * dim, kvd};
        j.seg[2] = (mm_seg_t){s->v, kvd, w->wv + (size_t)l * kvd * dim, kvd};
        mm(s, &j);
        for (int r = 0; r < n; r++) {
            const fwd_row_t *row = &rows[r];
            kv_t *kv = &s->kv[row->slot];
            rope(s->q + (size_t)r * dim, dim, hs, s->freq, row->pos);
            rope(s->k + (size_t)r * kvd, kvd, hs, s->freq, row->pos);
            size_t off = ((size_t)l * kv->cap + (size_t)row->pos) * kvd;
            memcpy(kv->key + off, s->k + (size_t)r * kvd, (size_t)kvd * sizeof(float));
            memcpy(kv->value + off, s->v + (size_t)r * kvd, (size_t)kvd * sizeof(float));
        }
        att_job_t aj = {s, rows, n, l};
        pool_run(s->pool, att_run, &aj);
        j = (mm_job_t){.x = s->xb, .nrows = n, .n = dim, .nseg = 1};
        j.seg[0] = (mm_seg_t){s->xb2, dim, w->wo + ld * dim, dim};
        mm(s, &j);
        for (size_t i = 0; i < (size_t)n * dim; i++)
            s->x[i] += s->xb2[i];
        for (int r = 0; r < n; r++)
            rmsnorm(s->xb + (size_t)r * dim, s->x + (size_t)r * dim, w->rms_ffn + ld, dim);
        j = (mm_job_t){.x = s->xb, .nrows = n, .n = dim, .nseg = 2};
        j.seg[0] = (mm_seg_t){s->hb, hid, w->w1 + (size_t)l * hid * dim, hid};
        j.seg[1] = (mm_seg_t){s->hb2, hid, w->w3 + (size_t)l * hid * dim, hid};
        mm(s, &j);
        for (size_t i = 0; i < (size_t)n * hid; i++) {
            float v = s->hb[i];
            s->hb[i] = v * (1.0f / (1.0f + expf(-v))) * s->hb2[i];
        }
        j = (mm_job_t){.x = s->hb, .nrows = n, .n = hid, .nseg = 1};
        j.seg[0] = (mm_seg_t){s->xb, dim, w->w2 + (size_t)l * dim * hid, dim};
        mm(s, &j);
        for (size_t i = 0; i < (size_t)n * dim; i++)
            s->x[i] += s->xb[i];
    }
    int nl = 0;
    for (int r = 0; r < n; r++) {
        int lr = rows[r].logits_row;
        if (lr < 0) continue;
        if (lr >= s->max_rows) return -EINVAL;
        rmsnorm(s->lx + (size_t)lr * dim, s->x + (size_t)r * dim, w->rms_final, dim);
        if (lr + 1 > nl) nl = lr + 1;
    }
    if (nl > 0) {
        mm_job_t j = {.x = s->lx, .nrows = nl, .n = dim, .nseg = 1};
        j.seg[0] = (mm_seg_t){logits, c->vocab_size, w->wcls, c->vocab_size};
        mm(s, &j);
    }
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
};
