/* Test doubles for what inferd_health links against: the gRPC call API of server/core/grpc.h and
 * the logging of server/base/log.h. The fake call records what a handler sent and how it ended. */
#ifndef INFERD_TEST_HEALTH_FAKE_H
#define INFERD_TEST_HEALTH_FAKE_H

#include <stddef.h>
#include "server/core/grpc.h"
#include "server/base/log.h"

#define FAKE_MAX_SENT 64
#define FAKE_MAX_LIST 128

struct grpc_call {
    const grpc_method_t *method;
    int refs; /* the server's own reference counts as one */
    void *data;
    int finished;
    grpc_status_t status;
    char message[128];
    int cancelled;
    int congested;
    int send_error; /* when non-zero, grpc_call_send returns it */
    int n_sent;
    int sent[FAKE_MAX_SENT]; /* HealthCheckResponse statuses, decoded from the wire bytes */
    size_t n_list;
    char *list_names[FAKE_MAX_LIST];
    int list_status[FAKE_MAX_LIST];
};

/** A call on method row m holding the server's reference. */
grpc_call_t *fake_call_new(const grpc_method_t *m);
/** Delivers the decoded request, as the server does after the client half-closed. */
void fake_call_request(grpc_call_t *c, const char *service);
/** The peer reset the stream: on_cancel runs when the call is not finished. */
void fake_call_cancel(grpc_call_t *c);
/** Drops the server's reference and frees the call; asserts no reference leaked. */
void fake_call_free(grpc_call_t *c);

/** Log lines written at level (since the last reset). */
int fake_log_count(log_level_t level);
/** The last line written at level, or "". */
const char *fake_log_last(log_level_t level);
void fake_log_reset(void);

#endif
