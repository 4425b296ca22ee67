/* The gRPC layer and HTTP endpoints end to end inside one process: a real server on
 * 127.0.0.1, driven by an nghttp2 client session (mem_send/mem_recv) over a socket, the
 * server's loop pumped by the test. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zlib.h>
#include <cmocka.h>

#include "grpc/health/v1/health.pb-c.h"
#include <event2/thread.h>

#include "health/health.h"
#include "metrics/inferd_metrics.h"
#include "metrics/metrics.h"
#include "server/base/config.h"
#include "server/base/log.h"
#include "server/core/conn.h"
#include "server/core/http.h"
#include "server/core/server.h"

/* ---- test handlers ---- */
static int hang_cancels;
static grpc_call_t *hung;

static void echo_msg(grpc_call_t *call, ProtobufCMessage *msg)
{
    Grpc__Health__V1__HealthCheckRequest *r = (Grpc__Health__V1__HealthCheckRequest *)msg;
    if (!strcmp(r->service, "fail")) {
        grpc_call_finish(call, GRPC_STATUS_INVALID_ARGUMENT, "bad\n100%");
        return;
    }
    assert_int_equal(grpc_call_send(call, msg), 0);
    if (grpc_call_method(call)->kind == GRPC_UNARY) {
        assert_int_equal(grpc_call_send(call, msg), -EINVAL); /* a unary call has one response */
        grpc_call_finish(call, GRPC_STATUS_OK, NULL);
    }
}

static void stream3(grpc_call_t *call, ProtobufCMessage *msg)
{
    for (int i = 0; i < 3; i++)
        assert_int_equal(grpc_call_send(call, msg), 0);
    grpc_call_finish(call, GRPC_STATUS_OK, NULL);
    assert_int_equal(grpc_call_send(call, msg), -EPIPE);
}

static void bidi_done(grpc_call_t *call)
{
    grpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

static void hang(grpc_call_t *call, ProtobufCMessage *msg)
{
    (void)msg;
    grpc_call_ref(call);
    hung = call;
}

static void hang_cancel(grpc_call_t *call)
{
    hang_cancels++;
    assert_ptr_equal(call, hung);
    assert_false(grpc_call_active(call));
    grpc_call_unref(call);
    hung = NULL;
}

/* Hold: server-streaming calls kept open for the test to send on, with on_taken recorded. */
#define MAX_HELD 8
static grpc_call_t *held[MAX_HELD];
static int n_held;
static struct {
    uint64_t tag;
    uint32_t units;
} taken_log[16];
static int n_taken;

static void hold(grpc_call_t *call, ProtobufCMessage *msg)
{
    (void)msg;
    assert_true(n_held < MAX_HELD);
    grpc_call_ref(call);
    held[n_held++] = call;
}

static void hold_cancel(grpc_call_t *call)
{
    for (int i = 0; i < n_held; i++)
        if (held[i] == call) {
            grpc_call_unref(call);
            held[i] = held[--n_held];
            return;
        }
}

static void hold_taken(grpc_call_t *call, uint64_t tag, uint32_t units)
{
    (void)call;
    assert_true(n_taken < 16);
    taken_log[n_taken].tag = tag;
    taken_log[n_taken++].units = units;
}

/* Ends every held call. */
static void release_held(void)
{
    while (n_held) {
        grpc_call_t *c = held[--n_held];
        grpc_call_finish(c, GRPC_STATUS_OK, NULL);
        grpc_call_unref(c);
    }
}

#define ROW(p, n, k, fn)                                                                           \
    {                                                                                              \
        .path = "/test.T/" p, .service = "test.T", .name = p, .kind = k,                           \
        .request = &grpc__health__v1__health_check_request__descriptor,                            \
        .response = &grpc__health__v1__health_check_request__descriptor, .on_message = fn, n       \
    }
static void finish_ok(grpc_call_t *call, ProtobufCMessage *msg)
{
    (void)msg;
    grpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

static const grpc_field_limit_t svc_limits[] = {{"service", 8, 0, NULL}, {NULL, 0, 0, NULL}};

static grpc_method_t rows[] = {
    ROW("Echo", .on_cancel = NULL, GRPC_UNARY, echo_msg),
    ROW("Stream", .on_cancel = NULL, GRPC_SERVER_STREAMING, stream3),
    ROW("Bidi", .on_half_close = bidi_done, GRPC_BIDI_STREAMING, echo_msg),
    ROW("Hang", .on_cancel = hang_cancel, GRPC_UNARY, hang),
    ROW("Hold", .on_cancel = hold_cancel, GRPC_SERVER_STREAMING, hold),
    ROW("HangBidi", .on_cancel = hang_cancel, GRPC_BIDI_STREAMING, hang),
    ROW("Limited", .limits = svc_limits, GRPC_UNARY, echo_msg),
    {.path = "/test.T/Entries",
     .service = "test.T",
     .name = "Entries",
     .kind = GRPC_UNARY,
     .request = &grpc__health__v1__health_list_response__descriptor,
     .response = &grpc__health__v1__health_check_request__descriptor,
     .on_message = finish_ok},
};

/* ---- client ---- */
typedef struct result {
    int32_t id;
    int http_status;
    int grpc_status;
    char grpc_message[256], content_type[64], accept_enc[64], grpc_enc[32];
    unsigned char data[8192];
    size_t dlen;
    size_t dtotal;    /* every DATA byte, not only the first 8 KiB */
    size_t dconsumed; /* of them, given back to the server's window (stingy clients) */
    int header_blocks;
    int closed;
    uint32_t rst;
    int got_rst;
} result_t;

typedef struct client {
    int fd;
    nghttp2_session *s;
    server_t *srv;
    result_t res[32];
    int nres;
    int goaway;
    uint32_t goaway_code;
    char goaway_dbg[64];
    /* request body */
    const unsigned char *body;
    size_t body_len, body_off, chunk;
    int end_stream;
} client_t;

static result_t *res_of(client_t *c, int32_t id)
{
    for (int i = 0; i < c->nres; i++)
        if (c->res[i].id == id) return &c->res[i];
    return NULL;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f, const uint8_t *name, size_t nl,
                     const uint8_t *value, size_t vl, uint8_t flags, void *ud)
{
    (void)s;
    (void)flags;
    result_t *r = res_of(ud, f->hd.stream_id);
    if (!r) return 0;
    char v[256];
    snprintf(v, sizeof v, "%.*s", (int)vl, value);
#define IS(lit) (nl == sizeof(lit) - 1 && !memcmp(name, lit, nl))
    if (IS(":status"))
        r->http_status = atoi(v);
    else if (IS("grpc-status"))
        r->grpc_status = atoi(v);
    else if (IS("grpc-message"))
        snprintf(r->grpc_message, sizeof r->grpc_message, "%s", v);
    else if (IS("content-type"))
        snprintf(r->content_type, sizeof r->content_type, "%.63s", v);
    else if (IS("grpc-accept-encoding"))
        snprintf(r->accept_enc, sizeof r->accept_enc, "%.63s", v);
    else if (IS("grpc-encoding"))
        snprintf(r->grpc_enc, sizeof r->grpc_enc, "%.31s", v);
#undef IS
    return 0;
}

static int on_frame(nghttp2_session *s, const nghttp2_frame *f, void *ud)
{
    (void)s;
    client_t *c = ud;
    if (f->hd.type == NGHTTP2_GOAWAY) {
        c->goaway++;
        c->goaway_code = f->goaway.error_code;
        snprintf(c->goaway_dbg, sizeof c->goaway_dbg, "%.*s", (int)f->goaway.opaque_data_len,
                 (const char *)f->goaway.opaque_data);
    }
    result_t *r = res_of(c, f->hd.stream_id);
    if (r && f->hd.type == NGHTTP2_HEADERS) r->header_blocks++;
    if (r && f->hd.type == NGHTTP2_RST_STREAM) {
        r->got_rst = 1;
        r->rst = f->rst_stream.error_code;
    }
    return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                   void *ud)
{
    (void)s;
    (void)flags;
    result_t *r = res_of(ud, id);
    if (r) r->dtotal += len;
    if (r && r->dlen < sizeof r->data) { /* keeps the first bytes of a long body */
        size_t n = len < sizeof r->data - r->dlen ? len : sizeof r->data - r->dlen;
        memcpy(r->data + r->dlen, data, n);
        r->dlen += n;
    }
    return 0;
}

static int on_close(nghttp2_session *s, int32_t id, uint32_t code, void *ud)
{
    (void)s;
    (void)code;
    result_t *r = res_of(ud, id);
    if (r) r->closed = 1;
    return 0;
}

static ssize_t body_read(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *ud)
{
    (void)s;
    (void)id;
    (void)src;
    client_t *c = ud;
    size_t n = c->body_len - c->body_off;
    if (n > len) n = len;
    if (c->chunk && n > c->chunk) n = c->chunk; /* one DATA frame per chunk */
    if (n) memcpy(buf, c->body + c->body_off, n);
    c->body_off += n;
    if (c->body_off == c->body_len) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (!c->end_stream) *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
    }
    return (ssize_t)n;
}

static void pump_once(client_t *c)
{
    const uint8_t *out;
    ssize_t n;
    while ((n = nghttp2_session_mem_send(c->s, &out)) > 0) {
        ssize_t off = 0;
        while (off < n) {
            ssize_t w = write(c->fd, out + off, (size_t)(n - off));
            if (w > 0)
                off += w;
            else
                event_base_loop(server_base(c->srv), EVLOOP_NONBLOCK);
        }
    }
    event_base_loop(server_base(c->srv), EVLOOP_NONBLOCK);
    unsigned char buf[16384];
    ssize_t r;
    while ((r = read(c->fd, buf, sizeof buf)) > 0)
        assert_true(nghttp2_session_mem_recv(c->s, buf, (size_t)r) >= 0);
    if (r == 0) c->goaway = c->goaway ? c->goaway : -1; /* closed */
}

/* Pumps until *flag is non-zero or ms pass. */
static void pump_until(client_t *c, const int *flag, int ms)
{
    for (int i = 0; i < ms && !*flag; i++) {
        pump_once(c);
        if (*flag) break;
        poll(NULL, 0, 1);
    }
}

/* One server as app.c composes it, minus the engine: the core, its metrics, and health (the
 * generate endpoint NOT_SERVING, as before a first canary) with its rows and routes. */
typedef struct fixture {
    config_t cfg;
    struct event_base *base;
    metrics_registry_t *reg;
    inferd_metrics_t m;
    health_t *health;
} fixture_t;
static fixture_t fx;
static const server_scope_t *next_main_scope; /* the next start_server's --listen scope */

static server_t *start_server(char **extra)
{
    char *argv[32] = {"inferd", "--listen", "127.0.0.1:0", "--system-port", "-1", "--log", "off"};
    int argc = 7;
    for (int i = 0; extra && extra[i]; i++)
        argv[argc++] = extra[i];
    char *env[] = {NULL};
    char err[512];
    assert_int_equal(config_load(&fx.cfg, argc, argv, env, err, sizeof err), 0);
    assert_int_equal(log_configure("off", 0, err, sizeof err), 0);
    fx.base = event_base_new();
    assert_non_null(fx.base);
    assert_int_equal(metrics_registry_new(&fx.reg, fx.cfg.metrics_prefix, err, sizeof err), 0);
    assert_int_equal(inferd_metrics_init(&fx.m, fx.reg), 0);
    server_options_t so = {
        .base = fx.base, .cfg = &fx.cfg, .reg = fx.reg, .m = &fx.m, .main_scope = next_main_scope};
    server_t *s;
    if (server_new(&s, &so, err, sizeof err)) fail_msg("server_new: %s", err);
    assert_int_equal(health_new(&fx.health, fx.base, HEALTH_NOT_SERVING, err, sizeof err), 0);
    assert_int_equal(health_endpoint_add(fx.health, "generate", "inferd.v1.Inference"), 0);
    size_t n;
    grpc_method_t *hrows = health_grpc_methods(fx.health, &n);
    assert_int_equal(server_register(s, hrows, n), 0);
    http_route_t routes[2];
    health_http_routes(fx.health, fx.cfg.live_path, fx.cfg.health_path, routes);
    assert_int_equal(server_route_add(s, routes, 2), 0);
    assert_int_equal(server_register(s, rows, sizeof rows / sizeof rows[0]), 0);
    return s;
}

static void stop_server(server_t *s)
{
    server_free(s);
    health_free(fx.health);
    inferd_metrics_dispose(&fx.m);
    metrics_registry_free(fx.reg);
    event_base_free(fx.base);
    config_dispose(&fx.cfg);
    memset(&fx, 0, sizeof fx);
}

static void client_open_window(client_t *c, server_t *s, uint32_t window);

static void client_open(client_t *c, server_t *s)
{
    client_open_window(c, s, 0);
}

/* window: our SETTINGS_INITIAL_WINDOW_SIZE (0: the default). */
static void client_open_window(client_t *c, server_t *s, uint32_t window)
{
    memset(c, 0, sizeof *c);
    c->srv = s;
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)server_port(s, 0)),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(c->fd, (struct sockaddr *)&a, sizeof a), 0);
    fcntl(c->fd, F_SETFL, O_NONBLOCK);
    nghttp2_session_callbacks *cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_close);
    assert_int_equal(nghttp2_session_client_new(&c->s, cb, c), 0);
    nghttp2_session_callbacks_del(cb);
    nghttp2_settings_entry iv = {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, window};
    nghttp2_submit_settings(c->s, NGHTTP2_FLAG_NONE, &iv, window ? 1 : 0);
}

