/* Metrics: a Prometheus registry of counters, gauges and histograms with label sets, rendered
 * as text 0.0.4 or OpenMetrics 1.0.0. Families are registered at start-up (single thread);
 * series are created on demand (thread-safe, may lock) and their handles cached by callers;
 * updates are lock-free atomics callable from any thread (engine workers included).
 * Pure C11 + pthreads: no libevent, nghttp2 or zlib (the HTTP layer gzips). */
#ifndef INFERD_METRICS_METRICS_H
#define INFERD_METRICS_METRICS_H

#include <stddef.h>
#include <stdint.h>

typedef struct metrics_registry metrics_registry_t;
typedef struct metrics_family metrics_family_t; /* a named metric and its label names */
typedef struct metrics_series metrics_series_t; /* one label-value combination; handle is stable
                                                   for the registry's life, cache it */
typedef enum { METRICS_COUNTER, METRICS_GAUGE, METRICS_HISTOGRAM } metrics_type_t;
enum { METRICS_NO_PREFIX = 1 }; /* family flag: name is not prefixed (grpc_server_*, process_*) */

/* Most label names a family may have. */
#define METRICS_MAX_LABELS 16

/** Creates a registry whose prefixed families are named prefix+name ("inferd_", "" allowed;
 * NULL is ""). Returns 0 (*out set), -EINVAL when the prefix is not a valid metric-name prefix
 * ([a-zA-Z_:][a-zA-Z0-9_:]*), -ENOMEM; err (may be NULL with errlen 0) says why. */
int metrics_registry_new(metrics_registry_t **out, const char *prefix, char *err, size_t errlen);
/** Frees the registry, its families and series (NULL ok). No thread may still use a handle. */
void metrics_registry_free(metrics_registry_t *r);
/** 1 if prefix is a valid metric-name prefix ("" is valid), else 0 (for config validation). */
int metrics_prefix_valid(const char *prefix);
/** The registry's prefix. */
const char *metrics_registry_prefix(const metrics_registry_t *r);

/* Family registration happens at start-up on one thread, before the first render (a render
 * running concurrently with registration is serialized by the registry lock, but collectors
 * must not register families). label_names: NULL-terminated array, or NULL for none. Names are
 * checked against Prometheus rules and lint: counters must end in "_total", other types must
 * not; label names [a-zA-Z_][a-zA-Z0-9_]* not starting "__", unique, "le" not allowed on
 * histograms; help must be non-empty. A name whose exposed samples would collide with another
 * family's (foo_total vs foo, foo_count vs a histogram foo) counts as a duplicate.
 * Each returns 0 (*out set), -EINVAL (an invalid name, help, labels or buckets), -EEXIST (a
 * duplicate), -ENOMEM; err (may be NULL with errlen 0) says which. The registry owns the
 * family. */

/** Registers a counter family (name ends in "_total"). */
int metrics_counter_new(metrics_family_t **out, metrics_registry_t *r, const char *name,
                        const char *help, const char *const *label_names, unsigned flags, char *err,
                        size_t errlen);
/** Registers a gauge family. */
int metrics_gauge_new(metrics_family_t **out, metrics_registry_t *r, const char *name,
                      const char *help, const char *const *label_names, unsigned flags, char *err,
                      size_t errlen);
/** Registers a histogram family. buckets: strictly ascending finite upper bounds without +Inf
 * (copied); NULL/0 = metrics_default_buckets (latency, 50us..60s). */
int metrics_histogram_new(metrics_family_t **out, metrics_registry_t *r, const char *name,
                          const char *help, const char *const *label_names, const double *buckets,
                          size_t n_buckets, unsigned flags, char *err, size_t errlen);

/** The default latency buckets in seconds (50us..60s, roughly log-spaced); sets *n. */
const double *metrics_default_buckets(size_t *n);
/** Token-count buckets (1..131072, powers of two and 4x steps) for sequence-length histograms;
 * sets *n. */
const double *metrics_token_buckets(size_t *n);

/** The family's full exposed name (prefix applied). */
const char *metrics_family_name(const metrics_family_t *f);
/** The family's type. */
metrics_type_t metrics_family_type(const metrics_family_t *f);
/** How many label names the family has. */
size_t metrics_family_label_count(const metrics_family_t *f);
/** The first family registered under this full exposed name, or NULL. Start-up/tests only. */
metrics_family_t *metrics_family_find(metrics_registry_t *r, const char *full_name);

/** Gets or creates the series for these label values (an array of as many values as the family
 * has label names, each non-NULL, any bytes: invalid UTF-8 is exposed as U+FFFD; NULL for a
 * family without labels). Thread-safe (takes the family's lock — cache the handle; the hot path
 * is the update functions). Returns the same handle for the same values. Returns NULL on
 * allocation failure, a NULL family, or a NULL value where one is required. */
