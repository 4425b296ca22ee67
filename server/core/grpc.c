/* The gRPC layer: request validation, message framing, compression, deadlines, the call
 * lifecycle and the response (headers, messages, trailers) on top of an nghttp2 stream. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server/core/conn.h"
#include "server/base/log.h"
#include "server/core/trace.h"

static const char *status_names[GRPC_STATUS_COUNT] = {
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
};

const char *grpc_status_name(grpc_status_t s)
{
    return (unsigned)s < GRPC_STATUS_COUNT ? status_names[s] : "UNKNOWN";
}

int grpc_timeout_parse(const char *v, int64_t *out)
{
    size_t n = v ? strlen(v) : 0;
    if (n < 2 || n > 9) return -EINVAL; /* 1-8 digits and a unit */
    int64_t x = 0;
    for (size_t i = 0; i + 1 < n; i++) {
        if (v[i] < '0' || v[i] > '9') return -EINVAL;
        x = x * 10 + (v[i] - '0');
    }
    int64_t mult;
    switch (v[n - 1]) {
    case 'H':
        mult = 3600LL * 1000000000LL;
        break;
    case 'M':
        mult = 60LL * 1000000000LL;
        break;
    case 'S':
        mult = 1000000000LL;
        break;
    case 'm':
        mult = 1000000LL;
        break;
    case 'u':
        mult = 1000LL;
        break;
    case 'n':
        mult = 1;
        break;
    default:
        return -EINVAL;
    }
    /* 99999999 hours overflows int64 ns: clamp to "practically never". */
    *out = x > INT64_MAX / mult ? INT64_MAX : x * mult;
    return 0;
}

size_t grpc_percent_encode(const char *in, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p; p++) {
        if (*p >= 0x20 && *p <= 0x7e && *p != '%') {
            if (n + 1 < cap) out[n] = (char)*p;
            n++;
        } else {
            if (n + 3 < cap) {
                out[n] = '%';
                out[n + 1] = hex[*p >> 4];
                out[n + 2] = hex[*p & 15];
            }
            n += 3;
        }
    }
    if (cap) out[n < cap ? n : cap - 1] = 0;
    return n;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

size_t grpc_percent_decode(const char *in, char *out, size_t cap)
{
    size_t n = 0;
    for (const char *p = in; *p; p++) {
        char c = *p;
        if (c == '%' && hexval(p[1]) >= 0 && hexval(p[2]) >= 0) {
            c = (char)(hexval(p[1]) << 4 | hexval(p[2]));
            p += 2;
        }
        if (n + 1 < cap) out[n] = c;
        n++;
    }
    if (cap) out[n < cap ? n : cap - 1] = 0;
    return n;
}

/* ---- call accessors ---- */
void grpc_call_ref(grpc_call_t *c)
{
    c->refs++;
}

static void call_free(grpc_call_t *c)
{
    if (c->deadline_ev) event_free(c->deadline_ev);
    grpc_deframer_dispose(&c->deframer);
    if (c->out) evbuffer_free(c->out);
    free(c->marks);
    free(c->status_msg);
    arena_dispose(&c->arena);
    free(c);
}

void grpc_call_unref(grpc_call_t *c)
{
    if (--c->refs == 0) call_free(c);
}

int grpc_call_active(const grpc_call_t *c)
{
    return !c->finished && !c->cancelled && !c->stream_closed;
}

void *grpc_call_arg(const grpc_call_t *c)
{
    return c->method ? c->method->arg : NULL;
}

const grpc_method_t *grpc_call_method(const grpc_call_t *c)
{
    return c->method;
}

void grpc_call_set_data(grpc_call_t *c, void *d)
{
    c->data = d;
}

void *grpc_call_data(const grpc_call_t *c)
{
    return c->data;
}

ProtobufCAllocator *grpc_call_allocator(grpc_call_t *c)
{
    return &c->arena.pb;
}

const char *grpc_call_header(const grpc_call_t *c, const char *name)
{
    for (int i = 0; i < c->nhdr; i++)
        if (!strcmp(c->hdr_name[i], name)) return c->hdr_value[i];
    return NULL;
}

int64_t grpc_call_deadline(const grpc_call_t *c)
{
    return c->deadline_ns;
}

