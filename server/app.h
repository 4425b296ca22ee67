/* The composition root: every module is created and wired here, and nowhere else. main.c
 * parses the options and runs it. */
#ifndef INFERD_SERVER_APP_H
#define INFERD_SERVER_APP_H

#include <stddef.h>

struct config;
struct server;

typedef struct app app_t;

/** Creates everything for cfg (which must outlive the app): metrics, the server core and its
 * listeners, health (registry, grpc.health.v1, /live, /health), reflection, the engine and
 * inferd.v1.Inference, the health prober, fault injection where enabled, and the shutdown
 * hooks. Returns 0 (*out set), -EINVAL (an option value found invalid at start: exit 2), or
 * another negative errno (exit 1); err gets one line naming what failed. */
int app_new(app_t **out, struct config *cfg, char *err, size_t errlen);
/** Runs until shutdown completes. Returns the exit status. */
int app_run(app_t *a);
/** The server core, for a driver that runs the loop itself and feeds it connections (the fuzz
 * harnesses of test/fuzz) instead of app_run(). */
struct server *app_server(const app_t *a);
/** Stops and frees everything in the order the modules need (NULL is a no-op). */
void app_free(app_t *a);

#endif
