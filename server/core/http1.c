/* HTTP/1.1 on any listener, parsed by http-parser: keep-alive, pipelining in order,
 * header and body limits (431, 413), backpressure by pausing the parser. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "server/core/conn.h"
#include "server/base/log.h"

#define MAX_BODY (64 * 1024)

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
    h->accept[0] = h->accept_encoding[0] = h->x_request_id[0] = 0;
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
    return 0;
}

static int on_headers_complete(http_parser *p)
{
    http1_t *h = conn_of(p)->http1;
    h->in_value = 0;
    h->cur_field_len = 0;
    if (p->http_major != 1) { /* HTTP/1.x only (RFC 9110 15.6.6) */
        h->error = 505;
        return -1;
    }
    if (p->content_length != ULLONG_MAX && p->content_length > MAX_BODY) {
        h->error = 413;
        return -1;
    }
    /* the head is complete; a body, if any, is held to --min-body-rate from here */
    h->head_start_ns = 0;
    if ((p->flags & F_CHUNKED) || (p->content_length != ULLONG_MAX && p->content_length > 0))
        h->body_start_ns = clock_now_ns();
    return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
    (void)at;
    http1_t *h = conn_of(p)->http1;
    h->body_bytes += len;
    if (h->body_bytes > MAX_BODY) {
        h->error = 413;
        return -1;
    }
    return 0;
}

static const char *reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 431:
        return "Request Header Fields Too Large";
    case 505:
        return "HTTP Version Not Supported";
    case 503:
        return "Service Unavailable";
    default:
        return "";
    }
}

static void write_response(conn_t *c, const http_response_t *r, int head_only, int close)
{
    struct evbuffer *out = bufferevent_get_output(c->bev);
    evbuffer_add_printf(out, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n",
                        r->status, reason(r->status), r->content_type, r->len);
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
    char body[64];
    int n = snprintf(body, sizeof body, "%d %s\n", status, reason(status));
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

static int on_complete(http_parser *p)
{
    conn_t *c = conn_of(p);
    http1_t *h = c->http1;
    h->in_message = 0;
    h->head_start_ns = h->body_start_ns = 0;
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
    if (c->read_paused || h->job) return 0;
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
                      h->error ? reason(h->error) : http_errno_name(e));
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
    if (!h->job) write_error(c, 408); /* a response being compressed goes out first */
    h->close_after = 1;
    c->closing = 1;
}

void http1_free(conn_t *c)
{
    if (c->http1 && c->http1->job) offload_abandon(c->http1->job);
    free(c->http1);
    c->http1 = NULL;
}
