/* The status registry: transitions, aggregation, draining, recorded reasons and times, the
 * change hook, updates from other threads, and the watcher bookkeeping Watch is built on. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "fake.h"
#include "health/health.h"

#define INF "inferd.v1.Inference"

struct fixture {
    struct event_base *base;
    health_t *h;
};

static int setup_with(void **state, health_status_t starting)
{
    struct fixture *f = calloc(1, sizeof(*f));
    f->base = event_base_new();
    assert_non_null(f->base);
    assert_int_equal(health_new(&f->h, f->base, starting, NULL, 0), 0);
    assert_non_null(f->h);
    fake_log_reset();
    *state = f;
    return 0;
}

static int setup(void **state)
{
    return setup_with(state, HEALTH_NOT_SERVING);
}

static int setup_ready(void **state)
{
    return setup_with(state, HEALTH_SERVING);
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    health_free(f->h);
    event_base_free(f->base);
    free(f);
    return 0;
}

static health_status_t get(health_t *h, const char *service)
{
    health_status_t st = HEALTH_SERVICE_UNKNOWN;
    assert_int_equal(health_get(h, service, &st), 0);
    return st;
}

static void test_initial_notready(void **state)
{
    struct fixture *f = *state;
    health_t *h = f->h;
    /* no endpoint yet: nothing can serve inference */
    assert_int_equal(get(h, ""), HEALTH_NOT_SERVING);
    assert_int_equal(get(h, NULL), HEALTH_NOT_SERVING);
    assert_int_equal(get(h, "readiness"), HEALTH_NOT_SERVING);
    assert_int_equal(get(h, "liveness"), HEALTH_SERVING);
    health_status_t st;
    assert_int_equal(health_get(h, INF, &st), -ENOENT);
    assert_int_equal(health_get(h, "nope", &st), -ENOENT);

    assert_int_equal(health_endpoint_add(h, "generate", INF), 0);
    assert_int_equal(get(h, INF), HEALTH_NOT_SERVING);
    assert_int_equal(get(h, ""), HEALTH_NOT_SERVING);
    assert_int_equal(get(h, "liveness"), HEALTH_SERVING);

    const char *names[8];
    health_status_t sts[8];
    assert_int_equal(health_services(h, names, sts, 8), 4);
    assert_string_equal(names[0], "");
    assert_string_equal(names[1], "readiness");
    assert_string_equal(names[2], "liveness");
    assert_string_equal(names[3], INF);
    assert_int_equal(sts[2], HEALTH_SERVING);
    assert_int_equal(health_services(h, NULL, NULL, 0), 4);

    health_endpoint_info_t info;
    assert_int_equal(health_endpoint_get(h, "generate", 0, &info), 0);
    assert_int_equal(info.status, HEALTH_NOT_SERVING);
    assert_string_equal(info.reason, "starting");
    assert_int_equal(info.last_check.tv_sec, 0); /* never checked */
    assert_true(info.last_transition.tv_sec > 0);
}

static void test_initial_ready(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(health_endpoint_add(f->h, "generate", INF), 0);
    assert_int_equal(get(f->h, INF), HEALTH_SERVING);
    assert_int_equal(get(f->h, ""), HEALTH_SERVING);
    assert_int_equal(get(f->h, "readiness"), HEALTH_SERVING);
    /* a failed check still takes it down */
    assert_int_equal(health_endpoint_set(f->h, "generate", HEALTH_NOT_SERVING, "canary failed"), 0);
    assert_int_equal(get(f->h, ""), HEALTH_NOT_SERVING);
}

