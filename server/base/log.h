/* Logging: readable lines or JSONL to stderr, per-module levels (DYN_LOG syntax),
 * never blocking the loop (bounded buffer, drops counted). Thread-safe. */
#ifndef INFERD_SERVER_BASE_LOG_H
#define INFERD_SERVER_BASE_LOG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { LOG_TRACE, LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_OFF } log_level_t;

/** 1 when a line at this level for this target (module name: "server", "health", ...) is kept. */
int log_enabled(log_level_t level, const char *target);
/** Writes one line. fields: NULL or "key", "value", ..., NULL pairs added as structured fields
 * (a NULL key or value ends the list). Inside a call (log_set_context) the line also carries
 * request_id, trace_id and span_id unless fields name them. Strings may hold any bytes:
 * control characters are escaped and invalid UTF-8 is replaced, so one event stays one line. */
void log_write(log_level_t level, const char *target, const char *const *fields, const char *fmt,
               ...) __attribute__((format(printf, 4, 5)));

#define LOGF(level, target, ...)                                                                   \
    do {                                                                                           \
        if (log_enabled(level, target)) log_write(level, target, NULL, __VA_ARGS__);               \
    } while (0)
#define log_error(target, ...) LOGF(LOG_ERROR, target, __VA_ARGS__)
#define log_warn(target, ...) LOGF(LOG_WARN, target, __VA_ARGS__)
#define log_info(target, ...) LOGF(LOG_INFO, target, __VA_ARGS__)
#define log_debug(target, ...) LOGF(LOG_DEBUG, target, __VA_ARGS__)
#define log_trace(target, ...) LOGF(LOG_TRACE, target, __VA_ARGS__)

/** Parses a DYN_LOG spec ("info,server=debug,health=trace") and applies it. A MODULE=LEVEL
 * directive applies to the target MODULE and to targets below it ("server" covers
 * "server::h2" and "server.h2"); the longest matching module wins, a bare LEVEL sets the
 * default. Module names: [a-z0-9_:]. Call at start-up, before other threads log.
 * Returns 0 or -EINVAL (empty spec or directive, unknown level, bad module name; err says
 * what is wrong and nothing changes). */
int log_configure(const char *spec, int jsonl, char *err, size_t errlen);
/** Lines dropped because stderr was too slow. */
unsigned long log_dropped(void);
/** Waits (at most 2 s) until every queued line was written (at exit; tests). */
void log_flush(void);
/** Sends the lines to fd from now on (default 2, stderr) after flushing what is queued; for
 * tests that capture output. Returns the previous fd. */
int log_set_fd(int fd);

/** Sets the calling thread's call context, added to each line it writes until cleared with
 * NULLs (the strings are not copied: keep them alive until then). Any argument may be NULL. */
void log_set_context(const char *request_id, const char *trace_id, const char *span_id);

/** A per-second budget of lines (the access log's flood guard). Zero-initialize, then set
 * per_sec; not thread-safe by itself (the caller serializes). */
typedef struct log_ratelimit {
    unsigned per_sec;   /* lines allowed per window */
    int64_t window_ns;  /* start of the current one-second window */
    unsigned used;      /* lines taken in the current window */
    unsigned long held; /* lines refused since the last report */
} log_ratelimit_t;
/** Takes one line at time now_ns (CLOCK_MONOTONIC ns). Returns 1 when it may be written, 0 when
 * it is suppressed. When a new window starts and lines were suppressed in the past ones,
 * *suppressed gets their number (and the count restarts) so the caller can log one summary;
 * otherwise *suppressed is 0. */
int log_ratelimit_take(log_ratelimit_t *rl, int64_t now_ns, unsigned long *suppressed);

#endif
