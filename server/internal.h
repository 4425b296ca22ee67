/* Structures shared by the server's own files (not a public header). */
#ifndef INFERD_SERVER_INTERNAL_H
#define INFERD_SERVER_INTERNAL_H

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <http_parser.h>
#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>
#include <stdint.h>
#include <sys/queue.h>

#include "server/base/clock.h"
#include "server/base/config.h"
#include "grpc.h"
#include "server.h"
#include "trace.h"

struct health;
struct http_response;
struct inferd_metrics;
struct metrics_series;

/* Output above this many bytes stops reading and producing for a connection; it resumes
 * once the socket drained below the low mark. */
#define CONN_OUT_HIGH (1u << 20)
#define CONN_OUT_LOW (256u << 10)
/* A call whose queued response bytes pass this is congested (producers pause). */
#define CALL_OUT_HIGH (256u << 10)
#define CALL_OUT_LOW (64u << 10)

int64_t now_ns(void);
/** 1 when a comma-separated header list (grpc-accept-encoding, Accept-Encoding) names token
 * (or *) without q=0. */
int header_list_accepts(const char *list, const char *token);

/* ---- per-call arena (headers, decoded request, response scratch) ---- */
typedef struct arena_block arena_block_t;
typedef struct arena {
    arena_block_t *head;
    ProtobufCAllocator pb;
} arena_t;
void arena_init(arena_t *a);
void *arena_alloc(arena_t *a, size_t n);
char *arena_strndup(arena_t *a, const char *s, size_t n);
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
    unsigned char *buf; /* the message being assembled */
    size_t have, need;  /* bytes so far; message length once the prefix is read */
    unsigned char prefix[5];
    size_t prefix_have;
    int compressed;
} grpc_deframer_t;
/* Called for each complete message; returns 0 or a gRPC status to fail the call with. */
typedef int (*grpc_deframe_fn)(void *arg, int compressed, const unsigned char *msg, size_t len);
/** Feeds bytes; messages may span any chunk boundaries. Returns 0, or the first non-zero status
 * (RESOURCE_EXHAUSTED when a message exceeds max, or what fn returned). */
int grpc_deframe(grpc_deframer_t *d, const unsigned char *data, size_t len, size_t max,
                 grpc_deframe_fn fn, void *arg);
/** 1 when bytes of an unfinished message are buffered. */
int grpc_deframer_partial(const grpc_deframer_t *d);
void grpc_deframer_dispose(grpc_deframer_t *d);

typedef struct conn conn_t;

typedef enum { ENC_IDENTITY, ENC_GZIP, ENC_UNSUPPORTED } grpc_enc_t;

struct grpc_call {
    conn_t *conn;
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
    int msgs_received;
    ProtobufCMessage *unary_msg; /* unary/server-streaming: held until half-close */
    grpc_enc_t req_enc, resp_enc;
    /* send */
    struct evbuffer *out; /* framed messages not yet taken by nghttp2 */
    int response_started; /* HEADERS submitted */
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
    void *data;
    /* a plain HTTP request on an h2 stream (GET /live...) */
    int is_http;
    char *http_body;
    struct offload *job; /* plain HTTP over h2: the response being compressed */
    size_t http_body_len, http_body_off;
    TAILQ_ENTRY(grpc_call) link;
};

typedef enum { PROTO_SNIFF, PROTO_TLS_HANDSHAKE, PROTO_H2, PROTO_HTTP1 } conn_proto_t;

/* What a listener serves once a connection is up: gRPC methods of the named services and HTTP
 * requests for the named paths. A NULL scope serves everything. The system listener's scope is
 * the status-server set (server.c), so the allowed set is data rather than checks spread over
 * the dispatch code. */
typedef struct listener_scope {
    const char *name;                 /* "the system port": for refusal messages */
    const char *const *grpc_services; /* "grpc.health.v1.Health" */
    size_t n_grpc_services;
    const char *const *http_paths; /* "/live" (the request target up to '?' or '#') */
    size_t n_http_paths;
} listener_scope_t;
/** 1 when scope serves gRPC service (a NULL scope serves everything). */
int listener_serves_service(const listener_scope_t *scope, const char *service);
/** 1 when scope serves HTTP requests for target (its path up to '?' or '#'). */
int listener_serves_path(const listener_scope_t *scope, const char *target);

typedef struct listener {
    server_t *srv;
    struct evconnlistener *ev;
    int role;                      /* 0 main, 1 system */
    int require_tls;               /* plaintext is refused (400 or GOAWAY), not served */
    const listener_scope_t *scope; /* NULL: everything */
    char addr[80];
    int port;
} listener_t;

/* HTTP/1.1 connection state */
typedef struct http1 {
    http_parser parser;
    http_parser_settings settings;
    char url[2048];
    size_t url_len;
    size_t header_bytes;
    size_t body_bytes;
    char cur_field[64];
    size_t cur_field_len;
    int in_value;
    char accept[256], accept_encoding[128], x_request_id[64];
    int field_kind; /* which header value is being collected */
    int error;      /* an HTTP status to answer with, then close */
    int close_after;
    int in_message;
    struct offload *job; /* a response being compressed: later requests wait for it */
    int job_head, job_close;
} http1_t;

