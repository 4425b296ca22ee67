/* The health prober: canary and progress checks of the inference endpoints (DESIGN.md,
 * "Health model"), behind a small ops table an endpoint's implementation provides (inference
 * does: services/inference.c), so health knows nothing of requests or the engine.
 *
 * Per endpoint:
 *   canary    when the endpoint has seen no successful response for canary_wait
 *             (DYN_CANARY_WAIT_TIME), ops->submit sends a canary through the path real requests
 *             take. It passes when the whole response finished with a finish reason within
 *             request_timeout (DYN_HEALTH_CHECK_REQUEST_TIMEOUT); an error or a timeout (a
 *             stall after the first token ends as a timeout) fails it; a timed-out canary is
 *             cancelled (ops->cancel). A busy endpoint that keeps producing tokens gets no
 *             canary: traffic is the evidence.
 *   progress  real requests in flight (not paused by their own slow client) and no token for
 *             busy_stall (DYN_HEALTH_CHECK_BUSY_STALL): NOT_SERVING "no token produced for Ns
 *             with K requests in flight".
 *   recovery  the next success, canary or real (health_prober_note_success), sets SERVING.
 * Start-up: the first canary runs at once; with DYN_SYSTEM_STARTING_HEALTH_STATUS=notready the
 * endpoint is NOT_SERVING until it (or a real request) succeeds. With the checks disabled
 * nothing runs: the endpoint is set SERVING when added and stays so.
 * Metrics: health_canary_total{endpoint,result}, health_canary_duration_seconds{endpoint}, and
 * health_status{endpoint} (set from the registry's change hook, chained with any earlier hook).
 *
 * Time: each endpoint keeps the times its checks are due and one timer for the earliest; the
 * logic reads time only from the clock it is given, so tests drive it with a fake clock and
 * health_prober_run() instead of timers. Loop thread only. */
#ifndef INFERD_HEALTH_PROBER_H
#define INFERD_HEALTH_PROBER_H

#include <stddef.h>
#include <stdint.h>

#include "health/health.h"

struct event_base;
struct inferd_metrics;

typedef struct health_prober health_prober_t;

/** A canary's end: ok when it completed with a finish reason (detail: the reason's name),
 * otherwise detail says what failed. */
typedef void (*health_canary_done_fn)(void *arg, int ok, const char *detail);

/** What the prober reads from an endpoint (times in the prober's clock, ns; 0: never). */
typedef struct health_progress {
    int64_t last_success_ns; /* last request, real or canary, that completed with a reason */
    int64_t last_token_ns;   /* last token produced for any request */
    uint32_t inflight;       /* real requests in flight (canaries not counted) */
    uint32_t paused;         /* of those, paused because their own client stopped reading */
} health_progress_t;

/** The table an endpoint's implementation provides. Every call happens on the loop. */
typedef struct health_probe_ops {
    /** Submits one canary through the path real requests take. done(arg, ...) follows once, on
     * the loop and never from inside submit, unless cancel() comes first. Returns 0 (*canary
     * set), -EAGAIN (the admission queue is full), or another negative errno; err says why. */
    int (*submit)(void *impl, health_canary_done_fn done, void *arg, void **canary, char *err,
                  size_t errlen);
    /** Cancels a canary in flight (it timed out): done is not called. */
    void (*cancel)(void *impl, void *canary);
    /** The endpoint's current figures. */
    void (*progress)(void *impl, health_progress_t *out);
} health_probe_ops_t;

/** What the prober is built on (everything must outlive it). */
typedef struct health_prober_options {
    health_t *health;             /* statuses go here, through health_endpoint_set() only */
    struct event_base *base;      /* its timers; NULL: none, the caller runs health_prober_run() */
    int64_t (*now_ns)(void *arg); /* the clock (NULL: clock_now_ns, CLOCK_MONOTONIC) */
    void *now_arg;
    struct inferd_metrics *m;   /* health_canary_total, _duration_seconds, health_status */
    int enabled;                /* DYN_HEALTH_CHECK_ENABLED */
    int64_t canary_wait_ns;     /* DYN_CANARY_WAIT_TIME */
    int64_t request_timeout_ns; /* DYN_HEALTH_CHECK_REQUEST_TIMEOUT */
    int64_t busy_stall_ns;      /* DYN_HEALTH_CHECK_BUSY_STALL */
    const char *payload;        /* the canary, as the start-up log line names it */
} health_prober_options_t;

/** Creates the prober (no endpoint yet), hooks the registry's change hook for health_status
 * and logs the settings. Returns 0 (*out set), -EINVAL (no registry, or a timing not > 0),
 * -ENOMEM; err says why. */
int health_prober_new(health_prober_t **out, const health_prober_options_t *opt, char *err,
                      size_t errlen);
/** Watches endpoint (registered in the registry) through ops on impl and starts its checks: the
 * first canary is due at once. Returns 0, -ENOENT (endpoint not registered), -EEXIST (already
 * watched), -ENOMEM; err says why. */
int health_prober_add(health_prober_t *p, const char *endpoint, const health_probe_ops_t *ops,
                      void *impl, char *err, size_t errlen);
/** A real request of endpoint completed with a finish reason: SERVING "request succeeded" (at
 * most once a second while already SERVING). Unknown endpoints are ignored. */
void health_prober_note_success(health_prober_t *p, const char *endpoint);
/** Runs every check that is due now (the timers do this; with no event base the caller does).
 * Returns the earliest time (the prober's clock, ns) something is due next, or INT64_MAX. */
int64_t health_prober_run(health_prober_t *p);
/** Cancels canaries in flight, restores the change hook and frees. Before the endpoints'
 * implementations go. NULL is a no-op. */
void health_prober_free(health_prober_t *p);

#endif
