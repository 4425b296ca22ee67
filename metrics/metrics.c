/* Registry, families, series and the lock-free update path. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "metrics_internal.h"
#include "number.h"

static const double default_buckets[] = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                         0.01,    0.025,  0.05,    0.1,    0.25,  0.5,    1,
                                         2.5,     5,      10,      30,     60};
static const double token_buckets[] = {1,    4,    16,   64,    128,   256,   512,   1024,
                                       2048, 4096, 8192, 16384, 32768, 65536, 131072};

const double *metrics_default_buckets(size_t *n)
{
    if (n) *n = sizeof default_buckets / sizeof default_buckets[0];
    return default_buckets;
}

const double *metrics_token_buckets(size_t *n)
{
    if (n) *n = sizeof token_buckets / sizeof token_buckets[0];
    return token_buckets;
}

/* ---- doubles kept as bits in 64-bit atomics ---- */

static inline uint64_t d2u(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static inline double u2d(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

static inline void atomic_add_double(atomic_uint_least64_t *a, double v)
{
    uint64_t old = atomic_load_explicit(a, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(a, &old, d2u(u2d(old) + v), memory_order_relaxed,
                                                  memory_order_relaxed))
        ;
}

/* ---- names ---- */

static int name_start(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
}

static int name_char(int c)
{
    return name_start(c) || (c >= '0' && c <= '9');
}

int metrics_prefix_valid(const char *prefix)
{
    if (!prefix) return 0;
    if (!*prefix) return 1;
    if (!name_start((unsigned char)prefix[0])) return 0;
    for (const char *p = prefix + 1; *p; p++)
        if (!name_char((unsigned char)*p)) return 0;
    return 1;
}

static int metric_name_valid(const char *name)
{
    return name && *name && metrics_prefix_valid(name);
}

static int label_name_valid(const char *name)
{
    if (!name || !*name) return 0;
    if (name[0] == '_' && name[1] == '_') /* reserved for Prometheus */
        return 0;
    for (const char *p = name; *p; p++) {
        int c = (unsigned char)*p;
        if (c == ':' || !name_char(c) || (p == name && c >= '0' && c <= '9')) return 0;
    }
    return 1;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && memcmp(s + n - m, suffix, m) == 0;
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);
    if (d) memcpy(d, s, n);
    return d;
}

static char *concat(const char *a, const char *b)
{
    size_t n = strlen(a), m = strlen(b);
    char *d = malloc(n + m + 1);
    if (d) {
        memcpy(d, a, n);
        memcpy(d + n, b, m + 1);
    }
    return d;
}

/* The names a family's samples (and OpenMetrics family line) use; collisions between two
 * families' sets would make the exposition ambiguous. */
#define MAX_EXPOSED 5
static size_t exposed_names(metrics_type_t type, const char *name, char out[MAX_EXPOSED][256])
{
    size_t n = 0, len = strlen(name);
    if (len > 200) len = 200;
    if (type == METRICS_COUNTER) {
        size_t base = len - 6; /* without _total */
        snprintf(out[n++], 256, "%.*s", (int)len, name);
        snprintf(out[n++], 256, "%.*s", (int)base, name);
        snprintf(out[n++], 256, "%.*s_created", (int)base, name);
    } else if (type == METRICS_GAUGE) {
        snprintf(out[n++], 256, "%.*s", (int)len, name);
    } else {
        snprintf(out[n++], 256, "%.*s", (int)len, name);
        snprintf(out[n++], 256, "%.*s_bucket", (int)len, name);
        snprintf(out[n++], 256, "%.*s_sum", (int)len, name);
        snprintf(out[n++], 256, "%.*s_count", (int)len, name);
        snprintf(out[n++], 256, "%.*s_created", (int)len, name);
    }
    return n;
}

static int collides(metrics_registry_t *r, metrics_type_t type, const char *name)
{
    char mine[MAX_EXPOSED][256], theirs[MAX_EXPOSED][256];
    size_t nm = exposed_names(type, name, mine);
    for (size_t i = 0; i < r->n_fams; i++) {
        metrics_family_t *f = r->fams[i];
        size_t nt = exposed_names(f->type, f->name, theirs);
        for (size_t a = 0; a < nm; a++)
            for (size_t b = 0; b < nt; b++)
                if (strcmp(mine[a], theirs[b]) == 0) return 1;
    }
    return 0;
}

/* ---- registry ---- */

int metrics_registry_new(metrics_registry_t **out, const char *prefix, char *err, size_t errlen)
{
    *out = NULL;
    if (!prefix) prefix = "";
    if (!metrics_prefix_valid(prefix)) {
        snprintf(err, errlen,
                 "invalid metric name prefix '%.100s': expected [a-zA-Z_:][a-zA-Z0-9_:]* or empty",
                 prefix);
        return -EINVAL;
    }
    metrics_registry_t *r = calloc(1, sizeof *r);
    if (!r) goto oom;
    r->prefix = xstrdup(prefix);
    if (!r->prefix) goto oom_r;
    if (pthread_mutex_init(&r->lock, NULL) != 0) goto oom_prefix;
    *out = r;
    return 0;

oom_prefix:
    free(r->prefix);
oom_r:
    free(r);
oom:
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
}

const char *metrics_registry_prefix(const metrics_registry_t *r)
{
    return r ? r->prefix : NULL;
}

static void series_free(metrics_series_t *s, size_t n_labels)
{
    if (!s) return;
    if (s->values)
        for (size_t i = 0; i < n_labels; i++)
            free(s->values[i]);
    free(s->values);
    free(s->labels);
    free(s);
}

static void family_free(metrics_family_t *f)
{
    if (!f) return;
    metrics_series_t *s = atomic_load_explicit(&f->head, memory_order_relaxed);
    while (s) {
        metrics_series_t *next = atomic_load_explicit(&s->next, memory_order_relaxed);
        series_free(s, f->n_labels);
        s = next;
    }
    free(f->table);
    pthread_mutex_destroy(&f->lock);
    if (f->label_names)
        for (size_t i = 0; i < f->n_labels; i++)
            free(f->label_names[i]);
    free(f->label_names);
    if (f->le)
        for (size_t i = 0; i <= f->n_bounds; i++)
            free(f->le[i]);
    if (f->le_om)
        for (size_t i = 0; i <= f->n_bounds; i++)
            free(f->le_om[i]);
    free(f->le);
    free(f->le_om);
    free(f->bounds);
    free(f->name);
    free(f->om_name);
    free(f->help);
    free(f);
}

void metrics_registry_free(metrics_registry_t *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->n_fams; i++)
        family_free(r->fams[i]);
    free(r->fams);
    free(r->collectors);
    free(r->process);
    pthread_mutex_destroy(&r->lock);
    free(r->prefix);
    free(r);
}

