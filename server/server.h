/* The server context: one per process, owned by the reactor thread, passed to every module
 * (no mutable globals). */
#ifndef INFERD_SERVER_SERVER_H
#define INFERD_SERVER_SERVER_H

#include <stddef.h>
#include "grpc.h"

struct event_base;
struct health;
struct metrics_registry;
struct inferd_metrics;
struct config;

typedef struct server server_t;

/** Adds method rows to the method table (rows must outlive the server). Start-up only.
 * Returns 0, -EEXIST for a duplicate path, -ENOMEM. */
int server_register(server_t *s, grpc_method_t *rows, size_t n);
/** Looks a method up by its :path. Returns NULL when unknown. */
grpc_method_t *server_find_method(server_t *s, const char *path);
/** Distinct service names in registration order; returns how many (may exceed cap). */
size_t server_services(const server_t *s, const char **names, size_t cap);
/** The reactor's event base. */
struct event_base *server_base(const server_t *s);
/** The health registry. */
struct health *server_health(const server_t *s);
/** The metric handles (inferd_metrics_t). */
struct inferd_metrics *server_metrics(const server_t *s);
/** The metrics registry. */
struct metrics_registry *server_registry(const server_t *s);
/** The effective configuration. */
const struct config *server_config(const server_t *s);

#endif