/* A client that reads everything but never opens its receive windows beyond 16 bytes a stream
 * (a tiny receive buffer, never read): the server's DATA stops at once. */
static void client_open_stingy(client_t *c, server_t *s)
{
    memset(c, 0, sizeof *c);
    c->srv = s;
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)server_port(s, 0)),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(c->fd, (struct sockaddr *)&a, sizeof a), 0);
    fcntl(c->fd, F_SETFL, O_NONBLOCK);
    nghttp2_session_callbacks *cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_close);
    nghttp2_option *opt;
    nghttp2_option_new(&opt);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    assert_int_equal(nghttp2_session_client_new2(&c->s, cb, c, opt), 0);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    nghttp2_settings_entry iv = {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 16};
    nghttp2_submit_settings(c->s, NGHTTP2_FLAG_NONE, &iv, 1);
}

static void client_close(client_t *c)
{
    nghttp2_session_del(c->s);
    close(c->fd);
    for (int i = 0; i < 20; i++) {
        event_base_loop(server_base(c->srv), EVLOOP_NONBLOCK);
        poll(NULL, 0, 1);
    }
}

#define H(n, v)                                                                                    \
    {                                                                                              \
        (uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE                 \
    }

/* Sends one request; extra headers as name, value, ..., NULL. Returns its result slot. */
static result_t *request(client_t *c, const char *method, const char *path, const char *ctype,
                         const unsigned char *body, size_t len, size_t chunk,
                         const char *const *extra)
{
    nghttp2_nv nva[16] = {H(":method", method), H(":scheme", "http"), H(":path", path),
                          H(":authority", "test")};
    size_t n = 4;
    if (ctype) nva[n++] = (nghttp2_nv)H("content-type", ctype);
    for (int i = 0; extra && extra[i]; i += 2)
        nva[n++] = (nghttp2_nv)H(extra[i], extra[i + 1]);
    c->body = body;
    c->body_len = len;
    c->body_off = 0;
    c->chunk = chunk;
    c->end_stream = 1;
    nghttp2_data_provider prd = {.read_callback = body_read};
    int32_t id = nghttp2_submit_request(c->s, NULL, nva, n, body ? &prd : NULL, NULL);
    assert_true(id > 0);
    result_t *r = &c->res[c->nres++];
    memset(r, 0, sizeof *r);
    r->id = id;
    r->grpc_status = -1;
    return r;
}

static const char *const grpc_hdrs[] = {"te", "trailers", NULL};

/* A framed HealthCheckRequest{service}. */
static size_t frame(unsigned char *out, const char *service, int flag)
{
    size_t sl = strlen(service);
    size_t ml = sl ? sl + 2 : 0;
    out[0] = (unsigned char)flag;
    out[1] = out[2] = 0;
    out[3] = (unsigned char)(ml >> 8);
    out[4] = (unsigned char)ml;
    if (sl) {
        out[5] = 0x0a;
        out[6] = (unsigned char)sl;
        memcpy(out + 7, service, sl);
    }
    return 5 + ml;
}

static void test_unary_echo(void **state)
{
    (void)state;
    server_t *s = start_server(NULL);
    client_t c;
    client_open(&c, s);
    unsigned char buf[64];
    size_t n = frame(buf, "hello", 0);
    result_t *r = request(&c, "POST", "/test.T/Echo", "application/grpc", buf, n, 0, grpc_hdrs);
    pump_until(&c, &r->closed, 2000);
    assert_true(r->closed);
    assert_int_equal(r->http_status, 200);
    assert_string_equal(r->content_type, "application/grpc");
    assert_int_equal(r->grpc_status, 0);
    assert_int_equal(r->header_blocks, 2); /* headers, then trailers */
    assert_int_equal(r->dlen, n);
    assert_memory_equal(r->data, buf, n);
    assert_int_equal(rows[0].stats.started, 1);
    assert_int_equal(rows[0].stats.handled[GRPC_STATUS_OK], 1);
    assert_int_equal(rows[0].stats.msg_received, 1);
    assert_int_equal(rows[0].stats.msg_sent, 1);
    client_close(&c);
    stop_server(s);
}

static void test_message_split_across_data_frames(void **state)
{
    (void)state;
    server_t *s = start_server(NULL);
    client_t c;
    client_open(&c, s);
    unsigned char buf[64];
    size_t n = frame(buf, "split-me-into-bytes", 0);
    result_t *r = request(&c, "POST", "/test.T/Echo", "application/grpc", buf, n, 1, grpc_hdrs);
    pump_until(&c, &r->closed, 2000);
    assert_int_equal(r->grpc_status, 0);
    assert_int_equal(r->dlen, n);
    assert_memory_equal(r->data, buf, n);
    client_close(&c);
    stop_server(s);
}

static void test_unknown_method_trailers_only(void **state)
{
    (void)state;
    server_t *s = start_server(NULL);
    client_t c;
    client_open(&c, s);
    unsigned char buf[64];
    size_t n = frame(buf, "", 0);
    result_t *r = request(&c, "POST", "/no.Such/Method", "application/grpc", buf, n, 0, grpc_hdrs);
    pump_until(&c, &r->closed, 2000);
    assert_int_equal(r->http_status, 200);
    assert_int_equal(r->grpc_status, GRPC_STATUS_UNIMPLEMENTED);
    assert_int_equal(r->header_blocks, 1); /* Trailers-Only */
    assert_int_equal(r->dlen, 0);
    assert_non_null(strstr(r->grpc_message, "/no.Such/Method"));
    client_close(&c);
    stop_server(s);
}

static void test_http_errors(void **state)
{
    (void)state;
    server_t *s = start_server(NULL);
    client_t c;
    client_open(&c, s);
    unsigned char buf[64];
    size_t n = frame(buf, "", 0);
    result_t *r1 = request(&c, "POST", "/test.T/Echo", "text/plain", buf, n, 0, grpc_hdrs);
    result_t *r2 = request(&c, "PUT", "/test.T/Echo", "application/grpc", buf, n, 0, grpc_hdrs);
    result_t *r3 =
        request(&c, "POST", "/test.T/Echo", "application/grpc", buf, n, 0, NULL); /* no te */
    result_t *r4 = request(&c, "GET", "/live", NULL, NULL, 0, 0, NULL);
    result_t *r5 = request(&c, "GET", "/nope", NULL, NULL, 0, 0, NULL);
    pump_until(&c, &r5->closed, 2000);
    pump_until(&c, &r3->closed, 2000);
    assert_int_equal(r1->http_status, 415);
    assert_int_equal(r2->http_status, 405);
    assert_int_equal(r3->grpc_status, GRPC_STATUS_INTERNAL);
    assert_int_equal(r4->http_status, 200);
    assert_non_null(memmem(r4->data, r4->dlen, "\"live\"", 6));
    assert_int_equal(r5->http_status, 404);
    client_close(&c);
    stop_server(s);
}

static void test_message_limits_and_counts(void **state)
{
    (void)state;
    server_t *s = start_server((char *[]){"--max-recv-message-size", "32", NULL});
    client_t c;
    client_open(&c, s);
    unsigned char big[128], two[64], comp[64];
    size_t nb = frame(big, "a-service-name-longer-than-thirty-two-bytes", 0);
    size_t n1 = frame(two, "x", 0);
    size_t n2 = n1 + frame(two + n1, "y", 0);
    size_t nc = frame(comp, "z", 1);
    result_t *r1 = request(&c, "POST", "/test.T/Echo", "application/grpc", big, nb, 0, grpc_hdrs);
    pump_until(&c, &r1->closed, 2000);
    result_t *r2 = request(&c, "POST", "/test.T/Echo", "application/grpc", two, n2, 0, grpc_hdrs);
    pump_until(&c, &r2->closed, 2000);
    result_t *r3 = request(&c, "POST", "/test.T/Echo", "application/grpc", comp, nc, 0, grpc_hdrs);
    pump_until(&c, &r3->closed, 2000);
    const char *br[] = {"te", "trailers", "grpc-encoding", "br", NULL};
    result_t *r4 = request(&c, "POST", "/test.T/Echo", "application/grpc", two, n1, 0, br);
    pump_until(&c, &r4->closed, 2000);
    result_t *r5 = request(&c, "POST", "/test.T/Echo", "application/grpc", NULL, 0, 0, grpc_hdrs);
    pump_until(&c, &r5->closed, 2000);
    unsigned char bad[] = {0, 0, 0, 0, 2, 0xff, 0xff}; /* not a protobuf message */
    result_t *r6 =
        request(&c, "POST", "/test.T/Echo", "application/grpc", bad, sizeof bad, 0, grpc_hdrs);
    pump_until(&c, &r6->closed, 2000);
    assert_int_equal(r1->grpc_status, GRPC_STATUS_RESOURCE_EXHAUSTED);
    assert_int_equal(r2->grpc_status, GRPC_STATUS_UNIMPLEMENTED);
    assert_int_equal(r3->grpc_status, GRPC_STATUS_INTERNAL);
    assert_int_equal(r4->grpc_status, GRPC_STATUS_UNIMPLEMENTED);
    assert_non_null(strstr(r4->accept_enc, "gzip"));
    assert_int_equal(r5->grpc_status, GRPC_STATUS_UNIMPLEMENTED); /* zero messages */
    assert_int_equal(r6->grpc_status, GRPC_STATUS_INTERNAL);
    client_close(&c);
    stop_server(s);
}

static void test_gzip_both_directions(void **state)
{
    (void)state;
    server_t *s = start_server(NULL);
    client_t c;
    client_open(&c, s);
    const unsigned char msg[] = {0x0a, 5, 'h', 'e', 'l', 'l', 'o'};
    unsigned char *z;
    size_t zl;
    assert_int_equal(gzip_compress(msg, sizeof msg, &z, &zl), 0);
    unsigned char buf[256] = {1, 0, 0, (unsigned char)(zl >> 8), (unsigned char)zl};
    memcpy(buf + 5, z, zl);
    free(z);
    const char *gz[] = {"te",   "trailers", "grpc-encoding", "gzip", "grpc-accept-encoding",
                        "gzip", NULL};
    result_t *r = request(&c, "POST", "/test.T/Echo", "application/grpc", buf, 5 + zl, 0, gz);
    pump_until(&c, &r->closed, 2000);
    assert_int_equal(r->grpc_status, 0);
    assert_string_equal(r->grpc_enc, "gzip");
    assert_true(r->dlen > 5);
    assert_int_equal(r->data[0], 1); /* compressed flag */
    unsigned char *plain;
    size_t pl;
    assert_int_equal(gzip_decompress(r->data + 5, r->dlen - 5, 1024, &plain, &pl), 0);
    assert_int_equal(pl, sizeof msg);
    assert_memory_equal(plain, msg, sizeof msg);
    free(plain);
    client_close(&c);
    stop_server(s);
}

static void test_status_message_percent_encoded(void **state)
{
    (void)state;
    server_t *s = start_server(NULL);
    client_t c;
    client_open(&c, s);
    unsigned char buf[64];
    size_t n = frame(buf, "fail", 0);
    result_t *r = request(&c, "POST", "/test.T/Echo", "application/grpc", buf, n, 0, grpc_hdrs);
    pump_until(&c, &r->closed, 2000);
    assert_int_equal(r->grpc_status, GRPC_STATUS_INVALID_ARGUMENT);
    assert_string_equal(r->grpc_message, "bad%0A100%25");
    client_close(&c);
    stop_server(s);
}

static void test_server_and_bidi_streaming(void **state)
{
    (void)state;
    server_t *s = start_server(NULL);
    client_t c;
    client_open(&c, s);
    unsigned char buf[64], three[64];
    size_t n = frame(buf, "s", 0);
    result_t *r = request(&c, "POST", "/test.T/Stream", "application/grpc", buf, n, 0, grpc_hdrs);
    pump_until(&c, &r->closed, 2000);
    assert_int_equal(r->grpc_status, 0);
    assert_int_equal(r->dlen, 3 * n);
    size_t m = 0;
    for (int i = 0; i < 3; i++)
        m += frame(three + m, i == 1 ? "two" : "one", 0);
    result_t *b = request(&c, "POST", "/test.T/Bidi", "application/grpc", three, m, 3, grpc_hdrs);
    pump_until(&c, &b->closed, 2000);
    assert_int_equal(b->grpc_status, 0);
    assert_int_equal(b->dlen, m);
    assert_memory_equal(b->data, three, m);
    client_close(&c);
    stop_server(s);
}

static void test_deadline_cancels_work(void **state)
{
    (void)state;
    server_t *s = start_server(NULL);
    client_t c;
    client_open(&c, s);
    unsigned char buf[64];
    size_t n = frame(buf, "h", 0);
    hang_cancels = 0;
    const char *dl[] = {"te", "trailers", "grpc-timeout", "50m", NULL};
    result_t *r = request(&c, "POST", "/test.T/Hang", "application/grpc", buf, n, 0, dl);
    pump_until(&c, &r->closed, 3000);
    assert_int_equal(r->grpc_status, GRPC_STATUS_DEADLINE_EXCEEDED);
    assert_true(r->got_rst);
    assert_int_equal(r->rst, NGHTTP2_CANCEL);
    assert_int_equal(hang_cancels, 1);
    assert_null(hung);
    client_close(&c);
    stop_server(s);
}

/* A streaming handler holds the call from its first message; the core then ends the call
 * because of what the client sent next (found by fuzz_h2 as a leak of the call and the
 * handler's state). The handler must hear it through on_cancel, as for a reset. */
static void test_core_failure_tells_streaming_handler(void **state)
{
    (void)state;
    server_t *s = start_server(NULL);
    static const struct {
        const char *why;
        unsigned char tail[8];
        size_t tail_len;
        int status;
    } cases[] = {
        /* a compressed message on a call without grpc-encoding */
        {"compressed message without grpc-encoding", {1, 0, 0, 0, 0}, 5, GRPC_STATUS_INTERNAL},
        /* a message over --max-recv-message-size */
        {"received message larger than max",
         {0, 0x7f, 0xff, 0xff, 0xff},
         5,
         GRPC_STATUS_RESOURCE_EXHAUSTED},
        /* the stream ends inside a message */
        {"stream ended inside a message", {0, 0, 0, 0, 9, 0x0a}, 6, GRPC_STATUS_INTERNAL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        client_t c;
        client_open(&c, s);
        unsigned char buf[64];
        size_t n = frame(buf, "h", 0);
        memcpy(buf + n, cases[i].tail, cases[i].tail_len);
        n += cases[i].tail_len;
        hang_cancels = 0;
        result_t *r =
            request(&c, "POST", "/test.T/HangBidi", "application/grpc", buf, n, 0, grpc_hdrs);
        pump_until(&c, &r->closed, 3000);
        assert_true(r->closed);
        assert_int_equal(r->grpc_status, cases[i].status);
        assert_non_null(strstr(r->grpc_message, cases[i].why));
        assert_int_equal(hang_cancels, 1); /* the handler let go of the call */
        assert_null(hung);
        client_close(&c);
    }
    stop_server(s);
}

static void test_client_cancel_stops_work(void **state)
{
    (void)state;
    server_t *s = start_server(NULL);
    client_t c;
    client_open(&c, s);
    unsigned char buf[64];
    size_t n = frame(buf, "h", 0);
    hang_cancels = 0;
    result_t *r = request(&c, "POST", "/test.T/Hang", "application/grpc", buf, n, 0, grpc_hdrs);
    int started = 0;
    for (int i = 0; i < 2000 && !hung; i++) {
        pump_once(&c);
        poll(NULL, 0, 1);
    }
    started = hung != NULL;
    assert_true(started);
    nghttp2_submit_rst_stream(c.s, NGHTTP2_FLAG_NONE, r->id, NGHTTP2_CANCEL);
    pump_until(&c, &hang_cancels, 2000);
    assert_int_equal(hang_cancels, 1);
    assert_int_equal(rows[3].stats.handled[GRPC_STATUS_CANCELLED] > 0, 1);
    client_close(&c);
    stop_server(s);
}

static void test_connection_loss_cancels_work(void **state)
{
    (void)state;
    server_t *s = start_server(NULL);
    client_t c;
    client_open(&c, s);
    unsigned char buf[64];
    size_t n = frame(buf, "h", 0);
    hang_cancels = 0;
    request(&c, "POST", "/test.T/Hang", "application/grpc", buf, n, 0, grpc_hdrs);
    for (int i = 0; i < 2000 && !hung; i++) {
        pump_once(&c);
        poll(NULL, 0, 1);
    }
    assert_non_null(hung);
    client_close(&c);
    for (int i = 0; i < 2000 && hang_cancels == 0; i++) {
        event_base_loop(server_base(s), EVLOOP_NONBLOCK);
        poll(NULL, 0, 1);
    }
    assert_int_equal(hang_cancels, 1);
    stop_server(s);
}

static void test_settings_and_ping_strikes(void **state)
{
    (void)state;
    server_t *s = start_server((char *[]){"--max-concurrent-streams", "7", NULL});
    client_t c;
    client_open(&c, s);
    int got = 0;
    for (int i = 0; i < 500 && !got; i++) {
        pump_once(&c);
        got =
            nghttp2_session_get_remote_settings(c.s, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS) == 7;
    }
    assert_true(got);
    assert_int_equal(
        nghttp2_session_get_remote_settings(c.s, NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE), 8192);
    /* pings with no call and no data: the third over the allowance ends the connection */
    for (int i = 0; i < 5; i++) {
        nghttp2_submit_ping(c.s, NGHTTP2_FLAG_NONE, NULL);
        pump_once(&c);
    }
    pump_until(&c, &c.goaway, 1000);
    assert_true(c.goaway > 0);
    assert_int_equal(c.goaway_code, NGHTTP2_ENHANCE_YOUR_CALM);
    assert_string_equal(c.goaway_dbg, "too_many_pings");
    client_close(&c);
    stop_server(s);
}

static void test_method_table(void **state)
{
    (void)state;
    server_t *s = start_server(NULL);
    assert_int_equal(server_register(s, rows, 1), -EEXIST);
    assert_ptr_equal(server_find_method(s, "/test.T/Hang"), &rows[3]);
    assert_null(server_find_method(s, "/test.T/Nope"));
    assert_non_null(server_find_method(s, "/grpc.health.v1.Health/Check"));
    const char *names[16];
    size_t n = server_services(s, names, 16);
    /* distinct, not once per method, in registration order */
    assert_int_equal(n, 2);
    assert_string_equal(names[0], "grpc.health.v1.Health");
    assert_string_equal(names[1], "test.T");
    stop_server(s);
}

/* ---- HTTP/1.1 on the same port ---- */
static int http1_exchange(server_t *s, const char *req, size_t reqlen, char *resp, size_t cap)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)server_port(s, 0)),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    size_t off = 0, got = 0;
    for (int i = 0; i < 3000; i++) {
        if (off < reqlen) {
            ssize_t w = write(fd, req + off, reqlen - off);
            if (w > 0) off += (size_t)w;
        }
        event_base_loop(server_base(s), EVLOOP_NONBLOCK);
        ssize_t r = read(fd, resp + got, cap - 1 - got);
        if (r > 0) got += (size_t)r;
        if (r == 0) break; /* server closed */
        poll(NULL, 0, 1);
    }
    resp[got] = 0;
    close(fd);
    for (int i = 0; i < 10; i++)
        event_base_loop(server_base(s), EVLOOP_NONBLOCK);
    return (int)got;
}