int metrics_add_collector(metrics_registry_t *r, metrics_collect_fn fn, void *arg)
{
    if (!r || !fn) return -EINVAL;
    int rc = 0;
    pthread_mutex_lock(&r->lock);
    if (r->n_collectors == r->cap_collectors) {
        size_t cap = r->cap_collectors ? r->cap_collectors * 2 : 4;
        collector_t *c = realloc(r->collectors, cap * sizeof *c);
        if (!c) {
            rc = -ENOMEM;
            goto out;
        }
        r->collectors = c;
        r->cap_collectors = cap;
    }
    r->collectors[r->n_collectors].fn = fn;
    r->collectors[r->n_collectors].arg = arg;
    r->n_collectors++;
out:
    pthread_mutex_unlock(&r->lock);
    return rc;
}

/* ---- families ---- */

static char *le_text(double b, int om)
{
    char buf[48];
    size_t n = metrics_fmt_double(buf, b);
    /* OpenMetrics wants canonical numbers in le: integers as "1.0". */
    if (om && !strpbrk(buf, ".eEnN")) memcpy(buf + n, ".0", 3);
    return xstrdup(buf);
}

static int family_new(metrics_family_t **out, metrics_registry_t *r, metrics_type_t type,
                      const char *name, const char *help, const char *const *label_names,
                      const double *buckets, size_t n_buckets, unsigned flags, char *err,
                      size_t errlen)
{
    *out = NULL;
    const char *shown = name ? name : "(null)";
    if (!r) {
        snprintf(err, errlen, "metric %.100s: no registry", shown);
        return -EINVAL;
    }
    if (!metric_name_valid(name)) {
        snprintf(err, errlen, "invalid metric name '%.100s': expected [a-zA-Z_:][a-zA-Z0-9_:]*",
                 shown);
        return -EINVAL;
    }
    if (!help || !*help) {
        snprintf(err, errlen, "metric %.100s: help text is required", name);
        return -EINVAL;
    }

    size_t n_labels = 0;
    if (label_names) {
        for (; label_names[n_labels]; n_labels++) {
            const char *ln = label_names[n_labels];
            int bad = n_labels >= METRICS_MAX_LABELS || !label_name_valid(ln) ||
                      (type == METRICS_HISTOGRAM && strcmp(ln, "le") == 0);
            for (size_t j = 0; j < n_labels && !bad; j++)
                bad = strcmp(label_names[j], ln) == 0;
            if (bad) {
                snprintf(err, errlen,
                         "metric %.100s: invalid, reserved, repeated or too many labels at "
                         "'%.60s'",
                         name, ln);
                return -EINVAL;
            }
        }
    }
    if (type == METRICS_HISTOGRAM) {
        if (!buckets || n_buckets == 0) buckets = metrics_default_buckets(&n_buckets);
        for (size_t i = 0; i < n_buckets; i++) {
            if (!isfinite(buckets[i]) || (i > 0 && !(buckets[i] > buckets[i - 1]))) {
                snprintf(err, errlen,
                         "metric %.100s: buckets must be finite and strictly ascending", name);
                return -EINVAL;
            }
        }
    }

    int rc = -ENOMEM;
    metrics_family_t *f = calloc(1, sizeof *f);
    if (!f) goto oom;
    if (pthread_mutex_init(&f->lock, NULL) != 0) {
        free(f);
        f = NULL;
        goto oom;
    }
    f->reg = r;
    f->type = type;
    f->name = concat((flags & METRICS_NO_PREFIX) ? "" : r->prefix, name);
    f->help = xstrdup(help);
    if (!f->name || !f->help) goto fail_oom;
    size_t len = strlen(f->name);
    rc = -EINVAL;
    if (len > 200) {
        snprintf(err, errlen, "metric %.100s...: name longer than 200 bytes", f->name);
        goto fail;
    }
    /* Prometheus conventions (promtool lint): counters end in _total, nothing else does. */
    if (type == METRICS_COUNTER) {
        if (len <= 6 || !ends_with(f->name, "_total")) {
            snprintf(err, errlen, "counter %s: the name must end in _total", f->name);
            goto fail;
        }
        f->om_name = malloc(len - 6 + 1);
        if (!f->om_name) goto fail_oom;
        memcpy(f->om_name, f->name, len - 6);
        f->om_name[len - 6] = 0;
    } else {
        if (ends_with(f->name, "_total") || ends_with(f->name, "_created") ||
            (type == METRICS_HISTOGRAM &&
             (ends_with(f->name, "_bucket") || ends_with(f->name, "_sum") ||
              ends_with(f->name, "_count")))) {
            snprintf(err, errlen, "metric %s: the name ends in a suffix its type reserves",
                     f->name);
            goto fail;
        }
        f->om_name = xstrdup(f->name);
        if (!f->om_name) goto fail_oom;
    }
    if (n_labels) {
        f->label_names = calloc(n_labels, sizeof *f->label_names);
        if (!f->label_names) goto fail_oom;
        f->n_labels = n_labels;
        for (size_t i = 0; i < n_labels; i++)
            if (!(f->label_names[i] = xstrdup(label_names[i]))) goto fail_oom;
    }
    if (type == METRICS_HISTOGRAM) {
        f->bounds = malloc(n_buckets * sizeof *f->bounds);
        f->le = calloc(n_buckets + 1, sizeof *f->le);
        f->le_om = calloc(n_buckets + 1, sizeof *f->le_om);
        if (!f->bounds || !f->le || !f->le_om) goto fail_oom;
        f->n_bounds = n_buckets;
        memcpy(f->bounds, buckets, n_buckets * sizeof *f->bounds);
        for (size_t i = 0; i < n_buckets; i++)
            if (!(f->le[i] = le_text(buckets[i], 0)) || !(f->le_om[i] = le_text(buckets[i], 1)))
                goto fail_oom;
        if (!(f->le[n_buckets] = xstrdup("+Inf")) || !(f->le_om[n_buckets] = xstrdup("+Inf")))
            goto fail_oom;
    }

    pthread_mutex_lock(&r->lock);
    if (collides(r, type, f->name)) {
        pthread_mutex_unlock(&r->lock);
        snprintf(err, errlen,
                 "metric %s is already registered, or its samples collide with "
                 "another family's",
                 f->name);
        rc = -EEXIST;
        goto fail;
    }
    if (r->n_fams == r->cap_fams) {
        size_t cap = r->cap_fams ? r->cap_fams * 2 : 32;
        metrics_family_t **fams = realloc(r->fams, cap * sizeof *fams);
        if (!fams) {
            pthread_mutex_unlock(&r->lock);
            goto fail_oom;
        }
        r->fams = fams;
        r->cap_fams = cap;
    }
    r->fams[r->n_fams++] = f;
    pthread_mutex_unlock(&r->lock);

    /* A family without labels has exactly one series: create it now so it is exposed (as 0)
     * from the first scrape, as client libraries do. */
    if (n_labels == 0) (void)metrics_series(f, NULL);
    *out = f;
    return 0;

fail_oom:
    rc = -ENOMEM;
oom:
    snprintf(err, errlen, "out of memory");
fail:
    family_free(f);
    return rc;
}

