/*
 * gguf.c - the GGUF reader (see gguf.h). One pass over the header with a cursor that
 * checks every read against the end of the buffer; every count is checked against the
 * bytes that remain before anything is allocated for it; names are hashed so
 * uniqueness checks and lookups stay linear even for hostile counts.
 */
#include "gguf.h"
#include "backend.h"
#include "dtype.h"
#include "wmap.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_DIMS 4
#define GGUF_MAX_SHARDS 999

typedef struct {
    const uint8_t *base; /* the whole file */
    size_t size;
    wmap_t w;          /* the file, when opened here (w.base non-NULL) */
    uint64_t data_off; /* start of the data section */
    uint32_t version, alignment;
} shard_t;

/* open-addressing set of names -> index */
typedef struct {
    int64_t *slot; /* (cap) index + 1, 0 = empty */
    size_t cap;    /* power of two */
} nameset_t;

/* Arrays grow as entries are read (never sized from a count in the file), so memory
 * follows the bytes actually parsed. */
struct gguf {
    char *name;
    shard_t *shards;
    uint32_t nshards;
    gguf_kv_t *kv; /* (n_kv) */
    size_t n_kv, cap_kv;
    nameset_t kv_set;
    gguf_tensor_t *tensors; /* (n_tensors) */
    size_t n_tensors, cap_t;
    nameset_t t_set;
    char **names; /* key and tensor name copies */
    size_t n_names, cap_names;
    uint64_t **offs; /* str_off tables of string arrays */
    size_t n_offs, cap_offs;
};

/* Make room for one more element in *p (n used of *cap). 0 or -ENOMEM. */
static int grow(void *pp, size_t *cap, size_t n, size_t elem)
{
    void **p = pp;
    if (n < *cap) return 0;
    size_t nc = *cap ? *cap * 2 : 16;
    void *q = realloc(*p, nc * elem);
    if (!q) return -ENOMEM;
    *p = q;
    *cap = nc;
    return 0;
}

/* ---- small helpers ---------------------------------------------------------------------- */

static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

/* Insert name -> idx; -EEXIST when present, -ENOMEM. names: the array the indices refer to */
static int set_add(nameset_t *s, const char *name, int64_t idx,
                   const char *(*name_of)(void *, int64_t), void *arg)
{
    if (!s->slot) return -ENOMEM;
    size_t mask = s->cap - 1;
    for (size_t i = hash(name) & mask;; i = (i + 1) & mask) {
        if (!s->slot[i]) {
            s->slot[i] = idx + 1;
            return 0;
        }
        if (!strcmp(name_of(arg, s->slot[i] - 1), name)) return -EEXIST;
    }
}

static int64_t set_find(const nameset_t *s, const char *name,
                        const char *(*name_of)(void *, int64_t), void *arg)
{
    if (!s->slot) return -1;
    size_t mask = s->cap - 1;
    for (size_t i = hash(name) & mask; s->slot[i]; i = (i + 1) & mask)
        if (!strcmp(name_of(arg, s->slot[i] - 1), name)) return s->slot[i] - 1;
    return -1;
}

/* Room in s for `want` names; a larger table is refilled with names 0..have-1 (name_of
 * reads them). */
static int set_reserve(nameset_t *s, size_t have, size_t want,
                       const char *(*name_of)(void *, int64_t), void *arg)
{
    size_t cap = 16;
    while (cap < 2 * want + 2)
        cap *= 2;
    if (s->slot && cap <= s->cap) return 0;
    nameset_t t = {calloc(cap, sizeof(int64_t)), cap};
    if (!t.slot) return -ENOMEM;
    for (size_t i = 0; i < have; i++)
        set_add(&t, name_of(arg, (int64_t)i), (int64_t)i, name_of, arg);
    free(s->slot);
    *s = t;
    return 0;
}

static const char *kv_name(void *arg, int64_t i)
{
    return ((gguf_t *)arg)->kv[i].key;
}

static const char *t_name(void *arg, int64_t i)
{
    return ((gguf_t *)arg)->tensors[i].name;
}

static char *keep(gguf_t *g, const char *p, size_t n)
{
    if (grow(&g->names, &g->cap_names, g->n_names, sizeof(char *)) < 0) return NULL;
    char *s = malloc(n + 1);
    if (!s) return NULL;
    memcpy(s, p, n);
    s[n] = 0;
    g->names[g->n_names++] = s;
    return s;
}

size_t gguf_type_size(gguf_type_t t)
{
    switch (t) {
    case GGUF_UINT8:
    case GGUF_INT8:
    case GGUF_BOOL:
        return 1;
    case GGUF_UINT16:
    case GGUF_INT16:
        return 2;
    case GGUF_UINT32:
    case GGUF_INT32:
    case GGUF_FLOAT32:
        return 4;
    case GGUF_UINT64:
    case GGUF_INT64:
    case GGUF_FLOAT64:
        return 8;
    default:
        return 0;
    }
}

