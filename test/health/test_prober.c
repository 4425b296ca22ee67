/* The canary and progress logic of health/prober.c, driven by a fake clock and fake ops: no
 * engine, no timers (the prober gets no event base; the test calls health_prober_run() after
 * moving the clock). Statuses are read back from the real registry, counts from real metrics. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "fake.h"
#include "health/health.h"
#include "health/prober.h"
#include "metrics/inferd_metrics.h"
#include "metrics/metrics.h"

#define MS 1000000LL
#define S 1000000000LL
#define WAIT (10 * S)   /* DYN_CANARY_WAIT_TIME */
#define TIMEOUT (3 * S) /* DYN_HEALTH_CHECK_REQUEST_TIMEOUT */
#define STALL (60 * S)  /* DYN_HEALTH_CHECK_BUSY_STALL */
#define EP "generate"

/* ---- the fake endpoint behind the ops table ---- */
typedef struct fake_ep {
    int submits, cancels;
    int submit_rc; /* returned by the next submits when non-zero */
    void *in_flight;
    health_canary_done_fn done;
    void *done_arg;
    health_progress_t progress;
    int token; /* the canary handle's storage */
} fake_ep_t;

static int fake_submit(void *impl, health_canary_done_fn done, void *arg, void **canary, char *err,
                       size_t errlen)
{
    fake_ep_t *e = impl;
    assert_null(e->in_flight); /* one canary at a time */
    if (e->submit_rc) {
        snprintf(err, errlen, "%s", e->submit_rc == -EAGAIN ? "admission queue full" : "stopping");
        return e->submit_rc;
    }
    e->submits++;
    e->done = done;
    e->done_arg = arg;
    e->in_flight = &e->token;
    *canary = e->in_flight;
    return 0;
}

static void fake_cancel(void *impl, void *canary)
{
    fake_ep_t *e = impl;
    assert_ptr_equal(canary, e->in_flight);
    e->cancels++;
    e->in_flight = NULL;
}

static void fake_progress(void *impl, health_progress_t *out)
{
    *out = ((fake_ep_t *)impl)->progress;
}

static const health_probe_ops_t fake_ops = {fake_submit, fake_cancel, fake_progress};

/* The canary in flight ends. */
static void finish(fake_ep_t *e, int ok, const char *detail)
{
    assert_non_null(e->in_flight);
    e->in_flight = NULL;
    e->done(e->done_arg, ok, detail);
}

/* ---- fixture ---- */
struct fixture {
    struct event_base *base;
    health_t *h;
    metrics_registry_t *reg;
    inferd_metrics_t m;
    health_prober_t *p;
    int64_t now;
    fake_ep_t ep;
};

static int64_t fake_clock(void *arg)
{
    return ((struct fixture *)arg)->now;
}

static struct fixture *make(int enabled)
{
    struct fixture *f = calloc(1, sizeof *f);
    f->now = 1000 * S;
    f->base = event_base_new();
    assert_int_equal(health_new(&f->h, f->base, HEALTH_NOT_SERVING, NULL, 0), 0);
    assert_int_equal(health_endpoint_add(f->h, EP, "inferd.v1.Inference"), 0);
    assert_int_equal(metrics_registry_new(&f->reg, "inferd_", NULL, 0), 0);
    assert_int_equal(inferd_metrics_init(&f->m, f->reg), 0);
    health_prober_options_t o = {.health = f->h,
                                 .now_ns = fake_clock,
                                 .now_arg = f,
                                 .m = &f->m,
                                 .enabled = enabled,
                                 .canary_wait_ns = WAIT,
                                 .request_timeout_ns = TIMEOUT,
                                 .busy_stall_ns = STALL,
                                 .payload = "BOS, 1 token"};
    char err[200];
    assert_int_equal(health_prober_new(&f->p, &o, err, sizeof err), 0);
    assert_int_equal(health_prober_add(f->p, EP, &fake_ops, &f->ep, err, sizeof err), 0);
    fake_log_reset();
    return f;
}

