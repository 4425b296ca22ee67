/* The route table (core/http.h): lookup by path, the listener's scope, the methods a row
 * takes; and the /metrics route, the core's own since it owns the registry and the gzip
 * offload. Nothing here waits on the engine. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#include "metrics/metrics.h"
#include "server/core/conn.h"

/* Bodies above this are compressed off the loop (about a millisecond of deflate). */
#define OFFLOAD_MIN_BYTES (256u << 10)

static const char text_plain[] = "text/plain; charset=utf-8";

int http_response_set(http_response_t *r, int status, const char *content_type, const char *body,
                      size_t len)
{
    r->status = status;
    r->content_type = content_type;
    r->body = malloc(len + 1);
    if (!r->body) {
        r->status = 503;
        r->len = 0;
        return -ENOMEM;
    }
    memcpy(r->body, body, len);
    r->body[len] = 0;
    r->len = len;
    return 0;
}

void http_response_dispose(http_response_t *r)
{
    free(r->body);
    r->body = NULL;
}

static void text(http_response_t *r, int status, const char *body)
{
    http_response_set(r, status, text_plain, body, strlen(body));
}

/* ---- the table ---- */

int server_route_add(server_t *s, const http_route_t *rows, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const http_route_t *r = &rows[i];
        if (!r->name || !*r->name || !r->path || r->path[0] != '/' || !r->handler == !r->stream)
            return -EINVAL;
        for (size_t j = 0; j < s->n_routes; j++)
            if (!strcmp(s->routes[j].name, r->name) || !strcmp(s->routes[j].path, r->path))
                return -EEXIST;
        if (s->n_routes == s->cap_routes) {
            size_t cap = s->cap_routes ? s->cap_routes * 2 : 8;
            http_route_t *a = realloc(s->routes, cap * sizeof *a);
            if (!a) return -ENOMEM;
            s->routes = a;
            s->cap_routes = cap;
        }
        s->routes[s->n_routes++] = *r;
    }
    return 0;
}

/* The 405's Allow header for each combination of the HTTP_METHOD_* bits. */
static const char *const allow_text[8] = {
    "", "GET", "HEAD", "GET, HEAD", "POST", "GET, POST", "HEAD, POST", "GET, HEAD, POST",
};

unsigned http_method_bit(const char *method)
{
    if (!strcmp(method, "GET")) return HTTP_METHOD_GET;
    if (!strcmp(method, "HEAD")) return HTTP_METHOD_HEAD;
    if (!strcmp(method, "POST")) return HTTP_METHOD_POST;
    return 0;
}

const char *http_reason(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
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
    case 415:
        return "Unsupported Media Type";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "";
    }
}

const http_route_t *http_route_lookup(server_t *s, const listener_t *l, const char *path)
{
    const http_route_t *route = NULL;
    size_t best = 0;
    for (size_t i = 0; i < s->n_routes; i++) {
        const http_route_t *r = &s->routes[i];
        if (!r->prefix) {
            if (!strcmp(r->path, path)) {
                route = r;
                break;
            }
            continue;
        }
        size_t n = strlen(r->path);
        if (n > best && !strncmp(r->path, path, n)) {
            route = r;
            best = n;
        }
    }
    if (route && !server_scope_has_route(l->scope, route->name)) return NULL;
    return route;
}

void http_route_error(const http_route_t *rt, int status, const char *message, http_response_t *r)
{
    memset(r, 0, sizeof *r);
    if (rt && rt->error) {
        rt->error(rt->arg, status, message, r);
        r->status = status;
        if (r->body) return;
    }
    char body[320];
    int n = snprintf(body, sizeof body, "%s\n", message);
    http_response_set(r, status, text_plain, body,
                      n < (int)sizeof body ? (size_t)n : sizeof body - 1);
}

void http_serve(server_t *s, const listener_t *l, const char *method, const char *target,
                const char *accept, const char *accept_encoding, const char *peer,
                http_response_t *r)
{
    memset(r, 0, sizeof *r);
    char path[512], query[1024];
    size_t pl = strcspn(target, "?#");
    if (pl >= sizeof path) pl = sizeof path - 1;
    memcpy(path, target, pl);
    path[pl] = 0;
    query[0] = 0;
    if (target[pl] == '?') {
        size_t ql = strcspn(target + pl + 1, "#");
        if (ql >= sizeof query) ql = sizeof query - 1;
        memcpy(query, target + pl + 1, ql);
        query[ql] = 0;
    }
    const http_route_t *route = http_route_lookup(s, l, path);
    if (!route) {
        text(r, 404, "not found\n");
        return;
    }
    if (!(http_method_bit(method) & route->methods)) {
        http_route_error(route, 405, "method not allowed", r);
        r->allow = allow_text[route->methods & 7];
        return;
    }
    if (!route->handler) { /* a streaming row: the transport dispatches those itself */
        http_route_error(route, 500, "internal error: streaming route served as plain", r);
        return;
    }
    http_request_t req = {.method = method,
                          .path = path,
                          .query = query,
                          .accept = accept,
                          .accept_encoding = accept_encoding,
                          .peer = peer};
    route->handler(route->arg, &req, r);
}

