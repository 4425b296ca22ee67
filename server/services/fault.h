/* Fault injection: POST /debug/fault?mode=... sets the engine's fault mode, so tests can prove
 * the health checks catch a hung, failing, stalled or slow engine and recover once it is
 * cleared. A debugging aid, not an API: off unless --enable-fault-injection, and refused unless
 * the system listener is bound to loopback. */
#ifndef INFERD_SERVER_SERVICES_FAULT_H
#define INFERD_SERVER_SERVICES_FAULT_H

#include "server/core/http.h"
#include "server/services/inference.h"

struct config;

/** 1 when POST /debug/fault is to be served: --enable-fault-injection and a loopback system
 * listener. */
int fault_enabled(const struct config *cfg);
/** Start-up: logs that fault injection is on, or warns that it was refused (non-loopback system
 * host, or no system port) and stays off. */
void fault_log_startup(const struct config *cfg);
/** The route row "fault": POST /debug/fault?mode=hang|error|stall|clear|slow&ms=N sets inf's
 * engine fault (200 JSON, 400 for a bad mode). Register it only when fault_enabled(), and let
 * only the system listener's scope name it. */
void fault_route(inference_t *inf, http_route_t *row);

#endif