static void test_http1_pipelining_and_limits(void **state)
{
    (void)state;
    server_t *s = start_server(NULL);
    static char resp[65536];
    const char pipelined[] =
        "GET /live HTTP/1.1\r\nHost: x\r\n\r\n"
        "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n"
        "HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n"
        "POST /live HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    http1_exchange(s, pipelined, sizeof pipelined - 1, resp, sizeof resp);
    char *p1 = strstr(resp, "HTTP/1.1 200"), *p2 = strstr(resp, "HTTP/1.1 404"),
         *p3 = strstr(resp, "HTTP/1.1 503"), *p4 = strstr(resp, "HTTP/1.1 405");
    assert_non_null(p1);
    assert_non_null(p2);
    assert_non_null(p3);
    assert_non_null(p4);
    assert_true(p1 < p2 && p2 < p3 && p3 < p4); /* answered in order */
    assert_non_null(strstr(p4, "Allow: GET, HEAD"));
    assert_non_null(strstr(resp, "{\"status\":\"live\"}"));
    /* HEAD: headers only, then the next response follows at once */
    assert_true(strstr(p3, "\r\n\r\nHTTP/1.1 405") != NULL);

    char *big = malloc(20000);
    int n = snprintf(big, 20000, "GET /live HTTP/1.1\r\nHost: x\r\nX-Big: ");
    memset(big + n, 'a', 12000);
    n += 12000;
    n += snprintf(big + n, 20000 - (size_t)n, "\r\n\r\n");
    http1_exchange(s, big, (size_t)n, resp, sizeof resp);
    assert_non_null(strstr(resp, "HTTP/1.1 431"));
    n = snprintf(big, 20000, "POST /live HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n");
    http1_exchange(s, big, (size_t)n, resp, sizeof resp);
    assert_non_null(strstr(resp, "HTTP/1.1 413"));
    free(big);
    const char metrics[] = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    http1_exchange(s, metrics, sizeof metrics - 1, resp, sizeof resp);
    assert_non_null(strstr(resp, "text/plain; version=0.0.4"));
    assert_non_null(strstr(resp, "grpc_server_started_total"));
    assert_non_null(strstr(resp, "inferd_connections_total"));
    stop_server(s);
}

/* ---- the per-token path: counted sends, one flush per connection per batch ---- */

/* Opens n Hold calls on c, one after the other (the client has one body source). */
static void open_held(client_t *c, int n)
{
    unsigned char buf[64];
    size_t len = frame(buf, "h", 0);
    for (int i = 0; i < n; i++) {
        int want = n_held + 1;
        request(c, "POST", "/test.T/Hold", "application/grpc", buf, len, 0, grpc_hdrs);
        for (int k = 0; k < 2000 && n_held < want; k++) {
            pump_once(c);
            poll(NULL, 0, 1);
        }
        assert_int_equal(n_held, want);
    }
}

static void test_counted_send_reports_when_taken(void **state)
{
    (void)state;
    server_t *s = start_server(NULL);
    client_t c;
    client_open_window(&c, s, 16); /* the server may send 16 bytes per stream at a time */
    n_taken = 0;
    rows[4].on_taken = hold_taken;
    open_held(&c, 1);
    char big[41];
    memset(big, 'x', 40);
    big[40] = 0;
    Grpc__Health__V1__HealthCheckRequest m = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    m.service = big;
    size_t packed = 0;
    assert_int_equal(grpc_call_send_counted(held[0], &m.base, 7, 3, &packed), 0);
    assert_int_equal(packed, 42);
    /* queued, and 16 bytes of the 47 on the wire: not taken yet, so nothing is reported */
    assert_int_equal(n_taken, 0);
    pump_until(&c, &n_taken, 2000); /* the client's WINDOW_UPDATEs let the rest go */
    assert_int_equal(n_taken, 1);
    assert_true(taken_log[0].tag == 7 && taken_log[0].units == 3);
    /* consecutive messages of one tag are reported together, tags in order */
    m.service = "a";
    assert_int_equal(grpc_call_send_counted(held[0], &m.base, 8, 1, NULL), 0);
    assert_int_equal(grpc_call_send_counted(held[0], &m.base, 8, 2, NULL), 0);
    assert_int_equal(grpc_call_send_counted(held[0], &m.base, 9, 4, NULL), 0);
    for (int k = 0; k < 2000 && n_taken < 3; k++) {
        pump_once(&c);
        poll(NULL, 0, 1);
    }
    assert_int_equal(n_taken, 3);
    assert_true(taken_log[1].tag == 8 && taken_log[1].units == 3);
    assert_true(taken_log[2].tag == 9 && taken_log[2].units == 4);
    release_held();
    rows[4].on_taken = NULL;
    client_close(&c);
    stop_server(s);
}

static void test_one_flush_per_connection_per_batch(void **state)
{
    (void)state;
    server_t *s = start_server(NULL);
    client_t c;
    client_open(&c, s);
    open_held(&c, MAX_HELD);
    conn_t *conn = TAILQ_FIRST(&s->conns);
    assert_non_null(conn);
    Grpc__Health__V1__HealthCheckRequest m = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    m.service = "token";
    /* unbatched: every send flushes the connection */
    uint64_t before = conn->flushes;
    for (int i = 0; i < MAX_HELD; i++)
        assert_int_equal(grpc_call_send(held[i], &m.base), 0);
    assert_int_equal(conn->flushes - before, MAX_HELD);
    /* batched, as a drain of the engine's events: one flush for all of them */
    before = conn->flushes;
    server_flush_begin(s);
    server_flush_begin(s); /* nests */
    for (int i = 0; i < MAX_HELD; i++)
        assert_int_equal(grpc_call_send(held[i], &m.base), 0);
    server_flush_end(s);
    assert_int_equal(conn->flushes - before, 0);
    server_flush_end(s);
    assert_int_equal(conn->flushes - before, 1);
    /* and every stream got both messages */
    result_t *last = &c.res[c.nres - 1];
    for (int k = 0; k < 2000 && last->dlen < 2 * 12; k++) {
        pump_once(&c);
        poll(NULL, 0, 1);
    }
    for (int i = 0; i < c.nres; i++)
        assert_int_equal(c.res[i].dlen, 2 * (5 + 7));
    release_held();
    client_close(&c);
    stop_server(s);
}

/* ---- the route table: one table over HTTP/1.1 and HTTP/2, scopes, 405 ---- */
static void echo_route(void *arg, const http_request_t *req, http_response_t *r)
{
    char body[256];
    int n = snprintf(body, sizeof body, "%s %s %s %s", (const char *)arg, req->method, req->path,
                     req->query);
    assert_int_equal(http_response_set(r, 200, "text/plain", body, (size_t)n), 0);
}

