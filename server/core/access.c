/* The access log: one line per finished RPC, target "access". Info for ordinary calls, debug
 * for health probes (a kubelet probing every second must not fill the log). A per-second
 * budget keeps a flood of calls from drowning the disk: past ACCESS_LOG_PER_SEC lines in a
 * second the rest are counted, and the first line of a later second is preceded by one
 * "suppressed K access lines" summary. */
#include <pthread.h>
#include <stdio.h>
#include <time.h>

#include "server/core/conn.h"
#include "server/base/log.h"

#define ACCESS_LOG_PER_SEC 100

/* The budget protects one process-wide resource (stderr, the disk behind it), like the logger
 * itself, so it is process-wide too; the lock makes it safe for several servers in one
 * process (tests). */
static pthread_mutex_t access_mu = PTHREAD_MUTEX_INITIALIZER;
static log_ratelimit_t access_rl = {.per_sec = ACCESS_LOG_PER_SEC};

/* Takes one line from the access-log budget: 1 when it may be written. Lines held back since
 * the last one written are reported first, as one "suppressed" line. */
static int access_take(void)
{
    unsigned long held;
    pthread_mutex_lock(&access_mu);
    int ok = log_ratelimit_take(&access_rl, clock_now_ns(), &held);
    pthread_mutex_unlock(&access_mu);
    if (held && log_enabled(LOG_INFO, "access")) {
        char n[24];
        snprintf(n, sizeof n, "%lu", held);
        const char *f[] = {"suppressed", n, NULL};
        log_write(LOG_INFO, "access", f, "suppressed %lu access lines (over %d/s)", held,
                  ACCESS_LOG_PER_SEC);
    }
    return ok;
}

void access_log_call(server_t *s, grpc_call_t *c, double secs, unsigned code)
{
    (void)s;
    grpc_method_t *m = c->method;
    log_level_t lvl = m && (m->flags & GRPC_METHOD_PROBE) ? LOG_DEBUG : LOG_INFO;
    if (!log_enabled(lvl, "access")) return;
    if (!access_take()) return;
    char dur[32], in[24], out[24], num[12];
    snprintf(num, sizeof num, "%u", code);
    snprintf(dur, sizeof dur, "%.6f", secs);
    snprintf(in, sizeof in, "%llu", (unsigned long long)c->bytes_in);
    snprintf(out, sizeof out, "%llu", (unsigned long long)c->bytes_out);
    const char *method = m ? m->path : c->path ? c->path : "";
    const char *status = grpc_status_name((grpc_status_t)code);
    const char *fields[] = {"method",      method,
                            "grpc_status", status,
                            "grpc_code",   num,
                            "duration_s",  dur,
                            "bytes_in",    in,
                            "bytes_out",   out,
                            "peer",        c->conn ? c->conn->peer : "",
                            "request_id",  c->request_id,
                            "trace_id",    c->trace_id,
                            "span_id",     c->span_id,
                            NULL};
    log_write(lvl, "access", fields, "%s %s %.3fms", method, status, secs * 1e3);
}

void access_log_http(server_t *s, const char *method, const char *path, int status, double secs,
                     uint64_t bytes_in, uint64_t bytes_out, const char *peer,
                     const char *request_id)
{
    (void)s;
    if (!log_enabled(LOG_INFO, "access")) return;
    if (!access_take()) return;
    char dur[32], in[24], out[24], st[12], target[300];
    snprintf(st, sizeof st, "%d", status);
    snprintf(dur, sizeof dur, "%.6f", secs);
    snprintf(in, sizeof in, "%llu", (unsigned long long)bytes_in);
    snprintf(out, sizeof out, "%llu", (unsigned long long)bytes_out);
    snprintf(target, sizeof target, "%s %s", method, path);
    const char *fields[] = {"method",     target,     "http_status", st,  "duration_s", dur,
                            "bytes_in",   in,         "bytes_out",   out, "peer",       peer,
                            "request_id", request_id, NULL};
    log_write(LOG_INFO, "access", fields, "%s %d %.3fms", target, status, secs * 1e3);
}