size_t grpc_call_pending_bytes(const grpc_call_t *c)
{
    return c->out ? evbuffer_get_length(c->out) : 0;
}

int grpc_call_congested(const grpc_call_t *c)
{
    return grpc_call_pending_bytes(c) > CALL_OUT_HIGH || (c->conn && c->conn->read_paused);
}

server_t *grpc_call_server(const grpc_call_t *c)
{
    return c->conn ? c->conn->srv : NULL;
}

const char *grpc_call_request_id(const grpc_call_t *c)
{
    return c->request_id;
}

/* ---- responses ---- */
#define NV(n, v)                                                                                   \
    {                                                                                              \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NO_COPY_NAME     \
    }

static nghttp2_session *session_of(grpc_call_t *c)
{
    return c->conn && !c->stream_closed ? c->conn->h2 : NULL;
}

static ssize_t read_cb(nghttp2_session *s, int32_t id, uint8_t *buf, size_t len, uint32_t *flags,
                       nghttp2_data_source *src, void *ud)
{
    (void)s;
    (void)id;
    (void)ud;
    return call_read_data(src->ptr, buf, len, flags);
}

/* grpc-status and (percent-encoded) grpc-message into nva; status and msg are the caller's
 * buffers (4 and 1024 bytes), which must outlive the submit. Returns the entries added. */
static size_t status_nv(const grpc_call_t *c, nghttp2_nv *nva, char *status, char *msg)
{
    size_t n = 0;
    snprintf(status, 4, "%d", (int)c->status);
    nva[n++] = (nghttp2_nv)NV("grpc-status", status);
    if (c->status_msg && *c->status_msg) {
        grpc_percent_encode(c->status_msg, msg, 1024);
        nva[n++] = (nghttp2_nv)NV("grpc-message", msg);
    }
    return n;
}

/* Response headers; with no data provider this is a Trailers-Only response. */
static int submit_headers(grpc_call_t *c, int trailers_only)
{
    nghttp2_session *s = session_of(c);
    if (!s) return -EPIPE;
    char status[4], msg[1024];
    nghttp2_nv nva[8];
    size_t n = 0;
    if (c->http_status) {
        snprintf(status, sizeof status, "%d", c->http_status);
        nva[n++] = (nghttp2_nv)NV(":status", status);
        nva[n++] = (nghttp2_nv)NV("content-type", "text/plain");
        nghttp2_data_provider prd = {.source.ptr = c, .read_callback = read_cb};
        c->response_started = 1;
        return nghttp2_submit_response(s, c->stream_id, nva, n, &prd) ? -EPIPE : 0;
    }
    nva[n++] = (nghttp2_nv)NV(":status", "200");
    nva[n++] = (nghttp2_nv)NV("content-type", "application/grpc");
    if (c->resp_enc == ENC_GZIP) nva[n++] = (nghttp2_nv)NV("grpc-encoding", "gzip");
    nva[n++] = (nghttp2_nv)NV("grpc-accept-encoding", "identity,gzip");
    c->response_started = 1;
    if (trailers_only) {
        n += status_nv(c, nva + n, status, msg);
        c->trailers_submitted = 1;
        return nghttp2_submit_response(s, c->stream_id, nva, n, NULL) ? -EPIPE : 0;
    }
    nghttp2_data_provider prd = {.source.ptr = c, .read_callback = read_cb};
    return nghttp2_submit_response(s, c->stream_id, nva, n, &prd) ? -EPIPE : 0;
}

/* ---- counted sends: where each producer's units end in the output ---- */

/* Room for one more mark, so a send never queues a message it cannot account for. */
static int marks_reserve(grpc_call_t *c)
{
    if (c->marks_n < c->marks_cap) return 0;
    size_t cap = c->marks_cap ? c->marks_cap * 2 : 8;
    struct taken_mark *m = malloc(cap * sizeof *m);
    if (!m) return -ENOMEM;
    for (size_t i = 0; i < c->marks_n; i++)
        m[i] = c->marks[(c->marks_head + i) % c->marks_cap];
    free(c->marks);
    c->marks = m;
    c->marks_cap = cap;
    c->marks_head = 0;
    return 0;
}