const char *gguf_type_name(uint32_t t)
{
    static const char *names[GGUF_TYPE_COUNT] = {"UINT8",  "INT8",    "UINT16", "INT16",  "UINT32",
                                                 "INT32",  "FLOAT32", "BOOL",   "STRING", "ARRAY",
                                                 "UINT64", "INT64",   "FLOAT64"};
    return t < GGUF_TYPE_COUNT ? names[t] : "unknown";
}

bool gguf_is_gguf(const void *buf, size_t size)
{
    return size >= 4 && !memcmp(buf, "GGUF", 4);
}

bool gguf_str_eq(gguf_str_t s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && !memcmp(s.ptr, lit, n);
}

/* ---- the cursor --------------------------------------------------------------------------- */

typedef struct {
    const uint8_t *base;
    size_t size, pos;
    const char *name; /* file, for messages */
    char *err;
    size_t errlen;
} rd_t;

static int need(rd_t *r, uint64_t n, const char *what)
{
    if (n > r->size - r->pos)
        return errorf(r->err, r->errlen, -EINVAL,
                      "%s: truncated: %s needs %llu bytes at offset %zu but the file has %zu",
                      r->name, what, (unsigned long long)n, r->pos, r->size);
    return 0;
}

static int rd_u32(rd_t *r, uint32_t *v, const char *what)
{
    int rc = need(r, 4, what);
    if (rc < 0) return rc;
    memcpy(v, r->base + r->pos, 4);
    r->pos += 4;
    return 0;
}

static int rd_u64(rd_t *r, uint64_t *v, const char *what)
{
    int rc = need(r, 8, what);
    if (rc < 0) return rc;
    memcpy(v, r->base + r->pos, 8);
    r->pos += 8;
    return 0;
}

static int rd_str(rd_t *r, gguf_str_t *s, const char *what)
{
    uint64_t n;
    int rc = rd_u64(r, &n, what);
    if (rc < 0) return rc;
    if (n > r->size - r->pos)
        return errorf(r->err, r->errlen, -EINVAL,
                      "%s: %s has length %llu but only %zu bytes remain in the file", r->name, what,
                      (unsigned long long)n, r->size - r->pos);
    s->ptr = (const char *)r->base + r->pos;
    s->len = n;
    r->pos += (size_t)n;
    return 0;
}

/* ---- metadata ----------------------------------------------------------------------------- */