static void test_route_table(void **state)
{
    (void)state;
    server_t *s = start_server(NULL);
    http_route_t echo = {.name = "echo",
                         .path = "/echo",
                         .methods = HTTP_METHOD_POST | HTTP_METHOD_GET,
                         .handler = echo_route,
                         .arg = "echo"};
    assert_int_equal(server_route_add(s, &echo, 1), 0);
    http_route_t dup = echo;
    dup.path = "/other";
    assert_int_equal(server_route_add(s, &dup, 1), -EEXIST); /* the name is taken */
    dup = echo;
    dup.name = "other";
    assert_int_equal(server_route_add(s, &dup, 1), -EEXIST); /* the path is taken */
    dup.path = "no-slash";
    assert_int_equal(server_route_add(s, &dup, 1), -EINVAL);
    dup.path = "/fine";
    dup.handler = NULL;
    assert_int_equal(server_route_add(s, &dup, 1), -EINVAL);
    /* HTTP/1.1: path and query reach the handler; a method the row does not take is a 405 */
    static char resp[8192];
    const char h1[] = "POST /echo?mode=x HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
                      "PUT /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
                      "Connection: close\r\n\r\n";
    http1_exchange(s, h1, sizeof h1 - 1, resp, sizeof resp);
    assert_non_null(strstr(resp, "HTTP/1.1 200"));
    assert_non_null(strstr(resp, "echo POST /echo mode=x"));
    char *p405 = strstr(resp, "HTTP/1.1 405");
    assert_non_null(p405);
    assert_non_null(strstr(p405, "Allow: GET, POST"));
    /* HTTP/2: the same table */
    client_t c;
    client_open(&c, s);
    result_t *r1 = request(&c, "GET", "/echo?a=b", NULL, NULL, 0, 0, NULL);
    result_t *r2 = request(&c, "HEAD", "/echo", NULL, NULL, 0, 0, NULL);
    pump_until(&c, &r2->closed, 2000);
    pump_until(&c, &r1->closed, 2000);
    assert_int_equal(r1->http_status, 200);
    assert_non_null(memmem(r1->data, r1->dlen, "echo GET /echo a=b", 18));
    assert_int_equal(r2->http_status, 405);
    client_close(&c);
    stop_server(s);
}

static void test_listener_scope(void **state)
{
    (void)state;
    static const char *const services[] = {"test.T"};
    static const char *const routes[] = {"live"};
    static const server_scope_t scope = {.name = "the narrow port",
                                         .services = services,
                                         .n_services = 1,
                                         .routes = routes,
                                         .n_routes = 1};
    next_main_scope = &scope;
    server_t *s = start_server(NULL);
    next_main_scope = NULL;
    uint64_t echo_started = rows[0].stats.started;
    client_t c;
    client_open(&c, s);
    unsigned char buf[64];
    size_t n = frame(buf, "", 0);
    /* one request body at a time: the client has one body source */
    result_t *r1 = request(&c, "POST", "/test.T/Echo", "application/grpc", buf, n, 0, grpc_hdrs);
    pump_until(&c, &r1->closed, 2000);
    result_t *r2 = request(&c, "POST", "/grpc.health.v1.Health/Check", "application/grpc", buf, n,
                           0, grpc_hdrs);
    pump_until(&c, &r2->closed, 2000);
    result_t *r3 = request(&c, "GET", "/live", NULL, NULL, 0, 0, NULL);
    result_t *r4 = request(&c, "GET", "/metrics", NULL, NULL, 0, 0, NULL);
    pump_until(&c, &r3->closed, 2000);
    pump_until(&c, &r4->closed, 2000);
    assert_int_equal(r1->grpc_status, GRPC_STATUS_OK);
    assert_int_equal(r2->grpc_status, GRPC_STATUS_UNIMPLEMENTED);
    assert_non_null(strstr(r2->grpc_message, "not served on the narrow port"));
    assert_int_equal(rows[0].stats.started, echo_started + 1);
    size_t nh;
    const grpc_method_t *check = health_grpc_methods(fx.health, &nh);
    assert_int_equal(check[0].stats.started, 0); /* the refused call counts for no row */
    assert_int_equal(r3->http_status, 200);
    assert_int_equal(r4->http_status, 404); /* registered, but outside the scope */
    client_close(&c);
    static char resp[8192];
    const char h1[] = "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    http1_exchange(s, h1, sizeof h1 - 1, resp, sizeof resp);
    assert_non_null(strstr(resp, "HTTP/1.1 404"));
    stop_server(s);
}

/* Many series, so the exposition is large enough to be gzipped off the loop. */
static void add_series(server_t *s, int n)
{
    const char *labels[] = {"a", "b", NULL};
    metrics_family_t *f = NULL;
    assert_int_equal(metrics_counter_new(&f, server_registry(s), "bulk_total",
                                         "Series to make a big scrape.", labels, 0, NULL, 0),
                     0);
    assert_non_null(f);
    for (int i = 0; i < n; i++) {
        char a[32], b[32];
        snprintf(a, sizeof a, "value-%d", i);
        snprintf(b, sizeof b, "other-label-value-%d", i * 7);
        const char *lv[] = {a, b};
        metrics_add(metrics_series(f, lv), i);
    }
}

static void test_large_gzip_scrape_off_loop(void **state)
{
    (void)state;
    server_t *s = start_server(NULL);
    add_series(s, 6000);
    /* HTTP/1.1: the gzipped scrape and a pipelined request behind it, answered in order */
    static char resp[1 << 20];
    const char req[] = "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n"
                       "GET /live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    int n = http1_exchange(s, req, sizeof req - 1, resp, sizeof resp);
    assert_true(n > 0);
    char *hdr_end = strstr(resp, "\r\n\r\n");
    assert_non_null(hdr_end);
    assert_non_null(strstr(resp, "Content-Encoding: gzip"));
    size_t clen = strtoul(strstr(resp, "Content-Length: ") + 16, NULL, 10);
    unsigned char *body = (unsigned char *)hdr_end + 4, *plain;
    size_t pl;
    assert_int_equal(gzip_decompress(body, clen, 64 << 20, &plain, &pl), 0);
    assert_true(pl > (256u << 10)); /* big enough to have gone off the loop */
    const char *want = "inferd_bulk_total{a=\"value-5999\"";
    assert_non_null(memmem(plain, pl, want, strlen(want)));
    free(plain);
    char *second = strstr((char *)body + clen, "HTTP/1.1 200");
    assert_non_null(second);
    assert_non_null(strstr(second, "{\"status\":\"live\"}"));
    /* HTTP/2: the same scrape on a stream */
    client_t c;
    client_open(&c, s);
    const char *gz[] = {"accept-encoding", "gzip", NULL};
    result_t *r = request(&c, "GET", "/metrics", NULL, NULL, 0, 0, gz);
    pump_until(&c, &r->closed, 5000);
    assert_int_equal(r->http_status, 200);
    assert_true(r->dlen > 0); /* the client keeps the first 8 KiB: a gzip header */
    assert_int_equal(r->data[0], 0x1f);
    assert_int_equal(r->data[1], 0x8b);
    client_close(&c);
    stop_server(s);
}

/* ---- h2spec's cases, by hand (h2spec is not packaged in Debian and its Go dependencies
 * cannot be fetched here): raw frames on a socket, the server's frames read back ---- */
typedef struct raw {
    int fd;
    server_t *srv;
    unsigned char in[1 << 17];
    size_t have;
    int closed;
    nghttp2_hd_deflater *def;
    nghttp2_hd_inflater *inf; /* every HEADERS the server sends goes through it, in order */
} raw_t;

typedef struct frame_in {
    uint8_t type, flags;
    int32_t sid;
    uint32_t len;
    int status; /* HEADERS: :status, or -1 */
    unsigned char payload[16384];
} frame_in_t;

static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

static void raw_send(raw_t *r, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t off = 0; off < n;) {
        ssize_t w = write(r->fd, b + off, n - off);
        if (w > 0)
            off += (size_t)w;
        else
            event_base_loop(server_base(r->srv), EVLOOP_NONBLOCK);
    }
}

static void raw_frame(raw_t *r, uint8_t type, uint8_t flags, int32_t sid, const void *payload,
                      size_t n)
{
    unsigned char hd[9] = {(unsigned char)(n >> 16),
                           (unsigned char)(n >> 8),
                           (unsigned char)n,
                           type,
                           flags,
                           (unsigned char)((uint32_t)sid >> 24 & 0x7f),
                           (unsigned char)(sid >> 16),
                           (unsigned char)(sid >> 8),
                           (unsigned char)sid};
    raw_send(r, hd, 9);
    if (n) raw_send(r, payload, n);
}

/* Connects; with h2, sends the preface and an empty SETTINGS. */
static void raw_open(raw_t *r, server_t *s, int h2)
{
    memset(r, 0, sizeof *r);
    r->srv = s;
    r->fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)server_port(s, 0)),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(r->fd, (struct sockaddr *)&a, sizeof a), 0);
    fcntl(r->fd, F_SETFL, O_NONBLOCK);
    assert_int_equal(nghttp2_hd_deflate_new(&r->def, 4096), 0);
    assert_int_equal(nghttp2_hd_inflate_new(&r->inf), 0);
    if (h2) {
        raw_send(r, h2_preface, sizeof h2_preface - 1);
        raw_frame(r, NGHTTP2_SETTINGS, 0, 0, NULL, 0);
    }
}

static void raw_close(raw_t *r)
{
    nghttp2_hd_deflate_del(r->def);
    nghttp2_hd_inflate_del(r->inf);
    close(r->fd);
    for (int i = 0; i < 20; i++) {
        event_base_loop(server_base(r->srv), EVLOOP_NONBLOCK);
        poll(NULL, 0, 1);
    }
}

/* A header block of name, value, ... NULL, HPACK-encoded into out. */
static size_t raw_block(raw_t *r, unsigned char *out, size_t cap, const char *const *hv)
{
    nghttp2_nv nva[16];
    size_t n = 0;
    for (; hv[2 * n]; n++)
        nva[n] = (nghttp2_nv)H(hv[2 * n], hv[2 * n + 1]);
    ssize_t k = nghttp2_hd_deflate_hd(r->def, out, cap, nva, n);
    assert_true(k > 0);
    return (size_t)k;
}

static const char *const get_live[] = {":method", "GET",        ":scheme", "http", ":path",
                                       "/live",   ":authority", "test",    NULL};

/* The :status of a response HEADERS frame (no padding or priority: the server sends none),
 * through the connection's inflater. */
static int status_of(raw_t *r, const frame_in_t *f)
{
    const unsigned char *p = f->payload;
    size_t n = f->len;
    int status = -1;
    for (;;) {
        nghttp2_nv nv;
        int flags = 0;
        ssize_t k = nghttp2_hd_inflate_hd2(r->inf, &nv, &flags, p, n, 1);
        assert_true(k >= 0);
        p += k;
        n -= (size_t)k;
        if ((flags & NGHTTP2_HD_INFLATE_EMIT) && nv.namelen == 7 && !memcmp(nv.name, ":status", 7))
            status = atoi((const char *)nv.value);
        if (flags & NGHTTP2_HD_INFLATE_FINAL) {
            nghttp2_hd_inflate_end_headers(r->inf);
            break;
        }
        if (!k && !n) break;
    }
    return status;
}

/* Next frame from the server (the loop pumped meanwhile); 0 when the connection closed or ms
 * passed without one. */
static int raw_next(raw_t *r, frame_in_t *f, int ms)
{
    for (int i = 0; i <= ms; i++) {
        if (r->have >= 9) {
            uint32_t len = (uint32_t)r->in[0] << 16 | (uint32_t)r->in[1] << 8 | r->in[2];
            assert_true(len <= sizeof f->payload);
            if (r->have >= 9 + len) {
                f->len = len;
                f->type = r->in[3];
                f->flags = r->in[4];
                f->sid = (int32_t)((uint32_t)(r->in[5] & 0x7f) << 24 | (uint32_t)r->in[6] << 16 |
                                   (uint32_t)r->in[7] << 8 | r->in[8]);
                memcpy(f->payload, r->in + 9, len);
                memmove(r->in, r->in + 9 + len, r->have - 9 - len);
                r->have -= 9 + len;
                f->status = f->type == NGHTTP2_HEADERS ? status_of(r, f) : -1;
                return 1;
            }
        }
        if (r->closed) return 0;
        event_base_loop(server_base(r->srv), EVLOOP_NONBLOCK);
        ssize_t k = read(r->fd, r->in + r->have, sizeof r->in - r->have);
        if (k > 0) {
            r->have += (size_t)k;
            continue;
        }
        if (k == 0) r->closed = 1;
        poll(NULL, 0, 1);
    }
    return 0;
}

/* Reads frames until one of type (on sid, or any when sid < 0) or the end; returns 1 when seen. */
static int raw_wait(raw_t *r, uint8_t type, int32_t sid, frame_in_t *f, int ms)
{
    while (raw_next(r, f, ms))
        if (f->type == type && (sid < 0 || f->sid == sid)) return 1;
    return 0;
}

static uint32_t goaway_code(const frame_in_t *f)
{
    return (uint32_t)f->payload[4] << 24 | (uint32_t)f->payload[5] << 16 |
           (uint32_t)f->payload[6] << 8 | f->payload[7];
}

/* 1 when the server closes the connection within ms, with nothing but frames before (no
 * HTTP/1.1 text); GOAWAY codes seen go to *goaway (0 when none). */
static int raw_closed(raw_t *r, int ms, uint32_t *goaway)
{
    *goaway = 0;
    frame_in_t f;
    while (raw_next(r, &f, ms)) {
        assert_true(f.type <= NGHTTP2_CONTINUATION); /* a frame, not "HTTP/1.1 400" */
        if (f.type == NGHTTP2_GOAWAY) *goaway = goaway_code(&f) + 1;
    }
    if (*goaway) (*goaway)--;
    return r->closed;
}

/* 3.5: the connection preface. 3.5/1: a good one gets SETTINGS; 3.5/2: a bad one ends the
 * connection (before, anything but the preface went to HTTP/1.1, whose "400" is no frame). */