/* The message just queued ends where the output ends now; the same tag's marks merge. */
static void mark_add(grpc_call_t *c, uint64_t tag, uint32_t units)
{
    uint64_t end = c->out_taken + evbuffer_get_length(c->out);
    if (c->marks_n) {
        struct taken_mark *last = &c->marks[(c->marks_head + c->marks_n - 1) % c->marks_cap];
        if (last->tag == tag) {
            last->end = end;
            last->units += units;
            return;
        }
    }
    c->marks[(c->marks_head + c->marks_n) % c->marks_cap] = (struct taken_mark){end, tag, units};
    c->marks_n++;
}

/* nghttp2 took bytes: tell the producer about every message now wholly taken. */
static void report_taken(grpc_call_t *c)
{
    while (c->marks_n) {
        struct taken_mark m = c->marks[c->marks_head];
        if (m.end > c->out_taken) break;
        c->marks_head = (c->marks_head + 1) % c->marks_cap;
        c->marks_n--;
        if (c->method && c->method->on_taken && !c->cancelled)
            c->method->on_taken(c, m.tag, m.units);
    }
}

ssize_t call_read_data(grpc_call_t *c, uint8_t *buf, size_t len, uint32_t *flags)
{
    size_t have = evbuffer_get_length(c->out);
    if (have == 0) {
        if (!c->finished) return NGHTTP2_ERR_DEFERRED;
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (c->http_status || c->is_http) return 0; /* plain HTTP: END_STREAM on the last DATA */
        *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        char status[4], msg[1024];
        nghttp2_nv nva[2];
        size_t n = status_nv(c, nva, status, msg);
        c->trailers_submitted = 1;
        if (nghttp2_submit_trailer(c->conn->h2, c->stream_id, nva, n))
            return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
        return 0;
    }
    int n = evbuffer_remove(c->out, buf, len);
    if (n > 0) {
        c->out_taken += (uint64_t)n;
        report_taken(c);
    }
    if (c->congested && evbuffer_get_length(c->out) < CALL_OUT_LOW)
        c->congested = -1; /* drain reported after send */
    return n;
}

/* Called once nghttp2 has written what we gave it; reports drain to streaming producers. */
void call_written(grpc_call_t *c)
{
    if (c->congested == -1) {
        c->congested = 0;
        if (c->method && c->method->on_drain && grpc_call_active(c) && !c->conn->read_paused)
            c->method->on_drain(c);
    }
}

static void resume(grpc_call_t *c)
{
    nghttp2_session *s = session_of(c);
    if (s) nghttp2_session_resume_data(s, c->stream_id);
    conn_flush(c->conn);
}

/* Appends one framed message. Uncompressed, it is packed straight into the call's output (one
 * copy, no allocation); with grpc-encoding gzip through a buffer and deflate. Returns 0 or
 * -ENOMEM; *wire gets the framed length. */
static int enqueue(grpc_call_t *c, const ProtobufCMessage *msg, size_t len, size_t *wire)
{
    if (c->resp_enc != ENC_GZIP) {
        struct evbuffer_iovec v;
        if (evbuffer_reserve_space(c->out, (ev_ssize_t)(5 + len), &v, 1) < 1) return -ENOMEM;
        unsigned char *p = v.iov_base;
        p[0] = 0;
        p[1] = (unsigned char)(len >> 24);
        p[2] = (unsigned char)(len >> 16);
        p[3] = (unsigned char)(len >> 8);
        p[4] = (unsigned char)len;
        protobuf_c_message_pack(msg, p + 5);
        v.iov_len = 5 + len;
        if (evbuffer_commit_space(c->out, &v, 1)) return -ENOMEM;
        *wire = 5 + len;
        return 0;
    }
    unsigned char *buf = malloc(len ? len : 1), *z = NULL;
    if (!buf) return -ENOMEM;
    protobuf_c_message_pack(msg, buf);
    const unsigned char *payload = buf;
    size_t plen = len;
    int compressed = 0;
    size_t zl;
    if (gzip_compress(buf, len, &z, &zl) == 0) {
        payload = z;
        plen = zl;
        compressed = 1;
    }
    unsigned char prefix[5] = {(unsigned char)compressed, (unsigned char)(plen >> 24),
                               (unsigned char)(plen >> 16), (unsigned char)(plen >> 8),
                               (unsigned char)plen};
    int rc = evbuffer_add(c->out, prefix, 5) || evbuffer_add(c->out, payload, plen) ? -ENOMEM : 0;
    free(buf);
    free(z);
    *wire = 5 + plen;
    return rc;
}

