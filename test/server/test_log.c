/* The logger and the access log: JSONL lines parse (jansson) with the required fields and
 * escaping, text lines stay one line, per-module levels (DYN_LOG syntax) filter, invalid
 * specs are refused, a blocked stderr drops and counts lines instead of blocking, and the
 * access log's per-second budget. Output is captured with log_set_fd. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
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

#include "server/core/conn.h"
#include "server/base/log.h"

/* ---- capture: lines go to a temporary file; each test reads what was added ---- */
static int cap_fd = -1;
static off_t cap_off;
static char cap_buf[4 << 20];

static int setup(void **state)
{
    (void)state;
    char path[] = "/tmp/inferd-test-log-XXXXXX";
    cap_fd = mkstemp(path);
    assert_true(cap_fd >= 0);
    unlink(path);
    cap_off = 0;
    log_set_fd(cap_fd);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    log_set_fd(2);
    log_set_context(NULL, NULL, NULL);
    close(cap_fd);
    char err[128];
    log_configure("info", 0, err, sizeof err);
    return 0;
}

/* Flushes the logger and returns what was written since the last call (NUL-terminated). */
static char *captured(void)
{
    log_flush();
    ssize_t n = pread(cap_fd, cap_buf, sizeof cap_buf - 1, cap_off);
    assert_true(n >= 0);
    cap_buf[n] = 0;
    cap_off += n;
    return cap_buf;
}

/* Splits buf into lines in place; every line must end with '\n'. Returns the count. */
static size_t split_lines(char *buf, char **lines, size_t max)
{
    size_t n = 0;
    for (char *p = buf; *p;) {
        char *nl = strchr(p, '\n');
        assert_non_null(nl);
        *nl = 0;
        if (n < max) lines[n] = p;
        n++;
        p = nl + 1;
    }
    return n;
}

static void configure(const char *spec, int jsonl)
{
    char err[256] = "";
    if (log_configure(spec, jsonl, err, sizeof err)) fail_msg("log_configure(%s): %s", spec, err);
}

/* Parses one JSONL line strictly (no duplicate keys) and checks the fields every line has. */
static json_t *parse_line(const char *line)
{
    json_error_t e;
    json_t *j = json_loads(line, JSON_REJECT_DUPLICATES, &e);
    if (!j) fail_msg("not JSON (%s at %d): %s", e.text, e.position, line);
    assert_true(json_is_object(j));
    const char *t = json_string_value(json_object_get(j, "time"));
    assert_non_null(t);
    /* RFC 3339 UTC with microseconds: 2024-01-02T03:04:05.123456Z */
    assert_int_equal(strlen(t), 27);
    int y, mo, d, h, mi, s;
    long us;
    char z;
    assert_int_equal(sscanf(t, "%4d-%2d-%2dT%2d:%2d:%2d.%6ld%c", &y, &mo, &d, &h, &mi, &s, &us, &z),
                     8);
    assert_int_equal(z, 'Z');
    assert_true(y >= 2024 && mo >= 1 && mo <= 12 && d >= 1 && d <= 31 && h < 24 && mi < 60 &&
                s <= 60);
    assert_non_null(json_string_value(json_object_get(j, "level")));
    assert_non_null(json_string_value(json_object_get(j, "target")));
    assert_non_null(json_string_value(json_object_get(j, "message")));
    return j;
}

static const char *jstr(json_t *j, const char *key)
{
    const char *v = json_string_value(json_object_get(j, key));
    if (!v) fail_msg("no string field %s", key);
    return v;
}

/* ---- JSONL ---- */

