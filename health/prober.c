/* Canary and progress checks of the inference endpoints (see prober.h). Everything runs on the
 * loop: the timers, canary completions and success notes. Each endpoint keeps the times its
 * three checks are due (canary, canary timeout, progress tick); run_ep() does what is due at
 * the prober's clock's now, and one timer per endpoint wakes it for the earliest. Statuses go to
 * the registry only through health_endpoint_set(). */
#include "health/prober.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "health/health.h"
#include "metrics/inferd_metrics.h"
#include "server/base/clock.h"
#include "server/base/log.h"

#define NS 1000000000LL
/* The progress check looks this often: a tenth of the stall limit, within these bounds. */
#define TICK_MIN_NS (50LL * 1000000LL)
#define TICK_MAX_NS (1LL * NS)
/* Real successes refresh the endpoint's last_check at most this often. */
#define SUCCESS_CHECK_EVERY_NS (1LL * NS)

typedef struct probe_ep {
    health_prober_t *p;
    char *name;
    const health_probe_ops_t *ops;
    void *impl;
    struct event *timer; /* the earliest of the due times below */
    int64_t canary_due;  /* when no canary is in flight: the next look at the idle wait */
    int64_t timeout_due; /* the canary in flight's deadline */
    int64_t tick_due;    /* the next progress check */
    int64_t tick_period;
    void *canary; /* in flight, or NULL */
    int64_t canary_start_ns;
    int64_t last_canary_end_ns;
    int64_t idle_seen_ns; /* last progress tick that found no request in flight */
    int stalled;          /* the current stall was reported */
    int young_skipped;    /* the last canary was skipped for a busy period without tokens */
    int64_t last_success_set_ns;
    metrics_series_t *ok_s, *fail_s, *timeout_s, *dur_s;
} probe_ep_t;

struct health_prober {
    health_prober_options_t o;
    probe_ep_t **eps;
    size_t n_eps;
    health_change_fn prev_fn;
    void *prev_arg;
    int hooked;
};

static int64_t now_of(const health_prober_t *p)
{
    return p->o.now_ns ? p->o.now_ns(p->o.now_arg) : clock_now_ns();
}

/* ---------------------------------------------------------------- status and metrics */

static health_status_t ep_status(const probe_ep_t *ep)
{
    health_endpoint_info_t info;
    if (health_endpoint_get(ep->p->o.health, ep->name, 0, &info)) return HEALTH_UNKNOWN;
    return info.status;
}

/* health_status{endpoint}: 1 when the endpoint is SERVING and the server is not draining. */
static void update_gauges(health_prober_t *p)
{
    health_t *h = p->o.health;
    size_t n = health_endpoint_count(h);
    for (size_t i = 0; i < n; i++) {
        health_endpoint_info_t info;
        if (health_endpoint_get(h, NULL, i, &info)) continue;
        const char *lv[] = {info.endpoint};
        metrics_set(metrics_series(p->o.m->health_status, lv),
                    info.status == HEALTH_SERVING && !health_draining(h) ? 1.0 : 0.0);
    }
}

static void on_change(void *arg, const health_change_t *c)
{
    health_prober_t *p = arg;
    if (p->prev_fn) p->prev_fn(p->prev_arg, c);
    update_gauges(p);
}

static void set_status(probe_ep_t *ep, health_status_t st, const char *reason)
{
    health_endpoint_set(ep->p->o.health, ep->name, st, reason);
}

/* A failed check. A transition is logged by the registry; a failure that finds the endpoint
 * already NOT_SERVING (start-up, a long outage) is logged here so the log still says why. */
static void set_failed(probe_ep_t *ep, const char *reason)
{
    if (ep_status(ep) != HEALTH_SERVING)
        log_warn("health", "endpoint %s still NOT_SERVING: %s", ep->name, reason);
    set_status(ep, HEALTH_NOT_SERVING, reason);
}

/* ---------------------------------------------------------------- scheduling */