static int read_value(gguf_t *g, rd_t *r, gguf_kv_t *kv, const char *key)
{
    char what[160];
    size_t sz = gguf_type_size(kv->type);
    int rc;
    if (kv->type == GGUF_STRING) {
        snprintf(what, sizeof what, "the string value of key '%.80s'", key);
        return rd_str(r, &kv->v.s, what);
    }
    if (kv->type == GGUF_ARRAY) {
        uint32_t et;
        uint64_t n;
        snprintf(what, sizeof what, "the array header of key '%.80s'", key);
        if ((rc = rd_u32(r, &et, what)) < 0 || (rc = rd_u64(r, &n, what)) < 0) return rc;
        if (et >= GGUF_TYPE_COUNT)
            return errorf(r->err, r->errlen, -EINVAL, "%s: key '%s': array of unknown type %u",
                          r->name, key, et);
        if (et == GGUF_ARRAY)
            return errorf(r->err, r->errlen, -EINVAL,
                          "%s: key '%s': arrays of arrays are not supported", r->name, key);
        gguf_arr_t *a = &kv->v.arr;
        a->type = (gguf_type_t)et;
        a->n = n;
        a->data = r->base + r->pos;
        a->str_off = NULL;
        size_t remain = r->size - r->pos;
        if (et != GGUF_STRING) {
            size_t es = gguf_type_size(a->type);
            if (n > remain / es)
                return errorf(r->err, r->errlen, -EINVAL,
                              "%s: key '%s': array of %llu %s elements needs more than the %zu "
                              "bytes that remain in the file",
                              r->name, key, (unsigned long long)n, gguf_type_name(et), remain);
            if (et == GGUF_BOOL)
                for (uint64_t i = 0; i < n; i++)
                    if (r->base[r->pos + i] > 1)
                        return errorf(
                            r->err, r->errlen, -EINVAL,
                            "%s: key '%s': element %llu of a BOOL array is %u, not 0 or 1", r->name,
                            key, (unsigned long long)i, r->base[r->pos + i]);
            r->pos += (size_t)(n * es);
            return 0;
        }
        /* every string takes at least its 8-byte length: bound n before allocating */
        if (n > remain / 8)
            return errorf(r->err, r->errlen, -EINVAL,
                          "%s: key '%s': array of %llu strings cannot fit in the %zu bytes that "
                          "remain in the file",
                          r->name, key, (unsigned long long)n, remain);
        uint64_t *off = NULL;
        if (grow(&g->offs, &g->cap_offs, g->n_offs, sizeof(uint64_t *)) == 0)
            off = malloc((size_t)(n + 1) * sizeof(uint64_t));
        if (!off) return errorf(r->err, r->errlen, -ENOMEM, "%s: out of memory", r->name);
        g->offs[g->n_offs++] = off;
        size_t start = r->pos;
        for (uint64_t i = 0; i < n; i++) {
            gguf_str_t s;
            off[i] = r->pos - start;
            snprintf(what, sizeof what, "string %llu of array key '%.80s'", (unsigned long long)i,
                     key);
            if ((rc = rd_str(r, &s, what)) < 0) return rc;
        }
        off[n] = r->pos - start;
        a->str_off = off;
        return 0;
    }
    snprintf(what, sizeof what, "the %s value of key '%.80s'", gguf_type_name(kv->type), key);
    if ((rc = need(r, sz, what)) < 0) return rc;
    const uint8_t *p = r->base + r->pos;
    r->pos += sz;
    switch (kv->type) {
    case GGUF_UINT8:
        kv->v.u = p[0];
        break;
    case GGUF_INT8:
        kv->v.i = (int8_t)p[0];
        break;
    case GGUF_UINT16: {
        uint16_t x;
        memcpy(&x, p, 2);
        kv->v.u = x;
        break;
    }
    case GGUF_INT16: {
        int16_t x;
        memcpy(&x, p, 2);
        kv->v.i = x;
        break;
    }
    case GGUF_UINT32: {
        uint32_t x;
        memcpy(&x, p, 4);
        kv->v.u = x;
        break;
    }
    case GGUF_INT32: {
        int32_t x;
        memcpy(&x, p, 4);
        kv->v.i = x;
        break;
    }
    case GGUF_UINT64:
        memcpy(&kv->v.u, p, 8);
        break;
    case GGUF_INT64:
        memcpy(&kv->v.i, p, 8);
        break;
    case GGUF_FLOAT32: {
        float x;
        memcpy(&x, p, 4);
        kv->v.f = x;
        break;
    }
    case GGUF_FLOAT64:
        memcpy(&kv->v.f, p, 8);
        break;
    case GGUF_BOOL:
        if (p[0] > 1)
            return errorf(r->err, r->errlen, -EINVAL, "%s: key '%s': BOOL value %u is not 0 or 1",
                          r->name, key, p[0]);
        kv->v.b = p[0];
        break;
    default:
        break;
    }
    return 0;
}

