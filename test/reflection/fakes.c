/* Fakes of the server API the reflection handler uses. */
#include "fakes.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const *fake_services;
size_t fake_nservices;

void fake_call_init(grpc_call_t *call, const grpc_method_t *row)
{
    memset(call, 0, sizeof *call);
    call->arg = row->arg;
    call->method = row;
}

void fake_call_dispose(grpc_call_t *call)
{
    for (size_t i = 0; i < call->nsent; i++)
        free(call->sent[i]);
    call->nsent = 0;
}

int grpc_call_send(grpc_call_t *call, const ProtobufCMessage *msg)
{
    if (call->finished) return -EPIPE;
    if (call->send_rc) return call->send_rc;
    if (call->nsent == FAKE_MAX_SENT || msg->descriptor != call->method->response) return -EINVAL;
    size_t n = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) return -ENOMEM;
    protobuf_c_message_pack(msg, buf);
    call->sent[call->nsent] = buf;
    call->sent_len[call->nsent++] = n;
    return 0;
}

int grpc_call_finish(grpc_call_t *call, grpc_status_t status, const char *msg)
{
    if (call->finished) return -EPIPE;
    call->finished = 1;
    call->status = status;
    snprintf(call->message, sizeof call->message, "%s", msg ? msg : "");
    return 0;
}

void *grpc_call_arg(const grpc_call_t *call)
{
    return call->arg;
}

struct server *grpc_call_server(const grpc_call_t *call)
{
    return (struct server *)(uintptr_t)call; /* any non-NULL handle: the fakes ignore it */
}

size_t server_services(const server_t *s, const char **names, size_t cap)
{
    (void)s;
    for (size_t i = 0; i < fake_nservices && i < cap; i++)
        names[i] = fake_services[i];
    return fake_nservices;
}
