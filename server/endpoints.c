/* The HTTP endpoints every listener serves: liveness, readiness, Prometheus metrics.
 * Bodies come from the health and metrics modules; nothing here waits on the engine. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "health/health.h"
#include "metrics/metrics.h"
#include "internal.h"

static void text(http_response_t *r, int status, const char *body)
{
    r->status = status;
    r->content_type = "text/plain; charset=utf-8";
    r->body = strdup(body);
    r->len = r->body ? strlen(body) : 0;
}

/* 1 when Accept-Encoding lists gzip (or *) with a non-zero q. */
static int accepts_gzip(const char *ae)
{
    for (const char *p = ae; p && *p;) {
        while (*p == ' ' || *p == ',') p++;
        const char *e = p;
        while (*e && *e != ',' && *e != ';' && *e != ' ') e++;
        int match = ((e - p) == 4 && !strncasecmp(p, "gzip", 4)) || ((e - p) == 1 && *p == '*');
        const char *next = strchr(e, ',');
        const char *q = strstr(e, "q=");
        int zero = q && (!next || q < next) && strtod(q + 2, NULL) == 0.0;
        if (match && !zero) return 1;
        p = next ? next : e + strlen(e);
    }
    return 0;
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
    const char *ctype;
    if (metrics_render(s->reg, accept, &r->body, &r->len, &ctype)) {
        text(r, 503, "out of memory\n");
        return;
    }
    r->status = 200;
    r->content_type = ctype;
    if (accepts_gzip(accept_encoding)) {
        unsigned char *z;
        size_t zl;
        if (gzip_compress(r->body, r->len, &z, &zl) == 0) {
            free(r->body);
            r->body = (char *)z;
            r->len = zl;
            r->content_encoding = "gzip";
        }
    }
}

void http_response_dispose(http_response_t *r)
{
    free(r->body);
    r->body = NULL;
}