static int64_t next_due(const probe_ep_t *ep)
{
    int64_t c = ep->canary ? ep->timeout_due : ep->canary_due;
    return c < ep->tick_due ? c : ep->tick_due;
}

/* (Re)arms the endpoint's timer for its earliest due time. */
static void schedule(probe_ep_t *ep)
{
    if (!ep->timer) return;
    int64_t wait = next_due(ep) - now_of(ep->p);
    if (wait < 0) wait = 0;
    struct timeval tv = {(time_t)(wait / NS), (suseconds_t)(wait % NS / 1000)};
    evtimer_add(ep->timer, &tv);
}

/* ---------------------------------------------------------------- canary */

static void canary_finished(probe_ep_t *ep, int64_t now)
{
    ep->canary = NULL;
    ep->timeout_due = 0;
    ep->last_canary_end_ns = now;
    metrics_observe(ep->dur_s, (double)(now - ep->canary_start_ns) / 1e9);
    ep->canary_due = now + ep->p->o.canary_wait_ns;
}

static void canary_done(void *arg, int ok, const char *detail)
{
    probe_ep_t *ep = arg;
    int64_t now = now_of(ep->p);
    double ms = (double)(now - ep->canary_start_ns) / 1e6;
    if (ok) {
        metrics_inc(ep->ok_s);
        log_debug("health", "canary for %s passed in %.1f ms (finish: %s)", ep->name, ms,
                  detail ? detail : "?");
        set_status(ep, HEALTH_SERVING, "canary succeeded");
    } else {
        metrics_inc(ep->fail_s);
        char why[HEALTH_REASON_MAX];
        snprintf(why, sizeof why, "canary failed after %.0f ms: %.180s", ms,
                 detail && *detail ? detail : "no finish reason");
        set_failed(ep, why);
    }
    canary_finished(ep, now);
    schedule(ep);
}

static void canary_timeout(probe_ep_t *ep, int64_t now)
{
    /* done is not called; the implementation frees the request's slot */
    ep->ops->cancel(ep->impl, ep->canary);
    metrics_inc(ep->timeout_s);
    char why[HEALTH_REASON_MAX];
    snprintf(why, sizeof why,
             "canary did not complete within %.3gs (--health-check-request-timeout)",
             (double)ep->p->o.request_timeout_ns / 1e9);
    set_failed(ep, why);
    canary_finished(ep, now);
}

static void canary_fire(probe_ep_t *ep, int64_t now)
{
    const health_prober_options_t *o = &ep->p->o;
    int64_t wait = o->canary_wait_ns;
    health_progress_t st;
    ep->ops->progress(ep->impl, &st);
    /* Every success restarts the wait: checked here rather than re-armed on each one. */
    int64_t last =
        st.last_success_ns > ep->last_canary_end_ns ? st.last_success_ns : ep->last_canary_end_ns;
    if (last && now < last + wait) {
        ep->canary_due = last + wait;
        return;
    }
    /* Busy and producing tokens: the traffic is the evidence, and the progress check watches
     * it; a canary now would only take a slot or a queue place from a real request. Busy for
     * less than a wait with no token yet (first tokens still to come) is given one more wait,
     * not more: traffic that fails without producing anything must not hide a broken engine. */
    int producing = st.last_token_ns && now - st.last_token_ns < wait;
    int young = now - ep->idle_seen_ns < wait;
    if (st.inflight && ep_status(ep) == HEALTH_SERVING &&
        (producing || (young && !ep->young_skipped))) {
        ep->young_skipped = !producing;
        ep->canary_due = now + wait;
        return;
    }
    ep->young_skipped = 0;
    char err[256] = "";
    ep->canary_start_ns = now;
    void *canary = NULL;
    int rc = ep->ops->submit(ep->impl, canary_done, ep, &canary, err, sizeof err);
    if (rc == 0) {
        ep->canary = canary;
        ep->timeout_due = now + o->request_timeout_ns;
        return;
    }
    ep->canary_due = now + wait;
    if (rc == -EAGAIN && st.inflight) {
        /* Queue full of real requests: not a failure of the path; the progress check judges. */
        log_debug("health", "canary for %s skipped: admission queue full", ep->name);
        return;
    }
    metrics_inc(ep->fail_s);
    char why[HEALTH_REASON_MAX];
    snprintf(why, sizeof why, "canary could not be submitted: %.200s", *err ? err : strerror(-rc));
    set_failed(ep, why);
    ep->last_canary_end_ns = now;
}

