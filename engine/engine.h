/*
 * engine.h - the inference engine: model, tokenizer, sampler, continuous-batching
 * scheduler and CPU backend behind one API for the reactor.
 *
 * Threads. engine_new() starts `threads` worker threads: one drives the steps
 * (admission, batching, sampling, events), the others help with the matrix work.
 * Every function here except engine_new/engine_free is meant for ONE caller
 * thread (the reactor) and never blocks on compute: the submission and
 * completion queues are protected by short mutex sections only.
 *
 * Request lifetime (two phases).
 *   1. engine_submit() returns a request handle; the engine and the reactor each
 *      hold a reference.
 *   2. Every successfully submitted request produces exactly one final event
 *      (ENGINE_EV_FINISHED or ENGINE_EV_ERROR), the last event for that request.
 *      The engine drops its reference when engine_poll() hands out that final
 *      event; the engine's workers never touch the request after queueing it.
 *   3. The reactor drops its reference with engine_req_free(), either after it
 *      has seen the final event, or earlier (stream gone): an early
 *      engine_req_free() cancels the request and any further events for it
 *      (including the final one) are silently dropped by engine_poll().
 *   The memory is released when both references are gone. engine_cancel() may
 *   be called any time before engine_req_free(); it is idempotent.
 *
 * Slow readers: a request may have at most `max_backlog` produced tokens that
 * the reactor has not acknowledged. Above that the request is PAUSED: it is
 * skipped by the steps (the rest of the batch goes on) until the backlog drops;
 * engine_cancel() still ends it. A paused request keeps its batch slot and KV
 * cache only while no other work waits for a slot: otherwise it is PREEMPTED (its
 * slot and cache go to the waiting request) and, once its backlog drops and a
 * slot is free, recomputes its positions and goes on with identical output.
 * By default (manual_ack = 0) a token counts as acknowledged when engine_poll()
 * returns it. With manual_ack = 1 the reactor calls engine_req_consumed(req, n)
 * when n tokens have really been written to the client (e.g. when nghttp2 took
 * the DATA), so a client that stops reading pauses only its own request.
 *
 * Build integration (CMake): link the `inferd_engine` library. The build
 * generates a default model with tools/mkmodel; its paths are in the CMake cache
 * variables INFERD_DEFAULT_MODEL and INFERD_DEFAULT_TOKENIZER, and the target
 * `inferd_default_model` builds it (add_dependencies on it). Pass them to C as
 * e.g. target_compile_definitions(x PRIVATE
 *     INFERD_DEFAULT_MODEL="${INFERD_DEFAULT_MODEL}"
 *     INFERD_DEFAULT_TOKENIZER="${INFERD_DEFAULT_TOKENIZER}").
 */
#ifndef INFERD_ENGINE_H
#define INFERD_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct engine engine_t;
typedef struct engine_req engine_req_t;

/** Longest text piece carried by one event (bytes, not NUL-terminated in `len`): one token's
 *  decoded text (at most 1024 bytes, 3x that when invalid UTF-8 becomes U+FFFD) plus text a
 *  stop string held back (at most 255 bytes). */
#define ENGINE_TEXT_MAX 4096

/** Called from a worker thread after events were queued; at most once per step and
 *  not again until engine_poll() has run. Must be cheap and thread-safe (event_active). */
typedef void (*engine_notify_fn)(void *arg);