static void test_readiness_follows_endpoints(void **state)
{
    struct fixture *f = *state;
    health_t *h = f->h;
    assert_int_equal(health_endpoint_add(h, "generate", INF), 0);
    assert_int_equal(health_endpoint_add(h, "generate_stream", INF), 0); /* shares the service */
    assert_int_equal(health_endpoint_add(h, "embed", "inferd.v1.Embed"), 0);
    assert_int_equal(health_services(h, NULL, NULL, 0), 5);

    assert_int_equal(health_endpoint_set(h, "generate", HEALTH_SERVING, "ok"), 0);
    assert_int_equal(get(h, INF), HEALTH_NOT_SERVING); /* generate_stream not yet */
    assert_int_equal(health_endpoint_set(h, "generate_stream", HEALTH_SERVING, "ok"), 0);
    assert_int_equal(get(h, INF), HEALTH_SERVING);
    assert_int_equal(get(h, "readiness"), HEALTH_NOT_SERVING); /* embed not yet */
    assert_int_equal(health_endpoint_set(h, "embed", HEALTH_SERVING, "ok"), 0);
    assert_int_equal(get(h, "inferd.v1.Embed"), HEALTH_SERVING);
    assert_int_equal(get(h, "readiness"), HEALTH_SERVING);
    assert_int_equal(get(h, ""), HEALTH_SERVING);

    /* UNKNOWN counts as not ready */
    assert_int_equal(health_endpoint_set(h, "embed", HEALTH_UNKNOWN, "engine restarting"), 0);
    assert_int_equal(get(h, "inferd.v1.Embed"), HEALTH_NOT_SERVING);
    assert_int_equal(get(h, ""), HEALTH_NOT_SERVING);
    assert_int_equal(get(h, INF), HEALTH_SERVING);
    assert_int_equal(get(h, "liveness"), HEALTH_SERVING);
    assert_int_equal(health_endpoint_set(h, "embed", HEALTH_SERVING, "ok"), 0);
    assert_int_equal(get(h, ""), HEALTH_SERVING);
}

static void test_draining_and_shutdown(void **state)
{
    struct fixture *f = *state;
    health_t *h = f->h;
    assert_int_equal(health_endpoint_add(h, "generate", INF), 0);
    assert_int_equal(health_endpoint_set(h, "generate", HEALTH_SERVING, "ok"), 0);
    assert_int_equal(get(h, ""), HEALTH_SERVING);

    assert_int_equal(health_set_draining(h), 0);
    assert_int_equal(get(h, ""), HEALTH_NOT_SERVING);
    assert_int_equal(get(h, "readiness"), HEALTH_NOT_SERVING);
    assert_int_equal(get(h, INF), HEALTH_NOT_SERVING);
    assert_int_equal(get(h, "liveness"), HEALTH_SERVING);
    /* the endpoint keeps its own status, but cannot bring services back */
    health_endpoint_info_t info;
    assert_int_equal(health_endpoint_get(h, "generate", 0, &info), 0);
    assert_int_equal(info.status, HEALTH_SERVING);
    assert_int_equal(health_endpoint_set(h, "generate", HEALTH_NOT_SERVING, "x"), 0);
    assert_int_equal(health_endpoint_set(h, "generate", HEALTH_SERVING, "y"), 0);
    assert_int_equal(get(h, INF), HEALTH_NOT_SERVING);
    assert_int_equal(get(h, ""), HEALTH_NOT_SERVING);
    assert_int_equal(health_set_draining(h), 0); /* idempotent */
    assert_int_equal(get(h, "liveness"), HEALTH_SERVING);

    assert_int_equal(health_set_shutdown(h), 0);
    assert_int_equal(get(h, "liveness"), HEALTH_NOT_SERVING);
    assert_int_equal(get(h, ""), HEALTH_NOT_SERVING);
}

static void test_shutdown_implies_draining(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(health_endpoint_add(f->h, "generate", INF), 0);
    assert_int_equal(health_set_shutdown(f->h), 0);
    assert_int_equal(get(f->h, "liveness"), HEALTH_NOT_SERVING);
    assert_int_equal(get(f->h, "readiness"), HEALTH_NOT_SERVING);
    assert_int_equal(get(f->h, INF), HEALTH_NOT_SERVING);
}

static void test_liveness_ignores_endpoints(void **state)
{
    struct fixture *f = *state;
    health_t *h = f->h;
    assert_int_equal(health_endpoint_add(h, "generate", INF), 0);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(
            health_endpoint_set(h, "generate", i % 2 ? HEALTH_SERVING : HEALTH_NOT_SERVING, "flap"),
            0);
        assert_int_equal(get(h, "liveness"), HEALTH_SERVING);
    }
}

static int64_t ns(struct timespec t)
{
    return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}

static int64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    return ns(t);
}

