/* Benchmark for metrics/: render time of a registry with many series, and the cost of the hot
 * path (metrics_inc / metrics_observe) single-threaded and with threads contending.
 * Usage: metrics_bench [series=10000] [runs=50] [hist_percent=50] */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "metrics.h"
#include "server/base/clock.h"

static double now_s(void)
{
    return (double)clock_now_ns() / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* A registry shaped like a busy inferd: gRPC-style counters with 4 labels and latency
 * histograms with 3 labels (default 19 buckets), values spread over the series. */
static metrics_registry_t *build(int n_series, int hist_percent)
{
    metrics_registry_t *r;
    if (metrics_registry_new(&r, "inferd_", NULL, 0)) return NULL;
    const char *const cl[] = {"grpc_service", "grpc_method", "grpc_type", "grpc_code", NULL};
    const char *const hl[] = {"grpc_service", "grpc_method", "grpc_type", NULL};
    metrics_family_t *cf[4], *hf[2];
    char name[64];
    for (int i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "bench_counter_%d_total", i);
        if (metrics_counter_new(&cf[i], r, name, "Bench counter.", cl, 0, NULL, 0)) return NULL;
    }
    for (int i = 0; i < 2; i++) {
        snprintf(name, sizeof name, "bench_latency_%d_seconds", i);
        if (metrics_histogram_new(&hf[i], r, name, "Bench histogram.", hl, NULL, 0, 0, NULL, 0))
            return NULL;
    }
    int n_hist = n_series * hist_percent / 100;
    char svc[32], method[32], code[16];
    for (int i = 0; i < n_series; i++) {
        snprintf(svc, sizeof svc, "inferd.v1.Service%d", i % 13);
        snprintf(method, sizeof method, "Method%d", i);
        snprintf(code, sizeof code, "CODE_%d", i % 17);
        if (i < n_hist) {
            const char *const v[] = {svc, method, "server_stream"};
            metrics_series_t *s = metrics_series(hf[i % 2], v);
            for (int k = 0; k < 20; k++)
                metrics_observe(s, 1e-5 * (double)((i * 7 + k * 131) % 100000));
        } else {
            const char *const v[] = {svc, method, "unary", code};
            metrics_series_t *s = metrics_series(cf[i % 4], v);
            metrics_add(s, (double)(i * 37 % 1000003));
        }
    }
    return r;
}

static void bench_render(metrics_registry_t *r, const char *accept, const char *label, int runs)
{
    double *t = malloc(sizeof(double) * (size_t)runs);
    size_t len = 0;
    for (int i = 0; i < runs; i++) {
        char *out;
        double t0 = now_s();
        if (metrics_render(r, accept, &out, &len, NULL) != 0) {
            fprintf(stderr, "render failed\n");
            exit(1);
        }
        t[i] = (now_s() - t0) * 1e3;
        free(out);
    }
    qsort(t, (size_t)runs, sizeof *t, cmp_double);
    printf("render %-11s median %7.2f ms  max %7.2f ms  min %7.2f ms  (%d runs)  output %zu bytes "
           "(%.1f MiB)\n",
           label, t[runs / 2], t[runs - 1], t[0], runs, len, (double)len / (1 << 20));
    free(t);
}

/* A sink that consumes chunks the way an evbuffer append would (copy into a reused buffer). */
static char sink_buf[1 << 17];
static size_t sink_total;
static int sink(void *arg, const char *data, size_t len)
{
    (void)arg;
    memcpy(sink_buf, data, len < sizeof sink_buf ? len : sizeof sink_buf);
    sink_total += len;
    return 0;
}

static void bench_stream(metrics_registry_t *r, metrics_format_t fmt, const char *label, int runs)
{
    double *t = malloc(sizeof(double) * (size_t)runs);
    for (int i = 0; i < runs; i++) {
        sink_total = 0;
        double t0 = now_s();
        if (metrics_render_stream(r, fmt, sink, NULL) != 0) {
            fprintf(stderr, "render failed\n");
            exit(1);
        }
        t[i] = (now_s() - t0) * 1e3;
    }
    qsort(t, (size_t)runs, sizeof *t, cmp_double);
    printf("stream %-11s median %7.2f ms  max %7.2f ms  min %7.2f ms  (%d runs)  output %zu bytes "
           "(64 KiB chunks)\n",
           label, t[runs / 2], t[runs - 1], t[0], runs, sink_total);
    free(t);
}

typedef struct {
    metrics_series_t *s;
    long iters;
    int observe;
    atomic_int *go;
    double secs;
} worker_t;