static void test_jsonl_fields_and_escaping(void **state)
{
    (void)state;
    configure("trace", 1);
    const char *odd = "quote\" backslash\\ nl\n cr\r tab\t bell\x07 del\x7f é ✓ 🙂";
    const char *fields[] = {"path",
                            odd,
                            "bad_utf8",
                            "a\xff"
                            "b\xc3(c\xed\xa0\x80"
                            "d",
                            "empty",
                            "",
                            NULL};
    log_write(LOG_WARN, "server", fields, "msg %s %d", odd, 42);
    log_write(LOG_TRACE, "engine::sampler", NULL, "plain");
    char *lines[8];
    size_t n = split_lines(captured(), lines, 8);
    assert_int_equal(n, 2);
    json_t *j = parse_line(lines[0]);
    assert_string_equal(jstr(j, "level"), "warn");
    assert_string_equal(jstr(j, "target"), "server");
    char want[256];
    snprintf(want, sizeof want, "msg %s 42", odd);
    assert_string_equal(jstr(j, "message"), want);
    assert_string_equal(jstr(j, "path"), odd);
    /* invalid UTF-8 (a stray byte, a cut sequence, a surrogate) becomes U+FFFD */
    assert_string_equal(jstr(j, "bad_utf8"), "a\xef\xbf\xbd"
                                             "b\xef\xbf\xbd(c\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd"
                                             "d");
    assert_string_equal(jstr(j, "empty"), "");
    assert_null(json_object_get(j, "truncated"));
    assert_null(json_object_get(j, "request_id")); /* outside a call */
    json_decref(j);
    j = parse_line(lines[1]);
    assert_string_equal(jstr(j, "level"), "trace");
    assert_string_equal(jstr(j, "target"), "engine::sampler");
    assert_string_equal(jstr(j, "message"), "plain");
    json_decref(j);
}

