/* The server core: one per process, owned by the reactor thread. It terminates TCP, TLS,
 * HTTP/2 and HTTP/1.1 on two listeners (main and system), runs gRPC calls against the method
 * table and plain HTTP requests against the route table (core/http.h), and runs the shutdown
 * stages. It knows nothing of health or the services: they register method rows and routes,
 * and subscribe to the drain and stop hooks. server/app.c creates and wires everything. */
#ifndef INFERD_SERVER_CORE_SERVER_H
#define INFERD_SERVER_CORE_SERVER_H

#include <stddef.h>

#include "server/core/grpc.h"

struct config;
struct event_base;
struct inferd_metrics;
struct metrics_registry;

typedef struct server server_t;

/** What one listener serves once a connection is up: gRPC methods of the named services and
 * HTTP routes of the named rows (http_route_t.name). A NULL list serves everything registered;
 * anything else is refused as if it did not exist (UNIMPLEMENTED, 404). */
typedef struct server_scope {
    const char *name;            /* "the system port": named in refusals */
    const char *const *services; /* "grpc.health.v1.Health", or NULL for all */
    size_t n_services;
    const char *const *routes; /* "live", "metrics", or NULL for all */
    size_t n_routes;
} server_scope_t;

/** 1 when scope serves gRPC service (a NULL scope or list serves every one). */
int server_scope_has_service(const server_scope_t *scope, const char *service);
/** 1 when scope serves the route named name (a NULL scope or list serves every one). */
int server_scope_has_route(const server_scope_t *scope, const char *name);

/** What server_new() builds on; everything must outlive the server. */
typedef struct server_options {
    struct event_base *base;            /* the reactor (created after evthread_use_pthreads()) */
    struct config *cfg;                 /* listeners, TLS, limits, timeouts */
    struct metrics_registry *reg;       /* /metrics renders it */
    struct inferd_metrics *m;           /* grpc_server_* and connection metrics */
    const server_scope_t *main_scope;   /* what --listen serves (NULL: everything) */
    const server_scope_t *system_scope; /* what the system port serves (NULL: everything) */
} server_options_t;

/** Creates the TLS context, the listeners (bound here, so an address in use
 * fails now), the signal handlers and the /metrics route ("metrics"). Returns 0 (*out set),
 * -EINVAL (a bad address or TLS file: err names the option), -EADDRINUSE and other bind
 * errors, -ENOMEM; err gets one line. */
int server_new(server_t **out, const server_options_t *opt, char *err, size_t errlen);
/** Runs the loop until shutdown completes. Returns the exit status. */
int server_run(server_t *s);
/** Closes every connection (their calls are cancelled): before stopping what calls use. */
void server_close_connections(server_t *s);
/** Frees everything (NULL is a no-op). */
void server_free(server_t *s);

/** Adds method rows to the method table. The rows must outlive every call on them (free their
 * owner after server_close_connections(); server_free() does not touch them). Start-up only.
 * Returns 0, -EEXIST for a path already registered, -ENOMEM. */
int server_register(server_t *s, grpc_method_t *rows, size_t n);
/** Looks a method up by its :path. Returns NULL when unknown. */
grpc_method_t *server_find_method(server_t *s, const char *path);
/** Distinct service names in registration order; returns how many (may exceed cap). */
size_t server_services(const server_t *s, const char **names, size_t cap);

/** Defers connection flushes until server_flush_end(), so a producer that sends on many calls
 * in one loop turn (a drain of the engine's events) writes each connection once: one send()
 * for all its streams. Nests. */
void server_flush_begin(server_t *s);
/** Ends a batch: every connection written meanwhile is flushed, once. */
void server_flush_end(server_t *s);

/** A hook: a shutdown stage was reached. */
typedef void (*server_hook_fn)(void *arg);
/** Calls fn(arg) when shutdown begins (SIGTERM or SIGINT), before the --shutdown-delay during
 * which listeners still answer (health goes NOT_SERVING here). Hooks run in the order added.
 * Start-up only. Returns 0 or -ENOMEM. */
int server_on_drain(server_t *s, server_hook_fn fn, void *arg);
/** Calls fn(arg) at the final stage, just before the final GOAWAY, when in-flight streams get
 * --drain-timeout (long-lived streams such as Watch end here). Start-up only. Returns 0 or
 * -ENOMEM. */
int server_on_stop(server_t *s, server_hook_fn fn, void *arg);
/** 1 once shutdown has begun. */
int server_draining(const server_t *s);

/** The reactor's event base. */
struct event_base *server_base(const server_t *s);
/** The metric handles. */
struct inferd_metrics *server_metrics(const server_t *s);
/** The metrics registry. */
struct metrics_registry *server_registry(const server_t *s);
/** The effective configuration. */
const struct config *server_config(const server_t *s);
/** The port a listener is bound to (0 main, 1 system; for --listen :0 in tests), or -1. */
int server_port(const server_t *s, int listener);

#endif
