/*
 * gguf_write.c - the GGUF writer (see gguf_write.h): metadata and tensor infos are
 * serialized into one growing buffer, tensor data kept per tensor, all laid out at write.
 */
#include "gguf_write.h"
#include "engine/dtype.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { T_U8, T_I8, T_U16, T_I16, T_U32, T_I32, T_F32, T_BOOL, T_STR, T_ARR, T_U64, T_I64, T_F64 };

typedef struct {
    uint8_t *p;
    size_t n, cap;
} buf_t;

typedef struct {
    char *key;
    buf_t val; /* type (u32) + value, as written */
} kv_t;

typedef struct {
    char *name;
    uint32_t type, n_dims;
    int64_t ne[4];
    uint8_t *data;
    size_t nbytes;
} tensor_t;

struct gguf_writer {
    uint32_t version, alignment;
    kv_t *kv;
    size_t n_kv;
    tensor_t *t;
    size_t n_t;
};

static int put(buf_t *b, const void *p, size_t n)
{
    if (b->n + n > b->cap) {
        size_t nc = b->cap ? b->cap : 64;
        while (nc < b->n + n)
            nc *= 2;
        uint8_t *q = realloc(b->p, nc);
        if (!q) return -ENOMEM;
        b->p = q;
        b->cap = nc;
    }
    if (n) memcpy(b->p + b->n, p, n);
    b->n += n;
    return 0;
}

static int put_u32(buf_t *b, uint32_t v)
{
    return put(b, &v, 4);
}

static int put_u64(buf_t *b, uint64_t v)
{
    return put(b, &v, 8);
}

static int put_str(buf_t *b, const char *s, size_t n)
{
    int rc = put_u64(b, n);
    return rc ? rc : put(b, s, n);
}

int gguf_writer_new(gguf_writer_t **out, uint32_t version, uint32_t alignment)
{
    if ((version != 2 && version != 3) || !alignment || (alignment & (alignment - 1)))
        return -EINVAL;
    gguf_writer_t *w = calloc(1, sizeof *w);
    if (!w) return -ENOMEM;
    w->version = version;
    w->alignment = alignment;
    *out = w;
    if (alignment != 32) return gguf_writer_set_u32(w, "general.alignment", alignment);
    return 0;
}

void gguf_writer_free(gguf_writer_t *w)
{
    if (!w) return;
    for (size_t i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].val.p);
    }
    for (size_t i = 0; i < w->n_t; i++) {
        free(w->t[i].name);
        free(w->t[i].data);
    }
    free(w->kv);
    free(w->t);
    free(w);
}

/* The entry for key, emptied (a new one at the end when absent). */
static buf_t *slot(gguf_writer_t *w, const char *key)
{
    for (size_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->kv[i].key, key)) {
            w->kv[i].val.n = 0;
            return &w->kv[i].val;
        }
    kv_t *k = realloc(w->kv, (w->n_kv + 1) * sizeof *k);
    if (!k) return NULL;
    w->kv = k;
    kv_t *e = &w->kv[w->n_kv];
    memset(e, 0, sizeof *e);
    e->key = strdup(key);
    if (!e->key) return NULL;
    w->n_kv++;
    return &e->val;
}

static int set_scalar(gguf_writer_t *w, const char *key, uint32_t type, const void *v, size_t n)
{
    buf_t *b = slot(w, key);
    if (!b) return -ENOMEM;
    int rc = put_u32(b, type);
    return rc ? rc : put(b, v, n);
}

int gguf_writer_set_str(gguf_writer_t *w, const char *key, const char *v)
{
    buf_t *b = slot(w, key);
    if (!b) return -ENOMEM;
    int rc = put_u32(b, T_STR);
    return rc ? rc : put_str(b, v, strlen(v));
}

#define SCALAR(fn, ctype, tag)                                                                     \
    int fn(gguf_writer_t *w, const char *key, ctype v)                                             \
    {                                                                                              \
        return set_scalar(w, key, tag, &v, sizeof v);                                              \
    }