static void test_reason_and_time(void **state)
{
    struct fixture *f = *state;
    health_t *h = f->h;
    assert_int_equal(health_endpoint_add(h, "generate", INF), 0);

    int64_t before = now_ns();
    assert_int_equal(health_endpoint_set(h, "generate", HEALTH_SERVING, "canary passed"), 0);
    int64_t after = now_ns();
    health_endpoint_info_t a;
    assert_int_equal(health_endpoint_get(h, "generate", 0, &a), 0);
    assert_string_equal(a.endpoint, "generate");
    assert_string_equal(a.service, INF);
    assert_int_equal(a.status, HEALTH_SERVING);
    assert_string_equal(a.reason, "canary passed");
    assert_true(ns(a.last_check) >= before && ns(a.last_check) <= after);
    assert_true(ns(a.last_transition) == ns(a.last_check));
    struct timespec t1 = a.last_transition;

    usleep(2000);
    /* same status: a check, not a transition: reason and transition time stay */
    assert_int_equal(health_endpoint_set(h, "generate", HEALTH_SERVING, "request succeeded"), 0);
    health_endpoint_info_t b;
    assert_int_equal(health_endpoint_get(h, NULL, 0, &b), 0); /* by index */
    assert_string_equal(b.reason, "canary passed");
    assert_true(ns(b.last_transition) == ns(t1));
    assert_true(ns(b.last_check) > ns(t1));

    assert_int_equal(health_endpoint_set(h, "generate", HEALTH_NOT_SERVING, NULL), 0);
    assert_int_equal(health_endpoint_get(h, "generate", 0, &b), 0);
    assert_string_equal(b.reason, "");
    assert_true(ns(b.last_transition) > ns(t1));

    assert_int_equal(health_endpoint_get(h, "nope", 0, &b), -ENOENT);
    assert_int_equal(health_endpoint_get(h, NULL, 1, &b), -ENOENT);
    assert_int_equal(health_endpoint_count(h), 1);
}

static void test_reason_truncated_on_utf8_boundary(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(health_endpoint_add(f->h, "generate", INF), 0);
    char reason[HEALTH_REASON_MAX * 2];
    size_t n = 0;
    while (n + 2 < sizeof(reason) - 1) {
        reason[n++] = (char)0xC3; /* "é" */
        reason[n++] = (char)0xA9;
    }
    reason[n] = '\0';
    assert_int_equal(health_endpoint_set(f->h, "generate", HEALTH_SERVING, reason), 0);
    health_endpoint_info_t info;
    assert_int_equal(health_endpoint_get(f->h, "generate", 0, &info), 0);
    size_t len = strlen(info.reason);
    assert_true(len < HEALTH_REASON_MAX);
    assert_int_equal(len % 2, 0);
    assert_int_equal(memcmp(info.reason, reason, len), 0);
}

static void test_errors(void **state)
{
    struct fixture *f = *state;
    health_t *h = f->h;
    assert_int_equal(health_endpoint_add(h, "generate", INF), 0);
    assert_int_equal(health_endpoint_add(h, "generate", INF), -EEXIST);
    assert_int_equal(health_endpoint_add(h, "", INF), -EINVAL);
    assert_int_equal(health_endpoint_add(h, "x", ""), -EINVAL);
    assert_int_equal(health_endpoint_add(h, "x", "readiness"), -EINVAL);
    assert_int_equal(health_endpoint_add(h, "x", "liveness"), -EINVAL);
    assert_int_equal(health_endpoint_add(h, NULL, INF), -EINVAL);
    char longname[300];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    assert_int_equal(health_endpoint_add(h, longname, INF), -EINVAL);
    assert_int_equal(health_endpoint_set(h, "nope", HEALTH_SERVING, "x"), -ENOENT);
    assert_int_equal(health_endpoint_set(h, NULL, HEALTH_SERVING, "x"), -ENOENT);
    assert_int_equal(health_endpoint_set(h, "generate", HEALTH_SERVICE_UNKNOWN, "x"), -EINVAL);
    assert_int_equal(health_endpoint_set(h, "generate", (health_status_t)42, "x"), -EINVAL);
    health_t *bad;
    char err[100];
    assert_int_equal(health_new(&bad, NULL, HEALTH_NOT_SERVING, err, sizeof err), -EINVAL);
    assert_null(bad);
    assert_int_equal(health_new(&bad, f->base, HEALTH_UNKNOWN, err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "starting status"));
    health_free(NULL);
}

