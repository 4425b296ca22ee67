/* HTTP/1.1 on any listener, parsed by http-parser: keep-alive, pipelining in order,
 * header and body limits (431, 413), backpressure by pausing the parser. Requests to streaming
 * routes (core/http.h) keep their body (up to the route's limit) and are answered chunked, the
 * parser waiting until the answer ends. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server/core/conn.h"
#include "server/base/log.h"

#define MAX_BODY (64 * 1024)
/* Pipelined input kept while an answer streams; past it the connection is not read until the
 * answer ends. */
#define MAX_HELD_INPUT (256 * 1024)

static conn_t *conn_of(http_parser *p)
{
    return p->data;
}

static int on_begin(http_parser *p)
{
    http1_t *h = conn_of(p)->http1;
    h->url_len = 0;
    h->url[0] = 0;
    h->header_bytes = 0;
    h->body_bytes = 0;
    h->accept[0] = h->accept_encoding[0] = h->x_request_id[0] = h->content_type[0] = 0;
    h->route = NULL;
    h->expect_continue = 0;
    h->body_limit = MAX_BODY;
    h->body_len = 0;
    h->in_message = 1;
    if (!h->head_start_ns) h->head_start_ns = clock_now_ns();
    return 0;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
    http1_t *h = conn_of(p)->http1;
    if (h->url_len + len >= sizeof h->url) {
        h->error = 414;
        return -1;
    }
    memcpy(h->url + h->url_len, at, len);
    h->url_len += len;
    h->url[h->url_len] = 0;
    return 0;
}

static int count_header(conn_t *c, size_t len)
{
    http1_t *h = c->http1;
    h->header_bytes += len;
    if (h->header_bytes > (size_t)c->srv->cfg->max_header_list_size) {
        h->error = 431;
        return -1;
    }
    return 0;
}

static int on_field(http_parser *p, const char *at, size_t len)
{
    conn_t *c = conn_of(p);
    http1_t *h = c->http1;
    if (count_header(c, len)) return -1;
    /* RFC 9112 5.1: no whitespace between a field name and its colon ("Content-Length : 5"
     * would otherwise be another field, and its body parsed as the next request) */
    for (size_t i = 0; i < len; i++) {
        if (at[i] == ' ' || at[i] == '\t') {
            h->error = 400;
            return -1;
        }
    }
    if (h->in_value) { /* a new field starts */
        h->in_value = 0;
        h->cur_field_len = 0;
    }
    size_t n = h->cur_field_len + len < sizeof h->cur_field - 1
                   ? len
                   : sizeof h->cur_field - 1 - h->cur_field_len;
    memcpy(h->cur_field + h->cur_field_len, at, n);
    h->cur_field_len += n;
    h->cur_field[h->cur_field_len] = 0;
    return 0;
}

static void append(char *dst, size_t cap, const char *at, size_t len)
{
    size_t have = strlen(dst);
    size_t n = have + len < cap - 1 ? len : cap - 1 - have;
    memcpy(dst + have, at, n);
    dst[have + n] = 0;
}

static int on_value(http_parser *p, const char *at, size_t len)
{
    conn_t *c = conn_of(p);
    http1_t *h = c->http1;
    if (count_header(c, len)) return -1;
    h->in_value = 1;
    if (!strcasecmp(h->cur_field, "accept"))
        append(h->accept, sizeof h->accept, at, len);
    else if (!strcasecmp(h->cur_field, "accept-encoding"))
        append(h->accept_encoding, sizeof h->accept_encoding, at, len);
    else if (!strcasecmp(h->cur_field, "x-request-id"))
        append(h->x_request_id, sizeof h->x_request_id, at, len);
    else if (!strcasecmp(h->cur_field, "content-type"))
        append(h->content_type, sizeof h->content_type, at, len);
    else if (!strcasecmp(h->cur_field, "expect") && len == 12 &&
             !strncasecmp(at, "100-continue", 12))
        h->expect_continue = 1;
    return 0;
}