/* Parse one shard into g (metadata only from shard 0); tensors appended. */
static int parse_shard(gguf_t *g, uint32_t si, const char *name, char *err, size_t errlen)
{
    shard_t *sh = &g->shards[si];
    rd_t r = {sh->base, sh->size, 0, name, err, errlen};
    int rc;
    if (sh->size < 4 || memcmp(sh->base, "GGUF", 4))
        return errorf(err, errlen, -EINVAL, "%s: not a GGUF file (no 'GGUF' magic)", name);
    r.pos = 4;
    uint32_t version;
    if ((rc = rd_u32(&r, &version, "the version")) < 0) return rc;
    if (version == 1)
        return errorf(err, errlen, -EINVAL,
                      "%s: GGUF version 1 is too old: inferd reads versions 2 and 3 (convert it "
                      "again with a current llama.cpp)",
                      name);
    if (version != 2 && version != 3) {
        if (version && !(version & 0xffff))
            return errorf(err, errlen, -EINVAL,
                          "%s: a big-endian GGUF file (version field 0x%08x): inferd reads "
                          "little-endian files",
                          name, version);
        return errorf(err, errlen, -EINVAL,
                      "%s: GGUF version %u is not supported: inferd reads versions 2 and 3", name,
                      version);
    }
    sh->version = version;
    uint64_t n_tensors, n_kv;
    if ((rc = rd_u64(&r, &n_tensors, "the tensor count")) < 0 ||
        (rc = rd_u64(&r, &n_kv, "the metadata count")) < 0)
        return rc;
    /* a tensor info takes at least 8 + 4 + 8 + 4 + 8 bytes, a metadata entry 8 + 4 + 1 */
    size_t remain = sh->size - r.pos;
    if (n_tensors > remain / 32)
        return errorf(err, errlen, -EINVAL,
                      "%s: tensor count %llu cannot fit in the %zu bytes after the header", name,
                      (unsigned long long)n_tensors, remain);
    if (n_kv > remain / 13)
        return errorf(err, errlen, -EINVAL,
                      "%s: metadata count %llu cannot fit in the %zu bytes after the header", name,
                      (unsigned long long)n_kv, remain);

    /* metadata: kept for shard 0; other shards are read for their alignment only */
    size_t base_kv = g->n_kv;
    nameset_t local = {0}, *set = si == 0 ? &g->kv_set : &local;
    uint32_t alignment = GGUF_DEFAULT_ALIGNMENT;
    gguf_t view = *g; /* lookups into this shard's own entries */
    for (uint64_t i = 0; i < n_kv; i++) {
        if (grow(&g->kv, &g->cap_kv, g->n_kv, sizeof(gguf_kv_t)) < 0) {
            rc = errorf(err, errlen, -ENOMEM, "%s: out of memory", name);
            goto out;
        }
        view.kv = g->kv + base_kv;
        if (set_reserve(set, (size_t)i, (size_t)i + 1, kv_name, &view) < 0) {
            rc = errorf(err, errlen, -ENOMEM, "%s: out of memory", name);
            goto out;
        }
        gguf_str_t k;
        char what[64];
        snprintf(what, sizeof what, "metadata key %llu", (unsigned long long)i);
        if ((rc = rd_str(&r, &k, what)) < 0) goto out;
        if (memchr(k.ptr, 0, (size_t)k.len)) {
            rc = errorf(err, errlen, -EINVAL, "%s: metadata key %llu contains a NUL byte", name,
                        (unsigned long long)i);
            goto out;
        }
        gguf_kv_t *kv = &g->kv[base_kv + i];
        memset(kv, 0, sizeof *kv);
        kv->key = keep(g, k.ptr, (size_t)k.len);
        if (!kv->key) {
            rc = errorf(err, errlen, -ENOMEM, "%s: out of memory", name);
            goto out;
        }
        g->n_kv = base_kv + i + 1;
        rc = set_add(set, kv->key, (int64_t)i, kv_name, &view);
        if (rc == -EEXIST) {
            rc = errorf(err, errlen, -EINVAL, "%s: metadata key '%s' appears twice", name, kv->key);
            goto out;
        }
        if (rc < 0) goto out;
        uint32_t t;
        snprintf(what, sizeof what, "the type of metadata key %llu", (unsigned long long)i);
        if ((rc = rd_u32(&r, &t, what)) < 0) goto out;
        if (t >= GGUF_TYPE_COUNT) {
            rc = errorf(err, errlen, -EINVAL, "%s: key '%s' has unknown value type %u", name,
                        kv->key, t);
            goto out;
        }
        kv->type = (gguf_type_t)t;
        if ((rc = read_value(g, &r, kv, kv->key)) < 0) goto out;
        if (!strcmp(kv->key, "general.alignment")) {
            if (kv->type != GGUF_UINT32) {
                rc = errorf(err, errlen, -EINVAL,
                            "%s: key 'general.alignment' must be UINT32, found %s", name,
                            gguf_type_name(kv->type));
                goto out;
            }
            if (!kv->v.u || (kv->v.u & (kv->v.u - 1))) {
                rc = errorf(err, errlen, -EINVAL,
                            "%s: key 'general.alignment' = %llu is not a power of two", name,
                            (unsigned long long)kv->v.u);
                goto out;
            }
            alignment = (uint32_t)kv->v.u;
        }
    }
    if (si > 0) g->n_kv = base_kv; /* only shard 0's metadata is presented */
    sh->alignment = alignment;

    /* tensor infos */
    size_t base_t = g->n_tensors;
    for (uint64_t i = 0; i < n_tensors; i++) {
        if (grow(&g->tensors, &g->cap_t, g->n_tensors, sizeof(gguf_tensor_t)) < 0 ||
            set_reserve(&g->t_set, g->n_tensors, g->n_tensors + 1, t_name, g) < 0) {
            rc = errorf(err, errlen, -ENOMEM, "%s: out of memory", name);
            goto out;
        }
        gguf_tensor_t *t = &g->tensors[base_t + i];
        memset(t, 0, sizeof *t);
        gguf_str_t nm;
        char what[96];
        snprintf(what, sizeof what, "the name of tensor %llu", (unsigned long long)i);
        if ((rc = rd_str(&r, &nm, what)) < 0) goto out;
        if (memchr(nm.ptr, 0, (size_t)nm.len) || nm.len == 0 || nm.len >= 64) {
            rc = errorf(err, errlen, -EINVAL,
                        "%s: tensor %llu has an invalid name (empty, 64 bytes or longer, or with a "
                        "NUL byte)",
                        name, (unsigned long long)i);
            goto out;
        }
        t->name = keep(g, nm.ptr, (size_t)nm.len);
        if (!t->name) {
            rc = errorf(err, errlen, -ENOMEM, "%s: out of memory", name);
            goto out;
        }
        t->shard = si;
        snprintf(what, sizeof what, "the info of tensor '%s'", t->name);
        if ((rc = rd_u32(&r, &t->n_dims, what)) < 0) goto out;
        if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS) {
            rc = errorf(err, errlen, -EINVAL, "%s: tensor '%s' has %u dimensions (1 to %d allowed)",
                        name, t->name, t->n_dims, GGUF_MAX_DIMS);
            goto out;
        }
        for (int d = 0; d < GGUF_MAX_DIMS; d++)
            t->ne[d] = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) {
            uint64_t v;
            if ((rc = rd_u64(&r, &v, what)) < 0) goto out;
            if (v > (uint64_t)INT64_MAX) {
                rc = errorf(err, errlen, -EINVAL, "%s: tensor '%s': dimension %u is %llu", name,
                            t->name, d, (unsigned long long)v);
                goto out;
            }
            t->ne[d] = (int64_t)v;
        }
        if ((rc = rd_u32(&r, &t->type, what)) < 0) goto out;
        uint64_t off;
        if ((rc = rd_u64(&r, &off, what)) < 0) goto out;
        t->offset = off;
        g->n_tensors = base_t + i + 1;
        rc = set_add(&g->t_set, t->name, (int64_t)(base_t + i), t_name, g);
        if (rc == -EEXIST) {
            rc = errorf(err, errlen, -EINVAL, "%s: tensor '%s' appears twice", name, t->name);
            goto out;
        }
        if (rc < 0) goto out;
        const dtype_info_t *di = dtype_info(t->type);
        if (!di) {
            rc = errorf(err, errlen, -EINVAL, "%s: tensor '%s' has unknown type %u", name, t->name,
                        t->type);
            goto out;
        }
        if (t->ne[0] % di->block) {
            rc = errorf(err, errlen, -EINVAL,
                        "%s: tensor '%s': row length %lld is not a multiple of %s's block of %u",
                        name, t->name, (long long)t->ne[0], di->name, di->block);
            goto out;
        }
        /* bytes = ne0 / block * block_bytes * ne1 * ne2 * ne3, without overflow */
        uint64_t bytes = (uint64_t)t->ne[0] / di->block, prod;
        int ovf = __builtin_mul_overflow(bytes, (uint64_t)di->bytes, &bytes);
        for (int d = 1; d < GGUF_MAX_DIMS && !ovf; d++) {
            ovf = __builtin_mul_overflow(bytes, (uint64_t)t->ne[d], &prod);
            bytes = prod;
        }
        if (ovf) {
            rc = errorf(err, errlen, -EINVAL, "%s: tensor '%s': its size overflows", name, t->name);
            goto out;
        }
        t->nbytes = bytes;
        if (off % alignment) {
            rc = errorf(err, errlen, -EINVAL,
                        "%s: tensor '%s': offset %llu is not a multiple of the alignment %u", name,
                        t->name, (unsigned long long)off, alignment);
            goto out;
        }
    }
    /* the data section starts at the next multiple of the alignment */
    uint64_t data_off = ((uint64_t)r.pos + alignment - 1) / alignment * alignment;
    if (n_tensors > 0 && data_off > sh->size) {
        rc =
            errorf(err, errlen, -EINVAL,
                   "%s: truncated: the tensor data would start at offset %llu but the file has %zu "
                   "bytes",
                   name, (unsigned long long)data_off, sh->size);
        goto out;
    }
    sh->data_off = data_off;
    uint64_t data_size = data_off <= sh->size ? sh->size - data_off : 0;
    for (uint64_t i = 0; i < n_tensors; i++) {
        gguf_tensor_t *t = &g->tensors[base_t + i];
        if (t->offset > data_size || t->nbytes > data_size - t->offset) {
            rc = errorf(err, errlen, -EINVAL,
                        "%s: tensor '%s': data [%llu, %llu) of the data section lies past its end "
                        "(%llu bytes: the file is truncated or the offset is wrong)",
                        name, t->name, (unsigned long long)t->offset,
                        (unsigned long long)(t->offset + t->nbytes), (unsigned long long)data_size);
            goto out;
        }
        t->data = sh->base + data_off + t->offset;
    }
    rc = 0;