static void test_parse_starting_status(void **state)
{
    (void)state;
    health_status_t st;
    assert_int_equal(health_parse_starting_status("notready", &st), 0);
    assert_int_equal(st, HEALTH_NOT_SERVING);
    assert_int_equal(health_parse_starting_status("ready", &st), 0);
    assert_int_equal(st, HEALTH_SERVING);
    assert_int_equal(health_parse_starting_status("READY", &st), 0);
    assert_int_equal(st, HEALTH_SERVING);
    assert_int_equal(health_parse_starting_status("", &st), -EINVAL);
    assert_int_equal(health_parse_starting_status("yes", &st), -EINVAL);
    assert_int_equal(health_parse_starting_status(NULL, &st), -EINVAL);
    assert_string_equal(health_status_name(HEALTH_SERVING), "SERVING");
    assert_string_equal(health_status_name(HEALTH_NOT_SERVING), "NOT_SERVING");
    assert_string_equal(health_status_name(HEALTH_UNKNOWN), "UNKNOWN");
    assert_string_equal(health_status_name(HEALTH_SERVICE_UNKNOWN), "SERVICE_UNKNOWN");
}

/* --- change hook --- */

#define MAX_CHANGES 64
struct changes {
    int n;
    struct {
        char service[64];
        char endpoint[64]; /* "" for service changes */
        health_status_t old_status, new_status;
        char reason[300];
        pthread_t thread;
    } c[MAX_CHANGES];
    health_t *h;
    struct event_base *base;
    health_status_t break_when_ready; /* loopbreak when readiness reaches this */
    int reenter;                      /* set an endpoint from inside the hook */
};

static void record(void *arg, const health_change_t *c)
{
    struct changes *r = arg;
    assert_true(r->n < MAX_CHANGES);
    assert_true(c->old_status != c->new_status);
    snprintf(r->c[r->n].service, sizeof(r->c[0].service), "%s", c->service);
    snprintf(r->c[r->n].endpoint, sizeof(r->c[0].endpoint), "%s", c->endpoint ? c->endpoint : "");
    r->c[r->n].old_status = c->old_status;
    r->c[r->n].new_status = c->new_status;
    snprintf(r->c[r->n].reason, sizeof(r->c[0].reason), "%s", c->reason ? c->reason : "");
    r->c[r->n].thread = pthread_self();
    r->n++;
    if (r->reenter && c->endpoint && c->new_status == HEALTH_NOT_SERVING) {
        r->reenter = 0;
        /* re-entered from the hook: applied after this change is fully delivered */
        assert_int_equal(health_endpoint_set(r->h, "generate", HEALTH_SERVING, "recovered"), 0);
    }
    if (r->base && strcmp(c->service, "readiness") == 0 && c->new_status == r->break_when_ready)
        event_base_loopbreak(r->base);
}

static int count_endpoint_changes(const struct changes *r)
{
    int n = 0;
    for (int i = 0; i < r->n; i++)
        n += r->c[i].endpoint[0] != '\0';
    return n;
}

static int find_change(const struct changes *r, const char *service, int endpoint)
{
    for (int i = 0; i < r->n; i++)
        if (strcmp(r->c[i].service, service) == 0 && (r->c[i].endpoint[0] != '\0') == endpoint)
            return i;
    return -1;
}

