/*
 * fuzz_llama2c - the llama2.c loaders from memory: model_parse() (checkpoint) and
 * tokenizer_parse() (tokenizer.bin), as engine_new() reaches them through model_load() and
 * tokenizer_load() on files a user names.
 *
 * Input: one mode byte, then
 *   mode bit 0 clear: a checkpoint; bits 1-2 choose --ctx-size (0, 1, 2, 64);
 *   mode bit 0 set:   two bytes of vocab size (little-endian, as the model header would give
 *                     it), then a tokenizer.bin.
 * Promises checked beyond "no crash": an error is -EINVAL or -ENOMEM with a message; a
 * loaded model's every tensor view lies inside the file with nbytes = row_bytes x rows; a
 * loaded tokenizer encodes and decodes a fixed text within tokenizer_fuzz_one's invariants.
 */
#include "fuzz.h"

#include <errno.h>

#include "engine/internal.h"

typedef struct {
    const uint8_t *lo, *hi;
    int count;
} span_t;

static void check_tensor(const tensor_t *t, void *arg)
{
    span_t *s = arg;
    const uint8_t *p = t->data;
    FUZZ_CHECK(p != NULL, "tensor %s has no data", t->name);
    FUZZ_CHECK(t->ne[0] > 0 && t->ne[1] > 0, "tensor %s has shape %lld x %lld", t->name,
               (long long)t->ne[0], (long long)t->ne[1]);
    FUZZ_CHECK(t->row_bytes == (size_t)t->ne[0] * 4 && t->nbytes == t->row_bytes * (size_t)t->ne[1],
               "tensor %s: row_bytes %zu nbytes %zu for %lld x %lld F32", t->name, t->row_bytes,
               t->nbytes, (long long)t->ne[0], (long long)t->ne[1]);
    FUZZ_CHECK(p >= s->lo && t->nbytes <= (size_t)(s->hi - p), "tensor %s lies outside the file",
               t->name);
    /* touch both ends: AddressSanitizer checks the view against the input's allocation */
    volatile uint8_t first = p[0], last = p[t->nbytes - 1];
    (void)first;
    (void)last;
    s->count++;
}

static void fuzz_model(const uint8_t *data, size_t size, int ctx)
{
    uint8_t *buf = fuzz_copy(data, size);
    model_t m;
    char err[512] = "";
    int rc = model_parse(&m, buf, size, ctx, err, sizeof err);
    if (rc == 0) {
        const model_config_t *c = &m.v.c;
        FUZZ_CHECK(c->seq_len >= 2 && c->seq_len <= c->train_ctx, "seq_len %d of train_ctx %d",
                   c->seq_len, c->train_ctx);
        FUZZ_CHECK(m.v.rope_freq != NULL, "no RoPE frequencies");
        span_t s = {buf, buf + size, 0};
        model_view_each(&m.v, check_tensor, &s);
        FUZZ_CHECK(s.count == 2 + 9 * c->n_layers + !c->shared, "%d tensors for %d layers", s.count,
                   c->n_layers);
        model_dispose(&m);
    } else {
        FUZZ_CHECK(rc == -EINVAL || rc == -ENOMEM, "model_parse returned %d", rc);
        FUZZ_CHECK(err[0] != 0, "model_parse returned %d without a message", rc);
    }
    free(buf);
}

static void fuzz_tokenizer_bin(const uint8_t *data, size_t size, int vocab)
{
    static const char text[] = "Once upon a time, Lily saw <s> a bird</s> \xe2\x96\x81 caf\xc3\xa9 "
                               "<0x41> \xff\xfe\xc3 12345 \t\n  end";
    uint8_t *buf = fuzz_copy(data, size);
    tokenizer_t t;
    char err[512] = "";
    int rc = tokenizer_parse(&t, buf, size, vocab, err, sizeof err);
    free(buf); /* the tokenizer keeps copies, never pointers into the file */
    if (rc == 0) {
        FUZZ_CHECK(t.n_vocab == vocab, "n_vocab %d for vocab %d", t.n_vocab, vocab);
        rc = tokenizer_fuzz_one(&t, (const uint8_t *)text, sizeof text - 1);
        FUZZ_CHECK(rc == 0, "tokenizer_fuzz_one on a loaded tokenizer.bin returned %d", rc);
        tokenizer_dispose(&t);
    } else {
        FUZZ_CHECK(rc == -EINVAL || rc == -ENOMEM, "tokenizer_parse returned %d", rc);
        FUZZ_CHECK(err[0] != 0, "tokenizer_parse returned %d without a message", rc);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    uint8_t mode = data[0];
    if (!(mode & 1)) {
        static const int ctx[4] = {0, 1, 2, 64};
        fuzz_model(data + 1, size - 1, ctx[(mode >> 1) & 3]);
    } else if (size >= 3) {
        fuzz_tokenizer_bin(data + 3, size - 3, data[1] | data[2] << 8);
    }
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}
