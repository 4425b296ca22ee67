/*
 * engine_dump - print what the C engine computes, for test/engine/reference.py.
 *   engine_dump MODEL TOKENIZER logits ID,ID,...   -> one line per position:
 *        "logits <pos> <v0> <v1> ..." (one batched prefill pass, logits for every row)
 *   engine_dump MODEL TOKENIZER greedy N ID,ID,... -> "greedy <t1> <t2> ..." through the
 *        engine API (scheduler, prefill chunking, sampler at temperature 0)
 *   engine_dump MODEL TOKENIZER encode TEXT        -> "tokens <ids...>" (BOS + BPE)
 * MODEL may be a GGUF file; TOKENIZER "-" then (the file carries its vocabulary).
 * INFERD_KERNELS=generic forces the portable kernels.
 */
#include "engine.h"
#include "internal.h"
#include "kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int parse_ids(const char *s, int *out, int max)
{
    int n = 0;
    while (*s && n < max) {
        out[n++] = (int)strtol(s, (char **)&s, 10);
        if (*s == ',') s++;
    }
    return n;
}

static int dump_logits(const char *model_path, const char *ids)
{
    model_t m;
    char err[512];
    if (model_load(&m, model_path, 0, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    int toks[1024];
    int n = parse_ids(ids, toks, 1024);
    pool_t *pool;
    pool_new(&pool, 2);
    void *ctx;
    if (backend_cpu.load(&ctx, &m.v, NULL, pool, n, 1, err, sizeof(err)) < 0 ||
        backend_cpu.seq_alloc(ctx, 0, n) < 0) {
        fprintf(stderr, "backend: %s\n", err);
        return 1;
    }
    fwd_row_t *rows = calloc((size_t)n, sizeof(*rows));
    float *logits = malloc((size_t)n * m.v.c.vocab_size * sizeof(float));
    for (int i = 0; i < n; i++)
        rows[i] = (fwd_row_t){0, i, toks[i], i};
    if (backend_cpu.forward(ctx, rows, n, logits) < 0) return 1;
    for (int i = 0; i < n; i++) {
        printf("logits %d", i);
        for (int v = 0; v < m.v.c.vocab_size; v++)
            printf(" %.9g", (double)logits[(size_t)i * m.v.c.vocab_size + v]);
        printf("\n");
    }
    free(rows);
    free(logits);
    backend_cpu.free(ctx);
    pool_free(pool);
    model_dispose(&m);
    return 0;
}

static int dump_greedy(const char *model, const char *tok, int ngen, const char *ids)
{
    engine_config_t cfg;
    engine_config_init(&cfg);
    cfg.model_path = model;
    cfg.tokenizer_path = tok;
    cfg.threads = 2;
    cfg.prefill_chunk = 3; /* exercise chunked prefill */
    char err[512];
    engine_t *e;
    if (engine_new(&e, &cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    uint32_t t[1024];
    int pt[1024];
    int n = parse_ids(ids, pt, 1024);
    for (int i = 0; i < n; i++)
        t[i] = (uint32_t)pt[i];
    engine_request_t r;
    engine_request_init(&r);
    r.token_ids = t;
    r.n_tokens = (size_t)n;
    r.max_tokens = (uint32_t)ngen;
    r.ignore_eos = true;
    engine_req_t *req;
    if (engine_submit(e, &r, &req, NULL, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    printf("greedy");
    for (int done = 0; !done;) {
        engine_event_t ev[16];
        int k = engine_poll(e, ev, 16);
        for (int i = 0; i < k; i++) {
            if (ev[i].type == ENGINE_EV_TOKEN) printf(" %u", ev[i].token);
            if (ev[i].type != ENGINE_EV_TOKEN) done = 1;
        }
        if (!k) usleep(1000);
    }
    printf("\n");
    engine_req_free(e, req);
    engine_free(e);
    return 0;
}

static int dump_encode(const char *model, const char *tok, const char *text)
{
    engine_config_t cfg;
    engine_config_init(&cfg);
    cfg.model_path = model;
    cfg.tokenizer_path = tok;
    cfg.threads = 1;
    char err[512];
    engine_t *e;
    if (engine_new(&e, &cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    uint32_t out[4096];
    int n = engine_tokenize(e, text, true, out, 4096);
    printf("tokens");
    for (int i = 0; i < n && i < 4096; i++)
        printf(" %u", out[i]);
    printf("\n");
    engine_free(e);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && !strcmp(argv[2], "-")) argv[2] = NULL;
    const char *k = getenv("INFERD_KERNELS");
    if (k && !strcmp(k, "generic")) kernels_force(KERNEL_GENERIC);
    if (argc >= 5 && strcmp(argv[3], "logits") == 0) return dump_logits(argv[1], argv[4]);
    if (argc >= 6 && strcmp(argv[3], "greedy") == 0)
        return dump_greedy(argv[1], argv[2], atoi(argv[4]), argv[5]);
    if (argc >= 5 && strcmp(argv[3], "encode") == 0) return dump_encode(argv[1], argv[2], argv[4]);
    fprintf(stderr, "usage: engine_dump MODEL TOKENIZER logits|greedy N|encode ...\n");
    return 2;
}
