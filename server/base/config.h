/* Configuration: one table of options drives the flag parser, the environment lookup
 * (INFERD_* and the DYN_* aliases), --help and --print-config. Flags override the
 * environment, which overrides defaults. */
#ifndef INFERD_SERVER_BASE_CONFIG_H
#define INFERD_SERVER_BASE_CONFIG_H

#include <stdint.h>
#include <stdio.h>

typedef struct config {
    /* transport */
    char *listen;      /* "0.0.0.0:50051" */
    char *system_host; /* "0.0.0.0" */
    int system_port;   /* 8081; -1 off; 0 picks a free port */
    char *tls_cert, *tls_key, *tls_client_ca;
    int tls_allow_plaintext; /* plaintext beside TLS on the main listener (opt-in risk) */
    int64_t max_concurrent_streams;
    int64_t max_recv_message_size;
    int64_t max_request_body; /* HTTP request bodies (the OpenAI API) */
    int64_t max_header_list_size;
    int64_t initial_window_size;
    int64_t max_connections;
    /* durations in nanoseconds */
    int64_t shutdown_delay_ns, drain_timeout_ns;
    int64_t keepalive_min_time_ns;
    int keepalive_permit_without_calls;
    int64_t max_ping_strikes;
    int64_t idle_timeout_ns, handshake_timeout_ns;
    /* abuse bounds (issue 13) */
    int64_t request_header_timeout_ns; /* HTTP/1.1: a whole request head, from its first byte */
    int64_t min_body_rate;             /* bytes/s a request body or message must keep up */
    int64_t stream_stall_timeout_ns;   /* output not taken for this long cancels a stream */
    int64_t max_paused_streams;        /* streams per connection blocked on their client */
    int64_t max_pending_input;         /* unfinished request bytes per connection */
    int64_t max_connection_output;     /* queued response bytes per connection */
    int64_t max_process_output;        /* queued response bytes, the whole process */
    int64_t max_stream_rate;           /* new streams per second per connection (0 off) */
    /* http endpoints */
    char *health_path, *live_path;
    char *starting_health_status; /* "notready" | "ready" */
    /* observability */
    char *log_spec;
    char *log_format; /* "text" | "jsonl" */
    char *metrics_prefix;
    /* engine */
    char *model, *tokenizer;
    char *model_name;    /* served name; NULL: the file's */
    char *chat_template; /* template name overriding the model's; NULL: the model's */
    int64_t threads, max_batch, max_queued;
    int64_t ctx_size;     /* KV positions per sequence; 0 = the model's context, at most 4096 */
    char *device;         /* "auto" | "cpu" | "cuda" | "cuda:N" */
    int64_t cuda_streams; /* CUDA streams, each driven by a host thread */
    char *dtype;          /* "fp32" | "bf16" (weights on the GPU) */
    char *hugepages;      /* "auto" | "on" | "off" (CPU weights in transparent huge pages) */
    char *kv_cache_type;  /* "f32" | "f16" (the CPU engine's KV cache elements) */
    /* health checks */
    int health_check_enabled;
    int64_t canary_wait_ns, health_request_timeout_ns, busy_stall_ns;
    char *health_check_payload;
    int enable_fault_injection;
    /* actions */
    int help, print_config, version;
    /* where each option's value came from: "default", "flag" or the variable's name */
    const char *source[80];
} config_t;

/** Fills cfg from defaults, then env (envp NULL-terminated, NULL = process environment), then argv.
 * Returns 0, or -EINVAL having written one line naming the option, the value and what is
 * accepted into err. The caller exits with status 2 on error. */
int config_load(config_t *cfg, int argc, char **argv, char **envp, char *err, size_t errlen);
/** Frees the strings config_load allocated. */
void config_dispose(config_t *cfg);
/** --help: every option with its flag, variable(s) and default. */
void config_print_help(FILE *out);
/** --print-config: effective values and where each came from (default, env NAME, flag). */
void config_print(const config_t *cfg, FILE *out);
/** Splits "HOST:PORT" or "[V6]:PORT". Returns 0 or -EINVAL. */
int config_split_hostport(const char *s, char *host, size_t hostcap, int *port);

#endif