/* The path of a request target, up to '?' or '#'. */
static void target_path(const char *target, char *path, size_t cap)
{
    size_t pl = strcspn(target, "?#");
    if (pl >= cap) pl = cap - 1;
    memcpy(path, target, pl);
    path[pl] = 0;
}

static int on_headers_complete(http_parser *p)
{
    conn_t *c = conn_of(p);
    http1_t *h = c->http1;
    h->in_value = 0;
    h->cur_field_len = 0;
    if (p->http_major != 1) { /* HTTP/1.x only (RFC 9110 15.6.6) */
        h->error = 505;
        return -1;
    }
    char path[512];
    target_path(h->url, path, sizeof path);
    const http_route_t *rt = http_route_lookup(c->srv, c->lst, path);
    if (rt && rt->stream &&
        (http_method_bit(http_method_str((enum http_method)p->method)) & rt->methods)) {
        h->route = rt;
        h->body_limit = rt->max_body;
    }
    if (p->content_length != ULLONG_MAX && p->content_length > h->body_limit) {
        h->error = 413;
        return -1;
    }
    /* the head is complete; a body, if any, is held to --min-body-rate from here */
    h->head_start_ns = 0;
    if ((p->flags & F_CHUNKED) || (p->content_length != ULLONG_MAX && p->content_length > 0))
        h->body_start_ns = clock_now_ns();
    /* a client waiting to be told to send its body (RFC 9110 10.1.1) is told at once */
    if (h->route && h->expect_continue && p->http_minor >= 1)
        conn_write(c, "HTTP/1.1 100 Continue\r\n\r\n", 25, NULL);
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    http1_t *h = conn_of(p)->http1;
    h->body_bytes += len;
    if (h->body_bytes > h->body_limit) {
        h->error = 413;
        return -1;
    }
    if (!h->route) return 0; /* plain rows take no body */
    if (h->body_len + len + 1 > h->body_cap) {
        size_t cap = h->body_cap ? h->body_cap : 4096;
        while (cap < h->body_len + len + 1)
            cap *= 2;
        char *b = realloc(h->body, cap);
        if (!b) {
            h->error = 503;
            return -1;
        }
        h->body = b;
        h->body_cap = cap;
    }
    memcpy(h->body + h->body_len, at, len);
    h->body_len += len;
    return 0;
}

static void write_response(conn_t *c, const http_response_t *r, int head_only, int close)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n",
                        r->status, http_reason(r->status), r->content_type, r->len);
    if (r->content_encoding)
        evbuffer_add_printf(out, "Content-Encoding: %s\r\nVary: Accept-Encoding\r\n",
                            r->content_encoding);
    if (r->allow) evbuffer_add_printf(out, "Allow: %s\r\n", r->allow);
    evbuffer_add_printf(out, "Cache-Control: no-store\r\n%s\r\n",
                        close ? "Connection: close\r\n" : "");
    if (!head_only) evbuffer_add(out, r->body, r->len);
}

static void write_error(conn_t *c, int status)
{
    const http_route_t *rt = c->http1 ? c->http1->route : NULL;
    if (rt && rt->error) { /* the route's own format (the OpenAI API's JSON) */
        http_response_t r;
        char msg[96];
        snprintf(msg, sizeof msg, "%d %s", status, http_reason(status));
        if (status == 413)
            snprintf(msg, sizeof msg, "request body larger than %zu bytes (--max-request-body)",
                     rt->max_body);
        http_route_error(rt, status, msg, &r);
        write_response(c, &r, 0, 1);
        http_response_dispose(&r);
        return;
    }
    char body[64];
    int n = snprintf(body, sizeof body, "%d %s\n", status, http_reason(status));
    http_response_t r = {.status = status,
                         .content_type = "text/plain; charset=utf-8",
                         .body = body,
                         .len = (size_t)n};
    write_response(c, &r, 0, 1);
}