/** Engine configuration; zero fields take the documented defaults. */
typedef struct {
    const char *model_path;     /* GGUF file or llama2.c checkpoint (required; the magic decides) */
    const char *tokenizer_path; /* llama2.c tokenizer.bin, or a GGUF file whose tokenizer.ggml.*
                                   keys (and chat template) to use; NULL: the model's own
                                   (GGUF models); the file's magic decides */
    const char *model_name;     /* reported name; default: model file basename w/o ext */
    int threads;                /* worker threads; 0 = online cores */
    int max_batch;              /* sequences decoding together; 0 = 16 */
    int max_queued;             /* admission queue bound; 0 = 256 */
    int max_backlog;            /* unacknowledged tokens before a request pauses; 0 = 64 */
    int prefill_chunk;          /* prompt tokens processed per step (all requests); 0 = 64 */
    int manual_ack;             /* 1: reactor calls engine_req_consumed() (see top) */
    engine_notify_fn notify;    /* may be NULL (then poll on a timer) */
    void *notify_arg;
    const char *device;        /* "cpu" (NULL), "auto" (a usable GPU, else cpu), "cuda", "cuda:N" */
    int cuda_streams;          /* CUDA backend: streams, each owned by a host thread; 0 = 4 */
    const char *dtype;         /* CUDA backend weights: "fp32" (NULL) or "bf16" */
    const char *hugepages;     /* CPU backend: the weights copied into transparent huge pages at
                                  start: "auto" (NULL: when the kernel offers them), "on" (an
                                  error without them), "off" (mapped from the file) */
    const char *kv_cache_type; /* CPU backend's KV cache elements: "f32" (NULL) or "f16" (half
                                  the bytes; keys and values rounded to fp16 as written) */
    int ctx_size; /* KV positions per sequence; 0 = the model's context, at most 4096 */
    const char *chat_template; /* a template name (--chat-template) overriding the model's own
                                  tokenizer.chat_template; NULL: the model's, if recognized */
    int tokenize_in_engine;    /* 1: engine_submit only checks cheap bounds and copies the
                                  input; the driver renders and tokenizes it, and an input that
                                  then proves invalid ends with an ERROR event whose `invalid`
                                  says why (the reactor never tokenizes). 0: engine_submit
                                  tokenizes on the caller's thread (O(n log n), bounded) */
} engine_config_t;

/** Request flags. */
enum {
    ENGINE_REQ_CANARY = 1 << 0, /* canary/internal: kept for the server, scheduled like any other */
    ENGINE_REQ_TOKENIZE = 1 << 1 /* tokenize only (the Tokenize RPC): the driver renders and
                                    tokenizes the input ahead of the batch, never takes a slot,
                                    and ends it with FINISHED (prompt_tokens = the count; the
                                    ids from engine_req_prompt) or ERROR as a Generate would */
};

/** One chat message of a request. */
typedef struct {
    const char *role; /* "system", "user", "assistant" */
    const char *content;
} engine_chat_msg_t;

/** Most messages in one request, and most bytes in one stop string / stop strings. */
#define ENGINE_MAX_MESSAGES 1024
#define ENGINE_MAX_STOP_STRINGS 16
#define ENGINE_MAX_STOP_BYTES 256

/** A generation request; the engine copies everything it needs in engine_submit(). Exactly
 *  one input: token_ids (n_tokens > 0), prompt, or messages (n_messages > 0). */
typedef struct {
    const uint32_t *token_ids; /* used as-is when n_tokens > 0 */
    size_t n_tokens;
    const char *prompt; /* tokenized as the model says (BOS/EOS per add_bos/add_eos); special
                           tokens' texts are plain text unless parse_special */
    bool parse_special; /* prompt: match control tokens' texts (<|eot_id|>, ...) in it */
    const engine_chat_msg_t *messages; /* rendered with the chat template, then tokenized with
                                          special tokens matched */
    size_t n_messages;
    const char *const *stop_strs; /* generation stops when the output text contains one; that
                                     text is not returned; finish reason STOP */
    size_t n_stop_strs;
    float temperature;   /* 0 = greedy; must be >= 0 */
    float top_p;         /* in (0, 1]; 1 = off (proto3 "unset" 0 must be mapped to 1) */
    uint32_t top_k;      /* 0 = off */
    uint64_t seed;       /* per-request PRNG seed */
    uint32_t max_tokens; /* 0 = up to the context; > context is an error */
    const uint32_t *stop_ids;
    size_t n_stop;
    bool ignore_eos;
    unsigned flags; /* ENGINE_REQ_* */
    void *user;     /* opaque tag returned in events */
} engine_request_t;

