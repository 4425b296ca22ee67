/* The access log: one line per finished RPC. */
#include <stdio.h>

#include "internal.h"
#include "log.h"

void access_log_call(server_t *s, grpc_call_t *c, double secs, unsigned code)
{
    (void)s;
    grpc_method_t *m = c->method;
    log_level_t lvl = (m->flags & GRPC_METHOD_PROBE) ? LOG_DEBUG : LOG_INFO;
    if (log_enabled(lvl, "access")) {
        char dur[32], in[24], out[24], st[24];
        snprintf(dur, sizeof dur, "%.6f", secs);
        snprintf(in, sizeof in, "%llu", (unsigned long long)c->bytes_in);
        snprintf(out, sizeof out, "%llu", (unsigned long long)c->bytes_out);
        snprintf(st, sizeof st, "%s", grpc_status_name((grpc_status_t)code));
        const char *fields[] = {"method", m->path, "grpc_status", st, "duration_s", dur, "bytes_in", in,
                                "bytes_out", out, "peer", c->conn ? c->conn->peer : "", "request_id", c->request_id,
                                "trace_id", c->trace_id, "span_id", c->span_id, NULL};
        log_write(lvl, "access", fields, "rpc finished");
    }
}