static void test_change_hook_once_per_transition(void **state)
{
    struct fixture *f = *state;
    health_t *h = f->h;
    struct changes r = {0};
    health_on_change(h, record, &r);
    assert_int_equal(health_endpoint_add(h, "generate", INF), 0);
    assert_int_equal(r.n, 0); /* a new service starting NOT_SERVING moves nothing */

    int info0 = fake_log_count(LOG_INFO);
    assert_int_equal(health_endpoint_set(h, "generate", HEALTH_SERVING, "canary passed"), 0);
    /* endpoint, then its service, "", readiness */
    assert_int_equal(r.n, 4);
    assert_string_equal(r.c[0].endpoint, "generate");
    assert_string_equal(r.c[0].service, INF);
    assert_int_equal(r.c[0].old_status, HEALTH_NOT_SERVING);
    assert_int_equal(r.c[0].new_status, HEALTH_SERVING);
    assert_string_equal(r.c[0].reason, "canary passed");
    assert_true(find_change(&r, INF, 0) > 0);
    assert_true(find_change(&r, "", 0) > 0);
    assert_true(find_change(&r, "readiness", 0) > 0);
    assert_int_equal(find_change(&r, "liveness", 0), -1);
    /* one info line for the endpoint (with names, statuses, reason), one for readiness */
    assert_int_equal(fake_log_count(LOG_INFO) - info0, 2);

    /* same status again: a check, no transition */
    int n = r.n;
    info0 = fake_log_count(LOG_INFO);
    assert_int_equal(health_endpoint_set(h, "generate", HEALTH_SERVING, "request succeeded"), 0);
    assert_int_equal(health_endpoint_set(h, "generate", HEALTH_SERVING, "canary passed"), 0);
    assert_int_equal(r.n, n);
    assert_int_equal(fake_log_count(LOG_INFO), info0);

    assert_int_equal(health_endpoint_set(h, "generate", HEALTH_NOT_SERVING, "canary timed out"), 0);
    assert_int_equal(r.n, n + 4);
    assert_int_equal(count_endpoint_changes(&r), 2);
    const char *line = fake_log_last(LOG_INFO);
    assert_non_null(strstr(line, "readiness"));
    assert_non_null(strstr(line, "SERVING -> NOT_SERVING"));
    assert_non_null(strstr(line, "canary timed out"));

    /* draining: services move, endpoints do not */
    n = r.n;
    health_endpoint_set(h, "generate", HEALTH_SERVING, "ok");
    n = r.n;
    assert_int_equal(health_set_draining(h), 0);
    assert_int_equal(r.n, n + 3); /* "", readiness, INF */
    assert_int_equal(count_endpoint_changes(&r), 3);
    assert_int_equal(health_set_draining(h), 0);
    assert_int_equal(r.n, n + 3);
    assert_int_equal(health_set_shutdown(h), 0);
    assert_int_equal(r.n, n + 4);
    assert_string_equal(r.c[r.n - 1].service, "liveness");
    assert_int_equal(r.c[r.n - 1].new_status, HEALTH_NOT_SERVING);

    health_on_change(h, NULL, NULL);
    assert_int_equal(health_endpoint_set(h, "generate", HEALTH_NOT_SERVING, "x"), 0);
    assert_int_equal(r.n, n + 4);
}

static void test_reentrant_set_from_hook(void **state)
{
    struct fixture *f = *state;
    health_t *h = f->h;
    struct changes r = {.h = h, .reenter = 1};
    assert_int_equal(health_endpoint_add(h, "generate", INF), 0);
    assert_int_equal(health_endpoint_set(h, "generate", HEALTH_SERVING, "ok"), 0);
    health_on_change(h, record, &r);
    assert_int_equal(health_endpoint_set(h, "generate", HEALTH_NOT_SERVING, "fail"), 0);
    /* the hook's own set waits for the loop */
    assert_int_equal(get(h, ""), HEALTH_NOT_SERVING);
    assert_int_equal(health_endpoint_add(h, "other", INF), 0);
    assert_int_equal(health_endpoint_set(h, "other", HEALTH_SERVING, "ok"), 0);
    event_base_loop(f->base, EVLOOP_NONBLOCK);
    assert_int_equal(get(h, ""), HEALTH_SERVING);
    health_endpoint_info_t info;
    assert_int_equal(health_endpoint_get(h, "generate", 0, &info), 0);
    assert_string_equal(info.reason, "recovered");
}

/* --- other threads --- */

struct setter_arg {
    health_t *h;
    const char *endpoint; /* NULL: "generate" */
    health_status_t status;
    const char *reason;
    int delay_us;
    int drain;
    int rc;
};

static void *setter(void *p)
{
    struct setter_arg *a = p;
    if (a->delay_us) usleep(a->delay_us);
    a->rc = a->drain ? health_set_draining(a->h)
                     : health_endpoint_set(a->h, a->endpoint ? a->endpoint : "generate", a->status,
                                           a->reason);
    return NULL;
}