static int send_checked(grpc_call_t *c)
{
    if (!grpc_call_active(c)) return -EPIPE;
    if ((c->method->kind == GRPC_UNARY || c->method->kind == GRPC_CLIENT_STREAMING) && c->msgs_sent)
        return -EINVAL;
    return 0;
}

/* After a message was queued: counts, congestion, and HEADERS or a resumed DATA source. The
 * connection's flush may be deferred (server_flush_begin). */
static int sent(grpc_call_t *c, size_t wire)
{
    c->msgs_sent++;
    c->bytes_out += wire;
    server_count_msg(c->conn->srv, c->method, 1);
    if (evbuffer_get_length(c->out) > CALL_OUT_HIGH) c->congested = 1;
    if (!c->response_started) {
        if (submit_headers(c, 0)) return -EPIPE;
        conn_flush(c->conn);
    } else {
        resume(c);
    }
    return 0;
}

int grpc_call_send(grpc_call_t *c, const ProtobufCMessage *msg)
{
    int rc = send_checked(c);
    if (rc) return rc;
    size_t wire;
    if ((rc = enqueue(c, msg, protobuf_c_message_get_packed_size(msg), &wire))) return rc;
    return sent(c, wire);
}

int grpc_call_send_counted(grpc_call_t *c, const ProtobufCMessage *msg, uint64_t tag,
                           uint32_t units, size_t *packed)
{
    int rc = send_checked(c);
    if (rc) return rc;
    if (marks_reserve(c)) return -ENOMEM;
    size_t len = protobuf_c_message_get_packed_size(msg), wire;
    if ((rc = enqueue(c, msg, len, &wire))) return rc;
    mark_add(c, tag, units);
    if (packed) *packed = len;
    return sent(c, wire);
}

/* Ends the call: status recorded, counted once, trailers queued. */
static int finish(grpc_call_t *c, grpc_status_t status, const char *msg)
{
    if (c->finished) return -EPIPE;
    c->finished = 1;
    c->status = status;
    free(c->status_msg);
    c->status_msg = msg ? strdup(msg) : NULL;
    if (c->deadline_ev) event_del(c->deadline_ev);
    if (c->method)
        server_count_handled(c->conn->srv, c);
    else if (!c->http_status)
        access_log_call(c->conn->srv, c, (double)(clock_now_ns() - c->start_ns) / 1e9, c->status);
    if (c->stream_closed) return 0;
    if (!c->response_started) {
        int trailers_only = !c->http_status && evbuffer_get_length(c->out) == 0;
        submit_headers(c, trailers_only);
    } else {
        nghttp2_session *s = session_of(c);
        if (s) nghttp2_session_resume_data(s, c->stream_id);
    }
    return 0;
}

int grpc_call_finish(grpc_call_t *c, grpc_status_t status, const char *msg)
{
    if (c->cancelled || c->stream_closed) return -EPIPE;
    int rc = finish(c, status, msg);
    if (rc == 0) conn_flush(c->conn);
    return rc;
}

/* The handler's view ends here: tell it once, if it ever saw the call. */
static void notify_cancel(grpc_call_t *c)
{
    if (c->cancelled) return;
    c->cancelled = 1;
    if (c->dispatched && c->method && c->method->on_cancel) c->method->on_cancel(c);
}

/* The core ends a call because of what the client sent (a message that does not decode, one
 * over the limit, a stream ending inside a message). A streaming handler may hold the call
 * from earlier messages: it must hear that the call ended, as for a reset, or what it holds
 * (and the call) is never released. */
static void fail(grpc_call_t *c, grpc_status_t status, const char *msg)
{
    finish(c, status, msg);
    notify_cancel(c);
}

