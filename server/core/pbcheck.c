/* The string check every gRPC request passes before it is unpacked (core/grpc.h): protobuf-c
 * copies a string field's bytes as they come and NUL-terminates them, so a NUL inside would cut
 * the string short unseen, and invalid UTF-8 (which proto3 forbids in a string) would reach the
 * tokenizer and the logs. The wire is walked with the message's descriptor, nested messages
 * included, so the error can name the field and the byte. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "server/core/grpc.h"

#define MAX_DEPTH 32
#define MAX_COUNTED 64 /* fields whose repeated index is tracked (others print no index) */

/* Offset of the first invalid UTF-8 sequence or NUL in p[0..n), or n when there is none;
 * *nul says which. Overlong forms, surrogates and code points past U+10FFFF are invalid. */
static size_t utf8_scan(const uint8_t *p, size_t n, int *nul)
{
    size_t i = 0;
    *nul = 0;
    while (i < n) {
        /* ASCII without NUL, eight bytes at a time: prompts are mostly that, and this runs on
         * the loop for every byte of every request */
        while (n - i >= 8) {
            uint64_t w;
            memcpy(&w, p + i, 8);
            const uint64_t ones = 0x0101010101010101ull, highs = 0x8080808080808080ull;
            if ((w & highs) || ((w - ones) & ~w & highs)) break;
            i += 8;
        }
        if (i == n) break;
        uint8_t b = p[i];
        if (b < 0x80) {
            if (b == 0) {
                *nul = 1;
                return i;
            }
            i++;
            continue;
        }
        size_t k;
        uint32_t cp, min;
        if (b >= 0xc2 && b <= 0xdf)
            k = 1, cp = b & 0x1f, min = 0x80;
        else if (b >= 0xe0 && b <= 0xef)
            k = 2, cp = b & 0x0f, min = 0x800;
        else if (b >= 0xf0 && b <= 0xf4)
            k = 3, cp = b & 0x07, min = 0x10000;
        else
            return i;
        if (n - i <= k) return i;
        for (size_t j = 1; j <= k; j++) {
            if ((p[i + j] & 0xc0) != 0x80) return i;
            cp = cp << 6 | (p[i + j] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return i;
        i += k + 1;
    }
    return n;
}

static int varint(const uint8_t *p, size_t n, size_t *at, uint64_t *out)
{
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (*at >= n) return -EBADMSG;
        uint8_t b = p[(*at)++];
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *out = v;
            return 0;
        }
    }
    return -EBADMSG;
}

/* The path of a field for the message: "messages[2].content". */
static void path_add(char *path, size_t cap, const char *name, int index)
{
    size_t l = strlen(path);
    if (l >= cap - 1) return;
    if (index >= 0)
        snprintf(path + l, cap - l, "%s%s[%d]", l ? "." : "", name, index);
    else
        snprintf(path + l, cap - l, "%s%s", l ? "." : "", name);
}

static int walk(const ProtobufCMessageDescriptor *d, const uint8_t *p, size_t n, int depth,
                char *path, size_t pathcap, char *msg, size_t msglen)
{
    if (depth > MAX_DEPTH) return -EBADMSG;
    unsigned counts[MAX_COUNTED] = {0};
    size_t at = 0, base = strlen(path);
    while (at < n) {
        uint64_t key, len;
        if (varint(p, n, &at, &key)) return -EBADMSG;
        switch (key & 7) {
        case 0:
            if (varint(p, n, &at, &len)) return -EBADMSG;
            continue;
        case 1:
            if (n - at < 8) return -EBADMSG;
            at += 8;
            continue;
        case 5:
            if (n - at < 4) return -EBADMSG;
            at += 4;
            continue;
        case 2:
            break;
        default:
            return -EBADMSG; /* groups are not proto3 */
        }
        if (varint(p, n, &at, &len) || len > n - at) return -EBADMSG;
        const uint8_t *v = p + at;
        at += (size_t)len;
        const ProtobufCFieldDescriptor *f =
            key >> 3 <= 0xffffffffu
                ? protobuf_c_message_descriptor_get_field(d, (unsigned)(key >> 3))
                : NULL;
        if (!f || (f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE))
            continue; /* unknown fields, bytes, packed scalars */
        int index = -1;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t fi = (size_t)(f - d->fields);
            index = fi < MAX_COUNTED ? (int)counts[fi]++ : -1;
        }
        path[base] = 0;
        path_add(path, pathcap, f->name, index);
        if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
            int rc = walk(f->descriptor, v, (size_t)len, depth + 1, path, pathcap, msg, msglen);
            if (rc) return rc;
            continue;
        }
        int nul;
        size_t bad = utf8_scan(v, (size_t)len, &nul);
        if (bad < len) {
            snprintf(msg, msglen, "field '%s' %s at byte %zu (of %llu)", path,
                     nul ? "contains a NUL character" : "is not valid UTF-8", bad,
                     (unsigned long long)len);
            return -EINVAL;
        }
    }
    path[base] = 0;
    return 0;
}

int grpc_check_strings(const ProtobufCMessageDescriptor *desc, const uint8_t *data, size_t len,
                       char *msg, size_t msglen)
{
    char path[256] = "";
    if (msglen) msg[0] = 0;
    return walk(desc, data, len, 0, path, sizeof path, msg, msglen);
}
