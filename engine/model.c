/*
 * model.c - llama2.c checkpoint loading: mmap, validate every size before any
 * pointer into the file is formed.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

/* Generous caps: they keep every product below 2^63 and reject nonsense early. */
#define CAP_DIM (1 << 16)
#define CAP_HIDDEN (1 << 18)
#define CAP_LAYERS 1024
#define CAP_HEADS 1024
#define CAP_VOCAB (1 << 22)
#define CAP_SEQ (1 << 20)

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

int model_parse(model_t *m, const void *buf, size_t size, char *err, size_t errlen)
{
    int32_t h[7];
    memset(m, 0, sizeof(*m));
    if (size < sizeof(h))
        return errorf(err, errlen, -EINVAL, "model file truncated: %zu bytes, header needs 28",
                      size);
    memcpy(h, buf, sizeof(h));
    model_config_t *c = &m->c;
    c->dim = h[0];
    c->hidden_dim = h[1];
    c->n_layers = h[2];
    c->n_heads = h[3];
    c->n_kv_heads = h[4];
    c->shared = h[5] > 0;
    if (h[5] == INT32_MIN) return errorf(err, errlen, -EINVAL, "model vocab_size out of range");
    c->vocab_size = h[5] < 0 ? -h[5] : h[5];
    c->seq_len = h[6];

    static const char *names[7] = {"dim",        "hidden_dim", "n_layers", "n_heads",
                                   "n_kv_heads", "vocab_size", "seq_len"};
    static const int caps[7] = {CAP_DIM,   CAP_HIDDEN, CAP_LAYERS, CAP_HEADS,
                                CAP_HEADS, CAP_VOCAB,  CAP_SEQ};
    int vals[7] = {c->dim,        c->hidden_dim, c->n_layers, c->n_heads,
                   c->n_kv_heads, c->vocab_size, c->seq_len};
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
    if (c->n_kv_heads > c->n_heads || c->n_heads % c->n_kv_heads)
        return errorf(err, errlen, -EINVAL,
                      "model header: n_heads %d is not a multiple of n_kv_heads %d", c->n_heads,
                      c->n_kv_heads);
    int head_size = c->dim / c->n_heads;
    if (head_size % 2)
        return errorf(err, errlen, -EINVAL, "model header: head size %d must be even (RoPE)",
                      head_size);
    if (c->vocab_size < 3)
        return errorf(err, errlen, -EINVAL, "model header: vocab_size %d too small (needs BOS/EOS)",
                      c->vocab_size);

    int ovf = 0;
    uint64_t dim = (uint64_t)c->dim, hid = (uint64_t)c->hidden_dim, L = (uint64_t)c->n_layers;
    uint64_t V = (uint64_t)c->vocab_size, S = (uint64_t)c->seq_len;
    uint64_t kv_dim = dim * (uint64_t)c->n_kv_heads / (uint64_t)c->n_heads;
    uint64_t off[12], n = 0; /* float offsets of each tensor */
    uint64_t sizes[11] = {
        mul(V, dim, &ovf),                    /* token_embedding */
        mul(L, dim, &ovf),                    /* rms_att */
        mul(L, mul(dim, dim, &ovf), &ovf),    /* wq */
        mul(L, mul(kv_dim, dim, &ovf), &ovf), /* wk */
        mul(L, mul(kv_dim, dim, &ovf), &ovf), /* wv */
        mul(L, mul(dim, dim, &ovf), &ovf),    /* wo */
        mul(L, dim, &ovf),                    /* rms_ffn */
        mul(L, mul(hid, dim, &ovf), &ovf),    /* w1 */
        mul(L, mul(dim, hid, &ovf), &ovf),    /* w2 */
        mul(L, mul(hid, dim, &ovf), &ovf),    /* w3 */
        dim,                                  /* rms_final */
    };
    uint64_t params = 0;
    for (int i = 0; i < 11; i++) {
        off[i] = n;
        n = add(n, sizes[i], &ovf);
        params = add(params, sizes[i], &ovf);
    }
    n = add(n, mul(S, (uint64_t)head_size, &ovf), &ovf); /* freq_cis_real + imag */
    off[11] = n;
    if (!c->shared) {
        n = add(n, mul(V, dim, &ovf), &ovf);
        params = add(params, mul(V, dim, &ovf), &ovf);
    }
    uint64_t bytes = add(28, mul(n, 4, &ovf), &ovf);
    if (ovf || bytes > (uint64_t)SIZE_MAX)
        return errorf(err, errlen, -EINVAL, "model header: sizes overflow");
    if ((uint64_t)size != bytes)
        return errorf(err, errlen, -EINVAL,
                      "model file is %zu bytes but its header (dim %d hidden %d layers %d heads "
                      "%d kv_heads %d vocab %d%s seq_len %d) needs %llu%s",
                      size, c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads,
                      c->vocab_size, c->shared ? "" : " unshared", c->seq_len,
                      (unsigned long long)bytes, (uint64_t)size < bytes ? " (truncated)" : "");

    const float *f = (const float *)((const char *)buf + 28);
    model_weights_t *w = &m->w;
    w->token_embedding = f + off[0];
    w->rms_att = f + off[1];
    w->wq = f + off[2];
    w->wk = f + off[3];
    w->wv = f + off[4];
    w->wo = f + off[5];
    w->rms_ffn = f + off[6];
    w->w1 = f + off[7];
    w->w2 = f + off[8];
    w->w3 = f + off[9];
    w->rms_final = f + off[10];
    w->wcls = c->shared ? w->token_embedding : f + off[11];
    m->n_params = params;
    return 0;
}

int model_load(model_t *m, const char *path, char *err, size_t errlen)
{
    memset(m, 0, sizeof(*m));
    if (!path) return errorf(err, errlen, -EINVAL, "no model path");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return errorf(err, errlen, -e, "cannot open model %s: %s", path, strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return errorf(err, errlen, -EINVAL, "model %s is not a regular file", path);
    }
    size_t size = (size_t)st.st_size;
    if (size < 28) {
        close(fd);
        return errorf(err, errlen, -EINVAL, "model %s truncated: %zu bytes, header needs 28", path,
                      size);
    }
    void *map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED)
        return errorf(err, errlen, -e, "cannot mmap model %s: %s", path, strerror(e));
    char why[400];
    int rc = model_parse(m, map, size, why, sizeof(why));
    if (rc < 0) {
        munmap(map, size);
        return errorf(err, errlen, rc, "model %s: %s", path, why);
    }
    madvise(map, size, MADV_WILLNEED);
    m->map = map;
    m->map_size = size;
    return 0;
}

void model_dispose(model_t *m)
{
    if (m->map) munmap(m->map, m->map_size);
    memset(m, 0, sizeof(*m));
}