void call_cancel(grpc_call_t *c, grpc_status_t status, const char *why)
{
    if (c->finished || c->stream_closed) return;
    /* Trailers first, then RST_STREAM(CANCEL) once they are out (see call_trailers_sent). */
    c->rst_after_trailers = NGHTTP2_CANCEL;
    finish(c, status, why);
    notify_cancel(c);
    conn_flush(c->conn);
}

void call_trailers_sent(grpc_call_t *c)
{
    nghttp2_session *s = session_of(c);
    if (!s) return;
    if (c->rst_after_trailers >= 0)
        nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, c->stream_id,
                                  (uint32_t)c->rst_after_trailers);
    else if (!c->remote_closed) /* answered before the client finished sending: stop it (RFC
                                   9113 8.1) */
        nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, c->stream_id, NGHTTP2_NO_ERROR);
}

void call_stream_closed(grpc_call_t *c, uint32_t error_code)
{
    if (c->job) { /* the stream went away while its response was being compressed */
        offload_abandon(c->job);
        c->job = NULL;
        grpc_call_unref(c); /* the job's reference; the stream's goes below */
    }
    if (!c->finished) {
        /* Reset by the client or lost with the connection: the handler must stop. */
        c->status = GRPC_STATUS_CANCELLED;
        c->finished = 1;
        if (c->deadline_ev) event_del(c->deadline_ev);
        if (c->method)
            server_count_handled(c->conn->srv, c);
        else if (!c->http_status && !c->is_http && c->path)
            access_log_call(c->conn->srv, c, (double)(clock_now_ns() - c->start_ns) / 1e9,
                            c->status);
        log_debug("server", "stream %d closed by peer (h2 error %u)", c->stream_id, error_code);
        c->stream_closed = 1;
        notify_cancel(c);
    }
    c->stream_closed = 1;
    TAILQ_REMOVE(&c->conn->calls, c, link);
    c->conn = NULL;
    grpc_call_unref(c);
}

grpc_call_t *call_new(conn_t *conn, int32_t stream_id)
{
    grpc_call_t *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    c->conn = conn;
    c->stream_id = stream_id;
    c->refs = 1; /* the stream's */
    c->rst_after_trailers = -1;
    c->start_ns = clock_now_ns();
    arena_init(&c->arena);
    c->out = evbuffer_new();
    if (!c->out) {
        free(c);
        return NULL;
    }
    TAILQ_INSERT_TAIL(&conn->calls, c, link);
    return c;
}

static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    call_cancel(arg, GRPC_STATUS_DEADLINE_EXCEEDED, "Deadline Exceeded");
}

static grpc_enc_t parse_encoding(const char *v)
{
    if (!v || !*v || !strcasecmp(v, "identity")) return ENC_IDENTITY;
    if (!strcasecmp(v, "gzip")) return ENC_GZIP;
    return ENC_UNSUPPORTED;
}

/* Answers a non-gRPC request with an HTTP status and a short text body. */
static void http_error(grpc_call_t *c, int status, const char *text)
{
    c->http_status = status;
    evbuffer_add_printf(c->out, "%s\n", text);
    c->finished = 1;
    submit_headers(c, 0);
}

/* A plain HTTP response (GET /live, /health, /metrics) on an h2 stream. */
static void submit_http(grpc_call_t *c, http_response_t *r)
{
    c->http_status = r->status;
    c->finished = 1;
    if (strcmp(c->http_method, "HEAD")) evbuffer_add(c->out, r->body, r->len);
    nghttp2_session *ss = session_of(c);
    if (!ss) return;
    char status[4], len[24];
    snprintf(status, sizeof status, "%d", r->status);
    snprintf(len, sizeof len, "%zu", r->len);
    nghttp2_nv nva[5];
    size_t n = 0;
    nva[n++] = (nghttp2_nv)NV(":status", status);
    nva[n++] = (nghttp2_nv)NV("content-type", r->content_type);
    nva[n++] = (nghttp2_nv)NV("content-length", len);
    if (r->content_encoding) nva[n++] = (nghttp2_nv)NV("content-encoding", r->content_encoding);
    if (r->allow) nva[n++] = (nghttp2_nv)NV("allow", r->allow);
    nghttp2_data_provider prd = {.source.ptr = c, .read_callback = read_cb};
    c->response_started = 1;
    nghttp2_submit_response(ss, c->stream_id, nva, n, &prd);
}