static void job_done(void *owner, http_response_t *r)
{
    conn_t *c = owner;
    http1_t *h = c->http1;
    h->job = NULL;
    write_response(c, r, h->job_head, h->job_close);
    conn_touch(c);
    if (h->job_close) {
        h->close_after = 1;
        c->closing = 1;
    } else if (c->bev) {
        http1_recv(c, bufferevent_get_input(c->bev)); /* pipelined requests that waited */
    }
    conn_flush(c);
}

/* A request to a streaming route: its handler answers through a stream, now or later. Returns
 * 1 when the answer is still to come (the parser waits), 0 when it ended in the handler. */
static int dispatch_stream(conn_t *c, http_parser *p, int close)
{
    http1_t *h = c->http1;
    const char *method = http_method_str((enum http_method)p->method);
    char path[512], query[1024];
    target_path(h->url, path, sizeof path);
    query[0] = 0;
    const char *q = strchr(h->url, '?');
    if (q) snprintf(query, sizeof query, "%.*s", (int)strcspn(q + 1, "#"), q + 1);
    http_stream_t *st =
        hstream_new(c->srv, h->route, method, path, h->x_request_id[0] ? h->x_request_id : NULL);
    if (!st) {
        h->error = 503;
        return -1;
    }
    st->conn = c;
    st->chunked = p->http_major > 1 || (p->http_major == 1 && p->http_minor >= 1);
    h->stream = st;
    h->stream_close = close || !st->chunked;
    http_request_t req = {.method = method,
                          .path = path,
                          .query = query,
                          .accept = h->accept[0] ? h->accept : NULL,
                          .accept_encoding = h->accept_encoding[0] ? h->accept_encoding : NULL,
                          .peer = c->peer,
                          .content_type = h->content_type[0] ? h->content_type : NULL,
                          .body = h->body ? h->body : "",
                          .body_len = h->body_len,
                          .http2 = 0};
    if (h->body) h->body[h->body_len] = 0;
    h->dispatching = 1;
    hstream_dispatch(st, &req);
    h->dispatching = 0;
    if (h->body_cap > (1u << 20)) { /* a large body is not kept for the next request */
        free(h->body);
        h->body = NULL;
        h->body_cap = 0;
    }
    h->body_len = 0;
    return h->stream ? 1 : 0;
}

static int on_complete(http_parser *p)
{
    conn_t *c = conn_of(p);
    http1_t *h = c->http1;
    h->in_message = 0;
    h->head_start_ns = h->body_start_ns = 0;
    if (h->route) {
        int close = !http_should_keep_alive(p) || c->srv->stopping || h->close_after;
        int rc = dispatch_stream(c, p, close);
        conn_touch(c);
        if (rc < 0) return -1;
        if (rc == 1) { /* answered from the stream; requests behind it wait, in order */
            http_parser_pause(p, 1);
            return 0;
        }
        if (h->close_after) return -1; /* ended in the handler, and the connection with it */
        if (evbuffer_get_length(bufferevent_get_output(c->bev)) >= CONN_OUT_HIGH)
            http_parser_pause(p, 1);
        return 0;
    }
    const char *method = http_method_str((enum http_method)p->method);
    http_response_t r;
    http_serve(c->srv, c->lst, method, h->url, h->accept[0] ? h->accept : NULL,
               h->accept_encoding[0] ? h->accept_encoding : NULL, c->peer, &r);
    int close = !http_should_keep_alive(p) || c->srv->stopping || h->close_after;
    if (r.gzip_later) {
        h->job_head = p->method == HTTP_HEAD;
        h->job_close = close;
        h->job = offload_gzip(c->srv, &r, job_done, c);
        if (h->job) { /* answered from job_done; requests behind it wait, in order */
            http_parser_pause(p, 1);
            return 0;
        }
    }
    write_response(c, &r, p->method == HTTP_HEAD, close);
    http_response_dispose(&r);
    conn_touch(c);
    if (close) {
        h->close_after = 1;
        return -1; /* stop parsing: nothing after this request is answered */
    }
    /* Pipelined requests wait while the output is over the mark. */
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) >= CONN_OUT_HIGH)
        http_parser_pause(p, 1);
    return 0;
}

