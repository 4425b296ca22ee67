#include "server/base/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

extern char **environ;

typedef enum {
    T_STR,
    T_INT,
    T_BOOL,
    T_DUR,
    T_ENUM,
    T_ADDR,
    T_PATH,
    T_HOST,
    T_LOGSPEC,
    T_PREFIX
} opt_type_t;

typedef struct opt {
    const char *flag;   /* without the leading "--" */
    const char *env[3]; /* INFERD_* first, then Dynamo aliases */
    opt_type_t type;
    size_t off;
    const char *def;      /* default, as text; NULL = unset */
    int64_t min, max;     /* T_INT range; T_DUR range in ms */
    const char *accepted; /* T_ENUM: "a|b|c" */
    const char *help;
} opt_t;

#define O(f) offsetof(config_t, f)
#define NS_MS 1000000LL

static const opt_t opts[] = {
    {"listen",
     {"INFERD_LISTEN"},
     T_ADDR,
     O(listen),
     "0.0.0.0:50051",
     0,
     0,
     NULL,
     "main gRPC/HTTP address, HOST:PORT (port 0 picks a free one)"},
    {"system-host",
     {"INFERD_SYSTEM_HOST", "DYN_SYSTEM_HOST"},
     T_HOST,
     O(system_host),
     "0.0.0.0",
     0,
     0,
     NULL,
     "system status listener host"},
    {"system-port",
     {"INFERD_SYSTEM_PORT", "DYN_SYSTEM_PORT"},
     T_INT,
     O(system_port),
     "8081",
     -1,
     65535,
     NULL,
     "system status port (-1 off, 0 picks a free one)"},
    {"tls-cert",
     {"INFERD_TLS_CERT"},
     T_PATH,
     O(tls_cert),
     NULL,
     0,
     0,
     NULL,
     "TLS certificate chain (PEM); enables TLS with --tls-key"},
    {"tls-key", {"INFERD_TLS_KEY"}, T_PATH, O(tls_key), NULL, 0, 0, NULL, "TLS private key (PEM)"},
    {"tls-client-ca",
     {"INFERD_TLS_CLIENT_CA"},
     T_PATH,
     O(tls_client_ca),
     NULL,
     0,
     0,
     NULL,
     "CA bundle (PEM): require and verify client certificates"},
    {"tls-allow-plaintext",
     {"INFERD_TLS_ALLOW_PLAINTEXT"},
     T_BOOL,
     O(tls_allow_plaintext),
     "false",
     0,
     0,
     NULL,
     "also serve plaintext (h2c, HTTP/1.1) on the TLS listener. RISK: a plaintext client skips "
     "TLS and --tls-client-ca, so anyone who reaches the port is served unencrypted and "
     "unauthenticated; off, plaintext there gets a 400 or a GOAWAY saying TLS is required"},
    {"max-concurrent-streams",
     {"INFERD_MAX_CONCURRENT_STREAMS"},
     T_INT,
     O(max_concurrent_streams),
     "100",
     1,
     1 << 20,
     NULL,
     "HTTP/2 streams per connection"},
    {"max-recv-message-size",
     {"INFERD_MAX_RECV_MESSAGE_SIZE"},
     T_INT,
     O(max_recv_message_size),
     "4194304",
     16,
     1 << 30,
     NULL,
     "largest gRPC request message, bytes"},
    {"max-request-body",
     {"INFERD_MAX_REQUEST_BODY"},
     T_INT,
     O(max_request_body),
     "4194304",
     1024,
     1 << 30,
     NULL,
     "largest HTTP request body (the OpenAI API's JSON), bytes; a larger one gets 413"},
    {"max-header-list-size",
     {"INFERD_MAX_HEADER_LIST_SIZE"},
     T_INT,
     O(max_header_list_size),
     "8192",
     1024,
     1 << 20,
     NULL,
     "largest request header list, bytes (HTTP/2 and HTTP/1.1)"},
    {"initial-window-size",
     {"INFERD_INITIAL_WINDOW_SIZE"},
     T_INT,
     O(initial_window_size),
     "1048576",
     65535,
     2147483647,
     NULL,
     "HTTP/2 stream flow-control window, bytes"},
    {"max-connections",
     {"INFERD_MAX_CONNECTIONS"},
     T_INT,
     O(max_connections),
     "10000",
     1,
     1000000,
     NULL,
     "open connections at most; more are closed at accept"},
    {"shutdown-delay",
     {"INFERD_SHUTDOWN_DELAY"},
     T_DUR,
     O(shutdown_delay_ns),
     "5s",
     0,
     3600000,
     NULL,
     "after SIGTERM, time NOT_SERVING before GOAWAY"},
    {"drain-timeout",
     {"INFERD_DRAIN_TIMEOUT"},
     T_DUR,
     O(drain_timeout_ns),
     "30s",
     0,
     3600000,
     NULL,
     "time in-flight streams get to finish after GOAWAY"},
    {"keepalive-min-time",
     {"INFERD_KEEPALIVE_MIN_TIME"},
     T_DUR,
     O(keepalive_min_time_ns),
     "300s",
     0,
     86400000,
     NULL,
     "minimum interval between client pings (gRPC keepalive enforcement)"},
    {"keepalive-permit-without-calls",
     {"INFERD_KEEPALIVE_PERMIT_WITHOUT_CALLS"},
     T_BOOL,
     O(keepalive_permit_without_calls),
     "false",
     0,
     0,
     NULL,
     "allow client pings while no call is active"},
    {"max-ping-strikes",
     {"INFERD_MAX_PING_STRIKES"},
     T_INT,
     O(max_ping_strikes),
     "2",
     0,
     1000,
     NULL,
     "bad pings tolerated before GOAWAY ENHANCE_YOUR_CALM"},
    {"idle-timeout",
     {"INFERD_IDLE_TIMEOUT"},
     T_DUR,
     O(idle_timeout_ns),
     "600s",
     0,
     86400000,
     NULL,
     "close connections with no stream or request for this long (0 off)"},
    {"handshake-timeout",
     {"INFERD_HANDSHAKE_TIMEOUT"},
     T_DUR,
     O(handshake_timeout_ns),
     "10s",
     1,
     3600000,
     NULL,
     "time a new connection gets to finish TLS and the HTTP/2 preface or its first bytes "
     "(counted from accept: bytes trickled in do not extend it)"},
    {"request-header-timeout",
     {"INFERD_REQUEST_HEADER_TIMEOUT"},
     T_DUR,
     O(request_header_timeout_ns),
     "10s",
     1,
     3600000,
     NULL,
     "HTTP/1.1: time a request head gets from its first byte to its last (like nginx's "
     "client_header_timeout; trickled bytes do not extend it), then 408 and close; also the "
     "grace before --min-body-rate applies"},
    {"min-body-rate",
     {"INFERD_MIN_BODY_RATE"},
     T_INT,
     O(min_body_rate),
     "1024",
     0,
     1 << 30,
     NULL,
     "bytes per second an HTTP/1.1 request body, or a gRPC request message still arriving, "
     "must average after the --request-header-timeout grace (0 off); slower is closed (408) or "
     "fails the call (DEADLINE_EXCEEDED)"},
    {"stream-stall-timeout",
     {"INFERD_STREAM_STALL_TIMEOUT"},
     T_DUR,
     O(stream_stall_timeout_ns),
     "30s",
     0,
     86400000,
     NULL,
     "a stream whose client takes none of its queued response for this long is cancelled "
     "(RESOURCE_EXHAUSTED) and its engine request freed (0 off)"},
    {"max-paused-streams",
     {"INFERD_MAX_PAUSED_STREAMS"},
     T_INT,
     O(max_paused_streams),
     "16",
     1,
     1 << 20,
     NULL,
     "streams of one connection that may wait on their client (response queued, none of it "
     "taken for 1s); the newest beyond it are cancelled (RESOURCE_EXHAUSTED)"},
    {"max-pending-input",
     {"INFERD_MAX_PENDING_INPUT"},
     T_INT,
     O(max_pending_input),
     "8388608",
     16,
     1 << 30,
     NULL,
     "bytes of unfinished request messages one connection may have buffered (at least "
     "--max-recv-message-size); past it the call with the biggest fails (RESOURCE_EXHAUSTED)"},
    {"max-connection-output",
     {"INFERD_MAX_CONNECTION_OUTPUT"},
     T_INT,
     O(max_connection_output),
     "4194304",
     65536,
     1LL << 40,
     NULL,
     "response bytes one connection's calls may queue before their request input is held "
     "(HTTP/2 flow control then stops the client)"},
    {"max-process-output",
     {"INFERD_MAX_PROCESS_OUTPUT"},
     T_INT,
     O(max_process_output),
     "268435456",
     65536,
     1LL << 40,
     NULL,
     "response bytes all connections together may queue before every call's request input is "
     "held"},
    {"max-stream-rate",
     {"INFERD_MAX_STREAM_RATE"},
     T_INT,
     O(max_stream_rate),
     "10000",
     0,
     1000000,
     NULL,
     "new HTTP/2 streams per second one connection may open (bursts up to one second's worth); "
     "more are refused (REFUSED_STREAM), twice that gets GOAWAY ENHANCE_YOUR_CALM (0 off)"},
    {"health-path",
     {"INFERD_HEALTH_PATH", "DYN_SYSTEM_HEALTH_PATH"},
     T_STR,
     O(health_path),
     "/health",
     0,
     0,
     NULL,
     "readiness HTTP path"},
    {"live-path",
     {"INFERD_LIVE_PATH", "DYN_SYSTEM_LIVE_PATH"},
     T_STR,
     O(live_path),
     "/live",
     0,
     0,
     NULL,
     "liveness HTTP path"},
    {"starting-health-status",
     {"INFERD_STARTING_HEALTH_STATUS", "DYN_SYSTEM_STARTING_HEALTH_STATUS"},
     T_ENUM,
     O(starting_health_status),
     "notready",
     0,
     0,
     "notready|ready",
     "endpoint status before the first check"},
    {"log",
     {"INFERD_LOG", "DYN_LOG"},
     T_LOGSPEC,
     O(log_spec),
     "info",
     0,
     0,
     NULL,
     "log levels: LEVEL[,MODULE=LEVEL...], levels trace|debug|info|warn|error|off"},
    {"log-format",
     {"INFERD_LOG_FORMAT"},
     T_ENUM,
     O(log_format),
     "text",
     0,
     0,
     "text|jsonl",
     "log line format (DYN_LOGGING_JSONL=true selects jsonl)"},
    {"metrics-prefix",
     {"INFERD_METRICS_PREFIX", "DYN_METRICS_PREFIX"},
     T_PREFIX,
     O(metrics_prefix),
     "inferd_",
     0,
     0,
     NULL,
     "prefix of inferd's own metric names (\"inferd\" becomes inferd_; empty for none; "
     "grpc_server_* and process_* are never prefixed)"},
    {"model",
     {"INFERD_MODEL"},
     T_PATH,
     O(model),
     NULL,
     0,
     0,
     NULL,
     "GGUF model (llama, qwen2, qwen3) or llama2.c checkpoint; the file's magic decides "
     "(default: the built-in model)"},
    {"tokenizer",
     {"INFERD_TOKENIZER"},
     T_PATH,
     O(tokenizer),
     NULL,
     0,
     0,
     NULL,
     "llama2.c tokenizer.bin (llama2.c checkpoints only; a GGUF file carries its own)"},
    {"model-name",
     {"INFERD_MODEL_NAME"},
     T_STR,
     O(model_name),
     NULL,
     0,
     0,
     NULL,
     "name the model is served under: GetModelInfo's name, the model field requests may give, "
     "the OpenAI API's model id (default: the model file's name without its extension)"},
    {"chat-template",
     {"INFERD_CHAT_TEMPLATE"},
     T_STR,
     O(chat_template),
     NULL,
     0,
     0,
     NULL,
     "chat template for chat requests, overriding the model's tokenizer.chat_template: chatml, "
     "llama2, llama2-sys, llama2-sys-bos, llama2-sys-strip, mistral-v1, mistral-v3, "
     "mistral-v3-tekken, mistral-v7, mistral-v7-tekken, phi3, zephyr, gemma or llama3 (another "
     "name is a start-up error)"},
    {"threads",
     {"INFERD_THREADS"},
     T_INT,
     O(threads),
     "0",
     0,
     1024,
     NULL,
     "engine worker threads (0 = all cores)"},
    {"max-batch",
     {"INFERD_MAX_BATCH"},
     T_INT,
     O(max_batch),
     "64",
     1,
     4096,
     NULL,
     "sequences decoded together (each gets --ctx-size positions of KV cache)"},
    {"ctx-size",
     {"INFERD_CTX_SIZE"},
     T_INT,
     O(ctx_size),
     "0",
     0,
     1 << 24,
     NULL,
     "KV cache positions per sequence: the longest prompt + output (0 = the model's context "
     "length, at most 4096; more than the model's is an error)"},
    {"max-queued",
     {"INFERD_MAX_QUEUED"},
     T_INT,
     O(max_queued),
     "256",
     1,
     1000000,
     NULL,
     "admission queue length"},
    {"device",
     {"INFERD_DEVICE"},
     T_ENUM,
     O(device),
     "auto",
     0,
     0,
     "auto|cpu|cuda|cuda:N",
     "engine device: auto (a usable GPU, else cpu; the choice and why are logged), cpu, cuda or "
     "cuda:N"},
    {"cuda-streams",
     {"INFERD_CUDA_STREAMS"},
     T_INT,
     O(cuda_streams),
     "4",
     1,
     64,
     NULL,
     "CUDA streams, each owned by a host worker thread"},
    {"dtype",
     {"INFERD_DTYPE"},
     T_ENUM,
     O(dtype),
     "fp32",
     0,
     0,
     "fp32|bf16",
     "weight type on the GPU (the CPU runs fp32)"},
    {"hugepages",
     {"INFERD_HUGEPAGES"},
     T_ENUM,
     O(hugepages),
     "auto",
     0,
     0,
     "auto|on|off",
     "CPU engine: copy the model's weights at start into transparent huge pages (decode reads "
     "every weight per token; 2 MiB pages spare the TLB a page walk every 4 KiB): auto (when "
     "the kernel offers them, else mapped from the file), on (a start-up error without them), "
     "off (mapped from the file, shared with the page cache)"},
    {"kv-cache-type",
     {"INFERD_KV_CACHE_TYPE"},
     T_ENUM,
     O(kv_cache_type),
     "f32",
     0,
     0,
     "f32|f16",
     "CPU engine: the KV cache's elements: f32, or f16 (half the memory per position and half "
     "the bytes attention reads deep in a conversation; keys and values rounded to fp16, as "
     "llama.cpp's default cache holds them)"},
    {"health-check-enabled",
     {"INFERD_HEALTH_CHECK_ENABLED", "DYN_HEALTH_CHECK_ENABLED"},
     T_BOOL,
     O(health_check_enabled),
     "true",
     0,
     0,
     NULL,
     "canary health checks"},
    {"canary-wait-time",
     {"INFERD_CANARY_WAIT_TIME", "DYN_CANARY_WAIT_TIME"},
     T_DUR,
     O(canary_wait_ns),
     "10s",
     1,
     86400000,
     NULL,
     "idle time before a canary request"},
    {"health-check-request-timeout",
     {"INFERD_HEALTH_CHECK_REQUEST_TIMEOUT", "DYN_HEALTH_CHECK_REQUEST_TIMEOUT"},
     T_DUR,
     O(health_request_timeout_ns),
     "3s",
     1,
     3600000,
     NULL,
     "time a canary gets to complete"},
    {"health-check-busy-stall",
     {"INFERD_HEALTH_CHECK_BUSY_STALL", "DYN_HEALTH_CHECK_BUSY_STALL"},
     T_DUR,
     O(busy_stall_ns),
     "60s",
     1,
     86400000,
     NULL,
     "in-flight time with no token before NOT_SERVING"},
    {"health-check-payload",
     {"INFERD_HEALTH_CHECK_PAYLOAD", "DYN_HEALTH_CHECK_PAYLOAD"},
     T_STR,
     O(health_check_payload),
     NULL,
     0,
     0,
     NULL,
     "canary GenerateRequest as JSON or @FILE"},
    {"enable-fault-injection",
     {"INFERD_ENABLE_FAULT_INJECTION"},
     T_BOOL,
     O(enable_fault_injection),
     "false",
     0,
     0,
     NULL,
     "debugging aid: POST /debug/fault on a loopback system port"},
};
#define N_OPTS (sizeof(opts) / sizeof(opts[0]))
_Static_assert(sizeof(opts) / sizeof(opts[0]) <= 80, "config_t.source is too small");