int metrics_counter_new(metrics_family_t **out, metrics_registry_t *r, const char *name,
                        const char *help, const char *const *label_names, unsigned flags, char *err,
                        size_t errlen)
{
    return family_new(out, r, METRICS_COUNTER, name, help, label_names, NULL, 0, flags, err,
                      errlen);
}

int metrics_gauge_new(metrics_family_t **out, metrics_registry_t *r, const char *name,
                      const char *help, const char *const *label_names, unsigned flags, char *err,
                      size_t errlen)
{
    return family_new(out, r, METRICS_GAUGE, name, help, label_names, NULL, 0, flags, err, errlen);
}

int metrics_histogram_new(metrics_family_t **out, metrics_registry_t *r, const char *name,
                          const char *help, const char *const *label_names, const double *buckets,
                          size_t n_buckets, unsigned flags, char *err, size_t errlen)
{
    return family_new(out, r, METRICS_HISTOGRAM, name, help, label_names, buckets, n_buckets, flags,
                      err, errlen);
}

const char *metrics_family_name(const metrics_family_t *f)
{
    return f ? f->name : NULL;
}

metrics_type_t metrics_family_type(const metrics_family_t *f)
{
    return f->type;
}

size_t metrics_family_label_count(const metrics_family_t *f)
{
    return f ? f->n_labels : 0;
}

