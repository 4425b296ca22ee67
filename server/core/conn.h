/* Private to server/core: the server's state, its listeners and connections (protocol sniff,
 * TLS, HTTP/2 session, HTTP/1.1 parser), and the functions the transport files share. */
#ifndef INFERD_SERVER_CORE_CONN_H
#define INFERD_SERVER_CORE_CONN_H

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
#include "server/core/call.h"
#include "server/core/grpc.h"
#include "server/core/http.h"
#include "server/core/server.h"
#include "server/core/trace.h"

struct inferd_metrics;
struct metrics_registry;

/* Output above this many bytes stops reading and producing for a connection; it resumes
 * once the socket drained below the low mark. */
#define CONN_OUT_HIGH (1u << 20)
#define CONN_OUT_LOW (256u << 10)

typedef struct conn conn_t;

typedef enum { PROTO_SNIFF, PROTO_TLS_HANDSHAKE, PROTO_H2, PROTO_HTTP1 } conn_proto_t;

typedef struct listener {
    server_t *srv;
    struct evconnlistener *ev;
    int role;                    /* 0 main, 1 system */
    int require_tls;             /* plaintext is refused (400 or GOAWAY), not served */
    const server_scope_t *scope; /* what it serves (NULL: everything) */
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
    int error; /* an HTTP status to answer with, then close */
    int close_after;
    int in_message;
    int64_t head_start_ns; /* a request head's first byte came (--request-header-timeout) */
    int64_t body_start_ns; /* its head was complete and a body follows (--min-body-rate) */
    struct offload *job;   /* a response being compressed: later requests wait for it */
    int job_head, job_close;
    /* a request to a streaming route (core/http.h) */
    char content_type[128];
    const http_route_t *route; /* set once the head names a streaming route and method */
    size_t body_limit;         /* route->max_body, or MAX_BODY (bodies of plain rows are dropped) */
    char *body;                /* (body_len, NUL-terminated) streaming routes only */
    size_t body_len, body_cap;
    http_stream_t *stream; /* its answer in progress: later requests wait for it */
    int dispatching;       /* inside the route's handler (an answer ended there goes on
                              parsing in place) */
    int stream_close;      /* close once the answer ends (Connection: close, HTTP/1.0) */
    int in_held;           /* reading stopped: too much pipelined input while streaming */
    int expect_continue;   /* Expect: 100-continue (curl sends it for bodies over 1 KiB) */
    struct evbuffer_cb_entry *out_cb; /* counts the bytes the socket took (stream's on_taken) */
} http1_t;

/* One streamed answer (core/http.h), over either transport. */
struct http_stream {
    int refs; /* the transport's until the answer ends or the client goes; the handler's */
    server_t *srv;
    const http_route_t *route;
    struct conn *conn;      /* HTTP/1.1, until the answer ends or the client goes */
    struct grpc_call *call; /* HTTP/2, likewise */
    int dispatched, started, ended, gone, head_only;
    int status;
    int chunked;              /* HTTP/1.1: chunked transfer (1.0: the body runs to the close) */
    uint64_t queued;          /* HTTP/1.1: bytes of this answer handed to the connection */
    uint64_t taken;           /* HTTP/1.1: of those, written to the socket */
    int64_t moved_ns;         /* HTTP/1.1: its queued bytes last moved (became pending, or the
                                 socket took some): --stream-stall-timeout counts from here */
    size_t ahead;             /* HTTP/1.1: bytes of earlier answers still queued when it started */
    struct taken_mark *marks; /* where each tag's units end (a ring) */
    size_t marks_head, marks_n, marks_cap;
    uint64_t bytes_in, bytes_out;
    int64_t start_ns;
    char method[12], path[256], peer[64], request_id[72];
    void *data;
};

