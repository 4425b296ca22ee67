/*
 * gpu_engine - engine-level checks of the CUDA backend that need a GPU (ctest label
 * "gpu"; exits 77 = skipped where no GPU is usable):
 *   1. greedy generations on cuda fp32 identical to the CPU backend (prefill chunked,
 *      decode steps replayed from CUDA graphs), for the test models
 *   2. the same with graphs off (INFERD_CUDA_GRAPHS=0): graph replay changes nothing
 *   3. batch invariance on the GPU: a request alone vs. among 15 others, identical
 *      tokens, fp32 and bf16, with 4 streams (the 16 slots spread over 4 lanes)
 *   4. the device memory budget: an impossible max_batch fails at start with -ENOMEM
 *      and a message naming the sizes
 *   5. device figures: memory used/total and device step time are filled
 * Usage: gpu_engine MODEL TOKENIZER [MODEL TOKENIZER ...]
 */
#include "engine/engine.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NGEN 24
#define NREQ 16

static int failures;

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                                   \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fprintf(stderr, "\n");                                                                 \
            failures++;                                                                            \
        }                                                                                          \
    } while (0)

static engine_t *open_engine(const char *model, const char *tok, const char *dev, const char *dtype,
                             int max_batch, int streams, char *err, size_t errlen, int *rc)
{
    engine_config_t c;
    engine_config_init(&c);
    c.model_path = model;
    c.tokenizer_path = tok;
    c.threads = 2;
    c.device = dev;
    c.dtype = dtype;
    c.max_batch = max_batch;
    c.cuda_streams = streams;
    c.prefill_chunk = 5; /* chunked prefill mixed with decode rows */
    c.max_backlog = NGEN + 1;
    engine_t *e = NULL;
    *rc = engine_new(&e, &c, err, errlen);
    return *rc == 0 ? e : NULL;
}

/* Run n requests together (prompt i = prompts[i]) and collect their tokens. */
static void run(engine_t *e, int n, uint32_t prompts[][8], const int *plen, uint32_t out[][NGEN],
                int *nout)
{
    engine_req_t *req[NREQ];
    char err[256];
    for (int i = 0; i < n; i++) {
        engine_request_t r;
        engine_request_init(&r);
        r.token_ids = prompts[i];
        r.n_tokens = (size_t)plen[i];
        r.max_tokens = NGEN;
        r.ignore_eos = true;
        r.user = (void *)(intptr_t)i;
        nout[i] = 0;
        int rc = engine_submit(e, &r, &req[i], NULL, err, sizeof err);
        CHECK(rc == 0, "submit: %s", err);
        if (rc) return;
    }
    for (int done = 0; done < n;) {
        engine_event_t ev[64];
        int k = engine_poll(e, ev, 64);
        for (int j = 0; j < k; j++) {
            int i = (int)(intptr_t)ev[j].user;
            if (ev[j].type == ENGINE_EV_TOKEN && nout[i] < NGEN) out[i][nout[i]++] = ev[j].token;
            if (ev[j].type == ENGINE_EV_ERROR) CHECK(0, "request %d failed: %s", i, ev[j].text);
            if (ev[j].type != ENGINE_EV_TOKEN) done++;
        }
        if (!k) usleep(200);
    }
    for (int i = 0; i < n; i++)
        engine_req_free(e, req[i]);
}

static void make_prompts(uint32_t p[][8], int *plen, int vocab)
{
    for (int i = 0; i < NREQ; i++) {
        plen[i] = 1 + (i * 3) % 8;
        p[i][0] = 1;
        for (int j = 1; j < plen[i]; j++)
            p[i][j] = (uint32_t)(3 + (i * 131 + j * 17) % (vocab - 3));
    }
}

