/* Exposition: text 0.0.4 and OpenMetrics output, escaping, histogram bucketing, numbers,
 * Accept negotiation. */
/* GCC 12 reports -Wdangling-pointer for pointers into buffers that cmocka's assert macros
 * might longjmp past; they are freed only after their last use. */
#pragma GCC diagnostic ignored "-Wpragmas"
#pragma GCC diagnostic ignored "-Wdangling-pointer"
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

#define CT_TEXT "text/plain; version=0.0.4; charset=utf-8"
#define CT_OM "application/openmetrics-text; version=1.0.0; charset=utf-8"

static char *render(metrics_registry_t *r, const char *accept, const char **ct)
{
    char *out = NULL;
    size_t len = 0;
    const char *dummy;
    assert_int_equal(metrics_render(r, accept, &out, &len, ct ? ct : &dummy), 0);
    assert_non_null(out);
    assert_int_equal(strlen(out), len);
    return out;
}

static void test_text_exact(void **state)
{
    (void)state;
    metrics_registry_t *r = NULL;
    assert_int_equal(metrics_registry_new(&r, "inferd_", NULL, 0), 0);
    const char *const ln[] = {"model", "status", NULL};
    metrics_family_t *c = NULL;
    assert_int_equal(
        metrics_counter_new(&c, r, "requests_total", "Requests finished.", ln, 0, NULL, 0), 0);
    metrics_family_t *g = NULL;
    assert_int_equal(metrics_gauge_new(&g, r, "temp", "A gauge.", NULL, METRICS_NO_PREFIX, NULL, 0),
                     0);
    metrics_family_t *empty = NULL;
    assert_int_equal(metrics_gauge_new(&empty, r, "unused", "No series yet.", ln, 0, NULL, 0), 0);
    assert_non_null(empty);
    const char *const v1[] = {"llama", "success"};
    const char *const v2[] = {"llama", "error"};
    metrics_add(metrics_series(c, v1), 3);
    metrics_series(c, v2);
    metrics_set(metrics_series(g, NULL), -1.5);
    const char *ct;
    char *out = render(r, NULL, &ct);
    assert_string_equal(ct, CT_TEXT);
    assert_string_equal(out, "# HELP inferd_requests_total Requests finished.\n"
                             "# TYPE inferd_requests_total counter\n"
                             "inferd_requests_total{model=\"llama\",status=\"success\"} 3\n"
                             "inferd_requests_total{model=\"llama\",status=\"error\"} 0\n"
                             "# HELP temp A gauge.\n"
                             "# TYPE temp gauge\n"
                             "temp -1.5\n");
    free(out);
    metrics_registry_free(r);
}

static void test_escaping(void **state)
{
    (void)state;
    metrics_registry_t *r = NULL;
    assert_int_equal(metrics_registry_new(&r, "", NULL, 0), 0);
    const char *const ln[] = {"v", NULL};
    metrics_family_t *g = NULL;
    assert_int_equal(metrics_gauge_new(&g, r, "esc",
                                       "Help with \\ backslash,\nnewline and \"quotes\".", ln, 0,
                                       NULL, 0),
                     0);
    const char *const v[] = {"a\\b\"c\nd"};
    metrics_set(metrics_series(g, v), 1);
    const char *const bad[] = {"x\xff\xc3y\xe2\x82\xac"}; /* invalid bytes, then a valid euro */
    metrics_set(metrics_series(g, bad), 2);
    char *out = render(r, NULL, NULL);
    assert_non_null(
        strstr(out, "# HELP esc Help with \\\\ backslash,\\nnewline and \"quotes\".\n"));
    assert_non_null(strstr(out, "esc{v=\"a\\\\b\\\"c\\nd\"} 1\n"));
    assert_non_null(strstr(out, "esc{v=\"x\xef\xbf\xbd\xef\xbf\xbdy\xe2\x82\xac\"} 2\n"));
    free(out);
    out = render(r, "application/openmetrics-text", NULL);
    /* OpenMetrics escapes double quotes in HELP too */
    assert_non_null(
        strstr(out, "# HELP esc Help with \\\\ backslash,\\nnewline and \\\"quotes\\\".\n"));
    assert_non_null(strstr(out, "esc{v=\"a\\\\b\\\"c\\nd\"} 1\n"));
    free(out);
    metrics_registry_free(r);
}