static int setup(void **state)
{
    *state = make(1);
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    health_prober_free(f->p);
    assert_null(f->ep.in_flight); /* free cancelled what was in flight */
    health_free(f->h);
    inferd_metrics_dispose(&f->m);
    metrics_registry_free(f->reg);
    event_base_free(f->base);
    free(f);
    return 0;
}

static health_endpoint_info_t info(struct fixture *f)
{
    health_endpoint_info_t i;
    assert_int_equal(health_endpoint_get(f->h, EP, 0, &i), 0);
    return i;
}

static double canary_count(struct fixture *f, const char *result)
{
    const char *lv[] = {EP, result};
    return metrics_value(metrics_series(f->m.health_canary, lv));
}

static double status_gauge(struct fixture *f)
{
    const char *lv[] = {EP};
    return metrics_value(metrics_series(f->m.health_status, lv));
}

/* Moves the fake clock and runs what is due. */
static int64_t advance(struct fixture *f, int64_t ns)
{
    f->now += ns;
    return health_prober_run(f->p);
}

/* ---- tests ---- */

static void test_first_canary_at_once_then_serving(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(info(f).status, HEALTH_NOT_SERVING);
    int64_t next = advance(f, 0);
    assert_int_equal(f->ep.submits, 1);
    assert_true(next <= f->now + TIMEOUT);                /* its deadline is what is due next */
    assert_int_equal(info(f).status, HEALTH_NOT_SERVING); /* not before the whole response */
    f->now += 40 * MS;
    finish(&f->ep, 1, "length");
    assert_int_equal(info(f).status, HEALTH_SERVING);
    assert_string_equal(info(f).reason, "canary succeeded");
    assert_true(canary_count(f, "success") == 1);
    assert_true(status_gauge(f) == 1);
    const char *lv[] = {EP};
    metrics_series_t *dur = metrics_series(f->m.health_canary_duration, lv);
    assert_int_equal(metrics_histogram_count(dur), 1);
    assert_true(metrics_histogram_sum(dur) > 0.039 && metrics_histogram_sum(dur) < 0.041);
    /* the next canary waits DYN_CANARY_WAIT_TIME after this one */
    advance(f, WAIT - MS);
    assert_int_equal(f->ep.submits, 1);
    advance(f, MS);
    assert_int_equal(f->ep.submits, 2);
    finish(&f->ep, 1, "length");
}

static void test_timeout_cancels_and_fails(void **state)
{
    struct fixture *f = *state;
    advance(f, 0);
    finish(&f->ep, 1, "length"); /* SERVING */
    advance(f, WAIT);
    assert_int_equal(f->ep.submits, 2);
    advance(f, TIMEOUT - 1);
    assert_int_equal(f->ep.cancels, 0);
    advance(f, 1);
    assert_int_equal(f->ep.cancels, 1); /* a stalled canary is cancelled, not left in flight */
    assert_int_equal(info(f).status, HEALTH_NOT_SERVING);
    assert_string_equal(info(f).reason,
                        "canary did not complete within 3s (--health-check-request-timeout)");
    assert_true(canary_count(f, "timeout") == 1);
    assert_true(status_gauge(f) == 0);
    /* the next canary comes a wait later and recovers the endpoint */
    advance(f, WAIT - 1);
    assert_int_equal(f->ep.submits, 2);
    advance(f, 1);
    assert_int_equal(f->ep.submits, 3);
    finish(&f->ep, 1, "eos");
    assert_int_equal(info(f).status, HEALTH_SERVING);
}

static void test_failure_reason_and_still_not_serving_log(void **state)
{
    struct fixture *f = *state;
    advance(f, 0);
    f->now += 5 * MS;
    finish(&f->ep, 0, "engine forward pass failed");
    assert_int_equal(info(f).status, HEALTH_NOT_SERVING);
    assert_true(canary_count(f, "failure") == 1);
    /* no transition (it started NOT_SERVING): the prober logs why itself */
    assert_int_equal(fake_log_count(LOG_WARN), 1);
    assert_non_null(strstr(fake_log_last(LOG_WARN), "still NOT_SERVING: canary failed after 5 ms: "
                                                    "engine forward pass failed"));
}

