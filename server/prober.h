/* Health prober: canary and progress checks of the inference endpoints (DESIGN.md, "Health
 * model"), and the fault-injection control the tests drive them with (fault.c).
 *
 * Per endpoint (an inference_t serving one health endpoint, "generate" today):
 *   canary    when the endpoint has seen no successful response for canary_wait
 *             (DYN_CANARY_WAIT_TIME), a canary GenerateRequest (DYN_HEALTH_CHECK_PAYLOAD, or BOS,
 *             max_tokens 1, temperature 0) goes through inference_submit_message(), the path
 *             real requests take. It passes when the whole response finished with a finish
 *             reason within DYN_HEALTH_CHECK_REQUEST_TIMEOUT; an error or a timeout (a stall
 *             after the first token ends as a timeout) fails it; a timed-out canary is cancelled.
 *             A busy endpoint that keeps producing tokens gets no canary: traffic is the evidence.
 *   progress  real requests in flight (not paused by their own slow client) and no token for
 *             DYN_HEALTH_CHECK_BUSY_STALL: NOT_SERVING "no token produced for Ns with K requests
 *             in flight".
 *   recovery  the next success, canary or real, sets SERVING.
 * Start-up: the first canary runs at once; with DYN_SYSTEM_STARTING_HEALTH_STATUS=notready the
 * endpoint is NOT_SERVING until it (or a real request) succeeds. With DYN_HEALTH_CHECK_ENABLED=
 * false nothing runs: the endpoint is set SERVING once loaded and stays so.
 * Metrics: health_canary_total{endpoint,result}, health_canary_duration_seconds{endpoint}, and
 * health_status{endpoint} (set from the registry's change hook, chained with any earlier hook).
 * Loop thread only. */
#ifndef INFERD_SERVER_PROBER_H
#define INFERD_SERVER_PROBER_H

#include <stddef.h>

#include "inference.h"
#include "server/core/server.h"

#include "server/core/http.h"

struct config;
struct health;

typedef struct prober prober_t;

/** Checks the prober's options (the canary payload parses and names only GenerateRequest
 * fields of the right types). For main, before loading the model. Returns 0, or -EINVAL with
 * "invalid value '...' for --health-check-payload: why" in err (exit 2). */
int prober_check_config(const struct config *cfg, char *err, size_t errlen);

/** Creates the prober (no endpoint yet) over the health registry h. Returns 0 (*out set),
 * -EINVAL (invalid payload: err names the option, exit 2) or -ENOMEM. */
int prober_new(prober_t **out, server_t *s, struct health *h, char *err, size_t errlen);
/** Watches one inference endpoint (registered in the health registry as endpoint) and starts
 * its checks: the first canary is submitted at once. Takes inf's observer. Returns 0, -EINVAL
 * (the payload does not suit inf's model: err says why, exit 2), -ENOENT (endpoint not
 * registered), -EEXIST, -ENOMEM. */
int prober_add(prober_t *p, const char *endpoint, inference_t *inf, char *err, size_t errlen);
/** Stops the timers, cancels canaries in flight, restores the change hook and frees. Before
 * inference_free() of its endpoints. NULL is a no-op. */
void prober_free(prober_t *p);

/** Parses a canary payload: JSON text, or "@PATH" naming a file that holds it. Field names as
 * in the .proto (snake_case) or its JSON names (lowerCamelCase); uint64 may be a JSON string.
 * Returns 0 (*out: free with protobuf_c_message_free_unpacked(&(*out)->base, NULL)), -EINVAL
 * with the reason in err (no option name), or -ENOMEM. */
int prober_parse_payload(const char *spec, Inferd__V1__GenerateRequest **out, char *err,
                         size_t errlen);

/* --- fault injection (fault.c; a debugging aid, not an API) --- */

/** 1 when POST /debug/fault is to be served: --enable-fault-injection and a loopback system
 * listener. */
int fault_enabled(const struct config *cfg);
/** Start-up: logs that fault injection is on, or warns that it was refused (non-loopback system
 * host, or no system port) and stays off. */
void fault_log_startup(const struct config *cfg);
/** The route row "fault": POST /debug/fault?mode=hang|error|stall|clear|slow&ms=N sets inf's
 * engine fault (200 JSON, 400 for a bad mode). Register it only when fault_enabled(), and let
 * only the system listener's scope name it. */
void fault_route(inference_t *inf, http_route_t *row);

#endif
