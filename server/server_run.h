/* Creating, running and freeing the server (main.c and tests). */
#ifndef INFERD_SERVER_SERVER_RUN_H
#define INFERD_SERVER_SERVER_RUN_H

#include <stddef.h>

#include "server/base/config.h"
#include "server.h"

/** Builds the server from a loaded configuration: metrics, health, method table, TLS,
 * listeners (bound here, so an address in use fails now), signal handlers.
 * Returns NULL with a one-line reason in err. */
server_t *server_new(config_t *cfg, char *err, size_t errlen);
/** Runs the loop until shutdown completes. Returns the exit status. */
int server_run(server_t *s);
/** Closes every connection (their calls are cancelled); before stopping what calls use. */
void server_close_connections(server_t *s);
/** Frees everything (NULL is a no-op). */
void server_free(server_t *s);

#endif
