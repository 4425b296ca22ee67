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
static grpc_method_t rows[] = {
    ROW("Echo", .on_cancel = NULL, GRPC_UNARY, echo_msg),
    ROW("Stream", .on_cancel = NULL, GRPC_SERVER_STREAMING, stream3),
    ROW("Bidi", .on_half_close = bidi_done, GRPC_BIDI_STREAMING, echo_msg),
    ROW("Hang", .on_cancel = hang_cancel, GRPC_UNARY, hang),
    ROW("Hold", .on_cancel = hold_cancel, GRPC_SERVER_STREAMING, hold),
    ROW("HangBidi", .on_cancel = hang_cancel, GRPC_BIDI_STREAMING, hang),
};

/* ---- client ---- */
typedef struct result {
    int32_t id;
    int http_status;
    int grpc_status;
    char grpc_message[256], content_type[64], accept_enc[64], grpc_enc[32];
    unsigned char data[8192];
    size_t dlen;
    int header_blocks;
    int closed;
    uint32_t rst;
    int got_rst;
} result_t;

typedef struct client {
    int fd;
    nghttp2_session *s;
    server_t *srv;
    result_t res[8];
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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
