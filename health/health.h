/* Health: the status registry, the grpc.health.v1.Health service (Check, Watch, List) and the
 * bodies of /live and /health (see DESIGN.md, "Health model").
 *
 * Services and when they are SERVING:
 *   "", "readiness"  not draining, and every inference endpoint SERVING (at least one registered;
 *                    "model loaded" is expressed by the engine holding its endpoints NOT_SERVING
 *                    until it is)
 *   "liveness"       until health_set_shutdown(): never depends on the engine or on draining
 *   one per endpoint's service ("inferd.v1.Inference" for endpoint "generate"): every endpoint
 *                    of that service SERVING, and not draining
 *
 * Threads: the registry belongs to the loop thread (the thread that called health_new(), which
 * must be the one that runs the event base). health_endpoint_set(), health_set_draining() and
 * health_set_shutdown() may be called from any thread: off the loop they are queued under a
 * mutex (latest status per endpoint wins: a flip shorter than a loop turn is not a state probes
 * need to hear) and applied on the loop through an event made active with event_active(), so
 * the base must be created after evthread_use_pthreads(). Everything else is loop-only.
 * Applying a change logs it, calls the change hook and pushes it to every Watch subscriber of
 * the services it moved, all within the same loop turn.
 */
#ifndef INFERD_HEALTH_HEALTH_H
#define INFERD_HEALTH_HEALTH_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include "server/core/grpc.h"
#include "server/core/http.h"

struct event_base;

typedef struct health health_t;

/** Serving status; values match grpc.health.v1.HealthCheckResponse.ServingStatus. */
typedef enum {
    HEALTH_UNKNOWN = 0,
    HEALTH_SERVING = 1,
    HEALTH_NOT_SERVING = 2,
    HEALTH_SERVICE_UNKNOWN = 3, /* Watch only: the service is not (yet) registered */
} health_status_t;

#define HEALTH_SERVICE_OVERALL ""
#define HEALTH_SERVICE_READINESS "readiness"
#define HEALTH_SERVICE_LIVENESS "liveness"
/** List answers RESOURCE_EXHAUSTED above this many services (gRFC A90). */
#define HEALTH_LIST_MAX 100
/** Longer reasons are truncated (at a UTF-8 boundary). */
#define HEALTH_REASON_MAX 256
/** Watch calls beyond this many are refused with RESOURCE_EXHAUSTED. */
#define HEALTH_WATCHERS_MAX 65536

/** "SERVING", "NOT_SERVING", "UNKNOWN", "SERVICE_UNKNOWN". */
const char *health_status_name(health_status_t status);

/** Parses DYN_SYSTEM_STARTING_HEALTH_STATUS: "notready" -> HEALTH_NOT_SERVING, "ready" ->
 * HEALTH_SERVING (case-insensitive). Returns 0 or -EINVAL. */
int health_parse_starting_status(const char *value, health_status_t *out);

/** Creates the registry with "", "readiness" and "liveness"; call it on the loop thread.
 * starting: the status endpoints have when added (HEALTH_NOT_SERVING for "notready", the
 * default; HEALTH_SERVING for "ready"). Returns 0 (*out set), -EINVAL (a NULL base or another
 * starting status), -ENOMEM; err (may be NULL with errlen 0) says why. */
int health_new(health_t **out, struct event_base *base, health_status_t starting, char *err,
               size_t errlen);
/** 1 once health_set_draining() (or _shutdown) was applied. Loop thread. */
int health_draining(const health_t *h);
/** Frees the registry (NULL is a no-op). Loop thread, after every thread that sets statuses has
 * stopped, and after Watch calls were ended (health_watch_close_all() or cancelled by the
 * server): remaining watcher records are dropped without touching their calls. The method rows
 * of health_grpc_methods() live in h: free h after the server's method table is gone. */
void health_free(health_t *h);

/** Registers an inference endpoint (e.g. "generate") reported as service (e.g.
 * "inferd.v1.Inference"; several endpoints may share one service). Its status starts at the
 * starting status of health_new() with reason "starting". Loop thread (start-up, or later: a
 * Watcher of the new service then hears its status). Returns 0, -EEXIST (endpoint already
 * registered), -EINVAL (empty or reserved names, too long: over 200 bytes), -EBUSY (called from
 * a change hook or watcher callback), -ENOMEM. */
int health_endpoint_add(health_t *h, const char *endpoint, const char *service);
/** Reports the result of a check of an endpoint: status HEALTH_SERVING, HEALTH_NOT_SERVING or
 * HEALTH_UNKNOWN (counts as not ready). Always records the check time; on a transition records
 * the reason (NULL: "") and the transition time, logs it and notifies. Any thread.
 * Returns 0, -ENOENT (unknown endpoint), -EINVAL (bad status). */
int health_endpoint_set(health_t *h, const char *endpoint, health_status_t status,
                        const char *reason);
/** Drain: every service but "liveness" NOT_SERVING at once, whatever the endpoints say. One way.
 * Any thread. Returns 0. */
int health_set_draining(health_t *h);
/** The very end of shutdown: draining, and "liveness" NOT_SERVING too. One way. Any thread.
 * Returns 0. */
int health_set_shutdown(health_t *h);

/** Current status of a service (NULL means ""). Loop thread. Returns 0 or -ENOENT. */
int health_get(const health_t *h, const char *service, health_status_t *status);
/** Services (names and statuses, either array may be NULL) in registration order: "",
 * "readiness", "liveness", then endpoint services. Returns how many there are (may exceed cap).
 * Pointers stay valid until h is freed. Loop thread. */
