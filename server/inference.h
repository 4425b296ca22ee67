/* inferd.v1.Inference on the engine: Generate, GenerateStream, GetModelInfo, the completion
 * queue drained on the loop, inference metrics, and internal (canary) submissions through the
 * same path real requests take. Reactor thread only. */
#ifndef INFERD_SERVER_INFERENCE_H
#define INFERD_SERVER_INFERENCE_H

#include <stdint.h>

#include "engine/engine.h"
#include "inferd/v1/inference.pb-c.h"
#include "server/core/server.h"

typedef struct inference inference_t;

/** Loads the model (cfg->model or the built-in default) and starts the engine; registers the
 * method rows. The endpoint "generate" stays NOT_SERVING until a first generation succeeds
 * (the prober's first canary, prober.h). Returns NULL with a one-line reason in err. */
inference_t *inference_new(server_t *s, char *err, size_t errlen);
/** Stops the engine and frees (NULL is a no-op). After every call was cancelled. */
void inference_free(inference_t *inf);
/** The engine (fault injection, stats). */
engine_t *inference_engine(inference_t *inf);

/** What the prober reads (CLOCK_MONOTONIC ns, as engine_now_ns()). */
typedef struct inference_stats {
    uint64_t
        last_success_ns;    /* last request (real or internal) that finished with a finish reason */
    uint64_t last_token_ns; /* last token produced for any request */
    uint32_t inflight;      /* submitted and not yet finished (real and internal) */
    uint32_t internal_inflight;
} inference_stats_t;
/** Current figures. */
void inference_stats(const inference_t *inf, inference_stats_t *out);

/** Result of an internal request: ok when it finished with a finish reason; otherwise err says
 * why (engine error, cancelled, rejected). tokens: tokens produced. */
typedef void (*inference_done_fn)(void *arg, int ok, engine_finish_t finish, const char *err,
                                  uint32_t tokens);
typedef struct inference_internal inference_internal_t;
/** Submits an internal request (ENGINE_REQ_CANARY: kept out of the request metrics) through the
 * same submission path as real ones. done is called exactly once, on the loop, unless
 * inference_internal_cancel() came first. Returns 0 (*out set) or a negative errno (done not
 * called; err filled). */
int inference_submit_internal(inference_t *inf, const engine_request_t *r, inference_done_fn done,
                              void *arg, inference_internal_t **out, char *err, size_t errlen);
/** Same, from a GenerateRequest message (e.g. DYN_HEALTH_CHECK_PAYLOAD parsed from JSON): the
 * fields map as for Generate. Returns -ENOENT for a model this server does not serve. */
int inference_submit_message(inference_t *inf, const Inferd__V1__GenerateRequest *m,
                             inference_done_fn done, void *arg, inference_internal_t **out,
                             char *err, size_t errlen);
/** The served model. */
const engine_model_info_t *inference_model_info(const inference_t *inf);
/** Cancels an internal request (a canary that timed out): done is not called; the engine frees
 * its slot at the next step. */
void inference_internal_cancel(inference_t *inf, inference_internal_t *h);
/** Called on the loop for every real request that completed with a finish reason and for
 * every produced token batch (the prober's evidence). */
typedef struct inference_observer {
    void (*on_success)(void *arg);
    void (*on_progress)(void *arg);
    void *arg;
} inference_observer_t;
/** Sets the observer (NULL clears). */
void inference_set_observer(inference_t *inf, const inference_observer_t *obs);

#endif