/** Why engine_validate() rejected a request (for error_type labels). */
typedef enum {
    ENGINE_INVALID_NONE = 0,
    ENGINE_INVALID_EMPTY,        /* no token ids and no (or empty) prompt */
    ENGINE_INVALID_TOKEN,        /* token id >= vocab size */
    ENGINE_INVALID_PROMPT_LONG,  /* prompt does not leave room for one token */
    ENGINE_INVALID_TEMPERATURE,  /* temperature < 0 or not finite */
    ENGINE_INVALID_TOP_P,        /* top_p outside (0, 1] */
    ENGINE_INVALID_MAX_TOKENS,   /* prompt + max_tokens beyond the context */
    ENGINE_INVALID_STOP_IDS,     /* too many stop ids (> 64) */
    ENGINE_INVALID_STOP_STRINGS, /* too many, empty or too long stop strings */
    ENGINE_INVALID_INPUT,        /* more than one of token_ids, prompt, messages; a message
                                    without role or content; too many messages */
    ENGINE_INVALID_NO_TEMPLATE,  /* messages, but no chat template to render them with (the
                                    server answers FAILED_PRECONDITION) */
} engine_invalid_t;

/** Finish reasons; values equal inferd.v1.FinishReason. */
typedef enum {
    ENGINE_FINISH_NONE = 0,
    ENGINE_FINISH_LENGTH = 1, /* max_tokens or context length reached */
    ENGINE_FINISH_EOS = 2,    /* model produced an end-of-generation token (EOS, EOT,
                                 <|eot_id|>, <|im_end|>, ...; not emitted) */
    ENGINE_FINISH_STOP = 3,   /* a stop_token_id was produced, or the text reached a stop
                                 string (neither is emitted; text before a stop string is) */
    ENGINE_FINISH_CANCELLED = 4,
} engine_finish_t;

typedef enum {
    ENGINE_EV_TOKEN = 1, /* one new token and the text it completes */
    ENGINE_EV_FINISHED,  /* final: finish reason + usage (+ flushed text) */
    ENGINE_EV_ERROR,     /* final: the request failed; message in text */
} engine_ev_type_t;

/** One completion-queue event. */
typedef struct {
    engine_ev_type_t type;
    engine_req_t *req;          /* the handle engine_submit() returned */
    void *user;                 /* engine_request_t.user */
    uint32_t token;             /* TOKEN: token id */
    engine_finish_t finish;     /* FINISHED */
    engine_invalid_t invalid;   /* ERROR from a request the engine tokenized itself
                                   (tokenize_in_engine): why the input was rejected; NONE for
                                   engine failures */
    uint32_t prompt_tokens;     /* FINISHED */
    uint32_t completion_tokens; /* FINISHED (EOS/stop tokens not counted) */
    uint64_t t_ns;              /* CLOCK_MONOTONIC ns when the event was made */
    uint64_t submit_ns;         /* CLOCK_MONOTONIC ns of engine_submit() */
    uint64_t first_token_ns;    /* first token time (0 if none yet) */
    size_t len;                 /* bytes in text */
    char text[ENGINE_TEXT_MAX]; /* TOKEN: complete UTF-8 only (may be empty while a
                                   character is incomplete); ERROR: message; NUL-terminated */
} engine_event_t;

