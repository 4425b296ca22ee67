/* The HTTP endpoints every listener serves: liveness, readiness, Prometheus metrics.
 * Bodies come from the health and metrics modules; nothing here waits on the engine. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#include "health/health.h"
#include "metrics/metrics.h"
#include "internal.h"

/* Bodies above this are compressed off the loop (about a millisecond of deflate). */
#define OFFLOAD_MIN_BYTES (256u << 10)

static void text(http_response_t *r, int status, const char *body)
{
    r->status = status;
    r->content_type = "text/plain; charset=utf-8";
    r->body = strdup(body);
    r->len = r->body ? strlen(body) : 0;
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
static int serve_metrics(server_t *s, const char *accept, int gzip, http_response_t *r)
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

void endpoint_not_found(http_response_t *r)
{
    memset(r, 0, sizeof *r);
    text(r, 404, "not found\n");
}

void endpoint_serve(server_t *s, const char *method, const char *target, const char *accept,
                    const char *accept_encoding, http_response_t *r)
{
    memset(r, 0, sizeof *r);
    char path[512];
    size_t pl = strcspn(target, "?#");
    if (pl >= sizeof path) pl = sizeof path - 1;
    memcpy(path, target, pl);
    path[pl] = 0;
    int get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
    const config_t *cfg = s->cfg;
    int is_live = !strcmp(path, cfg->live_path), is_health = !strcmp(path, cfg->health_path);
    int is_metrics = !strcmp(path, "/metrics");
    if (!is_live && !is_health && !is_metrics) {
        text(r, 404, "not found\n");
        return;
    }
    if (!get) {
        text(r, 405, "method not allowed\n");
        r->allow = "GET, HEAD";
        return;
    }
    if (is_live || is_health) {
        int rc = is_live ? health_live_body(s->health, &r->body, &r->len, &r->status)
                         : health_ready_body(s->health, &r->body, &r->len, &r->status);
        if (rc) {
            text(r, 503, "{\"status\":\"notready\"}");
            r->content_type = "application/json";
            return;
        }
        r->content_type = "application/json";
        return;
    }
    /* A large exposition is rendered here and gzipped by the caller off the loop. */
    int gzip = header_list_accepts(accept_encoding, "gzip");
    if (serve_metrics(s, accept, 0, r)) {
        text(r, 503, "out of memory\n");
        return;
    }
    if (gzip && r->len > OFFLOAD_MIN_BYTES)
        r->gzip_later = 1;
    else if (gzip) {
        http_response_dispose(r);
        if (serve_metrics(s, accept, 1, r)) text(r, 503, "out of memory\n");
    }
}

void http_response_dispose(http_response_t *r)
{
    free(r->body);
    r->body = NULL;
}
