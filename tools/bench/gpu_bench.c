/*
 * gpu_bench - decode throughput and step time for tools/bench/gpu.sh.
 *   gpu_bench MODEL TOKENIZER DEVICE DTYPE STREAMS TOKENS CONC [CONC...]
 * For each concurrency C: an engine on DEVICE (cpu, cuda:N) with max_batch C, a warm-up
 * round (captures the decode graphs), then C greedy requests of TOKENS tokens from BOS,
 * timed. Prints one line per C: aggregate and per-stream tokens/s, mean wall time per
 * batched step, mean device time per step (GPU), and for C = 1 on a GPU the bandwidth
 * bound: weight bytes read per step / measured device bandwidth.
 */
#include "cuda/cuda_backend.h"
#include "engine/engine.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int run_round(engine_t *e, int conc, int tokens, double *secs, uint64_t *ntok)
{
    engine_req_t **reqs = calloc((size_t)conc, sizeof(*reqs));
    uint32_t bos = 1;
    char err[256];
    uint64_t t0 = engine_now_ns();
    for (int i = 0; i < conc; i++) {
        engine_request_t r;
        engine_request_init(&r);
        r.token_ids = &bos;
        r.n_tokens = 1;
        r.max_tokens = (uint32_t)tokens;
        r.ignore_eos = true;
        if (engine_submit(e, &r, &reqs[i], NULL, err, sizeof err) < 0) {
            fprintf(stderr, "submit: %s\n", err);
            return -1;
        }
    }
    int done = 0, failed = 0;
    uint64_t got = 0;
    engine_event_t ev[256];
    while (done < conc) {
        int k = engine_poll(e, ev, 256);
        for (int i = 0; i < k; i++) {
            if (ev[i].type == ENGINE_EV_TOKEN)
                got++;
            else {
                done++;
                if (ev[i].type == ENGINE_EV_ERROR) {
                    failed++;
                    fprintf(stderr, "request failed: %s\n", ev[i].text);
                }
            }
        }
        if (!k) usleep(100);
    }
    *secs = (double)(engine_now_ns() - t0) / 1e9;
    *ntok = got;
    for (int i = 0; i < conc; i++)
        engine_req_free(e, reqs[i]);
    free(reqs);
    return failed ? -1 : 0;
}

int main(int argc, char **argv)
{
    if (argc < 8) {
        fprintf(stderr, "usage: gpu_bench MODEL TOKENIZER DEVICE DTYPE STREAMS TOKENS CONC...\n");
        return 2;
    }
    const char *dev = argv[3], *dtype = argv[4];
    int streams = atoi(argv[5]), tokens = atoi(argv[6]);
    double bw = 0;
    char err[512];
    if (strncmp(dev, "cuda", 4) == 0) {
        int idx = dev[4] == ':' ? atoi(dev + 5) : 0;
        if (cuda_measure_bandwidth(idx, &bw, err, sizeof err) < 0) {
            fprintf(stderr, "bandwidth: %s\n", err);
            return 77;
        }
        printf("device %s: measured copy bandwidth %.0f GB/s\n", dev, bw / 1e9);
    }
    for (int a = 7; a < argc; a++) {
        int conc = atoi(argv[a]);
        engine_config_t cfg;
        engine_config_init(&cfg);
        cfg.model_path = argv[1];
        cfg.tokenizer_path = argv[2];
        cfg.device = dev;
        cfg.dtype = dtype;
        cfg.cuda_streams = streams;
        const char *th = getenv("INFERD_THREADS");
        cfg.threads = th ? atoi(th) : 0;
        cfg.max_batch = conc;
        cfg.max_queued = conc + 16;
        cfg.max_backlog = tokens + 1;
        engine_t *e;
        if (engine_new(&e, &cfg, err, sizeof err) < 0) {
            fprintf(stderr, "engine: %s\n", err);
            return 1;
        }
        engine_model_info_t mi;
        engine_model_info(e, &mi);
        if (a == 7)
            printf("model %s: %llu parameters; %s\n", argv[1], (unsigned long long)mi.parameters,
                   mi.device_note);
        double secs;
        uint64_t ntok;
        if (run_round(e, conc, tokens < 16 ? tokens : 16, &secs, &ntok) < 0) return 1; /* warm-up */
        engine_stats_t s0, s1;
        engine_device_stats_t d0, d1;
        engine_stats(e, &s0);
        engine_device_stats(e, &d0);
        if (run_round(e, conc, tokens, &secs, &ntok) < 0) return 1;
        engine_stats(e, &s1);
        engine_device_stats(e, &d1);
        uint64_t steps = s1.steps_total - s0.steps_total;
        double step_us = steps ? (double)(s1.step_ns_total - s0.step_ns_total) / steps / 1e3 : 0;
        uint64_t gsteps = d1.gpu_steps - d0.gpu_steps;
        double gstep_us =
            gsteps ? (double)(d1.gpu_step_ns_total - d0.gpu_step_ns_total) / gsteps / 1e3 : 0;
        printf("%s %s streams %d conc %3d: %10.0f tok/s aggregate, %8.1f tok/s per stream, "
               "step %.1f us wall",
               dev, dtype, streams, conc, ntok / secs, ntok / secs / conc, step_us);
        if (gsteps) printf(", %.1f us device per lane step", gstep_us);
        if (bw > 0 && conc == 1) {
            double bytes = (double)mi.parameters * (strcmp(dtype, "bf16") ? 4.0 : 2.0);
            double bound_us = bytes / bw * 1e6;
            printf(", bandwidth bound %.1f us (%.0f MB/step): %.2fx", bound_us, bytes / 1e6,
                   (gsteps ? gstep_us : step_us) / bound_us);
        }
        if (d1.has_memory)
            printf(", device memory %.0f/%.0f MiB (engine %.0f)", d1.mem_used / 1048576.0,
                   d1.mem_total / 1048576.0, d1.mem_backend / 1048576.0);
        printf("\n");
        fflush(stdout);
        engine_free(e);
    }
    return 0;
}
