/* Fault injection (fault.h): the route and its modes, set with engine_set_fault(). */
#include <arpa/inet.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/services/fault.h"

#include "server/base/config.h"
#include "server/base/log.h"

#define FAULT_PATH "/debug/fault"
#define SLOW_MAX_MS 60000

static int loopback(const char *host)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
    if (inet_pton(AF_INET6, host, &a6) == 1)
        return IN6_IS_ADDR_LOOPBACK(&a6) || (IN6_IS_ADDR_V4MAPPED(&a6) && a6.s6_addr[12] == 127);
    return 0;
}

int fault_enabled(const config_t *cfg)
{
    return cfg->enable_fault_injection && cfg->system_port >= 0 && loopback(cfg->system_host);
}

void fault_log_startup(const config_t *cfg)
{
    if (!cfg->enable_fault_injection) return;
    if (cfg->system_port < 0)
        log_warn(
            "health",
            "--enable-fault-injection ignored: it needs the system port (--system-port is -1)");
    else if (!loopback(cfg->system_host))
        log_warn("health",
                 "--enable-fault-injection refused: the system port is bound to %s, not a loopback "
                 "address; "
                 "fault injection stays off",
                 cfg->system_host);
    else
        log_warn("health",
                 "fault injection enabled: POST %s on %s:%d can hang or break the engine "
                 "(debugging aid)",
                 FAULT_PATH, cfg->system_host, cfg->system_port);
}

static void json_reply(http_response_t *r, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void json_reply(http_response_t *r, int status, const char *fmt, ...)
{
    va_list ap;
    char buf[256];
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0) n = 0;
    if ((size_t)n >= sizeof buf) n = sizeof buf - 1;
    r->status = status;
    r->content_type = "application/json";
    r->body = malloc((size_t)n + 2);
    if (!r->body) {
        r->status = 503;
        r->len = 0;
        return;
    }
    memcpy(r->body, buf, (size_t)n);
    r->body[n] = '\n';
    r->body[n + 1] = 0;
    r->len = (size_t)n + 1;
}

/* Copies the value of key from query (a=b&c=d) into out; 1 when present. */
static int query_get(const char *q, const char *key, char *out, size_t cap)
{
    size_t kl = strlen(key);
    while (q && *q) {
        const char *amp = strchr(q, '&');
        size_t len = amp ? (size_t)(amp - q) : strlen(q);
        if (len > kl && !strncmp(q, key, kl) && q[kl] == '=') {
            size_t vl = len - kl - 1;
            if (vl >= cap) vl = cap - 1;
            memcpy(out, q + kl + 1, vl);
            out[vl] = 0;
            return 1;
        }
        q = amp ? amp + 1 : NULL;
    }
    return 0;
}

/* POST /debug/fault?mode=...: the route exists only when fault injection is enabled, and only
 * the system listener's scope names it (app.c). */
static void serve(void *route_arg, const http_request_t *req, http_response_t *r)
{
    inference_t *inf = route_arg;
    const char *q = req->query;
    char mode[32] = "", ms_s[32] = "";
    query_get(q, "mode", mode, sizeof mode);
    engine_fault_t f;
    uint32_t arg = 0;
    if (!strcmp(mode, "hang"))
        f = ENGINE_FAULT_HANG;
    else if (!strcmp(mode, "error"))
        f = ENGINE_FAULT_ERROR;
    else if (!strcmp(mode, "stall"))
        f = ENGINE_FAULT_STALL;
    else if (!strcmp(mode, "clear") || !strcmp(mode, "none"))
        f = ENGINE_FAULT_NONE;
    else if (!strcmp(mode, "slow")) {
        f = ENGINE_FAULT_SLOW;
        char *end;
        long v = query_get(q, "ms", ms_s, sizeof ms_s) ? strtol(ms_s, &end, 10) : -1;
        if (!ms_s[0] || *end || v < 0 || v > SLOW_MAX_MS) {
            json_reply(r, 400, "{\"error\":\"mode=slow needs ms=N, 0 <= N <= %d\"}", SLOW_MAX_MS);
            return;
        }
        arg = (uint32_t)v;
    } else {
        json_reply(
            r, 400,
            "{\"error\":\"unknown mode '%.20s': expected hang, error, stall, slow&ms=N or clear\"}",
            mode);
        return;
    }
    int rc = engine_set_fault(inference_engine(inf), f, arg);
    if (rc) {
        json_reply(r, 400, "{\"error\":\"engine refused the fault: %s\"}", strerror(-rc));
        return;
    }
    const char *name = f == ENGINE_FAULT_NONE ? "clear" : mode;
    log_warn("health", "fault injection: mode %s%s%s set by %s", name,
             f == ENGINE_FAULT_SLOW ? " ms=" : "", f == ENGINE_FAULT_SLOW ? ms_s : "", req->peer);
    if (f == ENGINE_FAULT_SLOW)
        json_reply(r, 200, "{\"fault\":\"slow\",\"ms\":%u}", arg);
    else
        json_reply(r, 200, "{\"fault\":\"%s\"}", name);
}

void fault_route(inference_t *inf, http_route_t *row)
{
    *row = (http_route_t){.name = "fault",
                          .path = FAULT_PATH,
                          .methods = HTTP_METHOD_POST,
                          .handler = serve,
                          .arg = inf};
}