out:
    free(local.slot);
    return rc;
}

/* ---- opening ---------------------------------------------------------------------------- */

static int gguf_new(gguf_t **out, const char *name, uint32_t nshards)
{
    gguf_t *g = calloc(1, sizeof *g);
    if (!g) return -ENOMEM;
    g->name = strdup(name);
    g->shards = calloc(nshards, sizeof(shard_t));
    g->nshards = nshards;
    if (!g->name || !g->shards) {
        gguf_free(g);
        return -ENOMEM;
    }
    *out = g;
    return 0;
}

void gguf_free(gguf_t *g)
{
    if (!g) return;
    for (uint32_t i = 0; g->shards && i < g->nshards; i++)
        if (g->shards[i].w.base) wmap_close(&g->shards[i].w);
    for (size_t i = 0; i < g->n_names; i++)
        free(g->names[i]);
    for (size_t i = 0; i < g->n_offs; i++)
        free(g->offs[i]);
    free(g->names);
    free(g->offs);
    free(g->kv);
    free(g->tensors);
    free(g->kv_set.slot);
    free(g->t_set.slot);
    free(g->shards);
    free(g->name);
    free(g);
}

int gguf_parse(gguf_t **out, const void *buf, size_t size, const char *name, char *err,
               size_t errlen)
{
    gguf_t *g;
    *out = NULL;
    if (!name) name = "(memory)";
    if (gguf_new(&g, name, 1) < 0) return errorf(err, errlen, -ENOMEM, "out of memory");
    g->shards[0].base = buf;
    g->shards[0].size = size;
    int rc = parse_shard(g, 0, name, err, errlen);
    if (rc < 0) {
        gguf_free(g);
        return rc;
    }
    *out = g;
    return 0;
}

