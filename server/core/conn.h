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
    struct offload *offload; /* the running compression job, if any */
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
/** Frees the parser state (a running compression job is abandoned). */
void http1_free(conn_t *c);

/* http.c: the route table */
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

#endif
