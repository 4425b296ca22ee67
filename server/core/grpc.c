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
    if (c->hbody) evbuffer_free(c->hbody);
    if (c->deadline_ev) event_free(c->deadline_ev);
    grpc_deframer_dispose(&c->deframer);
    if (c->in_held) evbuffer_free(c->in_held);
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
    const conn_t *k = c->conn;
    return grpc_call_pending_bytes(c) > CALL_OUT_HIGH ||
           (k && (k->read_paused || k->gated || k->srv->gated));
}

int call_input_gated(const grpc_call_t *c)
{
    return c->congested > 0 || grpc_call_congested(c);
}

/* The connection's sums follow the call's queued output (every change goes through here). */
static void out_sync(grpc_call_t *c)
{
    size_t now = evbuffer_get_length(c->out);
    if (now == c->out_counted || !c->conn) return;
    if (c->out_counted == 0) c->out_since_ns = clock_now_ns(); /* starts waiting to be taken */
    long delta = (long)now - (long)c->out_counted;
    c->out_counted = now;
    conn_out_delta(c->conn, delta);
}

/* Unfinished input: the message being assembled counts against --max-pending-input. */
static void in_sync(grpc_call_t *c)
{
    size_t now = grpc_deframer_held(&c->deframer);
    if (now && !c->msg_start_ns) c->msg_start_ns = clock_now_ns();
    if (!now) c->msg_start_ns = 0;
    if (now == c->in_charged || !c->conn) return;
    long delta = (long)now - (long)c->in_charged;
    c->in_charged = now;
    conn_in_delta(c->conn, delta, 0);
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
    if (c->trailers_submitted) { /* aborted: the trailers went out around the data (call_abort) */
        *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
        return 0;
    }
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
        out_sync(c);
        c->out_since_ns = clock_now_ns(); /* the client takes its response: not stalled */
        if (c->hs)
            hstream_taken(c->hs, c->out_taken);
        else
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
        if (c->in_held) { /* its input waited for this: processed at the next turn */
            c->resume = 1;
            conn_schedule_input(c->conn);
        }
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
    out_sync(c);
    conn_touch(c->conn);
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

/* The call's buffers are of no more use (its stream ended, or it was aborted): the queued
 * response and the unfinished message are freed now, not when the last reference goes, and
 * held input is given back to the connection's flow-control window. */
static void release_io(grpc_call_t *c)
{
    conn_t *k = c->conn;
    evbuffer_drain(c->out, evbuffer_get_length(c->out));
    c->marks_n = 0;
    out_sync(c);
    grpc_deframer_dispose(&c->deframer);
    in_sync(c);
    if (c->in_held) {
        size_t n = evbuffer_get_length(c->in_held);
        if (n && k && k->h2) nghttp2_session_consume_connection(k->h2, n);
        if (k) conn_in_delta(k, 0, -(long)n);
        evbuffer_free(c->in_held);
        c->in_held = NULL;
    }
    c->close_held = 0;
}

void call_abort(grpc_call_t *c, grpc_status_t status, const char *msg)
{
    if (c->finished || c->stream_closed) return;
    release_io(c);
    nghttp2_session *s = session_of(c);
    if (c->hs) { /* a streamed HTTP answer: its status went out with its head, so a reset */
        if (s) nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, c->stream_id, NGHTTP2_CANCEL);
        conn_flush(c->conn);
        return;
    }
    if (s && c->response_started && !c->trailers_submitted && !c->http_status &&
        nghttp2_session_get_stream_remote_window_size(s, c->stream_id) <= 0) {
        /* The client's window is shut: nghttp2 would not ask for the (now empty) data again, so
         * the trailers that say why go now, HEADERS being outside flow control. */
        c->rst_after_trailers = NGHTTP2_CANCEL;
        finish(c, status, msg);
        char st[4], m[1024];
        nghttp2_nv nva[2];
        size_t n = status_nv(c, nva, st, m);
        c->trailers_submitted = nghttp2_submit_trailer(s, c->stream_id, nva, n) == 0;
        notify_cancel(c);
        conn_flush(c->conn);
        return;
    }
    call_cancel(c, status, msg);
}

void call_stream_closed(grpc_call_t *c, uint32_t error_code)
{
    if (c->hs) { /* a streamed HTTP answer whose client went away (or reset the stream) */
        struct http_stream *st = c->hs;
        c->hs = NULL;
        hstream_gone(st);
    }
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
    release_io(c);
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
    out_sync(c);
    c->finished = 1;
    submit_headers(c, 0);
}