/** Model description (GetModelInfo). Strings live as long as the engine. */
typedef struct {
    const char *name;
    const char *device;       /* "cpu", "cuda:0" */
    const char *device_note;  /* how and why the device was chosen (for the start-up log) */
    const char *weights_note; /* how the weights are held: huge pages or mapped, and why */
    uint32_t vocab_size, max_seq_len, bos_id, eos_id;
    uint32_t dim, hidden_dim, n_layers, n_heads, n_kv_heads;
    uint64_t parameters;
    const char *architecture;       /* "llama", "qwen2", "qwen3" */
    const char *quantization;       /* the weights' type: "F32", "Q4_K_M", "mixed Q4_K/Q6_K", ... */
    uint32_t context_size;          /* KV positions per sequence in use (== max_seq_len) */
    uint32_t train_context;         /* the model's own context length */
    uint64_t kv_cache_bytes;        /* KV cache allocated at start-up (all sequences) */
    const char *kv_cache_type;      /* its elements: "f32" or "f16" */
    uint32_t kv_sequences;          /* sequences it holds (max_batch) */
    const char *tokenizer;          /* "llama" (SentencePiece-style) or "gpt2" (byte-level BPE) */
    const char *chat_template;      /* the template name chat requests use, or NULL (none) */
    const char *chat_template_note; /* why there is none, for the log and for errors */
    int32_t eot_id, unk_id, pad_id; /* -1 when the vocabulary has none */
    const uint32_t *eog_ids;        /* ids that end generation (ascending order not promised) */
    uint32_t n_eog;
    uint32_t max_token_bytes;   /* the vocabulary's longest token (the early prompt bound) */
    uint64_t weight_bytes;      /* bytes of every weight tensor (a shared output counted once) */
    uint64_t step_weight_bytes; /* weight bytes one decode step reads: all but the token
                                   embedding, which is read one row at a time unless it is
                                   also the output (the figure decode speed is bound by) */
} engine_model_info_t;

/** Counters for metrics/health; read with relaxed atomics, approximately consistent. */
typedef struct {
    uint64_t queued;            /* admitted to the queue, not yet in the batch */
    uint64_t inflight;          /* in the batch (including paused) */
    uint64_t paused;            /* paused by the backlog bound: in the batch, or preempted */
    uint64_t preempted;         /* paused requests that gave their slot to waiting work */
    uint64_t preemptions_total; /* times a paused request gave its slot up */
    uint64_t tokens_total;      /* tokens produced since start */
    uint64_t steps_total;       /* batched forward steps */
    uint64_t requests_total;    /* requests that produced a final event */
    uint64_t last_token_ns;     /* CLOCK_MONOTONIC ns of the last token produced (0 = never) */
    uint64_t last_step_ns;      /* CLOCK_MONOTONIC ns of the last step */
    uint64_t step_ns_total;     /* wall time in the backend's batched forward, summed */
    uint64_t step_ns_last;      /* wall time of the last batched forward */
} engine_stats_t;

/** Device figures for metrics; cached by the backend, so reading them never touches the
 *  device or blocks (safe on the reactor). */
typedef struct engine_device_stats {
    const char *device;         /* "cpu", "cuda:0" */
    int has_memory;             /* 1: the mem_* fields are filled (GPU backends) */
    uint64_t mem_used;          /* device memory in use (all processes), bytes */
    uint64_t mem_total;         /* device memory, bytes */
    uint64_t mem_backend;       /* bytes this engine allocated on the device */
    uint64_t gpu_steps;         /* lane steps timed on the device (events) */
    uint64_t gpu_step_ns_total; /* device time of those steps, summed */
    uint64_t gpu_step_ns_last;  /* device time of the last one */
} engine_device_stats_t;

/** Fault injection for health testing. */
typedef enum {
    ENGINE_FAULT_NONE = 0,
    ENGINE_FAULT_HANG,  /* workers stop stepping (requests stay in flight) */
    ENGINE_FAULT_ERROR, /* every request ends with an ERROR event */
    ENGINE_FAULT_STALL, /* requests stop after their first token and never finish */
    ENGINE_FAULT_SLOW,  /* arg ms sleep per step */
} engine_fault_t;

/** Fill `cfg` with defaults (all zero, NULL paths). */
void engine_config_init(engine_config_t *cfg);

/** Load the model and tokenizer and start the workers. Returns 0 and sets *out, or
 *  -EINVAL (bad config or file contents), -ENOENT/-EACCES/... (open failed),
 *  -ENOMEM; `err` (may be NULL) gets a human-readable reason. Fatal for start-up. */
int engine_new(engine_t **out, const engine_config_t *cfg, char *err, size_t errlen);

/** Stop the workers and free everything; pending requests are dropped without events.
 *  Outstanding request handles become invalid. NULL is a no-op. */
void engine_free(engine_t *e);

/** Model description. */
void engine_model_info(const engine_t *e, engine_model_info_t *out);

/** Set `r` to defaults: greedy, top_p 1, no limits. */
void engine_request_init(engine_request_t *r);