/* ---------------------------------------------------------------- progress */

static void progress_tick(probe_ep_t *ep, int64_t now)
{
    health_progress_t st;
    ep->ops->progress(ep->impl, &st);
    /* A request paused because its own client does not read is not the engine's stall. */
    uint32_t active = st.inflight > st.paused ? st.inflight - st.paused : 0;
    if (!active) {
        ep->idle_seen_ns = now;
        ep->stalled = 0;
        return;
    }
    /* Busy since the last tick that saw it idle (at most a tick early), or producing since the
     * last token, whichever is later. */
    int64_t ref = st.last_token_ns > ep->idle_seen_ns ? st.last_token_ns : ep->idle_seen_ns;
    int64_t stall = ep->p->o.busy_stall_ns;
    if (now < ref || now - ref < stall) {
        ep->stalled = 0;
        return;
    }
    if (ep->stalled) return; /* reported once per episode */
    ep->stalled = 1;
    char why[HEALTH_REASON_MAX];
    snprintf(
        why, sizeof why,
        "no token produced for %.1fs with %u request%s in flight (--health-check-busy-stall %.3gs)",
        (double)(now - ref) / 1e9, st.inflight, st.inflight == 1 ? "" : "s", (double)stall / 1e9);
    set_failed(ep, why);
}

/* ---------------------------------------------------------------- running */

/* Does what is due at now: a timed-out canary first (its slot may be what a tick waits on),
 * then the progress check, then a canary when none is in flight. */
static void run_ep(probe_ep_t *ep, int64_t now)
{
    if (ep->canary && now >= ep->timeout_due) canary_timeout(ep, now);
    if (now >= ep->tick_due) {
        progress_tick(ep, now);
        ep->tick_due = now + ep->tick_period;
    }
    if (!ep->canary && now >= ep->canary_due) canary_fire(ep, now);
}

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    probe_ep_t *ep = arg;
    run_ep(ep, now_of(ep->p));
    schedule(ep);
}

int64_t health_prober_run(health_prober_t *p)
{
    int64_t now = now_of(p), next = INT64_MAX;
    for (size_t i = 0; i < p->n_eps; i++) {
        probe_ep_t *ep = p->eps[i];
        if (!ep->ops) continue; /* checks disabled */
        run_ep(ep, now);
        schedule(ep);
        int64_t d = next_due(ep);
        if (d < next) next = d;
    }
    return next;
}

void health_prober_note_success(health_prober_t *p, const char *endpoint)
{
    for (size_t i = 0; i < p->n_eps; i++) {
        probe_ep_t *ep = p->eps[i];
        if (strcmp(ep->name, endpoint)) continue;
        int64_t now = now_of(p);
        if (ep_status(ep) == HEALTH_SERVING &&
            now - ep->last_success_set_ns < SUCCESS_CHECK_EVERY_NS)
            return;
        ep->last_success_set_ns = now;
        set_status(ep, HEALTH_SERVING, "request succeeded");
        return;
    }
}

/* ---------------------------------------------------------------- lifecycle */