static size_t opt_index(size_t off)
{
    for (size_t i = 0; i < N_OPTS; i++)
        if (opts[i].off == off) return i;
    return 0;
}

static char **str_field(config_t *c, const opt_t *o)
{
    return (char **)((char *)c + o->off);
}

static int parse_bool(const char *v, int *out)
{
    static const char *yes[] = {"1", "true", "yes", "on"}, *no[] = {"0", "false", "no", "off"};
    for (size_t i = 0; i < 4; i++) {
        if (!strcasecmp(v, yes[i])) return *out = 1, 0;
        if (!strcasecmp(v, no[i])) return *out = 0, 0;
    }
    return -EINVAL;
}

static int parse_int(const char *v, int64_t *out)
{
    char *end;
    errno = 0;
    long long x = strtoll(v, &end, 10);
    if (errno || end == v || *end) return -EINVAL;
    *out = x;
    return 0;
}

/* "1.5", "500ms", "2s", "1m", "1h", "250us": seconds when no unit. */
static int parse_duration(const char *v, int64_t *ns)
{
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || end == v || !isfinite(x) || x < 0) return -EINVAL;
    double mult;
    if (!*end || !strcmp(end, "s"))
        mult = 1e9;
    else if (!strcmp(end, "ms"))
        mult = 1e6;
    else if (!strcmp(end, "us"))
        mult = 1e3;
    else if (!strcmp(end, "ns"))
        mult = 1;
    else if (!strcmp(end, "m"))
        mult = 60e9;
    else if (!strcmp(end, "h"))
        mult = 3600e9;
    else
        return -EINVAL;
    if (x * mult > 9e18) return -EINVAL;
    *ns = (int64_t)(x * mult);
    return 0;
}

