/* The standard inferd metric set (DESIGN.md "Metrics"): every family registered once at
 * start-up, handles kept here; callers get and cache series with metrics_series(). Label order
 * is exactly as listed on each field. Label-less families have their series cached here. */
#ifndef INFERD_METRICS_INFERD_METRICS_H
#define INFERD_METRICS_INFERD_METRICS_H

#include <time.h>

#include "metrics.h"

/* grpc_type label values, as go-grpc-prometheus writes them. */
#define INFERD_GRPC_UNARY "unary"
#define INFERD_GRPC_CLIENT_STREAM "client_stream"
#define INFERD_GRPC_SERVER_STREAM "server_stream"
#define INFERD_GRPC_BIDI_STREAM "bidi_stream"

/* requests_total status label values. */
#define INFERD_STATUS_SUCCESS "success"
#define INFERD_STATUS_ERROR "error"
#define INFERD_STATUS_CANCELLED "cancelled"

typedef struct inferd_metrics {
    /* gRPC server, unprefixed (go-grpc-prometheus names, what Grafana's gRPC dashboards use).
     * grpc_code is the canonical name: "OK", "NOT_FOUND", "DEADLINE_EXCEEDED", ... */
    metrics_family_t *grpc_started;      /* counter {grpc_service,grpc_method,grpc_type} */
    metrics_family_t *grpc_handled;      /* counter {grpc_service,grpc_method,grpc_type,
                                            grpc_code} */
    metrics_family_t *grpc_msg_received; /* counter {grpc_service,grpc_method,grpc_type} */
    metrics_family_t *grpc_msg_sent;     /* counter {grpc_service,grpc_method,grpc_type} */
    metrics_family_t *grpc_handling;     /* histogram seconds {grpc_service,grpc_method,
                                            grpc_type} */

    /* Inference, prefixed. model: the model name served; backend: "cpu" or "cuda"; api: the API
     * the request came through, "grpc" (inferd.v1.Inference) or "openai" (the HTTP API). */
    metrics_family_t *requests;         /* counter requests_total {model,backend,api,status,
                                           error_type}; error_type "" on success */
    metrics_family_t *inflight;         /* gauge inflight_requests {model,backend} */
    metrics_family_t *queued;           /* gauge queued_requests {model,backend} */
    metrics_family_t *request_duration; /* histogram request_duration_seconds {model,backend,api} */
    metrics_family_t *ttft;             /* histogram time_to_first_token_seconds
                                           {model,backend,api} */
    metrics_family_t *itl;              /* histogram inter_token_latency_seconds
                                           {model,backend,api} */
    metrics_family_t *input_tokens;     /* histogram input_sequence_tokens {model,backend,api} */
    metrics_family_t *output_tokens;    /* histogram output_sequence_tokens
                                           {model,backend,api} */
    metrics_family_t *output_tokens_total; /* counter output_tokens_total {model,backend,api} */
    metrics_family_t *request_bytes;       /* counter request_bytes_total {model,api} */
    metrics_family_t *response_bytes;      /* counter response_bytes_total {model,api} */
    metrics_family_t *uptime;              /* gauge uptime_seconds (collector) */

    /* Health, prefixed. endpoint: "generate", ...; result: "success", "failure", "timeout". */
    metrics_family_t *health_status;          /* gauge health_status {endpoint}: 1 serving, 0 not */
    metrics_family_t *health_canary;          /* counter health_canary_total {endpoint,result} */
    metrics_family_t *health_canary_duration; /* histogram health_canary_duration_seconds
                                                 {endpoint} */

    /* Connections, prefixed, no labels. */
    metrics_family_t *connections_active;   /* gauge connections_active */
    metrics_family_t *connections_total;    /* counter connections_total */
    metrics_family_t *http2_streams_active; /* gauge http2_streams_active */

    /* Abuse bounds (issue 13), prefixed. limit: which bound acted ("stream_stall",
     * "paused_streams", "pending_input", "decoded_size", "field_limit", "header_list",
     * "request_header_timeout", "min_body_rate", "stream_rate", "ping_flood"). */
    metrics_family_t *limits_exceeded; /* counter limits_exceeded_total {limit} */
    metrics_family_t *output_queued;   /* gauge output_queued_bytes: responses queued, not yet
                                          taken by HTTP/2 (all connections) */
    metrics_family_t *input_pending;   /* gauge input_pending_bytes: unfinished request
                                          messages and input held behind congested output */
    metrics_family_t *preempted;       /* gauge preempted_requests {model,backend}: paused requests
                                          that gave their batch slot to waiting work */
    metrics_family_t *preemptions;     /* counter preemptions_total {model,backend} */
    /* Logging, prefixed, no labels. */
    metrics_family_t *log_lines_dropped; /* counter log_lines_dropped_total */

    /* Series of the label-less families (cached: update directly). */
    metrics_series_t *uptime_s;
    metrics_series_t *connections_active_s;
    metrics_series_t *connections_total_s;
    metrics_series_t *http2_streams_active_s;
    metrics_series_t *log_lines_dropped_s;
    metrics_series_t *output_queued_s;
    metrics_series_t *input_pending_s;

    struct timespec start; /* CLOCK_MONOTONIC at init; uptime_seconds counts from here */
    unsigned long (*log_dropped)(void); /* optional source read at scrape time */
} inferd_metrics_t;

/** Registers every inferd metric in r, the uptime collector and the process_* collector. m must
 * stay at this address for r's life (collectors point at it). Start-up only.
 * Returns 0, -EEXIST (a name already registered, e.g. init called twice), -ENOMEM. */
int inferd_metrics_init(inferd_metrics_t *m, metrics_registry_t *r);
/** Drops the handles (the registry owns and frees the families); the collectors then do
 * nothing, so m may be disposed before the registry is freed. NULL ok. */
void inferd_metrics_dispose(inferd_metrics_t *m);
/** Restarts uptime_seconds from the given CLOCK_MONOTONIC time (e.g. the process start). */
void inferd_metrics_set_start(inferd_metrics_t *m, const struct timespec *mono_start);
/** Seconds since start (CLOCK_MONOTONIC), as uptime_seconds exposes it (for /health). */
double inferd_metrics_uptime_seconds(const inferd_metrics_t *m);
/** Makes each scrape copy fn() (e.g. log_dropped) into log_lines_dropped_total. */
void inferd_metrics_set_log_dropped_source(inferd_metrics_t *m, unsigned long (*fn)(void));

#endif
