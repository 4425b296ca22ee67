/* Benchmark: a /metrics scrape of a real inferd server whose registry holds many series.
 * Two figures:
 *   loop  — http_serve() of GET /metrics (the route table's /metrics route), i.e. how long one
 * scrape holds the reactor (collectors + rendering, + gzip for bodies under 256 KiB; larger ones
 * are gzipped on a helper thread), measured in this thread on the server's registry; http  — a
 * whole scrape over HTTP/1.1 on 127.0.0.1 as a client sees it (request sent to last body byte
 * read), the server's loop running in its own thread. The series are shaped like a busy inferd
 * (metrics_bench.c): gRPC counters with 4 labels on grpc_server_handled_total and latency
 * histograms on grpc_server_handling_seconds, added to the server's own registry next to its
 * standard set. Usage: scrape_bench [series=10000] [runs=50] [hist_percent=50] */
#include <arpa/inet.h>
#include <event2/thread.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "metrics/inferd_metrics.h"
#include "metrics/metrics.h"
#include "server/base/clock.h"
#include "server/base/config.h"
#include "server/base/log.h"
#include "server/core/conn.h"
#include "server/core/server.h"

static double now_s(void)
{
    return (double)clock_now_ns() / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Adds n_series series to the server's gRPC families; returns how many exposition lines
 * (samples) they add. */
static long add_series(server_t *s, int n_series, int hist_percent)
{
    int n_hist = n_series * hist_percent / 100;
    size_t nb;
    metrics_default_buckets(&nb);
    long samples = 0;
    char svc[32], method[32];
    static const char *codes[] = {
        "OK",        "CANCELLED",          "UNKNOWN",       "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
        "NOT_FOUND", "RESOURCE_EXHAUSTED", "UNIMPLEMENTED", "INTERNAL",         "UNAVAILABLE"};
    for (int i = 0; i < n_series; i++) {
        snprintf(svc, sizeof svc, "bench.v1.Service%d", i % 13);
        snprintf(method, sizeof method, "Method%d", i);
        if (i < n_hist) {
            const char *const v[] = {svc, method, "server_stream"};
            metrics_series_t *x = metrics_series(s->m->grpc_handling, v);
            for (int k = 0; k < 20; k++)
                metrics_observe(x, 1e-5 * (double)((i * 7 + k * 131) % 100000));
            samples += (long)nb + 3;
        } else {
            const char *const v[] = {svc, method, "unary", codes[i % 10]};
            metrics_add(metrics_series(s->m->grpc_handled, v), (double)(i * 37 % 1000003));
            samples++;
        }
    }
    return samples;
}

static void report(const char *what, double *t, int runs, size_t bytes)
{
    qsort(t, (size_t)runs, sizeof *t, cmp_double);
    printf("%-34s median %7.2f ms  p90 %7.2f ms  max %7.2f ms  min %7.2f ms  body %8zu bytes\n",
           what, t[runs / 2], t[runs * 9 / 10], t[runs - 1], t[0], bytes);
}

static void bench_loop(server_t *s, const char *what, const char *accept, const char *ae, int runs)
{
    double *t = malloc(sizeof(double) * (size_t)runs);
    size_t len = 0;
    for (int i = 0; i < runs; i++) {
        http_response_t r;
        double t0 = now_s();
        http_serve(s, &s->listeners[0], "GET", "/metrics", accept, ae, "bench", &r);
        t[i] = (now_s() - t0) * 1e3;
        if (r.status != 200) {
            fprintf(stderr, "status %d\n", r.status);
            exit(1);
        }
        len = r.len;
        http_response_dispose(&r);
    }
    report(what, t, runs, len);
    free(t);
}

/* One HTTP/1.1 GET /metrics on a new connection; returns the body length (0 on error). */
static size_t http_scrape(int port, const char *extra, char *buf, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
    if (connect(fd, (struct sockaddr *)&a, sizeof a)) return close(fd), 0;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    char req[512];
    int n =
        snprintf(req, sizeof req,
                 "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n%sConnection: close\r\n\r\n", extra);
    if (write(fd, req, (size_t)n) != n) return close(fd), 0;
    size_t have = 0;
    for (;;) {
        ssize_t k = read(fd, buf + have, cap - have);
        if (k <= 0) break;
        have += (size_t)k;
        if (have == cap) break;
    }
    close(fd);
    char *body = memmem(buf, have, "\r\n\r\n", 4);
    if (strncmp(buf, "HTTP/1.1 200", 12) || !body) return 0;
    return have - (size_t)(body + 4 - buf);
}

static void bench_http(int port, const char *what, const char *extra, int runs)
{
    static char buf[64 << 20];
    double *t = malloc(sizeof(double) * (size_t)runs);
    size_t len = 0;
    for (int i = 0; i < runs; i++) {
        double t0 = now_s();
        len = http_scrape(port, extra, buf, sizeof buf);
        t[i] = (now_s() - t0) * 1e3;
        if (!len) {
            fprintf(stderr, "http scrape failed\n");
            exit(1);
        }
    }
    report(what, t, runs, len);
    free(t);
}

static void *loop_main(void *arg)
{
    server_run(arg);
    return NULL;
}

int main(int argc, char **argv)
{
    int n_series = argc > 1 ? atoi(argv[1]) : 10000;
    int runs = argc > 2 ? atoi(argv[2]) : 50;
    int hist_percent = argc > 3 ? atoi(argv[3]) : 50;
    evthread_use_pthreads(); /* as main.c: a large gzip finishes from a helper thread */
    if (n_series < 0 || runs < 1 || hist_percent < 0 || hist_percent > 100) {
        fprintf(stderr, "usage: scrape_bench [series] [runs] [hist_percent]\n");
        return 2;
    }
    char *args[] = {
        "scrape_bench", "--listen",         "127.0.0.1:0", "--system-port",   "-1", "--log",
        "warn",         "--shutdown-delay", "0",           "--drain-timeout", "1s", NULL};
    config_t cfg;
    char err[256];
    if (config_load(&cfg, 11, args, (char *[]){NULL}, err, sizeof err) ||
        log_configure(cfg.log_spec, 0, err, sizeof err)) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    struct event_base *base = event_base_new();
    metrics_registry_t *reg;
    inferd_metrics_t m;
    server_t *s;
    if (!base || metrics_registry_new(&reg, cfg.metrics_prefix, err, sizeof err) ||
        inferd_metrics_init(&m, reg)) {
        fprintf(stderr, "setup: %s\n", err);
        return 1;
    }
    server_options_t so = {.base = base, .cfg = &cfg, .reg = reg, .m = &m};
    if (server_new(&s, &so, err, sizeof err)) {
        fprintf(stderr, "server_new: %s\n", err);
        return 1;
    }
    double t0 = now_s();
    long samples = add_series(s, n_series, hist_percent);
    printf("%d series (%d%% histograms, %ld samples) added in %.1f ms\n", n_series, hist_percent,
           samples, (now_s() - t0) * 1e3);

    /* The loop is idle here (not started): http_serve is exactly what a scrape runs on it. */
    bench_loop(s, "loop: text 0.0.4", NULL, NULL, runs);
    bench_loop(s, "loop: text 0.0.4, gzip", NULL, "gzip", runs);
    bench_loop(s, "loop: openmetrics, gzip", "application/openmetrics-text;version=1.0.0", "gzip",
               runs);
    {
        double *t = malloc(sizeof(double) * (size_t)runs);
        size_t len = 0;
        for (int i = 0; i < runs; i++) {
            char *out;
            double a = now_s();
            metrics_render(s->reg, NULL, &out, &len, NULL);
            t[i] = (now_s() - a) * 1e3;
            free(out);
        }
        report("(metrics_render alone, text)", t, runs, len);
        free(t);
    }

    pthread_t th;
    pthread_create(&th, NULL, loop_main, s);
    usleep(100000);
    int port = server_port(s, 0);
    bench_http(port, "http/1.1: text 0.0.4", "", runs);
    bench_http(port, "http/1.1: text 0.0.4, gzip", "Accept-Encoding: gzip\r\n", runs);
    bench_http(port, "http/1.1: prometheus' Accept, gzip",
               "Accept: application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
               "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1\r\n"
               "Accept-Encoding: gzip\r\n",
               runs);
    kill(getpid(), SIGTERM);
    pthread_join(th, NULL);
    server_free(s);
    inferd_metrics_dispose(&m);
    metrics_registry_free(reg);
    event_base_free(base);
    log_flush();
    config_dispose(&cfg);
    return 0;
}
