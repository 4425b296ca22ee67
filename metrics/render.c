/* Exposition: Prometheus text 0.0.4 and OpenMetrics 1.0.0, and Accept negotiation. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "metrics_internal.h"
#include "number.h"

static const char ct_text[] = "text/plain; version=0.0.4; charset=utf-8";
static const char ct_om[] = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const char *metrics_content_type(metrics_format_t fmt)
{
    return fmt == METRICS_FORMAT_OPENMETRICS ? ct_om : ct_text;
}

/* ---- output buffer ---- */

/* One buffer that either grows to hold the whole exposition, or (streaming: sink set) is
 * handed to the sink whenever the next piece would not fit and then reused. */
typedef struct {
    char *p;
    size_t len, cap;
    int oom; /* sticky: out of memory, or the sink failed (err) */
    int err;
    metrics_write_fn sink;
    void *sink_arg;
} buf_t;

static int buf_flush(buf_t *b)
{
    if (b->oom) return -1;
    if (b->len) {
        int rc = b->sink(b->sink_arg, b->p, b->len);
        if (rc != 0) {
            b->oom = 1;
            b->err = rc < 0 ? rc : -EIO;
            return -1;
        }
    }
    b->len = 0;
    return 0;
}

static int buf_reserve(buf_t *b, size_t extra)
{
    if (b->oom) return -1;
    if (b->len + extra + 1 <= b->cap) return 0;
    if (b->sink && b->len && buf_flush(b) != 0) return -1;
    if (b->len + extra + 1 <= b->cap) return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->oom = 1;
        b->err = -ENOMEM;
        return -1;
    }
    b->p = p;
    b->cap = cap;
    return 0;
}

static inline void put(buf_t *b, const char *s, size_t n)
{
    if (buf_reserve(b, n) != 0) return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
}

static inline void puts_(buf_t *b, const char *s)
{
    put(b, s, strlen(s));
}

static inline void put_double(buf_t *b, double v)
{
    char tmp[48];
    put(b, tmp, metrics_fmt_double(tmp, v));
}

static inline void put_u64(buf_t *b, uint64_t v)
{
    char tmp[24];
    put(b, tmp, metrics_fmt_u64(tmp, v));
}

/* HELP text: text 0.0.4 escapes backslash and newline; OpenMetrics also double quotes. */
static void put_help(buf_t *b, const char *help, int om)
{
    const char *run = help;
    for (const char *p = help;; p++) {
        const char *esc = NULL;
        if (*p == '\\')
            esc = "\\\\";
        else if (*p == '\n')
            esc = "\\n";
        else if (*p == '"' && om)
            esc = "\\\"";
        else if (*p != 0)
            continue;
        put(b, run, (size_t)(p - run));
        if (!esc) break;
        puts_(b, esc);
        run = p + 1;
    }
}

/* name[suffix]{labels[,extra]} */
static void put_sample_name(buf_t *b, const char *name, const char *suffix,
                            const metrics_series_t *s, const char *le)
{
    puts_(b, name);
    if (suffix) puts_(b, suffix);
    if (s->labels_len == 0 && !le) return;
    put(b, "{", 1);
    put(b, s->labels, s->labels_len);
    if (le) {
        if (s->labels_len) put(b, ",", 1);
        put(b, "le=\"", 4);
        puts_(b, le);
        put(b, "\"", 1);
    }
    put(b, "}", 1);
}

