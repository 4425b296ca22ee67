/* The OpenAI-compatible HTTP API on the core's route table (streaming routes): GET /v1/models,
 * GET /v1/models/{id}, POST /v1/completions, POST /v1/chat/completions (JSON or server-sent
 * events), errors in OpenAI's JSON shape. A request is parsed from JSON into the same
 * inferd.v1.GenerateRequest gRPC clients send and runs as an inference job (services/inference.h):
 * one mapping, admission queue, batching, cancellation, metrics (api="openai"), log and health
 * story for both APIs. Reactor thread only. */
#ifndef INFERD_SERVER_SERVICES_OPENAI_H
#define INFERD_SERVER_SERVICES_OPENAI_H

#include <stddef.h>

#include "inferd/v1/inference.pb-c.h"
#include "server/core/server.h"
#include "server/services/inference.h"

typedef struct openai openai_t;

/** Most levels of nesting in a request's JSON (deeper is 400 before jansson parses it). */
#define OPENAI_MAX_DEPTH 32
/** At most this many stop strings (OpenAI's limit). */
#define OPENAI_MAX_STOP 4

/** An error in OpenAI's shape: {"error": {"message", "type", "param", "code"}}. */
typedef struct openai_error {
    int status;        /* HTTP status: 400, 404, 405, 413, 415, 429, 500, 503 */
    char message[640]; /* says what and where */
    const char *type;  /* "invalid_request_error", "rate_limit_error", "server_error" */
    char param[64];    /* the field at fault, "" for null */
    const char *code;  /* a machine-readable code, or NULL for null */
} openai_error_t;

/** A parsed request: the GenerateRequest both APIs share, and what only the OpenAI answer needs.
 * The strings point into the parsed JSON, which it keeps. */
typedef struct openai_request {
    int chat;                  /* /v1/chat/completions (else /v1/completions) */
    int stream, include_usage; /* stream: server-sent events; include_usage: the usage chunk */
    const char *model;         /* as given ("" when none: the served model) */
    Inferd__V1__GenerateRequest g;
    Inferd__V1__SamplingOptions sampling;
    Inferd__V1__StopConditions stop;
    /* storage g points into */
    void *root; /* json_t */
    Inferd__V1__ChatMessage *msgs, **msgp;
    char **joined; /* message contents joined from text parts (one per message, or NULL) */
    size_t n_msgs;
    uint32_t *ids;
    char *stops[OPENAI_MAX_STOP];
} openai_request_t;

/** Parses a request body (the libFuzzer entry point for the API's outside input): JSON of at most
 * OPENAI_MAX_DEPTH levels, each field type-checked, every field that would change the output but
 * that inferd does not implement refused (logprobs, tools, n > 1, echo, penalties, ...). Returns 0
 * (*out filled: dispose it), or -EINVAL with err set (400 and the field), -ENOMEM. *out needs no
 * dispose on failure. */
int openai_request_parse(const char *body, size_t len, int chat, openai_request_t *out,
                         openai_error_t *err);
/** Frees what openai_request_parse kept (NULL-safe on a zeroed request). */
void openai_request_dispose(openai_request_t *r);
/** The JSON body of an error (malloc'd, NUL-terminated, *len bytes), or NULL when out of memory. */
char *openai_error_json(const openai_error_t *err, size_t *len);

/** Registers the API's routes with s, serving inf's model under its name. Returns 0 (*out set),
 * -EEXIST, -ENOMEM; err gets one line. */
int openai_new(openai_t **out, server_t *s, inference_t *inf, char *err, size_t errlen);
/** Frees (NULL is a no-op); after server_close_connections (which ends every answer). */
void openai_free(openai_t *o);

#endif
