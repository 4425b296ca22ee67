/* The HTTP route table: one row per path (name, path, methods, handler), served the same over
 * HTTP/1.1 and over HTTP/2 (requests that are not gRPC). Modules above the core register their
 * routes (health: /live and /health; services: /debug/fault); the core serves /metrics itself.
 * The transport answers what no row covers: 404 for an unknown path or one outside the
 * listener's scope, 405 with Allow for a method the row does not take. Handlers run on the
 * reactor thread and answer at once; HEAD gets the GET answer without its body. */
#ifndef INFERD_SERVER_CORE_HTTP_H
#define INFERD_SERVER_CORE_HTTP_H

#include <stddef.h>

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

/** One row of the route table. */
typedef struct http_route {
    const char *name; /* stable name listener scopes refer to ("live", "metrics") */
    const char *path; /* exact path ("/live"); must outlive the server */
    unsigned methods; /* HTTP_METHOD_* bits; any other method gets 405 */
    http_handler_fn handler;
    void *arg;
} http_route_t;

/** Adds routes (the rows are copied; their strings must outlive the server). Start-up only.
 * Returns 0, -EEXIST (a name or path already registered), -EINVAL (no name, no path, no
 * handler, or a path not starting with '/'), -ENOMEM. */
int server_route_add(struct server *s, const http_route_t *rows, size_t n);

/** Sets r to status with a copy of body (len bytes) as content_type. Returns 0, or -ENOMEM
 * (r is then a 503 with an empty body). */
int http_response_set(http_response_t *r, int status, const char *content_type, const char *body,
                      size_t len);
/** Frees the body (r itself is the caller's). */
void http_response_dispose(http_response_t *r);

#endif
