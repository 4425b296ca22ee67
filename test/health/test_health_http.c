/* /live and /health bodies: parsed with jansson, fields and status codes checked. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <jansson.h>

#include "fake.h"
#include "health/health.h"

#define INF "inferd.v1.Inference"

struct fixture {
    struct event_base *base;
    health_t *h;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    f->base = event_base_new();
    assert_int_equal(health_new(&f->h, f->base, HEALTH_NOT_SERVING, NULL, 0), 0);
    assert_non_null(f->h);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    health_free(f->h);
    event_base_free(f->base);
    free(f);
    return 0;
}

/* Parses a body, checking the length matches and that it is one JSON object. */
static json_t *parse(char *body, size_t len)
{
    assert_non_null(body);
    assert_int_equal(strlen(body), len);
    json_error_t err;
    json_t *j = json_loadb(body, len, JSON_REJECT_DUPLICATES, &err);
    if (!j) fail_msg("bad JSON (%s): %s", err.text, body);
    assert_true(json_is_object(j));
    free(body);
    return j;
}

static json_t *ready_body(health_t *h, int *code)
{
    char *body = NULL;
    size_t len = 0;
    *code = 0;
    assert_int_equal(health_ready_body(h, &body, &len, code), 0);
    return parse(body, len);
}

static json_t *live_body(health_t *h, int *code)
{
    char *body = NULL;
    size_t len = 0;
    *code = 0;
    assert_int_equal(health_live_body(h, &body, &len, code), 0);
    return parse(body, len);
}

static const char *str(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    assert_true(json_is_string(v));
    return json_string_value(v);
}

/* Checks an RFC 3339 UTC time and returns it as seconds since the epoch. */
static time_t rfc3339(const char *s)
{
    struct tm tm = {0};
    const char *end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    assert_non_null(end);
    assert_true(end[0] == '.' && end[1] >= '0' && end[1] <= '9' && end[4] == 'Z' && !end[5]);
    return timegm(&tm);
}

static void test_live(void **state)
{
    struct fixture *f = *state;
    int code;
    json_t *j = live_body(f->h, &code);
    assert_int_equal(code, 200);
    assert_string_equal(str(j, "status"), "live");
    assert_int_equal(json_object_size(j), 1);
    json_decref(j);

    /* engine down and draining do not touch /live */
    assert_int_equal(health_endpoint_add(f->h, "generate", INF), 0);
    assert_int_equal(health_endpoint_set(f->h, "generate", HEALTH_NOT_SERVING, "hung"), 0);
    assert_int_equal(health_set_draining(f->h), 0);
    j = live_body(f->h, &code);
    assert_int_equal(code, 200);
    assert_string_equal(str(j, "status"), "live");
    json_decref(j);

    assert_int_equal(health_set_shutdown(f->h), 0);
    j = live_body(f->h, &code);
    assert_int_equal(code, 503);
    assert_string_equal(str(j, "status"), "shutting_down");
    json_decref(j);
}

static void test_ready_lifecycle(void **state)
{
    struct fixture *f = *state;
    health_t *h = f->h;
    int code;

    /* no endpoint: notready, empty endpoints */
    json_t *j = ready_body(h, &code);
    assert_int_equal(code, 503);
    assert_string_equal(str(j, "status"), "notready");
    assert_true(json_is_integer(json_object_get(j, "uptime_seconds")));
    assert_true(json_integer_value(json_object_get(j, "uptime_seconds")) >= 0);
    assert_true(json_is_object(json_object_get(j, "endpoints")));
    assert_int_equal(json_object_size(json_object_get(j, "endpoints")), 0);
    json_decref(j);

    /* starting: notready, reason "starting", never checked */
    assert_int_equal(health_endpoint_add(h, "generate", INF), 0);
    j = ready_body(h, &code);
    assert_int_equal(code, 503);
    assert_string_equal(str(j, "status"), "notready");
    json_t *ep = json_object_get(json_object_get(j, "endpoints"), "generate");
    assert_true(json_is_object(ep));
    assert_string_equal(str(ep, "status"), "notready");
    assert_string_equal(str(ep, "reason"), "starting");
    assert_true(json_is_null(json_object_get(ep, "last_check")));
    rfc3339(str(ep, "last_transition"));
    json_decref(j);

    /* first check passes: ready, 200, last_check is now */
    time_t before = time(NULL);
    assert_int_equal(health_endpoint_set(h, "generate", HEALTH_SERVING, "canary passed"), 0);
    time_t after = time(NULL);
    j = ready_body(h, &code);
    assert_int_equal(code, 200);
    assert_string_equal(str(j, "status"), "ready");
    ep = json_object_get(json_object_get(j, "endpoints"), "generate");
    assert_string_equal(str(ep, "status"), "ready");
    assert_string_equal(str(ep, "reason"), "canary passed");
    time_t t = rfc3339(str(ep, "last_check"));
    assert_true(t >= before && t <= after);
    json_decref(j);

    /* a second endpoint not ready: the whole is notready, both are listed */
    assert_int_equal(health_endpoint_add(h, "embed", "inferd.v1.Embed"), 0);
    j = ready_body(h, &code);
    assert_int_equal(code, 503);
    assert_string_equal(str(j, "status"), "notready");
    assert_int_equal(json_object_size(json_object_get(j, "endpoints")), 2);
    json_decref(j);
    assert_int_equal(health_endpoint_set(h, "embed", HEALTH_SERVING, "ok"), 0);
    j = ready_body(h, &code);
    assert_int_equal(code, 200);
    json_decref(j);

    /* draining: shutting_down and 503 even though the endpoints are fine */
    assert_int_equal(health_set_draining(h), 0);
    j = ready_body(h, &code);
    assert_int_equal(code, 503);
    assert_string_equal(str(j, "status"), "shutting_down");
    ep = json_object_get(json_object_get(j, "endpoints"), "generate");
    assert_string_equal(str(ep, "status"), "ready");
    json_decref(j);
}