metrics_family_t *metrics_family_find(metrics_registry_t *r, const char *full_name)
{
    if (!r || !full_name) return NULL;
    metrics_family_t *found = NULL;
    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < r->n_fams && !found; i++)
        if (strcmp(r->fams[i]->name, full_name) == 0) found = r->fams[i];
    pthread_mutex_unlock(&r->lock);
    return found;
}

/* ---- series ---- */

static uint64_t hash_values(const char *const *values, size_t n)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        for (const unsigned char *p = (const unsigned char *)values[i]; *p; p++) {
            h ^= *p;
            h *= 1099511628211ULL;
        }
        h ^= 0xff; /* separator: ("a","bc") != ("ab","c") */
        h *= 1099511628211ULL;
    }
    return h;
}

static int values_equal(const metrics_series_t *s, const char *const *values, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(s->values[i], values[i]) != 0) return 0;
    return 1;
}

/* Length of the valid UTF-8 sequence at p (1..4), or 0 if invalid. */
static size_t utf8_len(const unsigned char *p)
{
    unsigned c = p[0];
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf) return (p[1] & 0xc0) == 0x80 ? 2 : 0;
    if (c >= 0xe0 && c <= 0xef) {
        if ((p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80) return 0;
        if ((c == 0xe0 && p[1] < 0xa0) || (c == 0xed && p[1] > 0x9f)) /* overlong, surrogate */
            return 0;
        return 3;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        if ((p[1] & 0xc0) != 0x80 || (p[2] & 0xc0) != 0x80 || (p[3] & 0xc0) != 0x80) return 0;
        if ((c == 0xf0 && p[1] < 0x90) || (c == 0xf4 && p[1] > 0x8f)) return 0;
        return 4;
    }
    return 0;
}

