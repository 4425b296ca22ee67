/* The HTTP route table: one row per path (name, path, methods, handler), served the same over
 * HTTP/1.1 and over HTTP/2 (requests that are not gRPC). Modules above the core register their
 * routes (health: /live and /health; services: /debug/fault, the OpenAI API); the core serves
 * /metrics itself. The transport answers what no row covers: 404 for an unknown path or one
 * outside the listener's scope, 405 with Allow for a method the row does not take.
 *
 * Two kinds of rows. A plain row's handler runs on the reactor thread and answers at once
 * (HEAD gets the GET answer without its body; a request body is not read). A streaming row
 * (http_route_t.stream) gets the whole request body, up to its max_body, and answers through an
 * http_stream_t, at once or later and in pieces: over HTTP/1.1 with chunked transfer (and
 * keep-alive: pipelined requests wait their turn), over HTTP/2 as DATA frames under the stream's
 * flow control. The producer's flow control is http_stream_write's tag and units, reported back
 * (on_taken) once the transport has taken the bytes; a client that goes away (connection closed,
 * stream reset) cancels the stream (on_cancel). Every streamed answer echoes x-request-id
 * (the client's, or one generated) and is logged on the access log. */
#ifndef INFERD_SERVER_CORE_HTTP_H
#define INFERD_SERVER_CORE_HTTP_H

#include <stddef.h>
#include <stdint.h>

struct server;

/** Methods a route takes (bits of http_route_t.methods). */
enum {
    HTTP_METHOD_GET = 1,
    HTTP_METHOD_HEAD = 2,
    HTTP_METHOD_POST = 4,
};

/** One request as a handler sees it; the strings live until the handler returns. */
typedef struct http_request {
    const char *method;          /* "GET", "HEAD", "POST", ... */
    const char *path;            /* the target up to '?' or '#' */
    const char *query;           /* after '?' up to '#', "" when none */
    const char *accept;          /* Accept, or NULL */
    const char *accept_encoding; /* Accept-Encoding, or NULL */
    const char *peer;            /* "127.0.0.1:51234" */
    /* streaming rows only (NULL / 0 for plain rows) */
    const char *content_type; /* Content-Type, or NULL */
    const char *request_id; /* x-request-id as given (printable ASCII, at most 64), or generated */
    const char *body;       /* the whole body, NUL-terminated after body_len bytes */
    size_t body_len;
    int http2; /* 1 over HTTP/2, 0 over HTTP/1.1 */
} http_request_t;

/** A response. The body is malloc'd and belongs to the response (http_response_dispose). */
typedef struct http_response {
    int status;
    const char *content_type;     /* a static string */
    const char *content_encoding; /* NULL or "gzip" */
    const char *allow;            /* for 405 */
    char *body;
    size_t len;
    int gzip_later; /* the transport gzips the body off the loop before sending (a big scrape) */
} http_response_t;

/** Fills r (zeroed by the caller). Runs on the loop and must not block. */
typedef void (*http_handler_fn)(void *arg, const http_request_t *req, http_response_t *r);

/** A streamed answer (see the top): the handler's handle on one request. */
typedef struct http_stream http_stream_t;
/** A streaming row's handler: answer through st, now or later (http_stream_ref to keep st past
 * the return). The request's strings live until the handler returns. */
typedef void (*http_stream_fn)(void *arg, http_stream_t *st, const http_request_t *req);
/** The client went away (or its connection is being closed) before the answer ended: release
 * what is held for st (http_stream_unref); writes now fail with -EPIPE. Called at most once,
 * only after the handler ran, never after http_stream_end. */
typedef void (*http_stream_cancel_fn)(void *arg, http_stream_t *st);
/** The transport took for the wire everything written under tag, carrying units in all (the
 * producer's flow control). Runs on the loop, possibly inside a flush: it must not write. */
typedef void (*http_stream_taken_fn)(void *arg, http_stream_t *st, uint64_t tag, uint32_t units);
/** Writes the body of an error the transport answers for the row (405 Method Not Allowed, 413
 * Content Too Large, 400 for a malformed body) in the row's own format: set r's content type
 * and body (http_response_set). NULL: plain text. */