static int map_file(shard_t *sh, const char *path, char *err, size_t errlen)
{
    int rc = wmap_open(&sh->w, path, "", err, errlen);
    if (rc < 0) return rc;
    sh->base = sh->w.base;
    sh->size = sh->w.size;
    return 0;
}

int gguf_hugepages(gguf_t *g, size_t *bytes, size_t *huge_bytes, char *err, size_t errlen)
{
    *bytes = *huge_bytes = 0;
    for (uint32_t i = 0; i < g->nshards; i++) {
        if (!g->shards[i].w.base) continue;
        char why[256];
        int rc = wmap_hugepages(&g->shards[i].w, why, sizeof why);
        if (rc < 0) return errorf(err, errlen, rc, "%s: %s", g->name, why);
        *bytes += g->shards[i].w.size;
        *huge_bytes += g->shards[i].w.huge_bytes;
    }
    return 0;
}

/* gguf-split names: PREFIX-NNNNN-of-MMMMM.gguf. Returns 1 and fills no/count/prefix len. */
static int split_name(const char *path, unsigned *no, unsigned *count, size_t *plen)
{
    size_t n = strlen(path);
    const char *tail = "-00000-of-00000.gguf";
    size_t tl = strlen(tail);
    if (n < tl) return 0;
    const char *s = path + n - tl;
    for (size_t i = 0; i < tl; i++) {
        if (tail[i] == '0') {
            if (s[i] < '0' || s[i] > '9') return 0;
        } else if (s[i] != tail[i]) {
            return 0;
        }
    }
    *no = (unsigned)strtoul(s + 1, NULL, 10);
    *count = (unsigned)strtoul(s + 10, NULL, 10);
    *plen = n - tl;
    return 1;
}

/* split.no / split.count of shard 0's metadata, when present (UINT16 in gguf-split). */
static int64_t meta_int(const gguf_t *g, const char *key, int64_t dflt)
{
    int64_t v;
    return gguf_get_int(g, key, 0, INT32_MAX, &v, NULL, 0) == 0 ? v : dflt;
}

