/* Request messages on the wire, before protobuf-c decodes them. protobuf-c keeps every unknown
 * field (decoded into the call's memory until the call ends: a request of 2M tiny unknown fields
 * costs ~25x its size), cuts a string at its first NUL without a word, and takes any bytes as a
 * string. One walk over the serialized message, guided by its descriptor, drops the unknown
 * fields, checks every string (UTF-8, no NUL) and the method row's field limits, and names the
 * field and the byte when something is wrong. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/base/utf8.h"
#include "server/core/call.h"

#define MAX_DEPTH 32
#define PATH_MAX_LEN 160

typedef struct walk {
    const grpc_field_limit_t *limits;
    grpc_wire_result_t *r;
    size_t unknown;
    int depth;
} walk_t;

/* out = a b c, cut to cap (a long path only shortens a message). */
static void join(char *out, size_t cap, const char *a, const char *b, const char *c)
{
    size_t n = 0;
    for (const char *parts[] = {a, b, c}, **p = parts; p < parts + 3; p++)
        for (const char *q = *p; *q && n + 1 < cap; q++)
            out[n++] = *q;
    out[n] = 0;
}

__attribute__((format(printf, 3, 4))) static int bad(walk_t *w, grpc_status_t st, const char *fmt,
                                                     ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->r->msg, sizeof w->r->msg, fmt, ap);
    va_end(ap);
    w->r->status = st;
    return -EINVAL;
}

static int varint(const unsigned char **p, const unsigned char *end, uint64_t *v)
{
    uint64_t x = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*p >= end) return -1;
        unsigned char b = *(*p)++;
        x |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = x;
            return 0;
        }
    }
    return -1;
}

/* Offset of the first byte that is not strict UTF-8 (overlong forms, surrogates and code
 * points past U+10FFFF are not) or is NUL, or n when there is none; *nul says which. */
static size_t utf8_check(const unsigned char *s, size_t n, int *nul)
{
    *nul = 0;
    for (size_t i = 0; i < n;) {
        /* ASCII without NUL, eight bytes at a time: prompts are mostly that, and this runs on
         * the loop for every byte of every request */
        while (n - i >= 8) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
            if ((w & highs) || ((w - ones) & ~w & highs)) break;
            i += 8;
        }
        if (i == n) break;
        if (s[i] == 0) {
            *nul = 1;
            return i;
        }
        size_t len = utf8_len(s + i, n - i);
        if (!len) return i;
        i += len;
    }
    return n;
}

static int is_scalar(ProtobufCType t)
{
    return t != PROTOBUF_C_TYPE_STRING && t != PROTOBUF_C_TYPE_BYTES &&
           t != PROTOBUF_C_TYPE_MESSAGE;
}

/* Elements in a packed run of a scalar field (-1: malformed). */
static long packed_count(ProtobufCType t, const unsigned char *p, size_t n)
{
    switch (t) {
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_FLOAT:
        return n % 4 ? -1 : (long)(n / 4);
    case PROTOBUF_C_TYPE_FIXED64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_DOUBLE:
        return n % 8 ? -1 : (long)(n / 8);
    default: { /* varints: one ends at each byte without the continuation bit */
        long k = 0;
        for (size_t i = 0; i < n; i++)
            k += !(p[i] & 0x80);
        return n && (p[n - 1] & 0x80) ? -1 : k;
    }
    }
}

/* The row's limit for the field at path lpath + name ("stop." + "stop_token_ids"), or NULL. */
static const grpc_field_limit_t *limit_of(const walk_t *w, const char *lpath, const char *name)
{
    if (!w->limits) return NULL;
    size_t pl = strlen(lpath), nl = strlen(name);
    for (const grpc_field_limit_t *l = w->limits; l->path; l++)
        if (strlen(l->path) == pl + nl && !strncmp(l->path, lpath, pl) &&
            !strcmp(l->path + pl, name))
            return l;
    return NULL;
}

/* One message's bytes: lpath is the limit path of its fields ("" or "stop."), dpath the same
 * with indices for the messages ("messages[3]."). */