metrics_series_t *metrics_series(metrics_family_t *f, const char *const *label_values);

/* Hot-path updates: lock-free (atomics), callable from any thread; a NULL series is a no-op,
 * as is an update that does not fit the series' type. */

/** Adds 1 to a counter or gauge (a counter increment is one atomic add). */
void metrics_inc(metrics_series_t *s);
/** Subtracts 1 from a gauge. */
void metrics_dec(metrics_series_t *s);
/** Adds v to a counter (v >= 0; negative or NaN is ignored) or a gauge (any v). */
void metrics_add(metrics_series_t *s, double v);
/** Sets a gauge; also sets a counter whose value a collector copies from elsewhere (such a
 * counter must not also be incremented). */
void metrics_set(metrics_series_t *s, double v);
/** Records one observation in a histogram (v <= bound goes in that bound's bucket; NaN goes in
 * +Inf and makes the sum NaN, as in client_golang). */
void metrics_observe(metrics_series_t *s, double v);
/** Counters/gauges: the current value; histograms: the observation count; NULL: 0. */
double metrics_value(const metrics_series_t *s);
/** Histograms: the number of observations (0 for other types). */
uint64_t metrics_histogram_count(const metrics_series_t *s);
/** Histograms: the sum of observations (0 for other types). */
double metrics_histogram_sum(const metrics_series_t *s);
/** Histograms: non-cumulative count of bucket i (i == number of bounds is the +Inf bucket). */
uint64_t metrics_histogram_bucket(const metrics_series_t *s, size_t i);

/** A callback evaluated at scrape time, before rendering, to fill gauges/counters (process
 * collector, uptime, values read from other modules). Runs on the rendering thread with the
 * registry lock held: it may call metrics_series and the update functions, not register
 * families or render. */
typedef void (*metrics_collect_fn)(void *arg);
/** Adds a collector (called in the order added). Returns 0, -EINVAL (NULL r/fn), -ENOMEM. */
int metrics_add_collector(metrics_registry_t *r, metrics_collect_fn fn, void *arg);

typedef enum { METRICS_FORMAT_TEXT, METRICS_FORMAT_OPENMETRICS } metrics_format_t;

/** The format an HTTP Accept header asks for (NULL or empty = text 0.0.4): OpenMetrics 1.0.0
 * when application/openmetrics-text has the highest q-value (ties: the more specific range,
 * then the earlier one), otherwise text 0.0.4; never fails (no 406). */
metrics_format_t metrics_negotiate(const char *accept);
/** The Content-Type for a format (a static string). */
const char *metrics_content_type(metrics_format_t fmt);

/** Runs the collectors and renders every family with at least one series, in registration
 * order, series in creation order. Format chosen from the Accept header by metrics_negotiate.
 * *out is a malloc'd buffer (NUL-terminated, *out_len excludes the NUL) the caller frees;
 * *content_type (may be NULL) gets "text/plain; version=0.0.4; charset=utf-8" or
 * "application/openmetrics-text; version=1.0.0; charset=utf-8". Returns 0 or -ENOMEM (*out is
 * then NULL); -EINVAL on NULL r/out/out_len. */
int metrics_render(metrics_registry_t *r, const char *accept, char **out, size_t *out_len,
                   const char **content_type);
/** metrics_render with an explicit format. Same returns. */
int metrics_render_format(metrics_registry_t *r, metrics_format_t fmt, char **out, size_t *out_len);

/** Receives one chunk of a streamed exposition; returns 0, or non-zero to stop the render
 * (a negative errno is passed back by metrics_render_stream, anything else as -EIO). */
typedef int (*metrics_write_fn)(void *arg, const char *data, size_t len);
/** Renders like metrics_render_format but hands the output to write() in chunks of about
 * 64 KiB instead of building one buffer (e.g. straight into an evbuffer or a deflate stream:
 * no allocation the size of the exposition, no page faults). Returns 0, -EINVAL, -ENOMEM, or
 * write's error. */
int metrics_render_stream(metrics_registry_t *r, metrics_format_t fmt, metrics_write_fn write,
                          void *arg);

/** Adds the standard unprefixed process_* collector: process_cpu_seconds_total,
 * process_resident_memory_bytes, process_virtual_memory_bytes, process_open_fds,
 * process_max_fds, process_start_time_seconds (from /proc/self; values stay 0 where /proc is
 * unreadable). Returns 0, -EEXIST if already added, -ENOMEM. */
int metrics_process_collector_add(metrics_registry_t *r);

#endif
