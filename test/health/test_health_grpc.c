/* grpc.health.v1.Health handlers driven through fake calls (fake.c): Check, Watch, List,
 * reference counting of Watch calls, cancellation and the shutdown stage. The wire path
 * (framing, HTTP/2) is the server's and is covered by its integration tests. */
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
#include "grpc/health/v1/health.pb-c.h"
#include "health/health.h"

#define INF "inferd.v1.Inference"

struct fixture {
    struct event_base *base;
    health_t *h;
    grpc_method_t *check, *watch, *list;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    f->base = event_base_new();
    assert_int_equal(health_new(&f->h, f->base, HEALTH_NOT_SERVING, NULL, 0), 0);
    assert_non_null(f->h);
    size_t n = 0;
    grpc_method_t *rows = health_grpc_methods(f->h, &n);
    assert_int_equal(n, 3);
    for (size_t i = 0; i < n; i++) {
        assert_ptr_equal(rows[i].arg, f->h);
        assert_true(rows[i].flags & GRPC_METHOD_PROBE);
        assert_string_equal(rows[i].service, "grpc.health.v1.Health");
        char path[128];
        snprintf(path, sizeof(path), "/%s/%s", rows[i].service, rows[i].name);
        assert_string_equal(rows[i].path, path);
        if (strcmp(rows[i].name, "Check") == 0)
            f->check = &rows[i];
        else if (strcmp(rows[i].name, "Watch") == 0)
            f->watch = &rows[i];
        else if (strcmp(rows[i].name, "List") == 0)
            f->list = &rows[i];
    }
    assert_non_null(f->check);
    assert_non_null(f->watch);
    assert_non_null(f->list);
    assert_int_equal(f->check->kind, GRPC_UNARY);
    assert_int_equal(f->list->kind, GRPC_UNARY);
    assert_int_equal(f->watch->kind, GRPC_SERVER_STREAMING);
    assert_ptr_equal(f->check->request, &grpc__health__v1__health_check_request__descriptor);
    assert_ptr_equal(f->check->response, &grpc__health__v1__health_check_response__descriptor);
    assert_ptr_equal(f->watch->response, &grpc__health__v1__health_check_response__descriptor);
    assert_ptr_equal(f->list->request, &grpc__health__v1__health_list_request__descriptor);
    assert_ptr_equal(f->list->response, &grpc__health__v1__health_list_response__descriptor);
    assert_non_null(f->watch->on_cancel);
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

/* One Check; returns the status sent, or -grpc_status when it failed. */
static int check(struct fixture *f, const char *service)
{
    grpc_call_t *c = fake_call_new(f->check);
    fake_call_request(c, service);
    assert_true(c->finished);
    int r;
    if (c->status == GRPC_STATUS_OK) {
        assert_int_equal(c->n_sent, 1);
        r = c->sent[0];
    } else {
        assert_int_equal(c->n_sent, 0); /* Trailers-Only */
        r = -(int)c->status;
    }
    fake_call_free(c);
    return r;
}

static void test_check(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(check(f, ""), HEALTH_NOT_SERVING);
    assert_int_equal(check(f, "readiness"), HEALTH_NOT_SERVING);
    assert_int_equal(check(f, "liveness"), HEALTH_SERVING);
    assert_int_equal(check(f, INF), -GRPC_STATUS_NOT_FOUND);
    assert_int_equal(check(f, "grpc.health.v1.Health"), -GRPC_STATUS_NOT_FOUND);

    assert_int_equal(health_endpoint_add(f->h, "generate", INF), 0);
    assert_int_equal(check(f, INF), HEALTH_NOT_SERVING);
    assert_int_equal(health_endpoint_set(f->h, "generate", HEALTH_SERVING, "ok"), 0);
    assert_int_equal(check(f, INF), HEALTH_SERVING);
    assert_int_equal(check(f, ""), HEALTH_SERVING);
    assert_int_equal(check(f, "readiness"), HEALTH_SERVING);

    assert_int_equal(health_set_draining(f->h), 0);
    assert_int_equal(check(f, ""), HEALTH_NOT_SERVING);
    assert_int_equal(check(f, INF), HEALTH_NOT_SERVING);
    assert_int_equal(check(f, "liveness"), HEALTH_SERVING);

    grpc_call_t *c = fake_call_new(f->check);
    fake_call_request(c, "nope");
    assert_string_equal(c->message, "unknown service");
    fake_call_free(c);

    /* a send that fails ends the call with an error rather than OK */
    c = fake_call_new(f->check);
    c->send_error = -ENOMEM;
    fake_call_request(c, "");
    assert_true(c->finished);
    assert_int_equal(c->status, GRPC_STATUS_INTERNAL);
    fake_call_free(c);
}

static void test_watch(void **state)
{
    struct fixture *f = *state;
    health_t *h = f->h;
    grpc_call_t *all = fake_call_new(f->watch);
    grpc_call_t *inf = fake_call_new(f->watch);
    fake_call_request(all, "");
    fake_call_request(inf, INF);
    /* open, subscribed, holding a reference; first message at once */
    assert_false(all->finished);
    assert_int_equal(all->refs, 2);
    assert_non_null(all->data);
    assert_int_equal(all->n_sent, 1);
    assert_int_equal(all->sent[0], HEALTH_NOT_SERVING);
    /* unknown service: SERVICE_UNKNOWN and the stream stays open */
    assert_false(inf->finished);
    assert_int_equal(inf->n_sent, 1);
    assert_int_equal(inf->sent[0], HEALTH_SERVICE_UNKNOWN);
    assert_int_equal(health_watch_count(h), 2);

    /* the service appears */
    assert_int_equal(health_endpoint_add(h, "generate", INF), 0);
    assert_int_equal(inf->n_sent, 2);
    assert_int_equal(inf->sent[1], HEALTH_NOT_SERVING);
    assert_int_equal(all->n_sent, 1);

    assert_int_equal(health_endpoint_set(h, "generate", HEALTH_SERVING, "ok"), 0);
    assert_int_equal(all->n_sent, 2);
    assert_int_equal(all->sent[1], HEALTH_SERVING);
    assert_int_equal(inf->n_sent, 3);
    assert_int_equal(inf->sent[2], HEALTH_SERVING);
    /* only changes */
    assert_int_equal(health_endpoint_set(h, "generate", HEALTH_SERVING, "ok"), 0);
    assert_int_equal(all->n_sent, 2);

    /* congestion: held back, then the latest on drain */
    all->congested = 1;
    assert_int_equal(health_endpoint_set(h, "generate", HEALTH_NOT_SERVING, "x"), 0);
    assert_int_equal(all->n_sent, 2);
    all->congested = 0;
    f->watch->on_drain(all);
    assert_int_equal(all->n_sent, 3);
    assert_int_equal(all->sent[2], HEALTH_NOT_SERVING);
    assert_int_equal(inf->n_sent, 4); /* not congested: heard it at once */
    assert_int_equal(inf->sent[3], HEALTH_NOT_SERVING);

    /* the client goes away: the watcher and its reference go */
    fake_call_cancel(inf);
    assert_int_equal(inf->refs, 1);
    assert_null(inf->data);
    assert_int_equal(health_watch_count(h), 1);
    assert_int_equal(health_endpoint_set(h, "generate", HEALTH_SERVING, "ok"), 0);
    assert_int_equal(inf->n_sent, 4);
    assert_int_equal(all->n_sent, 4);
    fake_call_free(inf);

    /* drain: watchers hear NOT_SERVING and stay open */
    assert_int_equal(health_set_draining(h), 0);
    assert_int_equal(all->sent[all->n_sent - 1], HEALTH_NOT_SERVING);
    assert_false(all->finished);

    /* final stage: ended with the given status, reference released */
    health_watch_close_all(h, GRPC_STATUS_UNAVAILABLE);
    assert_true(all->finished);
    assert_int_equal(all->status, GRPC_STATUS_UNAVAILABLE);
    assert_int_equal(all->refs, 1);
    assert_null(all->data);
    assert_int_equal(health_watch_count(h), 0);
    fake_call_cancel(all); /* late reset: nothing left to release */
    fake_call_free(all);

    /* a Watch after that: current status, then ended the same way */
    grpc_call_t *late = fake_call_new(f->watch);
    fake_call_request(late, "");
    assert_int_equal(late->n_sent, 1);
    assert_int_equal(late->sent[0], HEALTH_NOT_SERVING);
    assert_true(late->finished);
    assert_int_equal(late->status, GRPC_STATUS_UNAVAILABLE);
    fake_call_free(late);
}

static void test_watch_send_failure(void **state)
{
    struct fixture *f = *state;
    health_t *h = f->h;
    assert_int_equal(health_endpoint_add(h, "generate", INF), 0);
    grpc_call_t *c = fake_call_new(f->watch);
    fake_call_request(c, "");
    assert_int_equal(c->refs, 2);
    /* a later send failing drops the watcher, ends the call and releases it */
    c->send_error = -ENOMEM;
    assert_int_equal(health_endpoint_set(h, "generate", HEALTH_SERVING, "ok"), 0);
    assert_true(c->finished);
    assert_int_equal(c->status, GRPC_STATUS_INTERNAL);
    assert_int_equal(c->refs, 1);
    assert_int_equal(health_watch_count(h), 0);
    fake_call_free(c);

    /* the first send failing: nothing registered, nothing leaked */
    c = fake_call_new(f->watch);
    c->send_error = -ENOMEM;
    fake_call_request(c, "");
    assert_int_equal(c->refs, 1);
    assert_int_equal(health_watch_count(h), 0);
    fake_call_free(c);
}

static void test_watch_close_ok(void **state)
{
    struct fixture *f = *state;
    grpc_call_t *c = fake_call_new(f->watch);
    fake_call_request(c, "liveness");
    assert_int_equal(c->sent[0], HEALTH_SERVING);
    assert_int_equal(health_set_shutdown(f->h), 0);
    assert_int_equal(c->n_sent, 2);
    assert_int_equal(c->sent[1], HEALTH_NOT_SERVING);
    health_watch_close_all(f->h, GRPC_STATUS_OK);
    assert_true(c->finished);
    assert_int_equal(c->status, GRPC_STATUS_OK);
    assert_string_equal(c->message, "");
    fake_call_free(c);
}

static int list_find(const grpc_call_t *c, const char *name)
{
    for (size_t i = 0; i < c->n_list; i++)
        if (strcmp(c->list_names[i], name) == 0) return c->list_status[i];
    return -1;
}

static void test_list(void **state)
{
    struct fixture *f = *state;
    health_t *h = f->h;
    assert_int_equal(health_endpoint_add(h, "generate", INF), 0);
    assert_int_equal(health_endpoint_set(h, "generate", HEALTH_SERVING, "ok"), 0);
    grpc_call_t *c = fake_call_new(f->list);
    fake_call_request(c, NULL);
    assert_true(c->finished);
    assert_int_equal(c->status, GRPC_STATUS_OK);
    assert_int_equal(c->n_list, 4);
    assert_int_equal(list_find(c, ""), HEALTH_SERVING);
    assert_int_equal(list_find(c, "readiness"), HEALTH_SERVING);
    assert_int_equal(list_find(c, "liveness"), HEALTH_SERVING);
    assert_int_equal(list_find(c, INF), HEALTH_SERVING);
    fake_call_free(c);

    /* exactly 100 is fine; 101 is too many */
    char name[64], svc[64];
    for (int i = 0; health_services(h, NULL, NULL, 0) < HEALTH_LIST_MAX; i++) {
        snprintf(name, sizeof(name), "ep%d", i);
        snprintf(svc, sizeof(svc), "svc.%d", i);
        assert_int_equal(health_endpoint_add(h, name, svc), 0);
    }
    c = fake_call_new(f->list);
    fake_call_request(c, NULL);
    assert_int_equal(c->status, GRPC_STATUS_OK);
    assert_int_equal(c->n_list, HEALTH_LIST_MAX);
    assert_int_equal(list_find(c, "svc.0"), HEALTH_NOT_SERVING);
    assert_int_equal(list_find(c, ""), HEALTH_NOT_SERVING);
    fake_call_free(c);

    assert_int_equal(health_endpoint_add(h, "one-more", "svc.extra"), 0);
    c = fake_call_new(f->list);
    fake_call_request(c, NULL);
    assert_true(c->finished);
    assert_int_equal(c->status, GRPC_STATUS_RESOURCE_EXHAUSTED);
    assert_int_equal(c->n_sent, 0);
    fake_call_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_check, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watch, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watch_send_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watch_close_ok, setup, teardown),
        cmocka_unit_test_setup_teardown(test_list, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