static void test_jsonl_call_context(void **state)
{
    (void)state;
    configure("info", 1);
    log_set_context("abc-123", "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    log_info("engine", "token step");
    const char *f[] = {"request_id", "explicit", NULL};
    log_write(LOG_INFO, "engine", f, "own id");
    log_set_context(NULL, NULL, NULL);
    log_info("engine", "after");
    char *lines[4];
    assert_int_equal(split_lines(captured(), lines, 4), 3);
    json_t *j = parse_line(lines[0]);
    assert_string_equal(jstr(j, "request_id"), "abc-123");
    assert_string_equal(jstr(j, "trace_id"), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_string_equal(jstr(j, "span_id"), "00f067aa0ba902b7");
    json_decref(j);
    j = parse_line(lines[1]); /* duplicates would fail JSON_REJECT_DUPLICATES */
    assert_string_equal(jstr(j, "request_id"), "explicit");
    assert_string_equal(jstr(j, "trace_id"), "4bf92f3577b34da6a3ce929d0e0e4736");
    json_decref(j);
    j = parse_line(lines[2]);
    assert_null(json_object_get(j, "request_id"));
    json_decref(j);
}

static void test_jsonl_reserved_keys_not_duplicated(void **state)
{
    (void)state;
    configure("info", 1);
    const char *f[] = {"message", "m2", "level", "l2", NULL};
    log_write(LOG_INFO, "server", f, "m1");
    char *lines[2];
    assert_int_equal(split_lines(captured(), lines, 2), 1);
    json_t *j = parse_line(lines[0]);
    assert_string_equal(jstr(j, "message"), "m1");
    assert_string_equal(jstr(j, "level"), "info");
    assert_string_equal(jstr(j, "field_message"), "m2");
    assert_string_equal(jstr(j, "field_level"), "l2");
    json_decref(j);
}

static void test_jsonl_long_lines_stay_valid(void **state)
{
    (void)state;
    configure("info", 1);
    static char big[20000];
    memset(big, '"', sizeof big - 1); /* each escapes to two bytes */
    big[sizeof big - 1] = 0;
    static char ctl[3000];
    memset(ctl, 1, sizeof ctl - 1); /* each escapes to six bytes */
    ctl[sizeof ctl - 1] = 0;
    const char *f[] = {"a", big, "b", ctl, "small", "kept", "c", big, "d", ctl, "e", ctl, NULL};
    log_set_context("rid-long", NULL, NULL);
    log_write(LOG_INFO, "server", f, "%s", big);
    log_write(LOG_INFO, "server", NULL, "%s", ctl);
    char *lines[4];
    assert_int_equal(split_lines(captured(), lines, 4), 2);
    json_t *j = parse_line(lines[0]);
    assert_true(json_is_true(json_object_get(j, "truncated")));
    assert_true(strlen(jstr(j, "message")) > 1000);
    assert_string_equal(jstr(j, "small"), "kept");
    assert_string_equal(jstr(j, "request_id"), "rid-long"); /* the ids survive a cut */
    assert_true(strlen(jstr(j, "a")) <= 1024);              /* no one value takes the line */
    assert_true(strlen(lines[0]) < 16384);
    json_decref(j);
    log_set_context(NULL, NULL, NULL);
    j = parse_line(lines[1]);
    assert_true(json_is_true(json_object_get(j, "truncated")));
    json_decref(j);
}

/* ---- text ---- */

static void test_text_lines(void **state)
{
    (void)state;
    configure("info", 0);
    log_set_context("rid-1", NULL, NULL);
    const char *f[] = {"plain", "v", "spaced", "a b", "quoted", "say \"hi\"", "empty", "", NULL};
    log_write(LOG_ERROR, "server", f, "two\nlines\x01");
    log_set_context(NULL, NULL, NULL);
    char *lines[4];
    assert_int_equal(split_lines(captured(), lines, 4), 1);
    const char *l = lines[0];
    assert_true(strlen(l) > 28 && l[4] == '-' && l[10] == 'T' && l[26] == 'Z');
    assert_non_null(strstr(l, " ERROR server: two\\nlines\\x01 plain=v spaced=\"a b\" "
                              "quoted=\"say \\\"hi\\\"\" empty=\"\" request_id=rid-1"));
}

/* ---- levels ---- */

static void test_module_levels(void **state)
{
    (void)state;
    configure("warn,server=debug,server::h2=error,health=trace,engine=off", 1);
    assert_false(log_enabled(LOG_INFO, "access"));
    assert_true(log_enabled(LOG_WARN, "access"));
    assert_true(log_enabled(LOG_DEBUG, "server"));
    assert_false(log_enabled(LOG_TRACE, "server"));
    assert_true(log_enabled(LOG_DEBUG, "server::conn")); /* below server */
    assert_true(log_enabled(LOG_DEBUG, "server.conn"));
    assert_false(log_enabled(LOG_WARN, "server::h2")); /* the longer module wins */
    assert_true(log_enabled(LOG_ERROR, "server::h2"));
    assert_false(log_enabled(LOG_DEBUG, "serverx")); /* not a module boundary */
    assert_true(log_enabled(LOG_TRACE, "health"));
    assert_false(log_enabled(LOG_ERROR, "engine"));
    assert_false(log_enabled(LOG_OFF, "health"));
    /* the macros filter: only the enabled lines come out */
    log_debug("server", "kept 1");
    log_info("health", "kept 2");
    log_info("access", "dropped");
    log_error("engine", "dropped");
    log_warn("server::h2", "dropped");
    log_error("metrics", "kept 3");
    char *lines[8];
    size_t n = split_lines(captured(), lines, 8);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < n; i++) {
        json_t *j = parse_line(lines[i]);
        char want[32];
        snprintf(want, sizeof want, "kept %zu", i + 1);
        assert_string_equal(jstr(j, "message"), want);
        json_decref(j);
    }
    /* case-insensitive levels; a module named twice: the later directive wins */
    configure("INFO,access=Debug,access=warn", 1);
    assert_true(log_enabled(LOG_INFO, "server"));
    assert_false(log_enabled(LOG_INFO, "access"));
    assert_true(log_enabled(LOG_WARN, "access"));
}

static void test_invalid_specs(void **state)
{
    (void)state;
    configure("info,server=debug", 1);
    const char *bad[] = {"",
                         "loud",
                         "info,",
                         ",info",
                         "server=",
                         "=debug",
                         "Server=debug",
                         "info,server=loud",
                         "info,,x=debug",
                         "a b=info",
                         "server=debug=x",
                         "a_module_name_that_is_much_too_long_for_a_rule=info"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char err[256] = "";
        int rc = log_configure(bad[i], 0, err, sizeof err);
        if (rc != -EINVAL) fail_msg("spec '%s' accepted", bad[i]);
        assert_true(strlen(err) > 10);
    }
    /* nothing changed */
    assert_true(log_enabled(LOG_DEBUG, "server"));
    assert_false(log_enabled(LOG_DEBUG, "health"));
    char err[64];
    assert_int_equal(log_configure(NULL, 0, err, sizeof err), 0); /* NULL: info */
    assert_false(log_enabled(LOG_DEBUG, "server"));
}

/* ---- never blocking: a stuck stderr drops lines and counts them ---- */

static double mono(void)
{
    return (double)clock_now_ns() / 1e9;
}

static void test_stuck_stderr_drops_and_counts(void **state)
{
    (void)state;
    configure("info", 1);
    int p[2];
    assert_int_equal(pipe(p), 0);
    log_set_fd(p[1]); /* nobody reads: the writer blocks once the pipe is full */
    unsigned long d0 = log_dropped();
    double t0 = mono();
    const int lines = 30000; /* ~4 MiB: more than the pipe and the 1 MiB ring together */
    for (int i = 0; i < lines; i++)
        log_info("server", "line %d of a flood that stderr cannot take", i);
    double took = mono() - t0;
    unsigned long dropped = log_dropped() - d0;
    print_message("%d lines in %.1f ms with stderr stuck, %lu dropped\n", lines, took * 1e3,
                  dropped);
    /* never waited on the pipe: a writer that did would not return at all, since nobody reads
     * it until below; the bound is loose for sanitizer builds on a loaded machine */
    assert_true(took < 20.0);
    assert_true(dropped > 0 && dropped < (unsigned long)lines);
    /* unblock: everything queued comes out, then one notice with the count */
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    static char all[4 << 20];
    size_t have = 0;
    int notice = 0;
    double deadline = mono() + 10;
    while (!notice && mono() < deadline && have < sizeof all - 1) {
        struct pollfd pf = {p[0], POLLIN, 0};
        poll(&pf, 1, 100);
        ssize_t n = read(p[0], all + have, sizeof all - 1 - have);
        if (n <= 0) continue;
        have += (size_t)n;
        all[have] = 0;
        notice = strstr(have > 4096 ? all + have - 4096 : all, "log lines dropped") != NULL;
    }
    size_t got_lines = 0;
    for (size_t i = 0; i < have; i++)
        got_lines += all[i] == '\n';
    assert_true(notice);
    char want[64];
    snprintf(want, sizeof want, "\"dropped\":\"%lu\"", dropped);
    assert_non_null(strstr(have > 4096 ? all + have - 4096 : all, want));
    assert_int_equal(got_lines, (size_t)lines - dropped + 1);
    log_set_fd(cap_fd);
    close(p[0]);
    close(p[1]);
}

/* ---- rate limit ---- */

static void test_ratelimit(void **state)
{
    (void)state;
    log_ratelimit_t rl = {.per_sec = 3};
    unsigned long held;
    const int64_t S = 1000000000LL;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(log_ratelimit_take(&rl, 10 * S + i, &held), 1);
        assert_int_equal(held, 0);
    }
    assert_int_equal(log_ratelimit_take(&rl, 10 * S + S / 2, &held), 0);
    assert_int_equal(log_ratelimit_take(&rl, 10 * S + S - 1, &held), 0);
    assert_int_equal(held, 0);
    assert_int_equal(log_ratelimit_take(&rl, 11 * S, &held), 1); /* a new window */
    assert_int_equal(held, 2);
    assert_int_equal(log_ratelimit_take(&rl, 11 * S + 1, &held), 1);
    assert_int_equal(held, 0);
    assert_int_equal(log_ratelimit_take(&rl, 15 * S, &held), 1); /* nothing held: no report */
    assert_int_equal(held, 0);
}