static void test_h2spec_3_5_preface(void **state)
{
    (void)state;
    server_t *s = start_server(NULL);
    raw_t r;
    frame_in_t f;
    raw_open(&r, s, 1); /* 3.5/1 */
    assert_true(raw_wait(&r, NGHTTP2_SETTINGS, 0, &f, 2000));
    assert_false(f.flags & NGHTTP2_FLAG_ACK);
    raw_close(&r);

    uint32_t code;
    raw_open(&r, s, 0); /* 3.5/2, as h2spec 2.x sends it */
    raw_send(&r, "INVALID CONNECTION PREFACE\r\n\r\n", 30);
    assert_true(raw_closed(&r, 2000, &code));
    raw_close(&r);
    raw_open(&r, s, 0); /* h2spec 1.x: no line end; closed at once, not at the handshake timeout */
    raw_send(&r, "INVALID CONNECTION PREFACE", 26);
    assert_true(raw_closed(&r, 1000, &code));
    raw_close(&r);
    raw_open(&r, s, 0); /* a preface wrong in its last byte: GOAWAY(PROTOCOL_ERROR), close */
    raw_send(&r, "PRI * HTTP/2.0\r\n\r\nSM\r\n\rQ", 24);
    assert_true(raw_closed(&r, 2000, &code));
    assert_int_equal(code, NGHTTP2_PROTOCOL_ERROR);
    raw_close(&r);
    stop_server(s);
}

/* 5.1.1: stream identifiers. 5.1.1/1: an even id from a client is a connection error;
 * 5.1.1/2: an id smaller than one already used (and never opened itself) is one too (before,
 * nghttp2 ignored the HEADERS and the server answered the first stream). */
static void test_h2spec_5_1_1_stream_ids(void **state)
{
    (void)state;
    server_t *s = start_server(NULL);
    raw_t r;
    frame_in_t f;
    unsigned char blk[256];
    uint32_t code;
    raw_open(&r, s, 1);
    size_t n = raw_block(&r, blk, sizeof blk, get_live);
    raw_frame(&r, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM, 2, blk, n);
    assert_true(raw_closed(&r, 2000, &code));
    assert_int_equal(code, NGHTTP2_PROTOCOL_ERROR);
    raw_close(&r);

    raw_open(&r, s, 1);
    n = raw_block(&r, blk, sizeof blk, get_live);
    raw_frame(&r, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM, 5, blk, n);
    n = raw_block(&r, blk, sizeof blk, get_live);
    raw_frame(&r, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM, 3, blk, n);
    assert_true(raw_wait(&r, NGHTTP2_GOAWAY, 0, &f, 2000));
    assert_int_equal(goaway_code(&f), NGHTTP2_PROTOCOL_ERROR);
    raw_close(&r);

    /* increasing ids with gaps are fine: 1, 7, 9 all answered */
    raw_open(&r, s, 1);
    const int32_t ids[] = {1, 7, 9};
    for (int i = 0; i < 3; i++) {
        n = raw_block(&r, blk, sizeof blk, get_live);
        raw_frame(&r, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM, ids[i],
                  blk, n);
        assert_true(raw_wait(&r, NGHTTP2_HEADERS, ids[i], &f, 2000));
        assert_int_equal(f.status, 200);
    }
    raw_close(&r);
    stop_server(s);
}

/* 6.10: CONTINUATION. 6.10/1: HEADERS and several CONTINUATION frames are one header block and
 * get an answer (before: h2spec's two 4000-byte headers per frame passed
 * --max-header-list-size and got RST_STREAM; now a 431 HEADERS); the neighbours are connection
 * errors. */
static void test_h2spec_6_10_continuation(void **state)
{
    (void)state;
    server_t *s = start_server(NULL);
    raw_t r;
    frame_in_t f;
    uint32_t code;
    static unsigned char blk[16384];
    static char dummy[4001];
    memset(dummy, 'x', 4000);
    const char *const dummies[] = {"x-dummy0", dummy, "x-dummy1", dummy, NULL};
    const char *const small[] = {"x-a", "1", "x-b", "2", NULL};
    for (int big = 0; big < 2; big++) {
        raw_open(&r, s, 1); /* 6.10/1 */
        size_t n = raw_block(&r, blk, sizeof blk, get_live);
        raw_frame(&r, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_STREAM, 1, blk, n);
        n = raw_block(&r, blk, sizeof blk, big ? dummies : small);
        raw_frame(&r, NGHTTP2_CONTINUATION, 0, 1, blk, n);
        n = raw_block(&r, blk, sizeof blk, big ? dummies : small);
        raw_frame(&r, NGHTTP2_CONTINUATION, NGHTTP2_FLAG_END_HEADERS, 1, blk, n);
        assert_true(raw_wait(&r, NGHTTP2_HEADERS, 1, &f, 2000));
        assert_int_equal(f.status, big ? 431 : 200);
        /* the connection goes on */
        n = raw_block(&r, blk, sizeof blk, get_live);
        raw_frame(&r, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM, 3, blk,
                  n);
        assert_true(raw_wait(&r, NGHTTP2_HEADERS, 3, &f, 2000));
        assert_int_equal(f.status, 200);
        raw_close(&r);
    }
    /* the neighbours, as h2spec sends them, all connection errors (PROTOCOL_ERROR): 6.10/2 a
     * CONTINUATION followed by another frame (DATA); 6.10/3 a CONTINUATION on stream 0; 6.10/4
     * one after a HEADERS with END_HEADERS; 6.10/5 one after a CONTINUATION with END_HEADERS;
     * 6.10/6 one after a DATA frame */
    const char *const post[] = {":method", "POST",       ":scheme", "http", ":path",
                                "/live",   ":authority", "test",    NULL};
    const char *const one_dummy[] = {"x-dummy0", dummy, NULL};
    for (int k = 2; k <= 6; k++) {
        raw_open(&r, s, 1);
        size_t n = raw_block(&r, blk, sizeof blk, k == 6 ? post : get_live);
        int end_headers = k == 4 || k == 6 ? NGHTTP2_FLAG_END_HEADERS : 0;
        raw_frame(&r, NGHTTP2_HEADERS,
                  (uint8_t)((k == 6 ? 0 : NGHTTP2_FLAG_END_STREAM) | end_headers), 1, blk, n);
        if (k == 5) {
            n = raw_block(&r, blk, sizeof blk, one_dummy);
            raw_frame(&r, NGHTTP2_CONTINUATION, NGHTTP2_FLAG_END_HEADERS, 1, blk, n);
        }
        if (k == 6) raw_frame(&r, NGHTTP2_DATA, NGHTTP2_FLAG_END_STREAM, 1, "test", 4);
        n = raw_block(&r, blk, sizeof blk, one_dummy);
        raw_frame(&r, NGHTTP2_CONTINUATION, k == 2 ? 0 : NGHTTP2_FLAG_END_HEADERS, k == 3 ? 0 : 1,
                  blk, n);
        if (k == 2) raw_frame(&r, NGHTTP2_DATA, NGHTTP2_FLAG_END_STREAM, 1, "test", 4);
        assert_true(raw_closed(&r, 2000, &code));
        if (code != NGHTTP2_PROTOCOL_ERROR) fail_msg("6.10/%d: GOAWAY %u", k, code);
        raw_close(&r);
    }
    stop_server(s);
}

/* ---- bounds against abusive clients (issue 13) ---- */

static double limit_count(const char *name)
{
    const char *lv[] = {name};
    return metrics_value(metrics_series(fx.m.limits_exceeded, lv));
}

/* Runs the server's loop and sends what the client queued, without reading anything: a client
 * that does not read its responses. */
static void pump_no_read(client_t *c, int ms)
{
    for (int i = 0; i < ms; i++) {
        const uint8_t *out;
        ssize_t n;
        while ((n = nghttp2_session_mem_send(c->s, &out)) > 0) {
            ssize_t off = 0;
            while (off < n) {
                ssize_t w = write(c->fd, out + off, (size_t)(n - off));
                if (w > 0)
                    off += w;
                else
                    event_base_loop(server_base(c->srv), EVLOOP_NONBLOCK);
            }
        }
        event_base_loop(server_base(c->srv), EVLOOP_NONBLOCK);
        poll(NULL, 0, 1);
    }
}

/* A request whose body does not end the stream (more may follow, or never). */
static result_t *request_open(client_t *c, const char *path, const unsigned char *body, size_t len)
{
    result_t *r = request(c, "POST", path, "application/grpc", body, len, 0, grpc_hdrs);
    c->end_stream = 0;
    return r;
}

/* Headers over --max-header-list-size are answered as gRPC servers answer them: 431 to plain
 * HTTP, RESOURCE_EXHAUSTED that names the limit to gRPC (before: RST_STREAM(INTERNAL_ERROR)). */
static void test_header_list_limit_answered(void **state)
{
    (void)state;
    server_t *s = start_server(NULL);
    client_t c;
    client_open(&c, s);
    uint64_t received = rows[0].stats.msg_received;
    static char big[4001];
    memset(big, 'v', 4000);
    const char *hdrs[] = {"te", "trailers", "x-a", big, "x-b", big, "x-c", big, NULL};
    unsigned char buf[64];
    size_t n = frame(buf, "x", 0);
    result_t *r1 = request(&c, "POST", "/test.T/Echo", "application/grpc", buf, n, 0, hdrs);
    pump_until(&c, &r1->closed, 2000);
    result_t *r2 = request(&c, "GET", "/live", NULL, NULL, 0, 0, hdrs + 2);
    pump_until(&c, &r2->closed, 2000);
    assert_false(r1->got_rst && r1->rst == NGHTTP2_INTERNAL_ERROR);
    assert_int_equal(r1->http_status, 200);
    assert_int_equal(r1->grpc_status, GRPC_STATUS_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(r1->grpc_message, "--max-header-list-size"));
    assert_int_equal(r2->http_status, 431);
    assert_int_equal(rows[0].stats.msg_received, received); /* the request was not looked at */
    assert_int_equal(limit_count("header_list"), 2);
    /* the connection serves on */
    result_t *r3 = request(&c, "POST", "/test.T/Echo", "application/grpc", buf, n, 0, grpc_hdrs);
    pump_until(&c, &r3->closed, 2000);
    assert_int_equal(r3->grpc_status, 0);
    client_close(&c);
    stop_server(s);
}

/* A PING flood past the strike limit: one GOAWAY and one log line, not one per PING. */
static void test_ping_flood_one_goaway(void **state)
{
    (void)state;
    server_t *s = start_server(NULL);
    client_t c;
    client_open(&c, s);
    pump_once(&c);
    for (int i = 0; i < 200; i++) /* in one write: all read in one go */
        nghttp2_submit_ping(c.s, NGHTTP2_FLAG_NONE, NULL);
    int n_goaway = 0;
    for (int i = 0; i < 500; i++) {
        int before = c.goaway;
        pump_once(&c);
        if (c.goaway > before) n_goaway += c.goaway - before;
        poll(NULL, 0, 1);
    }
    assert_int_equal(c.goaway_code, NGHTTP2_ENHANCE_YOUR_CALM);
    assert_int_equal(n_goaway, 1);
    assert_int_equal(limit_count("ping_flood"), 1);
    client_close(&c);
    stop_server(s);
}

/* Unknown fields are dropped before decoding (the echo shows what the server kept), strings
 * must be UTF-8 without NUL, the row's field limits hold, and decoding has a budget. */