static void test_update_from_thread_applied_on_loop(void **state)
{
    struct fixture *f = *state;
    health_t *h = f->h;
    struct changes r = {0};
    health_on_change(h, record, &r);
    assert_int_equal(health_endpoint_add(h, "generate", INF), 0);

    struct setter_arg a = {.h = h, .status = HEALTH_SERVING, .reason = "canary passed"};
    pthread_t t;
    int64_t before = now_ns();
    assert_int_equal(pthread_create(&t, NULL, setter, &a), 0);
    pthread_join(t, NULL);
    assert_int_equal(a.rc, 0);
    /* queued, not applied: the registry belongs to the loop */
    assert_int_equal(get(h, ""), HEALTH_NOT_SERVING);
    assert_int_equal(r.n, 0);
    usleep(1000);
    event_base_loop(f->base, EVLOOP_NONBLOCK);
    assert_int_equal(get(h, ""), HEALTH_SERVING);
    assert_int_equal(get(h, INF), HEALTH_SERVING);
    assert_int_equal(r.n, 4);
    for (int i = 0; i < r.n; i++)
        assert_true(pthread_equal(r.c[i].thread, pthread_self()));
    /* the check time is when the thread reported, not when the loop applied it */
    health_endpoint_info_t info;
    assert_int_equal(health_endpoint_get(h, "generate", 0, &info), 0);
    assert_string_equal(info.reason, "canary passed");
    assert_true(ns(info.last_check) >= before && now_ns() - ns(info.last_check) >= 1000000);

    /* unknown endpoint is refused at once on any thread */
    struct setter_arg bad = {.h = h, .endpoint = "nope", .status = HEALTH_SERVING, .reason = "x"};
    assert_int_equal(pthread_create(&t, NULL, setter, &bad), 0);
    pthread_join(t, NULL);
    assert_int_equal(bad.rc, -ENOENT);
}

static void keepalive_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

static void timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    int *timed_out = arg;
    *timed_out = 1;
}

static void test_update_from_thread_wakes_running_loop(void **state)
{
    struct fixture *f = *state;
    health_t *h = f->h;
    struct changes r = {.base = f->base, .break_when_ready = HEALTH_SERVING};
    health_on_change(h, record, &r);
    assert_int_equal(health_endpoint_add(h, "generate", INF), 0);

    int timed_out = 0;
    struct timeval two_s = {2, 0}, long_tv = {3600, 0};
    struct event *keep = event_new(f->base, -1, EV_PERSIST, keepalive_cb, NULL);
    struct event *to = evtimer_new(f->base, timeout_cb, &timed_out);
    event_add(keep, &long_tv);
    event_add(to, &two_s);

    struct setter_arg a = {.h = h, .status = HEALTH_SERVING, .reason = "ok", .delay_us = 20000};
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, setter, &a), 0);
    event_base_loop(f->base, EVLOOP_ONCE); /* blocks until woken by the thread's event_active */
    while (get(h, "readiness") != HEALTH_SERVING && !timed_out)
        event_base_loop(f->base, EVLOOP_ONCE);
    pthread_join(t, NULL);
    assert_false(timed_out);
    assert_int_equal(get(h, "readiness"), HEALTH_SERVING);

    /* draining from another thread (a signal thread, say) */
    r.break_when_ready = HEALTH_NOT_SERVING;
    struct setter_arg d = {.h = h, .drain = 1, .delay_us = 5000};
    assert_int_equal(pthread_create(&t, NULL, setter, &d), 0);
    while (get(h, "readiness") != HEALTH_NOT_SERVING && !timed_out)
        event_base_loop(f->base, EVLOOP_ONCE);
    pthread_join(t, NULL);
    assert_false(timed_out);
    assert_int_equal(get(h, INF), HEALTH_NOT_SERVING);
    assert_int_equal(get(h, "liveness"), HEALTH_SERVING);
    event_free(keep);
    event_free(to);
}

struct hammer_arg {
    health_t *h;
    int id;
};

static void *hammer(void *p)
{
    struct hammer_arg *a = p;
    for (int i = 0; i < 2000; i++)
        assert_int_equal(health_endpoint_set(a->h, a->id % 2 ? "generate" : "embed",
                                             i % 2 ? HEALTH_SERVING : HEALTH_NOT_SERVING, "hammer"),
                         0);
    /* end on SERVING so the final state is known */
    health_endpoint_set(a->h, a->id % 2 ? "generate" : "embed", HEALTH_SERVING, "final");
    return NULL;
}

