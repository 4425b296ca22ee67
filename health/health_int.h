/* Private to health/: the registry's layout, shared by its source files. */
#ifndef INFERD_HEALTH_HEALTH_INT_H
#define INFERD_HEALTH_HEALTH_INT_H

#include <pthread.h>
#include <time.h>
#include "health/health.h"
#include "server/base/clock.h"

enum service_kind { SVC_OVERALL, SVC_LIVENESS, SVC_ENDPOINTS };

struct endpoint {
    char *name;
    char *service;
    health_status_t status;
    char reason[HEALTH_REASON_MAX];
    struct timespec last_check;
    struct timespec last_transition;
    /* queued by other threads; under health.mu */
    int pending;
    health_status_t p_status;
    char p_reason[HEALTH_REASON_MAX];
    struct timespec p_time;
};

struct service {
    char *name;
    enum service_kind kind;
    health_status_t status; /* as last computed and announced */
};

struct health_watcher {
    struct health_watcher *prev, *next;
    char *service;
    const health_watch_ops_t *ops;
    void *arg;
    int has_sent;
    health_status_t last_sent;
    int dead; /* dropped while the list was being walked; freed by the sweep */
};

struct health {
    struct event_base *base;
    struct event *apply_ev;
    pthread_t loop_thread;
    health_status_t starting;
    int64_t started_ns; /* clock_now_ns() at health_new */

    /* Guards the pending fields and the endpoint array's shape (other threads look names up);
     * the loop reads the array without it, since only the loop changes it. */
    pthread_mutex_t mu;
    int p_draining, p_shutdown;

    struct endpoint **eps;
    size_t n_eps, cap_eps;
    struct service *svcs;
    size_t n_svcs, cap_svcs;
    int draining, shutdown;
    int applying; /* inside a change: setters on the loop queue instead of recursing */

    health_change_fn on_change;
    void *on_change_arg;

    struct health_watcher *watchers;
    size_t n_watchers;
    int walking;
    int need_sweep;
    int watch_closed;
    grpc_status_t close_status;

    grpc_method_t rows[3];
};

/** The status a Watch of service hears now (HEALTH_SERVICE_UNKNOWN when not registered). */
health_status_t health_watch_status(const health_t *h, const char *service);

#endif
