/*
 * inferctl - a small gRPC client for inferd over h2c (nghttp2, protobuf-c), single-threaded.
 *
 *   inferctl [--addr HOST:PORT] health [SERVICE]
 *       grpc.health.v1.Health/Check; prints the status; exit 0 when SERVING, 1 otherwise.
 *   inferctl [--addr HOST:PORT] generate [--max-tokens N] [--temperature T] [--top-p P]
 *            [--top-k K] [--seed S] [--ignore-eos] [--stop TEXT]... PROMPT
 *       inferd.v1.Inference/Generate; streams the text to stdout, finish and usage to stderr.
 *       --stop (up to 16): generation ends where the text would contain one, which is not printed.
 *   inferctl [--addr HOST:PORT] chat [generate's options] [--system TEXT]
 *            [--message ROLE:TEXT]... MESSAGE
 *       Generate with chat messages, rendered by the model's chat template: the system prompt,
 *       earlier turns (ROLE user or assistant), then MESSAGE as the user's turn.
 *   inferctl [--addr HOST:PORT] tokenize [--chat] [--system TEXT] [--message ROLE:TEXT]... TEXT
 *       inferd.v1.Inference/Tokenize: prints the ids a Generate of TEXT (with --chat: of the
 *       chat whose last user turn is TEXT) starts from, one line, space-separated.
 *   inferctl [--addr HOST:PORT] bench [--streams C] [--requests N] [--max-tokens T]
 *            [--conns K] [--warmup W] [--prompt-tokens P] [--api grpc|openai]
 *       Load generator: C concurrent Generate streams (spread over K connections) until N
 *       requests are done, each the engine benchmark's request (tools/bench/load.h: P
 *       prompt token ids, 5 by default, greedy, ignore_eos, T tokens). Prints aggregate tokens/s,
 * steady-decode tokens/s (when C = N: the tokens that arrived while all C streams decoded, over
 * that span, as engine_core_bench counts it), per-stream decode tokens/s, and time to first token
 * (HEADERS sent -> first message with tokens) p50/p99. With --api openai the same requests (the ids
 * as the prompt array) go to POST /v1/completions as server-sent events, one HTTP/1.1 keep-alive
 * connection per stream (--conns is ignored); time to first token is request sent -> first event
 * with text, tokens come from the usage chunk. inferctl [--addr HOST:PORT] ping [--count N]
 * [--interval-ms MS] [SERVICE] Health Check latency: N sequential calls on one connection;
 * p50/p99/max.
 *
 * INFERCTL_TRACE=1 makes bench print each request's start, TTFT, decode time and the gap
 * from its last token to the stream's end.
 *
 * Timing is taken when a message is parsed on the client, so it includes the server's
 * reactor, framing and the socket: exactly what a client sees.
 */
#include <errno.h>
#include <stdarg.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "grpc/health/v1/health.pb-c.h"
#include "inferd/v1/inference.pb-c.h"
#include "server/base/clock.h"
#include "tools/bench/load.h"

#define MAX_CONNS 64

typedef struct conn conn_t;

typedef struct stream {
    conn_t *c;
    int32_t id;
    int idx;
    uint8_t *body;
    size_t body_len, body_off;
    uint8_t *in; /* received gRPC bytes not yet parsed */
    size_t in_len, in_cap;
    uint64_t t_start, t_first, t_last, t_end;
    uint32_t tokens, msgs;
    uint64_t *stamps; /* bench: (stamp_cap) arrival time of each token, or NULL */
    uint32_t stamp_cap;
    int grpc_status; /* -1 until the trailers */
    char grpc_message[256];
    int error_code; /* GenerateResponse.error */
    int finish;
    uint32_t prompt_tokens, completion_tokens;
    int print;       /* generate: text to stdout */
    int is_health;   /* health: response is a HealthCheckResponse */
    int is_tokenize; /* tokenize: response is a TokenizeResponse, printed */
    int health_status;
} stream_t;

struct conn {
    int fd;
    nghttp2_session *s;
    int dead;
    int active;
};

static const char *g_host = "127.0.0.1";
static const char *g_port = "50051";
static char g_authority[300];

static int cmp_u64(const void *a, const void *b);

__attribute__((format(printf, 1, 2))) static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "inferctl: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

/* ---- nghttp2 glue ---- */
static ssize_t send_cb(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *ud)
{
    (void)s;
    (void)flags;
    conn_t *c = ud;
    ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) return NGHTTP2_ERR_WOULDBLOCK;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return n;
}