static int walk_msg(walk_t *w, const ProtobufCMessageDescriptor *d, const unsigned char *p,
                    size_t len, const char *lpath, const char *dpath)
{
    if (++w->depth > MAX_DEPTH)
        return bad(w, GRPC_STATUS_INVALID_ARGUMENT, "request nested deeper than %d messages",
                   MAX_DEPTH);
    unsigned nf = d->n_fields;
    const grpc_field_limit_t *lims_s[32], **lims = lims_s;
    uint32_t counts_s[32], *counts = counts_s;
    if (nf > 32) {
        lims = calloc(nf, sizeof *lims);
        counts = calloc(nf, sizeof *counts);
        if (!lims || !counts) {
            free(lims == lims_s ? NULL : lims);
            free(counts == counts_s ? NULL : counts);
            return -ENOMEM;
        }
    }
    for (unsigned i = 0; i < nf; i++) {
        lims[i] = limit_of(w, lpath, d->fields[i].name);
        counts[i] = 0;
    }
    int rc = 0;
    const unsigned char *q = p, *end = p + len;
    while (q < end && rc == 0) {
        const unsigned char *start = q, *val = NULL;
        uint64_t key, v = 0;
        if (varint(&q, end, &key) || (key >> 3) == 0 || (key >> 3) > 0x1fffffff) {
            rc = bad(w, GRPC_STATUS_INTERNAL, "failed to parse request message (%sbad field key)",
                     dpath);
            break;
        }
        unsigned wt = (unsigned)(key & 7);
        int ok = 1;
        switch (wt) {
        case 0:
            ok = varint(&q, end, &v) == 0;
            break;
        case 1:
            ok = end - q >= 8;
            q += ok ? 8 : 0;
            break;
        case 2:
            ok = varint(&q, end, &v) == 0 && v <= (uint64_t)(end - q);
            val = q;
            q += ok ? v : 0;
            break;
        case 5:
            ok = end - q >= 4;
            q += ok ? 4 : 0;
            break;
        default:
            ok = 0;
        }
        if (!ok) {
            rc = bad(w, GRPC_STATUS_INTERNAL,
                     "failed to parse request message (field %u of %s: truncated or wire type %u)",
                     (unsigned)(key >> 3), d->name, wt);
            break;
        }
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field(d, (unsigned)(key >> 3));
        if (!f) {
            w->unknown += (size_t)(q - start);
            continue;
        }
        unsigned i = (unsigned)(f - d->fields);
        const grpc_field_limit_t *lim = lims[i];
        char dp[PATH_MAX_LEN];
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            long k = 1;
            if (wt == 2 && is_scalar(f->type) && (k = packed_count(f->type, val, v)) < 0) {
                rc = bad(w, GRPC_STATUS_INTERNAL,
                         "failed to parse request message (%s%s: a malformed packed run)", dpath,
                         f->name);
                break;
            }
            char idx[16];
            snprintf(idx, sizeof idx, "[%u]", counts[i]);
            join(dp, sizeof dp, dpath, f->name, idx);
            counts[i] += (uint32_t)k;
            if (lim && lim->max_count && counts[i] > lim->max_count) {
                rc = bad(w, GRPC_STATUS_INVALID_ARGUMENT,
                         "field '%s%s' has more than %u values%s%s", dpath, f->name, lim->max_count,
                         lim->why ? ": " : "", lim->why ? lim->why : "");
                break;
            }
        } else {
            join(dp, sizeof dp, dpath, f->name, "");
        }
        if (wt != 2) continue;
        if (f->type == PROTOBUF_C_TYPE_STRING || f->type == PROTOBUF_C_TYPE_BYTES) {
            if (lim && lim->max_len && v > lim->max_len) {
                rc = bad(w, GRPC_STATUS_INVALID_ARGUMENT,
                         "field '%s' is %llu bytes long, at most %u%s%s", dp, (unsigned long long)v,
                         lim->max_len, lim->why ? ": " : "", lim->why ? lim->why : "");
                break;
            }
            int nul;
            size_t at = f->type == PROTOBUF_C_TYPE_STRING ? utf8_check(val, v, &nul) : v;
            if (at < v) {
                rc = bad(w, GRPC_STATUS_INVALID_ARGUMENT, "field '%s' %s at byte %zu (of %llu)", dp,
                         nul ? "contains a NUL character" : "is not valid UTF-8", at,
                         (unsigned long long)v);
                break;
            }
        } else if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
            char lp[PATH_MAX_LEN], dn[PATH_MAX_LEN];
            join(lp, sizeof lp, lpath, f->name, ".");
            join(dn, sizeof dn, dp, ".", "");
            rc = walk_msg(w, f->descriptor, val, v, lp, dn);
        }
    }
    if (lims != lims_s) {
        free(lims);
        free(counts);
    }
    w->depth--;
    return rc;
}

static size_t put_varint(unsigned char *out, uint64_t v)
{
    size_t n = 0;
    do {
        out[n++] = (unsigned char)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    return n;
}

/* Copies a message checked by walk_msg without its unknown fields; returns the bytes written.
 * A nested message is written after room for its longest length prefix, then moved back. */
static size_t copy_known(const ProtobufCMessageDescriptor *d, const unsigned char *p, size_t len,
                         unsigned char *out)
{
    size_t w = 0;
    const unsigned char *q = p, *end = p + len;
    while (q < end) {
        const unsigned char *start = q, *val = NULL;
        uint64_t key = 0, v = 0; /* walk_msg checked the input: varint always sets key */
        varint(&q, end, &key);
        switch (key & 7) {
        case 0:
            varint(&q, end, &v);
            break;
        case 1:
            q += 8;
            break;
        case 2:
            varint(&q, end, &v);
            val = q;
            q += v;
            break;
        default:
            q += 4;
        }
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field(d, (unsigned)(key >> 3));
        if (!f) continue;
        if ((key & 7) == 2 && f->type == PROTOBUF_C_TYPE_MESSAGE) {
            size_t kl = put_varint(out + w, key);
            size_t cl = copy_known(f->descriptor, val, v, out + w + kl + 10);
            size_t ll = put_varint(out + w + kl, cl);
            memmove(out + w + kl + ll, out + w + kl + 10, cl);
            w += kl + ll + cl;
        } else {
            memcpy(out + w, start, (size_t)(q - start));
            w += (size_t)(q - start);
        }
    }
    return w;
}

int grpc_wire_check(const ProtobufCMessageDescriptor *desc, const grpc_field_limit_t *limits,
                    const unsigned char *data, size_t len, unsigned char **out, size_t *out_len,
                    grpc_wire_result_t *r)
{
    memset(r, 0, sizeof *r);
    *out = NULL;
    *out_len = 0;
    walk_t w = {.limits = limits, .r = r};
    int rc = walk_msg(&w, desc, data, len, "", "");
    if (rc) return rc;
    r->unknown = w.unknown;
    if (!w.unknown) return 0;
    /* what is written never passes what was read but for the nested messages' reserves */
    unsigned char *buf = malloc(len + 16 + 10 * MAX_DEPTH);
    if (!buf) return -ENOMEM;
    *out_len = copy_known(desc, data, len, buf);
    *out = buf;
    return 0;
}
