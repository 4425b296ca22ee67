/* inferd.v1.Inference on the engine: Generate, GenerateStream, GetModelInfo, Tokenize, the
 * completion queue drained on the loop, inference metrics, and the health prober's ops (canaries
 * through the same path real requests take, progress figures). Other front-ends (the OpenAI HTTP
 * API, services/openai.c) submit through the same jobs: one request mapping, one admission
 * queue, one set of metrics and one health story for every API. Reactor thread only. */
#ifndef INFERD_SERVER_SERVICES_INFERENCE_H
#define INFERD_SERVER_SERVICES_INFERENCE_H

#include <stddef.h>

#include "engine/engine.h"
#include "health/prober.h"
#include "inferd/v1/inference.pb-c.h"
#include "server/core/server.h"

typedef struct inference inference_t;
typedef struct inference_job inference_job_t;

/** The API a request came through: the `api` label of the inference metrics. */
typedef enum {
    INFERENCE_API_GRPC = 0,
    INFERENCE_API_OPENAI = 1,
} inference_api_t;
#define INFERENCE_API_COUNT 2

/** Most bytes in a ChatMessage role and in a stop string list entry (longer is
 * INVALID_ARGUMENT before anything is copied). */
#define INFERENCE_MAX_ROLE 32

/** What one drain produced for a job: the tokens and their text (whole UTF-8 characters only,
 * possibly empty while a character is incomplete); on the last delivery also the finish. A
 * Tokenize job gets one final delivery whose ids are the prompt's. */
typedef struct inference_out {
    const uint32_t *ids;
    size_t n_ids;
    const char *text;
    size_t len;
    int final;              /* 1: the job ends with this delivery (finish and usage set) */
    engine_finish_t finish; /* LENGTH, EOS or STOP (NONE for a Tokenize job) */
    uint32_t prompt_tokens, completion_tokens;
} inference_out_t;

/** Where a job's output goes (the front-end's side). After a final deliver or fail the job is
 * gone: the front-end must drop its pointer. */
typedef struct inference_sink {
    /** Output of one drain. Returns 1 when the front-end queued it with flow control of its own
     * and will call inference_job_consumed() once the client took it; 0 when the tokens count as
     * delivered now (or were dropped). *bytes gets what it queued (response_bytes_total). */
    int (*deliver)(void *arg, const inference_out_t *out, size_t *bytes);
    /** The job failed (final): status is a gRPC code, msg says why. */
    void (*fail)(void *arg, grpc_status_t status, const char *msg);
} inference_sink_t;

/** Longest request_id (bytes): every GenerateResponse repeats it. Longer is INVALID_ARGUMENT. */
#define INFERENCE_MAX_REQUEST_ID 128
/** Longest model name a request may give (bytes). */
#define INFERENCE_MAX_MODEL_NAME 256

/** Loads the model (--model or the built-in default), starts the engine and registers the
 * method rows with s. The endpoint stays NOT_SERVING until a first generation succeeds (the
 * prober's first canary). Returns 0 (*out set), -EINVAL (--model without --tokenizer),
 * -ENOMEM, or the engine's error (the model cannot be loaded, an unknown --chat-template); err
 * gets one line. */
int inference_new(inference_t **out, server_t *s, char *err, size_t errlen);
/** Stops the engine and frees (NULL is a no-op). After every call was cancelled and after the
 * prober that uses inference_probe_ops() is gone. */
void inference_free(inference_t *inf);
/** The engine (fault injection). */
engine_t *inference_engine(inference_t *inf);
/** The model as the engine describes it (the OpenAI glue's /v1/models). */
const engine_model_info_t *inference_model(const inference_t *inf);

/** Maps a GenerateRequest onto an engine request (pointers into m: m must outlive r's use; dispose
 * r with inference_request_dispose), the one mapping every API and the canary share. Returns 0,
 * -ENOENT when m names a model this server does not serve, -EINVAL for a bad message role (msg
 * says which), -ENOMEM. */
int inference_request_from_proto(const inference_t *inf, const Inferd__V1__GenerateRequest *m,
                                 engine_request_t *r, char *msg, size_t msglen);
/** Frees what inference_request_from_proto allocated for r (NULL-safe on a zeroed r). */
void inference_request_dispose(engine_request_t *r);

/** Starts a generation for a front-end: m goes through inference_request_from_proto and the
 * engine's admission queue; its output goes to sink (sink_arg). request_bytes counts in
 * request_bytes_total. Returns 0 (*out set), else the gRPC status of the refusal with msg
 * (counted in requests_total with its error_type): NOT_FOUND (another model), INVALID_ARGUMENT,
 * FAILED_PRECONDITION (chat without a template), RESOURCE_EXHAUSTED (admission queue full),
 * UNAVAILABLE (engine stopping). */
grpc_status_t inference_job_start(inference_t *inf, inference_api_t api,
                                  const Inferd__V1__GenerateRequest *m, size_t request_bytes,
                                  const inference_sink_t *sink, void *sink_arg,
                                  inference_job_t **out, char *msg, size_t msglen);
/** Starts a Tokenize (rendered and tokenized on the engine's driver, not here): one final
 * delivery with the prompt ids, or fail. Same returns as inference_job_start. */
grpc_status_t inference_tokenize_start(inference_t *inf, const Inferd__V1__TokenizeRequest *m,
                                       const inference_sink_t *sink, void *sink_arg,
                                       inference_job_t **out, char *msg, size_t msglen);
/** The client took n more tokens of j (the sink's deliver returned 1). */
void inference_job_consumed(inference_job_t *j, uint32_t n);
/** The client went away (or its deadline passed, when deadline): counted as cancelled (or as a
 * deadline error), the engine frees the slot at its next step; j is gone, no callback follows. */
void inference_job_cancel(inference_job_t *j, int deadline);

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
