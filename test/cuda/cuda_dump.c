/*
 * cuda_dump - what the CUDA backend computes, for test/cuda/gpu_reference.py (exit 77
 * where no GPU is usable; the script passes that on as "skipped"):
 *   cuda_dump MODEL TOKENIZER DTYPE logits|logits_batched ID,ID,...
 *        -> "logits <pos> <v0> ..." per position (see dump_logits for the two shapes)
 *   cuda_dump MODEL TOKENIZER DTYPE greedy N ID,...   -> "greedy <t1> ..." via the engine API
 */
#include "engine/engine.h"
#include "engine/internal.h"

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

/* batched = 0: one backend slot, one position per forward (decode-shaped: CUDA graphs).
 * batched = 1: slot t holds the prefix [0, t]; one eager forward of every row over 4
 * lanes, logits at each slot's last row. */
static int dump_logits(const char *path, int bf16, int batched, const char *ids)
{
    char err[512];
    const backend_lib_t *lib;
    if (backend_lib_open(&lib, err, sizeof err) < 0 || lib->probe(0, err, sizeof err) < 0) {
        printf("SKIP: %s\n", err);
        return 77;
    }
    model_t m;
    if (model_load(&m, path, 0, err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    int toks[1024];
    int n = parse_ids(ids, toks, 1024);
    int nrows = batched ? n * (n + 1) / 2 : 1, nslots = batched ? n : 1;
    backend_opts_t o = {.device = 0, .streams = batched ? 4 : 1, .bf16 = bf16};
    void *ctx;
    const backend_t *be = lib->backend;
    if (be->load(&ctx, &m.v, &o, NULL, nrows, nslots, err, sizeof err) < 0) {
        fprintf(stderr, "cuda backend: %s\n", err);
        return 1;
    }
    size_t V = (size_t)m.v.c.vocab_size;
    fwd_row_t *rows = calloc((size_t)nrows, sizeof(*rows));
    float *logits = malloc((size_t)n * V * sizeof(float));
    int rc = 0;
    for (int s = 0; s < nslots; s++)
        if (be->seq_alloc(ctx, s, n) < 0) rc = 1;
    if (batched) {
        int r = 0;
        for (int s = 0; s < n; s++)
            for (int p = 0; p <= s; p++)
                rows[r++] = (fwd_row_t){s, p, toks[p], p == s ? s : -1};
        if (!rc && be->forward(ctx, rows, nrows, logits) < 0) rc = 1;
    } else {
        for (int t = 0; t < n && !rc; t++) {
            rows[0] = (fwd_row_t){0, t, toks[t], 0};
            if (be->forward(ctx, rows, 1, logits + (size_t)t * V) < 0) rc = 1;
        }
    }
    if (rc) {
        fprintf(stderr, "forward: %s\n", be->error ? be->error(ctx) : "?");
        return 1;
    }
    for (int t = 0; t < n; t++) {
        printf("logits %d", t);
        for (size_t v = 0; v < V; v++)
            printf(" %.9g", (double)logits[(size_t)t * V + v]);
        printf("\n");
    }
    free(rows);
    free(logits);
    be->free(ctx);
    model_dispose(&m);
    return 0;
}

static int dump_greedy(const char *model, const char *tok, const char *dtype, int ngen,
                       const char *ids)
{
    engine_config_t cfg;
    engine_config_init(&cfg);
    cfg.model_path = model;
    cfg.tokenizer_path = tok;
    cfg.threads = 2;
    cfg.prefill_chunk = 3;
    cfg.device = "cuda";
    cfg.dtype = dtype;
    char err[512];
    engine_t *e;
    if (engine_new(&e, &cfg, err, sizeof err) < 0) {
        printf("SKIP: %s\n", err);
        return 77;
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
    if (engine_submit(e, &r, &req, NULL, err, sizeof err) < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    printf("greedy");
    int rc = 0;
    for (int done = 0; !done;) {
        engine_event_t ev[16];
        int k = engine_poll(e, ev, 16);
        for (int i = 0; i < k; i++) {
            if (ev[i].type == ENGINE_EV_TOKEN) printf(" %u", ev[i].token);
            if (ev[i].type == ENGINE_EV_ERROR) {
                fprintf(stderr, "error: %s\n", ev[i].text);
                rc = 1;
            }
            if (ev[i].type != ENGINE_EV_TOKEN) done = 1;
        }
        if (!k) usleep(1000);
    }
    printf("\n");
    engine_req_free(e, req);
    engine_free(e);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc >= 6 && !strncmp(argv[4], "logits", 6))
        return dump_logits(argv[1], !strcmp(argv[3], "bf16"), !strcmp(argv[4], "logits_batched"),
                           argv[5]);
    if (argc >= 7 && !strcmp(argv[4], "greedy"))
        return dump_greedy(argv[1], argv[2], argv[3], atoi(argv[5]), argv[6]);
    fprintf(
        stderr,
        "usage: cuda_dump MODEL TOKENIZER fp32|bf16 logits|logits_batched IDS | greedy N IDS\n");
    return 2;
}