int http1_start(conn_t *c)
{
    http1_t *h = calloc(1, sizeof *h);
    if (!h) return -1;
    c->http1 = h;
    http_parser_init(&h->parser, HTTP_REQUEST);
    h->parser.data = c;
    http_parser_settings_init(&h->settings);
    h->settings.on_message_begin = on_begin;
    h->settings.on_url = on_url;
    h->settings.on_header_field = on_field;
    h->settings.on_header_value = on_value;
    h->settings.on_headers_complete = on_headers_complete;
    h->settings.on_body = on_body;
    h->settings.on_message_complete = on_complete;
    return 0;
}

int http1_recv(conn_t *c, struct evbuffer *in)
{
    http1_t *h = c->http1;
    if (h->close_after) {
        evbuffer_drain(in, evbuffer_get_length(in));
        c->closing = 1;
        return 0;
    }
    if (c->read_paused || h->job || h->stream) {
        /* an answer streams: pipelined input waits, within a bound */
        if (h->stream && !h->in_held && evbuffer_get_length(in) > MAX_HELD_INPUT && c->bev) {
            h->in_held = 1;
            bufferevent_disable(c->bev, EV_READ);
        }
        return 0;
    }
    if (!h->head_start_ns && !h->body_start_ns && evbuffer_get_length(in)) {
        /* bytes between requests start the next head's clock, whatever they are (empty
         * lines included): a trickle cannot keep the connection open past
         * --request-header-timeout */
        h->head_start_ns = clock_now_ns();
        conn_arm_timer(c);
    }
    http_parser_pause(&h->parser, 0);
    while (evbuffer_get_length(in) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1) break;
        size_t n = http_parser_execute(&h->parser, &h->settings, v.iov_base, v.iov_len);
        evbuffer_drain(in, n);
        enum http_errno e = HTTP_PARSER_ERRNO(&h->parser);
        if (e == HPE_PAUSED) return 0;
        if (e != HPE_OK) {
            if (h->close_after) { /* answered, then asked to close */
                evbuffer_drain(in, evbuffer_get_length(in));
                c->closing = 1;
                return 0;
            }
            write_error(c, h->error ? h->error : 400);
            log_debug("server", "HTTP/1.1 error from %s: %s", c->peer,
                      h->error ? http_reason(h->error) : http_errno_name(e));
            evbuffer_drain(in, evbuffer_get_length(in));
            c->closing = 1;
            return 0;
        }
        if (n < v.iov_len) break;
    }
    return 0;
}

void http1_timeout(conn_t *c, const char *why)
{
    http1_t *h = c->http1;
    log_debug("server", "closing %s: %s", c->peer, why);
    if (!h->job && !h->stream) write_error(c, 408); /* an answer in progress goes out first */
    h->close_after = 1;
    c->closing = 1;
}

void http1_free(conn_t *c)
{
    http1_t *h = c->http1;
    if (!h) return;
    if (h->job) offload_abandon(h->job);
    if (h->out_cb && c->bev) evbuffer_remove_cb_entry(bufferevent_get_output(c->bev), h->out_cb);
    if (h->stream) { /* the client went away while its answer streamed */
        http_stream_t *st = h->stream;
        h->stream = NULL;
        hstream_gone(st);
    }
    free(h->body);
    free(h);
    c->http1 = NULL;
}

/* ---- streamed answers (hstream.c drives these) ---- */

/* The socket took n bytes of the output: first what earlier answers had queued, then the
 * stream's. */
static void out_taken(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
    (void)buf;
    conn_t *c = arg;
    http_stream_t *st = c->http1 ? c->http1->stream : NULL;
    if (!st || !info->n_deleted) return;
    size_t n = info->n_deleted;
    size_t a = n < st->ahead ? n : st->ahead;
    st->ahead -= a;
    st->taken += n - a;
    if (n > a) st->moved_ns = clock_now_ns(); /* the client takes its answer: not stalled */
    hstream_taken(st, st->taken);
}