static void test_success_restarts_the_wait(void **state)
{
    struct fixture *f = *state;
    advance(f, 0);
    finish(&f->ep, 1, "length");
    advance(f, WAIT / 2);
    f->ep.progress.last_success_ns = f->now; /* a real request succeeded */
    advance(f, WAIT / 2);
    assert_int_equal(f->ep.submits, 1); /* its wait started again at the success */
    int64_t next = advance(f, WAIT / 2 - 1);
    assert_int_equal(f->ep.submits, 1);
    assert_true(next == f->now + 1);
    advance(f, 1);
    assert_int_equal(f->ep.submits, 2);
    finish(&f->ep, 1, "length");
}

static void test_busy_and_producing_gets_no_canary(void **state)
{
    struct fixture *f = *state;
    advance(f, 0);
    finish(&f->ep, 1, "length");
    f->ep.progress.inflight = 3;
    for (int i = 0; i < 5; i++) {
        f->ep.progress.last_token_ns = f->now + WAIT - 100 * MS; /* tokens keep coming */
        advance(f, WAIT);
    }
    assert_int_equal(f->ep.submits, 1);
    assert_int_equal(info(f).status, HEALTH_SERVING);
}

static void test_busy_without_tokens_gets_one_more_wait_only(void **state)
{
    struct fixture *f = *state;
    advance(f, 0);
    finish(&f->ep, 1, "length");
    advance(f, WAIT - 2 * S); /* a progress tick sees the endpoint idle */
    /* requests arrive and no token comes yet: the canary gives them one more wait... */
    f->ep.progress.inflight = 2;
    advance(f, 2 * S);
    assert_int_equal(f->ep.submits, 1);
    /* ...but no more: traffic that produces nothing must not hide a broken engine */
    advance(f, WAIT);
    assert_int_equal(f->ep.submits, 2);
    finish(&f->ep, 1, "length");
}

static void test_queue_full(void **state)
{
    struct fixture *f = *state;
    /* queue full of real requests: not a failure of the path */
    f->ep.progress.inflight = 4;
    f->ep.submit_rc = -EAGAIN;
    advance(f, 0);
    assert_true(canary_count(f, "failure") == 0);
    assert_string_equal(info(f).reason, "starting");
    /* nothing in flight and still refused: the path is broken */
    f->ep.progress.inflight = 0;
    advance(f, WAIT);
    assert_true(canary_count(f, "failure") == 1);
    assert_string_equal(info(f).reason, "starting"); /* no transition: NOT_SERVING already */
    assert_non_null(
        strstr(fake_log_last(LOG_WARN), "canary could not be submitted: admission queue full"));
}

static void test_stall_reported_once_per_episode(void **state)
{
    struct fixture *f = *state;
    advance(f, 0);
    finish(&f->ep, 1, "length");
    f->ep.progress.inflight = 2;
    f->ep.progress.last_token_ns = f->now;
    f->ep.progress.last_success_ns = f->now; /* keeps canaries away: only the stall judges */
    int64_t t0 = f->now;
    while (f->now - t0 < STALL - S) {
        advance(f, S);
        f->ep.progress.last_success_ns = f->now;
    }
    assert_int_equal(info(f).status, HEALTH_SERVING);
    advance(f, S);
    advance(f, S);
    assert_int_equal(info(f).status, HEALTH_NOT_SERVING);
    assert_non_null(strstr(info(f).reason, "no token produced for 6"));
    assert_non_null(
        strstr(info(f).reason, "with 2 requests in flight (--health-check-busy-stall 60s)"));
    int warns = fake_log_count(LOG_WARN);
    advance(f, S);
    advance(f, S);
    assert_int_equal(fake_log_count(LOG_WARN), warns); /* once per episode */
    /* tokens again: the episode ends; a success recovers */
    f->ep.progress.last_token_ns = f->now;
    advance(f, S);
    health_prober_note_success(f->p, EP);
    assert_int_equal(info(f).status, HEALTH_SERVING);
    assert_string_equal(info(f).reason, "request succeeded");
}

