/*
 * tokenizer.c - llama2.c tokenizer.bin: load with bounds checks, BPE encode by best
 * merge score (same result as llama2.c's encode), byte fallback, and a UTF-8 safe
 * incremental detokenizer.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static uint32_t hash_bytes(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

void tokenizer_dispose(tokenizer_t *t)
{
    if (t->vocab) {
        for (int i = 0; i < t->vocab_size; i++)
            free(t->vocab[i]);
    }
    free(t->vocab);
    free(t->vocab_len);
    free(t->scores);
    free(t->bytes);
    free(t->is_byte);
    free(t->hash_next);
    free(t->hash_head);
    memset(t, 0, sizeof(*t));
}

int tokenizer_parse(tokenizer_t *t, const void *buf, size_t size, int vocab_size, char *err,
                    size_t errlen)
{
    memset(t, 0, sizeof(*t));
    const unsigned char *p = buf, *end = p + size;
    if (vocab_size <= 0 || vocab_size > (1 << 22))
        return errorf(err, errlen, -EINVAL, "tokenizer: bad vocab size %d", vocab_size);
    if (size < 4) return errorf(err, errlen, -EINVAL, "tokenizer file truncated (no header)");
    int32_t maxlen;
    memcpy(&maxlen, p, 4);
    p += 4;
    if (maxlen <= 0 || maxlen > TOK_MAX_PIECE)
        return errorf(err, errlen, -EINVAL, "tokenizer: max_token_length %d outside [1, %d]", maxlen,
                    TOK_MAX_PIECE);
    t->vocab_size = vocab_size;
    t->max_token_length = maxlen;
    int hs = 1;
    while (hs < 2 * vocab_size)
        hs <<= 1;
    t->hash_size = hs;
    t->vocab = calloc((size_t)vocab_size, sizeof(char *));
    t->vocab_len = calloc((size_t)vocab_size, sizeof(int));
    t->scores = calloc((size_t)vocab_size, sizeof(float));
    t->bytes = calloc((size_t)vocab_size, 1);
    t->is_byte = calloc((size_t)vocab_size, 1);
    t->hash_next = calloc((size_t)vocab_size, sizeof(int));
    t->hash_head = malloc((size_t)hs * sizeof(int));
    int rc;
    if (!t->vocab || !t->vocab_len || !t->scores || !t->bytes || !t->is_byte || !t->hash_next ||
        !t->hash_head) {
        rc = errorf(err, errlen, -ENOMEM, "tokenizer: out of memory");
        goto fail;
    }
    for (int i = 0; i < hs; i++)
        t->hash_head[i] = -1;
    for (int b = 0; b < 256; b++)
        t->byte_tok[b] = -1;
    for (int i = 0; i < vocab_size; i++) {
        if ((size_t)(end - p) < 8) {
            rc = errorf(err, errlen, -EINVAL, "tokenizer truncated at token %d of %d", i, vocab_size);
            goto fail;
        }
        float score;
        int32_t len;
        memcpy(&score, p, 4);
        memcpy(&len, p + 4, 4);
        p += 8;
        if (!isfinite(score)) {
            rc = errorf(err, errlen, -EINVAL, "tokenizer: token %d has a non-finite score", i);
            goto fail;
        }
        if (len < 0 || len > maxlen) {
            rc = errorf(err, errlen, -EINVAL,
                      "tokenizer: token %d has length %d outside [0, max_token_length %d]", i, len,
                      maxlen);
            goto fail;
        }
        if ((size_t)(end - p) < (size_t)len) {
            rc = errorf(err, errlen, -EINVAL, "tokenizer truncated in token %d of %d", i, vocab_size);
            goto fail;
        }
        t->vocab[i] = malloc((size_t)len + 1);
        if (!t->vocab[i]) {
            rc = errorf(err, errlen, -ENOMEM, "tokenizer: out of memory");
            goto fail;
        }
        memcpy(t->vocab[i], p, (size_t)len);
        t->vocab[i][len] = 0;
        t->vocab_len[i] = len;
        t->scores[i] = score;
        p += len;
        const char *s = t->vocab[i];
        if (len == 6 && s[0] == '<' && s[1] == '0' && s[2] == 'x' && s[5] == '>' &&
            hexval(s[3]) >= 0 && hexval(s[4]) >= 0) {
            int b = hexval(s[3]) * 16 + hexval(s[4]);
            t->is_byte[i] = 1;
            t->bytes[i] = (unsigned char)b;
            if (t->byte_tok[b] < 0) t->byte_tok[b] = i;
        }
    }
    if (p != end) {
        rc = errorf(err, errlen, -EINVAL,
                  "tokenizer has %zu bytes after its %d tokens (vocab does not match the model)",
                  (size_t)(end - p), vocab_size);
        goto fail;
    }
    /* insert in reverse so the lowest id heads each chain: duplicates resolve to it */
    for (int i = vocab_size - 1; i >= 0; i--) {
        uint32_t h = hash_bytes(t->vocab[i], (size_t)t->vocab_len[i]) & (uint32_t)(hs - 1);
        t->hash_next[i] = t->hash_head[h];
        t->hash_head[h] = i;
    }
    return 0;