int http1_stream_head(conn_t *c, http_stream_t *st, int status, const char *content_type,
                      const http_header_t *hdrs, size_t n, int64_t length)
{
    http1_t *h = c->http1;
    if (!c->bev) return -EPIPE;
    struct evbuffer *out = bufferevent_get_output(c->bev);
    if (!h->out_cb && !(h->out_cb = evbuffer_add_cb(out, out_taken, c))) return -ENOMEM;
    st->ahead = evbuffer_get_length(out);
    if (length >= 0) st->chunked = 0;
    char head[2048];
    size_t k = 0;
#define PUT(...)                                                                                   \
    do {                                                                                           \
        int w_ = snprintf(head + k, sizeof head - k, __VA_ARGS__);                                 \
        if (w_ < 0 || (size_t)w_ >= sizeof head - k) return -ENOMEM;                               \
        k += (size_t)w_;                                                                           \
    } while (0)
    PUT("HTTP/1.1 %d %s\r\nContent-Type: %s\r\n", status, http_reason(status), content_type);
    if (length >= 0)
        PUT("Content-Length: %lld\r\n", (long long)length);
    else if (st->chunked)
        PUT("Transfer-Encoding: chunked\r\n");
    for (size_t i = 0; i < n; i++)
        PUT("%s: %s\r\n", hdrs[i].name, hdrs[i].value);
    PUT("x-request-id: %s\r\nCache-Control: no-store\r\n%s\r\n", st->request_id,
        h->stream_close ? "Connection: close\r\n" : "");
#undef PUT
    size_t sent = 0;
    if (conn_write(c, head, k, &sent)) return -ENOMEM;
    if (st->queued == st->taken) st->moved_ns = clock_now_ns(); /* starts waiting to be taken */
    st->queued += k;
    st->taken += sent;
    conn_touch(c);
    return 0;
}

int http1_stream_body(conn_t *c, http_stream_t *st, const void *data, size_t len, uint64_t *end)
{
    if (!c->bev) return -EPIPE;
    char small[4096], *buf = small;
    size_t need = len + (st->chunked ? 32 : 0), k = 0;
    if (need > sizeof small && !(buf = malloc(need))) return -ENOMEM;
    if (st->chunked) k = (size_t)snprintf(buf, 24, "%zx\r\n", len);
    memcpy(buf + k, data, len);
    k += len;
    if (st->chunked) {
        memcpy(buf + k, "\r\n", 2);
        k += 2;
    }
    size_t sent = 0;
    int rc = conn_write(c, buf, k, &sent);
    if (buf != small) free(buf);
    if (rc) return -ENOMEM;
    if (st->queued == st->taken) st->moved_ns = clock_now_ns(); /* starts waiting to be taken */
    st->queued += k;
    st->taken += sent;
    *end = st->queued;
    conn_touch(c);
    conn_flush(c);
    return 0;
}

void http1_stream_end(conn_t *c, http_stream_t *st)
{
    http1_t *h = c->http1;
    if (st->chunked && !st->head_only) {
        size_t sent = 0;
        conn_write(c, "0\r\n\r\n", 5, &sent);
    }
    h->stream = NULL;
    st->conn = NULL;
    int close = h->stream_close || h->close_after || c->srv->stopping;
    http_stream_unref(st); /* the transport's */
    conn_touch(c);
    if (close) {
        h->close_after = 1;
        c->closing = 1;
    } else if (!h->dispatching && c->bev) {
        /* the requests that waited, from their own loop turn (this may be inside a producer's
         * callback) */
        if (h->in_held) {
            h->in_held = 0;
            if (!c->read_paused) bufferevent_enable(c->bev, EV_READ);
        }
        bufferevent_trigger(c->bev, EV_READ, BEV_TRIG_IGNORE_WATERMARKS | BEV_TRIG_DEFER_CALLBACKS);
    }
    conn_flush(c);
}