int gguf_open(gguf_t **out, const char *path, char *err, size_t errlen)
{
    *out = NULL;
    if (!path) return errorf(err, errlen, -EINVAL, "no GGUF path");
    unsigned no = 1, count = 1;
    size_t plen = 0;
    int split = split_name(path, &no, &count, &plen);
    if (split && (count < 1 || count > GGUF_MAX_SHARDS || no < 1 || no > count))
        return errorf(err, errlen, -EINVAL, "%s: the name says shard %u of %u, which is impossible",
                      path, no, count);
    if (split && no != 1)
        return errorf(err, errlen, -EINVAL,
                      "%s is shard %u of %u of a split model: open the first shard, %.*s-00001-of-"
                      "%05u.gguf (inferd loads the others from it)",
                      path, no, count, (int)plen, path, count);
    gguf_t *g;
    if (gguf_new(&g, path, split ? count : 1) < 0)
        return errorf(err, errlen, -ENOMEM, "out of memory");
    int rc = 0;
    size_t plen_max = strlen(path) + 32;
    char *sp = malloc(plen_max);
    if (!sp) rc = errorf(err, errlen, -ENOMEM, "out of memory");
    for (uint32_t i = 0; rc == 0 && i < g->nshards; i++) {
        if (split)
            snprintf(sp, plen_max, "%.*s-%05u-of-%05u.gguf", (int)plen, path, i + 1, count);
        else
            snprintf(sp, plen_max, "%s", path);
        char why[400];
        rc = map_file(&g->shards[i], sp, why, sizeof why);
        if (rc < 0 && i > 0)
            rc = errorf(err, errlen, rc, "%s: split model shard %u of %u: %s", path, i + 1, count,
                        why);
        else if (rc < 0)
            rc = errorf(err, errlen, rc, "%s", why);
    }
    for (uint32_t i = 0; rc == 0 && i < g->nshards; i++) {
        if (split) snprintf(sp, plen_max, "%.*s-%05u-of-%05u.gguf", (int)plen, path, i + 1, count);
        rc = parse_shard(g, i, split ? sp : path, err, errlen);
        if (rc == 0 && i == 0) {
            int64_t c = meta_int(g, "split.count", 1), s0 = meta_int(g, "split.no", 0);
            if (!split && c > 1)
                rc = errorf(err, errlen, -EINVAL,
                            "%s: a split model (split.count %lld) whose name does not end in "
                            "-00001-of-%05lld.gguf: give the shards gguf-split's names",
                            path, (long long)c, (long long)c);
            else if (split && (c != (int64_t)count || s0 != 0))
                rc =
                    errorf(err, errlen, -EINVAL,
                           "%s: the name says shard 1 of %u but its metadata says split.no %lld of "
                           "split.count %lld",
                           path, count, (long long)s0, (long long)c);
        }
    }
    if (rc == 0 && split) {
        int64_t want = meta_int(g, "split.tensors.count", -1);
        if (want >= 0 && (uint64_t)want != g->n_tensors)
            rc = errorf(
                err, errlen, -EINVAL,
                "%s: split model: the shards hold %zu tensors, split.tensors.count says %lld", path,
                g->n_tensors, (long long)want);
    }
    free(sp);
    if (rc < 0) {
        gguf_free(g);
        return rc;
    }
    *out = g;
    return 0;
}

/* ---- accessors --------------------------------------------------------------------------- */

uint32_t gguf_version(const gguf_t *g)
{
    return g->shards[0].version;
}

uint32_t gguf_alignment(const gguf_t *g)
{
    return g->shards[0].alignment;
}

uint32_t gguf_shards(const gguf_t *g)
{
    return g->nshards;
}

const char *gguf_name(const gguf_t *g)
{
    return g->name;
}

size_t gguf_n_kv(const gguf_t *g)
{
    return g->n_kv;
}

void gguf_kv_at(const gguf_t *g, size_t i, gguf_kv_t *out)
{
    *out = g->kv[i];
}

int64_t gguf_find_key(const gguf_t *g, const char *key)
{
    return set_find(&g->kv_set, key, kv_name, (void *)g);
}

int gguf_get(const gguf_t *g, const char *key, gguf_kv_t *out)
{
    int64_t i = gguf_find_key(g, key);
    if (i < 0) return -ENOENT;
    *out = g->kv[i];
    return 0;
}

static int lookup(const gguf_t *g, const char *key, gguf_kv_t *kv, char *err, size_t errlen)
{
    if (gguf_get(g, key, kv) < 0)
        return errorf(err, errlen, -ENOENT, "%s: metadata key '%s' is missing", g->name, key);
    return 0;
}

static int wrong(const gguf_t *g, const char *key, const char *want, gguf_type_t got, char *err,
                 size_t errlen)
{
    return errorf(err, errlen, -EINVAL, "%s: metadata key '%s' must be %s, found %s", g->name, key,
                  want, gguf_type_name(got));
}

int gguf_get_int(const gguf_t *g, const char *key, int64_t min, int64_t max, int64_t *out,
                 char *err, size_t errlen)
{
    gguf_kv_t kv = {0};
    int rc = lookup(g, key, &kv, err, errlen);
    if (rc < 0) return rc;
    int64_t v;
    switch (kv.type) {
    case GGUF_UINT8:
    case GGUF_UINT16:
    case GGUF_UINT32:
    case GGUF_UINT64:
        if (kv.v.u > (uint64_t)INT64_MAX)
            return errorf(err, errlen, -EINVAL, "%s: metadata key '%s' = %llu is out of range",
                          g->name, key, (unsigned long long)kv.v.u);
        v = (int64_t)kv.v.u;
        break;
    case GGUF_INT8:
    case GGUF_INT16:
    case GGUF_INT32:
    case GGUF_INT64:
        v = kv.v.i;
        break;
    default:
        return wrong(g, key, "an integer", kv.type, err, errlen);
    }
    if (v < min || v > max)
        return errorf(err, errlen, -EINVAL,
                      "%s: metadata key '%s' = %lld is outside the accepted range [%lld, %lld]",
                      g->name, key, (long long)v, (long long)min, (long long)max);
    *out = v;
    return 0;
}