fail:
    tokenizer_dispose(t);
    return rc;
}

int tokenizer_load(tokenizer_t *t, const char *path, int vocab_size, char *err, size_t errlen)
{
    memset(t, 0, sizeof(*t));
    if (!path) return errorf(err, errlen, -EINVAL, "no tokenizer path");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return errorf(err, errlen, -e, "cannot open tokenizer %s: %s", path, strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > (1 << 30)) {
        close(fd);
        return errorf(err, errlen, -EINVAL, "tokenizer %s is not a regular file under 1 GiB", path);
    }
    size_t size = (size_t)st.st_size;
    char *buf = malloc(size ? size : 1);
    if (!buf) {
        close(fd);
        return errorf(err, errlen, -ENOMEM, "tokenizer: out of memory");
    }
    size_t got = 0;
    while (got < size) {
        ssize_t r = read(fd, buf + got, size - got);
        if (r <= 0) {
            if (r < 0 && errno == EINTR) continue;
            break;
        }
        got += (size_t)r;
    }
    close(fd);
    char why[300];
    int rc = got == size ? tokenizer_parse(t, buf, size, vocab_size, why, sizeof(why))
                         : (snprintf(why, sizeof(why), "short read"), -EIO);
    free(buf);
    if (rc < 0) return errorf(err, errlen, rc, "tokenizer %s: %s", path, why);
    return 0;
}

int tokenizer_lookup(const tokenizer_t *t, const char *s, size_t len)
{
    uint32_t h = hash_bytes(s, len) & (uint32_t)(t->hash_size - 1);
    for (int i = t->hash_head[h]; i >= 0; i = t->hash_next[i]) {
        if ((size_t)t->vocab_len[i] == len && memcmp(t->vocab[i], s, len) == 0) return i;
    }
    return -1;
}

typedef struct {
    int id;
    int next, prev;    /* alive neighbours, -1 at the ends */
    int merge_id;      /* token of (this + next), -1 if none */
    float merge_score; /* its score */
} sym_t;

static void pair_score(const tokenizer_t *t, sym_t *s, int i)
{
    s[i].merge_id = -1;
    int j = s[i].next;
    if (j < 0) return;
    int a = s[i].id, b = s[j].id;
    char buf[2 * TOK_MAX_PIECE + 1];
    size_t la = (size_t)t->vocab_len[a], lb = (size_t)t->vocab_len[b];
    memcpy(buf, t->vocab[a], la);
    memcpy(buf + la, t->vocab[b], lb);
    int id = tokenizer_lookup(t, buf, la + lb);
    if (id >= 0) {
        s[i].merge_id = id;
        s[i].merge_score = t->scores[id];
    }
}

