/*
 * engine_core_bench - engine-only throughput (no server): for each concurrency N,
 * N greedy streams of T tokens each; prints single-stream decode tokens/s, the
 * aggregate tokens/s, the time to first token, the weight bytes a decode step reads and
 * the bandwidth that implies, and the process's resident memory while the N streams
 * decode. "steady-decode" is the aggregate over the span in which every stream decodes (from
 * the last stream's first token to the first stream's last), the figure llama-batched-bench's
 * S_TG reports (it runs every prompt first, then times the decode of all sequences at once);
 * "decode-aggregate" includes the steps that still ran later streams' prompts. -w first runs
 * the same N streams with other prompt ids for 2 tokens, untimed (llama-bench warms up the same
 * way before it times a prompt: the first pass over a fresh process's buffers and mapped
 * weights pays their page faults). -H sets the engine's hugepages mode (the server's
 * --hugepages; default auto); what it did goes to stderr ("weights: ..."). -K sets the KV
 * cache's elements (f32 or f16, the server's --kv-cache-type; default $INFERD_KV_CACHE_TYPE,
 * else f32).
 * Usage: engine_core_bench [-p PROMPT_TOKENS] [-c CTX] [-b PREFILL_CHUNK] [-w] [-H MODE]
 *                          [-K f32|f16] MODEL TOKENIZER|- [threads] [tokens] [N...]
 */
#include "engine.h"
#include "load.h"

#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <stdint.h>
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

static int prompt_len = 5, ctx_size, prefill_chunk, warmup;
static const char *hugepages;
static const char *kv_cache_type;

/* VmRSS of this process in MiB (the sampling point is the caller's choice) */
static double rss_mib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double kib = 0;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %lf", &kib) == 1) break;
    if (f) fclose(f);
    return kib / 1024.0;
}

/* Submits n streams of `tokens` tokens (prompt ids varied by stream and by salt) and waits
 * for all; records each token's time when stamp is non-NULL. Returns 0 or 1 (printed). */
static int wave(engine_t *e, int pfd, const engine_model_info_t *mi, int n, int tokens, int salt,
                uint64_t *first, uint64_t *last, int *count, uint64_t *stamp, double *rss)
{
    char err[512];
    uint32_t *ids = calloc((size_t)prompt_len, sizeof(uint32_t));
    engine_req_t **reqs = calloc((size_t)n, sizeof(*reqs));
    if (!ids || !reqs) {
        fprintf(stderr, "out of memory\n");
        free(ids);
        free(reqs);
        return 1;
    }
    for (int i = 0; i < n; i++) {
        bench_prompt_ids(ids, prompt_len, mi->bos_id, i + salt, mi->vocab_size);
        engine_request_t r;
        engine_request_init(&r);
        r.token_ids = ids;
        r.n_tokens = (size_t)prompt_len;
        r.max_tokens = (uint32_t)tokens;
        r.ignore_eos = true;
        r.user = (void *)(intptr_t)i;
        if (engine_submit(e, &r, &reqs[i], NULL, err, sizeof(err)) < 0) {
            fprintf(stderr, "submit: %s\n", err);
            for (int j = 0; j < i; j++) /* cancels them */
                engine_req_free(e, reqs[j]);
            free(ids);
            free(reqs);
            return 1;
        }
    }
    int done = 0;
    engine_event_t ev[64];
    while (done < n) {
        struct pollfd p = {pfd, POLLIN, 0};
        poll(&p, 1, 100);
        char buf[64];
        while (read(pfd, buf, sizeof(buf)) > 0) {
        }
        int k;
        while ((k = engine_poll(e, ev, 64)) > 0) {
            for (int j = 0; j < k; j++) {
                int i = (int)(intptr_t)ev[j].user;
                if (ev[j].type != ENGINE_EV_TOKEN) {
                    done++;
                    engine_req_free(e, reqs[i]);
                    continue;
                }
                if (!stamp) continue;
                if (count[i] == tokens / 2 && *rss == 0) *rss = rss_mib(); /* all decoding */
                if (count[i] < tokens)
                    stamp[(size_t)i * (size_t)tokens + (size_t)count[i]] = ev[j].t_ns;
                if (!count[i]++) first[i] = ev[j].t_ns;
                last[i] = ev[j].t_ns;
            }
        }
    }
    free(ids);
    free(reqs);
    return 0;
}

