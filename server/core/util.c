/* Small pieces the core's files share: listener scopes, per-call arena, gzip, gRPC framing. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#include "server/core/conn.h"

int header_list_accepts(const char *list, const char *token)
{
    size_t tl = strlen(token);
    for (const char *p = list; p && *p;) {
        while (*p == ' ' || *p == ',')
            p++;
        const char *e = p;
        while (*e && *e != ',' && *e != ';' && *e != ' ')
            e++;
        int match =
            ((size_t)(e - p) == tl && !strncasecmp(p, token, tl)) || ((e - p) == 1 && *p == '*');
        const char *next = strchr(e, ',');
        const char *q = strstr(e, "q=");
        int zero = q && (!next || q < next) && strtod(q + 2, NULL) == 0.0;
        if (match && !zero) return 1;
        p = next ? next : e + strlen(e);
    }
    return 0;
}

static int in_list(const char *const *list, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (!strcmp(list[i], name)) return 1;
    return 0;
}

int server_scope_has_service(const server_scope_t *scope, const char *service)
{
    return !scope || !scope->services || in_list(scope->services, scope->n_services, service);
}

int server_scope_has_route(const server_scope_t *scope, const char *name)
{
    return !scope || !scope->routes || in_list(scope->routes, scope->n_routes, name);
}

/* ---- arena: bump allocation from a chain of blocks, all freed at once ---- */
struct arena_block {
    arena_block_t *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
};

static void *pb_alloc(void *ud, size_t n)
{
    return arena_alloc(ud, n);
}

static void pb_free(void *ud, void *p)
{
    (void)ud;
    (void)p; /* freed with the arena */
}

void arena_init(arena_t *a)
{
    a->head = NULL;
    a->pb.alloc = pb_alloc;
    a->pb.free = pb_free;
    a->pb.allocator_data = a;
}

void *arena_alloc(arena_t *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (!a->head || a->head->cap - a->head->used < n) {
        size_t cap = n > 2048 ? n : 2048;
        arena_block_t *b = malloc(sizeof *b + cap);
        if (!b) return NULL;
        b->next = a->head;
        b->used = 0;
        b->cap = cap;
        a->head = b;
    }
    void *p = a->head->data + a->head->used;
    a->head->used += n;
    return p;
}

char *arena_strndup(arena_t *a, const char *s, size_t n)
{
    char *p = arena_alloc(a, n + 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = 0;
    return p;
}

void arena_dispose(arena_t *a)
{
    while (a->head) {
        arena_block_t *n = a->head->next;
        free(a->head);
        a->head = n;
    }
}

/* ---- gzip ---- */
int gzip_compress(const void *in, size_t len, unsigned char **out, size_t *out_len)
{
    return gzip_compress_level(in, len, Z_DEFAULT_COMPRESSION, out, out_len);
}

int gzip_compress_level(const void *in, size_t len, int level, unsigned char **out, size_t *out_len)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (deflateInit2(&z, level, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) return -ENOMEM;
    size_t cap = deflateBound(&z, len);
    unsigned char *buf = malloc(cap ? cap : 1);
    if (!buf) {
        deflateEnd(&z);
        return -ENOMEM;
    }
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)len;
    z.next_out = buf;
    z.avail_out = (uInt)cap;
    int rc = deflate(&z, Z_FINISH);
    deflateEnd(&z);
    if (rc != Z_STREAM_END) {
        free(buf);
        return -ENOMEM;
    }
    *out = buf;
    *out_len = cap - z.avail_out;
    return 0;
}

