/* The composition root (app.h): what exists, who owns it, who hears what. Each module below
 * is built on the ones created before it and freed after the ones built on it. */
#include "server/app.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "health/health.h"
#include "health/prober.h"
#include "metrics/inferd_metrics.h"
#include "metrics/metrics.h"
#include "server/base/config.h"
#include "server/base/log.h"
#include "server/core/http.h"
#include "server/core/server.h"
#include "server/services/canary.h"
#include "server/services/fault.h"
#include "server/services/inference.h"
#include "server/services/reflection.h"

/* What each listener serves (DESIGN.md "Health model"; issue 13): the main port everything
 * but fault injection, the system port what Dynamo's system status server serves. */
static const char *const main_routes[] = {"live", "health", "metrics"};
static const char *const system_services[] = {"grpc.health.v1.Health"};
static const char *const system_routes[] = {"live", "health", "metrics", "fault"};
static const server_scope_t main_scope = {
    .name = "the main port",
    .routes = main_routes,
    .n_routes = sizeof main_routes / sizeof main_routes[0],
};
static const server_scope_t system_scope = {
    .name = "the system port",
    .services = system_services,
    .n_services = sizeof system_services / sizeof system_services[0],
    .routes = system_routes,
    .n_routes = sizeof system_routes / sizeof system_routes[0],
};

struct app {
    config_t *cfg;
    struct event_base *base;
    metrics_registry_t *reg;
    inferd_metrics_t m;
    int m_ready;
    Inferd__V1__GenerateRequest *canary; /* --health-check-payload, or NULL */
    server_t *srv;
    health_t *health;
    reflection_t *refl;
    inference_t *inf;
    health_prober_t *prober;
};

/* SIGTERM: every service NOT_SERVING at once, Watchers hear it. */
static void on_drain(void *arg)
{
    health_set_draining(arg);
}

/* Final stage: liveness goes last, but before the Watch streams end, so its watchers hear it. */
static void on_stop(void *arg)
{
    health_set_shutdown(arg);
    health_watch_close_all(arg, GRPC_STATUS_UNAVAILABLE);
}

static int health_setup(app_t *a, char *err, size_t errlen)
{
    health_status_t starting;
    if (health_parse_starting_status(a->cfg->starting_health_status, &starting)) {
        snprintf(err, errlen,
                 "invalid value '%s' for --starting-health-status: expected notready|ready",
                 a->cfg->starting_health_status);
        return -EINVAL;
    }
    int rc = health_new(&a->health, a->base, starting, err, errlen);
    if (rc) return rc;
    /* The generate endpoint exists from the start, NOT_SERVING until a first canary passes. */
    rc = health_endpoint_add(a->health, "generate", "inferd.v1.Inference");
    size_t n;
    grpc_method_t *rows = health_grpc_methods(a->health, &n);
    if (!rc) rc = server_register(a->srv, rows, n);
    http_route_t routes[2];
    health_http_routes(a->health, a->cfg->live_path, a->cfg->health_path, routes);
    if (!rc) rc = server_route_add(a->srv, routes, 2);
    if (!rc) rc = server_on_drain(a->srv, on_drain, a->health);
    if (!rc) rc = server_on_stop(a->srv, on_stop, a->health);
    if (rc) snprintf(err, errlen, "cannot set up health: %s", strerror(-rc));
    return rc;
}

static int reflection_setup(app_t *a, char *err, size_t errlen)
{
    int rc =
        reflection_new(&a->refl, inferd_descriptor_set, inferd_descriptor_set_len, err, errlen);
    if (rc) return rc;
    size_t n;
    grpc_method_t *rows = reflection_methods(a->refl, &n);
    rc = server_register(a->srv, rows, n);
    if (rc) snprintf(err, errlen, "cannot register reflection: %s", strerror(-rc));
    return rc;
}

/* A real request succeeded: the prober's evidence that the endpoint works. */
static void on_success(void *arg)
{
    health_prober_note_success(arg, "generate");
}

