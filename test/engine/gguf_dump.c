/*
 * gguf_dump - what inferd computes on a model, many requests per process, for
 * test/engine/llama_ref.py. Requests on stdin, one per line:
 *   greedy N ID,ID,...   -> "greedy T1 T2 ..."  N tokens through the engine API (scheduler,
 *                           chunked prefill, sampler at temperature 0, EOS not special)
 *   logits ID,ID,...     -> one line "logits P V0 V1 ..." per position (one batched
 *                           forward of the whole prompt on the CPU backend)
 * Usage: gguf_dump MODEL [TOKENIZER|-]. INFERD_KERNELS=generic forces the portable kernels;
 * INFERD_KV_CACHE_TYPE=f16 keeps the KV cache in fp16 (both paths).
 */
#include "engine.h"
#include "internal.h"
#include "kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAXT 4096

static int parse_ids(const char *s, int *out, int max)
{
    int n = 0;
    while (*s && *s != '\n' && n < max) {
        out[n++] = (int)strtol(s, (char **)&s, 10);
        if (*s == ',') s++;
    }
    return n;
}

static int greedy(engine_t *e, int ngen, const int *ids, int n)
{
    uint32_t t[MAXT];
    for (int i = 0; i < n; i++)
        t[i] = (uint32_t)ids[i];
    engine_request_t r;
    engine_request_init(&r);
    r.token_ids = t;
    r.n_tokens = (size_t)n;
    r.max_tokens = (uint32_t)ngen;
    r.ignore_eos = true;
    engine_req_t *req;
    char err[512];
    if (engine_submit(e, &r, &req, NULL, err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        return -1;
    }
    printf("greedy");
    for (int done = 0; !done;) {
        engine_event_t ev[16];
        int k = engine_poll(e, ev, 16);
        for (int i = 0; i < k; i++) {
            if (ev[i].type == ENGINE_EV_TOKEN) printf(" %u", ev[i].token);
            if (ev[i].type == ENGINE_EV_ERROR) fprintf(stderr, "error: %s\n", ev[i].text);
            if (ev[i].type != ENGINE_EV_TOKEN) done = 1;
        }
        if (!k) usleep(500);
    }
    printf("\n");
    engine_req_free(e, req);
    return 0;
}

static int logits(const model_t *m, pool_t *pool, const int *ids, int n, int kv_f16)
{
    void *ctx;
    char err[512];
    int V = m->v.c.vocab_size;
    backend_opts_t o = {.kv_f16 = kv_f16};
    if (backend_cpu.load(&ctx, &m->v, &o, pool, n, 1, err, sizeof err) < 0 ||
        backend_cpu.seq_alloc(ctx, 0, n) < 0) {
        fprintf(stderr, "backend: %s\n", err);
        return -1;
    }
    fwd_row_t *rows = calloc((size_t)n, sizeof *rows);
    float *lg = malloc((size_t)n * (size_t)V * sizeof(float));
    for (int i = 0; i < n; i++)
        rows[i] = (fwd_row_t){0, i, ids[i], i};
    int rc = backend_cpu.forward(ctx, rows, n, lg);
    for (int i = 0; rc == 0 && i < n; i++) {
        printf("logits %d", i);
        for (int v = 0; v < V; v++)
            printf(" %.9g", (double)lg[(size_t)i * V + v]);
        printf("\n");
    }
    free(rows);
    free(lg);
    backend_cpu.free(ctx);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: gguf_dump MODEL [TOKENIZER|-] < requests\n");
        return 2;
    }
    const char *k = getenv("INFERD_KERNELS");
    if (k && !strcmp(k, "generic")) kernels_force(KERNEL_GENERIC);
    char err[512];
    engine_config_t cfg;
    engine_config_init(&cfg);
    cfg.model_path = argv[1];
    cfg.tokenizer_path = argc > 2 && strcmp(argv[2], "-") ? argv[2] : NULL;
    cfg.threads = 1; /* the engine is thread-count invariant; one thread keeps a busy CI fast */
    cfg.max_batch = 4;
    cfg.prefill_chunk = 3; /* chunked prefill: rows of one prompt over several steps */
    cfg.kv_cache_type = getenv("INFERD_KV_CACHE_TYPE");
    int kv_f16 = cfg.kv_cache_type && !strcmp(cfg.kv_cache_type, "f16");
    engine_t *e;
    if (engine_new(&e, &cfg, err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    model_t m;
    pool_t *pool;
    if (model_load(&m, argv[1], 0, err, sizeof err) < 0 || pool_new(&pool, 1) < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    static char line[65536];
    static int ids[MAXT];
    int rc = 0;
    while (rc == 0 && fgets(line, sizeof line, stdin)) {
        if (!strncmp(line, "greedy ", 7)) {
            char *p = line + 7;
            int ngen = (int)strtol(p, &p, 10);
            int n = parse_ids(p + 1, ids, MAXT);
            rc = greedy(e, ngen, ids, n);
        } else if (!strncmp(line, "logits ", 7)) {
            rc = logits(&m, pool, ids, parse_ids(line + 7, ids, MAXT), kv_f16);
        } else if (line[0] != '\n') {
            fprintf(stderr, "bad request: %s", line);
            rc = -1;
        }
        fflush(stdout);
    }
    pool_free(pool);
    model_dispose(&m);
    engine_free(e);
    return rc ? 1 : 0;
}
