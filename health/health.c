/* The status registry and its watchers. See health.h for the threading model. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/event.h>

#include "health/health_int.h"
#include "server/base/log.h"

#define NAME_MAX_LEN 200

const char *health_status_name(health_status_t status)
{
    switch (status) {
    case HEALTH_UNKNOWN:
        return "UNKNOWN";
    case HEALTH_SERVING:
        return "SERVING";
    case HEALTH_NOT_SERVING:
        return "NOT_SERVING";
    case HEALTH_SERVICE_UNKNOWN:
        return "SERVICE_UNKNOWN";
    }
    return "INVALID";
}

int health_parse_starting_status(const char *value, health_status_t *out)
{
    if (!value) return -EINVAL;
    if (strcasecmp(value, "notready") == 0)
        *out = HEALTH_NOT_SERVING;
    else if (strcasecmp(value, "ready") == 0)
        *out = HEALTH_SERVING;
    else
        return -EINVAL;
    return 0;
}

/* Copies at most cap-1 bytes without cutting a UTF-8 sequence in half. */
static void copy_reason(char *dst, size_t cap, const char *src)
{
    size_t n = src ? strlen(src) : 0;
    if (n >= cap) {
        n = cap - 1;
        while (n > 0 && ((unsigned char)src[n] & 0xC0) == 0x80)
            n--;
    }
    if (n) memcpy(dst, src, n);
    dst[n] = '\0';
}

static int on_loop(const health_t *h)
{
    return pthread_equal(pthread_self(), h->loop_thread);
}

static struct endpoint *find_endpoint(const health_t *h, const char *name)
{
    for (size_t i = 0; i < h->n_eps; i++)
        if (strcmp(h->eps[i]->name, name) == 0) return h->eps[i];
    return NULL;
}

static struct service *find_service(const health_t *h, const char *name)
{
    for (size_t i = 0; i < h->n_svcs; i++)
        if (strcmp(h->svcs[i].name, name) == 0) return &h->svcs[i];
    return NULL;
}

/* What svc should report now; reason (optional) says why. */
static health_status_t compute(const health_t *h, const struct service *svc, char *why, size_t cap)
{
    const char *w = NULL;
    health_status_t st = HEALTH_SERVING;
    if (svc->kind == SVC_LIVENESS) {
        if (h->shutdown) {
            st = HEALTH_NOT_SERVING;
            w = "shutting down";
        } else {
            w = "process up";
        }
        goto out;
    }
    if (h->draining) {
        st = HEALTH_NOT_SERVING;
        w = "draining";
        goto out;
    }
    size_t members = 0;
    for (size_t i = 0; i < h->n_eps; i++) {
        const struct endpoint *ep = h->eps[i];
        if (svc->kind == SVC_ENDPOINTS && strcmp(ep->service, svc->name) != 0) continue;
        members++;
        if (ep->status != HEALTH_SERVING) {
            if (why) snprintf(why, cap, "endpoint %s not ready: %s", ep->name, ep->reason);
            return HEALTH_NOT_SERVING;
        }
    }
    if (members == 0) {
        st = HEALTH_NOT_SERVING;
        w = "no inference endpoint";
    } else {
        w = "all endpoints ready";
    }
out:
    if (why) snprintf(why, cap, "%s", w);
    return st;
}

static void notify(health_t *h, const char *service, const char *endpoint, health_status_t old,
                   health_status_t new, const char *reason)
{
    if (!h->on_change) return;
    health_change_t c = {.service = service,
                         .endpoint = endpoint,
                         .old_status = old,
                         .new_status = new,
                         .reason = reason};
    h->on_change(h->on_change_arg, &c);
}

/* --- watchers --- */

static void unlink_free(health_t *h, health_watcher_t *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        h->watchers = w->next;
    if (w->next) w->next->prev = w->prev;
    free(w->service);
    free(w);
}

