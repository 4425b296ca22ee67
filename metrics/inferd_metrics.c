/* The standard inferd metric set. */
#include <errno.h>
#include <string.h>

#include "inferd_metrics.h"

/* Whole generations can outlast the default 60 s top bucket. */
static const double request_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                         0.1,    0.25,  0.5,    1,     2.5,  5,     10,
                                         30,     60,    120,    300,   600};

static double mono_since(const struct timespec *start)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

double inferd_metrics_uptime_seconds(const inferd_metrics_t *m)
{
    return mono_since(&m->start);
}

void inferd_metrics_set_start(inferd_metrics_t *m, const struct timespec *mono_start)
{
    m->start = *mono_start;
}

void inferd_metrics_set_log_dropped_source(inferd_metrics_t *m, unsigned long (*fn)(void))
{
    m->log_dropped = fn;
}

void inferd_metrics_dispose(inferd_metrics_t *m)
{
    if (m) {
        struct timespec start = m->start;
        memset(m, 0, sizeof *m);
        m->start = start;
    }
}

static void collect(void *arg)
{
    inferd_metrics_t *m = arg;
    metrics_set(m->uptime_s, inferd_metrics_uptime_seconds(m));
    if (m->log_dropped) metrics_set(m->log_lines_dropped_s, (double)m->log_dropped());
}

int inferd_metrics_init(inferd_metrics_t *m, metrics_registry_t *r)
{
    if (!m || !r) return -EINVAL;
    memset(m, 0, sizeof *m);
    clock_gettime(CLOCK_MONOTONIC, &m->start);

    static const char *const grpc3[] = {"grpc_service", "grpc_method", "grpc_type", NULL};
    static const char *const grpc4[] = {"grpc_service", "grpc_method", "grpc_type", "grpc_code",
                                        NULL};
    static const char *const mb[] = {"model", "backend", NULL};
    static const char *const req[] = {"model", "backend", "status", "error_type", NULL};
    static const char *const model[] = {"model", NULL};
    static const char *const ep[] = {"endpoint", NULL};
    static const char *const ep_res[] = {"endpoint", "result", NULL};
    const unsigned np = METRICS_NO_PREFIX;
    size_t ntok;
    const double *tok = metrics_token_buckets(&ntok);
    const size_t nreq = sizeof request_buckets / sizeof request_buckets[0];

    /* -EEXIST here is a name clash (init twice, or a module registered one of these names). */
    int rc;
#define C(field, name, help, labels, flags)                                                        \
    if ((rc = metrics_counter_new(&m->field, r, name, help, labels, flags, NULL, 0))) return rc;
#define G(field, name, help, labels, flags)                                                        \
    if ((rc = metrics_gauge_new(&m->field, r, name, help, labels, flags, NULL, 0))) return rc;
#define H(field, name, help, labels, b, nb, flags)                                                 \
    if ((rc = metrics_histogram_new(&m->field, r, name, help, labels, b, nb, flags, NULL, 0)))     \
        return rc;

    C(grpc_started, "grpc_server_started_total", "Total number of RPCs started on the server.",
      grpc3, np);
    C(grpc_handled, "grpc_server_handled_total",
      "Total number of RPCs completed on the server, regardless of success or failure.", grpc4, np);
    C(grpc_msg_received, "grpc_server_msg_received_total",
      "Total number of RPC stream messages received on the server.", grpc3, np);
    C(grpc_msg_sent, "grpc_server_msg_sent_total",
      "Total number of gRPC stream messages sent by the server.", grpc3, np);
    H(grpc_handling, "grpc_server_handling_seconds",
      "Histogram of response latency (seconds) of gRPC that had been application-level handled "
      "by the server.",
      grpc3, NULL, 0, np);

    C(requests, "requests_total",
      "Inference requests finished, by model, backend, status and error type.", req, 0);
    G(inflight, "inflight_requests", "Inference requests currently being processed.", mb, 0);
    G(queued, "queued_requests", "Inference requests waiting for a slot in the engine.", mb, 0);
    H(request_duration, "request_duration_seconds",
      "Time from receiving an inference request to its last response, in seconds.", mb,
      request_buckets, nreq, 0);
    H(ttft, "time_to_first_token_seconds",
      "Time from receiving an inference request to its first generated token, in seconds.", mb,
      NULL, 0, 0);
    H(itl, "inter_token_latency_seconds", "Time between consecutive generated tokens, in seconds.",
      mb, NULL, 0, 0);
    H(input_tokens, "input_sequence_tokens", "Prompt length of inference requests, in tokens.", mb,
      tok, ntok, 0);
    H(output_tokens, "output_sequence_tokens",
      "Generated length of finished inference requests, in tokens.", mb, tok, ntok, 0);
    C(output_tokens_total, "output_tokens_total", "Tokens generated.", mb, 0);
    C(request_bytes, "request_bytes_total", "Bytes of inference request messages received.", model,
      0);
    C(response_bytes, "response_bytes_total", "Bytes of inference response messages sent.", model,
      0);
    G(uptime, "uptime_seconds", "Seconds since the server started.", NULL, 0);

    G(health_status, "health_status",
      "Health of each endpoint: 1 when serving, 0 when not (canary failed, stalled, draining).", ep,
      0);
    C(health_canary, "health_canary_total", "Canary health checks run, by endpoint and result.",
      ep_res, 0);
    H(health_canary_duration, "health_canary_duration_seconds",
      "Duration of canary health checks, in seconds.", ep, NULL, 0, 0);

    G(connections_active, "connections_active", "Client connections currently open.", NULL, 0);
    C(connections_total, "connections_total", "Client connections accepted.", NULL, 0);
    G(http2_streams_active, "http2_streams_active", "HTTP/2 streams currently open.", NULL, 0);
    C(log_lines_dropped, "log_lines_dropped_total",
      "Log lines dropped because the log output could not keep up.", NULL, 0);
#undef C
#undef G
#undef H

    if (!(m->uptime_s = metrics_series(m->uptime, NULL)) ||
        !(m->connections_active_s = metrics_series(m->connections_active, NULL)) ||
        !(m->connections_total_s = metrics_series(m->connections_total, NULL)) ||
        !(m->http2_streams_active_s = metrics_series(m->http2_streams_active, NULL)) ||
        !(m->log_lines_dropped_s = metrics_series(m->log_lines_dropped, NULL)))
        return -ENOMEM;

    rc = metrics_add_collector(r, collect, m);
    if (rc) return rc;
    rc = metrics_process_collector_add(r);
    return rc;
}
