/* The process_* collector reports plausible values; inferd_metrics_init registers the whole
 * DESIGN.md set with its labels. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "inferd_metrics.h"
#include "metrics.h"

/* The value of the first sample line starting "name " (no labels). */
static double sample(const char *out, const char *name)
{
    char key[128];
    snprintf(key, sizeof key, "\n%s ", name);
    const char *p = strstr(out, key);
    if (!p) fail_msg("no sample %s", name);
    return strtod(p + strlen(key), NULL);
}

static void test_process_collector(void **state)
{
    (void)state;
    metrics_registry_t *r = NULL;
    assert_int_equal(metrics_registry_new(&r, "inferd_", NULL, 0), 0);
    assert_int_equal(metrics_process_collector_add(r), 0);
    assert_int_equal(metrics_process_collector_add(r), -EEXIST);
    /* burn a little CPU and open a few fds so the values move */
    volatile double x = 0;
    for (int i = 0; i < 20000000; i++)
        x += i * 0.5;
    int fds[5];
    for (int i = 0; i < 5; i++)
        fds[i] = open("/dev/null", O_RDONLY);

    char *out;
    size_t len;
    assert_int_equal(metrics_render(r, NULL, &out, &len, NULL), 0);
    double cpu = sample(out, "process_cpu_seconds_total");
    double rss = sample(out, "process_resident_memory_bytes");
    double vsz = sample(out, "process_virtual_memory_bytes");
    double open_fds = sample(out, "process_open_fds");
    double max_fds = sample(out, "process_max_fds");
    double start = sample(out, "process_start_time_seconds");
    assert_true(cpu > 0 && cpu < 3600);
    assert_true(rss > 1e6 && rss < 1e12);
    assert_true(vsz >= rss);
    assert_true(open_fds >= 8 && open_fds < 10000); /* stdio + the 5 above */
    assert_true(max_fds >= open_fds);
    double now = (double)time(NULL);
    assert_true(start > now - 3600 && start <= now + 1);
    /* unprefixed */
    assert_null(strstr(out, "inferd_process"));
    free(out);

    for (int i = 0; i < 5; i++)
        close(fds[i]);
    assert_int_equal(metrics_render(r, NULL, &out, &len, NULL), 0);
    assert_true(sample(out, "process_open_fds") == open_fds - 5);
    assert_true(sample(out, "process_cpu_seconds_total") >= cpu);
    free(out);
    metrics_registry_free(r);
}

static unsigned long dropped_src(void)
{
    return 17;
}

