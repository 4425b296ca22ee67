/*
 * The load the benchmarks send and the figure they print, shared by engine_core_bench
 * (tools/bench/engine_core.c, the engine alone) and `inferctl bench` (through the server), so
 * the two compare: the same prompt ids per stream, and steady decode counted the same way
 * (llama-batched-bench's S_TG: every prompt done, all sequences decoding).
 */
#ifndef INFERD_TOOLS_BENCH_LOAD_H
#define INFERD_TOOLS_BENCH_LOAD_H

#include <stdint.h>

/** One stream's token times: the first and last, and stamps[0 .. n - 1] of the tokens. */
typedef struct {
    uint64_t first, last;
    const uint64_t *stamps;
    long n;
} bench_stream_t;

/** The prompt of stream v, len ids: bos, 10 + v, 200, 300, 17 (the 5-token prompt of the
 * first runs), then 1000 + 7 t + 13 v, so streams differ at every position; modulo vocab when
 * vocab is not 0. */
static inline void bench_prompt_ids(uint32_t *ids, int len, uint32_t bos, int v, uint32_t vocab)
{
    const uint32_t base[5] = {bos, (uint32_t)(10 + v), 200, 300, 17};
    for (int t = 0; t < len; t++) {
        uint32_t id = t < 5 ? base[t] : (uint32_t)(1000 + 7 * t + 13 * v);
        ids[t] = vocab ? id % vocab : id;
    }
}

/** Steady decode, tokens/s: the tokens stamped in (the last stream's first token, the first
 * stream's last token] over that span; -1 when the span is empty (a stream ended before
 * another began). */
static inline double bench_steady(const bench_stream_t *s, int n)
{
    uint64_t s0 = 0, s1 = UINT64_MAX;
    for (int i = 0; i < n; i++) {
        if (s[i].first > s0) s0 = s[i].first;
        if (s[i].last < s1) s1 = s[i].last;
    }
    if (n < 1 || s1 <= s0) return -1;
    long in_span = 0;
    for (int i = 0; i < n; i++)
        for (long k = 0; k < s[i].n; k++)
            in_span += s[i].stamps[k] > s0 && s[i].stamps[k] <= s1;
    return (double)in_span / ((double)(s1 - s0) / 1e9);
}

#endif