static void http_job_done(void *owner, http_response_t *r)
{
    grpc_call_t *c = owner;
    c->job = NULL;
    submit_http(c, r);
    conn_flush(c->conn);
    grpc_call_unref(c);
}

void call_headers_done(grpc_call_t *c)
{
    server_t *s = c->conn->srv;
    const char *xr = grpc_call_header(c, "x-request-id");
    if (xr && *xr && strlen(xr) < sizeof c->request_id)
        snprintf(c->request_id, sizeof c->request_id, "%s", xr);
    else
        snprintf(c->request_id, sizeof c->request_id, "%016llx-%llx",
                 (unsigned long long)s->start_ns, (unsigned long long)++s->request_seq);
    trace_start(&s->rng, grpc_call_header(c, "traceparent"), c->trace_id, c->span_id);
    const char *ct = c->content_type;
    int is_grpc_ct = ct && !strncmp(ct, "application/grpc", 16) &&
                     (ct[16] == 0 || ct[16] == '+' || ct[16] == ';');
    if (!c->path) {
        http_error(c, 400, "missing :path");
        return;
    }
    if (!is_grpc_ct && c->http_method &&
        (!strcmp(c->http_method, "GET") || !strcmp(c->http_method, "HEAD"))) {
        /* the route table over HTTP/2: /live, /health, /metrics */
        http_response_t r;
        http_serve(s, c->conn->lst, c->http_method, c->path, grpc_call_header(c, "accept"),
                   grpc_call_header(c, "accept-encoding"), c->conn->peer, &r);
        c->is_http = 1;
        if (r.gzip_later) {
            c->job = offload_gzip(s, &r, http_job_done, c);
            if (c->job) {
                grpc_call_ref(c); /* until the job is done or abandoned */
                return;
            }
        }
        submit_http(c, &r);
        http_response_dispose(&r);
        return;
    }
    if (!c->http_method || strcmp(c->http_method, "POST")) {
        http_error(c, 405, "gRPC requires POST");
        return;
    }
    if (!is_grpc_ct) {
        http_error(c, 415, "content-type must be application/grpc");
        return;
    }
    c->method = server_find_method(s, c->path);
    const server_scope_t *scope = c->conn->lst->scope;
    int out_of_scope = c->method && !server_scope_has_service(scope, c->method->service);
    if (out_of_scope) c->method = NULL; /* as unknown here: neither counted nor dispatched */
    if (c->method) server_count_started(s, c->method);
    if (!c->te || strcmp(c->te, "trailers")) {
        finish(c, GRPC_STATUS_INTERNAL, "te: trailers is required");
        return;
    }
    if (!c->method) {
        char msg[400];
        if (out_of_scope)
            snprintf(msg, sizeof msg, "%.256s is not served on %s: use the main port", c->path,
                     scope->name);
        else
            snprintf(msg, sizeof msg, "unknown method %.256s", c->path);
        finish(c, GRPC_STATUS_UNIMPLEMENTED, msg);
        return;
    }
    c->req_enc = parse_encoding(c->encoding);
    if (c->req_enc == ENC_UNSUPPORTED) {
        char msg[200];
        snprintf(msg, sizeof msg,
                 "grpc-encoding %.100s is not supported (supported: identity,gzip)", c->encoding);
        finish(c, GRPC_STATUS_UNIMPLEMENTED, msg);
        return;
    }
    /* Compress responses when the client compressed its request and accepts gzip back. */
    if (c->req_enc == ENC_GZIP && header_list_accepts(c->accept_encoding, "gzip"))
        c->resp_enc = ENC_GZIP;
    if (c->timeout) {
        int64_t ns;
        if (grpc_timeout_parse(c->timeout, &ns)) {
            finish(c, GRPC_STATUS_INTERNAL, "malformed grpc-timeout");
            return;
        }
        int64_t now = clock_now_ns();
        c->deadline_ns = ns > INT64_MAX - now ? INT64_MAX : now + ns;
        if (ns < (int64_t)1e15) {
            c->deadline_ev = evtimer_new(s->base, deadline_cb, c);
            struct timeval tv = {(time_t)(ns / 1000000000LL),
                                 (suseconds_t)(ns % 1000000000LL / 1000)};
            if (c->deadline_ev) evtimer_add(c->deadline_ev, &tv);
        }
    }
}