static void test_histogram(void **state)
{
    (void)state;
    metrics_registry_t *r = NULL;
    assert_int_equal(metrics_registry_new(&r, "", NULL, 0), 0);
    const double b[] = {0.1, 0.5, 1, 2.5};
    const char *const ln[] = {"m", NULL};
    metrics_family_t *h = NULL;
    assert_int_equal(metrics_histogram_new(&h, r, "lat_seconds", "Latency.", ln, b, 4, 0, NULL, 0),
                     0);
    const char *const v[] = {"x"};
    metrics_series_t *s = metrics_series(h, v);
    /* boundary values go in the bucket equal to them */
    metrics_observe(s, 0.1);
    metrics_observe(s, 0.05);
    metrics_observe(s, 0.5);
    metrics_observe(s, 0.50000001);
    metrics_observe(s, 1);
    metrics_observe(s, 2.5);
    metrics_observe(s, 3);
    metrics_observe(s, 1e9);
    metrics_observe(s, -1); /* below every bound: first bucket */
    assert_int_equal(metrics_histogram_bucket(s, 0), 3);
    assert_int_equal(metrics_histogram_bucket(s, 1), 1);
    assert_int_equal(metrics_histogram_bucket(s, 2), 2);
    assert_int_equal(metrics_histogram_bucket(s, 3), 1);
    assert_int_equal(metrics_histogram_bucket(s, 4), 2);
    assert_int_equal(metrics_histogram_count(s), 9);
    char *out = render(r, NULL, NULL);
    assert_non_null(strstr(out, "# HELP lat_seconds Latency.\n# TYPE lat_seconds histogram\n"
                                "lat_seconds_bucket{m=\"x\",le=\"0.1\"} 3\n"
                                "lat_seconds_bucket{m=\"x\",le=\"0.5\"} 4\n"
                                "lat_seconds_bucket{m=\"x\",le=\"1\"} 6\n"
                                "lat_seconds_bucket{m=\"x\",le=\"2.5\"} 7\n"
                                "lat_seconds_bucket{m=\"x\",le=\"+Inf\"} 9\n"
                                "lat_seconds_sum{m=\"x\"} "));
    assert_non_null(strstr(out, "\nlat_seconds_count{m=\"x\"} 9\n"));
    const char *p = strstr(out, "lat_seconds_sum{m=\"x\"} ");
    assert_true(fabs(strtod(p + strlen("lat_seconds_sum{m=\"x\"} "), NULL) -
                     metrics_histogram_sum(s)) == 0);
    free(out);
    char *om = render(r, "application/openmetrics-text; version=1.0.0", NULL);
    /* canonical numbers in OpenMetrics le */
    assert_non_null(strstr(om, "lat_seconds_bucket{m=\"x\",le=\"1.0\"} 6\n"));
    assert_non_null(strstr(om, "lat_seconds_bucket{m=\"x\",le=\"+Inf\"} 9\n"));
    assert_non_null(strstr(om, "lat_seconds_count{m=\"x\"} 9\n"));
    assert_non_null(strstr(om, "lat_seconds_created{m=\"x\"} "));
    free(om);
    metrics_registry_free(r);
}