static int run(const char *model, const char *tok, int threads, int tokens, int n)
{
    int pfd[2];
    if (pipe2(pfd, O_NONBLOCK | O_CLOEXEC) < 0) return 1;
    engine_config_t cfg;
    engine_config_init(&cfg);
    cfg.model_path = model;
    cfg.tokenizer_path = strcmp(tok, "-") ? tok : NULL;
    cfg.ctx_size = ctx_size;
    cfg.prefill_chunk = prefill_chunk;
    cfg.threads = threads;
    cfg.max_batch = n;
    cfg.max_queued = n;
    cfg.max_backlog = tokens + 1;
    cfg.notify = on_notify;
    cfg.notify_arg = &pfd[1];
    cfg.hugepages = hugepages;
    cfg.kv_cache_type = kv_cache_type;
    char err[512];
    engine_t *e;
    if (engine_new(&e, &cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    engine_model_info_t mi;
    engine_model_info(e, &mi);
    fprintf(stderr, "weights: %s\n", mi.weights_note);
    if ((uint32_t)(tokens + prompt_len) + 4 > mi.max_seq_len)
        tokens = (int)mi.max_seq_len - prompt_len - 4;
    double rss = 0;
    uint64_t *first = calloc((size_t)n, 8), *last = calloc((size_t)n, 8);
    int *count = calloc((size_t)n, sizeof(int));
    uint64_t *stamp = calloc((size_t)n * (size_t)tokens, 8); /* (n, tokens) token times */
    if (warmup && wave(e, pfd[0], &mi, n, 2, n + 1000, NULL, NULL, NULL, NULL, NULL)) return 1;
    uint64_t t0 = engine_now_ns();
    if (wave(e, pfd[0], &mi, n, tokens, 0, first, last, count, stamp, &rss)) return 1;
    uint64_t t1 = engine_now_ns();
    long total = 0, after_first = 0;
    double decode = 0, ttft = 0;
    uint64_t dec0 = UINT64_MAX, dec1 = 0;
    for (int i = 0; i < n; i++) {
        total += count[i];
        after_first += count[i] - 1;
        decode += (count[i] - 1) / ((double)(last[i] - first[i]) / 1e9);
        ttft += (double)(first[i] - t0) / 1e6;
        if (first[i] < dec0) dec0 = first[i];
        if (last[i] > dec1) dec1 = last[i];
    }
    /* decode-only aggregate: tokens after each stream's first over the span from the first
     * first token to the last token (llama-batched-bench's S_TG counts the same way) */
    double dec_agg = (double)after_first / ((double)(dec1 - dec0) / 1e9);
    /* steady decode (tools/bench/load.h); the decode-only aggregate if no span is shared */
    bench_stream_t *bs = calloc((size_t)n, sizeof *bs);
    double steady = -1;
    if (bs) {
        for (int i = 0; i < n; i++)
            bs[i] = (bench_stream_t){first[i], last[i], stamp + (size_t)i * (size_t)tokens,
                                     count[i] < tokens ? count[i] : tokens};
        steady = bench_steady(bs, n);
        free(bs);
    }
    if (steady < 0) steady = dec_agg;
    double step_mb = (double)mi.step_weight_bytes / 1e6;
    printf("streams %3d  threads %d  tokens/stream %d  prompt %d  aggregate %8.1f tok/s  "
           "decode-aggregate %8.1f tok/s  steady-decode %8.1f tok/s  per-stream decode %7.1f tok/s "
           " mean ttft %.1f ms  "
           "weights/step %.1f MB  weight-read %.1f GB/s  rss %.1f MiB  kv %.1f MiB  weights %.1f "
           "MiB\n",
           n, threads, tokens, prompt_len, (double)total / ((double)(t1 - t0) / 1e9), dec_agg,
           steady, decode / n, ttft / n, step_mb, step_mb * (decode / n) / 1e3, rss,
           (double)mi.kv_cache_bytes / 1048576.0, (double)mi.weight_bytes / 1048576.0);
    fflush(stdout);
    free(first);
    free(last);
    free(count);
    free(stamp);
    engine_free(e);
    close(pfd[0]);
    close(pfd[1]);
    return 0;
}

int main(int argc, char **argv)
{
    int o;
    kv_cache_type = getenv("INFERD_KV_CACHE_TYPE");
    while ((o = getopt(argc, argv, "+p:c:b:wH:K:")) != -1) {
        if (o == 'p')
            prompt_len = atoi(optarg);
        else if (o == 'c')
            ctx_size = atoi(optarg);
        else if (o == 'b')
            prefill_chunk = atoi(optarg);
        else if (o == 'w')
            warmup = 1;
        else if (o == 'H')
            hugepages = optarg;
        else if (o == 'K')
            kv_cache_type = optarg;
        else
            return 2;
    }
    argc -= optind - 1;
    argv += optind - 1;
    if (argc < 3 || prompt_len < 1) {
        fprintf(stderr, "usage: engine_core_bench [-p PROMPT_TOKENS] [-c CTX] [-b PREFILL_CHUNK] "
                        "[-w] [-H auto|on|off] [-K f32|f16] MODEL TOKENIZER|- [threads] [tokens] "
                        "[N...]\n");
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
