/*
 * engine_core_bench - engine-only throughput (no server): for each concurrency N,
 * N greedy streams of T tokens each; prints single-stream decode tokens/s and the
 * aggregate tokens/s. Usage: engine_core_bench MODEL TOKENIZER [threads] [tokens] [N...]
 */
#include "engine.h"

#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void on_notify(void *arg)
{
    int fd = *(int *)arg;
    char c = 1;
    ssize_t r = write(fd, &c, 1);
    (void)r;
}

static int run(const char *model, const char *tok, int threads, int tokens, int n)
{
    int pfd[2];
    if (pipe2(pfd, O_NONBLOCK | O_CLOEXEC) < 0) return 1;
    engine_config_t cfg;
    engine_config_init(&cfg);
    cfg.model_path = model;
    cfg.tokenizer_path = tok;
    cfg.threads = threads;
    cfg.max_batch = n;
    cfg.max_queued = n;
    cfg.max_backlog = tokens + 1;
    cfg.notify = on_notify;
    cfg.notify_arg = &pfd[1];
    char err[512];
    engine_t *e;
    if (engine_new(&e, &cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    engine_model_info_t mi;
    engine_model_info(e, &mi);
    if ((uint32_t)tokens + 8 > mi.max_seq_len) tokens = (int)mi.max_seq_len - 8;
    engine_req_t **reqs = calloc((size_t)n, sizeof(*reqs));
    uint64_t *first = calloc((size_t)n, 8), *last = calloc((size_t)n, 8);
    int *count = calloc((size_t)n, sizeof(int));
    uint64_t t0 = engine_now_ns();
    for (int i = 0; i < n; i++) {
        uint32_t ids[8] = {1, (uint32_t)(10 + i) % mi.vocab_size, 200, 300, 17};
        engine_request_t r;
        engine_request_init(&r);
        r.token_ids = ids;
        r.n_tokens = 5;
        r.max_tokens = (uint32_t)tokens;
        r.ignore_eos = true;
        r.user = (void *)(intptr_t)i;
        if (engine_submit(e, &r, &reqs[i], NULL, err, sizeof(err)) < 0) {
            fprintf(stderr, "submit: %s\n", err);
            return 1;
        }
    }
    int done = 0;
    engine_event_t ev[64];
    while (done < n) {
        struct pollfd p = {pfd[0], POLLIN, 0};
        poll(&p, 1, 100);
        char buf[64];
        while (read(pfd[0], buf, sizeof(buf)) > 0) {
        }
        int k;
        while ((k = engine_poll(e, ev, 64)) > 0) {
            for (int j = 0; j < k; j++) {
                int i = (int)(intptr_t)ev[j].user;
                if (ev[j].type == ENGINE_EV_TOKEN) {
                    if (!count[i]++) first[i] = ev[j].t_ns;
                    last[i] = ev[j].t_ns;
                } else {
                    done++;
                    engine_req_free(e, reqs[i]);
                }
            }
        }
    }
    uint64_t t1 = engine_now_ns();
    long total = 0;
    double decode = 0, ttft = 0;
    for (int i = 0; i < n; i++) {
        total += count[i];
        decode += (count[i] - 1) / ((double)(last[i] - first[i]) / 1e9);
        ttft += (double)(first[i] - t0) / 1e6;
    }
    printf("streams %3d  threads %d  tokens/stream %d  aggregate %8.1f tok/s  per-stream "
           "decode %7.1f tok/s  mean ttft %.1f ms\n",
           n, threads, tokens, (double)total / ((double)(t1 - t0) / 1e9), decode / n, ttft / n);
    fflush(stdout);
    free(reqs);
    free(first);
    free(last);
    free(count);
    engine_free(e);
    close(pfd[0]);
    close(pfd[1]);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: engine_core_bench MODEL TOKENIZER [threads] [tokens] [N...]\n");
        return 2;
    }
    int threads = argc > 3 ? atoi(argv[3]) : 0;
    int tokens = argc > 4 ? atoi(argv[4]) : 200;
    if (argc <= 5) {
        int ns[] = {1, 4, 16, 64};
        for (int i = 0; i < 4; i++)
            if (run(argv[1], argv[2], threads, tokens, ns[i])) return 1;
    }
    for (int a = 5; a < argc; a++)
        if (run(argv[1], argv[2], threads, tokens, atoi(argv[a]))) return 1;
    return 0;
}