int gguf_get_f32(const gguf_t *g, const char *key, float *out, char *err, size_t errlen)
{
    gguf_kv_t kv = {0};
    int rc = lookup(g, key, &kv, err, errlen);
    if (rc < 0) return rc;
    if (kv.type != GGUF_FLOAT32 && kv.type != GGUF_FLOAT64)
        return wrong(g, key, "FLOAT32", kv.type, err, errlen);
    if (!isfinite(kv.v.f) || fabs(kv.v.f) > 3.4e38)
        return errorf(err, errlen, -EINVAL, "%s: metadata key '%s' = %g is not a finite float",
                      g->name, key, kv.v.f);
    *out = (float)kv.v.f;
    return 0;
}

int gguf_get_bool(const gguf_t *g, const char *key, bool *out, char *err, size_t errlen)
{
    gguf_kv_t kv = {0};
    int rc = lookup(g, key, &kv, err, errlen);
    if (rc < 0) return rc;
    if (kv.type != GGUF_BOOL) return wrong(g, key, "BOOL", kv.type, err, errlen);
    *out = kv.v.b;
    return 0;
}

int gguf_get_str(const gguf_t *g, const char *key, gguf_str_t *out, char *err, size_t errlen)
{
    gguf_kv_t kv = {0};
    int rc = lookup(g, key, &kv, err, errlen);
    if (rc < 0) return rc;
    if (kv.type != GGUF_STRING) return wrong(g, key, "STRING", kv.type, err, errlen);
    *out = kv.v.s;
    return 0;
}

int gguf_get_arr(const gguf_t *g, const char *key, gguf_type_t elem, gguf_arr_t *out, char *err,
                 size_t errlen)
{
    gguf_kv_t kv = {0};
    int rc = lookup(g, key, &kv, err, errlen);
    if (rc < 0) return rc;
    if (kv.type != GGUF_ARRAY) return wrong(g, key, "ARRAY", kv.type, err, errlen);
    if (elem != GGUF_TYPE_COUNT && kv.v.arr.type != elem)
        return errorf(err, errlen, -EINVAL,
                      "%s: metadata key '%s' must be an array of %s, found %s", g->name, key,
                      gguf_type_name(elem), gguf_type_name(kv.v.arr.type));
    *out = kv.v.arr;
    return 0;
}

gguf_str_t gguf_arr_str(const gguf_arr_t *a, uint64_t i)
{
    const uint8_t *p = (const uint8_t *)a->data + a->str_off[i];
    gguf_str_t s;
    memcpy(&s.len, p, 8);
    s.ptr = (const char *)p + 8;
    return s;
}

float gguf_arr_f32(const gguf_arr_t *a, uint64_t i)
{
    float f;
    memcpy(&f, (const uint8_t *)a->data + i * 4, 4);
    return f;
}

int64_t gguf_arr_int(const gguf_arr_t *a, uint64_t i)
{
    const uint8_t *p = (const uint8_t *)a->data + i * gguf_type_size(a->type);
    switch (a->type) {
    case GGUF_UINT8:
    case GGUF_BOOL:
        return p[0];
    case GGUF_INT8:
        return (int8_t)p[0];
    case GGUF_UINT16: {
        uint16_t v;
        memcpy(&v, p, 2);
        return v;
    }
    case GGUF_INT16: {
        int16_t v;
        memcpy(&v, p, 2);
        return v;
    }
    case GGUF_UINT32: {
        uint32_t v;
        memcpy(&v, p, 4);
        return v;
    }
    case GGUF_INT32: {
        int32_t v;
        memcpy(&v, p, 4);
        return v;
    }
    case GGUF_UINT64:
    case GGUF_INT64: {
        int64_t v;
        memcpy(&v, p, 8);
        return v;
    }
    default:
        return 0;
    }
}

size_t gguf_n_tensors(const gguf_t *g)
{
    return g->n_tensors;
}

const gguf_tensor_t *gguf_tensor_at(const gguf_t *g, size_t i)
{
    return &g->tensors[i];
}

const gguf_tensor_t *gguf_find_tensor(const gguf_t *g, const char *name)
{
    int64_t i = set_find(&g->t_set, name, t_name, (void *)g);
    return i < 0 ? NULL : &g->tensors[i];
}