struct conn {
    server_t *srv;
    listener_t *lst;
    int fd;
    struct bufferevent *bev;
    struct event *sniff_ev;
    SSL *ssl;
    conn_proto_t proto;
    char peer[64];
    struct event *timer; /* handshake, idle */
    struct event *close_ev;
    int64_t last_activity_ns;
    /* h2 */
    nghttp2_session *h2;
    int n_streams;
    TAILQ_HEAD(, grpc_call) calls;
    int64_t last_ping_ns;
    int ping_strikes;
    int goaway_stage; /* 0 none, 1 notice+ping sent, 2 final sent */
    int closing;      /* flush output then close */
    int read_paused;
    int in_recv; /* inside nghttp2_session_mem_recv: no sending from callbacks */
    /* http1 */
    http1_t *http1;
    TAILQ_ENTRY(conn) link;
};

struct server {
    struct event_base *base;
    config_t *cfg;
    struct health *health;
    struct metrics_registry *reg;
    struct inferd_metrics *m;
    grpc_method_t **methods;
    size_t n_methods, cap_methods;
    listener_t listeners[2];
    int n_listeners;
    SSL_CTX *ssl_ctx;
    listener_scope_t system_scope;
    const char *system_paths[4];
    TAILQ_HEAD(, conn) conns;
    int n_conns;
    int draining; /* SIGTERM seen */
    int stopping; /* final GOAWAY sent; exit once connections are gone */
    int stage;    /* next shutdown stage the stage timer runs */
    struct event *sig_term, *sig_int, *stage_timer, *drain_timer;
    struct reflection *refl;
    struct inference *inference; /* set by inference_new */
    struct offload *offload;     /* the running compression job, if any */
    int64_t start_ns;
    uint64_t request_seq;
    trace_rng_t rng;
    int exit_code;
    void (*on_drain_start)(server_t *s); /* hooks for later modules (engine) */
    /* HTTP/1.1 requests go here first (fault.c: POST /debug/fault); returns 1 when it answered */
    int (*http_hook)(conn_t *c, const char *method, const char *target, struct http_response *r);
};

/* conn.c */
void conn_accept(server_t *s, listener_t *l, int fd, const struct sockaddr *sa, int salen);
void conn_close(conn_t *c);
/** Pushes nghttp2 output to the socket; closes the connection when the session is done. */
void conn_flush(conn_t *c);
void conn_touch(conn_t *c);
/** Starts the shutdown stages on one connection (1: notice + ping, 2: final GOAWAY). */
void conn_goaway(conn_t *c, int stage);

/* h2.c */
int h2_session_start(conn_t *c);
/** Feeds received bytes. Returns 0 or -1 (fatal: close). */
int h2_recv(conn_t *c, const unsigned char *data, size_t len);
void h2_session_free(conn_t *c);

/* http1.c */
int http1_start(conn_t *c);
/** Feeds received bytes; responses are appended to the output. Returns 0 or -1 (close). */
int http1_recv(conn_t *c, struct evbuffer *in);
void http1_free(conn_t *c);

/* endpoints.c: /live, /health, /metrics for HTTP/1.1 and plain HTTP over h2 */
typedef struct http_response {
    int status;
    const char *content_type;
    const char *content_encoding; /* NULL or "gzip" */
    const char *allow;            /* for 405 */
    char *body;                   /* malloc'd */
    size_t len;
    int gzip_later; /* /metrics: the caller gzips (offload_gzip) before sending */
} http_response_t;
void endpoint_serve(server_t *s, const char *method, const char *path, const char *accept,
                    const char *accept_encoding, http_response_t *r);
/** A 404 response (a path outside the listener's scope). */
void endpoint_not_found(http_response_t *r);
void http_response_dispose(http_response_t *r);

/* offload.c: gzip a large body on a helper thread */
typedef struct offload offload_t;
/** Called on the loop with the compressed response (the offload frees r after). */
typedef void (*offload_done_fn)(void *owner, http_response_t *r);
/** Takes r's body and gzips it off the loop; done(owner, ...) follows on the loop. Returns the
 * job, or NULL when r was compressed inline (a job already running, or no thread): then r is
 * ready to send now. */
offload_t *offload_gzip(server_t *s, http_response_t *r, offload_done_fn done, void *owner);
/** The owner is gone: done will not be called; the job frees itself. */
void offload_abandon(offload_t *o);
/** Waits for a running job and frees it without calling done (server shutdown). */
void offload_wait(server_t *s);

/* grpc.c */
grpc_call_t *call_new(conn_t *c, int32_t stream_id);
void call_cancel(grpc_call_t *call, grpc_status_t status, const char *why);
void call_stream_closed(grpc_call_t *call, uint32_t error_code);
void call_headers_done(grpc_call_t *call);
int call_data(grpc_call_t *call, const uint8_t *data, size_t len);
void call_remote_closed(grpc_call_t *call);
/** nghttp2 data source for the call's response. */
ssize_t call_read_data(grpc_call_t *call, uint8_t *buf, size_t length, uint32_t *flags);
void call_trailers_sent(grpc_call_t *call);
void call_written(grpc_call_t *call);

/* server.c: metrics glue */
void server_count_started(server_t *s, grpc_method_t *m);
void server_count_handled(server_t *s, grpc_call_t *call);
void server_count_msg(server_t *s, grpc_method_t *m, int sent);
void server_conn_gauge(server_t *s, int delta_active, int delta_streams, int new_conn);
void server_conn_gone(server_t *s);

/* access.c */
/** Logs one finished RPC (info; debug for probe methods). */
void access_log_call(server_t *s, grpc_call_t *c, double secs, unsigned code);

#endif