/** Check a request without submitting it. Returns 0, or -EINVAL with *why (may be NULL)
 *  and a message in msg (may be NULL). Tokenizes the prompt (bounded work). */
int engine_validate(const engine_t *e, const engine_request_t *r, engine_invalid_t *why, char *msg,
                    size_t msglen);

/** Validate and queue a request. Returns 0 and *out; -EINVAL (see engine_validate, *why
 *  and msg filled); -EAGAIN when the admission queue is full (RESOURCE_EXHAUSTED);
 *  -ESHUTDOWN when the engine is stopping; -ENOMEM. Never blocks. */
int engine_submit(engine_t *e, const engine_request_t *r, engine_req_t **out, engine_invalid_t *why,
                  char *msg, size_t msglen);

/** Ask the engine to end the request: a queued request leaves the admission queue at once (its
 *  place is free for the next engine_submit), one in the batch leaves it at the next step;
 *  either gets a final FINISHED(CANCELLED) event unless it already finished. Returns 0. */
int engine_cancel(engine_t *e, engine_req_t *req);

/** Drop the reactor's reference (see top). Cancels if not finished. NULL is a no-op. */
void engine_req_free(engine_t *e, engine_req_t *req);

/** manual_ack mode: the reactor delivered n more tokens of `req` to its client. */
void engine_req_consumed(engine_t *e, engine_req_t *req, uint32_t n);

/** The prompt ids a request starts from (*n of them), valid until engine_req_free; NULL until
 *  they are known: read them after the request's final event (ENGINE_REQ_TOKENIZE). */
const uint32_t *engine_req_prompt(const engine_req_t *req, size_t *n);

/** The user tag of a request. */
void *engine_req_user(const engine_req_t *req);

/** Drain up to `max` events in order. Returns the number written (0 if none). Call again
 *  while it returns `max`: the notify callback is re-armed by this call. */
int engine_poll(engine_t *e, engine_event_t *out, int max);

/** Tokenize text like a prompt (BOS prepended if bos). Returns the token count (may be
 *  larger than max: then only max were written), or -EINVAL (text NULL) / -ENOMEM. */
int engine_tokenize(const engine_t *e, const char *text, bool bos, uint32_t *out, size_t max);

/** The ids a request's input starts from, exactly as engine_submit would tokenize it (the
 *  Tokenize RPC): token_ids as given, the prompt, or the rendered messages. Returns 0 and a
 *  malloc'd array in *out (*n ids; free() it), or -EINVAL with *why and msg (as
 *  engine_validate), -ENOMEM. Runs on the caller's thread (bounded by the early bound). */
int engine_tokenize_request(const engine_t *e, const engine_request_t *r, uint32_t **out, size_t *n,
                            engine_invalid_t *why, char *msg, size_t msglen);

/** Render messages with the engine's chat template (generation prompt appended). Returns 0 and
 *  a malloc'd string, -EINVAL (ENGINE_INVALID_NO_TEMPLATE or a bad message; msg says which),
 *  -ENOMEM. */
int engine_render_chat(const engine_t *e, const engine_chat_msg_t *msgs, size_t n, char **out,
                       engine_invalid_t *why, char *msg, size_t msglen);

/** Read the counters. */
void engine_stats(const engine_t *e, engine_stats_t *out);

/** Device figures (see engine_device_stats_t); never blocks. */
void engine_device_stats(const engine_t *e, engine_device_stats_t *out);

/** Set a fault mode (cheap; checked once per step). Returns 0 or -EINVAL. */
int engine_set_fault(engine_t *e, engine_fault_t mode, uint32_t arg);

/** Text name of a finish reason ("length", "eos", "stop", "cancelled"). */
const char *engine_finish_name(engine_finish_t f);

/** Text name of a validation failure ("empty", "token_out_of_range", ...). */
const char *engine_invalid_name(engine_invalid_t w);

/** CLOCK_MONOTONIC in ns (the clock used in events and stats). */
uint64_t engine_now_ns(void);

#ifdef __cplusplus
}
#endif
#endif
