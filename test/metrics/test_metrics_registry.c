/* Registry: types, labels, get-or-create, name rules, update semantics. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "metrics.h"

/* A family the assertions below register and do not keep. */
static metrics_family_t *fam;
/* The family a registration that must succeed made. */
#define OK_FAM(call) (assert_int_equal((call), 0), fam)

static void test_prefix(void **state)
{
    (void)state;
    assert_true(metrics_prefix_valid(""));
    assert_true(metrics_prefix_valid("inferd_"));
    assert_true(metrics_prefix_valid("dyn:ns_"));
    assert_true(metrics_prefix_valid("_x"));
    assert_false(metrics_prefix_valid(NULL));
    assert_false(metrics_prefix_valid("1abc_"));
    assert_false(metrics_prefix_valid("in-ferd_"));
    assert_false(metrics_prefix_valid("inferd "));
    assert_false(metrics_prefix_valid("infé_"));
    metrics_registry_t *r = (metrics_registry_t *)&r; /* set to NULL on failure */
    char err[200] = "";
    assert_int_equal(metrics_registry_new(&r, "9x", err, sizeof err), -EINVAL);
    assert_null(r);
    assert_non_null(strstr(err, "'9x'"));
    assert_int_equal(metrics_registry_new(&r, "a.b", NULL, 0), -EINVAL);
    assert_int_equal(metrics_registry_new(&r, "", NULL, 0), 0);
    assert_non_null(r);
    assert_string_equal(metrics_registry_prefix(r), "");
    metrics_registry_free(r);
    metrics_registry_free(NULL);
}

static void test_types_and_prefix(void **state)
{
    (void)state;
    metrics_registry_t *r = NULL;
    assert_int_equal(metrics_registry_new(&r, "inferd_", NULL, 0), 0);
    metrics_family_t *c = NULL;
    assert_int_equal(metrics_counter_new(&c, r, "requests_total", "Requests.", NULL, 0, NULL, 0),
                     0);
    metrics_family_t *g = NULL;
    assert_int_equal(metrics_gauge_new(&g, r, "inflight_requests", "In flight.", NULL, 0, NULL, 0),
                     0);
    metrics_family_t *h = NULL;
    assert_int_equal(
        metrics_histogram_new(&h, r, "request_duration_seconds", "Dur.", NULL, NULL, 0, 0, NULL, 0),
        0);
    metrics_family_t *u = NULL;
    assert_int_equal(metrics_counter_new(&u, r, "grpc_server_started_total", "Started.", NULL,
                                         METRICS_NO_PREFIX, NULL, 0),
                     0);
    assert_non_null(c);
    assert_non_null(g);
    assert_non_null(h);
    assert_non_null(u);
    assert_int_equal(metrics_family_type(c), METRICS_COUNTER);
    assert_int_equal(metrics_family_type(g), METRICS_GAUGE);
    assert_int_equal(metrics_family_type(h), METRICS_HISTOGRAM);
    assert_string_equal(metrics_family_name(c), "inferd_requests_total");
    assert_string_equal(metrics_family_name(u), "grpc_server_started_total");
    assert_ptr_equal(metrics_family_find(r, "inferd_inflight_requests"), g);
    assert_null(metrics_family_find(r, "inflight_requests"));
    metrics_registry_free(r);
}