static void test_histogram_default_and_nan(void **state)
{
    (void)state;
    size_t n;
    const double *d = metrics_default_buckets(&n);
    assert_true(n >= 10);
    assert_true(d[0] <= 0.0001); /* microsecond health calls */
    assert_true(d[n - 1] >= 30); /* multi-second generations */
    for (size_t i = 1; i < n; i++)
        assert_true(d[i] > d[i - 1]);
    metrics_registry_t *r = NULL;
    assert_int_equal(metrics_registry_new(&r, "", NULL, 0), 0);
    metrics_series_t *s = metrics_series(
        OK_FAM(metrics_histogram_new(&fam, r, "h_seconds", "H.", NULL, NULL, 0, 0, NULL, 0)), NULL);
    metrics_observe(s, 0.00005);
    metrics_observe(s, NAN);
    assert_int_equal(metrics_histogram_bucket(s, 0), 1);
    assert_int_equal(metrics_histogram_bucket(s, n), 1);
    char *out = render(r, NULL, NULL);
    assert_non_null(strstr(out, "h_seconds_bucket{le=\"5e-05\"} 1\n"));
    assert_non_null(strstr(out, "h_seconds_bucket{le=\"+Inf\"} 2\n"));
    assert_non_null(strstr(out, "h_seconds_sum NaN\n"));
    assert_non_null(strstr(out, "h_seconds_count 2\n"));
    free(out);
    metrics_registry_free(r);
}

static void test_numbers(void **state)
{
    (void)state;
    metrics_registry_t *r = NULL;
    assert_int_equal(metrics_registry_new(&r, "", NULL, 0), 0);
    const char *const ln[] = {"k", NULL};
    metrics_family_t *g = NULL;
    assert_int_equal(metrics_gauge_new(&g, r, "n", "Numbers.", ln, 0, NULL, 0), 0);
    struct {
        const char *k;
        double v;
        const char *want;
    } cases[] = {
        {"int", 42, "42"},
        {"neg", -7, "-7"},
        {"zero", 0, "0"},
        {"frac", 0.1, "0.1"},
        {"third", 1.0 / 3, "0.33333333333333331"},
        {"big", 1e300, "1e+300"},
        {"2^53", 9007199254740992.0, "9007199254740992"},
        {"tiny", 5e-324, "4.94065645841247e-324"},
        {"pinf", INFINITY, "+Inf"},
        {"ninf", -INFINITY, "-Inf"},
        {"nan", NAN, "NaN"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *const v[] = {cases[i].k};
        metrics_set(metrics_series(g, v), cases[i].v);
    }
    char *out = render(r, NULL, NULL);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char line[128];
        snprintf(line, sizeof line, "n{k=\"%s\"} %s\n", cases[i].k, cases[i].want);
        if (!strstr(out, line)) fail_msg("missing %s in\n%s", line, out);
        /* round trip */
        if (!isnan(cases[i].v) && !isinf(cases[i].v))
            assert_true(strtod(cases[i].want, NULL) == cases[i].v);
    }
    free(out);
    metrics_registry_free(r);
}

static void test_openmetrics(void **state)
{
    (void)state;
    metrics_registry_t *r = NULL;
    assert_int_equal(metrics_registry_new(&r, "inferd_", NULL, 0), 0);
    metrics_family_t *c = NULL;
    assert_int_equal(metrics_counter_new(&c, r, "tokens_total", "Tokens.", NULL, 0, NULL, 0), 0);
    metrics_family_t *g = NULL;
    assert_int_equal(metrics_gauge_new(&g, r, "inflight", "In flight.", NULL, 0, NULL, 0), 0);
    metrics_add(metrics_series(c, NULL), 12);
    metrics_set(metrics_series(g, NULL), 3);
    const char *ct;
    char *out = render(r, "application/openmetrics-text;version=1.0.0", &ct);
    assert_string_equal(ct, CT_OM);
    /* family name without _total, samples keep it, _created follows */
    assert_non_null(strstr(out, "# TYPE inferd_tokens counter\n"
                                "# HELP inferd_tokens Tokens.\n"
                                "inferd_tokens_total 12\n"
                                "inferd_tokens_created "));
    assert_non_null(strstr(out, "# TYPE inferd_inflight gauge\n"
                                "# HELP inferd_inflight In flight.\n"
                                "inferd_inflight 3\n"));
    assert_null(strstr(out, "inferd_inflight_created"));
    size_t len = strlen(out);
    assert_true(len > 6);
    assert_string_equal(out + len - 6, "# EOF\n");
    assert_int_equal(strstr(out, "# EOF") - out, (long)(len - 6)); /* exactly once, at the end */
    /* _created is a plausible unix time */
    const char *p = strstr(out, "inferd_tokens_created ") + strlen("inferd_tokens_created ");
    double created = strtod(p, NULL);
    assert_true(created > 1.6e9 && created < 4e9);
    free(out);
    /* text has no # EOF and no _created */
    char *text = render(r, NULL, &ct);
    assert_string_equal(ct, CT_TEXT);
    assert_null(strstr(text, "# EOF"));
    assert_null(strstr(text, "_created"));
    assert_non_null(strstr(text, "# TYPE inferd_tokens_total counter\n"));
    free(text);
    /* an empty registry in OpenMetrics is just # EOF */
    metrics_registry_t *e = NULL;
    assert_int_equal(metrics_registry_new(&e, "", NULL, 0), 0);
    char *empty_om = render(e, "application/openmetrics-text", NULL);
    assert_string_equal(empty_om, "# EOF\n");
    free(empty_om);
    char *empty_text = render(e, NULL, NULL);
    assert_string_equal(empty_text, "");
    free(empty_text);
    metrics_registry_free(e);
    metrics_registry_free(r);
}