int health_prober_new(health_prober_t **out, const health_prober_options_t *opt, char *err,
                      size_t errlen)
{
    *out = NULL;
    if (!opt->health || !opt->m || opt->canary_wait_ns <= 0 || opt->request_timeout_ns <= 0 ||
        opt->busy_stall_ns <= 0) {
        snprintf(err, errlen, "health prober: %s",
                 !opt->health || !opt->m ? "no registry or metrics" : "timings must be > 0");
        return -EINVAL;
    }
    health_prober_t *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    p->o = *opt;
    health_get_on_change(p->o.health, &p->prev_fn, &p->prev_arg);
    health_on_change(p->o.health, on_change, p);
    p->hooked = 1;
    update_gauges(p);
    if (!p->o.enabled)
        log_info("health", "canary and progress checks disabled (--health-check-enabled=false): "
                           "endpoints are SERVING once loaded");
    else
        log_info("health",
                 "canary after %.3gs without a success (timeout %.3gs), busy stall %.3gs, "
                 "payload %s",
                 (double)p->o.canary_wait_ns / 1e9, (double)p->o.request_timeout_ns / 1e9,
                 (double)p->o.busy_stall_ns / 1e9, p->o.payload ? p->o.payload : "default");
    *out = p;
    return 0;
}

static void ep_free(probe_ep_t *ep)
{
    if (!ep) return;
    if (ep->canary) ep->ops->cancel(ep->impl, ep->canary);
    if (ep->timer) event_free(ep->timer);
    free(ep->name);
    free(ep);
}

int health_prober_add(health_prober_t *p, const char *endpoint, const health_probe_ops_t *ops,
                      void *impl, char *err, size_t errlen)
{
    health_endpoint_info_t info;
    if (health_endpoint_get(p->o.health, endpoint, 0, &info)) {
        snprintf(err, errlen, "health endpoint %s is not registered", endpoint);
        return -ENOENT;
    }
    for (size_t i = 0; i < p->n_eps; i++)
        if (!strcmp(p->eps[i]->name, endpoint)) {
            snprintf(err, errlen, "endpoint %s already watched", endpoint);
            return -EEXIST;
        }
    probe_ep_t **a = realloc(p->eps, (p->n_eps + 1) * sizeof *a);
    if (!a) goto oom;
    p->eps = a;
    probe_ep_t *ep = calloc(1, sizeof *ep);
    if (!ep) goto oom;
    ep->p = p;
    ep->name = strdup(endpoint);
    if (p->o.base && p->o.enabled) ep->timer = evtimer_new(p->o.base, on_timer, ep);
    inferd_metrics_t *m = p->o.m;
    const char *lv_ok[] = {endpoint, "success"}, *lv_fail[] = {endpoint, "failure"},
               *lv_to[] = {endpoint, "timeout"}, *lv[] = {endpoint};
    ep->ok_s = metrics_series(m->health_canary, lv_ok);
    ep->fail_s = metrics_series(m->health_canary, lv_fail);
    ep->timeout_s = metrics_series(m->health_canary, lv_to);
    ep->dur_s = metrics_series(m->health_canary_duration, lv);
    if (!ep->name || (p->o.base && p->o.enabled && !ep->timer)) {
        ep_free(ep);
        goto oom;
    }
    p->eps[p->n_eps++] = ep;
    if (!p->o.enabled) {
        set_status(ep, HEALTH_SERVING, "model loaded (health checks disabled)");
        return 0;
    }
    ep->ops = ops;
    ep->impl = impl;
    int64_t now = now_of(p);
    ep->idle_seen_ns = now;
    ep->tick_period = p->o.busy_stall_ns / 10;
    if (ep->tick_period < TICK_MIN_NS) ep->tick_period = TICK_MIN_NS;
    if (ep->tick_period > TICK_MAX_NS) ep->tick_period = TICK_MAX_NS;
    ep->tick_due = now + ep->tick_period;
    ep->canary_due = now; /* the first canary at once: readiness follows its result */
    schedule(ep);
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
}

void health_prober_free(health_prober_t *p)
{
    if (!p) return;
    for (size_t i = 0; i < p->n_eps; i++)
        ep_free(p->eps[i]);
    free(p->eps);
    if (p->hooked) health_on_change(p->o.health, p->prev_fn, p->prev_arg);
    free(p);
}