static void *worker(void *p)
{
    worker_t *w = p;
    while (!atomic_load(w->go))
        ;
    double t0 = now_s();
    if (w->observe)
        for (long i = 0; i < w->iters; i++)
            metrics_observe(w->s, (double)(i & 1023) * 1e-4);
    else
        for (long i = 0; i < w->iters; i++)
            metrics_inc(w->s);
    w->secs = now_s() - t0;
    return NULL;
}

/* ns per operation as seen by each thread (wall time / ops of that thread), worst thread. */
static double bench_threads(metrics_series_t **s, int threads, long iters, int observe)
{
    pthread_t t[16];
    worker_t w[16];
    atomic_int go = 0;
    for (int i = 0; i < threads; i++) {
        w[i] = (worker_t){.s = s[i], .iters = iters, .observe = observe, .go = &go};
        pthread_create(&t[i], NULL, worker, &w[i]);
    }
    atomic_store(&go, 1);
    double worst = 0;
    for (int i = 0; i < threads; i++) {
        pthread_join(t[i], NULL);
        if (w[i].secs > worst) worst = w[i].secs;
    }
    return worst * 1e9 / (double)iters;
}

int main(int argc, char **argv)
{
    int n_series = argc > 1 ? atoi(argv[1]) : 10000;
    int runs = argc > 2 ? atoi(argv[2]) : 50;
    int hist_percent = argc > 3 ? atoi(argv[3]) : 50;
    if (n_series <= 0 || runs <= 0 || hist_percent < 0 || hist_percent > 100) {
        fprintf(stderr, "usage: metrics_bench [series] [runs] [hist_percent]\n");
        return 2;
    }

    double t0 = now_s();
    metrics_registry_t *r = build(n_series, hist_percent);
    if (!r) return 1;
    printf("registry: %d series (%d%% histograms with 19 buckets + %d%% counters), built in "
           "%.1f ms\n",
           n_series, hist_percent, 100 - hist_percent, (now_s() - t0) * 1e3);
    bench_render(r, NULL, "text 0.0.4", runs);
    bench_render(r, "application/openmetrics-text; version=1.0.0", "openmetrics", runs);
    bench_stream(r, METRICS_FORMAT_TEXT, "text 0.0.4", runs);
    bench_stream(r, METRICS_FORMAT_OPENMETRICS, "openmetrics", runs);
    metrics_registry_free(r);

    metrics_registry_t *h;
    if (metrics_registry_new(&h, "", NULL, 0)) return 1;
    metrics_family_t *cf;
    if (metrics_counter_new(&cf, h, "hot_total", "Hot.", NULL, 0, NULL, 0)) return 1;
    const char *const ln[] = {"k", NULL};
    metrics_family_t *cf2;
    if (metrics_counter_new(&cf2, h, "hot2_total", "Hot.", ln, 0, NULL, 0)) return 1;
    metrics_family_t *hf;
    if (metrics_histogram_new(&hf, h, "hot_seconds", "Hot.", NULL, NULL, 0, 0, NULL, 0)) return 1;
    metrics_series_t *same[2] = {metrics_series(cf, NULL), metrics_series(cf, NULL)};
    const char *const a[] = {"a"}, *const b[] = {"b"};
    metrics_series_t *apart[2] = {metrics_series(cf2, a), metrics_series(cf2, b)};
    metrics_series_t *hs[2] = {metrics_series(hf, NULL), metrics_series(hf, NULL)};
    const long iters = 50000000;
    bench_threads(same, 1, iters / 10, 0); /* warm up */
    printf("metrics_inc     1 thread                 %6.2f ns/op\n",
           bench_threads(same, 1, iters, 0));
    printf("metrics_inc     2 threads, same series   %6.2f ns/op per thread\n",
           bench_threads(same, 2, iters, 0));
    printf("metrics_inc     2 threads, own series    %6.2f ns/op per thread\n",
           bench_threads(apart, 2, iters, 0));
    printf("metrics_observe 1 thread                 %6.2f ns/op\n",
           bench_threads(hs, 1, iters / 5, 1));
    printf("metrics_observe 2 threads, same series   %6.2f ns/op per thread\n",
           bench_threads(hs, 2, iters / 5, 1));
    /* sanity: no lost increments (warm-up, 1 thread, 2 threads on the same series) */
    double expect = (double)(iters / 10) + 3.0 * (double)iters;
    if (metrics_value(same[0]) != expect) {
        fprintf(stderr, "lost increments: %.0f != %.0f\n", metrics_value(same[0]), expect);
        return 1;
    }
    metrics_registry_free(h);
    return 0;
}