SCALAR(gguf_writer_set_u8, uint8_t, T_U8)
SCALAR(gguf_writer_set_i8, int8_t, T_I8)
SCALAR(gguf_writer_set_u16, uint16_t, T_U16)
SCALAR(gguf_writer_set_i16, int16_t, T_I16)
SCALAR(gguf_writer_set_u32, uint32_t, T_U32)
SCALAR(gguf_writer_set_i32, int32_t, T_I32)
SCALAR(gguf_writer_set_u64, uint64_t, T_U64)
SCALAR(gguf_writer_set_i64, int64_t, T_I64)
SCALAR(gguf_writer_set_f32, float, T_F32)
SCALAR(gguf_writer_set_f64, double, T_F64)

int gguf_writer_set_bool(gguf_writer_t *w, const char *key, bool v)
{
    uint8_t b = v ? 1 : 0;
    return set_scalar(w, key, T_BOOL, &b, 1);
}

int gguf_writer_set_arr_strn(gguf_writer_t *w, const char *key, const char *const *v,
                             const size_t *lens, size_t n)
{
    buf_t *b = slot(w, key);
    if (!b) return -ENOMEM;
    int rc = put_u32(b, T_ARR);
    if (!rc) rc = put_u32(b, T_STR);
    if (!rc) rc = put_u64(b, n);
    for (size_t i = 0; i < n && !rc; i++)
        rc = put_str(b, v[i], lens ? lens[i] : strlen(v[i]));
    return rc;
}

int gguf_writer_set_arr_str(gguf_writer_t *w, const char *key, const char *const *v, size_t n)
{
    return gguf_writer_set_arr_strn(w, key, v, NULL, n);
}

static size_t elem_size(uint32_t t)
{
    switch (t) {
    case T_U8:
    case T_I8:
    case T_BOOL:
        return 1;
    case T_U16:
    case T_I16:
        return 2;
    case T_U32:
    case T_I32:
    case T_F32:
        return 4;
    case T_U64:
    case T_I64:
    case T_F64:
        return 8;
    default:
        return 0;
    }
}

int gguf_writer_set_arr(gguf_writer_t *w, const char *key, uint32_t type, const void *data,
                        size_t n)
{
    size_t es = elem_size(type);
    if (!es) return -EINVAL;
    buf_t *b = slot(w, key);
    if (!b) return -ENOMEM;
    int rc = put_u32(b, T_ARR);
    if (!rc) rc = put_u32(b, type);
    if (!rc) rc = put_u64(b, n);
    if (!rc) rc = put(b, data, n * es);
    return rc;
}

int gguf_writer_set_arr_f32(gguf_writer_t *w, const char *key, const float *v, size_t n)
{
    return gguf_writer_set_arr(w, key, T_F32, v, n);
}

int gguf_writer_set_arr_i32(gguf_writer_t *w, const char *key, const int32_t *v, size_t n)
{
    return gguf_writer_set_arr(w, key, T_I32, v, n);
}

int gguf_writer_set_arr_u32(gguf_writer_t *w, const char *key, const uint32_t *v, size_t n)
{
    return gguf_writer_set_arr(w, key, T_U32, v, n);
}

int gguf_writer_add_tensor(gguf_writer_t *w, const char *name, uint32_t type, uint32_t n_dims,
                           const int64_t *ne, const void *data, size_t nbytes)
{
    if (n_dims < 1 || n_dims > 4) return -EINVAL;
    uint64_t rows = 1;
    for (uint32_t d = 1; d < n_dims; d++)
        rows *= (uint64_t)ne[d];
    if (dtype_row_bytes(type, (uint64_t)ne[0]) * rows != nbytes) return -EINVAL;
    tensor_t *t = realloc(w->t, (w->n_t + 1) * sizeof *t);
    if (!t) return -ENOMEM;
    w->t = t;
    tensor_t *e = &w->t[w->n_t];
    memset(e, 0, sizeof *e);
    e->name = strdup(name);
    e->data = malloc(nbytes ? nbytes : 1);
    if (!e->name || !e->data) {
        free(e->name);
        free(e->data);
        return -ENOMEM;
    }
    memcpy(e->data, data, nbytes);
    e->type = type;
    e->n_dims = n_dims;
    for (uint32_t d = 0; d < 4; d++)
        e->ne[d] = d < n_dims ? ne[d] : 1;
    e->nbytes = nbytes;
    w->n_t++;
    return 0;
}