static void test_request_wire_checks(void **state)
{
    (void)state;
    server_t *s = start_server(NULL);
    client_t c;
    client_open(&c, s);
    /* HealthCheckRequest{service "abc"} amid 1000 unknown fields */
    static unsigned char m[8192];
    size_t n = 5;
    for (int i = 0; i < 1000; i++) {
        m[n++] = 0x98, m[n++] = 0x06; /* field 99, varint */
        m[n++] = 1;
    }
    m[n++] = 0x0a, m[n++] = 3, memcpy(m + n, "abc", 3), n += 3;
    m[1] = m[2] = 0, m[3] = (unsigned char)((n - 5) >> 8), m[4] = (unsigned char)(n - 5);
    result_t *r = request(&c, "POST", "/test.T/Echo", "application/grpc", m, n, 0, grpc_hdrs);
    pump_until(&c, &r->closed, 2000);
    assert_int_equal(r->grpc_status, 0);
    const unsigned char want[] = {0, 0, 0, 0, 5, 0x0a, 3, 'a', 'b', 'c'};
    assert_int_equal(r->dlen, sizeof want); /* protobuf-c would have echoed the 3000 bytes too */
    assert_memory_equal(r->data, want, sizeof want);

    static const struct {
        const char *path, *service;
        size_t len;
        const char *why;
    } bad[] = {
        {"/test.T/Echo", "ab\0cd", 5, "field 'service' contains a NUL character at byte 2"},
        {"/test.T/Echo", "ab\xfe", 3, "field 'service' is not valid UTF-8 at byte 2"},
        {"/test.T/Limited", "123456789", 9, "field 'service' is 9 bytes long, at most 8"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        unsigned char b[64] = {
            0, 0, 0, 0, (unsigned char)(bad[i].len + 2), 0x0a, (unsigned char)bad[i].len};
        memcpy(b + 7, bad[i].service, bad[i].len);
        r = request(&c, "POST", bad[i].path, "application/grpc", b, 7 + bad[i].len, 0, grpc_hdrs);
        pump_until(&c, &r->closed, 2000);
        assert_int_equal(r->grpc_status, GRPC_STATUS_INVALID_ARGUMENT);
        if (!strstr(r->grpc_message, bad[i].why))
            fail_msg("'%s' does not say '%s'", r->grpc_message, bad[i].why);
    }
    n = frame(m, "12345678", 0);
    r = request(&c, "POST", "/test.T/Limited", "application/grpc", m, n, 0, grpc_hdrs);
    pump_until(&c, &r->closed, 2000);
    assert_int_equal(r->grpc_status, 0);

    /* 60000 empty map entries: 2 bytes each on the wire, ~50 decoded: over 8x */
    static unsigned char e[5 + 120000];
    for (size_t i = 0; i < 60000; i++)
        e[5 + 2 * i] = 0x0a, e[6 + 2 * i] = 0;
    e[0] = 0, e[1] = 0, e[2] = (unsigned char)(120000 >> 16), e[3] = (unsigned char)(120000 >> 8),
    e[4] = (unsigned char)120000;
    r = request(&c, "POST", "/test.T/Entries", "application/grpc", e, sizeof e, 0, grpc_hdrs);
    pump_until(&c, &r->closed, 5000);
    assert_int_equal(r->grpc_status, GRPC_STATUS_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(r->grpc_message, "decodes to more than"));
    r = request(&c, "POST", "/test.T/Entries", "application/grpc", e, 5 + 2000, 0, grpc_hdrs);
    e[2] = 0, e[3] = (unsigned char)(2000 >> 8), e[4] = (unsigned char)2000; /* 1000 are fine */
    pump_until(&c, &r->closed, 5000);
    assert_int_equal(r->grpc_status, 0);
    client_close(&c);
    /* a limit on a field the request does not have is a registration error */
    static const grpc_field_limit_t bogus[] = {{"no_such_field", 1, 0, NULL}, {NULL, 0, 0, NULL}};
    grpc_method_t row = rows[0];
    row.path = "/test.T/Bogus";
    row.limits = bogus;
    assert_int_equal(server_register(s, &row, 1), -EINVAL);
    stop_server(s);
}

/* A bidi stream whose client sends requests but takes no responses: once its output is over
 * the call's mark, its input is held unconsumed (the client's window closes) instead of replies
 * piling up; when the client reads, every request is answered, in order. */
static void test_input_held_while_output_congested(void **state)
{
    (void)state;
    server_t *s = start_server(NULL);
    client_t c;
    client_open_stingy(&c, s);
    enum { N = 120000 }; /* 960000 bytes: within the stream window, 3.6x the call's mark */
    static unsigned char body[N * 8];
    for (int i = 0; i < N; i++)
        frame(body + 8 * i, "x", 0); /* 8 bytes each, the reply too */
    uint64_t received = rows[2].stats.msg_received;
    result_t *r =
        request(&c, "POST", "/test.T/Bidi", "application/grpc", body, sizeof body, 0, grpc_hdrs);
    for (int i = 0; i < 1500; i++) {
        pump_once(&c);
        poll(NULL, 0, 1);
    }
    conn_t *k = TAILQ_FIRST(&s->conns);
    assert_non_null(k);
    /* replies stopped near the call's mark; the rest of the input waits, unconsumed */
    assert_true(k->out_queued <= CALL_OUT_HIGH + 16384 + 64); /* one DATA frame's worth over */
    assert_true(k->in_held > 0);
    assert_true(s->out_queued == k->out_queued);
    assert_true(rows[2].stats.msg_received - received < N / 2);
    assert_true(nghttp2_session_get_stream_remote_window_size(c.s, r->id) < (int32_t)(N * 8) / 2);
    /* the client reads: everything is answered */
    for (int i = 0; i < 60000 && !r->closed; i++) {
        nghttp2_session_set_local_window_size(c.s, NGHTTP2_FLAG_NONE, r->id, 1 << 24);
        nghttp2_session_set_local_window_size(c.s, NGHTTP2_FLAG_NONE, 0, 1 << 24);
        nghttp2_session_consume(c.s, r->id, r->dtotal - r->dconsumed);
        r->dconsumed = r->dtotal;
        pump_once(&c);
    }
    assert_true(r->closed);
    assert_int_equal(r->grpc_status, 0);
    assert_int_equal(r->dtotal, sizeof body);
    assert_int_equal(rows[2].stats.msg_received - received, N);
    assert_int_equal(s->out_queued, 0);
    assert_int_equal(s->in_held, 0);
    client_close(&c);
    stop_server(s);
}

/* A stream whose client takes none of its response is cancelled after --stream-stall-timeout,
 * with a status that says why; beyond --max-paused-streams waiting streams on one connection,
 * the newest are. */
static void test_stalled_and_paused_streams(void **state)
{
    (void)state;
    server_t *s =
        start_server((char *[]){"--stream-stall-timeout", "4s", "--max-paused-streams", "2", NULL});
    client_t c;
    client_open_stingy(&c, s);
    open_held(&c, 4);
    int32_t ids[4];
    for (int i = 0; i < 4; i++)
        ids[i] = held[i]->stream_id;
    Grpc__Health__V1__HealthCheckRequest m = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    m.service = "a reply longer than the sixteen bytes the client lets through";
    for (int i = 0; i < 4; i++)
        assert_int_equal(grpc_call_send(held[i], &m.base), 0);
    /* checked each second: after a second four wait on their client, two may */
    int64_t until = clock_now_ns() + 10000000000LL;
    while (n_held == 4 && clock_now_ns() < until) {
        pump_once(&c);
        poll(NULL, 0, 1);
    }
    assert_int_equal(n_held, 2);
    assert_int_equal(limit_count("stream_stall"), 0);
    assert_int_equal(limit_count("paused_streams"), 2);
    for (int i = 0; i < n_held; i++) /* the oldest stay */
        assert_true(held[i]->stream_id == ids[0] || held[i]->stream_id == ids[1]);
    until = clock_now_ns() + 10000000000LL;
    while (n_held && clock_now_ns() < until) { /* past the stall timeout: the rest goes too */
        pump_once(&c);
        poll(NULL, 0, 1);
    }
    assert_int_equal(n_held, 0);
    assert_int_equal(limit_count("stream_stall"), 2);
    assert_int_equal(s->out_queued, 0);
    for (int i = 0; i < 500; i++)
        pump_once(&c);
    for (int i = 0; i < 4; i++) {
        result_t *r = res_of(&c, ids[i]);
        assert_int_equal(r->grpc_status, GRPC_STATUS_RESOURCE_EXHAUSTED);
        assert_non_null(
            strstr(r->grpc_message, i < 2 ? "--stream-stall-timeout" : "--max-paused-streams"));
    }
    client_close(&c);
    stop_server(s);
}

/* Unfinished request messages of a connection are charged against --max-pending-input: past
 * it the call with the biggest fails (RESOURCE_EXHAUSTED), the others go on. */
static void test_pending_input_budget(void **state)
{
    (void)state;
    server_t *s = start_server(
        (char *[]){"--max-recv-message-size", "65536", "--max-pending-input", "100000", NULL});
    client_t c;
    client_open(&c, s);
    static unsigned char part[3][40005];
    result_t *r[3];
    for (int i = 0; i < 3; i++) {
        memset(part[i], 'x', sizeof part[i]);
        part[i][0] = 0, part[i][1] = 0, part[i][2] = 0, part[i][3] = 0xea, part[i][4] = 0x60;
        r[i] = request_open(&c, "/test.T/Echo", part[i], sizeof part[i] - (size_t)i);
        for (int k = 0; k < 300; k++)
            pump_once(&c);
    }
    conn_t *k = TAILQ_FIRST(&s->conns);
    /* the first two fit (80010 bytes); the third passes 100000: the biggest, the first, fails */
    pump_until(&c, &r[0]->closed, 2000);
    assert_int_equal(r[0]->grpc_status, GRPC_STATUS_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(r[0]->grpc_message, "--max-pending-input"));
    assert_false(r[1]->closed);
    assert_false(r[2]->closed);
    assert_true(k->in_pending <= 100000);
    assert_int_equal(k->in_pending, 40004 + 40003);
    assert_int_equal(limit_count("pending_input"), 1);
    client_close(&c);
    assert_int_equal(s->in_pending, 0);
    stop_server(s);
}

/* A request message trickled slower than --min-body-rate fails after the grace
 * (--request-header-timeout); a unary call whose message never comes too. */
static void test_slow_request_message(void **state)
{
    (void)state;
    server_t *s = start_server(
        (char *[]){"--request-header-timeout", "300ms", "--min-body-rate", "100000", NULL});
    client_t c;
    client_open(&c, s);
    unsigned char part[15] = {0, 0, 0, 3, 0xe8, 0x0a}; /* declares 1000 bytes, sends 10 */
    result_t *r1 = request_open(&c, "/test.T/Echo", part, sizeof part);
    result_t *r2 = request_open(&c, "/test.T/Echo", part, 0); /* HEADERS, then nothing */
    pump_until(&c, &r2->closed, 3000);
    pump_until(&c, &r1->closed, 1000);
    assert_int_equal(r1->grpc_status, GRPC_STATUS_DEADLINE_EXCEEDED);
    assert_int_equal(r2->grpc_status, GRPC_STATUS_DEADLINE_EXCEEDED);
    assert_non_null(strstr(r1->grpc_message, "--min-body-rate"));
    assert_int_equal(limit_count("min_body_rate"), 2);
    /* a streaming call waiting between messages is not slow: it is idle, and may be */
    open_held(&c, 1);
    pump_no_read(&c, 800);
    assert_int_equal(n_held, 1);
    release_held();
    client_close(&c);
    stop_server(s);
}

/* The h2 idle timer counts streams and messages, not bytes: PINGs every 50 ms (allowed) do not
 * keep a connection without streams open past --idle-timeout. */
static void test_idle_timer_ignores_pings(void **state)
{
    (void)state;
    server_t *s =
        start_server((char *[]){"--idle-timeout", "400ms", "--keepalive-permit-without-calls",
                                "--keepalive-min-time", "10ms", NULL});
    client_t c;
    client_open(&c, s);
    for (int t = 0; t < 40 && !c.goaway; t++) {
        nghttp2_submit_ping(c.s, NGHTTP2_FLAG_NONE, NULL);
        for (int i = 0; i < 50 && !c.goaway; i++) {
            pump_once(&c);
            poll(NULL, 0, 1);
        }
    }
    assert_true(c.goaway > 0);
    assert_int_equal(c.goaway_code, NGHTTP2_NO_ERROR);
    assert_string_equal(c.goaway_dbg, "idle");
    client_close(&c);
    stop_server(s);
}

/* Sends first at once, then req one byte every `every` ms (over and over) until the server
 * closes or ms pass; returns the bytes received. */
static int http1_trickle(server_t *s, const char *first, const char *req, int every, int ms,
                         char *resp, size_t cap, int *closed)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)server_port(s, 0)),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    if (*first) assert_int_equal(write(fd, first, strlen(first)), (ssize_t)strlen(first));
    size_t off = 0, got = 0, len = strlen(req);
    *closed = 0;
    for (int t = 0; t < ms && !*closed; t++) {
        if (t % every == 0 && write(fd, req + off++ % len, 1) < 0) break;
        event_base_loop(server_base(s), EVLOOP_NONBLOCK);
        ssize_t r = read(fd, resp + got, cap - 1 - got);
        if (r > 0) got += (size_t)r;
        if (r == 0) *closed = 1;
        poll(NULL, 0, 1);
    }
    resp[got] = 0;
    close(fd);
    for (int i = 0; i < 10; i++)
        event_base_loop(server_base(s), EVLOOP_NONBLOCK);
    return (int)got;
}

/* HTTP/1.1 trickles: a request head must be complete within --request-header-timeout from its
 * first byte, whatever trickles in (before: each byte restarted the timer, a 1-byte trickle
 * every 3 s kept a connection for ever); bytes between requests, empty lines included, start
 * that clock too. */
static void test_http1_trickles_time_out(void **state)
{
    (void)state;
    server_t *s = start_server((char *[]){"--request-header-timeout", "300ms", NULL});
    static char resp[4096];
    int closed;
    http1_trickle(s, "GET /live HTTP/1.1\r\n", "Host: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaa",
                  50, 2000, resp, sizeof resp, &closed);
    assert_true(closed);
    assert_non_null(strstr(resp, "HTTP/1.1 408"));
    /* trickled from its first byte: closed while its protocol is still being told */
    http1_trickle(s, "", "GET /live HTTP/1.1\r\n", 50, 2000, resp, sizeof resp, &closed);
    assert_true(closed);
    assert_int_equal(resp[0], 0);
    http1_trickle(s, "GET /live HTTP/1.1\r\nHost: x\r\n\r\n", "\r\n", 50, 2000, resp, sizeof resp,
                  &closed);
    assert_true(closed);
    assert_non_null(strstr(resp, "HTTP/1.1 200")); /* the request before was answered */
    assert_int_equal(limit_count("request_header_timeout"), 2);
    stop_server(s);
}