size_t health_services(const health_t *h, const char **names, health_status_t *statuses,
                       size_t cap);

/** An endpoint's recorded state. Strings are h's, valid until the next change. */
typedef struct health_endpoint_info {
    const char *endpoint;
    const char *service;
    health_status_t status;          /* the endpoint's own status (draining does not change it) */
    const char *reason;              /* reason given with the last transition */
    struct timespec last_check;      /* CLOCK_REALTIME of the last set; {0,0} when never */
    struct timespec last_transition; /* CLOCK_REALTIME of the last transition or of the add */
} health_endpoint_info_t;

/** Number of endpoints. Loop thread. */
size_t health_endpoint_count(const health_t *h);
/** Endpoint i (registration order) or by name (name NULL: use i). Loop thread.
 * Returns 0 or -ENOENT. */
int health_endpoint_get(const health_t *h, const char *endpoint, size_t i,
                        health_endpoint_info_t *out);

/** One transition. Endpoint transitions carry endpoint (its own status moved); service
 * transitions (the status a Check of service answers) carry endpoint NULL. */
typedef struct health_change {
    const char *service;
    const char *endpoint;
    health_status_t old_status;
    health_status_t new_status;
    const char *reason;
} health_change_t;
/** Called on the loop thread once per real transition (never for a set that keeps the status):
 * for an endpoint first, then for every service it moved. May call health_* setters (they are
 * applied after the current change is fully delivered). */
typedef void (*health_change_fn)(void *arg, const health_change_t *change);
/** Sets the change hook (metrics: health_status{endpoint}); fn NULL removes it. Loop thread. */
void health_on_change(health_t *h, health_change_fn fn, void *arg);
/** The hook set now (fn NULL when none), so a second user can chain it. Loop thread. */
void health_get_on_change(const health_t *h, health_change_fn *fn, void **arg);

/* --- watchers: what Watch is built on, usable by any push sink (loop thread only) --- */

typedef struct health_watcher health_watcher_t;
typedef struct health_watch_ops {
    /** Delivers a status. Returns 0 when sent, 1 when the sink is congested (not sent: the
     * owner calls health_watch_poke() once it drains), negative to drop the watcher (end()
     * follows with code -1). */
    int (*send)(void *arg, health_status_t status);
    /** The registry dropped the watcher: code >= 0 is the grpc_status_t given to
     * health_watch_close_all(), -1 a failed send. Release what arg holds. Not called after
     * health_watch_remove(). */
    void (*end)(void *arg, int code);
} health_watch_ops_t;

/** Subscribes to service (unknown ones report HEALTH_SERVICE_UNKNOWN until they appear) and
 * sends its current status at once; later sends happen only when the status differs from the
 * last one sent. Returns 0, -ENOMEM, -EBUSY (HEALTH_WATCHERS_MAX reached), -ESHUTDOWN
 * (health_watch_close_all() already ran), or the negative send() result (nothing registered,
 * end() not called in any of these cases). */
int health_watch_add(health_t *h, const char *service, const health_watch_ops_t *ops, void *arg,
                     health_watcher_t **out);
/** Unsubscribes (the owner's side: end() is not called). NULL is a no-op. */
void health_watch_remove(health_t *h, health_watcher_t *w);
/** Sends the current status if it differs from the last one sent (after congestion). */
void health_watch_poke(health_t *h, health_watcher_t *w);
/** Number of watchers. */
size_t health_watch_count(const health_t *h);
/** Final stage of shutdown: ends every watcher (gRPC Watch calls are finished with status and
 * "server shutting down") and refuses new ones: a later Watch gets the current status, then the
 * same status code. Watchers hear NOT_SERVING earlier, from health_set_draining(). */
void health_watch_close_all(health_t *h, grpc_status_t status);

/* --- grpc.health.v1.Health --- */

/** The method rows of grpc.health.v1.Health (Check, Watch, List; .arg = h, flags
 * GRPC_METHOD_PROBE), owned by h, for server_register(). *n receives the row count. Every call
 * returns the same rows. */
grpc_method_t *health_grpc_methods(health_t *h, size_t *n);

/* --- HTTP: /live and /health as routes of the core's table (core/http.h) --- */

/** The two route rows, "live" at live_path and "health" at health_path (GET and HEAD; the
 * paths must outlive the server), answering with the bodies below, for server_route_add(). */
void health_http_routes(health_t *h, const char *live_path, const char *health_path,
                        http_route_t rows[2]);

/* --- HTTP bodies (application/json; *body is malloc'd, the caller free()s it) --- */

/** /live: 200 {"status":"live"}, or 503 {"status":"shutting_down"} after health_set_shutdown().
 * Loop thread. Returns 0 or -ENOMEM. */
int health_live_body(health_t *h, char **body, size_t *len, int *http_status);
/** /health: 200 when readiness is SERVING, else 503, with
 * {"status":"ready"|"notready"|"shutting_down","uptime_seconds":N,"endpoints":{"generate":
 * {"status":"ready"|"notready","reason":"...","last_check":"2025-01-02T03:04:05.678Z"|null,
 * "last_transition":"..."}}} ("shutting_down" once draining). Loop thread. Returns 0 or -ENOMEM. */
int health_ready_body(health_t *h, char **body, size_t *len, int *http_status);

/* The canary and progress prober that drives the endpoints' statuses is health/prober.h. */

#endif