static void on_message(stream_t *st, const uint8_t *p, size_t n)
{
    uint64_t t = (uint64_t)clock_now_ns();
    st->msgs++;
    if (st->is_health) {
        Grpc__Health__V1__HealthCheckResponse *r =
            grpc__health__v1__health_check_response__unpack(NULL, n, p);
        if (r) {
            st->health_status = r->status;
            grpc__health__v1__health_check_response__free_unpacked(r, NULL);
        }
        return;
    }
    if (st->is_tokenize) {
        Inferd__V1__TokenizeResponse *r = inferd__v1__tokenize_response__unpack(NULL, n, p);
        if (!r) {
            st->error_code = 13;
            snprintf(st->grpc_message, sizeof st->grpc_message, "unparsable TokenizeResponse");
            return;
        }
        for (size_t i = 0; i < r->n_token_ids; i++)
            printf("%s%u", i ? " " : "", r->token_ids[i]);
        printf("\n");
        st->tokens = (uint32_t)r->n_token_ids;
        inferd__v1__tokenize_response__free_unpacked(r, NULL);
        return;
    }
    Inferd__V1__GenerateResponse *r = inferd__v1__generate_response__unpack(NULL, n, p);
    if (!r) {
        st->error_code = 13;
        snprintf(st->grpc_message, sizeof st->grpc_message, "unparsable GenerateResponse");
        return;
    }
    if (r->n_token_ids) {
        if (!st->t_first) st->t_first = t;
        st->t_last = t;
        for (size_t k = 0; k < r->n_token_ids && st->stamps; k++)
            if (st->tokens + k < st->stamp_cap) st->stamps[st->tokens + k] = t;
        st->tokens += (uint32_t)r->n_token_ids;
    }
    if (st->print && r->text && *r->text) {
        fputs(r->text, stdout);
        fflush(stdout);
    }
    if (r->finish_reason) st->finish = r->finish_reason;
    if (r->usage) {
        st->prompt_tokens = r->usage->prompt_tokens;
        st->completion_tokens = r->usage->completion_tokens;
    }
    if (r->error) {
        st->error_code = r->error->code;
        snprintf(st->grpc_message, sizeof st->grpc_message, "%s",
                 r->error->message ? r->error->message : "");
    }
    inferd__v1__generate_response__free_unpacked(r, NULL);
}

static int on_data_cb(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
                      size_t len, void *ud)
{
    (void)flags;
    (void)ud;
    stream_t *st = nghttp2_session_get_stream_user_data(s, id);
    if (!st) return 0;
    if (st->in_len + len > st->in_cap) {
        size_t cap = (st->in_len + len) * 2;
        uint8_t *n = realloc(st->in, cap);
        if (!n) return NGHTTP2_ERR_CALLBACK_FAILURE;
        st->in = n;
        st->in_cap = cap;
    }
    memcpy(st->in + st->in_len, data, len);
    st->in_len += len;
    size_t off = 0;
    while (st->in_len - off >= 5) {
        const uint8_t *h = st->in + off;
        uint32_t mlen = (uint32_t)h[1] << 24 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 8 | h[4];
        if (st->in_len - off - 5 < mlen) break;
        on_message(st, h + 5, mlen);
        off += 5 + mlen;
    }
    memmove(st->in, st->in + off, st->in_len - off);
    st->in_len -= off;
    return 0;
}

static int on_header_cb(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name,
                        size_t nlen, const uint8_t *value, size_t vlen, uint8_t flags, void *ud)
{
    (void)flags;
    (void)ud;
    stream_t *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
    if (!st) return 0;
    if (nlen == 11 && !memcmp(name, "grpc-status", 11)) {
        char b[16];
        snprintf(b, sizeof b, "%.*s", (int)(vlen < 15 ? vlen : 15), value);
        st->grpc_status = atoi(b);
    } else if (nlen == 12 && !memcmp(name, "grpc-message", 12)) {
        snprintf(st->grpc_message, sizeof st->grpc_message, "%.*s", (int)vlen, value);
    }
    return 0;
}

static void (*g_on_close)(stream_t *st);

static int on_close_cb(nghttp2_session *s, int32_t id, uint32_t err, void *ud)
{
    (void)err;
    conn_t *c = ud;
    stream_t *st = nghttp2_session_get_stream_user_data(s, id);
    if (!st) return 0;
    st->t_end = (uint64_t)clock_now_ns();
    if (st->grpc_status < 0 && err) {
        st->grpc_status = 1;
        snprintf(st->grpc_message, sizeof st->grpc_message, "stream reset (h2 error %u)", err);
    }
    c->active--;
    nghttp2_session_set_stream_user_data(s, id, NULL);
    if (g_on_close) g_on_close(st);
    return 0;
}

static ssize_t body_read_cb(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len,
                            uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    (void)s;
    (void)id;
    (void)ud;
    stream_t *st = src->ptr;
    size_t n = st->body_len - st->body_off;
    if (n > len) n = len;
    memcpy(buf, st->body + st->body_off, n);
    st->body_off += n;
    if (st->body_off == st->body_len) *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static int conn_open(conn_t *c)
{
    struct addrinfo hints = {0}, *ai;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(g_host, g_port, &hints, &ai)) return -1;
    c->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0 || connect(c->fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        freeaddrinfo(ai);
        return -1;
    }
    freeaddrinfo(ai);
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(c->fd, F_SETFL, fcntl(c->fd, F_GETFL) | O_NONBLOCK);
    nghttp2_session_callbacks *cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_send_callback(cb, send_cb);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_cb);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header_cb);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_close_cb);
    int rc = nghttp2_session_client_new(&c->s, cb, c);
    nghttp2_session_callbacks_del(cb);
    if (rc) return -1;
    /* large windows: the benchmark measures the server, not flow control */
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 1024},
                                   {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 24}};
    nghttp2_submit_settings(c->s, NGHTTP2_FLAG_NONE, iv, 2);
    nghttp2_session_set_local_window_size(c->s, NGHTTP2_FLAG_NONE, 0, 1 << 30);
    return 0;
}

static void conn_close(conn_t *c)
{
    if (c->s) nghttp2_session_del(c->s);
    if (c->fd >= 0) close(c->fd);
    c->s = NULL;
    c->fd = -1;
}