/* Appends the escaped label value (\\, \", \n; invalid UTF-8 as U+FFFD) to dst, which holds at
 * least 3 * strlen(v) + 1 bytes. Returns the bytes written. */
static size_t escape_label_value(char *dst, const char *v)
{
    char *d = dst;
    const unsigned char *p = (const unsigned char *)v;
    while (*p) {
        if (*p == '\\' || *p == '"') {
            *d++ = '\\';
            *d++ = (char)*p++;
        } else if (*p == '\n') {
            *d++ = '\\';
            *d++ = 'n';
            p++;
        } else {
            size_t n = utf8_len(p);
            if (n == 0) {
                memcpy(d, "\xef\xbf\xbd", 3);
                d += 3;
                p++;
            } else {
                memcpy(d, p, n);
                d += n;
                p += n;
            }
        }
    }
    return (size_t)(d - dst);
}

static char *render_labels(const metrics_family_t *f, const char *const *values, size_t *len)
{
    size_t cap = 1;
    for (size_t i = 0; i < f->n_labels; i++)
        cap += strlen(f->label_names[i]) + 4 + 3 * strlen(values[i]);
    char *buf = malloc(cap), *d = buf;
    if (!buf) return NULL;
    for (size_t i = 0; i < f->n_labels; i++) {
        if (i) *d++ = ',';
        size_t n = strlen(f->label_names[i]);
        memcpy(d, f->label_names[i], n);
        d += n;
        *d++ = '=';
        *d++ = '"';
        d += escape_label_value(d, values[i]);
        *d++ = '"';
    }
    *d = 0;
    *len = (size_t)(d - buf);
    return buf;
}