static void sweep(health_t *h)
{
    if (h->walking || !h->need_sweep) return;
    h->need_sweep = 0;
    health_watcher_t *w = h->watchers;
    while (w) {
        health_watcher_t *next = w->next;
        if (w->dead) unlink_free(h, w);
        w = next;
    }
}

/* Marks w gone; its memory goes now or at the end of the current walk. */
static void retire(health_t *h, health_watcher_t *w)
{
    w->dead = 1;
    h->n_watchers--;
    if (h->walking)
        h->need_sweep = 1;
    else
        unlink_free(h, w);
}

static void drop(health_t *h, health_watcher_t *w, int code)
{
    h->walking++;
    retire(h, w);
    w->ops->end(w->arg, code);
    h->walking--;
    sweep(h);
}

health_status_t health_watch_status(const health_t *h, const char *service)
{
    const struct service *svc = find_service(h, service ? service : "");
    return svc ? svc->status : HEALTH_SERVICE_UNKNOWN;
}

/* Sends the current status when it differs from the last sent. Caller holds a walk. */
static void push(health_t *h, health_watcher_t *w)
{
    if (w->dead) return;
    health_status_t st = health_watch_status(h, w->service);
    if (w->has_sent && w->last_sent == st) return;
    int rc = w->ops->send(w->arg, st);
    if (rc == 0) {
        w->has_sent = 1;
        w->last_sent = st;
    } else if (rc < 0 && !w->dead) {
        retire(h, w);
        w->ops->end(w->arg, -1);
    }
}

static void sync_watchers(health_t *h)
{
    h->walking++;
    for (health_watcher_t *w = h->watchers; w; w = w->next)
        push(h, w);
    h->walking--;
    sweep(h);
}

int health_watch_add(health_t *h, const char *service, const health_watch_ops_t *ops, void *arg,
                     health_watcher_t **out)
{
    if (h->watch_closed) return -ESHUTDOWN;
    if (h->n_watchers >= HEALTH_WATCHERS_MAX) return -EBUSY;
    health_watcher_t *w = calloc(1, sizeof(*w));
    if (!w) return -ENOMEM;
    w->service = strdup(service ? service : "");
    if (!w->service) {
        free(w);
        return -ENOMEM;
    }
    w->ops = ops;
    w->arg = arg;
    health_status_t st = health_watch_status(h, w->service);
    int rc = ops->send(arg, st);
    if (rc < 0) {
        free(w->service);
        free(w);
        return rc;
    }
    if (rc == 0) {
        w->has_sent = 1;
        w->last_sent = st;
    }
    w->next = h->watchers;
    if (h->watchers) h->watchers->prev = w;
    h->watchers = w;
    h->n_watchers++;
    if (out) *out = w;
    return 0;
}

void health_watch_remove(health_t *h, health_watcher_t *w)
{
    if (!w || w->dead) return;
    retire(h, w);
}

void health_watch_poke(health_t *h, health_watcher_t *w)
{
    if (!w) return;
    h->walking++;
    push(h, w);
    h->walking--;
    sweep(h);
}

size_t health_watch_count(const health_t *h)
{
    return h->n_watchers;
}

void health_watch_close_all(health_t *h, grpc_status_t status)
{
    if (!h->watch_closed)
        log_info("health", "ending %zu watch stream(s) with %s", h->n_watchers,
                 grpc_status_name(status));
    h->watch_closed = 1;
    h->close_status = status;
    h->walking++;
    for (health_watcher_t *w = h->watchers; w; w = w->next)
        if (!w->dead) drop(h, w, (int)status);
    h->walking--;
    sweep(h);
}

/* --- applying changes (loop thread) --- */