int config_split_hostport(const char *s, char *host, size_t hostcap, int *port)
{
    const char *colon;
    size_t hl;
    if (s[0] == '[') {
        const char *rb = strchr(s, ']');
        if (!rb || rb[1] != ':') return -EINVAL;
        hl = (size_t)(rb - s - 1);
        s++;
        colon = rb + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon) return -EINVAL;
        hl = (size_t)(colon - s);
    }
    if (hl == 0 || hl >= hostcap) return -EINVAL;
    memcpy(host, s, hl);
    host[hl] = 0;
    int64_t p;
    if (parse_int(colon + 1, &p) || p < 0 || p > 65535) return -EINVAL;
    *port = (int)p;
    return 0;
}

static int valid_host(const char *h)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, h, buf) == 1 || inet_pton(AF_INET6, h, buf) == 1 ||
           !strcmp(h, "localhost");
}

static int valid_level(const char *s, size_t n)
{
    static const char *lv[] = {"trace", "debug", "info", "warn", "error", "off"};
    for (size_t i = 0; i < 6; i++)
        if (strlen(lv[i]) == n && !strncasecmp(s, lv[i], n)) return 1;
    return 0;
}

/* LEVEL or MODULE=LEVEL, comma separated; checked here so a bad spec fails at start. */
static int valid_logspec(const char *v)
{
    const char *p = v;
    if (!*p) return 0;
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t n = comma ? (size_t)(comma - p) : strlen(p);
        const char *eq = memchr(p, '=', n);
        if (eq) {
            size_t mn = (size_t)(eq - p);
            if (mn == 0) return 0;
            for (size_t i = 0; i < mn; i++)
                if (!(p[i] == '_' || p[i] == ':' || (p[i] >= 'a' && p[i] <= 'z') ||
                      (p[i] >= '0' && p[i] <= '9')))
                    return 0;
            if (!valid_level(eq + 1, n - mn - 1)) return 0;
        } else if (!valid_level(p, n)) {
            return 0;
        }
        if (!comma) return 1;
        p = comma + 1;
    }
}