/* A plain HTTP response (GET /live, /health, /metrics) on an h2 stream. */
static void submit_http(grpc_call_t *c, http_response_t *r)
{
    c->http_status = r->status;
    c->finished = 1;
    if (strcmp(c->http_method, "HEAD")) evbuffer_add(c->out, r->body, r->len);
    out_sync(c);
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

/* ---- streamed HTTP answers on an h2 stream (hstream.c) ---- */

int call_http_head(grpc_call_t *c, struct http_stream *st, int status, const char *content_type,
                   const http_header_t *hdrs, size_t n, int64_t length)
{
    nghttp2_session *ss = session_of(c);
    if (!ss) return -EPIPE;
    char st_text[4], len[24];
    snprintf(st_text, sizeof st_text, "%d", status);
    nghttp2_nv nva[24];
    size_t k = 0;
    nva[k++] = (nghttp2_nv)NV(":status", st_text);
    nva[k++] = (nghttp2_nv)NV("content-type", content_type);
    if (length >= 0) {
        snprintf(len, sizeof len, "%lld", (long long)length);
        nva[k++] = (nghttp2_nv)NV("content-length", len);
    }
    nva[k++] = (nghttp2_nv)NV("x-request-id", st->request_id);
    nva[k++] = (nghttp2_nv)NV("cache-control", "no-store");
    for (size_t i = 0; i < n && k < sizeof nva / sizeof nva[0]; i++)
        nva[k++] = (nghttp2_nv){(uint8_t *)hdrs[i].name, (uint8_t *)hdrs[i].value,
                                strlen(hdrs[i].name), strlen(hdrs[i].value), NGHTTP2_NV_FLAG_NONE};
    c->http_status = status;
    c->response_started = 1;
    nghttp2_data_provider prd = {.source.ptr = c, .read_callback = read_cb};
    if (nghttp2_submit_response(ss, c->stream_id, nva, k, &prd)) return -EPIPE;
    conn_flush(c->conn);
    return 0;
}

int call_http_body(grpc_call_t *c, const void *data, size_t len, uint64_t *end)
{
    if (!session_of(c)) return -EPIPE;
    if (evbuffer_add(c->out, data, len)) return -ENOMEM;
    c->bytes_out += len;
    *end = c->out_taken + evbuffer_get_length(c->out);
    resume(c);
    return 0;
}

void call_http_end(grpc_call_t *c, struct http_stream *st)
{
    c->hs = NULL;
    st->call = NULL;
    http_stream_unref(st); /* the transport's */
    c->finished = 1;
    nghttp2_session *s = session_of(c);
    if (s) nghttp2_session_resume_data(s, c->stream_id);
    conn_flush(c->conn);
}

/* A request to a streaming route over h2: the body arrives in DATA, the handler runs at
 * END_STREAM (call_remote_closed). Returns 1 when c became one, 0 otherwise. */
static int http_stream_begin(grpc_call_t *c, server_t *s)
{
    char path[512];
    size_t pl = strcspn(c->path, "?#");
    if (pl >= sizeof path) pl = sizeof path - 1;
    memcpy(path, c->path, pl);
    path[pl] = 0;
    const http_route_t *rt = http_route_lookup(s, c->conn->lst, path);
    if (!rt || !rt->stream || !(http_method_bit(c->http_method) & rt->methods)) return 0;
    c->is_http = 1;
    const char *cl = grpc_call_header(c, "content-length");
    if (cl && strtoull(cl, NULL, 10) > rt->max_body) {
        char msg[96];
        http_response_t r;
        snprintf(msg, sizeof msg, "request body larger than %zu bytes (--max-request-body)",
                 rt->max_body);
        http_route_error(rt, 413, msg, &r);
        submit_http(c, &r);
        http_response_dispose(&r);
        return 1;
    }
    c->hroute = rt;
    c->hbody = evbuffer_new();
    if (!c->hbody) http_error(c, 503, "out of memory");
    return 1;
}

/* The whole request has come: the route's handler runs. */
static void http_stream_dispatch(grpc_call_t *c)
{
    server_t *s = c->conn->srv;
    const http_route_t *rt = c->hroute;
    http_stream_t *st =
        hstream_new(s, rt, c->http_method, c->path, grpc_call_header(c, "x-request-id"));
    if (!st) {
        http_error(c, 503, "out of memory");
        return;
    }
    st->call = c;
    c->hs = st;
    size_t n = evbuffer_get_length(c->hbody);
    char *body = arena_alloc(&c->arena, n + 1);
    if (!body) {
        c->hs = NULL;
        st->call = NULL;
        http_stream_unref(st);
        http_error(c, 503, "out of memory");
        return;
    }
    evbuffer_remove(c->hbody, body, n);
    body[n] = 0;
    c->bytes_in = n;
    char query[1024] = "";
    const char *q = strchr(c->path, '?');
    if (q) snprintf(query, sizeof query, "%.*s", (int)strcspn(q + 1, "#"), q + 1);
    char path[512];
    snprintf(path, sizeof path, "%.*s", (int)strcspn(c->path, "?#"), c->path);
    http_request_t req = {.method = c->http_method,
                          .path = path,
                          .query = query,
                          .accept = grpc_call_header(c, "accept"),
                          .accept_encoding = grpc_call_header(c, "accept-encoding"),
                          .peer = c->conn->peer,
                          .content_type = c->content_type,
                          .body = body,
                          .body_len = n,
                          .http2 = 1};
    grpc_call_ref(c); /* the handler may end the answer (and the stream with it) */
    hstream_dispatch(st, &req);
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
    if (c->headers_over) {
        /* Answered as gRPC servers do, not with a reset: 431 to plain HTTP, RESOURCE_EXHAUSTED
         * that names the limit to gRPC (the request itself is not looked at). */
        char msg[160];
        snprintf(msg, sizeof msg,
                 "request headers of %zu bytes exceed --max-header-list-size (%lld bytes)",
                 c->header_bytes, (long long)s->cfg->max_header_list_size);
        server_count_limit(s, "header_list");
        if (is_grpc_ct)
            finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, msg);
        else
            http_error(c, 431, msg);
        return;
    }
    if (!c->path) {
        http_error(c, 400, "missing :path");
        return;
    }
    if (!is_grpc_ct && c->http_method && http_stream_begin(c, s)) return;
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

/* protobuf-c's allocator with a budget: a request may decode to at most DECODE_FACTOR times
 * its size (plus a little), so no message amplifies into the server's memory (items 3 and 5 of
 * issue 13; unknown fields are already dropped on the wire). */
#define DECODE_FACTOR 8
#define DECODE_SLACK (64u << 10)
typedef struct budget_alloc {
    ProtobufCAllocator pb;
    ProtobufCAllocator *base; /* NULL: malloc */
    size_t left;
    int over;
} budget_alloc_t;

static void *budget_get(void *ud, size_t n)
{
    budget_alloc_t *b = ud;
    if (n > b->left) {
        b->over = 1;
        return NULL;
    }
    b->left -= n;
    return b->base ? b->base->alloc(b->base->allocator_data, n) : malloc(n);
}

static void budget_put(void *ud, void *p)
{
    budget_alloc_t *b = ud;
    if (b->base)
        b->base->free(b->base->allocator_data, p);
    else
        free(p);
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
    conn_touch(c->conn);
    server_count_msg(s, c->method, 0);
    int streaming_in =
        c->method->kind == GRPC_CLIENT_STREAMING || c->method->kind == GRPC_BIDI_STREAMING;
    if (!streaming_in && c->msgs_received > 1) {
        free(plain);
        fail(c, GRPC_STATUS_UNIMPLEMENTED, "more than one request message for a unary request");
        return -1;
    }
    /* On the wire first: strings must be UTF-8 without NUL (protobuf-c would cut them), the
     * row's field limits hold, unknown fields are dropped (protobuf-c would keep them all). A
     * streaming method with on_invalid gets an invalid message decoded all the same, so one bad
     * request fails alone and the stream goes on. */
    grpc_wire_result_t wr;
    unsigned char *known = NULL;
    size_t known_len = 0;
    int rc =
        grpc_wire_check(c->method->request, c->method->limits, data, len, &known, &known_len, &wr);
    int invalid = rc == -EINVAL && wr.status == GRPC_STATUS_INVALID_ARGUMENT;
    if (invalid) server_count_limit(s, "field_limit");
    if (rc && !(invalid && streaming_in && c->method->on_invalid)) {
        free(plain);
        if (rc == -ENOMEM)
            fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        else
            fail(c, wr.status, wr.msg);
        return -1;
    }
    if (known) {
        data = known;
        len = known_len;
    }
    /* Streaming requests can be long: decode each into the heap and free it after the
     * handler returns, so the arena does not grow with the stream. */
    budget_alloc_t ba = {.pb = {budget_get, budget_put, NULL},
                         .base = streaming_in ? NULL : &c->arena.pb,
                         .left = len * DECODE_FACTOR + DECODE_SLACK};
    ba.pb.allocator_data = &ba;
    ProtobufCMessage *msg = protobuf_c_message_unpack(c->method->request, &ba.pb, len, data);
    free(known);
    free(plain);
    if (!msg) {
        if (ba.over) {
            char m[160];
            snprintf(m, sizeof m,
                     "request message decodes to more than %dx its %zu bytes (too many values)",
                     DECODE_FACTOR, len);
            server_count_limit(s, "decoded_size");
            fail(c, GRPC_STATUS_RESOURCE_EXHAUSTED, m);
        } else {
            fail(c, GRPC_STATUS_INTERNAL, "failed to parse request message");
        }
        return -1;
    }
    if (!streaming_in) {
        c->unary_msg = msg; /* in the arena: freed with the call */
        return 0;
    }
    c->dispatched = 1;
    grpc_call_ref(c);
    log_set_context(c->request_id, c->trace_id, c->span_id);
    if (invalid)
        c->method->on_invalid(c, msg, wr.msg);
    else
        c->method->on_message(c, msg);
    log_set_context(NULL, NULL, NULL);
    protobuf_c_message_free_unpacked(msg, &ba.pb);
    int gone = c->finished;
    grpc_call_unref(c);
    return gone ? -1 : 0;
}

/* DATA bytes were dealt with: give them back to the client's flow-control windows. */
static void consume(grpc_call_t *c, size_t len)
{
    conn_t *k = c->conn;
    if (len && k && k->h2) nghttp2_session_consume(k->h2, c->stream_id, len);
}

/* Deframes and dispatches bytes of the call's input, then returns them to the windows. */
static void process(grpc_call_t *c, const uint8_t *data, size_t len)
{
    if (c->finished || !c->method) { /* already answered: discard */
        consume(c, len);
        return;
    }
    server_t *s = c->conn->srv;
    int st =
        grpc_deframe(&c->deframer, data, len, (size_t)s->cfg->max_recv_message_size, on_message, c);
    consume(c, len);
    if (st > 0 && !c->finished) {
        char msg[128];
        snprintf(msg, sizeof msg, "received message larger than max (%lld bytes)",
                 (long long)s->cfg->max_recv_message_size);
        fail(c, (grpc_status_t)st, st == GRPC_STATUS_RESOURCE_EXHAUSTED ? msg : "invalid message");
    }
    if (c->finished) grpc_deframer_dispose(&c->deframer);
    if (c->conn) in_sync(c);
}

int call_data(grpc_call_t *c, const uint8_t *data, size_t len)
{
    c->bytes_wire_in += len;
    if (c->hroute && c->hbody && !c->hs && !c->finished) { /* a streaming route's body */
        consume(c, len); /* bounded by the route's max_body below */
        if (evbuffer_get_length(c->hbody) + len > c->hroute->max_body) {
            char msg[96];
            http_response_t r;
            snprintf(msg, sizeof msg, "request body larger than %zu bytes (--max-request-body)",
                     c->hroute->max_body);
            http_route_error(c->hroute, 413, msg, &r);
            submit_http(c, &r);
            http_response_dispose(&r);
            conn_flush(c->conn);
            return 0;
        }
        if (evbuffer_add(c->hbody, data, len)) http_error(c, 503, "out of memory");
        return 0;
    }
    if (!c->finished && c->method && (c->in_held || call_input_gated(c))) {
        /* Its output (or the connection's) waits for the client: hold the input unread and
         * unconsumed, so HTTP/2 flow control stops the client instead of our memory growing
         * with the replies it would cause. */
        if (!c->in_held && !(c->in_held = evbuffer_new())) {
            call_abort(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
            consume(c, len);
            return 0;
        }
        evbuffer_add(c->in_held, data, len);
        conn_in_delta(c->conn, 0, (long)len);
        return 0;
    }
    process(c, data, len);
    return 0;
}

void call_resume_input(grpc_call_t *c)
{
    c->resume = 0;
    while (c->in_held && c->conn && !c->stream_closed && !call_input_gated(c)) {
        size_t n = evbuffer_get_length(c->in_held);
        if (n == 0) break;
        if (n > 16384) n = 16384;
        unsigned char *p = evbuffer_pullup(c->in_held, (ev_ssize_t)n);
        if (!p) break;
        process(c, p, n);
        if (!c->in_held) break; /* aborted meanwhile: the rest was given back */
        evbuffer_drain(c->in_held, n);
        conn_in_delta(c->conn, 0, -(long)n);
    }
    if (c->in_held && evbuffer_get_length(c->in_held) == 0) {
        evbuffer_free(c->in_held);
        c->in_held = NULL;
        if (c->close_held) {
            c->close_held = 0;
            call_remote_closed(c);
        }
    }
}

void call_remote_closed(grpc_call_t *c)
{
    c->remote_closed = 1;
    if (c->hroute && c->hbody && !c->hs && !c->finished) {
        http_stream_dispatch(c);
        return;
    }
    if (c->in_held && !c->finished) { /* the half-close comes after the held messages */
        c->close_held = 1;
        return;
    }
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
