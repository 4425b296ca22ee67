/* The canary payload of the health checks (DYN_HEALTH_CHECK_PAYLOAD): what inference submits
 * for health/prober.c. The prober itself knows nothing of the request. */
#ifndef INFERD_SERVER_SERVICES_CANARY_H
#define INFERD_SERVER_SERVICES_CANARY_H

#include <stddef.h>

#include "inferd/v1/inference.pb-c.h"

struct config;

/** Parses a canary payload: JSON text, or "@PATH" naming a file that holds it. Field names as
 * in the .proto (snake_case) or its JSON names (lowerCamelCase); uint64 may be a JSON string.
 * Returns 0 (*out: free with protobuf_c_message_free_unpacked(&(*out)->base, NULL)), -EINVAL
 * with the reason in err (no option name), or -ENOMEM. */
int canary_payload_parse(const char *spec, Inferd__V1__GenerateRequest **out, char *err,
                         size_t errlen);
/** The payload --health-check-payload gives, parsed; *out NULL when the option is unset (the
 * default canary: BOS, max_tokens 1, temperature 0). Returns 0, -EINVAL with "invalid value
 * '...' for --health-check-payload: why" in err (exit 2), or -ENOMEM. */
int canary_payload_load(const struct config *cfg, Inferd__V1__GenerateRequest **out, char *err,
                        size_t errlen);

#endif
