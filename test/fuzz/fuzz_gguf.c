/*
 * fuzz_gguf - the GGUF loader from memory: gguf_parse() validates a whole image, then the
 * tokenizer is read from its tokenizer.ggml.* metadata (tokenizer_from_gguf) and its chat
 * template detected, as engine_new() does for a GGUF model or vocabulary.
 *
 * Input: a GGUF image (the seeds are files mkmodel and the GGUF writer produce).
 * Promises checked beyond "no crash": an error is -EINVAL or -ENOMEM with a message; after a
 * successful parse every accessor stays inside the image (every key read with every typed
 * getter, every array element, both ends of every tensor's data touched), keys and tensor
 * names are found at their own index, and a tokenizer built from the file keeps
 * tokenizer_fuzz_one's invariants on a fixed text.
 */
#include "fuzz.h"

#include <errno.h>

#include "engine/dtype.h"
#include "engine/gguf.h"
#include "engine/internal.h"

static volatile uint64_t sink; /* keeps the reads */

static void touch(const void *p, size_t n)
{
    if (n) sink += ((const volatile uint8_t *)p)[0] + ((const volatile uint8_t *)p)[n - 1];
}

static void walk_kv(const gguf_t *g, size_t i)
{
    gguf_kv_t kv;
    gguf_kv_at(g, i, &kv);
    FUZZ_CHECK(kv.key && gguf_find_key(g, kv.key) == (int64_t)i, "key %zu is not found at itself",
               i);
    char err[512];
    int64_t iv;
    float fv;
    bool bv;
    gguf_str_t sv;
    gguf_arr_t av;
    /* every getter on every key: the right type answers 0, any other a message */
    int rc[6];
    for (int k = 0; k < 6; k++) {
        err[0] = 0;
        switch (k) {
        case 0:
            rc[k] = gguf_get_int(g, kv.key, INT64_MIN, INT64_MAX, &iv, err, sizeof err);
            break;
        case 1:
            rc[k] = gguf_get_int(g, kv.key, 0, 255, &iv, err, sizeof err);
            break;
        case 2:
            rc[k] = gguf_get_f32(g, kv.key, &fv, err, sizeof err);
            break;
        case 3:
            rc[k] = gguf_get_bool(g, kv.key, &bv, err, sizeof err);
            break;
        case 4:
            rc[k] = gguf_get_str(g, kv.key, &sv, err, sizeof err);
            break;
        default:
            rc[k] = gguf_get_arr(g, kv.key, GGUF_TYPE_COUNT, &av, err, sizeof err);
        }
        FUZZ_CHECK(rc[k] == 0 || (rc[k] == -EINVAL && err[0]), "getter %d on %s returned %d", k,
                   kv.key, rc[k]);
    }
    if (rc[4] == 0) touch(sv.ptr, (size_t)sv.len);
    if (rc[5] == 0) {
        FUZZ_CHECK(av.type != GGUF_ARRAY && av.type < GGUF_TYPE_COUNT, "array of type %u", av.type);
        for (uint64_t e = 0; e < av.n; e++) {
            if (av.type == GGUF_STRING) {
                gguf_str_t s = gguf_arr_str(&av, e);
                touch(s.ptr, (size_t)s.len);
            } else if (av.type == GGUF_FLOAT32) {
                sink += (uint64_t)(gguf_arr_f32(&av, e) != 0.0f);
            } else if (av.type != GGUF_FLOAT64) {
                sink += (uint64_t)gguf_arr_int(&av, e);
            } else {
                touch((const uint8_t *)av.data + e * 8, 8);
            }
        }
    }
}