static void test_invalid_names(void **state)
{
    (void)state;
    metrics_registry_t *r = NULL;
    assert_int_equal(metrics_registry_new(&r, "p_", NULL, 0), 0);
    const char *const dup[] = {"a", "a", NULL};
    const char *const reserved[] = {"__name", NULL};
    const char *const colon[] = {"a:b", NULL};
    const char *const digit[] = {"1a", NULL};
    const char *const empty[] = {"", NULL};
    const char *const le[] = {"le", NULL};
    assert_int_equal(metrics_counter_new(&fam, r, "x", "no _total", NULL, 0, NULL, 0), -EINVAL);
    assert_int_equal(
        metrics_counter_new(&fam, r, "_total", "only suffix", NULL, METRICS_NO_PREFIX, NULL, 0),
        -EINVAL);
    assert_int_equal(metrics_gauge_new(&fam, r, "g_total", "gauge with _total", NULL, 0, NULL, 0),
                     -EINVAL);
    assert_int_equal(metrics_gauge_new(&fam, r, "g_created", "reserved suffix", NULL, 0, NULL, 0),
                     -EINVAL);
    assert_int_equal(
        metrics_histogram_new(&fam, r, "h_count", "reserved suffix", NULL, NULL, 0, 0, NULL, 0),
        -EINVAL);
    assert_int_equal(metrics_gauge_new(&fam, r, "bad-name", "dash", NULL, 0, NULL, 0), -EINVAL);
    assert_int_equal(
        metrics_gauge_new(&fam, r, "9lives", "digit", NULL, METRICS_NO_PREFIX, NULL, 0), -EINVAL);
    assert_int_equal(metrics_gauge_new(&fam, r, "", "empty", NULL, 0, NULL, 0), -EINVAL);
    assert_int_equal(metrics_gauge_new(&fam, r, NULL, "null", NULL, 0, NULL, 0), -EINVAL);
    assert_int_equal(metrics_gauge_new(&fam, r, "nohelp", NULL, NULL, 0, NULL, 0), -EINVAL);
    assert_int_equal(metrics_gauge_new(&fam, r, "nohelp", "", NULL, 0, NULL, 0), -EINVAL);
    assert_int_equal(metrics_gauge_new(&fam, r, "g", "dup labels", dup, 0, NULL, 0), -EINVAL);
    assert_int_equal(metrics_gauge_new(&fam, r, "g", "reserved label", reserved, 0, NULL, 0),
                     -EINVAL);
    assert_int_equal(metrics_gauge_new(&fam, r, "g", "colon label", colon, 0, NULL, 0), -EINVAL);
    assert_int_equal(metrics_gauge_new(&fam, r, "g", "digit label", digit, 0, NULL, 0), -EINVAL);
    assert_int_equal(metrics_gauge_new(&fam, r, "g", "empty label", empty, 0, NULL, 0), -EINVAL);
    assert_int_equal(metrics_histogram_new(&fam, r, "h", "le label", le, NULL, 0, 0, NULL, 0),
                     -EINVAL);
    assert_int_equal(metrics_gauge_new(&fam, r, "g", "le is fine on a gauge", le, 0, NULL, 0), 0);
    const double unsorted[] = {1, 0.5};
    const double equal[] = {1, 1};
    const double inf[] = {1, INFINITY};
    assert_int_equal(metrics_histogram_new(&fam, r, "h", "unsorted", NULL, unsorted, 2, 0, NULL, 0),
                     -EINVAL);
    assert_int_equal(metrics_histogram_new(&fam, r, "h", "equal", NULL, equal, 2, 0, NULL, 0),
                     -EINVAL);
    assert_int_equal(metrics_histogram_new(&fam, r, "h", "inf", NULL, inf, 2, 0, NULL, 0), -EINVAL);
    assert_int_equal(metrics_gauge_new(&fam, NULL, "g", "no registry", NULL, 0, NULL, 0), -EINVAL);
    char err[200] = "";
    assert_int_equal(metrics_counter_new(&fam, r, "x", "no _total", NULL, 0, err, sizeof err),
                     -EINVAL);
    assert_non_null(strstr(err, "must end in _total"));
    metrics_registry_free(r);
}

static void test_duplicates(void **state)
{
    (void)state;
    metrics_registry_t *r = NULL;
    assert_int_equal(metrics_registry_new(&r, "p_", NULL, 0), 0);
    assert_int_equal(metrics_counter_new(&fam, r, "a_total", "A.", NULL, 0, NULL, 0), 0);
    char err[200] = "";
    assert_int_equal(metrics_counter_new(&fam, r, "a_total", "A again.", NULL, 0, err, sizeof err),
                     -EEXIST);
    assert_null(fam);
    assert_non_null(strstr(err, "p_a_total is already registered")); /* never "out of memory" */
    assert_int_equal(metrics_counter_new(&fam, r, "p_a_total", "Same full name.", NULL,
                                         METRICS_NO_PREFIX, NULL, 0),
                     -EEXIST);
    /* a_total exposes family "p_a" in OpenMetrics: a gauge p_a would collide */
    assert_int_equal(
        metrics_gauge_new(&fam, r, "a", "Collides with counter family.", NULL, 0, NULL, 0),
        -EEXIST);
    assert_int_equal(metrics_histogram_new(&fam, r, "h_seconds", "H.", NULL, NULL, 0, 0, NULL, 0),
                     0);
    assert_int_equal(metrics_gauge_new(&fam, r, "h_seconds_bucket", "Collides.", NULL, 0, NULL, 0),
                     -EEXIST);
    assert_int_equal(metrics_counter_new(&fam, r, "h_seconds_total", "Family h_seconds collides.",
                                         NULL, 0, NULL, 0),
                     -EEXIST);
    assert_int_equal(
        metrics_gauge_new(&fam, r, "h_seconds", "Same name other type.", NULL, 0, NULL, 0),
        -EEXIST);
    /* same name without prefix is a different metric */
    assert_int_equal(
        metrics_counter_new(&fam, r, "a_total", "Unprefixed.", NULL, METRICS_NO_PREFIX, NULL, 0),
        0);
    metrics_registry_free(r);
}

