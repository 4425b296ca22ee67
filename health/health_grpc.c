/* grpc.health.v1.Health: Check and List answer from the registry at once; Watch is a registry
 * watcher whose sink is the call (gRFC A17, List from gRFC A90). */
#include <errno.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "health/health_int.h"

typedef Grpc__Health__V1__HealthCheckRequest check_req_t;
typedef Grpc__Health__V1__HealthCheckResponse check_resp_t;
typedef Grpc__Health__V1__HealthListResponse list_resp_t;
typedef Grpc__Health__V1__HealthListResponse__StatusesEntry list_entry_t;

static const char *req_service(const ProtobufCMessage *msg)
{
    const check_req_t *req = (const check_req_t *)msg;
    return req && req->service ? req->service : "";
}

static int send_status(grpc_call_t *call, health_status_t st)
{
    check_resp_t resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    resp.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)st;
    return grpc_call_send(call, &resp.base);
}

static void check_on_message(grpc_call_t *call, ProtobufCMessage *msg)
{
    health_t *h = grpc_call_arg(call);
    health_status_t st;
    if (health_get(h, req_service(msg), &st) < 0) {
        grpc_call_finish(call, GRPC_STATUS_NOT_FOUND, "unknown service");
        return;
    }
    if (send_status(call, st) < 0) {
        grpc_call_finish(call, GRPC_STATUS_INTERNAL, "cannot send response");
        return;
    }
    grpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

static void list_on_message(grpc_call_t *call, ProtobufCMessage *msg)
{
    (void)msg;
    health_t *h = grpc_call_arg(call);
    const char *names[HEALTH_LIST_MAX];
    health_status_t st[HEALTH_LIST_MAX];
    size_t n = health_services(h, names, st, HEALTH_LIST_MAX);
    if (n > HEALTH_LIST_MAX) {
        grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "too many services to list");
        return;
    }
    /* grpc_call_send serializes at once, so the message can live on the stack */
    check_resp_t values[HEALTH_LIST_MAX];
    list_entry_t entries[HEALTH_LIST_MAX];
    list_entry_t *ptrs[HEALTH_LIST_MAX];
    for (size_t i = 0; i < n; i++) {
        grpc__health__v1__health_check_response__init(&values[i]);
        values[i].status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)st[i];
        grpc__health__v1__health_list_response__statuses_entry__init(&entries[i]);
        entries[i].key = (char *)names[i];
        entries[i].value = &values[i];
        ptrs[i] = &entries[i];
    }
    list_resp_t resp = GRPC__HEALTH__V1__HEALTH_LIST_RESPONSE__INIT;
    resp.n_statuses = n;
    resp.statuses = ptrs;
    if (grpc_call_send(call, &resp.base) < 0) {
        grpc_call_finish(call, GRPC_STATUS_INTERNAL, "cannot send response");
        return;
    }
    grpc_call_finish(call, GRPC_STATUS_OK, NULL);
}

/* --- Watch: the call holds a reference while subscribed; its data slot is the watcher --- */

static int watch_send(void *arg, health_status_t st)
{
    grpc_call_t *call = arg;
    if (grpc_call_congested(call)) return 1; /* only the latest status matters: on_drain sends it */
    return send_status(call, st);
}

static void watch_end(void *arg, int code)
{
    grpc_call_t *call = arg;
    if (code >= 0)
        grpc_call_finish(call, (grpc_status_t)code,
                         code == GRPC_STATUS_OK ? NULL : "server shutting down");
    else
        grpc_call_finish(call, GRPC_STATUS_INTERNAL, "cannot send health update");
    grpc_call_set_data(call, NULL);
    grpc_call_unref(call);
}

static const health_watch_ops_t watch_ops = {.send = watch_send, .end = watch_end};

static void watch_on_message(grpc_call_t *call, ProtobufCMessage *msg)
{
    health_t *h = grpc_call_arg(call);
    const char *service = req_service(msg);
    health_watcher_t *w = NULL;
    grpc_call_ref(call);
    int rc = health_watch_add(h, service, &watch_ops, call, &w);
    if (rc == 0) {
        grpc_call_set_data(call, w);
        return;
    }
    switch (rc) {
    case -ESHUTDOWN: /* past the final stage: tell the status, then end like the others */
        if (send_status(call, health_watch_status(h, service)) == 0)
            grpc_call_finish(call, h->close_status,
                             h->close_status == GRPC_STATUS_OK ? NULL : "server shutting down");
        break;
    case -EBUSY:
        grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "too many health watchers");
        break;
    case -ENOMEM:
        grpc_call_finish(call, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        break;
    default: /* the first send failed: the call is gone or broken */
        grpc_call_finish(call, GRPC_STATUS_INTERNAL, "cannot send health status");
        break;
    }
    grpc_call_unref(call);
}

static void watch_on_cancel(grpc_call_t *call)
{
    health_watcher_t *w = grpc_call_data(call);
    if (!w) return;
    grpc_call_set_data(call, NULL);
    health_watch_remove(grpc_call_arg(call), w);
    grpc_call_unref(call);
}

static void watch_on_drain(grpc_call_t *call)
{
    health_watcher_t *w = grpc_call_data(call);
    if (w) health_watch_poke(grpc_call_arg(call), w);
}

#define SVC "grpc.health.v1.Health"

/* A service name (issue 13, item 3: every string bounded by what it is for). */
static const grpc_field_limit_t check_limits[] = {{"service", 1024, 0, "a service name"},
                                                  {NULL, 0, 0, NULL}};

grpc_method_t *health_grpc_methods(health_t *h, size_t *n)
{
    const grpc_method_t rows[] = {
        {
            .path = "/" SVC "/Check",
            .service = SVC,
            .name = "Check",
            .kind = GRPC_UNARY,
            .request = &grpc__health__v1__health_check_request__descriptor,
            .response = &grpc__health__v1__health_check_response__descriptor,
            .on_message = check_on_message,
            .arg = h,
            .limits = check_limits,
            .flags = GRPC_METHOD_PROBE,
        },
        {
            .path = "/" SVC "/Watch",
            .service = SVC,
            .name = "Watch",
            .kind = GRPC_SERVER_STREAMING,
            .request = &grpc__health__v1__health_check_request__descriptor,
            .response = &grpc__health__v1__health_check_response__descriptor,
            .on_message = watch_on_message,
            .on_cancel = watch_on_cancel,
            .on_drain = watch_on_drain,
            .arg = h,
            .limits = check_limits,
            .flags = GRPC_METHOD_PROBE,
        },
        {
            .path = "/" SVC "/List",
            .service = SVC,
            .name = "List",
            .kind = GRPC_UNARY,
            .request = &grpc__health__v1__health_list_request__descriptor,
            .response = &grpc__health__v1__health_list_response__descriptor,
            .on_message = list_on_message,
            .arg = h,
            .flags = GRPC_METHOD_PROBE,
        },
    };
    _Static_assert(sizeof(rows) == sizeof(h->rows), "row count");
    /* Filled once: a second call must not reset what the server keeps in the rows (stats and
     * cached metric series). */
    if (!h->rows[0].path) memcpy(h->rows, rows, sizeof(rows));
    *n = sizeof(rows) / sizeof(rows[0]);
    return h->rows;
}