static void test_negotiate(void **state)
{
    (void)state;
    const metrics_format_t T = METRICS_FORMAT_TEXT, O = METRICS_FORMAT_OPENMETRICS;
    struct {
        const char *accept;
        metrics_format_t want;
    } cases[] = {
        {NULL, T},
        {"", T},
        {"*/*", T},
        {"text/plain", T},
        {"text/plain;version=0.0.4", T},
        {"application/json", T},
        {"garbage;;;,,,=", T},
        {"application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;"
         "encoding=delimited",
         T},
        {"application/openmetrics-text", O},
        {"Application/OpenMetrics-Text; Version=1.0.0", O},
        {"application/openmetrics-text; version=\"1.0.0\"", O},
        {"application/openmetrics-text;version=0.0.1", O},
        {"application/openmetrics-text;version=2.0.0", T}, /* a version we do not serve */
        /* what Prometheus 2.x sends */
        {"application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
         "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
         O},
        {"application/openmetrics-text;q=0.4,text/plain;q=0.5", T},
        {"text/plain;q=0.5, application/openmetrics-text;q=0.6", O},
        {"text/plain;q=0.3,application/openmetrics-text;q=0,*/*;q=1", T},
        {"application/openmetrics-text;q=0", T},
        {"text/plain;q=0,application/openmetrics-text;q=0.1", O},
        {"text/plain;q=0", T},                    /* nothing acceptable: text anyway, never 406 */
        {"*/*, application/openmetrics-text", O}, /* same q, more specific */
        {"text/plain, application/openmetrics-text", T}, /* same q and specificity: first */
        {"application/openmetrics-text, text/plain", O},
        {"text/*;q=0.9, application/openmetrics-text;q=0.9", O},
        {"application/openmetrics-text;q=abc, text/plain;q=0.1", T}, /* malformed q ignored */
        {"application/openmetrics-text;q=1.5", T},
        {" application/openmetrics-text ; q = 0.8 , text/plain ; q=0.7 ", O},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        if (metrics_negotiate(cases[i].accept) != cases[i].want)
            fail_msg("Accept \"%s\": want %s", cases[i].accept ? cases[i].accept : "(null)",
                     cases[i].want == O ? "openmetrics" : "text");
    assert_string_equal(metrics_content_type(T), CT_TEXT);
    assert_string_equal(metrics_content_type(O), CT_OM);
}

static void test_order(void **state)
{
    (void)state;
    metrics_registry_t *r = NULL;
    assert_int_equal(metrics_registry_new(&r, "", NULL, 0), 0);
    const char *const ln[] = {"k", NULL};
    metrics_family_t *b = NULL;
    assert_int_equal(metrics_gauge_new(&b, r, "b", "B.", ln, 0, NULL, 0), 0);
    metrics_family_t *a = NULL;
    assert_int_equal(metrics_gauge_new(&a, r, "a", "A.", ln, 0, NULL, 0), 0);
    const char *const z[] = {"z"}, *const y[] = {"y"};
    metrics_series(a, z);
    metrics_series(b, z);
    metrics_series(a, y);
    char *out = render(r, NULL, NULL);
    assert_string_equal(out, "# HELP b B.\n# TYPE b gauge\nb{k=\"z\"} 0\n"
                             "# HELP a A.\n# TYPE a gauge\na{k=\"z\"} 0\na{k=\"y\"} 0\n");
    free(out);
    assert_int_equal(metrics_render(NULL, NULL, &out, NULL, NULL), -EINVAL);
    metrics_registry_free(r);
}

typedef struct {
    char *p;
    size_t len, cap;
    int calls, fail_at;
} sink_t;

static int sink(void *arg, const char *data, size_t len)
{
    sink_t *k = arg;
    if (++k->calls == k->fail_at) return -EPIPE;
    if (k->len + len > k->cap) {
        k->cap = (k->len + len) * 2;
        k->p = realloc(k->p, k->cap);
        assert_non_null(k->p);
    }
    memcpy(k->p + k->len, data, len);
    k->len += len;
    return 0;
}

static void test_stream(void **state)
{
    (void)state;
    metrics_registry_t *r = NULL;
    assert_int_equal(metrics_registry_new(&r, "s_", NULL, 0), 0);
    const char *const ln[] = {"k", NULL};
    metrics_family_t *h = NULL;
    assert_int_equal(metrics_histogram_new(&h, r, "h_seconds", "H.", ln, NULL, 0, 0, NULL, 0), 0);
    metrics_family_t *c = NULL;
    assert_int_equal(metrics_counter_new(&c, r, "c_total", "C.", ln, 0, NULL, 0), 0);
    char v[64];
    for (int i = 0; i < 2000; i++) { /* ~2 MB: many chunks */
        snprintf(v, sizeof v, "value-%d", i);
        const char *const vals[] = {v};
        metrics_observe(metrics_series(h, vals), i * 0.001);
        metrics_add(metrics_series(c, vals), i);
    }
    /* one label value larger than a chunk */
    size_t big = 200000;
    char *huge = malloc(big + 1);
    memset(huge, 'x', big);
    huge[big] = 0;
    const char *const hv[] = {huge};
    metrics_observe(metrics_series(h, hv), 1);
    free(huge);

    for (int om = 0; om < 2; om++) {
        metrics_format_t fmt = om ? METRICS_FORMAT_OPENMETRICS : METRICS_FORMAT_TEXT;
        char *out;
        size_t len;
        assert_int_equal(metrics_render_format(r, fmt, &out, &len), 0);
        sink_t k = {0};
        assert_int_equal(metrics_render_stream(r, fmt, sink, &k), 0);
        assert_true(k.calls > 10);
        /* the same bytes, except _created which is identical too (fixed at creation) */
        assert_int_equal(k.len, len);
        assert_memory_equal(k.p, out, len);
        free(k.p);
        free(out);
    }
    /* a failing sink stops the render and its error comes back */
    sink_t k = {.fail_at = 3};
    assert_int_equal(metrics_render_stream(r, METRICS_FORMAT_TEXT, sink, &k), -EPIPE);
    assert_int_equal(k.calls, 3);
    free(k.p);
    assert_int_equal(metrics_render_stream(r, METRICS_FORMAT_TEXT, NULL, NULL), -EINVAL);
    metrics_registry_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_text_exact), cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_histogram),  cmocka_unit_test(test_histogram_default_and_nan),
        cmocka_unit_test(test_numbers),    cmocka_unit_test(test_openmetrics),
        cmocka_unit_test(test_negotiate),  cmocka_unit_test(test_order),
        cmocka_unit_test(test_stream),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