static void test_inferd_set(void **state)
{
    (void)state;
    metrics_registry_t *r = NULL;
    assert_int_equal(metrics_registry_new(&r, "inferd_", NULL, 0), 0);
    inferd_metrics_t m;
    assert_int_equal(inferd_metrics_init(&m, r), 0);

    struct {
        const char *name;
        metrics_type_t type;
        size_t labels;
    } want[] = {
        {"grpc_server_started_total", METRICS_COUNTER, 3},
        {"grpc_server_handled_total", METRICS_COUNTER, 4},
        {"grpc_server_msg_received_total", METRICS_COUNTER, 3},
        {"grpc_server_msg_sent_total", METRICS_COUNTER, 3},
        {"grpc_server_handling_seconds", METRICS_HISTOGRAM, 3},
        {"inferd_requests_total", METRICS_COUNTER, 5},
        {"inferd_inflight_requests", METRICS_GAUGE, 2},
        {"inferd_queued_requests", METRICS_GAUGE, 2},
        {"inferd_request_duration_seconds", METRICS_HISTOGRAM, 3},
        {"inferd_time_to_first_token_seconds", METRICS_HISTOGRAM, 3},
        {"inferd_inter_token_latency_seconds", METRICS_HISTOGRAM, 3},
        {"inferd_input_sequence_tokens", METRICS_HISTOGRAM, 3},
        {"inferd_output_sequence_tokens", METRICS_HISTOGRAM, 3},
        {"inferd_output_tokens_total", METRICS_COUNTER, 3},
        {"inferd_request_bytes_total", METRICS_COUNTER, 2},
        {"inferd_response_bytes_total", METRICS_COUNTER, 2},
        {"inferd_uptime_seconds", METRICS_GAUGE, 0},
        {"inferd_health_status", METRICS_GAUGE, 1},
        {"inferd_health_canary_total", METRICS_COUNTER, 2},
        {"inferd_health_canary_duration_seconds", METRICS_HISTOGRAM, 1},
        {"inferd_connections_active", METRICS_GAUGE, 0},
        {"inferd_connections_total", METRICS_COUNTER, 0},
        {"inferd_http2_streams_active", METRICS_GAUGE, 0},
        {"inferd_log_lines_dropped_total", METRICS_COUNTER, 0},
        {"process_cpu_seconds_total", METRICS_COUNTER, 0},
        {"process_resident_memory_bytes", METRICS_GAUGE, 0},
        {"process_virtual_memory_bytes", METRICS_GAUGE, 0},
        {"process_open_fds", METRICS_GAUGE, 0},
        {"process_max_fds", METRICS_GAUGE, 0},
        {"process_start_time_seconds", METRICS_GAUGE, 0},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        metrics_family_t *f = metrics_family_find(r, want[i].name);
        if (!f) fail_msg("%s not registered", want[i].name);
        assert_int_equal(metrics_family_type(f), want[i].type);
        assert_int_equal(metrics_family_label_count(f), want[i].labels);
    }
    assert_ptr_equal(metrics_family_find(r, "grpc_server_handled_total"), m.grpc_handled);

    /* label order as documented */
    const char *const hv[] = {"inferd.v1.Inference", "Generate", INFERD_GRPC_SERVER_STREAM, "OK"};
    metrics_inc(metrics_series(m.grpc_handled, hv));
    const char *const rv[] = {"tiny", "cpu", "openai", INFERD_STATUS_SUCCESS, ""};
    metrics_inc(metrics_series(m.requests, rv));
    const char *const tv[] = {"tiny", "cpu", "grpc"};
    metrics_observe(metrics_series(m.output_tokens, tv), 100);
    metrics_inc(m.connections_total_s);
    inferd_metrics_set_log_dropped_source(&m, dropped_src);

    /* uptime counts from the start time */
    struct timespec start;
    clock_gettime(CLOCK_MONOTONIC, &start);
    start.tv_sec -= 100;
    inferd_metrics_set_start(&m, &start);
    double up = inferd_metrics_uptime_seconds(&m);
    assert_true(up >= 100 && up < 110);

    char *out;
    size_t len;
    assert_int_equal(metrics_render(r, NULL, &out, &len, NULL), 0);
    assert_non_null(strstr(out, "grpc_server_handled_total{grpc_service=\"inferd.v1.Inference\","
                                "grpc_method=\"Generate\",grpc_type=\"server_stream\","
                                "grpc_code=\"OK\"} 1\n"));
    assert_non_null(strstr(out, "inferd_requests_total{model=\"tiny\",backend=\"cpu\","
                                "api=\"openai\",status=\"success\",error_type=\"\"} 1\n"));
    assert_non_null(strstr(out, "inferd_output_sequence_tokens_bucket{model=\"tiny\","
                                "backend=\"cpu\",api=\"grpc\",le=\"128\"} 1\n"));
    assert_non_null(strstr(out, "\ninferd_connections_total 1\n"));
    assert_non_null(strstr(out, "\ninferd_connections_active 0\n"));
    assert_non_null(strstr(out, "\ninferd_log_lines_dropped_total 17\n"));
    double upr = sample(out, "inferd_uptime_seconds");
    assert_true(upr >= 100 && upr < 110);
    assert_non_null(strstr(out, "\nprocess_open_fds "));
    free(out);

    /* twice in one registry is a clash */
    inferd_metrics_t m2;
    assert_int_equal(inferd_metrics_init(&m2, r), -EEXIST);
    /* disposed before the registry: scrapes still work, the uptime collector idles */
    inferd_metrics_dispose(&m);
    assert_int_equal(metrics_render(r, NULL, &out, &len, NULL), 0);
    free(out);
    inferd_metrics_dispose(NULL);
    metrics_registry_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_process_collector),
        cmocka_unit_test(test_inferd_set),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