static int on_message(void *arg, int compressed, const unsigned char *data, size_t len)
{
    grpc_call_t *c = arg;
    server_t *s = c->conn->srv;
    unsigned char *plain = NULL;
    if (compressed) {
        if (c->req_enc != ENC_GZIP) {
            fail(c, GRPC_STATUS_INTERNAL, "compressed message without grpc-encoding");
            return -1;
        }
        size_t pl;
        int rc = gzip_decompress(data, len, (size_t)s->cfg->max_recv_message_size, &plain, &pl);
        if (rc == -EMSGSIZE) {
            fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "decompressed message larger than max");
            return -1;
        }
        if (rc) {
            fail(c, GRPC_STATUS_INTERNAL, "failed to decompress message");
            return -1;
        }
        data = plain;
        len = pl;
    }
    c->msgs_received++;
    c->bytes_in += len;
    server_count_msg(s, c->method, 0);
    int streaming_in =
        c->method->kind == GRPC_CLIENT_STREAMING || c->method->kind == GRPC_BIDI_STREAMING;
    if (!streaming_in && c->msgs_received > 1) {
        free(plain);
        fail(c, GRPC_STATUS_UNIMPLEMENTED, "more than one request message for a unary request");
        return -1;
    }
    /* Streaming requests can be long: decode each into the heap and free it after the
     * handler returns, so the arena does not grow with the stream. */
    ProtobufCMessage *msg = protobuf_c_message_unpack(
        c->method->request, streaming_in ? NULL : &c->arena.pb, len, data);
    free(plain);
    if (!msg) {
        fail(c, GRPC_STATUS_INTERNAL, "failed to parse request message");
        return -1;
    }
    if (!streaming_in) {
        c->unary_msg = msg;
        return 0;
    }
    c->dispatched = 1;
    grpc_call_ref(c);
    log_set_context(c->request_id, c->trace_id, c->span_id);
    c->method->on_message(c, msg);
    log_set_context(NULL, NULL, NULL);
    protobuf_c_message_free_unpacked(msg, NULL);
    int gone = c->finished;
    grpc_call_unref(c);
    return gone ? -1 : 0;
}

int call_data(grpc_call_t *c, const uint8_t *data, size_t len)
{
    if (c->finished || !c->method) return 0; /* already answered: discard */
    int st = grpc_deframe(&c->deframer, data, len, (size_t)c->conn->srv->cfg->max_recv_message_size,
                          on_message, c);
    if (st > 0 && !c->finished) {
        char msg[128];
        snprintf(msg, sizeof msg, "received message larger than max (%lld bytes)",
                 (long long)c->conn->srv->cfg->max_recv_message_size);
        fail(c, (grpc_status_t)st, st == GRPC_STATUS_RESOURCE_EXHAUSTED ? msg : "invalid message");
    }
    return 0;
}

void call_remote_closed(grpc_call_t *c)
{
    c->remote_closed = 1;
    if (c->finished || !c->method) return;
    if (grpc_deframer_partial(&c->deframer)) {
        fail(c, GRPC_STATUS_INTERNAL, "stream ended inside a message");
        return;
    }
    int streaming_in =
        c->method->kind == GRPC_CLIENT_STREAMING || c->method->kind == GRPC_BIDI_STREAMING;
    log_set_context(c->request_id, c->trace_id, c->span_id);
    if (streaming_in) {
        c->dispatched = 1;
        if (c->method->on_half_close) c->method->on_half_close(c);
        log_set_context(NULL, NULL, NULL);
        return;
    }
    if (c->msgs_received != 1) {
        log_set_context(NULL, NULL, NULL);
        finish(c, GRPC_STATUS_UNIMPLEMENTED,
               "expected exactly one request message for a unary request");
        return;
    }
    c->dispatched = 1;
    c->method->on_message(c, c->unary_msg);
    log_set_context(NULL, NULL, NULL);
}