/* Recomputes every service, announces those that moved, then brings watchers up to date. */
static void reconcile(health_t *h)
{
    char why[HEALTH_REASON_MAX + 64];
    for (size_t i = 0; i < h->n_svcs; i++) {
        struct service *svc = &h->svcs[i];
        health_status_t st = compute(h, svc, why, sizeof(why));
        if (st == svc->status) continue;
        health_status_t old = svc->status;
        svc->status = st;
        /* "" mirrors readiness and endpoint services mirror the endpoint line: keep info quiet */
        log_level_t lvl = (svc->kind == SVC_ENDPOINTS && !h->draining) || svc->name[0] == '\0'
                              ? LOG_DEBUG
                              : LOG_INFO;
        if (log_enabled(lvl, "health")) {
            const char *fields[] = {
                "service", svc->name, "old", health_status_name(old), "new", health_status_name(st),
                "reason",  why,       NULL};
            log_write(lvl, "health", fields, "service \"%s\": %s -> %s (%s)", svc->name,
                      health_status_name(old), health_status_name(st), why);
        }
        notify(h, svc->name, NULL, old, st, why);
    }
    sync_watchers(h);
}

static void apply_endpoint(health_t *h, struct endpoint *ep, health_status_t st, const char *reason,
                           struct timespec when)
{
    ep->last_check = when;
    if (st == ep->status) return;
    health_status_t old = ep->status;
    ep->status = st;
    copy_reason(ep->reason, sizeof(ep->reason), reason);
    ep->last_transition = when;
    if (log_enabled(LOG_INFO, "health")) {
        const char *fields[] = {"endpoint", ep->name,
                                "service",  ep->service,
                                "old",      health_status_name(old),
                                "new",      health_status_name(st),
                                "reason",   ep->reason,
                                NULL};
        log_write(LOG_INFO, "health", fields, "endpoint %s (%s): %s -> %s (%s)", ep->name,
                  ep->service, health_status_name(old), health_status_name(st), ep->reason);
    }
    notify(h, ep->service, ep->name, old, st, ep->reason);
}

static void apply_flags(health_t *h, int draining, int shutdown)
{
    if (shutdown && !h->shutdown) {
        h->shutdown = 1;
        draining = 1;
    }
    if (draining && !h->draining) {
        h->draining = 1;
        log_info("health", "draining: every service but liveness is NOT_SERVING");
    }
}

static void on_apply(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    health_t *h = arg;
    h->applying = 1;
    pthread_mutex_lock(&h->mu);
    int draining = h->p_draining, shutdown = h->p_shutdown;
    h->p_draining = h->p_shutdown = 0;
    pthread_mutex_unlock(&h->mu);
    apply_flags(h, draining, shutdown);
    for (size_t i = 0; i < h->n_eps; i++) {
        struct endpoint *ep = h->eps[i];
        health_status_t st = HEALTH_UNKNOWN;
        char reason[HEALTH_REASON_MAX];
        struct timespec when = {0, 0};
        pthread_mutex_lock(&h->mu);
        int pending = ep->pending;
        if (pending) {
            ep->pending = 0;
            st = ep->p_status;
            memcpy(reason, ep->p_reason, sizeof(reason));
            when = ep->p_time;
        }
        pthread_mutex_unlock(&h->mu);
        if (pending) apply_endpoint(h, ep, st, reason, when);
    }
    reconcile(h);
    h->applying = 0;
}

/* --- lifecycle --- */

static int add_service(health_t *h, const char *name, enum service_kind kind)
{
    if (h->n_svcs == h->cap_svcs) {
        size_t cap = h->cap_svcs ? h->cap_svcs * 2 : 8;
        struct service *s = realloc(h->svcs, cap * sizeof(*s));
        if (!s) return -ENOMEM;
        h->svcs = s;
        h->cap_svcs = cap;
    }
    char *dup = strdup(name);
    if (!dup) return -ENOMEM;
    struct service *svc = &h->svcs[h->n_svcs++];
    svc->name = dup;
    svc->kind = kind;
    svc->status = HEALTH_UNKNOWN;
    svc->status = compute(h, svc, NULL, 0);
    return 0;
}

