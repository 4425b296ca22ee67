/* gRPC layer: the method table, calls and their lifecycle, status codes.
 *
 * Every function here runs on the reactor thread. A call is one HTTP/2 stream
 * carrying one RPC. Handlers never see nghttp2: they get decoded messages and
 * answer with grpc_call_send()/grpc_call_finish(). A handler that answers
 * later (from an engine completion, a health change) takes a reference with
 * grpc_call_ref() and drops it with grpc_call_unref() once done; the stream
 * may die meanwhile (reset, deadline, connection loss), which the handler
 * learns through its on_cancel callback, after which sends fail with -EPIPE.
 */
#ifndef INFERD_SERVER_CORE_GRPC_H
#define INFERD_SERVER_CORE_GRPC_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

typedef enum {
    GRPC_STATUS_OK = 0,
    GRPC_STATUS_CANCELLED = 1,
    GRPC_STATUS_UNKNOWN = 2,
    GRPC_STATUS_INVALID_ARGUMENT = 3,
    GRPC_STATUS_DEADLINE_EXCEEDED = 4,
    GRPC_STATUS_NOT_FOUND = 5,
    GRPC_STATUS_ALREADY_EXISTS = 6,
    GRPC_STATUS_PERMISSION_DENIED = 7,
    GRPC_STATUS_RESOURCE_EXHAUSTED = 8,
    GRPC_STATUS_FAILED_PRECONDITION = 9,
    GRPC_STATUS_ABORTED = 10,
    GRPC_STATUS_OUT_OF_RANGE = 11,
    GRPC_STATUS_UNIMPLEMENTED = 12,
    GRPC_STATUS_INTERNAL = 13,
    GRPC_STATUS_UNAVAILABLE = 14,
    GRPC_STATUS_DATA_LOSS = 15,
    GRPC_STATUS_UNAUTHENTICATED = 16,
} grpc_status_t;
#define GRPC_STATUS_COUNT 17

typedef enum {
    GRPC_UNARY,
    GRPC_CLIENT_STREAMING,
    GRPC_SERVER_STREAMING,
    GRPC_BIDI_STREAMING,
} grpc_kind_t;

/** Method row flags. */
enum {
    GRPC_METHOD_PROBE = 1, /* health probes: access log at debug, not info */
};

typedef struct grpc_call grpc_call_t;
typedef struct grpc_method grpc_method_t;
struct server;

/** Each decoded request message, allocated from the call's arena (valid until the call is freed).
 * Unary and server-streaming methods get exactly one, after the client half-closed. */
typedef void (*grpc_on_message_fn)(grpc_call_t *call, ProtobufCMessage *msg);
/** Streaming requests: the client half-closed its side. */
typedef void (*grpc_on_half_close_fn)(grpc_call_t *call);
/** The call ended before the handler finished it (reset, deadline, connection loss, shutdown):
 * release what the handler holds for it; sends now fail. Called at most once. */
typedef void (*grpc_on_cancel_fn)(grpc_call_t *call);
/** Output queued for the call fell below the low watermark after having been above it. */
typedef void (*grpc_on_drain_fn)(grpc_call_t *call);
/** HTTP/2 took for the wire the whole of messages sent with grpc_call_send_counted() under tag,
 * carrying units (tokens) in all: the producer's flow control. Runs inside the connection's
 * flush: it must not send, finish or free the call. */
typedef void (*grpc_on_taken_fn)(grpc_call_t *call, uint64_t tag, uint32_t units);

/** Per-row counters, owned by the reactor. */
typedef struct grpc_method_stats {
    uint64_t started;
    uint64_t msg_received;
    uint64_t msg_sent;
    uint64_t handled[GRPC_STATUS_COUNT];
} grpc_method_stats_t;