static void walk_tensor(const gguf_t *g, size_t i, const uint8_t *lo, const uint8_t *hi)
{
    const gguf_tensor_t *t = gguf_tensor_at(g, i);
    FUZZ_CHECK(t && t->name && gguf_find_tensor(g, t->name) == t, "tensor %zu not found by name",
               i);
    FUZZ_CHECK(t->n_dims >= 1 && t->n_dims <= 4, "tensor %s has %u dims", t->name, t->n_dims);
    /* GGUF allows an empty dimension (llama.cpp's reader too); the model loader checks
     * shapes against the hyper-parameters */
    uint64_t rows = 1;
    for (int d = 0; d < 4; d++) {
        FUZZ_CHECK(t->ne[d] >= 0 && (d < (int)t->n_dims || t->ne[d] == 1),
                   "tensor %s: ne[%d] = %lld", t->name, d, (long long)t->ne[d]);
        if (d) rows *= (uint64_t)t->ne[d];
    }
    FUZZ_CHECK(dtype_info(t->type) != NULL, "tensor %s has unknown type %u", t->name, t->type);
    FUZZ_CHECK(t->nbytes == dtype_row_bytes(t->type, (uint64_t)t->ne[0]) * rows,
               "tensor %s: %llu bytes for its shape", t->name, (unsigned long long)t->nbytes);
    const uint8_t *p = t->data;
    FUZZ_CHECK(p >= lo && p <= hi && t->nbytes <= (uint64_t)(hi - p),
               "tensor %s lies outside the image", t->name);
    touch(p, (size_t)t->nbytes);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *buf = fuzz_copy(data, size);
    gguf_t *g = NULL;
    char err[512] = "";
    int rc = gguf_parse(&g, buf, size, "fuzz.gguf", err, sizeof err);
    if (rc) {
        FUZZ_CHECK(rc == -EINVAL || rc == -ENOMEM, "gguf_parse returned %d", rc);
        FUZZ_CHECK(err[0] != 0, "gguf_parse returned %d without a message", rc);
        free(buf);
        return 0;
    }
    FUZZ_CHECK(gguf_version(g) == 2 || gguf_version(g) == 3, "version %u", gguf_version(g));
    uint32_t al = gguf_alignment(g);
    FUZZ_CHECK(al && !(al & (al - 1)), "alignment %u", al);
    for (size_t i = 0; i < gguf_n_kv(g); i++)
        walk_kv(g, i);
    for (size_t i = 0; i < gguf_n_tensors(g); i++)
        walk_tensor(g, i, buf, buf + size);

    tokenizer_t t;
    char *tmpl = NULL;
    err[0] = 0;
    rc = tokenizer_from_gguf(&t, g, &tmpl, err, sizeof err);
    if (rc == 0) {
        static const char text[] = "Hello world <|eot_id|><s> the caf\xc3\xa9 \xe4\xb8\xad "
                                   "<|im_end|>\n\n 123 \xf0\x9f\x98\x80 \xff end";
        rc = tokenizer_fuzz_one(&t, (const uint8_t *)text, sizeof text - 1);
        FUZZ_CHECK(rc == 0, "tokenizer_fuzz_one on the file's tokenizer returned %d", rc);
        if (tmpl) {
            const char *name = chat_detect(tmpl);
            if (name && chat_supported(name)) {
                chat_msg_t msgs[] = {{"system", "Be brief."}, {"user", "Hi <|eot_id|>"}};
                char *out = NULL;
                FUZZ_CHECK(chat_render(name, msgs, 2, true, &out, err, sizeof err) == 0,
                           "rendering the detected template %s: %s", name, err);
                free(out);
            }
        }
        free(tmpl);
        tokenizer_dispose(&t);
    } else {
        FUZZ_CHECK(rc == -EINVAL || rc == -ENOENT || rc == -ENOMEM,
                   "tokenizer_from_gguf returned %d", rc);
        FUZZ_CHECK(err[0] != 0, "tokenizer_from_gguf returned %d without a message", rc);
        FUZZ_CHECK(tmpl == NULL, "a template was returned with an error");
    }
    gguf_free(g);
    free(buf);
    return 0;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    return 0;
}
