/* Streamed HTTP answers (core/http.h): one object per request to a streaming route, whichever
 * transport carries it. The transports do the writing (http1.c: chunked on the connection;
 * grpc.c: DATA on the HTTP/2 stream) and report here how far the client has taken the bytes
 * and when the client went away. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/base/log.h"
#include "server/core/conn.h"

/* A request id a client gives is echoed in a header and written to the log: printable ASCII
 * only, and short. */
#define MAX_REQUEST_ID 64

static int request_id_ok(const char *v)
{
    size_t n = v ? strlen(v) : 0;
    if (n == 0 || n > MAX_REQUEST_ID) return 0;
    for (size_t i = 0; i < n; i++)
        if (v[i] < 0x21 || v[i] > 0x7e) return 0;
    return 1;
}

http_stream_t *hstream_new(server_t *s, const http_route_t *route, const char *method,
                           const char *path, const char *request_id)
{
    http_stream_t *st = calloc(1, sizeof *st);
    if (!st) return NULL;
    st->refs = 1; /* the transport's */
    st->srv = s;
    st->route = route;
    st->start_ns = clock_now_ns();
    snprintf(st->method, sizeof st->method, "%s", method);
    snprintf(st->path, sizeof st->path, "%s", path);
    if (request_id_ok(request_id))
        snprintf(st->request_id, sizeof st->request_id, "%s", request_id);
    else
        snprintf(st->request_id, sizeof st->request_id, "%016llx-%llx",
                 (unsigned long long)s->start_ns, (unsigned long long)++s->request_seq);
    st->head_only = !strcmp(method, "HEAD");
    return st;
}

void http_stream_ref(http_stream_t *st)
{
    st->refs++;
}

void http_stream_unref(http_stream_t *st)
{
    if (--st->refs > 0) return;
    free(st->marks);
    free(st);
}

int http_stream_active(const http_stream_t *st)
{
    return !st->ended && !st->gone;
}

void http_stream_set_data(http_stream_t *st, void *data)
{
    st->data = data;
}

void *http_stream_data(const http_stream_t *st)
{
    return st->data;
}

const char *http_stream_request_id(const http_stream_t *st)
{
    return st->request_id;
}

server_t *http_stream_server(const http_stream_t *st)
{
    return st->srv;
}

static void log_done(http_stream_t *st, int status)
{
    access_log_http(st->srv, st->method, st->path, status,
                    (double)(clock_now_ns() - st->start_ns) / 1e9, st->bytes_in, st->bytes_out,
                    st->peer, st->request_id);
}

void hstream_dispatch(http_stream_t *st, http_request_t *req)
{
    st->bytes_in = req->body_len;
    snprintf(st->peer, sizeof st->peer, "%s", req->peer ? req->peer : "");
    req->request_id = st->request_id;
    st->dispatched = 1;
    http_stream_ref(st); /* the handler may end or drop it during the call */
    log_set_context(st->request_id, NULL, NULL);
    st->route->stream(st->route->arg, st, req);
    log_set_context(NULL, NULL, NULL);
    http_stream_unref(st);
}

void hstream_gone(http_stream_t *st)
{
    if (st->gone) return;
    st->gone = 1;
    st->conn = NULL;
    st->call = NULL;
    if (!st->ended) {
        log_done(st, 499); /* nginx's "client closed request" */
        if (st->dispatched && st->route->on_cancel) st->route->on_cancel(st->route->arg, st);
    }
    http_stream_unref(st); /* the transport's */
}

/* ---- where each tag's units end in the answer's bytes ---- */

static int marks_reserve(http_stream_t *st)
{
    if (st->marks_n < st->marks_cap) return 0;
    size_t cap = st->marks_cap ? st->marks_cap * 2 : 8;
    struct taken_mark *m = malloc(cap * sizeof *m);
    if (!m) return -ENOMEM;
    for (size_t i = 0; i < st->marks_n; i++)
        m[i] = st->marks[(st->marks_head + i) % st->marks_cap];
    free(st->marks);
    st->marks = m;
    st->marks_cap = cap;
    st->marks_head = 0;
    return 0;
}

static void mark_add(http_stream_t *st, uint64_t end, uint64_t tag, uint32_t units)
{
    if (st->marks_n) {
        struct taken_mark *last = &st->marks[(st->marks_head + st->marks_n - 1) % st->marks_cap];
        if (last->tag == tag) {
            last->end = end;
            last->units += units;
            return;
        }
    }
    st->marks[(st->marks_head + st->marks_n) % st->marks_cap] =
        (struct taken_mark){end, tag, units};
    st->marks_n++;
}

void hstream_taken(http_stream_t *st, uint64_t pos)
{
    while (st->marks_n && !st->gone) {
        struct taken_mark m = st->marks[st->marks_head];
        if (m.end > pos) break;
        st->marks_head = (st->marks_head + 1) % st->marks_cap;
        st->marks_n--;
        if (m.units && st->route->on_taken) st->route->on_taken(st->route->arg, st, m.tag, m.units);
    }
}

/* ---- the answer ---- */

int http_stream_start(http_stream_t *st, int status, const char *content_type,
                      const http_header_t *hdrs, size_t n_hdrs)
{
    if (st->gone || st->ended || st->started) return -EPIPE;
    st->started = 1;
    st->status = status;
    if (st->call) return call_http_head(st->call, st, status, content_type, hdrs, n_hdrs, -1);
    return http1_stream_head(st->conn, st, status, content_type, hdrs, n_hdrs, -1);
}

int http_stream_write(http_stream_t *st, const void *data, size_t len, uint64_t tag, uint32_t units)
{
    if (st->gone || st->ended || !st->started) return -EPIPE;
    if (units && marks_reserve(st)) return -ENOMEM;
    if (st->head_only || len == 0) { /* nothing goes out: taken at once */
        if (units && st->route->on_taken) st->route->on_taken(st->route->arg, st, tag, units);
        return 0;
    }
    uint64_t end;
    int rc = st->call ? call_http_body(st->call, data, len, &end)
                      : http1_stream_body(st->conn, st, data, len, &end);
    if (rc) return rc;
    st->bytes_out += len;
    if (units) mark_add(st, end, tag, units);
    if (!st->call) hstream_taken(st, st->taken); /* HTTP/1.1 may have sent it at once */
    return 0;
}

int http_stream_end(http_stream_t *st)
{
    if (st->gone || st->ended || !st->started) return -EPIPE;
    st->ended = 1;
    log_done(st, st->status);
    if (st->call)
        call_http_end(st->call, st);
    else
        http1_stream_end(st->conn, st);
    return 0;
}

int http_stream_reply(http_stream_t *st, int status, const char *content_type,
                      const http_header_t *hdrs, size_t n_hdrs, const char *body, size_t len)
{
    if (st->gone || st->ended || st->started) return -EPIPE;
    st->started = 1;
    st->status = status;
    int rc =
        st->call
            ? call_http_head(st->call, st, status, content_type, hdrs, n_hdrs, (int64_t)len)
            : http1_stream_head(st->conn, st, status, content_type, hdrs, n_hdrs, (int64_t)len);
    uint64_t end;
    if (!rc && len && !st->head_only)
        rc = st->call ? call_http_body(st->call, body, len, &end)
                      : http1_stream_body(st->conn, st, body, len, &end);
    if (!rc) st->bytes_out += st->head_only ? 0 : len;
    if (!st->gone) {
        st->ended = 1;
        log_done(st, status);
        if (st->call)
            call_http_end(st->call, st);
        else
            http1_stream_end(st->conn, st);
    }
    return rc;
}