int health_new(health_t **out, struct event_base *base, health_status_t starting, char *err,
               size_t errlen)
{
    *out = NULL;
    if (!base || (starting != HEALTH_SERVING && starting != HEALTH_NOT_SERVING)) {
        snprintf(err, errlen, "health: %s", base ? "invalid starting status" : "no event base");
        return -EINVAL;
    }
    health_t *h = calloc(1, sizeof(*h));
    if (!h) goto oom;
    h->base = base;
    h->loop_thread = pthread_self();
    h->starting = starting;
    h->started_ns = clock_now_ns();
    if (pthread_mutex_init(&h->mu, NULL) != 0) goto fail_mutex;
    h->apply_ev = event_new(base, -1, 0, on_apply, h);
    if (!h->apply_ev) goto fail_event;
    if (add_service(h, HEALTH_SERVICE_OVERALL, SVC_OVERALL) < 0 ||
        add_service(h, HEALTH_SERVICE_READINESS, SVC_OVERALL) < 0 ||
        add_service(h, HEALTH_SERVICE_LIVENESS, SVC_LIVENESS) < 0)
        goto fail_services;
    *out = h;
    return 0;

fail_services:
    for (size_t i = 0; i < h->n_svcs; i++)
        free(h->svcs[i].name);
    free(h->svcs);
    event_free(h->apply_ev);
fail_event:
    pthread_mutex_destroy(&h->mu);
fail_mutex:
    free(h);
oom:
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
}

int health_draining(const health_t *h)
{
    return h->draining;
}

void health_free(health_t *h)
{
    if (!h) return;
    if (h->n_watchers)
        log_warn("health", "%zu watcher(s) left at exit: dropped without ending their calls",
                 h->n_watchers);
    while (h->watchers)
        unlink_free(h, h->watchers);
    event_free(h->apply_ev);
    for (size_t i = 0; i < h->n_eps; i++) {
        free(h->eps[i]->name);
        free(h->eps[i]->service);
        free(h->eps[i]);
    }
    free(h->eps);
    for (size_t i = 0; i < h->n_svcs; i++)
        free(h->svcs[i].name);
    free(h->svcs);
    pthread_mutex_destroy(&h->mu);
    free(h);
}

static int valid_name(const char *s)
{
    return s && s[0] && strlen(s) <= NAME_MAX_LEN;
}

int health_endpoint_add(health_t *h, const char *endpoint, const char *service)
{
    if (!valid_name(endpoint) || !valid_name(service) ||
        strcmp(service, HEALTH_SERVICE_READINESS) == 0 ||
        strcmp(service, HEALTH_SERVICE_LIVENESS) == 0)
        return -EINVAL;
    if (h->applying) return -EBUSY;
    if (find_endpoint(h, endpoint)) return -EEXIST;
    int new_service = find_service(h, service) == NULL;
    struct endpoint *ep = calloc(1, sizeof(*ep));
    if (!ep) return -ENOMEM;
    ep->name = strdup(endpoint);
    ep->service = strdup(service);
    if (!ep->name || !ep->service) goto fail;
    ep->status = h->starting;
    copy_reason(ep->reason, sizeof(ep->reason), "starting");
    clock_gettime(CLOCK_REALTIME, &ep->last_transition);

    pthread_mutex_lock(&h->mu);
    if (h->n_eps == h->cap_eps) {
        size_t cap = h->cap_eps ? h->cap_eps * 2 : 4;
        struct endpoint **a = realloc(h->eps, cap * sizeof(*a));
        if (!a) {
            pthread_mutex_unlock(&h->mu);
            goto fail;
        }
        h->eps = a;
        h->cap_eps = cap;
    }
    h->eps[h->n_eps++] = ep;
    pthread_mutex_unlock(&h->mu);

    h->applying = 1;
    if (new_service && add_service(h, service, SVC_ENDPOINTS) < 0) {
        /* the endpoint still counts for readiness; only its own service is missing */
        log_error("health", "out of memory adding service %s", service);
    }
    log_info("health", "endpoint %s (%s) added: %s", endpoint, service,
             health_status_name(ep->status));
    reconcile(h);
    h->applying = 0;
    return 0;

fail:
    free(ep->name);
    free(ep->service);
    free(ep);
    return -ENOMEM;
}