/* A metric-name prefix: letters, digits and '_', not starting with a digit, or empty. ':' is
 * legal in Prometheus names but reserved for recording rules (promtool lints it). */
static int valid_prefix(const char *v)
{
    for (size_t i = 0; v[i]; i++) {
        char c = v[i];
        int ok = c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                 (i && c >= '0' && c <= '9');
        if (!ok) return 0;
    }
    return 1;
}

static const char *type_accepts(const opt_t *o, char *buf, size_t cap)
{
    switch (o->type) {
    case T_INT:
        snprintf(buf, cap, "an integer from %lld to %lld", (long long)o->min, (long long)o->max);
        return buf;
    case T_BOOL:
        return "true|false|1|0|yes|no|on|off";
    case T_DUR:
        return "a duration such as 500ms, 2s, 1.5, 1m";
    case T_ENUM:
        return o->accepted;
    case T_ADDR:
        return "HOST:PORT with an IP address (or localhost) and a port 0-65535";
    case T_HOST:
        return "an IPv4 or IPv6 address or localhost";
    case T_LOGSPEC:
        return "LEVEL[,MODULE=LEVEL...] with levels trace|debug|info|warn|error|off";
    case T_PREFIX:
        return "letters, digits and '_', not starting with a digit, or empty ('_' is appended when "
               "missing)";
    case T_PATH:
        return "a non-empty path";
    case T_STR:
        return "a string";
    }
    return "";
}

