/* Private to server/core: one gRPC call (an HTTP/2 stream carrying one RPC) and what the call
 * layer is built from: the per-call arena, message framing, gzip, and the call entry points
 * h2.c drives. Handlers see none of this: they use core/grpc.h. */
#ifndef INFERD_SERVER_CORE_CALL_H
#define INFERD_SERVER_CORE_CALL_H

#include <event2/buffer.h>
#include <event2/event.h>
#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include "server/core/grpc.h"
#include "server/core/http.h"

struct conn;
struct offload;
struct server;

/* Messages sent under tag end at byte end of the call's output and carry units. */
struct taken_mark {
    uint64_t end;
    uint64_t tag;
    uint32_t units;
};

/* A call whose queued response bytes pass this is congested (producers pause). */
#define CALL_OUT_HIGH (256u << 10)
#define CALL_OUT_LOW (64u << 10)

/** 1 when a comma-separated header list (grpc-accept-encoding, Accept-Encoding) names token
 * (or *) without q=0. */
int header_list_accepts(const char *list, const char *token);

/* ---- request messages on the wire: checked before protobuf-c decodes them ---- */
/** What grpc_wire_check found; msg names the field and where. */
typedef struct grpc_wire_result {
    grpc_status_t status; /* OK, INVALID_ARGUMENT (bad UTF-8, NUL, over a limit), INTERNAL
                             (not a protobuf message) */
    char msg[200];
    size_t unknown; /* bytes of fields the descriptor does not know (dropped) */
} grpc_wire_result_t;
/** Walks a serialized message of type desc: every string field must be valid UTF-8 without NUL
 * (protobuf-c would cut a string at a NUL), and the row's limits hold (grpc_field_limit_t).
 * Unknown fields are dropped: when there are some, *out gets a malloc'd copy without them
 * (*out_len its length), else *out is NULL and the input stands. Returns 0 (r->status OK),
 * -EINVAL (r says why), -ENOMEM. */
int grpc_wire_check(const ProtobufCMessageDescriptor *desc, const grpc_field_limit_t *limits,
                    const unsigned char *data, size_t len, unsigned char **out, size_t *out_len,
                    grpc_wire_result_t *r);

/* ---- per-call arena (headers, decoded request, response scratch) ---- */
typedef struct arena_block arena_block_t;
typedef struct arena {
    arena_block_t *head;
    ProtobufCAllocator pb;
} arena_t;
/** An empty arena whose pb allocator draws from it. */
void arena_init(arena_t *a);
/** n bytes (16-aligned) freed with the arena, or NULL. */
void *arena_alloc(arena_t *a, size_t n);
/** A NUL-terminated copy of n bytes of s, or NULL. */
char *arena_strndup(arena_t *a, const char *s, size_t n);
/** Frees every block. */
void arena_dispose(arena_t *a);

/* ---- gzip (grpc-encoding, /metrics) ---- */
/** Compresses in into a malloc'd gzip buffer. Returns 0 or -ENOMEM. */
int gzip_compress(const void *in, size_t len, unsigned char **out, size_t *out_len);
/** The same at a zlib level (1 fastest .. 9 smallest). */
int gzip_compress_level(const void *in, size_t len, int level, unsigned char **out,
                        size_t *out_len);
/** Inflates gzip data, refusing output beyond max. Returns 0, -EMSGSIZE (over max), -EINVAL
 * (corrupt), -ENOMEM. */
int gzip_decompress(const void *in, size_t len, size_t max, unsigned char **out, size_t *out_len);

/* ---- gRPC message framing ---- */
typedef struct grpc_deframer {
    unsigned char *buf; /* the message being assembled, grown as its bytes arrive */
    size_t have, need;  /* bytes so far; message length once the prefix is read */
    size_t cap;         /* bytes allocated at buf */
    unsigned char prefix[5];
    size_t prefix_have;
    int compressed;
} grpc_deframer_t;
/** Called for each complete message; returns 0 or a gRPC status to fail the call with. */
typedef int (*grpc_deframe_fn)(void *arg, int compressed, const unsigned char *msg, size_t len);
/** Feeds bytes; messages may span any chunk boundaries. Returns 0, or the first non-zero status
 * (RESOURCE_EXHAUSTED when a message exceeds max, or what fn returned). */
int grpc_deframe(grpc_deframer_t *d, const unsigned char *data, size_t len, size_t max,
                 grpc_deframe_fn fn, void *arg);
/** 1 when bytes of an unfinished message are buffered. */
int grpc_deframer_partial(const grpc_deframer_t *d);
/** Bytes of the unfinished message held (prefix included), 0 between messages. */
size_t grpc_deframer_held(const grpc_deframer_t *d);
/** Frees a message being assembled. */
void grpc_deframer_dispose(grpc_deframer_t *d);

typedef enum { ENC_IDENTITY, ENC_GZIP, ENC_UNSUPPORTED } grpc_enc_t;