static void test_paused_requests_are_not_a_stall(void **state)
{
    struct fixture *f = *state;
    advance(f, 0);
    finish(&f->ep, 1, "length");
    /* two requests whose own clients stopped reading: paused, no token, not the engine's fault */
    f->ep.progress.inflight = 2;
    f->ep.progress.paused = 2;
    for (int i = 0; i < 70; i++) {
        advance(f, S);
        f->ep.progress.last_success_ns = f->now;
    }
    assert_int_equal(info(f).status, HEALTH_SERVING);
}

static void test_note_success_recovers_and_is_rate_limited(void **state)
{
    struct fixture *f = *state;
    advance(f, 0);
    finish(&f->ep, 0, "boom");
    assert_int_equal(info(f).status, HEALTH_NOT_SERVING);
    health_prober_note_success(f->p, EP);
    assert_int_equal(info(f).status, HEALTH_SERVING);
    assert_string_equal(info(f).reason, "request succeeded");
    struct timespec check = info(f).last_check;
    /* while SERVING, successes refresh last_check at most once a second */
    f->now += 500 * MS;
    health_prober_note_success(f->p, EP);
    struct timespec again = info(f).last_check;
    assert_memory_equal(&check, &again, sizeof check);
    health_prober_note_success(f->p, "no-such-endpoint"); /* ignored */
}

static void test_disabled_checks(void **state)
{
    (void)state;
    struct fixture *f = make(0);
    assert_int_equal(info(f).status, HEALTH_SERVING);
    assert_string_equal(info(f).reason, "model loaded (health checks disabled)");
    assert_true(advance(f, 100 * WAIT) == INT64_MAX);
    assert_int_equal(f->ep.submits, 0);
    void *s = f;
    teardown(&s);
}

static void test_gauge_follows_draining(void **state)
{
    struct fixture *f = *state;
    advance(f, 0);
    finish(&f->ep, 1, "length");
    assert_true(status_gauge(f) == 1);
    health_set_draining(f->h);
    assert_true(status_gauge(f) == 0);
}

static void test_bad_options_and_endpoints(void **state)
{
    struct fixture *f = *state;
    char err[200];
    assert_int_equal(health_prober_add(f->p, EP, &fake_ops, &f->ep, err, sizeof err), -EEXIST);
    assert_int_equal(health_prober_add(f->p, "nope", &fake_ops, &f->ep, err, sizeof err), -ENOENT);
    assert_non_null(strstr(err, "nope"));
    health_prober_t *p;
    health_prober_options_t o = {.health = f->h, .m = &f->m, .enabled = 1};
    assert_int_equal(health_prober_new(&p, &o, err, sizeof err), -EINVAL);
    assert_null(p);
    assert_non_null(strstr(err, "timings"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_first_canary_at_once_then_serving, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timeout_cancels_and_fails, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failure_reason_and_still_not_serving_log, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_success_restarts_the_wait, setup, teardown),
        cmocka_unit_test_setup_teardown(test_busy_and_producing_gets_no_canary, setup, teardown),
        cmocka_unit_test_setup_teardown(test_busy_without_tokens_gets_one_more_wait_only, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_queue_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stall_reported_once_per_episode, setup, teardown),
        cmocka_unit_test_setup_teardown(test_paused_requests_are_not_a_stall, setup, teardown),
        cmocka_unit_test_setup_teardown(test_note_success_recovers_and_is_rate_limited, setup,
                                        teardown),
        cmocka_unit_test(test_disabled_checks),
        cmocka_unit_test_setup_teardown(test_gauge_follows_draining, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_options_and_endpoints, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
