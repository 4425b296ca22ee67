/* Fake gRPC call and server for the reflection handler tests: records what a handler sends. */
#ifndef INFERD_TEST_REFLECTION_FAKES_H
#define INFERD_TEST_REFLECTION_FAKES_H

#include <stddef.h>
#include <stdint.h>

#include "server/core/grpc.h"
#include "server/core/server.h"

#define FAKE_MAX_SENT 16

struct grpc_call {
    void *arg;
    const grpc_method_t *method;
    uint8_t *sent[FAKE_MAX_SENT]; /* each message sent, serialized (malloc'd) */
    size_t sent_len[FAKE_MAX_SENT];
    size_t nsent;
    int finished;
    grpc_status_t status;
    char message[256];
    int send_rc; /* when non-zero, grpc_call_send fails with it */
};

/** What server_services() reports. */
extern const char *const *fake_services;
/** How many. */
extern size_t fake_nservices;

/** A call on row (arg taken from it). */
void fake_call_init(grpc_call_t *call, const grpc_method_t *row);
/** Frees what the call recorded. */
void fake_call_dispose(grpc_call_t *call);

#endif
