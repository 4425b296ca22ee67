/* Logging: readable lines or JSONL to stderr, per-module levels (DYN_LOG syntax),
 * never blocking the loop (bounded buffer, drops counted). Thread-safe. */
#ifndef INFERD_SERVER_LOG_H
#define INFERD_SERVER_LOG_H

#include <stdarg.h>
#include <stddef.h>

typedef enum { LOG_TRACE, LOG_DEBUG, LOG_INFO, LOG_WARN, LOG_ERROR, LOG_OFF } log_level_t;

/** 1 when a line at this level for this target (module name: "server", "health", ...) is kept. */
int log_enabled(log_level_t level, const char *target);
/** Writes one line. fields: NULL or "key", "value", ..., NULL pairs added as structured fields. */
void log_write(log_level_t level, const char *target, const char *const *fields, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#define LOGF(level, target, ...)                                                                   \
    do {                                                                                           \
        if (log_enabled(level, target))                                                            \
            log_write(level, target, NULL, __VA_ARGS__);                                           \
    } while (0)
#define log_error(target, ...) LOGF(LOG_ERROR, target, __VA_ARGS__)
#define log_warn(target, ...) LOGF(LOG_WARN, target, __VA_ARGS__)
#define log_info(target, ...) LOGF(LOG_INFO, target, __VA_ARGS__)
#define log_debug(target, ...) LOGF(LOG_DEBUG, target, __VA_ARGS__)
#define log_trace(target, ...) LOGF(LOG_TRACE, target, __VA_ARGS__)

/** Parses a DYN_LOG spec ("info,server=debug,health=trace") and applies it.
 * Returns 0 or -EINVAL (err says what is wrong). */
int log_configure(const char *spec, int jsonl, char *err, size_t errlen);
/** Lines dropped because stderr was too slow. */
unsigned long log_dropped(void);
/** Flushes what is buffered (at exit). */
void log_flush(void);

#endif