/* ---- /metrics: the exposition streamed into one buffer, through deflate when gzipped ---- */

typedef struct sink {
    char *buf;
    size_t len, cap;
    z_stream z;
    int gzip;
} sink_t;

static int sink_grow(sink_t *k, size_t need)
{
    if (k->cap - k->len >= need) return 0;
    size_t cap = k->cap ? k->cap : 1 << 16;
    while (cap - k->len < need)
        cap *= 2;
    char *b = realloc(k->buf, cap);
    if (!b) return -ENOMEM;
    k->buf = b;
    k->cap = cap;
    return 0;
}

/* Feeds data (NULL with flush Z_FINISH ends the stream) to deflate, output into the buffer. */
static int sink_deflate(sink_t *k, const char *data, size_t len, int flush)
{
    k->z.next_in = (Bytef *)data;
    k->z.avail_in = (uInt)len;
    for (;;) {
        if (sink_grow(k, 1 << 15)) return -ENOMEM;
        k->z.next_out = (Bytef *)k->buf + k->len;
        k->z.avail_out = (uInt)(k->cap - k->len);
        int rc = deflate(&k->z, flush);
        k->len = k->cap - k->z.avail_out;
        if (rc == Z_STREAM_END) return 0;
        if (rc != Z_OK && rc != Z_BUF_ERROR) return -EIO;
        if (k->z.avail_in == 0 && k->z.avail_out > 0 && flush == Z_NO_FLUSH) return 0;
    }
}

static int sink_write(void *arg, const char *data, size_t len)
{
    sink_t *k = arg;
    if (k->gzip) return sink_deflate(k, data, len, Z_NO_FLUSH);
    if (sink_grow(k, len + 1)) return -ENOMEM;
    memcpy(k->buf + k->len, data, len);
    k->len += len;
    return 0;
}

/* Renders the registry in the format Accept asks for (never 406: text 0.0.4 otherwise).
 * gzip at the fastest level: Prometheus always asks for it, and the scrape runs on the loop. */
static int render_metrics(server_t *s, const char *accept, int gzip, http_response_t *r)
{
    metrics_format_t fmt = metrics_negotiate(accept);
    sink_t k = {.gzip = gzip};
    if (gzip &&
        deflateInit2(&k.z, Z_BEST_SPEED, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return -ENOMEM;
    int rc = metrics_render_stream(s->reg, fmt, sink_write, &k);
    if (!rc && gzip) rc = sink_deflate(&k, NULL, 0, Z_FINISH);
    if (gzip) deflateEnd(&k.z);
    if (rc) {
        free(k.buf);
        return rc;
    }
    r->status = 200;
    r->content_type = metrics_content_type(fmt);
    r->content_encoding = gzip ? "gzip" : NULL;
    r->body = k.buf ? k.buf : strdup("");
    r->len = k.len;
    return r->body ? 0 : -ENOMEM;
}

/* GET /metrics. A large exposition is rendered here and gzipped by the transport off the loop. */
static void serve_metrics(void *arg, const http_request_t *req, http_response_t *r)
{
    server_t *s = arg;
    int gzip = header_list_accepts(req->accept_encoding, "gzip");
    if (render_metrics(s, req->accept, 0, r)) {
        text(r, 503, "out of memory\n");
        return;
    }
    if (gzip && r->len > OFFLOAD_MIN_BYTES) {
        r->gzip_later = 1;
    } else if (gzip) {
        http_response_dispose(r);
        if (render_metrics(s, req->accept, 1, r)) text(r, 503, "out of memory\n");
    }
}

int http_metrics_route_add(server_t *s)
{
    http_route_t row = {.name = "metrics",
                        .path = "/metrics",
                        .methods = HTTP_METHOD_GET | HTTP_METHOD_HEAD,
                        .handler = serve_metrics,
                        .arg = s};
    return server_route_add(s, &row, 1);
}