typedef void (*http_error_fn)(void *arg, int status, const char *message, http_response_t *r);

/** One row of the route table. */
typedef struct http_route {
    const char *name;        /* stable name listener scopes refer to ("live", "metrics") */
    const char *path;        /* exact path ("/live"), or with prefix every path that starts with it;
                                must outlive the server */
    unsigned methods;        /* HTTP_METHOD_* bits; any other method gets 405 */
    http_handler_fn handler; /* a plain row, or NULL for a streaming row: */
    http_stream_fn stream;   /* a streaming row's handler */
    http_stream_cancel_fn on_cancel; /* streaming: may be NULL */
    http_stream_taken_fn on_taken;   /* streaming: may be NULL */
    http_error_fn error;             /* may be NULL */
    size_t max_body; /* streaming: the largest request body (413 beyond); 0 takes none */
    int prefix;      /* path is a prefix ("/v1/models/" for every model id); exact rows win */
    void *arg;
} http_route_t;

/** Adds routes (the rows are copied; their strings must outlive the server). Start-up only.
 * Returns 0, -EEXIST (a name or path already registered), -EINVAL (no name, no path, neither or
 * both of handler and stream, or a path not starting with '/'), -ENOMEM. */
int server_route_add(struct server *s, const http_route_t *rows, size_t n);

/** A response header beyond the ones the transport writes (content type, length, x-request-id). */
typedef struct http_header {
    const char *name; /* lower case ("retry-after") */
    const char *value;
} http_header_t;

/** Starts a streamed answer: status and headers now, a body of unknown length from
 * http_stream_write (HTTP/1.1 chunked; HTTP/1.0 until the connection closes; HTTP/2 DATA), ended
 * by http_stream_end. Returns 0, -EPIPE (the client is gone or the answer started), -ENOMEM. */
int http_stream_start(http_stream_t *st, int status, const char *content_type,
                      const http_header_t *hdrs, size_t n_hdrs);
/** Appends body bytes carrying units under tag (on_taken reports them once the transport took
 * them all; units 0 reports nothing). Returns 0, -EPIPE (gone, ended, or not started), -ENOMEM. */
int http_stream_write(http_stream_t *st, const void *data, size_t len, uint64_t tag,
                      uint32_t units);
/** Ends a started answer (HTTP/1.1: the last chunk; then the next pipelined request is read).
 * Returns 0 or -EPIPE. */
int http_stream_end(http_stream_t *st);
/** The whole answer at once, with its length (HEAD: the headers only). Returns 0 or -EPIPE /
 * -ENOMEM (the answer could not be given: the stream is ended anyway). */
int http_stream_reply(http_stream_t *st, int status, const char *content_type,
                      const http_header_t *hdrs, size_t n_hdrs, const char *body, size_t len);
/** Keeps st past the handler's return (an answer given later). */
void http_stream_ref(http_stream_t *st);
/** Drops a reference; st is freed when the last one goes. */
void http_stream_unref(http_stream_t *st);
/** 1 while the answer can still be written (client there, not ended), else 0. */
int http_stream_active(const http_stream_t *st);
/** Handler state slot. */
void http_stream_set_data(http_stream_t *st, void *data);
/** Handler state slot. */
void *http_stream_data(const http_stream_t *st);
/** The request id (x-request-id as given, or generated), echoed in the answer's headers. */
const char *http_stream_request_id(const http_stream_t *st);
/** The server the request came to. */
struct server *http_stream_server(const http_stream_t *st);

/** Sets r to status with a copy of body (len bytes) as content_type. Returns 0, or -ENOMEM
 * (r is then a 503 with an empty body). */
int http_response_set(http_response_t *r, int status, const char *content_type, const char *body,
                      size_t len);
/** Frees the body (r itself is the caller's). */
void http_response_dispose(http_response_t *r);

#endif