static void test_many_threads(void **state)
{
    struct fixture *f = *state;
    health_t *h = f->h;
    assert_int_equal(health_endpoint_add(h, "generate", INF), 0);
    assert_int_equal(health_endpoint_add(h, "embed", "inferd.v1.Embed"), 0);
    pthread_t t[4];
    struct hammer_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (struct hammer_arg){h, i};
        assert_int_equal(pthread_create(&t[i], NULL, hammer, &a[i]), 0);
    }
    for (int k = 0; k < 50; k++)
        event_base_loop(f->base, EVLOOP_NONBLOCK);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    event_base_loop(f->base, EVLOOP_NONBLOCK);
    assert_int_equal(get(h, ""), HEALTH_SERVING);
}

/* --- watchers --- */

struct sink {
    int n;
    health_status_t got[32];
    int congested;
    int fail;
    int ended;
    int end_code;
    health_t *h;
    health_watcher_t *self;
    int remove_self_on_send; /* the owner unsubscribes from inside send */
};

static int sink_send(void *arg, health_status_t st)
{
    struct sink *s = arg;
    if (s->fail) return -EPIPE;
    if (s->congested) return 1;
    assert_true(s->n < 32);
    s->got[s->n++] = st;
    if (s->remove_self_on_send && s->self) {
        health_watch_remove(s->h, s->self);
        s->self = NULL;
    }
    return 0;
}

static void sink_end(void *arg, int code)
{
    struct sink *s = arg;
    s->ended++;
    s->end_code = code;
}

static const health_watch_ops_t sink_ops = {sink_send, sink_end};

static void test_watch_bookkeeping(void **state)
{
    struct fixture *f = *state;
    health_t *h = f->h;
    struct sink all = {0}, inf = {0}, live = {0};
    health_watcher_t *w_all, *w_inf, *w_live;
    assert_int_equal(health_watch_add(h, "", &sink_ops, &all, &w_all), 0);
    assert_int_equal(health_watch_add(h, INF, &sink_ops, &inf, &w_inf), 0);
    assert_int_equal(health_watch_add(h, "liveness", &sink_ops, &live, &w_live), 0);
    assert_int_equal(health_watch_count(h), 3);
    /* the current status at once; an unknown service says so */
    assert_int_equal(all.n, 1);
    assert_int_equal(all.got[0], HEALTH_NOT_SERVING);
    assert_int_equal(inf.n, 1);
    assert_int_equal(inf.got[0], HEALTH_SERVICE_UNKNOWN);
    assert_int_equal(live.got[0], HEALTH_SERVING);

    /* the service appears: its watcher hears its status */
    assert_int_equal(health_endpoint_add(h, "generate", INF), 0);
    assert_int_equal(inf.n, 2);
    assert_int_equal(inf.got[1], HEALTH_NOT_SERVING);
    assert_int_equal(all.n, 1); /* "" did not change */

    assert_int_equal(health_endpoint_set(h, "generate", HEALTH_SERVING, "ok"), 0);
    assert_int_equal(all.n, 2);
    assert_int_equal(all.got[1], HEALTH_SERVING);
    assert_int_equal(inf.n, 3);
    assert_int_equal(inf.got[2], HEALTH_SERVING);
    assert_int_equal(live.n, 1);
    /* no change, no message */
    assert_int_equal(health_endpoint_set(h, "generate", HEALTH_SERVING, "ok"), 0);
    assert_int_equal(all.n, 2);

    /* congested: nothing sent; after the drain only the latest status, and only if it differs */
    all.congested = 1;
    assert_int_equal(health_endpoint_set(h, "generate", HEALTH_NOT_SERVING, "x"), 0);
    assert_int_equal(health_endpoint_set(h, "generate", HEALTH_SERVING, "y"), 0);
    assert_int_equal(health_endpoint_set(h, "generate", HEALTH_NOT_SERVING, "z"), 0);
    assert_int_equal(all.n, 2);
    all.congested = 0;
    health_watch_poke(h, w_all);
    assert_int_equal(all.n, 3);
    assert_int_equal(all.got[2], HEALTH_NOT_SERVING);
    health_watch_poke(h, w_all);
    assert_int_equal(all.n, 3);
    assert_int_equal(inf.n, 6); /* inf saw every change */

    /* owner unsubscribes: no more sends, end() not called */
    health_watch_remove(h, w_inf);
    assert_int_equal(health_watch_count(h), 2);
    assert_int_equal(health_endpoint_set(h, "generate", HEALTH_SERVING, "ok"), 0);
    assert_int_equal(inf.n, 6);
    assert_int_equal(inf.ended, 0);
    health_watch_remove(h, NULL);

    /* a failed send drops the watcher and ends it with -1 */
    all.fail = 1;
    assert_int_equal(health_endpoint_set(h, "generate", HEALTH_NOT_SERVING, "x"), 0);
    assert_int_equal(all.ended, 1);
    assert_int_equal(all.end_code, -1);
    assert_int_equal(health_watch_count(h), 1);

    /* draining: liveness watchers hear nothing; shutdown: they hear NOT_SERVING */
    assert_int_equal(health_set_draining(h), 0);
    assert_int_equal(live.n, 1);
    assert_int_equal(health_set_shutdown(h), 0);
    assert_int_equal(live.n, 2);
    assert_int_equal(live.got[1], HEALTH_NOT_SERVING);

    health_watch_close_all(h, GRPC_STATUS_UNAVAILABLE);
    assert_int_equal(live.ended, 1);
    assert_int_equal(live.end_code, GRPC_STATUS_UNAVAILABLE);
    assert_int_equal(health_watch_count(h), 0);
    struct sink late = {0};
    health_watcher_t *w;
    assert_int_equal(health_watch_add(h, "", &sink_ops, &late, &w), -ESHUTDOWN);
    assert_int_equal(late.n, 0);
}