/* The engine, inferd.v1.Inference, and the prober watching it through inference's ops. */
static int inference_setup(app_t *a, char *err, size_t errlen)
{
    int rc = inference_new(&a->inf, a->srv, err, errlen);
    if (rc) return -EIO; /* a model that does not load: exit 1, as the README says */
    char why[400];
    if (inference_set_canary(a->inf, a->canary, why, sizeof why)) {
        snprintf(err, errlen, "invalid value '%.120s' for --health-check-payload: %s",
                 a->cfg->health_check_payload, why);
        return -EINVAL;
    }
    const config_t *cfg = a->cfg;
    health_prober_options_t po = {
        .health = a->health,
        .base = a->base,
        .m = &a->m,
        .enabled = cfg->health_check_enabled,
        .canary_wait_ns = cfg->canary_wait_ns,
        .request_timeout_ns = cfg->health_request_timeout_ns,
        .busy_stall_ns = cfg->busy_stall_ns,
        .payload = a->canary ? "from --health-check-payload" : "BOS, 1 token",
    };
    if ((rc = health_prober_new(&a->prober, &po, err, errlen))) return rc;
    if ((rc = health_prober_add(a->prober, "generate", inference_probe_ops(), a->inf, err, errlen)))
        return rc;
    if (cfg->health_check_enabled) {
        inference_observer_t obs = {.on_success = on_success, .arg = a->prober};
        inference_set_observer(a->inf, &obs);
    }
    return 0;
}

static int fault_setup(app_t *a, char *err, size_t errlen)
{
    fault_log_startup(a->cfg);
    if (!fault_enabled(a->cfg)) return 0;
    http_route_t row;
    fault_route(a->inf, &row);
    int rc = server_route_add(a->srv, &row, 1);
    if (rc) snprintf(err, errlen, "cannot register /debug/fault: %s", strerror(-rc));
    return rc;
}

int app_new(app_t **out, config_t *cfg, char *err, size_t errlen)
{
    *out = NULL;
    int rc = -ENOMEM;
    app_t *a = calloc(1, sizeof *a);
    if (!a) goto oom;
    a->cfg = cfg;
    /* A bad canary payload is an option error: found before anything listens. */
    if ((rc = canary_payload_load(cfg, &a->canary, err, errlen))) goto fail;
    a->base = event_base_new();
    if (!a->base) goto oom;
    if ((rc = metrics_registry_new(&a->reg, cfg->metrics_prefix, err, errlen))) goto fail;
    if ((rc = inferd_metrics_init(&a->m, a->reg))) {
        snprintf(err, errlen, "cannot register the metrics: %s", strerror(-rc));
        goto fail;
    }
    a->m_ready = 1;
    inferd_metrics_set_log_dropped_source(&a->m, log_dropped);
    server_options_t so = {.base = a->base,
                           .cfg = cfg,
                           .reg = a->reg,
                           .m = &a->m,
                           .main_scope = &main_scope,
                           .system_scope = &system_scope};
    if ((rc = server_new(&a->srv, &so, err, errlen))) goto fail;
    if ((rc = health_setup(a, err, errlen))) goto fail;
    if ((rc = reflection_setup(a, err, errlen))) goto fail;
    if ((rc = inference_setup(a, err, errlen))) goto fail;
    if ((rc = fault_setup(a, err, errlen))) goto fail;
    *out = a;
    return 0;
oom:
    snprintf(err, errlen, "out of memory");
fail:
    app_free(a);
    return rc;
}

int app_run(app_t *a)
{
    return server_run(a->srv);
}

server_t *app_server(const app_t *a)
{
    return a->srv;
}

void app_free(app_t *a)
{
    if (!a) return;
    if (a->srv) server_close_connections(a->srv); /* cancels what is still in the engine */
    health_prober_free(a->prober);                /* cancels its canary through inference's ops */
    inference_free(a->inf);
    server_free(a->srv);
    reflection_free(a->refl);
    health_free(a->health);
    if (a->canary) protobuf_c_message_free_unpacked(&a->canary->base, NULL);
    if (a->m_ready) inferd_metrics_dispose(&a->m);
    metrics_registry_free(a->reg);
    if (a->base) event_base_free(a->base);
    free(a);
}