struct grpc_call {
    struct conn *conn;
    int32_t stream_id;
    int refs;
    grpc_method_t *method;
    arena_t arena;
    /* request headers, in arena */
    const char *hdr_name[24];
    const char *hdr_value[24];
    int nhdr;
    const char *path, *http_method, *content_type, *te, *encoding, *accept_encoding, *timeout;
    size_t header_bytes;
    char request_id[40];
    char trace_id[33], span_id[17]; /* W3C trace context: continued or new (trace.c) */
    /* receive */
    grpc_deframer_t deframer;
    struct evbuffer *in_held; /* DATA held, unprocessed and not yet consumed (window), while the
                                 call's or connection's output is congested; NULL when none */
    int close_held;           /* END_STREAM came behind held input */
    int resume;               /* held input to process at the connection's next input turn */
    size_t in_charged;        /* bytes counted in the connection's pending input */
    int64_t msg_start_ns;     /* an unfinished message began (--min-body-rate), 0 when none */
    int64_t out_since_ns;     /* queued output last moved (became non-empty, or was taken) */
    int headers_over;         /* the header list passed --max-header-list-size */
    int msgs_received;
    ProtobufCMessage *unary_msg; /* unary/server-streaming: held until half-close */
    grpc_enc_t req_enc, resp_enc;
    /* send */
    struct evbuffer *out;                  /* framed messages not yet taken by nghttp2 */
    size_t out_counted;                    /* of out, what the connection's sums hold */
    uint64_t out_added, out_taken;         /* bytes ever queued in out / taken from it by nghttp2 */
    struct taken_mark *marks;              /* grpc_call_send_counted: where each tag's units end */
    size_t marks_head, marks_n, marks_cap; /* a ring */
    int response_started;                  /* HEADERS submitted */
    int msgs_sent;
    int finished; /* handler or server ended it: trailers queued */
    int trailers_submitted;
    int rst_after_trailers; /* RST_STREAM code to send once trailers are out, or -1 */
    grpc_status_t status;
    char *status_msg;
    int http_status; /* non-gRPC answer (415, 405...), 0 for gRPC */
    /* lifecycle */
    int remote_closed; /* client half-closed */
    int stream_closed; /* nghttp2 closed the stream */
    int cancelled;     /* ended before the handler finished it */
    int dispatched;    /* handler has seen the call */
    int congested;
    int64_t deadline_ns;
    struct event *deadline_ev;
    int64_t start_ns;
    uint64_t bytes_in, bytes_out;
    uint64_t bytes_wire_in; /* DATA bytes received (--min-body-rate) */
    void *data;
    /* a plain HTTP request on an h2 stream (GET /live...) */
    int is_http;
    struct offload *job; /* plain HTTP over h2: the response being compressed */
    /* a request to a streaming route (core/http.h) */
    const http_route_t *hroute;
    struct evbuffer *hbody; /* its body so far */
    struct http_stream *hs; /* its answer, once dispatched and until it ends */
    TAILQ_ENTRY(grpc_call) link;
};

/* Entry points h2.c drives (grpc.c). */
/** A new stream: the call holds the stream's reference. NULL when out of memory. */
grpc_call_t *call_new(struct conn *c, int32_t stream_id);
/** Ends the call with status (trailers, then RST_STREAM(CANCEL)); tells the handler. */
void call_cancel(grpc_call_t *call, grpc_status_t status, const char *why);
/** nghttp2 closed the stream: the handler learns it (on_cancel) if it had not finished. */
void call_stream_closed(grpc_call_t *call, uint32_t error_code);
/** The request headers are complete: validates them, routes plain HTTP, finds the method. */
void call_headers_done(grpc_call_t *call);
/** Request DATA. Returns 0. */
int call_data(grpc_call_t *call, const uint8_t *data, size_t len);
/** The client half-closed: unary requests are dispatched now. */
void call_remote_closed(grpc_call_t *call);
/** nghttp2 data source for the call's response. */
ssize_t call_read_data(grpc_call_t *call, uint8_t *buf, size_t length, uint32_t *flags);
/** The trailers (END_STREAM) went out. */
void call_trailers_sent(grpc_call_t *call);
/** nghttp2 wrote a DATA frame of the call. */
void call_written(grpc_call_t *call);
/** Processes input held while the call's output was congested, when it no longer is. */
void call_resume_input(grpc_call_t *call);
/** 1 when the call's request input is held: its own output, its connection's or the
 * process's queued output is over the bound. */
int call_input_gated(const grpc_call_t *call);
/** Ends the call with status and msg, dropping the response it queued (a stalled client, a
 * limit): trailers, then RST_STREAM(CANCEL); the handler hears on_cancel. A streamed HTTP answer
 * (whose status went out with its head) is reset instead; its route hears the client go. */
void call_abort(grpc_call_t *call, grpc_status_t status, const char *msg);

/* A streamed HTTP answer on an h2 stream (hstream.c drives these). */
/** :status and headers (x-request-id, content-length when length >= 0). Returns 0 or -EPIPE. */
int call_http_head(grpc_call_t *call, struct http_stream *st, int status, const char *content_type,
                   const http_header_t *hdrs, size_t n, int64_t length);
/** DATA bytes; *end gets the stream's output position after them. Returns 0, -EPIPE, -ENOMEM. */
int call_http_body(grpc_call_t *call, const void *data, size_t len, uint64_t *end);
/** END_STREAM after what is queued; the answer lets go of the call. */
void call_http_end(grpc_call_t *call, struct http_stream *st);

/* Metrics glue (server.c): grpc_server_* for a method row. */
/** grpc_server_started_total. */
void server_count_started(struct server *s, grpc_method_t *m);
/** grpc_server_handled_total, grpc_server_handling_seconds and the access log line. */
void server_count_handled(struct server *s, grpc_call_t *call);
/** grpc_server_msg_sent_total (sent) or grpc_server_msg_received_total. */
void server_count_msg(struct server *s, grpc_method_t *m, int sent);

/** Logs one finished RPC (info; debug for probe methods) (access.c). */
void access_log_call(struct server *s, grpc_call_t *c, double secs, unsigned code);
/** Logs one streamed HTTP answer (status 499: the client went away first) (access.c). */
void access_log_http(struct server *s, const char *method, const char *path, int status,
                     double secs, uint64_t bytes_in, uint64_t bytes_out, const char *peer,
                     const char *request_id);

#endif