static void render_family(buf_t *b, buf_t *pre, const metrics_family_t *f, int om)
{
    const metrics_series_t *s = atomic_load_explicit(&f->head, memory_order_acquire);
    if (!s) return;
    static const char *const type_names[] = {"counter", "gauge", "histogram"};
    const char *fname = om ? f->om_name : f->name;
    if (om) {
        puts_(b, "# TYPE ");
        puts_(b, fname);
        put(b, " ", 1);
        puts_(b, type_names[f->type]);
        puts_(b, "\n# HELP ");
        puts_(b, fname);
        put(b, " ", 1);
        put_help(b, f->help, 1);
        put(b, "\n", 1);
    } else {
        puts_(b, "# HELP ");
        puts_(b, fname);
        put(b, " ", 1);
        put_help(b, f->help, 0);
        puts_(b, "\n# TYPE ");
        puts_(b, fname);
        put(b, " ", 1);
        puts_(b, type_names[f->type]);
        put(b, "\n", 1);
    }

    for (; s; s = atomic_load_explicit(&s->next, memory_order_acquire)) {
        switch (f->type) {
        case METRICS_COUNTER:
            put_sample_name(b, f->name, NULL, s, NULL);
            put(b, " ", 1);
            put_double(b, metrics_value(s));
            put(b, "\n", 1);
            if (om) {
                put_sample_name(b, f->om_name, "_created", s, NULL);
                put(b, " ", 1);
                puts_(b, s->created_text);
                put(b, "\n", 1);
            }
            break;
        case METRICS_GAUGE:
            put_sample_name(b, f->name, NULL, s, NULL);
            put(b, " ", 1);
            put_double(b, metrics_value(s));
            put(b, "\n", 1);
            break;
        case METRICS_HISTOGRAM: {
            /* _count is the +Inf bucket as read here, so the two always agree even while other
             * threads observe; the sum may lag or lead by the observations in flight. */
            double sum = metrics_histogram_sum(s);
            uint64_t cum = 0;
            char *const *le = om ? f->le_om : f->le;
            /* Every bucket line starts `name_bucket{labels,le="`: build it once, then copy. */
            pre->len = 0;
            put_sample_name(pre, f->name, "_bucket", s, "");
            if (pre->oom) {
                b->oom = 1;
                b->err = -ENOMEM;
                break;
            }
            size_t plen = pre->len - 2; /* without the closing `"}` */
            for (size_t i = 0; i <= f->n_bounds; i++) {
                cum += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
                size_t lel = strlen(le[i]);
                if (buf_reserve(b, plen + lel + 3 + 21 + 1) != 0) break;
                char *d = b->p + b->len;
                memcpy(d, pre->p, plen);
                d += plen;
                memcpy(d, le[i], lel);
                d += lel;
                memcpy(d, "\"} ", 3);
                d += 3;
                d += metrics_fmt_u64(d, cum);
                *d++ = '\n';
                b->len = (size_t)(d - b->p);
            }
            put_sample_name(b, f->name, "_sum", s, NULL);
            put(b, " ", 1);
            put_double(b, sum);
            put(b, "\n", 1);
            put_sample_name(b, f->name, "_count", s, NULL);
            put(b, " ", 1);
            put_u64(b, cum);
            put(b, "\n", 1);
            if (om) {
                put_sample_name(b, f->name, "_created", s, NULL);
                put(b, " ", 1);
                puts_(b, s->created_text);
                put(b, "\n", 1);
            }
            break;
        }
        }
    }
}

/* Runs the collectors and writes every family into b (flushing at the end when streaming). */
static int render_all(metrics_registry_t *r, buf_t *b, int om)
{
    buf_t pre = {0};
    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < r->n_collectors; i++)
        r->collectors[i].fn(r->collectors[i].arg);
    if (!b->sink) /* size from the last render so the common case is one allocation */
        buf_reserve(b, r->last_render_len + r->last_render_len / 8 + 256);
    for (size_t i = 0; i < r->n_fams && !b->oom; i++)
        render_family(b, &pre, r->fams[i], om);
    if (om) put(b, "# EOF\n", 6);
    if (!b->oom && !b->sink) r->last_render_len = b->len;
    pthread_mutex_unlock(&r->lock);
    free(pre.p);
    if (b->sink) buf_flush(b);
    return b->oom ? (b->err ? b->err : -ENOMEM) : 0;
}

int metrics_render_format(metrics_registry_t *r, metrics_format_t fmt, char **out, size_t *out_len)
{
    if (!r || !out || !out_len) return -EINVAL;
    *out = NULL;
    *out_len = 0;
    buf_t b = {0};
    int rc = render_all(r, &b, fmt == METRICS_FORMAT_OPENMETRICS);
    if (rc == 0 && buf_reserve(&b, 0) != 0) rc = -ENOMEM;
    if (rc != 0) {
        free(b.p);
        return rc;
    }
    b.p[b.len] = 0;
    *out = b.p;
    *out_len = b.len;
    return 0;
}

int metrics_render_stream(metrics_registry_t *r, metrics_format_t fmt, metrics_write_fn write,
                          void *arg)
{
    if (!r || !write) return -EINVAL;
    buf_t b = {.sink = write, .sink_arg = arg};
    /* 64 KiB chunks: stays in cache, no large allocation or page faults per scrape. */
    int rc = buf_reserve(&b, 64 * 1024 - 1);
    if (rc == 0)
        rc = render_all(r, &b, fmt == METRICS_FORMAT_OPENMETRICS);
    else
        rc = -ENOMEM;
    free(b.p);
    return rc;
}