static void test_series_get_or_create(void **state)
{
    (void)state;
    metrics_registry_t *r = NULL;
    assert_int_equal(metrics_registry_new(&r, "", NULL, 0), 0);
    const char *const names[] = {"model", "status", NULL};
    metrics_family_t *f = NULL;
    assert_int_equal(metrics_counter_new(&f, r, "req_total", "R.", names, 0, NULL, 0), 0);
    assert_int_equal(metrics_family_label_count(f), 2);
    const char *const v1[] = {"m", "ok"};
    const char *const v2[] = {"m", "error"};
    const char *const v3[] = {"mo", "k"}; /* concatenation equal to v1's would be "mok" */
    const char *const v4[] = {"m", NULL};
    metrics_series_t *a = metrics_series(f, v1);
    metrics_series_t *b = metrics_series(f, v2);
    metrics_series_t *c = metrics_series(f, v3);
    assert_non_null(a);
    assert_non_null(b);
    assert_non_null(c);
    assert_ptr_not_equal(a, b);
    assert_ptr_not_equal(a, c);
    char m[] = "m", ok[] = "ok"; /* different pointers, same values */
    const char *const v1b[] = {m, ok};
    assert_ptr_equal(metrics_series(f, v1b), a);
    assert_null(metrics_series(f, v4));
    assert_null(metrics_series(f, NULL));
    assert_null(metrics_series(NULL, v1));
    /* many series: the hash table grows and still finds every one */
    metrics_series_t *s[1000];
    char buf[1000][16];
    for (int i = 0; i < 1000; i++) {
        snprintf(buf[i], sizeof buf[i], "v%d", i);
        const char *const v[] = {buf[i], "x"};
        s[i] = metrics_series(f, v);
        assert_non_null(s[i]);
    }
    for (int i = 0; i < 1000; i++) {
        const char *const v[] = {buf[i], "x"};
        assert_ptr_equal(metrics_series(f, v), s[i]);
    }
    /* no labels: one series, created at registration */
    metrics_family_t *g = NULL;
    assert_int_equal(metrics_gauge_new(&g, r, "g", "G.", NULL, 0, NULL, 0), 0);
    assert_non_null(metrics_series(g, NULL));
    assert_ptr_equal(metrics_series(g, NULL), metrics_series(g, NULL));
    metrics_registry_free(r);
}

static void test_updates(void **state)
{
    (void)state;
    metrics_registry_t *r = NULL;
    assert_int_equal(metrics_registry_new(&r, "", NULL, 0), 0);
    metrics_series_t *c = metrics_series(
        OK_FAM(metrics_counter_new(&fam, r, "c_total", "C.", NULL, 0, NULL, 0)), NULL);
    metrics_series_t *g =
        metrics_series(OK_FAM(metrics_gauge_new(&fam, r, "g", "G.", NULL, 0, NULL, 0)), NULL);
    metrics_series_t *h = metrics_series(
        OK_FAM(metrics_histogram_new(&fam, r, "h", "H.", NULL, NULL, 0, 0, NULL, 0)), NULL);

    metrics_inc(c);
    metrics_inc(c);
    metrics_add(c, 2.5);
    metrics_add(c, 1);
    metrics_add(c, -3);  /* ignored: counters only go up */
    metrics_add(c, NAN); /* ignored */
    assert_true(metrics_value(c) == 5.5);
    metrics_observe(c, 1); /* wrong type: no-op */
    assert_true(metrics_value(c) == 5.5);
    metrics_set(c, 42); /* collectors copy counters from elsewhere */
    assert_true(metrics_value(c) == 42);

    metrics_inc(g);
    metrics_add(g, -3.5);
    metrics_dec(g);
    assert_true(metrics_value(g) == -3.5);
    metrics_set(g, 7.25);
    assert_true(metrics_value(g) == 7.25);
    metrics_dec(c); /* wrong type */
    assert_true(metrics_value(c) == 42);

    metrics_observe(h, 0.3);
    metrics_observe(h, 2);
    metrics_inc(h); /* wrong type */
    assert_int_equal(metrics_histogram_count(h), 2);
    assert_true(metrics_value(h) == 2);
    assert_true(fabs(metrics_histogram_sum(h) - 2.3) < 1e-12);
    assert_int_equal(metrics_histogram_count(c), 0);

    /* NULL series: no-ops */
    metrics_inc(NULL);
    metrics_dec(NULL);
    metrics_add(NULL, 1);
    metrics_set(NULL, 1);
    metrics_observe(NULL, 1);
    assert_true(metrics_value(NULL) == 0);
    metrics_registry_free(r);
}

static int collected;
static void collector(void *arg)
{
    collected++;
    metrics_set(arg, collected * 10);
}

static void test_collector(void **state)
{
    (void)state;
    metrics_registry_t *r = NULL;
    assert_int_equal(metrics_registry_new(&r, "", NULL, 0), 0);
    metrics_series_t *g =
        metrics_series(OK_FAM(metrics_gauge_new(&fam, r, "g", "G.", NULL, 0, NULL, 0)), NULL);
    assert_int_equal(metrics_add_collector(r, NULL, NULL), -EINVAL);
    assert_int_equal(metrics_add_collector(r, collector, g), 0);
    char *out;
    size_t len;
    collected = 0;
    assert_int_equal(metrics_render(r, NULL, &out, &len, NULL), 0);
    assert_int_equal(collected, 1);
    assert_non_null(strstr(out, "\ng 10\n"));
    free(out);
    assert_int_equal(metrics_render(r, NULL, &out, &len, NULL), 0);
    assert_non_null(strstr(out, "\ng 20\n"));
    free(out);
    metrics_registry_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_prefix),
        cmocka_unit_test(test_types_and_prefix),
        cmocka_unit_test(test_invalid_names),
        cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_series_get_or_create),
        cmocka_unit_test(test_updates),
        cmocka_unit_test(test_collector),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