static void check_model(const char *model, const char *tok)
{
    char err[512];
    int rc;
    uint32_t prompts[NREQ][8], cpu[NREQ][NGEN], gpu[NREQ][NGEN], alone[1][NGEN];
    int plen[NREQ], ncpu[NREQ], ngpu[NREQ], nalone[1];
    engine_t *c = open_engine(model, tok, "cpu", NULL, NREQ, 0, err, sizeof err, &rc);
    CHECK(c, "cpu engine: %s", err);
    if (!c) return;
    engine_model_info_t mi;
    engine_model_info(c, &mi);
    make_prompts(prompts, plen, (int)mi.vocab_size);
    run(c, NREQ, prompts, plen, cpu, ncpu);
    engine_free(c);

    /* 1 + 2: fp32 greedy identical to the CPU, with and without graphs */
    for (int graphs = 1; graphs >= 0; graphs--) {
        setenv("INFERD_CUDA_GRAPHS", graphs ? "1" : "0", 1);
        engine_t *g = open_engine(model, tok, "cuda", "fp32", NREQ, 4, err, sizeof err, &rc);
        CHECK(g, "cuda engine: %s", err);
        if (!g) continue;
        run(g, NREQ, prompts, plen, gpu, ngpu);
        for (int i = 0; i < NREQ; i++)
            CHECK(ngpu[i] == ncpu[i] && !memcmp(gpu[i], cpu[i], sizeof(uint32_t) * ncpu[i]),
                  "%s fp32 graphs=%d: request %d differs from the CPU", model, graphs, i);
        engine_device_stats_t ds;
        engine_device_stats(g, &ds);
        CHECK(ds.has_memory && ds.mem_total > 0 && ds.mem_used > 0 && ds.mem_backend > 0,
              "device memory figures missing");
        CHECK(ds.gpu_steps > 0 && ds.gpu_step_ns_total > 0, "device step time missing");
        engine_free(g);
    }
    unsetenv("INFERD_CUDA_GRAPHS");

    /* 3: batch invariance, fp32 and bf16 */
    const char *dtypes[] = {"fp32", "bf16"};
    for (int d = 0; d < 2; d++) {
        engine_t *g = open_engine(model, tok, "cuda", dtypes[d], NREQ, 4, err, sizeof err, &rc);
        CHECK(g, "cuda %s engine: %s", dtypes[d], err);
        if (!g) continue;
        run(g, NREQ, prompts, plen, gpu, ngpu);
        for (int i = 0; i < NREQ; i += 5) {
            run(g, 1, &prompts[i], &plen[i], alone, nalone);
            CHECK(nalone[0] == ngpu[i] && !memcmp(alone[0], gpu[i], sizeof(uint32_t) * ngpu[i]),
                  "%s %s: request %d alone differs from the same among %d", model, dtypes[d], i,
                  NREQ - 1);
        }
        engine_free(g);
    }

    /* 4: the budget check */
    engine_t *g = open_engine(model, tok, "cuda", "fp32", 1 << 20, 4, err, sizeof err, &rc);
    CHECK(!g && rc == -ENOMEM && strstr(err, "device memory budget"), "max_batch 2^20: rc %d, %s",
          rc, err);
    engine_free(g);
}

int main(int argc, char **argv)
{
    if (argc < 3 || argc % 2 == 0) {
        fprintf(stderr, "usage: gpu_engine MODEL TOKENIZER [MODEL TOKENIZER ...]\n");
        return 2;
    }
    char err[512];
    int rc;
    engine_t *probe = open_engine(argv[1], argv[2], "cuda", NULL, 1, 1, err, sizeof err, &rc);
    if (!probe && rc == -ENODEV) {
        printf("SKIP: no usable GPU: %s\n", err);
        return 77;
    }
    if (!probe) {
        fprintf(stderr, "FAIL: %s\n", err);
        return 1;
    }
    engine_free(probe);
    for (int i = 1; i + 1 < argc; i += 2)
        check_model(argv[i], argv[i + 1]);
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("ok: greedy == cpu (fp32, graphs on/off), batch invariance (fp32, bf16), budget, "
           "device figures\n");
    return 0;
}