static double now_unix(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static metrics_series_t *series_new(metrics_family_t *f, const char *const *values, uint64_t hash)
{
    size_t nb = f->type == METRICS_HISTOGRAM ? f->n_bounds + 1 : 0;
    size_t size = sizeof(metrics_series_t) + nb * sizeof(atomic_uint_least64_t);
    size = (size + CACHELINE - 1) / CACHELINE * CACHELINE;
    metrics_series_t *s = aligned_alloc(CACHELINE, size);
    if (!s) return NULL;
    memset(s, 0, size);
    atomic_init(&s->ival, 0);
    atomic_init(&s->dbits, d2u(0.0));
    for (size_t i = 0; i < nb; i++)
        atomic_init(&s->buckets[i], 0);
    atomic_init(&s->next, NULL);
    s->fam = f;
    s->hash = hash;
    s->created = now_unix();
    snprintf(s->created_text, sizeof s->created_text, "%.6f", s->created);
    if (f->n_labels) {
        s->values = calloc(f->n_labels, sizeof *s->values);
        if (!s->values) goto fail;
        for (size_t i = 0; i < f->n_labels; i++)
            if (!(s->values[i] = xstrdup(values[i]))) goto fail;
    }
    s->labels = render_labels(f, values, &s->labels_len);
    if (!s->labels) goto fail;
    return s;

fail:
    series_free(s, f->n_labels);
    return NULL;
}

static int table_grow(metrics_family_t *f)
{
    size_t size = f->table_size ? f->table_size * 2 : 16;
    metrics_series_t **t = calloc(size, sizeof *t);
    if (!t) return -ENOMEM;
    for (size_t i = 0; i < f->table_size; i++) {
        metrics_series_t *s = f->table[i];
        while (s) {
            metrics_series_t *next = s->hnext;
            size_t b = s->hash & (size - 1);
            s->hnext = t[b];
            t[b] = s;
            s = next;
        }
    }
    free(f->table);
    f->table = t;
    f->table_size = size;
    return 0;
}

metrics_series_t *metrics_series(metrics_family_t *f, const char *const *label_values)
{
    if (!f) return NULL;
    if (f->n_labels) {
        if (!label_values) return NULL;
        for (size_t i = 0; i < f->n_labels; i++)
            if (!label_values[i]) return NULL;
    }
    uint64_t h = hash_values(label_values, f->n_labels);
    metrics_series_t *s = NULL;

    pthread_mutex_lock(&f->lock);
    if (f->table_size)
        for (s = f->table[h & (f->table_size - 1)]; s; s = s->hnext)
            if (s->hash == h && values_equal(s, label_values, f->n_labels)) goto out;
    if (f->n_series + 1 > f->table_size / 4 * 3 && table_grow(f) != 0) goto out; /* s is NULL */
    s = series_new(f, label_values, h);
    if (!s) goto out;
    size_t b = h & (f->table_size - 1);
    s->hnext = f->table[b];
    f->table[b] = s;
    f->n_series++;
    /* Publish in creation order; renders walk the list without the lock. */
    if (f->tail)
        atomic_store_explicit(&f->tail->next, s, memory_order_release);
    else
        atomic_store_explicit(&f->head, s, memory_order_release);
    f->tail = s;
out:
    pthread_mutex_unlock(&f->lock);
    return s;
}

/* ---- updates ---- */

void metrics_inc(metrics_series_t *s)
{
    if (!s) return;
    if (s->fam->type == METRICS_COUNTER)
        atomic_fetch_add_explicit(&s->ival, 1, memory_order_relaxed);
    else if (s->fam->type == METRICS_GAUGE)
        atomic_add_double(&s->dbits, 1.0);
}

void metrics_dec(metrics_series_t *s)
{
    if (s && s->fam->type == METRICS_GAUGE) atomic_add_double(&s->dbits, -1.0);
}

void metrics_add(metrics_series_t *s, double v)
{
    if (!s) return;
    if (s->fam->type == METRICS_COUNTER) {
        if (!(v >= 0)) /* negative or NaN */
            return;
        if (v == 1.0)
            atomic_fetch_add_explicit(&s->ival, 1, memory_order_relaxed);
        else
            atomic_add_double(&s->dbits, v);
    } else if (s->fam->type == METRICS_GAUGE) {
        atomic_add_double(&s->dbits, v);
    }
}

void metrics_set(metrics_series_t *s, double v)
{
    if (!s) return;
    if (s->fam->type == METRICS_GAUGE) {
        atomic_store_explicit(&s->dbits, d2u(v), memory_order_relaxed);
    } else if (s->fam->type == METRICS_COUNTER) {
        atomic_store_explicit(&s->ival, 0, memory_order_relaxed);
        atomic_store_explicit(&s->dbits, d2u(v), memory_order_relaxed);
    }
}

void metrics_observe(metrics_series_t *s, double v)
{
    if (!s || s->fam->type != METRICS_HISTOGRAM) return;
    const metrics_family_t *f = s->fam;
    /* First bound >= v; NaN compares false everywhere and lands in +Inf. */
    size_t lo = 0, hi = f->n_bounds;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (v <= f->bounds[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    if (isnan(v)) lo = f->n_bounds;
    atomic_add_double(&s->dbits, v);
    atomic_fetch_add_explicit(&s->buckets[lo], 1, memory_order_relaxed);
}

double metrics_value(const metrics_series_t *s)
{
    if (!s) return 0;
    switch (s->fam->type) {
    case METRICS_COUNTER:
        return (double)atomic_load_explicit(&s->ival, memory_order_relaxed) +
               u2d(atomic_load_explicit(&s->dbits, memory_order_relaxed));
    case METRICS_GAUGE:
        return u2d(atomic_load_explicit(&s->dbits, memory_order_relaxed));
    case METRICS_HISTOGRAM:
        return (double)metrics_histogram_count(s);
    }
    return 0;
}

uint64_t metrics_histogram_count(const metrics_series_t *s)
{
    if (!s || s->fam->type != METRICS_HISTOGRAM) return 0;
    uint64_t n = 0;
    for (size_t i = 0; i <= s->fam->n_bounds; i++)
        n += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
    return n;
}

double metrics_histogram_sum(const metrics_series_t *s)
{
    if (!s || s->fam->type != METRICS_HISTOGRAM) return 0;
    return u2d(atomic_load_explicit(&s->dbits, memory_order_relaxed));
}

uint64_t metrics_histogram_bucket(const metrics_series_t *s, size_t i)
{
    if (!s || s->fam->type != METRICS_HISTOGRAM || i > s->fam->n_bounds) return 0;
    return atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
}