static int set_opt(config_t *c, const opt_t *o, const char *v, const char *src, char *err,
                   size_t errlen)
{
    char buf[128];
    int ok = 1;
    int64_t x = 0;
    int b;
    switch (o->type) {
    case T_INT:
        ok = parse_int(v, &x) == 0 && x >= o->min && x <= o->max;
        if (ok) {
            if (o->off == O(system_port))
                *(int *)((char *)c + o->off) = (int)x;
            else
                *(int64_t *)((char *)c + o->off) = x;
        }
        break;
    case T_BOOL:
        ok = parse_bool(v, &b) == 0;
        if (ok) *(int *)((char *)c + o->off) = b;
        break;
    case T_DUR:
        ok = parse_duration(v, &x) == 0 && x >= o->min * NS_MS && x <= o->max * NS_MS;
        if (ok) *(int64_t *)((char *)c + o->off) = x;
        break;
    case T_ENUM: {
        size_t n = strlen(v);
        const char *p = o->accepted;
        ok = 0;
        while (p && *p) {
            const char *bar = strchr(p, '|');
            size_t m = bar ? (size_t)(bar - p) : strlen(p);
            if (m > 2 &&
                !strncmp(p + m - 2, ":N", 2)) { /* "cuda:N": the prefix and a number 0..255 */
                if (n > m - 1 && n <= m + 2 && !strncmp(p, v, m - 1) &&
                    strspn(v + m - 1, "0123456789") == n - m + 1 && atoi(v + m - 1) <= 255)
                    ok = 1;
            } else if (m == n && !strncmp(p, v, n))
                ok = 1;
            p = bar ? bar + 1 : NULL;
        }
        break;
    }
    case T_ADDR: {
        char host[128];
        int port;
        ok = config_split_hostport(v, host, sizeof host, &port) == 0 && valid_host(host);
        break;
    }
    case T_HOST:
        ok = valid_host(v);
        break;
    case T_LOGSPEC:
        ok = valid_logspec(v);
        break;
    case T_PREFIX:
        ok = valid_prefix(v);
        break;
    case T_PATH:
        ok = *v != 0;
        break;
    case T_STR:
        break;
    }
    if (!ok) {
        snprintf(err, errlen, "invalid value '%s' for --%s (%s): expected %s", v, o->flag, src,
                 type_accepts(o, buf, sizeof buf));
        return -EINVAL;
    }
    if (o->type == T_ENUM || o->type == T_ADDR || o->type == T_HOST || o->type == T_LOGSPEC ||
        o->type == T_PREFIX || o->type == T_PATH || o->type == T_STR) {
        char **f = str_field(c, o);
        free(*f);
        size_t vl = strlen(v);
        int underscore = o->type == T_PREFIX && vl && v[vl - 1] != '_'; /* "inferd" -> "inferd_" */
        *f = malloc(vl + (size_t)underscore + 1);
        if (!*f) return -ENOMEM;
        memcpy(*f, v, vl);
        if (underscore) (*f)[vl++] = '_';
        (*f)[vl] = 0;
    }
    c->source[o - opts] = src;
    return 0;
}