int gguf_writer_remove(gguf_writer_t *w, const char *name)
{
    for (size_t i = 0; i < w->n_kv; i++)
        if (!strcmp(w->kv[i].key, name)) {
            free(w->kv[i].key);
            free(w->kv[i].val.p);
            memmove(&w->kv[i], &w->kv[i + 1], (w->n_kv - i - 1) * sizeof *w->kv);
            w->n_kv--;
            return 0;
        }
    for (size_t i = 0; i < w->n_t; i++)
        if (!strcmp(w->t[i].name, name)) {
            free(w->t[i].name);
            free(w->t[i].data);
            memmove(&w->t[i], &w->t[i + 1], (w->n_t - i - 1) * sizeof *w->t);
            w->n_t--;
            return 0;
        }
    return -ENOENT;
}

static size_t pad(size_t n, size_t a)
{
    return (n + a - 1) / a * a;
}

/* zero bytes up to the next multiple of a */
static int put_pad(buf_t *b, size_t a)
{
    static const uint8_t zeros[64];
    int rc = 0;
    for (size_t k = pad(b->n, a) - b->n; k && !rc;) {
        size_t c = k < sizeof zeros ? k : sizeof zeros;
        rc = put(b, zeros, c);
        k -= c;
    }
    return rc;
}

int gguf_writer_bytes(const gguf_writer_t *w, uint8_t **out, size_t *size)
{
    buf_t b = {0};
    int rc = put(&b, "GGUF", 4);
    if (!rc) rc = put_u32(&b, w->version);
    if (!rc) rc = put_u64(&b, w->n_t);
    if (!rc) rc = put_u64(&b, w->n_kv);
    for (size_t i = 0; i < w->n_kv && !rc; i++) {
        rc = put_str(&b, w->kv[i].key, strlen(w->kv[i].key));
        if (!rc) rc = put(&b, w->kv[i].val.p, w->kv[i].val.n);
    }
    size_t off = 0;
    for (size_t i = 0; i < w->n_t && !rc; i++) {
        const tensor_t *t = &w->t[i];
        rc = put_str(&b, t->name, strlen(t->name));
        if (!rc) rc = put_u32(&b, t->n_dims);
        for (uint32_t d = 0; d < t->n_dims && !rc; d++)
            rc = put_u64(&b, (uint64_t)t->ne[d]);
        if (!rc) rc = put_u32(&b, t->type);
        if (!rc) rc = put_u64(&b, off);
        off = pad(off + t->nbytes, w->alignment);
    }
    if (!rc && w->n_t) rc = put_pad(&b, w->alignment);
    for (size_t i = 0; i < w->n_t && !rc; i++) {
        rc = put(&b, w->t[i].data, w->t[i].nbytes);
        if (!rc && i + 1 < w->n_t) rc = put_pad(&b, w->alignment);
    }
    if (rc) {
        free(b.p);
        return rc;
    }
    *out = b.p;
    *size = b.n;
    return 0;
}

int gguf_writer_write(const gguf_writer_t *w, const char *path, char *err, size_t errlen)
{
    uint8_t *p;
    size_t n;
    int rc = gguf_writer_bytes(w, &p, &n);
    if (rc) {
        snprintf(err, errlen, "out of memory building %s", path);
        return rc;
    }
    FILE *f = fopen(path, "wb");
    if (!f) {
        rc = -errno;
        snprintf(err, errlen, "cannot write %s: %s", path, strerror(errno));
        free(p);
        return rc;
    }
    size_t wr = fwrite(p, 1, n, f);
    free(p);
    if (fclose(f) != 0 || wr != n) {
        snprintf(err, errlen, "write error on %s", path);
        return -EIO;
    }
    return 0;
}