static grpc_method_t check_m = {.path = "/grpc.health.v1.Health/Check",
                                .service = "grpc.health.v1.Health",
                                .name = "Check",
                                .flags = GRPC_METHOD_PROBE};
static grpc_method_t gen_m = {
    .path = "/inferd.v1.Inference/Generate", .service = "inferd.v1.Inference", .name = "Generate"};

static void fake_call(grpc_call_t *c, conn_t *conn, grpc_method_t *m, const char *rid)
{
    memset(c, 0, sizeof *c);
    c->conn = conn;
    c->method = m;
    c->bytes_in = 12;
    c->bytes_out = 345;
    snprintf(c->request_id, sizeof c->request_id, "%s", rid);
    snprintf(c->trace_id, sizeof c->trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    snprintf(c->span_id, sizeof c->span_id, "00f067aa0ba902b7");
}

static void test_access_line_and_probe_level(void **state)
{
    (void)state;
    conn_t conn;
    memset(&conn, 0, sizeof conn);
    snprintf(conn.peer, sizeof conn.peer, "127.0.0.1:5555");
    grpc_call_t c;
    usleep(1100000); /* a fresh rate-limit window */
    configure("info", 1);
    fake_call(&c, &conn, &check_m, "probe-1");
    access_log_call(NULL, &c, 0.000123, 0); /* a probe: debug, not logged at info */
    fake_call(&c, &conn, &gen_m, "abc-123");
    access_log_call(NULL, &c, 1.5, 4);
    configure("info,access=debug", 1);
    fake_call(&c, &conn, &check_m, "probe-2");
    access_log_call(NULL, &c, 0.000123, 0);
    char *lines[4];
    assert_int_equal(split_lines(captured(), lines, 4), 2);
    json_t *j = parse_line(lines[0]);
    assert_string_equal(jstr(j, "level"), "info");
    assert_string_equal(jstr(j, "target"), "access");
    assert_string_equal(jstr(j, "method"), "/inferd.v1.Inference/Generate");
    assert_string_equal(jstr(j, "grpc_status"), "DEADLINE_EXCEEDED");
    assert_string_equal(jstr(j, "grpc_code"), "4");
    assert_string_equal(jstr(j, "duration_s"), "1.500000");
    assert_string_equal(jstr(j, "bytes_in"), "12");
    assert_string_equal(jstr(j, "bytes_out"), "345");
    assert_string_equal(jstr(j, "peer"), "127.0.0.1:5555");
    assert_string_equal(jstr(j, "request_id"), "abc-123");
    assert_string_equal(jstr(j, "trace_id"), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_string_equal(jstr(j, "span_id"), "00f067aa0ba902b7");
    json_decref(j);
    j = parse_line(lines[1]);
    assert_string_equal(jstr(j, "level"), "debug");
    assert_string_equal(jstr(j, "request_id"), "probe-2");
    json_decref(j);
    /* a call that never found its method (unknown path) is logged with the path */
    fake_call(&c, NULL, NULL, "x");
    c.path = "/no.such/Method";
    access_log_call(NULL, &c, 0.0001, 12);
    assert_int_equal(split_lines(captured(), lines, 4), 1);
    j = parse_line(lines[0]);
    assert_string_equal(jstr(j, "method"), "/no.such/Method");
    assert_string_equal(jstr(j, "grpc_status"), "UNIMPLEMENTED");
    assert_string_equal(jstr(j, "peer"), "");
    json_decref(j);
}

static void test_access_rate_limit(void **state)
{
    (void)state;
    configure("info", 1);
    grpc_call_t c;
    fake_call(&c, NULL, &gen_m, "flood");
    usleep(1100000); /* a fresh window */
    for (int i = 0; i < 250; i++)
        access_log_call(NULL, &c, 0.001, 0);
    static char *lines[400];
    size_t n = split_lines(captured(), lines, 400);
    assert_int_equal(n, 100); /* the budget: 100 lines a second */
    usleep(1100000);
    access_log_call(NULL, &c, 0.001, 0);
    n = split_lines(captured(), lines, 400);
    assert_int_equal(n, 2);
    json_t *j = parse_line(lines[0]);
    assert_string_equal(jstr(j, "target"), "access");
    assert_string_equal(jstr(j, "suppressed"), "150");
    assert_non_null(strstr(jstr(j, "message"), "suppressed 150 access lines"));
    json_decref(j);
    j = parse_line(lines[1]);
    assert_string_equal(jstr(j, "request_id"), "flood");
    json_decref(j);
    /* lines below the level take no budget */
    configure("warn", 1);
    for (int i = 0; i < 500; i++)
        access_log_call(NULL, &c, 0.001, 0);
    configure("info", 1);
    access_log_call(NULL, &c, 0.001, 0);
    assert_int_equal(split_lines(captured(), lines, 400), 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_jsonl_fields_and_escaping, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jsonl_call_context, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jsonl_reserved_keys_not_duplicated, setup, teardown),
        cmocka_unit_test_setup_teardown(test_jsonl_long_lines_stay_valid, setup, teardown),
        cmocka_unit_test_setup_teardown(test_text_lines, setup, teardown),
        cmocka_unit_test_setup_teardown(test_module_levels, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_specs, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stuck_stderr_drops_and_counts, setup, teardown),
        cmocka_unit_test(test_ratelimit),
        cmocka_unit_test_setup_teardown(test_access_line_and_probe_level, setup, teardown),
        cmocka_unit_test_setup_teardown(test_access_rate_limit, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