static const char *env_get(char **envp, const char *name)
{
    size_t n = strlen(name);
    for (char **e = envp; e && *e; e++)
        if (!strncmp(*e, name, n) && (*e)[n] == '=') return *e + n + 1;
    return NULL;
}

int config_load(config_t *c, int argc, char **argv, char **envp, char *err, size_t errlen)
{
    memset(c, 0, sizeof *c);
    if (!envp) envp = environ;
    for (size_t i = 0; i < N_OPTS; i++) {
        c->source[i] = "default";
        if (opts[i].def && set_opt(c, &opts[i], opts[i].def, "default", err, errlen))
            return -EINVAL;
    }
    /* DYN_LOGGING_JSONL is a boolean alias of --log-format jsonl. */
    const char *jl = env_get(envp, "DYN_LOGGING_JSONL");
    if (jl) {
        int b;
        if (parse_bool(jl, &b)) {
            snprintf(err, errlen,
                     "invalid value '%s' for --log-format (DYN_LOGGING_JSONL): expected true|false",
                     jl);
            return -EINVAL;
        }
        for (size_t i = 0; i < N_OPTS; i++)
            if (opts[i].off == O(log_format) &&
                set_opt(c, &opts[i], b ? "jsonl" : "text", "DYN_LOGGING_JSONL", err, errlen))
                return -EINVAL;
    }
    for (size_t i = 0; i < N_OPTS; i++) {
        for (int k = 2; k >= 0; k--) { /* INFERD_* (k=0) wins over the aliases */
            const char *name = opts[i].env[k];
            const char *v = name ? env_get(envp, name) : NULL;
            if (v && set_opt(c, &opts[i], v, name, err, errlen)) return -EINVAL;
        }
    }
    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) {
            c->help = 1;
            continue;
        }
        if (!strcmp(arg, "--print-config")) {
            c->print_config = 1;
            continue;
        }
        if (!strcmp(arg, "--version")) {
            c->version = 1;
            continue;
        }
        if (strncmp(arg, "--", 2)) {
            snprintf(err, errlen, "unexpected argument '%s': options start with -- (see --help)",
                     arg);
            return -EINVAL;
        }
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t nl = eq ? (size_t)(eq - name) : strlen(name);
        const opt_t *o = NULL;
        for (size_t i = 0; i < N_OPTS; i++)
            if (strlen(opts[i].flag) == nl && !strncmp(opts[i].flag, name, nl)) o = &opts[i];
        if (!o) {
            snprintf(err, errlen, "unknown option '%.*s' (see --help)", (int)(nl + 2), arg);
            return -EINVAL;
        }
        const char *v;
        if (eq)
            v = eq + 1;
        else if (o->type == T_BOOL && (a + 1 >= argc || parse_bool(argv[a + 1], &(int){0})))
            v = "true";
        else if (a + 1 < argc)
            v = argv[++a];
        else {
            snprintf(err, errlen, "option --%s needs a value: expected %s", o->flag,
                     type_accepts(o, (char[128]){0}, 128));
            return -EINVAL;
        }
        if (set_opt(c, o, v, "flag", err, errlen)) return -EINVAL;
    }
    /* cross-option checks */
    if (!!c->tls_cert != !!c->tls_key) {
        snprintf(err, errlen,
                 "invalid value for --%s: --tls-cert and --tls-key must be given together",
                 c->tls_cert ? "tls-key" : "tls-cert");
        return -EINVAL;
    }
    if (c->tls_client_ca && !c->tls_cert) {
        snprintf(err, errlen,
                 "invalid value for --tls-client-ca: client verification needs --tls-cert and "
                 "--tls-key");
        return -EINVAL;
    }
    if (c->tls_allow_plaintext && !c->tls_cert) {
        snprintf(err, errlen,
                 "invalid value for --tls-allow-plaintext: it only applies to a TLS listener "
                 "(--tls-cert and --tls-key)");
        return -EINVAL;
    }
    if (c->max_pending_input < c->max_recv_message_size) {
        snprintf(err, errlen,
                 "invalid value '%lld' for --max-pending-input (%s): expected at least "
                 "--max-recv-message-size (%lld), or no message of that size could arrive",
                 (long long)c->max_pending_input, c->source[opt_index(O(max_pending_input))],
                 (long long)c->max_recv_message_size);
        return -EINVAL;
    }
    if (c->health_path[0] != '/' || c->live_path[0] != '/' ||
        !strcmp(c->health_path, c->live_path)) {
        snprintf(err, errlen,
                 "invalid value '%s' for --health-path/--live-path: expected two different paths "
                 "starting with /",
                 c->health_path[0] != '/' ? c->health_path : c->live_path);
        return -EINVAL;
    }
    return 0;
}