/* A body that trickles after a prompt head: 408 once the grace is over. */
static void test_http1_slow_body(void **state)
{
    (void)state;
    server_t *s = start_server(
        (char *[]){"--request-header-timeout", "300ms", "--min-body-rate", "1000", NULL});
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)server_port(s, 0)),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    const char head[] = "POST /live HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n";
    assert_int_equal(write(fd, head, sizeof head - 1), (ssize_t)(sizeof head - 1));
    char resp[1024];
    size_t got = 0;
    int closed = 0;
    for (int t = 0; t < 3000 && !closed; t++) {
        if (t % 50 == 0 && write(fd, "b", 1) < 0) break; /* 20 bytes/s */
        event_base_loop(server_base(s), EVLOOP_NONBLOCK);
        ssize_t r = read(fd, resp + got, sizeof resp - 1 - got);
        if (r > 0) got += (size_t)r;
        if (r == 0) closed = 1;
        poll(NULL, 0, 1);
    }
    resp[got] = 0;
    close(fd);
    assert_true(closed);
    assert_non_null(strstr(resp, "HTTP/1.1 408"));
    assert_int_equal(limit_count("min_body_rate"), 1);
    stop_server(s);
}

/* RFC 9112 strictness: whitespace before a field's colon is a 400 (not a header named
 * "Content-Length " and a body parsed as the next request); HTTP/9.9 is a 505. */
static void test_http1_strictness(void **state)
{
    (void)state;
    server_t *s = start_server(NULL);
    static char resp[8192];
    const char smuggle[] = "POST /live HTTP/1.1\r\nHost: x\r\nContent-Length : 33\r\n\r\n"
                           "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n";
    http1_exchange(s, smuggle, sizeof smuggle - 1, resp, sizeof resp);
    assert_non_null(strstr(resp, "HTTP/1.1 400"));
    assert_null(strstr(resp, "HTTP/1.1 405"));
    assert_null(strstr(resp, "HTTP/1.1 200"));
    const char v99[] = "GET /live HTTP/9.9\r\nHost: x\r\n\r\n";
    http1_exchange(s, v99, sizeof v99 - 1, resp, sizeof resp);
    assert_non_null(strstr(resp, "HTTP/1.1 505"));
    const char v10[] = "GET /live HTTP/1.0\r\n\r\n";
    http1_exchange(s, v10, sizeof v10 - 1, resp, sizeof resp);
    assert_non_null(strstr(resp, "HTTP/1.1 200"));
    stop_server(s);
}

/* New streams per connection are rate limited (--max-stream-rate): the ones past the bucket are
 * refused (REFUSED_STREAM, no work done); twice the rate refused gets GOAWAY
 * ENHANCE_YOUR_CALM. */
static void test_stream_rate_limit(void **state)
{
    (void)state;
    server_t *s = start_server((char *[]){"--max-stream-rate", "5", NULL});
    client_t c;
    client_open(&c, s);
    result_t *r[20];
    for (int i = 0; i < 20; i++)
        r[i] = request(&c, "GET", "/live", NULL, NULL, 0, 0, NULL);
    for (int i = 0; i < 500; i++) {
        pump_once(&c);
        poll(NULL, 0, 1);
    }
    int ok = 0, refused = 0;
    for (int i = 0; i < 20; i++) {
        ok += r[i]->http_status == 200;
        refused += r[i]->got_rst && r[i]->rst == NGHTTP2_REFUSED_STREAM;
    }
    assert_int_equal(ok, 5);
    assert_true(refused >= 6);
    assert_true(c.goaway > 0);
    assert_int_equal(c.goaway_code, NGHTTP2_ENHANCE_YOUR_CALM);
    assert_string_equal(c.goaway_dbg, "too_many_streams");
    assert_true(limit_count("stream_rate") >= 6);
    client_close(&c);
    stop_server(s);
}

/* The connection's bound (--max-connection-output) and the process's (--max-process-output):
 * calls whose own output is small still have their input held once the sum over their
 * connection, or over every connection, passes the bound; it is processed once the client
 * reads. */
static void test_connection_and_process_output_bounds(void **state)
{
    (void)state;
    for (int process = 0; process < 2; process++) {
        char *conn_bound[] = {"--max-connection-output", "65536", NULL};
        char *proc_bound[] = {"--max-process-output", "65536", NULL};
        server_t *s = start_server(process ? proc_bound : conn_bound);
        enum { N = 8000 }; /* 64000 bytes of requests per call, as many replies */
        static unsigned char body[N * 8];
        for (int i = 0; i < N; i++)
            frame(body + 8 * i, "x", 0);
        client_t c[2];
        result_t *r[2];
        for (int k = 0; k < 2; k++) { /* two calls: on one connection, or on two */
            if (k == 0 || process) client_open_stingy(&c[k], s);
            client_t *cl = process ? &c[k] : &c[0];
            r[k] = request(cl, "POST", "/test.T/Bidi", "application/grpc", body, sizeof body, 0,
                           grpc_hdrs);
            for (int i = 0; i < 1000; i++) {
                pump_once(cl);
                poll(NULL, 0, 1);
            }
        }
        /* each call queued 40-64 KB (below its own 256 KiB mark); together past the bound */
        assert_true(s->out_queued <= 65536 + 16384 + 64);
        assert_true(s->in_held > 0);
        assert_int_equal(limit_count(process ? "process_output" : "connection_output"), 1);
        for (int k = 0; k < 2; k++) { /* the clients read: everything is answered */
            client_t *cl = process ? &c[k] : &c[0];
            for (int i = 0; i < 20000 && !(r[0]->closed && r[1]->closed); i++) {
                nghttp2_session_set_local_window_size(cl->s, NGHTTP2_FLAG_NONE, r[k]->id, 1 << 24);
                nghttp2_session_set_local_window_size(cl->s, NGHTTP2_FLAG_NONE, 0, 1 << 24);
                for (int j = 0; j < 2; j++) {
                    nghttp2_session_consume(cl->s, r[j]->id, r[j]->dtotal - r[j]->dconsumed);
                    r[j]->dconsumed = r[j]->dtotal;
                }
                pump_once(&c[0]);
                if (process) pump_once(&c[1]);
            }
        }
        for (int k = 0; k < 2; k++) {
            assert_true(r[k]->closed);
            assert_int_equal(r[k]->grpc_status, 0);
            assert_int_equal(r[k]->dtotal, sizeof body);
        }
        assert_int_equal(s->out_queued, 0);
        assert_int_equal(s->in_held, 0);
        client_close(&c[0]);
        if (process) client_close(&c[1]);
        stop_server(s);
    }
}

/* ---- streamed answers: a streaming route over HTTP/1.1 and HTTP/2 ---- */
static struct {
    http_stream_t *held;
    int cancels, calls;
    char body[128], ctype[64], rid[80], path[64];
    int http2;
    uint64_t tags[8];
    uint32_t units[8];
    int ntaken;
} sx;

static void sx_handler(void *arg, http_stream_t *st, const http_request_t *req)
{
    (void)arg;
    sx.calls++;
    snprintf(sx.body, sizeof sx.body, "%.*s", (int)req->body_len, req->body);
    snprintf(sx.ctype, sizeof sx.ctype, "%s", req->content_type ? req->content_type : "");
    snprintf(sx.rid, sizeof sx.rid, "%s", req->request_id);
    snprintf(sx.path, sizeof sx.path, "%s", req->path);
    sx.http2 = req->http2;
    assert_string_equal(req->request_id, http_stream_request_id(st));
    if (!strcmp(sx.body, "hold")) { /* a streamed answer the test goes on writing */
        assert_int_equal(http_stream_start(st, 200, "text/event-stream", NULL, 0), 0);
        assert_int_equal(http_stream_start(st, 200, "text/event-stream", NULL, 0), -EPIPE);
        assert_int_equal(http_stream_write(st, "data: 1\n\n", 9, 1, 2), 0);
        http_stream_ref(st);
        sx.held = st;
        return;
    }
    const http_header_t h[] = {{"retry-after", "7"}};
    char body[160];
    int n = snprintf(body, sizeof body, "{\"path\":\"%s\"}", req->path);
    assert_int_equal(http_stream_reply(st, 200, "application/json", h, 1, body, (size_t)n), 0);
    assert_int_equal(http_stream_write(st, "x", 1, 0, 0), -EPIPE); /* ended */
}

static void sx_cancel(void *arg, http_stream_t *st)
{
    (void)arg;
    assert_ptr_equal(st, sx.held);
    assert_false(http_stream_active(st));
    assert_int_equal(http_stream_write(st, "late", 4, 9, 1), -EPIPE);
    sx.cancels++;
    http_stream_unref(st);
    sx.held = NULL;
}

static void sx_taken(void *arg, http_stream_t *st, uint64_t tag, uint32_t units)
{
    (void)arg;
    (void)st;
    assert_true(sx.ntaken < 8);
    sx.tags[sx.ntaken] = tag;
    sx.units[sx.ntaken++] = units;
}

static void sx_error(void *arg, int status, const char *message, http_response_t *r)
{
    (void)arg;
    char body[256];
    int n = snprintf(body, sizeof body, "{\"error\":\"%s\",\"status\":%d}", message, status);
    http_response_set(r, status, "application/json", body, (size_t)n);
}

/* Ends the held stream with a last chunk. */
static void sx_finish(void)
{
    http_stream_t *st = sx.held;
    assert_non_null(st);
    assert_int_equal(http_stream_write(st, "data: [DONE]\n\n", 14, 3, 0), 0);
    assert_int_equal(http_stream_end(st), 0);
    assert_int_equal(http_stream_end(st), -EPIPE);
    sx.held = NULL;
    http_stream_unref(st);
}

static server_t *start_stream_server_with(char **extra)
{
    server_t *s = start_server(extra);
    memset(&sx, 0, sizeof sx);
    http_route_t srows[] = {{.name = "stream",
                             .path = "/stream",
                             .methods = HTTP_METHOD_POST | HTTP_METHOD_GET,
                             .stream = sx_handler,
                             .on_cancel = sx_cancel,
                             .on_taken = sx_taken,
                             .error = sx_error,
                             .max_body = 64},
                            {.name = "pfx",
                             .path = "/pfx/",
                             .prefix = 1,
                             .methods = HTTP_METHOD_GET | HTTP_METHOD_HEAD,
                             .stream = sx_handler,
                             .error = sx_error}};
    assert_int_equal(server_route_add(s, srows, 2), 0);
    http_route_t both = srows[0];
    both.name = "both";
    both.path = "/both";
    both.handler = echo_route;
    assert_int_equal(server_route_add(s, &both, 1), -EINVAL); /* a row is one kind or the other */
    return s;
}

static server_t *start_stream_server(void)
{
    return start_stream_server_with(NULL);
}

/* A raw HTTP/1.1 connection the test keeps open. */
static int h1_open(server_t *s)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)server_port(s, 0)),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    return fd;
}

/* Writes req, then runs the loop and reads into resp (appending) until it holds want (NULL:
 * until the server closes) or ms pass. Returns 1 when the server closed. */
static int h1_talk(server_t *s, int fd, const char *req, char *resp, size_t cap, const char *want,
                   int ms)
{
    size_t off = 0, len = req ? strlen(req) : 0, got = strlen(resp);
    for (int i = 0; i < ms; i++) {
        if (off < len) {
            ssize_t w = write(fd, req + off, len - off);
            if (w > 0) off += (size_t)w;
        }
        event_base_loop(server_base(s), EVLOOP_NONBLOCK);
        ssize_t r = read(fd, resp + got, cap - 1 - got);
        if (r > 0) got += (size_t)r;
        resp[got] = 0;
        if (r == 0) return 1;
        if (want && off == len && strstr(resp, want)) return 0;
        poll(NULL, 0, 1);
    }
    return 0;
}