struct conn {
    server_t *srv;
    listener_t *lst;
    int fd;
    struct bufferevent *bev;
    struct event *sniff_ev;
    SSL *ssl;
    conn_proto_t proto;
    char peer[64];
    struct event *timer; /* handshake, request head, idle, the calls' stall and rate checks */
    struct event *close_ev;
    struct event *input_ev;   /* calls whose held input may be processed now */
    int64_t accept_ns;        /* the handshake deadline counts from here */
    int64_t last_activity_ns; /* requests and streams begun or ended, messages: never bytes */
    int64_t close_by_ns;      /* closing: closed then unless its output drains meanwhile */
    size_t close_pending;     /* output left at the last look (progress extends close_by) */
    /* bounds (conn.c, grpc.c) */
    size_t out_queued; /* response bytes its calls queued, not yet taken by HTTP/2 */
    size_t in_pending; /* bytes of its calls' unfinished request messages */
    size_t in_held;    /* bytes of request input held (unconsumed) behind congested output */
    int gated;         /* out_queued passed --max-connection-output: calls' input is held */
    /* h2: stream ids the client opened, for the 5.1.1 check; the stream rate bucket */
    int32_t max_stream_id;
    uint64_t opened[8]; /* bit i: odd id max_stream_id - 2i was opened (the last 512) */
    double stream_tokens;
    int64_t stream_tokens_ns;
    int64_t refused_streams; /* in the current second, beyond the rate */
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
    int flush_held;   /* on the server's held list (server_flush_begin) */
    uint64_t flushes; /* flushes done (tests: one per batch) */
    TAILQ_ENTRY(conn) held_link;
};

/* A shutdown-stage subscriber (server_on_drain, server_on_stop). */
typedef struct server_hook {
    server_hook_fn fn;
    void *arg;
} server_hook_t;

struct server {
    struct event_base *base;
    config_t *cfg;
    struct metrics_registry *reg;
    struct inferd_metrics *m;
    grpc_method_t **methods;
    void **method_metrics; /* each row's cached series (method_metrics_t), owned here */
    size_t n_methods, cap_methods;
    http_route_t *routes;
    size_t n_routes, cap_routes;
    listener_t listeners[2];
    int n_listeners;
    const server_scope_t *main_scope, *system_scope;
    SSL_CTX *ssl_ctx;
    TAILQ_HEAD(, conn) conns;
    int n_conns;
    int flush_batch;         /* server_flush_begin depth */
    TAILQ_HEAD(, conn) held; /* connections to flush at server_flush_end */
    int draining;            /* SIGTERM seen */
    int stopping;            /* final GOAWAY sent; exit once connections are gone */
    int stage;               /* next shutdown stage the stage timer runs */
    struct event *sig_term, *sig_int, *stage_timer, *drain_timer;
    server_hook_t *on_drain, *on_stop;
    size_t n_on_drain, n_on_stop;
    struct offload *offload;                /* the running compression job, if any */
    size_t out_queued, in_pending, in_held; /* sums over connections (gauges) */
    int gated; /* out_queued passed --max-process-output: every call's input is held */
    struct metrics_series *limit_series[16]; /* limits_exceeded_total by server_count_limit */
    int64_t start_ns;
    uint64_t request_seq;
    trace_rng_t rng;
    int exit_code;
};

/* conn.c */
/** A new TCP connection on listener l: sniffs TLS and the protocol, then serves it. */
void conn_accept(server_t *s, listener_t *l, int fd, const struct sockaddr *sa, int salen);
/** Closes at once (its calls are cancelled) and frees c. */
void conn_close(conn_t *c);
/** Pushes nghttp2 output to the socket; closes the connection when the session is done. */
void conn_flush(conn_t *c);
/** Records activity (for the idle timeout). */
void conn_touch(conn_t *c);
/** Starts the shutdown stages on one connection (1: notice + ping, 2: final GOAWAY). */
void conn_goaway(conn_t *c, int stage);
/** Queues bytes on the connection, sending them at once when nothing waits before them (plain
 * TCP). Returns 0 or -ENOMEM; *sent (may be NULL) gets how many went to the socket now. */
int conn_write(conn_t *c, const void *data, size_t n, size_t *sent);
/** Re-arms the connection's timer after its state changed (a request head began). */
void conn_arm_timer(conn_t *c);
/** The connection's output or input bookkeeping changed by delta bytes: keeps the sums, sets
 * and clears the connection's and the process's congestion (input held) and the gauges. */
void conn_out_delta(conn_t *c, long delta);
/** The same for unfinished request input (pending) and held input (held). */
void conn_in_delta(conn_t *c, long pending, long held);
/** Processes held input of its calls at the next loop turn (congestion cleared). */
void conn_schedule_input(conn_t *c);

