#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake.h"
#include "grpc/health/v1/health.pb-c.h"

grpc_call_t *fake_call_new(const grpc_method_t *m)
{
    grpc_call_t *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->method = m;
    c->refs = 1;
    return c;
}

void fake_call_request(grpc_call_t *c, const char *service)
{
    if (c->method->request == &grpc__health__v1__health_check_request__descriptor) {
        Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
        req.service = (char *)service;
        c->method->on_message(c, &req.base);
    } else {
        Grpc__Health__V1__HealthListRequest req = GRPC__HEALTH__V1__HEALTH_LIST_REQUEST__INIT;
        c->method->on_message(c, &req.base);
    }
}

void fake_call_cancel(grpc_call_t *c)
{
    if (c->finished || c->cancelled) return;
    c->cancelled = 1;
    if (c->method->on_cancel) c->method->on_cancel(c);
}

void fake_call_free(grpc_call_t *c)
{
    assert_int_equal(c->refs, 1);
    for (size_t i = 0; i < c->n_list; i++)
        free(c->list_names[i]);
    free(c);
}

int grpc_call_send(grpc_call_t *call, const ProtobufCMessage *msg)
{
    if (call->finished || call->cancelled) return -EPIPE;
    if (call->send_error) return call->send_error;
    assert_ptr_equal(msg->descriptor, call->method->response);
    /* round-trip through the wire format, as the real layer serializes */
    size_t n = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(n ? n : 1);
    assert_non_null(buf);
    assert_int_equal(protobuf_c_message_pack(msg, buf), n);
    if (msg->descriptor == &grpc__health__v1__health_check_response__descriptor) {
        Grpc__Health__V1__HealthCheckResponse *r =
            grpc__health__v1__health_check_response__unpack(NULL, n, buf);
        assert_non_null(r);
        assert_true(call->n_sent < FAKE_MAX_SENT);
        call->sent[call->n_sent++] = r->status;
        grpc__health__v1__health_check_response__free_unpacked(r, NULL);
    } else {
        Grpc__Health__V1__HealthListResponse *r =
            grpc__health__v1__health_list_response__unpack(NULL, n, buf);
        assert_non_null(r);
        assert_true(r->n_statuses <= FAKE_MAX_LIST);
        for (size_t i = 0; i < r->n_statuses; i++) {
            call->list_names[i] = strdup(r->statuses[i]->key);
            call->list_status[i] = r->statuses[i]->value ? (int)r->statuses[i]->value->status : 0;
        }
        call->n_list = r->n_statuses;
        call->n_sent++;
        grpc__health__v1__health_list_response__free_unpacked(r, NULL);
    }
    free(buf);
    return 0;
}

int grpc_call_finish(grpc_call_t *call, grpc_status_t status, const char *msg)
{
    if (call->finished || call->cancelled) return -EPIPE;
    call->finished = 1;
    call->status = status;
    snprintf(call->message, sizeof(call->message), "%s", msg ? msg : "");
    return 0;
}

void grpc_call_ref(grpc_call_t *call)
{
    call->refs++;
}

void grpc_call_unref(grpc_call_t *call)
{
    assert_true(call->refs > 1); /* the test holds the last one */
    call->refs--;
}

int grpc_call_active(const grpc_call_t *call)
{
    return !call->finished && !call->cancelled;
}

void *grpc_call_arg(const grpc_call_t *call)
{
    return call->method->arg;
}

const grpc_method_t *grpc_call_method(const grpc_call_t *call)
{
    return call->method;
}

void grpc_call_set_data(grpc_call_t *call, void *data)
{
    call->data = data;
}

void *grpc_call_data(const grpc_call_t *call)
{
    return call->data;
}

int grpc_call_congested(const grpc_call_t *call)
{
    return call->congested;
}

const char *grpc_status_name(grpc_status_t status)
{
    static const char *names[GRPC_STATUS_COUNT] = {"OK",
                                                   "CANCELLED",
                                                   "UNKNOWN",
                                                   "INVALID_ARGUMENT",
                                                   "DEADLINE_EXCEEDED",
                                                   "NOT_FOUND",
                                                   "ALREADY_EXISTS",
                                                   "PERMISSION_DENIED",
                                                   "RESOURCE_EXHAUSTED",
                                                   "FAILED_PRECONDITION",
                                                   "ABORTED",
                                                   "OUT_OF_RANGE",
                                                   "UNIMPLEMENTED",
                                                   "INTERNAL",
                                                   "UNAVAILABLE",
                                                   "DATA_LOSS",
                                                   "UNAUTHENTICATED"};
    return (unsigned)status < GRPC_STATUS_COUNT ? names[status] : "UNKNOWN";
}

/* --- log stub: keeps counts and the last line per level --- */

static int counts[LOG_OFF];
static char last[LOG_OFF][512];

int log_enabled(log_level_t level, const char *target)
{
    (void)target;
    return level >= LOG_DEBUG && level < LOG_OFF;
}

void log_write(log_level_t level, const char *target, const char *const *fields, const char *fmt,
               ...)
{
    (void)target;
    if (fields)
        for (size_t i = 0; fields[i]; i += 2)
            assert_non_null(fields[i + 1]); /* pairs */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last[level], sizeof(last[level]), fmt, ap);
    va_end(ap);
    counts[level]++;
    if (getenv("HEALTH_TEST_LOG")) fprintf(stderr, "[%d] %s\n", level, last[level]);
}

int fake_log_count(log_level_t level)
{
    return counts[level];
}

const char *fake_log_last(log_level_t level)
{
    return last[level];
}

void fake_log_reset(void)
{
    memset(counts, 0, sizeof(counts));
    memset(last, 0, sizeof(last));
}