static void test_ready_at_start(void **state)
{
    struct fixture *f = *state;
    health_t *h; /* DYN_SYSTEM_STARTING_HEALTH_STATUS=ready */
    assert_int_equal(health_new(&h, f->base, HEALTH_SERVING, NULL, 0), 0);
    assert_int_equal(health_endpoint_add(h, "generate", INF), 0);
    int code;
    json_t *j = ready_body(h, &code);
    assert_int_equal(code, 200);
    assert_string_equal(str(j, "status"), "ready");
    json_decref(j);
    health_free(h);
}

static void test_reason_escaped(void **state)
{
    struct fixture *f = *state;
    health_t *h = f->h;
    assert_int_equal(health_endpoint_add(h, "generate", INF), 0);
    const char *nasty = "canary failed: \"quoted\" \\ back\nnew\tline \x01 ctl \xe2\x9c\x93 ok";
    assert_int_equal(health_endpoint_set(h, "generate", HEALTH_SERVING, nasty), 0);
    int code;
    json_t *j = ready_body(h, &code);
    json_t *ep = json_object_get(json_object_get(j, "endpoints"), "generate");
    assert_string_equal(str(ep, "reason"), nasty); /* round-trips exactly */
    json_decref(j);

    /* bytes that are not UTF-8 cannot go into JSON: they become '?' */
    assert_int_equal(
        health_endpoint_set(h, "generate", HEALTH_NOT_SERVING, "bad \xff\xfe byte \xc3 end"), 0);
    j = ready_body(h, &code);
    assert_int_equal(code, 503);
    ep = json_object_get(json_object_get(j, "endpoints"), "generate");
    assert_string_equal(str(ep, "reason"), "bad ?? byte ? end");
    json_decref(j);
}

/* The routes the core serves /live and /health with (core/http.h): names, paths, methods, and
 * handlers that answer with the bodies above. */
static void test_routes(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(health_endpoint_add(f->h, "generate", INF), 0);
    http_route_t rows[2];
    health_http_routes(f->h, "/livez", "/readyz", rows);
    assert_string_equal(rows[0].name, "live");
    assert_string_equal(rows[0].path, "/livez");
    assert_string_equal(rows[1].name, "health");
    assert_string_equal(rows[1].path, "/readyz");
    for (int i = 0; i < 2; i++) {
        assert_int_equal(rows[i].methods, HTTP_METHOD_GET | HTTP_METHOD_HEAD);
        assert_ptr_equal(rows[i].arg, f->h);
    }
    http_request_t req = {.method = "GET", .path = "/livez", .query = "", .peer = "test"};
    http_response_t r = {0};
    rows[0].handler(rows[0].arg, &req, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.content_type, "application/json");
    json_t *j = parse(r.body, r.len);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "live");
    json_decref(j);
    memset(&r, 0, sizeof r);
    req.path = "/readyz";
    rows[1].handler(rows[1].arg, &req, &r);
    assert_int_equal(r.status, 503); /* generate is not SERVING yet */
    assert_string_equal(r.content_type, "application/json");
    j = parse(r.body, r.len);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "notready");
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_live, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ready_lifecycle, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ready_at_start, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reason_escaped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_routes, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