int metrics_render(metrics_registry_t *r, const char *accept, char **out, size_t *out_len,
                   const char **content_type)
{
    metrics_format_t fmt = metrics_negotiate(accept);
    if (content_type) *content_type = metrics_content_type(fmt);
    return metrics_render_format(r, fmt, out, out_len);
}

/* ---- Accept negotiation ---- */

typedef struct {
    double q;
    int spec; /* 0: any type, 1: text/any, 2: type/subtype, 3: with a version */
    int pos;
    int set;
} cand_t;

/* a better than b: higher q, then more specific, then earlier. */
static int better(const cand_t *a, const cand_t *b)
{
    if (!b->set) return a->set;
    if (!a->set) return 0;
    if (a->q != b->q) return a->q > b->q;
    if (a->spec != b->spec) return a->spec > b->spec;
    return a->pos < b->pos;
}

static void trim(const char **s, const char **e)
{
    while (*s < *e && (**s == ' ' || **s == '\t'))
        (*s)++;
    while (*e > *s && ((*e)[-1] == ' ' || (*e)[-1] == '\t'))
        (*e)--;
}

static int token_eq(const char *s, const char *e, const char *lit)
{
    size_t n = strlen(lit);
    return (size_t)(e - s) == n && strncasecmp(s, lit, n) == 0;
}

/* Parses a q-value ("0", "0.5", "1.000"); returns -1 if malformed. */
static double parse_q(const char *s, const char *e)
{
    char tmp[16];
    size_t n = (size_t)(e - s);
    if (n == 0 || n >= sizeof tmp) return -1;
    memcpy(tmp, s, n);
    tmp[n] = 0;
    char *end;
    double q = strtod(tmp, &end);
    if (*end || !(q >= 0 && q <= 1)) return -1;
    return q;
}

metrics_format_t metrics_negotiate(const char *accept)
{
    if (!accept || !*accept) return METRICS_FORMAT_TEXT;
    cand_t best_om = {0}, best_text = {0};
    int pos = 0;
    const char *p = accept;
    while (*p) {
        const char *elem_end = strchr(p, ',');
        if (!elem_end) elem_end = p + strlen(p);
        const char *ms = p, *me = memchr(p, ';', (size_t)(elem_end - p));
        if (!me) me = elem_end;
        const char *params = me;
        trim(&ms, &me);

        double q = 1;
        int has_version = 0, version_ok = 1, malformed = 0;
        const char *version_s = NULL, *version_e = NULL;
        while (params < elem_end && *params == ';') {
            const char *ps = params + 1;
            const char *pe = memchr(ps, ';', (size_t)(elem_end - ps));
            if (!pe) pe = elem_end;
            params = pe;
            const char *eq = memchr(ps, '=', (size_t)(pe - ps));
            if (!eq) continue;
            const char *ks = ps, *ke = eq, *vs = eq + 1, *ve = pe;
            trim(&ks, &ke);
            trim(&vs, &ve);
            if (ve - vs >= 2 && *vs == '"' && ve[-1] == '"') {
                vs++;
                ve--;
            }
            if (token_eq(ks, ke, "q")) {
                q = parse_q(vs, ve);
                if (q < 0) malformed = 1;
            } else if (token_eq(ks, ke, "version")) {
                has_version = 1;
                version_s = vs;
                version_e = ve;
            }
        }

        cand_t c = {.q = q, .pos = pos++, .set = 1};
        cand_t *slot = NULL;
        if (!malformed && q > 0) {
            if (token_eq(ms, me, "application/openmetrics-text")) {
                /* 1.0.0 and its draft 0.0.1 read the same; we serve 1.0.0. */
                if (has_version)
                    version_ok = token_eq(version_s, version_e, "1.0.0") ||
                                 token_eq(version_s, version_e, "0.0.1");
                c.spec = has_version ? 3 : 2;
                slot = version_ok ? &best_om : NULL;
            } else if (token_eq(ms, me, "text/plain")) {
                if (has_version) version_ok = token_eq(version_s, version_e, "0.0.4");
                c.spec = has_version ? 3 : 2;
                slot = version_ok ? &best_text : NULL;
            } else if (token_eq(ms, me, "text/*")) {
                c.spec = 1;
                slot = &best_text;
            } else if (token_eq(ms, me, "*/*") || token_eq(ms, me, "*")) {
                c.spec = 0;
                slot = &best_text;
            }
        }
        if (slot && better(&c, slot)) *slot = c;
        p = *elem_end ? elem_end + 1 : elem_end;
    }
    return better(&best_om, &best_text) ? METRICS_FORMAT_OPENMETRICS : METRICS_FORMAT_TEXT;
}