/* gRPC-framed body of a message. */
static uint8_t *frame(const ProtobufCMessage *m, size_t *len)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *b = malloc(n + 5);
    if (!b) die("%s", "out of memory");
    b[0] = 0;
    b[1] = (uint8_t)(n >> 24);
    b[2] = (uint8_t)(n >> 16);
    b[3] = (uint8_t)(n >> 8);
    b[4] = (uint8_t)n;
    protobuf_c_message_pack(m, b + 5);
    *len = n + 5;
    return b;
}

static int stream_start(conn_t *c, stream_t *st, const char *path)
{
#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE}
    nghttp2_nv hdrs[] = {NV(":method", "POST"),
                         NV(":scheme", "http"),
                         NV(":authority", g_authority),
                         NV(":path", path),
                         NV("content-type", "application/grpc"),
                         NV("te", "trailers")};
    nghttp2_data_provider dp = {.source.ptr = st, .read_callback = body_read_cb};
    st->c = c;
    st->grpc_status = -1;
    st->t_start = (uint64_t)clock_now_ns();
    st->id = nghttp2_submit_request(c->s, NULL, hdrs, sizeof hdrs / sizeof hdrs[0], &dp, st);
    if (st->id < 0) return -1;
    c->active++;
    return 0;
}

/* One turn: flush what nghttp2 wants to send, wait up to ms for input, feed it. */
static int conns_turn(conn_t *cs, int n, int ms)
{
    struct pollfd p[MAX_CONNS];
    for (int i = 0; i < n; i++) {
        conn_t *c = &cs[i];
        p[i].fd = -1;
        p[i].events = 0;
        if (c->dead) continue;
        if (nghttp2_session_send(c->s)) {
            c->dead = 1;
            continue;
        }
        p[i].fd = c->fd;
        p[i].events = POLLIN | (nghttp2_session_want_write(c->s) ? POLLOUT : 0);
    }
    if (poll(p, (nfds_t)n, ms) < 0 && errno != EINTR) return -1;
    for (int i = 0; i < n; i++) {
        conn_t *c = &cs[i];
        if (c->dead || !p[i].revents) continue;
        if (p[i].revents & (POLLIN | POLLHUP | POLLERR)) {
            uint8_t buf[65536];
            for (;;) {
                ssize_t r = recv(c->fd, buf, sizeof buf, 0);
                if (r > 0) {
                    if (nghttp2_session_mem_recv(c->s, buf, (size_t)r) < 0) {
                        c->dead = 1;
                        break;
                    }
                    continue;
                }
                if (r == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
                    c->dead = 1;
                break;
            }
        }
    }
    return 0;
}

/* ---- health ---- */
static int cmd_health(int argc, char **argv)
{
    Grpc__Health__V1__HealthCheckRequest rq = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    rq.service = argc > 0 ? argv[0] : (char *)"";
    stream_t st = {0};
    st.is_health = 1;
    st.health_status = -1;
    st.body = frame(&rq.base, &st.body_len);
    conn_t c = {.fd = -1};
    if (conn_open(&c)) die("cannot connect to %s", g_authority);
    if (stream_start(&c, &st, "/grpc.health.v1.Health/Check")) die("%s", "cannot start the call");
    uint64_t deadline = (uint64_t)clock_now_ns() + 5000000000ull;
    while (!st.t_end && !c.dead && (uint64_t)clock_now_ns() < deadline)
        conns_turn(&c, 1, 100);
    conn_close(&c);
    free(st.body);
    free(st.in);
    if (st.grpc_status != 0) {
        fprintf(stderr, "inferctl: health check failed: grpc-status %d %s\n", st.grpc_status,
                st.grpc_message);
        return 2;
    }
    static const char *names[] = {"UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"};
    printf("%s\n", st.health_status >= 0 && st.health_status < 4 ? names[st.health_status] : "?");
    return st.health_status == 1 ? 0 : 1;
}

/* Check latency: count sequential calls on one connection, one every interval_ms. */
static int cmd_ping(int argc, char **argv)
{
    int count = 1000, interval_ms = 2;
    const char *service = "inferd.v1.Inference";
    for (int i = 0; i < argc; i++) {
        if (i + 1 >= argc) {
            service = argv[i];
            break;
        }
        if (!strcmp(argv[i], "--count"))
            count = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--interval-ms"))
            interval_ms = atoi(argv[++i]);
        else
            service = argv[i];
    }
    if (count < 1) die("%s", "--count must be >= 1");
    Grpc__Health__V1__HealthCheckRequest rq = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    rq.service = (char *)service;
    size_t blen;
    uint8_t *body = frame(&rq.base, &blen);
    conn_t c = {.fd = -1};
    if (conn_open(&c)) die("cannot connect to %s", g_authority);
    uint64_t *lat = calloc((size_t)count, 8);
    int bad = 0;
    for (int k = 0; k < count; k++) {
        stream_t st = {0};
        st.is_health = 1;
        st.health_status = -1;
        st.body = body;
        st.body_len = blen;
        if (stream_start(&c, &st, "/grpc.health.v1.Health/Check"))
            die("%s", "cannot start the call");
        uint64_t deadline = (uint64_t)clock_now_ns() + 5000000000ull;
        while (!st.t_end && !c.dead && (uint64_t)clock_now_ns() < deadline)
            conns_turn(&c, 1, 100);
        if (!st.t_end) die("%s", "health check timed out or the connection died");
        lat[k] = st.t_end - st.t_start;
        bad += st.grpc_status != 0 || st.health_status != 1;
        free(st.in);
        if (interval_ms > 0) {
            struct timespec ts = {0, (long)interval_ms * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    conn_close(&c);
    free(body);
    if (getenv("INFERCTL_LATENCIES")) /* each call's latency, for a caller that pools runs */
        for (int k = 0; k < count; k++)
            printf("lat %.3f\n", (double)lat[k] / 1e6);
    qsort(lat, (size_t)count, 8, cmp_u64);
    printf("health Check %s: %d calls  p50 %.3f ms  p99 %.3f ms  max %.3f ms  not SERVING %d\n",
           service, count, (double)lat[count / 2] / 1e6, (double)lat[(count * 99) / 100] / 1e6,
           (double)lat[count - 1] / 1e6, bad);
    free(lat);
    return bad ? 1 : 0;
}

/* ---- generate, chat, tokenize ---- */
#define MAX_MSGS 64
#define MAX_STOPS 16

/* Chat messages from the command line: --system, --message ROLE:TEXT, then the user's turn. */
typedef struct {
    Inferd__V1__ChatMessage m[MAX_MSGS];
    Inferd__V1__ChatMessage *p[MAX_MSGS];
    size_t n;
} chat_t;

static void chat_add(chat_t *c, const char *role, size_t rlen, const char *content)
{
    if (c->n == MAX_MSGS) die("at most %d messages", MAX_MSGS);
    Inferd__V1__ChatMessage *m = &c->m[c->n];
    inferd__v1__chat_message__init(m);
    m->role = strndup(role, rlen);
    m->content = (char *)content;
    if (!m->role) die("%s", "out of memory");
    c->p[c->n++] = m;
}

/* --system and --message; returns 1 when argv[*i] (and its value) was one of them. */
static int chat_option(chat_t *c, int argc, char **argv, int *i)
{
    const char *o = argv[*i];
    if (strcmp(o, "--system") && strcmp(o, "--message")) return 0;
    if (*i + 1 >= argc) die("%s needs a value", o);
    const char *v = argv[++*i];
    if (!strcmp(o, "--system")) {
        chat_add(c, "system", 6, v);
        return 1;
    }
    const char *colon = strchr(v, ':');
    if (!colon) die("--message %s: want ROLE:TEXT", v);
    chat_add(c, v, (size_t)(colon - v), colon + 1);
    return 1;
}

static void chat_dispose(chat_t *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->m[i].role);
}

/* Runs one call whose request is body; 0 when it ended with grpc-status 0. */
static int run_call(stream_t *st, const char *path, const char *what)
{
    conn_t c = {.fd = -1};
    if (conn_open(&c)) die("cannot connect to %s", g_authority);
    if (stream_start(&c, st, path)) die("%s", "cannot start the call");
    while (!st->t_end && !c.dead)
        conns_turn(&c, 1, 1000);
    conn_close(&c);
    free(st->body);
    free(st->in);
    if (st->grpc_status != 0) {
        if (st->print) printf("\n");
        fprintf(stderr, "inferctl: %s failed: grpc-status %d %s\n", what, st->grpc_status,
                st->grpc_message);
        return 1;
    }
    return 0;
}

static int generate(int argc, char **argv, int chat)
{
    Inferd__V1__GenerateRequest rq = INFERD__V1__GENERATE_REQUEST__INIT;
    Inferd__V1__SamplingOptions so = INFERD__V1__SAMPLING_OPTIONS__INIT;
    Inferd__V1__StopConditions sc = INFERD__V1__STOP_CONDITIONS__INIT;
    char *stops[MAX_STOPS];
    chat_t msgs = {.n = 0};
    rq.sampling = &so;
    rq.stop = &sc;
    sc.max_tokens = 64;
    sc.stop = stops;
    int i = 0;
    for (; i < argc && !strncmp(argv[i], "--", 2); i++) {
        const char *o = argv[i];
        if (!strcmp(o, "--ignore-eos")) {
            sc.ignore_eos = 1;
            continue;
        }
        if (chat && chat_option(&msgs, argc, argv, &i)) continue;
        if (i + 1 >= argc) die("%s needs a value", o);
        const char *v = argv[++i];
        if (!strcmp(o, "--max-tokens"))
            sc.max_tokens = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(o, "--temperature"))
            so.temperature = strtof(v, NULL);
        else if (!strcmp(o, "--top-p"))
            so.top_p = strtof(v, NULL);
        else if (!strcmp(o, "--top-k"))
            so.top_k = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(o, "--seed"))
            so.seed = strtoull(v, NULL, 10);
        else if (!strcmp(o, "--stop")) {
            if (sc.n_stop == MAX_STOPS) die("at most %d --stop strings", MAX_STOPS);
            stops[sc.n_stop++] = (char *)v;
        } else
            die("unknown %s option %s", chat ? "chat" : "generate", o);
    }
    if (i >= argc) die("%s needs a %s", chat ? "chat" : "generate", chat ? "MESSAGE" : "PROMPT");
    if (chat) {
        chat_add(&msgs, "user", 4, argv[i]);
        rq.messages = msgs.p;
        rq.n_messages = msgs.n;
    } else {
        rq.prompt = argv[i];
    }
    stream_t st = {0};
    st.print = 1;
    st.grpc_status = -1;
    st.body = frame(&rq.base, &st.body_len);
    chat_dispose(&msgs);
    if (run_call(&st, "/inferd.v1.Inference/Generate", chat ? "chat" : "generate")) return 1;
    printf("\n");
    static const char *fin[] = {"unspecified", "length", "eos", "stop", "cancelled"};
    double s = st.t_last > st.t_first ? (double)(st.t_last - st.t_first) / 1e9 : 0;
    fprintf(stderr, "finish %s, prompt %u tokens, completion %u tokens, ttft %.1f ms, %.1f tok/s\n",
            st.finish >= 0 && st.finish <= 4 ? fin[st.finish] : "?", st.prompt_tokens,
            st.completion_tokens, st.t_first ? (double)(st.t_first - st.t_start) / 1e6 : 0.0,
            s > 0 ? (st.tokens - 1) / s : 0.0);
    return 0;
}

static int cmd_generate(int argc, char **argv)
{
    return generate(argc, argv, 0);
}

static int cmd_chat(int argc, char **argv)
{
    return generate(argc, argv, 1);
}

static int cmd_tokenize(int argc, char **argv)
{
    Inferd__V1__TokenizeRequest rq = INFERD__V1__TOKENIZE_REQUEST__INIT;
    chat_t msgs = {.n = 0};
    int chat = 0, i = 0;
    for (; i < argc && !strncmp(argv[i], "--", 2); i++) {
        if (!strcmp(argv[i], "--chat"))
            chat = 1;
        else if (!chat_option(&msgs, argc, argv, &i))
            die("unknown tokenize option %s", argv[i]);
    }
    if (i >= argc) die("%s", "tokenize needs a TEXT");
    if (msgs.n && !chat) die("%s", "--system and --message need --chat");
    if (chat) {
        chat_add(&msgs, "user", 4, argv[i]);
        rq.messages = msgs.p;
        rq.n_messages = msgs.n;
    } else {
        rq.prompt = argv[i];
    }
    stream_t st = {0};
    st.is_tokenize = 1;
    st.grpc_status = -1;
    st.body = frame(&rq.base, &st.body_len);
    chat_dispose(&msgs);
    if (run_call(&st, "/inferd.v1.Inference/Tokenize", "tokenize")) return 1;
    fprintf(stderr, "%u tokens\n", st.tokens);
    return 0;
}

/* ---- bench ---- */
typedef struct {
    stream_t *st; /* one per request */
    int next, done, failed, nreq, conc;
    uint8_t **bodies;
} bench_t;

static bench_t B;

static void bench_closed(stream_t *st)
{
    B.done++;
    if (st->grpc_status != 0 || st->error_code) {
        if (B.failed++ < 5)
            fprintf(stderr, "inferctl: request %d failed: grpc-status %d error %d %s\n", st->idx,
                    st->grpc_status, st->error_code, st->grpc_message);
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* prompt ids per bench request (--prompt-tokens): engine_core_bench's, 5 by default */
static int g_prompt_len = 5;

static int bench_round(int conc, int nreq, uint32_t max_tokens, int nconns, int print)
{
    conn_t cs[MAX_CONNS];
    if (nconns > MAX_CONNS) nconns = MAX_CONNS;
    for (int i = 0; i < nconns; i++) {
        cs[i] = (conn_t){.fd = -1};
        if (conn_open(&cs[i])) die("cannot connect to %s", g_authority);
    }
    memset(&B, 0, sizeof B);
    B.nreq = nreq;
    B.conc = conc;
    B.st = calloc((size_t)nreq, sizeof *B.st);
    g_on_close = bench_closed;
    uint64_t t0 = (uint64_t)clock_now_ns();
    while (B.done < nreq) {
        int inflight = B.next - B.done;
        while (B.next < nreq && inflight < conc) {
            stream_t *st = &B.st[B.next];
            st->idx = B.next;
            st->stamps = calloc(max_tokens ? max_tokens : 1, sizeof *st->stamps);
            if (!st->stamps) die("%s", "out of memory");
            st->stamp_cap = max_tokens;
            /* the engine benchmark's request (tools/bench/load.h), BOS 1 */
            uint32_t *ids = calloc((size_t)g_prompt_len, sizeof *ids);
            if (!ids) die("%s", "out of memory");
            bench_prompt_ids(ids, g_prompt_len, 1, B.next % conc, 0);
            Inferd__V1__GenerateRequest rq = INFERD__V1__GENERATE_REQUEST__INIT;
            Inferd__V1__StopConditions sc = INFERD__V1__STOP_CONDITIONS__INIT;
            rq.token_ids = ids;
            rq.n_token_ids = (size_t)g_prompt_len;
            sc.max_tokens = max_tokens;
            sc.ignore_eos = 1;
            rq.stop = &sc;
            st->body = frame(&rq.base, &st->body_len);
            free(ids);
            if (stream_start(&cs[B.next % nconns], st, "/inferd.v1.Inference/Generate"))
                die("%s", "cannot start a stream");
            B.next++;
            inflight++;
        }
        int alive = 0;
        for (int i = 0; i < nconns; i++)
            alive += !cs[i].dead;
        if (!alive) die("%s", "connection lost");
        conns_turn(cs, nconns, 1000);
    }
    uint64_t t1 = (uint64_t)clock_now_ns();
    for (int i = 0; i < nconns; i++)
        conn_close(&cs[i]);
    uint64_t total = 0;
    uint64_t *ttft = calloc((size_t)nreq, 8);
    double decode = 0;
    int nd = 0, nt = 0;
    for (int i = 0; i < nreq; i++) {
        stream_t *st = &B.st[i];
        total += st->tokens;
        if (st->t_first) ttft[nt++] = st->t_first - st->t_start;
        if (st->tokens > 1 && st->t_last > st->t_first) {
            decode += (st->tokens - 1) / ((double)(st->t_last - st->t_first) / 1e9);
            nd++;
        }
        if (getenv("INFERCTL_TRACE"))
            fprintf(stderr,
                    "req %d: start +%.2f ms, ttft %.2f ms, decode %.2f ms, last token -> end %.2f "
                    "ms, %u tokens\n",
                    i, (double)(st->t_start - t0) / 1e6, (double)(st->t_first - st->t_start) / 1e6,
                    (double)(st->t_last - st->t_first) / 1e6,
                    (double)(st->t_end - st->t_last) / 1e6, st->tokens);
        free(st->body);
        free(st->in);
    }
    /* steady decode, as engine_core_bench counts it (tools/bench/load.h); with more requests
     * than streams, the whole run's aggregate instead */
    double secs = (double)(t1 - t0) / 1e9, steady = -1;
    bench_stream_t *bs = nreq == conc ? calloc((size_t)nreq, sizeof *bs) : NULL;
    if (bs) {
        for (int i = 0; i < nreq; i++)
            bs[i] = (bench_stream_t){B.st[i].t_first, B.st[i].t_last, B.st[i].stamps,
                                     B.st[i].tokens < B.st[i].stamp_cap ? B.st[i].tokens
                                                                        : B.st[i].stamp_cap};
        steady = bench_steady(bs, nreq);
        free(bs);
    }
    if (steady < 0) steady = (double)total / secs;
    for (int i = 0; i < nreq; i++)
        free(B.st[i].stamps);
    qsort(ttft, (size_t)nt, 8, cmp_u64);
    if (print)
        printf("streams %3d  requests %4d  tokens/stream %u  aggregate %8.1f tok/s  steady-decode "
               "%8.1f tok/s  per-stream decode %7.1f "
               "tok/s  ttft p50 %7.2f ms  p99 %7.2f ms  failed %d\n",
               conc, nreq, max_tokens, (double)total / secs, steady, nd ? decode / nd : 0.0,
               nt ? (double)ttft[nt / 2] / 1e6 : 0.0,
               nt ? (double)ttft[(nt * 99) / 100 < nt ? (nt * 99) / 100 : nt - 1] / 1e6 : 0.0,
               B.failed);
    fflush(stdout);
    int failed = B.failed;
    free(ttft);
    free(B.st);
    return failed ? 1 : 0;
}

/* ---- bench through the OpenAI API: server-sent events over HTTP/1.1 ---- */

/* One client connection (keep-alive), carrying one streamed completion at a time. */
typedef struct oconn {
    int fd;
    int req; /* the request it carries, -1 when idle */
    char *out;
    size_t out_len, out_off;
    char *in; /* raw bytes received, not yet decoded */
    size_t in_len, in_cap;
    int head_done;
    long chunk_left; /* bytes left in the current chunk, -1 before its size line */
    char *ev;        /* decoded body: events not yet complete */
    size_t ev_len, ev_cap;
} oconn_t;

typedef struct oreq {
    uint64_t t_start, t_first, t_last, t_end;
    uint32_t tokens; /* completion_tokens from the usage chunk */
    int failed;
} oreq_t;

static void buf_add(char **b, size_t *len, size_t *cap, const char *d, size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t c = *cap ? *cap * 2 : 4096;
        while (c < *len + n + 1)
            c *= 2;
        char *x = realloc(*b, c);
        if (!x) die("%s", "out of memory");
        *b = x;
        *cap = c;
    }
    memcpy(*b + *len, d, n);
    *len += n;
    (*b)[*len] = 0;
}

static int oconn_open(oconn_t *c)
{
    struct addrinfo hints = {0}, *ai;
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(g_host, g_port, &hints, &ai)) return -1;
    c->fd = socket(ai->ai_family, SOCK_STREAM, 0);
    int rc = c->fd >= 0 ? connect(c->fd, ai->ai_addr, ai->ai_addrlen) : -1;
    freeaddrinfo(ai);
    if (rc) return -1;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    fcntl(c->fd, F_SETFL, O_NONBLOCK);
    c->req = -1;
    return 0;
}

/* One complete event of request r. Returns 1 at [DONE]. */
static int oevent(oreq_t *r, const char *e, uint64_t now)
{
    if (strncmp(e, "data: ", 6)) return 0;
    if (!strncmp(e + 6, "[DONE]", 6)) return 1;
    if (strstr(e, "\"error\"")) r->failed = 1;
    const char *t = strstr(e, "\"text\":\"");
    if (t && t[8] != '"') {
        if (!r->t_first) r->t_first = now;
        r->t_last = now;
    }
    const char *u = strstr(e, "\"completion_tokens\":");
    if (u) r->tokens = (uint32_t)strtoul(u + 20, NULL, 10);
    return 0;
}

/* Decodes what arrived on c (head, chunks, events). Returns 1 when its response ended. */
static int oconn_feed(oconn_t *c, oreq_t *r, uint64_t now)
{
    size_t off = 0;
    if (!c->head_done) {
        char *e = strstr(c->in, "\r\n\r\n");
        if (!e) return 0;
        if (strncmp(c->in, "HTTP/1.1 200", 12)) r->failed = 1;
        if (!strstr(c->in, "Transfer-Encoding: chunked")) r->failed = 1;
        c->head_done = 1;
        c->chunk_left = -1;
        off = (size_t)(e - c->in) + 4;
        if (r->failed) return 1;
    }
    int done = 0;
    while (off < c->in_len) {
        if (c->chunk_left < 0) {
            char *nl = strstr(c->in + off, "\r\n");
            if (!nl) break;
            c->chunk_left = strtol(c->in + off, NULL, 16);
            off = (size_t)(nl - c->in) + 2;
            if (c->chunk_left == 0) {
                done = 1; /* the last chunk (its CRLF follows) */
                off = c->in_len;
                break;
            }
            continue;
        }
        size_t have = c->in_len - off;
        if ((long)have < c->chunk_left + 2) break;
        buf_add(&c->ev, &c->ev_len, &c->ev_cap, c->in + off, (size_t)c->chunk_left);
        off += (size_t)c->chunk_left + 2;
        c->chunk_left = -1;
    }
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= off;
    c->in[c->in_len] = 0;
    char *p = c->ev, *e;
    while (c->ev && (e = strstr(p, "\n\n"))) {
        *e = 0;
        oevent(r, p, now);
        p = e + 2;
    }
    if (c->ev) {
        size_t left = c->ev_len - (size_t)(p - c->ev);
        memmove(c->ev, p, left);
        c->ev_len = left;
        c->ev[left] = 0;
    }
    return done;
}

static int openai_round(int conc, int nreq, uint32_t max_tokens, int print)
{
    oconn_t *cs = calloc((size_t)conc, sizeof *cs);
    oreq_t *rs = calloc((size_t)nreq, sizeof *rs);
    struct pollfd *pf = calloc((size_t)conc, sizeof *pf);
    if (!cs || !rs || !pf) die("%s", "out of memory");
    for (int i = 0; i < conc; i++)
        if (oconn_open(&cs[i])) die("cannot connect to %s", g_authority);
    int next = 0, done = 0, failed = 0;
    uint64_t t0 = (uint64_t)clock_now_ns();
    while (done < nreq) {
        for (int i = 0; i < conc; i++) {
            oconn_t *c = &cs[i];
            if (c->req >= 0 || next >= nreq) continue;
            /* the same request as the gRPC bench (tools/bench/load.h), greedy, ignore_eos */
            uint32_t *ids = calloc((size_t)g_prompt_len, sizeof *ids);
            size_t cap = 256 + 12 * (size_t)g_prompt_len;
            char *body = malloc(cap), head[512];
            if (!ids || !body) die("%s", "out of memory");
            bench_prompt_ids(ids, g_prompt_len, 1, next % conc, 0);
            int bl = snprintf(body, cap, "{\"prompt\":[");
            for (int t = 0; t < g_prompt_len; t++)
                bl += snprintf(body + bl, cap - (size_t)bl, "%s%u", t ? "," : "", ids[t]);
            bl += snprintf(body + bl, cap - (size_t)bl,
                           "],\"max_tokens\":%u,\"temperature\":0,\"ignore_eos\":true,"
                           "\"stream\":true,\"stream_options\":{\"include_usage\":true}}",
                           max_tokens);
            free(ids);
            int hl = snprintf(head, sizeof head,
                              "POST /v1/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: "
                              "application/json\r\nContent-Length: %d\r\n\r\n",
                              g_authority, bl);
            free(c->out);
            c->out = malloc((size_t)(hl + bl));
            if (!c->out) die("%s", "out of memory");
            memcpy(c->out, head, (size_t)hl);
            memcpy(c->out + hl, body, (size_t)bl);
            free(body);
            c->out_len = (size_t)(hl + bl);
            c->out_off = 0;
            c->head_done = 0;
            c->in_len = c->ev_len = 0;
            c->req = next++;
            rs[c->req].t_start = (uint64_t)clock_now_ns();
        }
        for (int i = 0; i < conc; i++) {
            pf[i].fd = cs[i].req >= 0 ? cs[i].fd : -1;
            pf[i].events = POLLIN | (cs[i].out_off < cs[i].out_len ? POLLOUT : 0);
            pf[i].revents = 0;
        }
        if (poll(pf, (nfds_t)conc, 1000) < 0) die("%s", "poll failed");
        uint64_t now = (uint64_t)clock_now_ns();
        for (int i = 0; i < conc; i++) {
            oconn_t *c = &cs[i];
            if (c->req < 0) continue;
            if (c->out_off < c->out_len) {
                ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
                if (w > 0) c->out_off += (size_t)w;
            }
            if (!(pf[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            char buf[65536];
            ssize_t n = recv(c->fd, buf, sizeof buf, 0);
            if (n <= 0) die("%s", "the server closed a connection");
            buf_add(&c->in, &c->in_len, &c->in_cap, buf, (size_t)n);
            oreq_t *r = &rs[c->req];
            if (oconn_feed(c, r, now)) {
                r->t_end = now;
                if (r->failed && failed++ < 5)
                    fprintf(stderr, "inferctl: request %d failed: %.200s\n", c->req, c->in);
                c->req = -1;
                done++;
            }
        }
    }
    uint64_t t1 = (uint64_t)clock_now_ns();
    uint64_t total = 0, *ttft = calloc((size_t)nreq, 8);
    double decode = 0;
    int nd = 0, nt = 0;
    for (int i = 0; i < nreq; i++) {
        oreq_t *r = &rs[i];
        total += r->tokens;
        if (r->t_first) ttft[nt++] = r->t_first - r->t_start;
        if (r->tokens > 1 && r->t_last > r->t_first) {
            decode += (r->tokens - 1) / ((double)(r->t_last - r->t_first) / 1e9);
            nd++;
        }
    }
    qsort(ttft, (size_t)nt, 8, cmp_u64);
    double secs = (double)(t1 - t0) / 1e9;
    if (print)
        printf("streams %3d  requests %4d  tokens/stream %u  aggregate %8.1f tok/s  per-stream "
               "decode %7.1f "
               "tok/s  ttft p50 %7.2f ms  p99 %7.2f ms  failed %d\n",
               conc, nreq, max_tokens, (double)total / secs, nd ? decode / nd : 0.0,
               nt ? (double)ttft[nt / 2] / 1e6 : 0.0,
               nt ? (double)ttft[(nt * 99) / 100 < nt ? (nt * 99) / 100 : nt - 1] / 1e6 : 0.0,
               failed);
    fflush(stdout);
    for (int i = 0; i < conc; i++) {
        close(cs[i].fd);
        free(cs[i].out);
        free(cs[i].in);
        free(cs[i].ev);
    }
    free(cs);
    free(rs);
    free(pf);
    free(ttft);
    return failed ? 1 : 0;
}

static int cmd_bench(int argc, char **argv)
{
    int conc = 1, nreq = -1, nconns = 1, warmup = 1, openai = 0;
    uint32_t max_tokens = 200;
    for (int i = 0; i < argc; i++) {
        const char *o = argv[i];
        if (i + 1 >= argc) die("%s needs a value", o);
        const char *v = argv[++i];
        if (!strcmp(o, "--streams"))
            conc = atoi(v);
        else if (!strcmp(o, "--requests"))
            nreq = atoi(v);
        else if (!strcmp(o, "--max-tokens"))
            max_tokens = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(o, "--conns"))
            nconns = atoi(v);
        else if (!strcmp(o, "--warmup"))
            warmup = atoi(v);
        else if (!strcmp(o, "--prompt-tokens"))
            g_prompt_len = atoi(v);
        else if (!strcmp(o, "--api")) {
            if (strcmp(v, "grpc") && strcmp(v, "openai")) die("--api %s: want grpc or openai", v);
            openai = !strcmp(v, "openai");
        } else
            die("unknown bench option %s", o);
    }
    if (conc < 1 || nconns < 1) die("%s", "--streams and --conns must be >= 1");
    if (g_prompt_len < 1 || g_prompt_len > 100000) die("%s", "--prompt-tokens must be 1..100000");
    if (nreq < conc) nreq = conc;
    if (openai) {
        if (warmup > 0) openai_round(conc, conc, max_tokens < 16 ? max_tokens : 16, 0);
        return openai_round(conc, nreq, max_tokens, 1);
    }
    if (warmup > 0) bench_round(conc, conc, max_tokens < 16 ? max_tokens : 16, nconns, 0);
    return bench_round(conc, nreq, max_tokens, nconns, 1);
}

static void usage(void)
{
    fprintf(
        stderr,
        "usage: inferctl [--addr HOST:PORT] health [SERVICE]\n"
        "       inferctl [--addr HOST:PORT] generate [--max-tokens N] [--temperature T] [--top-p "
        "P]\n"
        "                [--top-k K] [--seed S] [--ignore-eos] [--stop TEXT]... PROMPT\n"
        "       inferctl [--addr HOST:PORT] chat [generate's options] [--system TEXT]\n"
        "                [--message ROLE:TEXT]... MESSAGE\n"
        "       inferctl [--addr HOST:PORT] tokenize [--chat] [--system TEXT] "
        "[--message ROLE:TEXT]... TEXT\n"
        "       inferctl [--addr HOST:PORT] bench [--streams C] [--requests N] [--max-tokens T]\n"
        "                [--conns K] [--warmup 0|1] [--prompt-tokens P] [--api grpc|openai]\n"
        "       inferctl [--addr HOST:PORT] ping [--count N] [--interval-ms MS] [SERVICE]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    int i = 1;
    static char host[256];
    if (i + 1 < argc && !strcmp(argv[i], "--addr")) {
        const char *a = argv[i + 1];
        const char *colon = strrchr(a, ':');
        if (!colon) die("--addr %s: want HOST:PORT", a);
        snprintf(host, sizeof host, "%.*s", (int)(colon - a), a);
        g_host = host;
        g_port = colon + 1;
        i += 2;
    }
    snprintf(g_authority, sizeof g_authority, "%s:%s", g_host, g_port);
    if (i >= argc) usage();
    const char *cmd = argv[i++];
    if (!strcmp(cmd, "health")) return cmd_health(argc - i, argv + i);
    if (!strcmp(cmd, "generate")) return cmd_generate(argc - i, argv + i);
    if (!strcmp(cmd, "chat")) return cmd_chat(argc - i, argv + i);
    if (!strcmp(cmd, "tokenize")) return cmd_tokenize(argc - i, argv + i);
    if (!strcmp(cmd, "bench")) return cmd_bench(argc - i, argv + i);
    if (!strcmp(cmd, "ping")) return cmd_ping(argc - i, argv + i);
    usage();
    return 2;
}
