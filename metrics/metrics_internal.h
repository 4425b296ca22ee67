/* Shared between the metrics sources; not a public header. */
#ifndef INFERD_METRICS_INTERNAL_H
#define INFERD_METRICS_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "metrics.h"

#define CACHELINE 64

struct metrics_series {
    /* Hot, written by any thread: first in the (cache-line aligned) allocation so series
     * updated by different threads do not share a line. Doubles are kept as their bits. */
    atomic_uint_least64_t ival;  /* counters: integer increments (one atomic add each) */
    atomic_uint_least64_t dbits; /* counters: fractional adds; gauges: the value; hist: sum */
    metrics_family_t *fam;
    _Atomic(metrics_series_t *) next; /* creation order; published with release */
    metrics_series_t *hnext;          /* hash chain, under fam->lock */
    uint64_t hash;
    char **values; /* raw label values (lookup key), fam->n_labels of them */
    char *labels;  /* escaped `a="x",b="y"` ready to print ("" without labels) */
    size_t labels_len;
    double created;                  /* unix seconds, for OpenMetrics _created */
    char created_text[32];           /* the same, formatted once (microseconds) */
    atomic_uint_least64_t buckets[]; /* histograms: n_bounds + 1 (+Inf) non-cumulative counts */
};

struct metrics_family {
    metrics_registry_t *reg;
    metrics_type_t type;
    char *name;    /* full exposed name: prefix + name (counters include _total) */
    char *om_name; /* OpenMetrics family name (counters without _total) */
    char *help;    /* as given */
    char **label_names;
    size_t n_labels;
    double *bounds; /* histograms */
    size_t n_bounds;
    char **le;            /* histograms: text form of each bound (then "+Inf") */
    char **le_om;         /* same in OpenMetrics canonical form ("1.0") */
    pthread_mutex_t lock; /* guards the hash table and appending */
    _Atomic(metrics_series_t *) head;
    metrics_series_t *tail;
    metrics_series_t **table;
    size_t table_size; /* power of two */
    size_t n_series;
};

typedef struct {
    metrics_collect_fn fn;
    void *arg;
} collector_t;

struct metrics_registry {
    char *prefix;
    pthread_mutex_t lock; /* families array, collectors, one render at a time */
    metrics_family_t **fams;
    size_t n_fams, cap_fams;
    collector_t *collectors;
    size_t n_collectors, cap_collectors;
    size_t last_render_len; /* sizing hint for the next render */
    void *process;          /* the process collector's state (plain malloc), or NULL */
};

#endif