int gzip_decompress(const void *in, size_t len, size_t max, unsigned char **out, size_t *out_len)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, 15 + 16) != Z_OK) return -ENOMEM;
    size_t cap = len * 4 + 64;
    if (cap > max + 1) cap = max + 1;
    unsigned char *buf = malloc(cap);
    if (!buf) {
        inflateEnd(&z);
        return -ENOMEM;
    }
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)len;
    size_t have = 0;
    int rc;
    for (;;) {
        z.next_out = buf + have;
        z.avail_out = (uInt)(cap - have);
        rc = inflate(&z, Z_NO_FLUSH);
        have = cap - z.avail_out;
        if (rc == Z_STREAM_END) break;
        if (have > max) {
            rc = -EMSGSIZE;
            goto fail;
        }
        if (rc != Z_OK && rc != Z_BUF_ERROR) {
            rc = -EINVAL;
            goto fail;
        }
        if (z.avail_out == 0) {
            size_t ncap = cap * 2 > max + 1 ? max + 1 : cap * 2;
            if (ncap <= cap) {
                rc = -EMSGSIZE;
                goto fail;
            }
            unsigned char *nb = realloc(buf, ncap);
            if (!nb) {
                rc = -ENOMEM;
                goto fail;
            }
            buf = nb;
            cap = ncap;
        } else if (rc == Z_BUF_ERROR || z.avail_in == 0) {
            rc = -EINVAL; /* input ended before the stream did */
            goto fail;
        }
    }
    inflateEnd(&z);
    if (have > max) {
        free(buf);
        return -EMSGSIZE;
    }
    *out = buf;
    *out_len = have;
    return 0;
fail:
    inflateEnd(&z);
    free(buf);
    return rc;
}

/* ---- framing: 1 byte compressed flag, 4 bytes big-endian length, the message ---- */

/* The first allocation for a message; it doubles as bytes arrive, so a declared length costs
 * nothing until the bytes come (100 streams announcing 4 MiB each must not cost 400 MiB). */
#define DEFRAME_FIRST (16u << 10)

int grpc_deframe(grpc_deframer_t *d, const unsigned char *data, size_t len, size_t max,
                 grpc_deframe_fn fn, void *arg)
{
    while (len > 0) {
        if (d->prefix_have < 5) {
            size_t n = 5 - d->prefix_have < len ? 5 - d->prefix_have : len;
            memcpy(d->prefix + d->prefix_have, data, n);
            d->prefix_have += n;
            data += n;
            len -= n;
            if (d->prefix_have < 5) break;
            d->compressed = d->prefix[0] & 1;
            d->need = (size_t)d->prefix[1] << 24 | (size_t)d->prefix[2] << 16 |
                      (size_t)d->prefix[3] << 8 | d->prefix[4];
            if (d->need > max) return GRPC_STATUS_RESOURCE_EXHAUSTED;
            d->have = 0;
        }
        size_t n = d->need - d->have < len ? d->need - d->have : len;
        if (d->have + n > d->cap || !d->buf) {
            size_t cap = d->cap ? d->cap : DEFRAME_FIRST;
            while (cap < d->have + n)
                cap *= 2;
            if (cap > d->need) cap = d->need;
            unsigned char *b = realloc(d->buf, cap ? cap : 1);
            if (!b) return GRPC_STATUS_RESOURCE_EXHAUSTED;
            d->buf = b;
            d->cap = cap;
        }
        if (n) memcpy(d->buf + d->have, data, n);
        d->have += n;
        data += n;
        len -= n;
        if (d->have == d->need) {
            int rc = fn(arg, d->compressed, d->buf, d->need);
            free(d->buf);
            d->buf = NULL;
            d->cap = 0;
            d->have = 0;
            d->prefix_have = 0;
            if (rc) return rc;
        }
    }
    return 0;
}

int grpc_deframer_partial(const grpc_deframer_t *d)
{
    return d->prefix_have > 0;
}

size_t grpc_deframer_held(const grpc_deframer_t *d)
{
    return d->prefix_have ? d->prefix_have + (d->prefix_have == 5 ? d->have : 0) : 0;
}

void grpc_deframer_dispose(grpc_deframer_t *d)
{
    free(d->buf);
    d->buf = NULL;
    d->cap = 0;
    d->have = 0;
    d->prefix_have = 0;
}