/** One row of the method table: one RPC. */
struct grpc_method {
    const char *path;    /* "/grpc.health.v1.Health/Check" */
    const char *service; /* "grpc.health.v1.Health" */
    const char *name;    /* "Check" */
    grpc_kind_t kind;
    const ProtobufCMessageDescriptor *request;
    const ProtobufCMessageDescriptor *response;
    grpc_on_message_fn on_message;
    grpc_on_half_close_fn on_half_close; /* may be NULL */
    grpc_on_cancel_fn on_cancel;         /* may be NULL */
    grpc_on_drain_fn on_drain;           /* may be NULL */
    grpc_on_taken_fn on_taken;           /* may be NULL */
    void *arg;                           /* handler context, see grpc_call_arg() */
    unsigned flags;
    grpc_method_stats_t stats;
    void *metrics; /* the server's cached metric series for this row */
};

/** Queues one response message (serialized, compressed when negotiated).
 * Returns 0, -EPIPE when the call is already finished or cancelled, -EINVAL when the
 * message does not fit the method (second message on a unary call), -ENOMEM. */
int grpc_call_send(grpc_call_t *call, const ProtobufCMessage *msg);
/** grpc_call_send() for a producer with flow control of its own: the message is packed straight
 * into the call's output, and once HTTP/2 has taken all of it for the wire the row's on_taken
 * hears (tag, units). *packed (may be NULL) gets the message's serialized size. Same returns. */
int grpc_call_send_counted(grpc_call_t *call, const ProtobufCMessage *msg, uint64_t tag,
                           uint32_t units, size_t *packed);
/** Ends the call with trailers (grpc-status, percent-encoded grpc-message; msg may be NULL).
 * With no message sent before, a Trailers-Only response. Returns 0 or -EPIPE if already ended. */
int grpc_call_finish(grpc_call_t *call, grpc_status_t status, const char *msg);
/** Keeps the call object alive across loop turns (asynchronous handlers). */
void grpc_call_ref(grpc_call_t *call);
/** Drops a reference; the call is freed with its arena when the last one goes and the stream is
 * closed. */
void grpc_call_unref(grpc_call_t *call);
/** 1 when the call can still send (not finished, not cancelled), else 0. */
int grpc_call_active(const grpc_call_t *call);
/** The method row's arg. */
void *grpc_call_arg(const grpc_call_t *call);
/** The method row. */
const grpc_method_t *grpc_call_method(const grpc_call_t *call);
/** Handler state slot. */
void grpc_call_set_data(grpc_call_t *call, void *data);
/** Handler state slot. */
void *grpc_call_data(const grpc_call_t *call);
/** The arena allocator: memory freed with the call. */
ProtobufCAllocator *grpc_call_allocator(grpc_call_t *call);
/** A request header (lower-case name), or NULL. */
const char *grpc_call_header(const grpc_call_t *call, const char *name);
/** Absolute deadline in CLOCK_MONOTONIC nanoseconds, or 0 when the client set none. */
int64_t grpc_call_deadline(const grpc_call_t *call);
/** Response bytes queued for this call and not yet written to the socket. */
size_t grpc_call_pending_bytes(const grpc_call_t *call);
/** 1 when pending output is above the high watermark: a streaming producer should pause until
 * on_drain. */
int grpc_call_congested(const grpc_call_t *call);
/** The server the call belongs to. */
struct server *grpc_call_server(const grpc_call_t *call);
/** The request id of the call (x-request-id or generated). */
const char *grpc_call_request_id(const grpc_call_t *call);

/** Status name as in the gRPC spec ("OK", "NOT_FOUND", ...). */
const char *grpc_status_name(grpc_status_t status);

/* --- framing and header helpers (pure functions, unit-tested) --- */

/** Parses a grpc-timeout value ("1S", "100m", "5H", ...) into nanoseconds.
 * Returns 0 or -EINVAL (more than 8 digits, unknown unit, empty). */
int grpc_timeout_parse(const char *value, int64_t *out_ns);
/** Percent-encodes a grpc-message (bytes outside 0x20-0x7E and '%' become %XX).
 * Writes at most cap-1 bytes plus NUL; returns the length needed (like snprintf). */
size_t grpc_percent_encode(const char *in, char *out, size_t cap);
/** Decodes percent-encoding, leaving malformed sequences as they are. Same return as above. */
size_t grpc_percent_decode(const char *in, char *out, size_t cap);

#endif