/* h2.c */
/** A server session with our SETTINGS submitted. Returns 0 or -1. */
int h2_session_start(conn_t *c);
/** Feeds received bytes. Returns 0 or -1 (fatal: close). */
int h2_recv(conn_t *c, const unsigned char *data, size_t len);
/** Ends every call of the session, then frees it. */
void h2_session_free(conn_t *c);

/* http1.c */
/** Sets up the parser. Returns 0 or -1. */
int http1_start(conn_t *c);
/** Feeds received bytes; responses are appended to the output. Returns 0 or -1 (close). */
int http1_recv(conn_t *c, struct evbuffer *in);
/** Frees the parser state (a running compression job is abandoned, a streamed answer's client
 * is gone). */
void http1_free(conn_t *c);
/** A streamed answer's head: status, headers, and Content-Length when length >= 0 (else chunked,
 * or for HTTP/1.0 a body to the close). Returns 0 or -EPIPE. */
int http1_stream_head(conn_t *c, http_stream_t *st, int status, const char *content_type,
                      const http_header_t *hdrs, size_t n, int64_t length);
/** Body bytes (a chunk when chunked); *end gets the answer's position after them. Returns 0,
 * -EPIPE, -ENOMEM. */
int http1_stream_body(conn_t *c, http_stream_t *st, const void *data, size_t len, uint64_t *end);
/** The answer is complete: the last chunk, then the next pipelined request (or the close);
 * drops the transport's reference. */
void http1_stream_end(conn_t *c, http_stream_t *st);

/* hstream.c: streamed answers */
/** A stream for a request to route (request_id: the client's x-request-id, or NULL); the
 * transport sets conn or call and holds the one reference. NULL when out of memory. */
http_stream_t *hstream_new(server_t *s, const http_route_t *route, const char *method,
                           const char *path, const char *request_id);
/** Runs the route's handler on the complete request (req->request_id is set here). */
void hstream_dispatch(http_stream_t *st, http_request_t *req);
/** The client went away: the handler hears it (on_cancel) unless the answer ended; drops the
 * transport's reference. */
void hstream_gone(http_stream_t *st);
/** The transport has taken the answer's bytes up to pos: marks up to there are reported. */
void hstream_taken(http_stream_t *st, uint64_t pos);

/* http.c: the route table */
/** The row serving path on listener l (exact rows first, then the longest prefix), or NULL
 * (none, or outside l's scope). */
const http_route_t *http_route_lookup(server_t *s, const listener_t *l, const char *path);
/** An error answer for a request to route rt (NULL: plain text) in the row's format. */
void http_route_error(const http_route_t *rt, int status, const char *message, http_response_t *r);
/** HTTP_METHOD_* bit of a method name, 0 for others. */
unsigned http_method_bit(const char *method);
/** The HTTP reason phrase of status ("" when unknown). */
const char *http_reason(int status);
/** Answers one plain HTTP request received on listener l: the route's handler, or 404 (unknown
 * path, or a route outside l's scope), or 405 with Allow. r is filled in all cases. */
void http_serve(server_t *s, const listener_t *l, const char *method, const char *target,
                const char *accept, const char *accept_encoding, const char *peer,
                http_response_t *r);
/** Registers the /metrics route (the core's own: it owns the registry). Returns 0 or -ENOMEM. */
int http_metrics_route_add(server_t *s);

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

/* tls.c */
/** The listeners' TLS context from --tls-cert, --tls-key, --tls-client-ca. Returns 0 (*out
 * set), -EINVAL (err names the option and the OpenSSL reason), -ENOMEM. */
int tls_context_new(SSL_CTX **out, const config_t *cfg, char *err, size_t errlen);

/* server.c */
/** Connection and stream gauges (connections_active, connections_total, http2_streams_active). */
void server_conn_gauge(server_t *s, int delta_active, int delta_streams, int new_conn);
/** A connection went away: the last one during shutdown ends the loop. */
void server_conn_gone(server_t *s);
/** Counts one act of a bound in limits_exceeded_total{limit}. */
void server_count_limit(server_t *s, const char *limit);

/* http1.c */
/** The request head or body took too long: 408 and close. */
void http1_timeout(conn_t *c, const char *why);

#endif