static void test_watch_remove_inside_send(void **state)
{
    struct fixture *f = *state;
    health_t *h = f->h;
    assert_int_equal(health_endpoint_add(h, "generate", INF), 0);
    struct sink s[3] = {{0}};
    for (int i = 0; i < 3; i++) {
        s[i].h = h;
        assert_int_equal(health_watch_add(h, "", &sink_ops, &s[i], &s[i].self), 0);
    }
    s[1].remove_self_on_send = 1;
    assert_int_equal(health_endpoint_set(h, "generate", HEALTH_SERVING, "ok"), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(s[i].n, 2);
    assert_int_equal(health_watch_count(h), 2);
    assert_int_equal(health_endpoint_set(h, "generate", HEALTH_NOT_SERVING, "x"), 0);
    assert_int_equal(s[0].n, 3);
    assert_int_equal(s[1].n, 2);
    assert_int_equal(s[2].n, 3);
    /* a failing first send registers nothing */
    struct sink bad = {.fail = 1};
    health_watcher_t *w = NULL;
    assert_int_equal(health_watch_add(h, "", &sink_ops, &bad, &w), -EPIPE);
    assert_null(w);
    assert_int_equal(health_watch_count(h), 2);
    health_watch_remove(h, s[0].self);
    health_watch_remove(h, s[2].self);
}

int main(void)
{
    evthread_use_pthreads();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_initial_notready, setup, teardown),
        cmocka_unit_test_setup_teardown(test_initial_ready, setup_ready, teardown),
        cmocka_unit_test_setup_teardown(test_readiness_follows_endpoints, setup, teardown),
        cmocka_unit_test_setup_teardown(test_draining_and_shutdown, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_implies_draining, setup, teardown),
        cmocka_unit_test_setup_teardown(test_liveness_ignores_endpoints, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reason_and_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reason_truncated_on_utf8_boundary, setup, teardown),
        cmocka_unit_test_setup_teardown(test_errors, setup, teardown),
        cmocka_unit_test(test_parse_starting_status),
        cmocka_unit_test_setup_teardown(test_change_hook_once_per_transition, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reentrant_set_from_hook, setup, teardown),
        cmocka_unit_test_setup_teardown(test_update_from_thread_applied_on_loop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_update_from_thread_wakes_running_loop, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_many_threads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watch_bookkeeping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watch_remove_inside_send, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
