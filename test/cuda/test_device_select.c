/*
 * test_device_select - backend selection in the engine, with or without a GPU:
 * device strings, dtype/streams validation, auto's fallback to the CPU and the reason
 * it reports, an explicit cuda request failing cleanly where no GPU is usable, the
 * device figures and step timings the metrics read. On a machine with a usable GPU the
 * expectations follow what the engine picked.
 */
#include "engine/engine.h"
#include "engine/internal.h"
#include "tools/mkmodel/gguf_write.h"
#include "tools/mkmodel/mkgguf.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

static void test_parse(void **state)
{
    (void)state;
    int idx = -1;
    assert_int_equal(device_parse("auto", &idx), DEVICE_AUTO);
    assert_int_equal(device_parse("cpu", &idx), DEVICE_CPU);
    assert_int_equal(device_parse("cuda", &idx), DEVICE_CUDA);
    assert_int_equal(idx, 0);
    assert_int_equal(device_parse("cuda:3", &idx), DEVICE_CUDA);
    assert_int_equal(idx, 3);
    assert_int_equal(device_parse("cuda:255", &idx), DEVICE_CUDA);
    assert_int_equal(idx, 255);
    const char *bad[] = {"",        "gpu",     "CUDA",   "cuda:", "cuda:256", "cuda:1000",
                         "cuda:-1", "cuda:1x", "cuda:N", "cpu ",  "auto:0"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_int_equal(device_parse(bad[i], &idx), -EINVAL);
    assert_int_equal(device_parse(NULL, &idx), -EINVAL);
}

static void base(engine_config_t *c)
{
    engine_config_init(c);
    c->model_path = TINY_MODEL;
    c->tokenizer_path = TINY_TOKENIZER;
    c->threads = 2;
    c->max_batch = 4;
}

static int open_with(const char *dev, const char *dtype, int streams, engine_t **e, char *err,
                     size_t errlen)
{
    engine_config_t c;
    base(&c);
    c.device = dev;
    c.dtype = dtype;
    c.cuda_streams = streams;
    return engine_new(e, &c, err, errlen);
}

static void test_bad_values(void **state)
{
    (void)state;
    engine_t *e = NULL;
    char err[512];
    assert_int_equal(open_with("gpu", NULL, 0, &e, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "device 'gpu'"));
    assert_int_equal(open_with("cpu", "fp16", 0, &e, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "dtype 'fp16'"));
    assert_int_equal(open_with("cpu", "bf16", 0, &e, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "bf16"));
    assert_int_equal(open_with("auto", NULL, 65, &e, err, sizeof err), -EINVAL);
    assert_int_equal(open_with("auto", NULL, -1, &e, err, sizeof err), -EINVAL);
    assert_null(e);
}

static void generate_one(engine_t *e)
{
    uint32_t bos = 1;
    engine_request_t r;
    engine_request_init(&r);
    r.token_ids = &bos;
    r.n_tokens = 1;
    r.max_tokens = 4;
    r.ignore_eos = true;
    engine_req_t *req;
    char err[256];
    assert_int_equal(engine_submit(e, &r, &req, NULL, err, sizeof err), 0);
    for (int done = 0; !done;) {
        engine_event_t ev[8];
        int k = engine_poll(e, ev, 8);
        for (int i = 0; i < k; i++) {
            assert_int_not_equal(ev[i].type, ENGINE_EV_ERROR);
            if (ev[i].type != ENGINE_EV_TOKEN) done = 1;
        }
        if (!k) usleep(1000);
    }
    engine_req_free(e, req);
}

static void test_cpu_default_and_explicit(void **state)
{
    (void)state;
    const char *devs[] = {NULL, "cpu"};
    for (int i = 0; i < 2; i++) {
        engine_t *e;
        char err[512];
        assert_int_equal(open_with(devs[i], NULL, 0, &e, err, sizeof err), 0);
        engine_model_info_t mi;
        engine_model_info(e, &mi);
        assert_string_equal(mi.device, "cpu");
        assert_non_null(strstr(mi.device_note, "cpu"));
        generate_one(e);
        engine_stats_t st;
        engine_stats(e, &st);
        assert_true(st.steps_total > 0);
        assert_true(st.step_ns_total > 0);
        assert_true(st.step_ns_last > 0 && st.step_ns_last <= st.step_ns_total);
        engine_device_stats_t ds;
        engine_device_stats(e, &ds);
        assert_string_equal(ds.device, "cpu");
        assert_int_equal(ds.has_memory, 0);
        assert_int_equal(ds.gpu_steps, 0);
        engine_free(e);
    }
}

static void test_auto(void **state)
{
    (void)state;
    engine_t *e;
    char err[512];
    /* bf16 under auto: the GPU's weights if one is picked, else fp32 on the CPU (noted) */
    assert_int_equal(open_with("auto", "bf16", 2, &e, err, sizeof err), 0);
    engine_model_info_t mi;
    engine_model_info(e, &mi);
    printf("auto picked %s: %s\n", mi.device, mi.device_note);
    if (!strcmp(mi.device, "cpu")) {
        assert_non_null(strstr(mi.device_note, "auto: no usable GPU ("));
        assert_non_null(strstr(mi.device_note, "fp32"));
    } else {
        assert_memory_equal(mi.device, "cuda:0", 6);
        assert_non_null(strstr(mi.device_note, "bf16"));
    }
    generate_one(e);
    engine_free(e);
}

static void test_explicit_cuda(void **state)
{
    (void)state;
    engine_t *e = NULL;
    char err[512] = "";
    int rc = open_with("cuda", NULL, 0, &e, err, sizeof err);
    printf("device cuda: %s\n", rc == 0 ? "loaded" : err);
    if (rc == 0) { /* a machine with a GPU */
        engine_model_info_t mi;
        engine_model_info(e, &mi);
        assert_string_equal(mi.device, "cuda:0");
        engine_free(e);
    } else {
        assert_int_equal(rc, -ENODEV);
        assert_non_null(strstr(err, "device cuda: "));
        assert_null(e);
    }
    /* a device number that no machine here has */
    rc = open_with("cuda:254", NULL, 0, &e, err, sizeof err);
    assert_int_equal(rc, -ENODEV);
    assert_non_null(strstr(err, "device cuda:254: "));
}

#ifdef FAKE_CUDA_DRIVER
/* a GGUF model of type `type` and architecture `arch`, written to /tmp */
static const char *gguf_model(const char *arch, const char *type, char *path, size_t len)
{
    mkgguf_opts_t o = {.arch = arch,
                       .type = type,
                       .dim = 64,
                       .hidden = 128,
                       .layers = 1,
                       .heads = 4,
                       .kv_heads = 2,
                       .vocab = 300,
                       .ctx = 64,
                       .seed = 3};
    gguf_writer_t *w;
    char err[256];
    assert_int_equal(gguf_writer_new(&w, 3, 32), 0);
    assert_int_equal(mkgguf_model(w, &o, err, sizeof err), 0);
    char *pieces[300];
    float scores[300];
    for (int i = 0; i < 300; i++) {
        char b[16];
        if (i < 259)
            snprintf(b, sizeof b,
                     i == 0   ? "<unk>"
                     : i == 1 ? "<s>"
                     : i == 2 ? "</s>"
                              : "<0x%02X>",
                     i - 3);
        else
            snprintf(b, sizeof b, "t%d", i);
        pieces[i] = strdup(b);
        scores[i] = 0;
    }
    assert_int_equal(mkgguf_vocab_spm(w, pieces, scores, 300), 0);
    for (int i = 0; i < 300; i++)
        free(pieces[i]);
    snprintf(path, len, "/tmp/device_select_%d_%s_%s.gguf", (int)getpid(), arch, type);
    assert_int_equal(gguf_writer_write(w, path, err, sizeof err), 0);
    gguf_writer_free(w);
    return path;
}

static int open_model(const char *model, const char *tok, const char *dev, engine_t **e, char *err,
                      size_t errlen)
{
    engine_config_t c;
    engine_config_init(&c);
    c.model_path = model;
    c.tokenizer_path = tok;
    c.threads = 1;
    c.max_batch = 2;
    c.device = dev;
    return engine_new(e, &c, err, errlen);
}

/* What the CUDA backend does not implement is refused at start-up with the reason, before
 * any device is touched; --device auto then runs on the CPU and says why. The driver
 * stand-in makes the engine open the real backend library here, GPU or not. */
static void test_cuda_refuses_what_it_cannot_run(void **state)
{
    (void)state;
    assert_int_equal(setenv("INFERD_CUDA_DRIVER", FAKE_CUDA_DRIVER, 1), 0);
    char path[256], err[512];
    engine_t *e = NULL;
    engine_model_info_t mi;
    static const struct {
        const char *arch, *type, *why;
    } cases[] = {
        {"llama", "Q8_0",
         "tensor token_embd.weight is Q8_0; the CUDA backend runs F32 weights "
         "only"},
        {"llama", "Q4_K_M", "is Q"},
        {"llama", "BF16", "is BF16; the CUDA backend runs F32 weights only"},
        {"qwen2", "F32", "the CUDA backend runs the llama architecture only"},
        {"qwen3", "F32", "the CUDA backend runs the llama architecture only"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        gguf_model(cases[i].arch, cases[i].type, path, sizeof path);
        assert_int_equal(open_model(path, NULL, "auto", &e, err, sizeof err), 0);
        engine_model_info(e, &mi);
        printf("auto, %s %s: %s\n", cases[i].arch, cases[i].type, mi.device_note);
        assert_string_equal(mi.device, "cpu");
        assert_non_null(strstr(mi.device_note, "auto: the CUDA backend cannot run this model ("));
        assert_non_null(strstr(mi.device_note, cases[i].why));
        assert_non_null(strstr(mi.device_note, "); using cpu"));
        engine_free(e);
        e = NULL;
        assert_int_equal(open_model(path, NULL, "cuda", &e, err, sizeof err), -ENOTSUP);
        assert_non_null(strstr(err, "device cuda: "));
        assert_non_null(strstr(err, cases[i].why));
        assert_null(e);
        unlink(path);
    }
    /* an F32 llama passes the check; then the device itself decides */
    int rc = open_model(TINY_MODEL, TINY_TOKENIZER, "auto", &e, err, sizeof err);
    assert_int_equal(rc, 0);
    engine_model_info(e, &mi);
    printf("auto, F32 llama2.c: %s\n", mi.device_note);
    if (!strcmp(mi.device, "cpu")) {
        assert_non_null(strstr(mi.device_note, "auto: no usable GPU ("));
        assert_null(strstr(mi.device_note, "cannot run this model"));
    }
    engine_free(e);
    unsetenv("INFERD_CUDA_DRIVER");
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_cpu_default_and_explicit),
        cmocka_unit_test(test_auto),
        cmocka_unit_test(test_explicit_cuda),
#ifdef FAKE_CUDA_DRIVER
        cmocka_unit_test(test_cuda_refuses_what_it_cannot_run),
#endif
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
