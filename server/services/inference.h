/* inferd.v1.Inference on the engine: Generate, GenerateStream, GetModelInfo, the completion
 * queue drained on the loop, inference metrics, and the health prober's ops (canaries through
 * the same path real requests take, progress figures). Reactor thread only. */
#ifndef INFERD_SERVER_SERVICES_INFERENCE_H
#define INFERD_SERVER_SERVICES_INFERENCE_H

#include <stddef.h>

#include "engine/engine.h"
#include "health/prober.h"
#include "inferd/v1/inference.pb-c.h"
#include "server/core/server.h"

typedef struct inference inference_t;

/** Loads the model (--model or the built-in default), starts the engine and registers the
 * method rows with s. The endpoint stays NOT_SERVING until a first generation succeeds (the
 * prober's first canary). Returns 0 (*out set), -EINVAL (--model without --tokenizer),
 * -ENOMEM, or the engine's error (the model cannot be loaded); err gets one line. */
int inference_new(inference_t **out, server_t *s, char *err, size_t errlen);
/** Stops the engine and frees (NULL is a no-op). After every call was cancelled and after the
 * prober that uses inference_probe_ops() is gone. */
void inference_free(inference_t *inf);
/** The engine (fault injection). */
engine_t *inference_engine(inference_t *inf);

/** Maps a GenerateRequest onto an engine request (pointers into m: m must outlive r's use), the
 * one mapping Generate, GenerateStream and the canary share. Returns 0, or -ENOENT when m names
 * a model this server does not serve (msg says which). */
int inference_request_from_proto(const inference_t *inf, const Inferd__V1__GenerateRequest *m,
                                 engine_request_t *r, char *msg, size_t msglen);

/** Sets the canary the probe ops submit (NULL: BOS, max_tokens 1, temperature 0), after checking
 * the model accepts it as Generate would. payload must outlive inf. Returns 0, or -EINVAL with
 * the reason in err ("model 'x' is not served here ...", "the model rejects it (why): ..."). */
int inference_set_canary(inference_t *inf, const Inferd__V1__GenerateRequest *payload, char *err,
                         size_t errlen);
/** The prober's ops on inf (health/prober.h): submit and cancel canaries, read progress. */
const health_probe_ops_t *inference_probe_ops(void);

/** Called on the loop for every real request that completed with a finish reason (the
 * prober's evidence: app.c forwards it to health_prober_note_success). */
typedef struct inference_observer {
    void (*on_success)(void *arg);
    void *arg;
} inference_observer_t;
/** Sets the observer (NULL clears). */
void inference_set_observer(inference_t *inf, const inference_observer_t *obs);

#endif