static void test_stream_http1(void **state)
{
    (void)state;
    server_t *s = start_stream_server();
    static char resp[16384];
    /* a streamed answer, with a request pipelined behind it */
    int fd = h1_open(s);
    resp[0] = 0;
    h1_talk(s, fd,
            "POST /stream HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "x-request-id: rid-1\r\nContent-Length: 4\r\n\r\nhold"
            "GET /live HTTP/1.1\r\nHost: x\r\n\r\n",
            resp, sizeof resp, "data: 1", 2000);
    assert_int_equal(sx.calls, 1);
    assert_string_equal(sx.body, "hold");
    assert_string_equal(sx.ctype, "application/json");
    assert_string_equal(sx.rid, "rid-1");
    assert_int_equal(sx.http2, 0);
    assert_non_null(strstr(resp, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                                 "Transfer-Encoding: chunked\r\n"));
    assert_non_null(strstr(resp, "x-request-id: rid-1\r\n"));
    assert_non_null(strstr(resp, "\r\n\r\n9\r\ndata: 1\n\n\r\n"));
    assert_null(strstr(resp, "live")); /* the pipelined request waits for the answer */
    /* what the socket took is reported, by tag */
    for (int i = 0; i < 100 && sx.ntaken < 1; i++)
        event_base_loop(server_base(s), EVLOOP_NONBLOCK);
    assert_int_equal(sx.ntaken, 1);
    assert_true(sx.tags[0] == 1 && sx.units[0] == 2);
    assert_int_equal(http_stream_write(sx.held, "data: 2\n\n", 9, 2, 5), 0);
    for (int i = 0; i < 100 && sx.ntaken < 2; i++)
        event_base_loop(server_base(s), EVLOOP_NONBLOCK);
    assert_int_equal(sx.ntaken, 2);
    assert_true(sx.tags[1] == 2 && sx.units[1] == 5);
    sx_finish();
    h1_talk(s, fd, NULL, resp, sizeof resp, "{\"status\":\"live\"}", 2000);
    char *end = strstr(resp, "e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n");
    assert_non_null(end);
    char *live = strstr(resp, "HTTP/1.1 200 OK\r\nContent-Type: application/json");
    assert_non_null(live);
    assert_true(end < live);        /* in order, on the same connection (keep-alive) */
    assert_int_equal(sx.ntaken, 2); /* units 0: nothing to report */
    /* answered at once: a length, the row's headers, a generated request id; HEAD: headers */
    resp[0] = 0;
    h1_talk(s, fd,
            "POST /stream HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nnow"
            "HEAD /pfx/model-a HTTP/1.1\r\nHost: x\r\n\r\n"
            "GET /pfx/model-b?x=1 HTTP/1.1\r\nHost: x\r\n\r\n",
            resp, sizeof resp, "{\"path\":\"/pfx/model-b\"}", 2000);
    assert_non_null(strstr(resp, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                 "Content-Length: 18\r\nretry-after: 7\r\nx-request-id: "));
    assert_non_null(strstr(resp, "{\"path\":\"/stream\"}"));
    assert_null(strstr(resp, "{\"path\":\"/pfx/model-a\"}")); /* HEAD */
    assert_non_null(strstr(resp, "Content-Length: 23\r\n"));
    assert_string_equal(sx.path, "/pfx/model-b");
    /* the client goes away while its answer streams: the handler hears it once */
    resp[0] = 0;
    h1_talk(s, fd, "POST /stream HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nhold", resp,
            sizeof resp, "data: 1", 2000);
    assert_non_null(sx.held);
    close(fd);
    for (int i = 0; i < 200 && sx.cancels == 0; i++) {
        event_base_loop(server_base(s), EVLOOP_NONBLOCK);
        poll(NULL, 0, 1);
    }
    assert_int_equal(sx.cancels, 1);
    assert_null(sx.held);
    /* limits and methods, in the row's own format */
    fd = h1_open(s);
    resp[0] = 0;
    assert_int_equal(h1_talk(s, fd,
                             "POST /stream HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n",
                             resp, sizeof resp, NULL, 2000),
                     1);
    close(fd);
    assert_non_null(strstr(resp, "HTTP/1.1 413 Content Too Large\r\nContent-Type: "
                                 "application/json"));
    assert_non_null(strstr(resp, "{\"error\":\"request body larger than 64 bytes "
                                 "(--max-request-body)\",\"status\":413}"));
    fd = h1_open(s);
    resp[0] = 0;
    h1_talk(
        s, fd,
        "POST /stream HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        "40\r\n" /* 64 bytes, then one more: over the limit while the body arrives */
        "0123456789012345678901234567890123456789012345678901234567890123\r\n1\r\nx\r\n0\r\n\r\n",
        resp, sizeof resp, NULL, 2000);
    close(fd);
    assert_non_null(strstr(resp, "HTTP/1.1 413"));
    fd = h1_open(s);
    resp[0] = 0;
    h1_talk(s, fd, "PUT /stream HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", resp,
            sizeof resp, "}", 2000);
    close(fd);
    assert_non_null(strstr(resp, "HTTP/1.1 405 Method Not Allowed\r\nContent-Type: "
                                 "application/json"));
    assert_non_null(strstr(resp, "Allow: GET, POST"));
    assert_non_null(strstr(resp, "{\"error\":\"method not allowed\",\"status\":405}"));
    /* Expect: 100-continue (curl's, for bodies over 1 KiB): told to go on at once */
    fd = h1_open(s);
    resp[0] = 0;
    h1_talk(s, fd,
            "POST /stream HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
            "Expect: 100-continue\r\n\r\n",
            resp, sizeof resp, "HTTP/1.1 100 Continue\r\n\r\n", 2000);
    assert_string_equal(resp, "HTTP/1.1 100 Continue\r\n\r\n");
    h1_talk(s, fd, "now", resp, sizeof resp, "{\"path\":\"/stream\"}", 2000);
    close(fd);
    assert_non_null(strstr(resp, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n"));
    /* HTTP/1.0: no chunks, the body runs to the close */
    fd = h1_open(s);
    resp[0] = 0;
    h1_talk(s, fd, "POST /stream HTTP/1.0\r\nContent-Length: 4\r\n\r\nhold", resp, sizeof resp,
            "data: 1", 2000);
    sx_finish();
    assert_int_equal(h1_talk(s, fd, NULL, resp, sizeof resp, NULL, 2000), 1);
    close(fd);
    assert_null(strstr(resp, "Transfer-Encoding"));
    assert_non_null(strstr(resp, "Connection: close\r\n\r\ndata: 1\n\ndata: [DONE]\n\n"));
    stop_server(s);
}

static void test_stream_h2(void **state)
{
    (void)state;
    server_t *s = start_stream_server();
    client_t c;
    client_open_window(&c, s, 16); /* the server may send 16 bytes per stream at a time */
    const char *rid[] = {"x-request-id", "rid-2", NULL};
    result_t *r = request(&c, "POST", "/stream", "application/json", (const unsigned char *)"hold",
                          4, 2, rid);
    for (int i = 0; i < 2000 && !sx.held; i++) {
        pump_once(&c);
        poll(NULL, 0, 1);
    }
    assert_non_null(sx.held);
    assert_string_equal(sx.body, "hold"); /* gathered from two DATA frames */
    assert_string_equal(sx.rid, "rid-2");
    assert_int_equal(sx.http2, 1);
    /* more than the window: nothing is reported taken until the client's WINDOW_UPDATE */
    char big[40];
    memset(big, 'y', sizeof big);
    assert_int_equal(http_stream_write(sx.held, big, sizeof big, 2, 7), 0);
    for (int i = 0; i < 2000 && sx.ntaken < 2; i++) {
        pump_once(&c);
        poll(NULL, 0, 1);
    }
    assert_int_equal(sx.ntaken, 2);
    assert_true(sx.tags[0] == 1 && sx.units[0] == 2 && sx.tags[1] == 2 && sx.units[1] == 7);
    sx_finish();
    pump_until(&c, &r->closed, 2000);
    assert_int_equal(r->http_status, 200);
    assert_string_equal(r->content_type, "text/event-stream");
    assert_int_equal(r->dlen, 9 + 40 + 14);
    assert_memory_equal(r->data, "data: 1\n\n", 9);
    assert_memory_equal(r->data + 49, "data: [DONE]\n\n", 14);
    assert_false(r->got_rst);
    /* answered at once, and a prefix row */
    result_t *r2 = request(&c, "GET", "/pfx/m", NULL, NULL, 0, 0, NULL);
    pump_until(&c, &r2->closed, 2000);
    assert_int_equal(r2->http_status, 200);
    assert_int_equal(r2->dlen, 17);
    assert_memory_equal(r2->data, "{\"path\":\"/pfx/m\"}", 17);
    /* over the body limit: 413 in the row's format */
    unsigned char big_body[100];
    memset(big_body, 'b', sizeof big_body);
    result_t *r3 =
        request(&c, "POST", "/stream", "application/json", big_body, sizeof big_body, 0, NULL);
    pump_until(&c, &r3->closed, 2000);
    assert_int_equal(r3->http_status, 413);
    assert_non_null(memmem(r3->data, r3->dlen, "\"status\":413", 12));
    /* a wrong method: 405 */
    result_t *r4 = request(&c, "PUT", "/stream", NULL, NULL, 0, 0, NULL);
    pump_until(&c, &r4->closed, 2000);
    assert_int_equal(r4->http_status, 405);
    /* the client resets the stream while its answer streams: the handler hears it */
    result_t *r5 = request(&c, "POST", "/stream", "application/json", (const unsigned char *)"hold",
                           4, 0, NULL);
    for (int i = 0; i < 2000 && !sx.held; i++) {
        pump_once(&c);
        poll(NULL, 0, 1);
    }
    assert_non_null(sx.held);
    nghttp2_submit_rst_stream(c.s, NGHTTP2_FLAG_NONE, r5->id, NGHTTP2_CANCEL);
    for (int i = 0; i < 2000 && sx.cancels == 0; i++) {
        pump_once(&c);
        poll(NULL, 0, 1);
    }
    assert_int_equal(sx.cancels, 1);
    /* and losing the connection does the same */
    request(&c, "POST", "/stream", NULL, (const unsigned char *)"hold", 4, 0, NULL);
    for (int i = 0; i < 2000 && !sx.held; i++) {
        pump_once(&c);
        poll(NULL, 0, 1);
    }
    assert_non_null(sx.held);
    client_close(&c);
    assert_int_equal(sx.cancels, 2);
    stop_server(s);
}

/* A streamed answer whose client takes none of it is ended after --stream-stall-timeout, as a
 * gRPC stream is: over HTTP/2 the stream is reset, over HTTP/1.1 (whose status went out with
 * the head) the connection is closed; either way the route's handler hears the client go. */
static void test_stalled_streamed_answers(void **state)
{
    (void)state;
    server_t *s = start_stream_server_with((char *[]){"--stream-stall-timeout", "2s", NULL});
    /* HTTP/2: a client that grants 16 bytes and never more */
    client_t c;
    client_open_stingy(&c, s);
    result_t *r = request(&c, "POST", "/stream", "application/json", (const unsigned char *)"hold",
                          4, 0, NULL);
    for (int i = 0; i < 2000 && !sx.held; i++) {
        pump_once(&c);
        poll(NULL, 0, 1);
    }
    assert_non_null(sx.held);
    char big[4096];
    memset(big, 'y', sizeof big);
    assert_int_equal(http_stream_write(sx.held, big, sizeof big, 2, 1), 0);
    int64_t t0 = clock_now_ns(), until = t0 + 10000000000LL;
    while (sx.cancels == 0 && clock_now_ns() < until) {
        pump_once(&c);
        poll(NULL, 0, 1);
    }
    assert_int_equal(sx.cancels, 1);
    assert_true(clock_now_ns() - t0 >= 1900000000LL); /* not before the timeout */
    pump_until(&c, &r->closed, 2000);
    assert_true(r->got_rst);
    assert_int_equal(limit_count("stream_stall"), 1);
    client_close(&c);
    /* HTTP/1.1: more than the socket buffers hold, never read */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int small = 4096;
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)server_port(s, 0)),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
    const char req[] = "POST /stream HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nhold";
    assert_int_equal(write(fd, req, sizeof req - 1), (ssize_t)(sizeof req - 1));
    for (int i = 0; i < 2000 && !sx.held; i++) {
        event_base_loop(server_base(s), EVLOOP_NONBLOCK);
        poll(NULL, 0, 1);
    }
    assert_non_null(sx.held);
    static char huge[16 << 20];
    memset(huge, 'z', sizeof huge);
    assert_int_equal(http_stream_write(sx.held, huge, sizeof huge, 3, 1), 0);
    t0 = clock_now_ns();
    until = t0 + 10000000000LL;
    while (sx.cancels == 1 && clock_now_ns() < until) {
        event_base_loop(server_base(s), EVLOOP_NONBLOCK);
        poll(NULL, 0, 1);
    }
    assert_int_equal(sx.cancels, 2);
    assert_true(clock_now_ns() - t0 >= 1900000000LL);
    assert_int_equal(limit_count("stream_stall"), 2);
    close(fd);
    stop_server(s);
}

int main(void)
{
    evthread_use_pthreads(); /* the compression job wakes the loop from its thread */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unary_echo),
        cmocka_unit_test(test_message_split_across_data_frames),
        cmocka_unit_test(test_unknown_method_trailers_only),
        cmocka_unit_test(test_http_errors),
        cmocka_unit_test(test_message_limits_and_counts),
        cmocka_unit_test(test_gzip_both_directions),
        cmocka_unit_test(test_status_message_percent_encoded),
        cmocka_unit_test(test_server_and_bidi_streaming),
        cmocka_unit_test(test_deadline_cancels_work),
        cmocka_unit_test(test_core_failure_tells_streaming_handler),
        cmocka_unit_test(test_client_cancel_stops_work),
        cmocka_unit_test(test_connection_loss_cancels_work),
        cmocka_unit_test(test_settings_and_ping_strikes),
        cmocka_unit_test(test_method_table),
        cmocka_unit_test(test_http1_pipelining_and_limits),
        cmocka_unit_test(test_large_gzip_scrape_off_loop),
        cmocka_unit_test(test_route_table),
        cmocka_unit_test(test_counted_send_reports_when_taken),
        cmocka_unit_test(test_one_flush_per_connection_per_batch),
        cmocka_unit_test(test_listener_scope),
        cmocka_unit_test(test_h2spec_3_5_preface),
        cmocka_unit_test(test_h2spec_5_1_1_stream_ids),
        cmocka_unit_test(test_h2spec_6_10_continuation),
        cmocka_unit_test(test_header_list_limit_answered),
        cmocka_unit_test(test_ping_flood_one_goaway),
        cmocka_unit_test(test_request_wire_checks),
        cmocka_unit_test(test_input_held_while_output_congested),
        cmocka_unit_test(test_stalled_and_paused_streams),
        cmocka_unit_test(test_pending_input_budget),
        cmocka_unit_test(test_slow_request_message),
        cmocka_unit_test(test_idle_timer_ignores_pings),
        cmocka_unit_test(test_http1_trickles_time_out),
        cmocka_unit_test(test_http1_slow_body),
        cmocka_unit_test(test_http1_strictness),
        cmocka_unit_test(test_stream_rate_limit),
        cmocka_unit_test(test_connection_and_process_output_bounds),
        cmocka_unit_test(test_stream_http1),
        cmocka_unit_test(test_stream_h2),
        cmocka_unit_test(test_stalled_streamed_answers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
