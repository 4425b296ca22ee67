/* Request identity for logs: x-request-id and W3C trace context (traceparent). */
#ifndef INFERD_SERVER_CORE_TRACE_H
#define INFERD_SERVER_CORE_TRACE_H

#include <stddef.h>
#include <stdint.h>

/** Generator for new ids (one per server, seeded from the kernel once). */
typedef struct trace_rng {
    uint64_t s[2];
} trace_rng_t;

/** Seeds the generator. */
void trace_rng_init(trace_rng_t *r);
/** Fills trace_id (32 hex + NUL) and span_id (16 hex + NUL) for a new server span: the trace
 * continues a valid traceparent header (version 00, non-zero ids, lower-case hex), otherwise
 * (absent or invalid: never trusted) a new random trace starts. Returns 1 when continued, 0 new. */
int trace_start(trace_rng_t *r, const char *traceparent, char trace_id[33], char span_id[17]);

#endif