int tokenizer_encode(const tokenizer_t *t, const char *text, bool bos, bool eos, int *out,
                     size_t max)
{
    size_t tl = strlen(text);
    /* symbols: dummy prefix + at most one per byte */
    sym_t *s = malloc((tl + 2) * sizeof(sym_t));
    if (!s) return -ENOMEM;
    int n = 0;
    if (tl > 0) {
        int sp = tokenizer_lookup(t, " ", 1);
        if (sp < 0) sp = t->byte_tok[' '] >= 0 ? t->byte_tok[' '] : 0;
        s[n++].id = sp;
    }
    /* group a start byte with up to 3 continuation bytes, as llama2.c does */
    size_t i = 0;
    while (i < tl) {
        size_t j = i + 1;
        while (j < tl && ((unsigned char)text[j] & 0xC0) == 0x80 && j - i < 4)
            j++;
        int id = tokenizer_lookup(t, text + i, j - i);
        if (id >= 0) {
            s[n++].id = id;
        } else {
            for (size_t k = i; k < j; k++) {
                int b = t->byte_tok[(unsigned char)text[k]];
                s[n++].id = b >= 0 ? b : 0; /* <unk> when the vocab lacks byte tokens */
            }
        }
        i = j;
    }
    for (int k = 0; k < n; k++) {
        s[k].prev = k - 1;
        s[k].next = k + 1 < n ? k + 1 : -1;
    }
    for (int k = 0; k < n; k++)
        pair_score(t, s, k);
    int head = n > 0 ? 0 : -1;
    for (;;) {
        float best = -1e10f;
        int bi = -1;
        for (int k = head; k >= 0; k = s[k].next) {
            if (s[k].merge_id >= 0 && s[k].merge_score > best) {
                best = s[k].merge_score;
                bi = k;
            }
        }
        if (bi < 0) break;
        int j = s[bi].next;
        s[bi].id = s[bi].merge_id;
        s[bi].next = s[j].next;
        if (s[j].next >= 0) s[s[j].next].prev = bi;
        pair_score(t, s, bi);
        if (s[bi].prev >= 0) pair_score(t, s, s[bi].prev);
    }
    size_t count = 0;
    if (bos) {
        if (count < max) out[count] = TOK_BOS;
        count++;
    }
    for (int k = head; k >= 0; k = s[k].next) {
        if (count < max) out[count] = s[k].id;
        count++;
    }
    if (eos) {
        if (count < max) out[count] = TOK_EOS;
        count++;
    }
    free(s);
    return count > INT32_MAX ? -EINVAL : (int)count;
}

const char *tokenizer_piece(const tokenizer_t *t, int prev, int token, size_t *len, char tmp[2])
{
    if (token < 0 || token >= t->vocab_size || token == TOK_BOS || token == TOK_EOS || token == 0) {
        *len = 0;
        return "";
    }
    if (t->is_byte[token]) {
        tmp[0] = (char)t->bytes[token];
        tmp[1] = 0;
        *len = 1;
        return tmp;
    }
    const char *p = t->vocab[token];
    size_t n = (size_t)t->vocab_len[token];
    if (prev == TOK_BOS && n > 0 && p[0] == ' ') {
        p++;
        n--;
    }
    *len = n;
    return p;
}

void detok_init(detok_t *d, int prev)
{
    memset(d, 0, sizeof(*d));
    d->prev = prev;
}

static size_t put_fffd(char *out)
{
    out[0] = (char)0xEF;
    out[1] = (char)0xBF;
    out[2] = (char)0xBD;
    return 3;
}

/* Is b acceptable as the second byte after lead? (rejects overlongs, surrogates, > U+10FFFF) */
static int second_ok(unsigned char lead, unsigned char b)
{
    if ((b & 0xC0) != 0x80) return 0;
    if (lead == 0xE0) return b >= 0xA0;
    if (lead == 0xED) return b <= 0x9F;
    if (lead == 0xF0) return b >= 0x90;
    if (lead == 0xF4) return b <= 0x8F;
    return 1;
}

static size_t feed(detok_t *d, unsigned char b, char *out)
{
    size_t w = 0;
    if (d->npend > 0) {
        int ok = d->npend == 1 ? second_ok(d->pend[0], b) : (b & 0xC0) == 0x80;
        if (ok) {
            d->pend[d->npend++] = b;
            if (d->npend == d->need) {
                memcpy(out, d->pend, (size_t)d->need);
                w = (size_t)d->need;
                d->npend = 0;
            }
            return w;
        }
        w += put_fffd(out);
        d->npend = 0;
    }
    if (b < 0x80) {
        out[w++] = (char)b;
    } else if (b >= 0xC2 && b <= 0xF4) {
        d->need = b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4;
        d->pend[0] = b;
        d->npend = 1;
    } else {
        w += put_fffd(out + w);
    }
    return w;
}

size_t detok_push(detok_t *d, const tokenizer_t *t, int token, char *out, size_t cap)
{
    char tmp[2];
    size_t len;
    const char *p = tokenizer_piece(t, d->prev, token, &len, tmp);
    d->prev = token;
    size_t w = 0;
    for (size_t i = 0; i < len && w + 6 < cap; i++)
        w += feed(d, (unsigned char)p[i], out + w);
    if (w < cap) out[w] = 0;
    return w;
}

size_t detok_flush(detok_t *d, char *out, size_t cap)
{
    size_t w = 0;
    if (d->npend > 0 && cap >= 4) {
        w = put_fffd(out);
        d->npend = 0;
    }
    if (w < cap) out[w] = 0;
    return w;
}