/* Off the loop, or re-entered from a change hook: store and let the loop apply it. */
static void queue_wake(health_t *h)
{
    event_active(h->apply_ev, 0, 1);
}

int health_endpoint_set(health_t *h, const char *endpoint, health_status_t status,
                        const char *reason)
{
    if (status != HEALTH_SERVING && status != HEALTH_NOT_SERVING && status != HEALTH_UNKNOWN)
        return -EINVAL;
    if (!endpoint) return -ENOENT;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    if (on_loop(h) && !h->applying) {
        struct endpoint *ep = find_endpoint(h, endpoint);
        if (!ep) return -ENOENT;
        h->applying = 1;
        apply_endpoint(h, ep, status, reason, now);
        reconcile(h);
        h->applying = 0;
        return 0;
    }
    pthread_mutex_lock(&h->mu);
    struct endpoint *ep = find_endpoint(h, endpoint);
    if (!ep) {
        pthread_mutex_unlock(&h->mu);
        return -ENOENT;
    }
    ep->pending = 1;
    ep->p_status = status;
    copy_reason(ep->p_reason, sizeof(ep->p_reason), reason);
    ep->p_time = now;
    pthread_mutex_unlock(&h->mu);
    queue_wake(h);
    return 0;
}

static int set_flags(health_t *h, int draining, int shutdown)
{
    if (on_loop(h) && !h->applying) {
        h->applying = 1;
        apply_flags(h, draining, shutdown);
        reconcile(h);
        h->applying = 0;
        return 0;
    }
    pthread_mutex_lock(&h->mu);
    h->p_draining |= draining;
    h->p_shutdown |= shutdown;
    pthread_mutex_unlock(&h->mu);
    queue_wake(h);
    return 0;
}

int health_set_draining(health_t *h)
{
    return set_flags(h, 1, 0);
}

int health_set_shutdown(health_t *h)
{
    return set_flags(h, 1, 1);
}

/* --- queries --- */

int health_get(const health_t *h, const char *service, health_status_t *status)
{
    const struct service *svc = find_service(h, service ? service : "");
    if (!svc) return -ENOENT;
    if (status) *status = svc->status;
    return 0;
}

size_t health_services(const health_t *h, const char **names, health_status_t *statuses, size_t cap)
{
    for (size_t i = 0; i < h->n_svcs && i < cap; i++) {
        if (names) names[i] = h->svcs[i].name;
        if (statuses) statuses[i] = h->svcs[i].status;
    }
    return h->n_svcs;
}

size_t health_endpoint_count(const health_t *h)
{
    return h->n_eps;
}

int health_endpoint_get(const health_t *h, const char *endpoint, size_t i,
                        health_endpoint_info_t *out)
{
    const struct endpoint *ep = endpoint       ? find_endpoint(h, endpoint)
                                : i < h->n_eps ? h->eps[i]
                                               : NULL;
    if (!ep) return -ENOENT;
    out->endpoint = ep->name;
    out->service = ep->service;
    out->status = ep->status;
    out->reason = ep->reason;
    out->last_check = ep->last_check;
    out->last_transition = ep->last_transition;
    return 0;
}

void health_on_change(health_t *h, health_change_fn fn, void *arg)
{
    h->on_change = fn;
    h->on_change_arg = arg;
}

void health_get_on_change(const health_t *h, health_change_fn *fn, void **arg)
{
    *fn = h->on_change;
    *arg = h->on_change_arg;
}