void config_dispose(config_t *c)
{
    for (size_t i = 0; i < N_OPTS; i++) {
        opt_type_t t = opts[i].type;
        if (t == T_INT || t == T_BOOL || t == T_DUR) continue;
        char **f = str_field(c, &opts[i]);
        free(*f);
        *f = NULL;
    }
}

void config_print_help(FILE *out)
{
    char buf[128];
    fprintf(out, "usage: inferd [OPTION...]\n\ninferd serves a Llama-architecture model over gRPC "
                 "(inferd.v1.Inference),\n"
                 "grpc.health.v1, server reflection, and /live, /health, /metrics over HTTP.\n"
                 "Flags override environment variables, which override defaults.\n\n");
    for (size_t i = 0; i < N_OPTS; i++) {
        const opt_t *o = &opts[i];
        fprintf(out,
                "  --%s\n      %s\n      accepts: %s\n      env: %s%s%s%s%s\n      default: %s\n",
                o->flag, o->help, type_accepts(o, buf, sizeof buf), o->env[0],
                o->env[1] ? ", " : "", o->env[1] ? o->env[1] : "", o->env[2] ? ", " : "",
                o->env[2] ? o->env[2] : "", o->def ? o->def : "(unset)");
    }
    fprintf(out, "  --help\n  --print-config\n      print the effective configuration and where "
                 "each value came from\n"
                 "  --version\n\nDYN_LOGGING_JSONL=true is the same as --log-format jsonl.\n");
}

void config_print(const config_t *c, FILE *out)
{
    for (size_t i = 0; i < N_OPTS; i++) {
        const opt_t *o = &opts[i];
        const char *p = (const char *)c + o->off;
        fprintf(out, "%-32s ", o->flag);
        switch (o->type) {
        case T_INT:
            if (o->off == O(system_port))
                fprintf(out, "%d", *(const int *)p);
            else
                fprintf(out, "%lld", (long long)*(const int64_t *)p);
            break;
        case T_BOOL:
            fprintf(out, "%s", *(const int *)p ? "true" : "false");
            break;
        case T_DUR:
            fprintf(out, "%gs", (double)*(const int64_t *)p / 1e9);
            break;
        default: {
            const char *s = *(char *const *)p;
            fprintf(out, "%s", s ? s : "(unset)");
        }
        }
        fprintf(out, "  # %s\n", c->source[i]);
    }
}
