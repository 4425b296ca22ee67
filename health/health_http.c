/* /live and /health: their bodies and their routes. jansson does the escaping; reasons come from
 * other modules and may hold bytes that are not UTF-8, which JSON cannot carry, so those become
 * '?'. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "health/health_int.h"
#include "server/base/utf8.h"

static json_t *text(const char *s)
{
    json_t *j = json_string(s);
    if (j) return j;
    size_t n = strlen(s);
    char *clean = malloc(n + 1);
    if (!clean) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t k = utf8_len((const unsigned char *)s + i, n - i);
        if (k == 0 || (k == 1 && s[i] == '\0')) {
            clean[o++] = '?';
            i++;
        } else {
            memcpy(clean + o, s + i, k);
            o += k;
            i += k;
        }
    }
    clean[o] = '\0';
    j = json_string(clean);
    free(clean);
    return j;
}

/* RFC 3339 UTC with milliseconds, or JSON null for a zero time. */
static json_t *timestamp(struct timespec ts)
{
    if (ts.tv_sec == 0 && ts.tv_nsec == 0) return json_null();
    struct tm tm;
    time_t t = ts.tv_sec;
    if (!gmtime_r(&t, &tm)) return json_null();
    char buf[40];
    size_t n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, sizeof(buf) - n, ".%03ldZ", (long)(ts.tv_nsec / 1000000));
    return json_string(buf);
}

static int dump(json_t *root, char **body, size_t *len)
{
    if (!root) return -ENOMEM;
    char *s = json_dumps(root, JSON_COMPACT);
    json_decref(root);
    if (!s) return -ENOMEM;
    *body = s;
    *len = strlen(s);
    return 0;
}

int health_live_body(health_t *h, char **body, size_t *len, int *http_status)
{
    *http_status = h->shutdown ? 503 : 200;
    return dump(json_pack("{s:s}", "status", h->shutdown ? "shutting_down" : "live"), body, len);
}

int health_ready_body(health_t *h, char **body, size_t *len, int *http_status)
{
    health_status_t ready = HEALTH_NOT_SERVING;
    health_get(h, HEALTH_SERVICE_READINESS, &ready);
    const char *status = h->draining               ? "shutting_down"
                         : ready == HEALTH_SERVING ? "ready"
                                                   : "notready";
    *http_status = !h->draining && ready == HEALTH_SERVING ? 200 : 503;

    json_int_t uptime = (json_int_t)((clock_now_ns() - h->started_ns) / 1000000000LL);

    json_t *eps = json_object();
    json_t *root =
        json_pack("{s:s,s:I,s:o}", "status", status, "uptime_seconds", uptime, "endpoints", eps);
    if (!root) return -ENOMEM; /* json_pack's "o" consumed eps even on failure */
    for (size_t i = 0; i < h->n_eps; i++) {
        const struct endpoint *ep = h->eps[i];
        json_t *e = json_pack("{s:s,s:o,s:o,s:o}", "status",
                              ep->status == HEALTH_SERVING ? "ready" : "notready", "reason",
                              text(ep->reason), "last_check", timestamp(ep->last_check),
                              "last_transition", timestamp(ep->last_transition));
        if (!e || json_object_set_new(eps, ep->name, e) < 0) {
            json_decref(root);
            return -ENOMEM;
        }
    }
    return dump(root, body, len);
}

/* A body that could not be built still answers, as not ready. */
static void json_answer(http_response_t *r, int rc)
{
    if (rc) {
        r->status = 503;
        r->body = strdup("{\"status\":\"notready\"}");
        r->len = r->body ? strlen(r->body) : 0;
    }
    r->content_type = "application/json";
}

static void serve_live(void *arg, const http_request_t *req, http_response_t *r)
{
    (void)req;
    json_answer(r, health_live_body(arg, &r->body, &r->len, &r->status));
}

static void serve_health(void *arg, const http_request_t *req, http_response_t *r)
{
    (void)req;
    json_answer(r, health_ready_body(arg, &r->body, &r->len, &r->status));
}

void health_http_routes(health_t *h, const char *live_path, const char *health_path,
                        http_route_t rows[2])
{
    rows[0] = (http_route_t){.name = "live",
                             .path = live_path,
                             .methods = HTTP_METHOD_GET | HTTP_METHOD_HEAD,
                             .handler = serve_live,
                             .arg = h};
    rows[1] = (http_route_t){.name = "health",
                             .path = health_path,
                             .methods = HTTP_METHOD_GET | HTTP_METHOD_HEAD,
                             .handler = serve_health,
                             .arg = h};
}
