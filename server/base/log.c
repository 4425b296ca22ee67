/* Lines are formatted by the caller's thread and handed to one writer thread through a
 * bounded ring; when stderr is slow and the ring is full, lines are dropped and counted,
 * so the reactor never waits on stderr. The lock is held only to copy bytes in or out of the
 * ring, never across a write(). */
#include "server/base/log.h"
#include "server/base/utf8.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define RING_BYTES (1 << 20)
#define LINE_MAX_BYTES 16384
#define MSG_MAX_BYTES 4096
#define VALUE_MAX_BYTES 1024 /* of one structured field's value; longer ones are cut */
#define MAX_RULES 32
/* Room kept at the end of a JSON line for ,"truncated":true}\n so a cut line stays valid. */
#define JSON_RESERVE 24
/* Room the message leaves for the structured fields. */
#define FIELDS_ROOM 4096

typedef struct rule {
    char module[32];
    size_t len;
    log_level_t level;
} rule_t;

/* The logger is the one process-wide object: every module and thread writes to the same
 * stderr, so it is global by nature. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t writer;
    int started;
    int writing; /* the writer holds bytes taken from the ring and not yet written */
    char ring[RING_BYTES];
    size_t head, len; /* bytes queued start at head */
    log_level_t def;
    rule_t rules[MAX_RULES];
    int nrules;
    atomic_int jsonl;
    atomic_ulong dropped;     /* lines dropped, ever (the metric) */
    unsigned long unreported; /* dropped since the writer last said so; under mu */
    int fd;
} L = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .def = LOG_INFO, .fd = 2};

static _Thread_local struct {
    const char *request_id, *trace_id, *span_id;
} ctx;

static const char *level_names[] = {"trace", "debug", "info", "warn", "error", "off"};

/* ---- configuration ---- */

static int parse_level(const char *s, size_t n, log_level_t *out)
{
    for (int i = 0; i <= LOG_OFF; i++)
        if (strlen(level_names[i]) == n && !strncasecmp(s, level_names[i], n))
            return *out = (log_level_t)i, 0;
    return -EINVAL;
}

static int module_char(char c)
{
    return c == '_' || c == ':' || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

int log_configure(const char *spec, int jsonl, char *err, size_t errlen)
{
    log_level_t def = LOG_INFO;
    rule_t rules[MAX_RULES];
    int n = 0;
    const char *p = spec ? spec : "info";
    if (!*p) {
        snprintf(err, errlen, "empty log spec: expected LEVEL[,MODULE=LEVEL...]");
        return -EINVAL;
    }
    for (;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        log_level_t lv;
        if (eq) {
            size_t ml = (size_t)(eq - p);
            int ok = ml > 0 && ml < sizeof rules[0].module && n < MAX_RULES &&
                     !parse_level(eq + 1, len - ml - 1, &lv);
            for (size_t i = 0; ok && i < ml; i++)
                ok = module_char(p[i]);
            if (!ok) {
                snprintf(err, errlen,
                         "invalid log directive '%.*s': expected MODULE=LEVEL with MODULE of "
                         "[a-z0-9_:] and LEVEL trace|debug|info|warn|error|off",
                         (int)len, p);
                return -EINVAL;
            }
            int k = 0; /* a module named twice: the later directive wins */
            while (k < n && !(rules[k].len == ml && !memcmp(rules[k].module, p, ml)))
                k++;
            memcpy(rules[k].module, p, ml);
            rules[k].module[ml] = 0;
            rules[k].len = ml;
            rules[k].level = lv;
            if (k == n) n++;
        } else if (parse_level(p, len, &def)) {
            snprintf(err, errlen,
                     "invalid log level '%.*s': expected trace|debug|info|warn|error|off", (int)len,
                     p);
            return -EINVAL;
        }
        if (!comma) break;
        p = comma + 1;
    }
    pthread_mutex_lock(&L.mu);
    L.def = def;
    memcpy(L.rules, rules, sizeof(rule_t) * (size_t)n);
    L.nrules = n;
    atomic_store(&L.jsonl, jsonl != 0);
    pthread_mutex_unlock(&L.mu);
    return 0;
}

int log_enabled(log_level_t level, const char *target)
{
    if (level >= LOG_OFF) return 0;
    log_level_t lim = L.def;
    size_t best = 0;
    for (int i = 0; i < L.nrules; i++) {
        const rule_t *r = &L.rules[i];
        if (r->len > best && !strncmp(target, r->module, r->len) &&
            (target[r->len] == 0 || target[r->len] == ':' || target[r->len] == '.')) {
            best = r->len;
            lim = r->level;
        }
    }
    return level >= lim;
}

unsigned long log_dropped(void)
{
    return atomic_load(&L.dropped);
}

void log_set_context(const char *request_id, const char *trace_id, const char *span_id)
{
    ctx.request_id = request_id;
    ctx.trace_id = trace_id;
    ctx.span_id = span_id;
}

int log_ratelimit_take(log_ratelimit_t *rl, int64_t now_ns, unsigned long *suppressed)
{
    *suppressed = 0;
    if (now_ns - rl->window_ns >= 1000000000LL || now_ns < rl->window_ns) {
        *suppressed = rl->held;
        rl->held = 0;
        rl->used = 0;
        rl->window_ns = now_ns;
    }
    if (rl->used < rl->per_sec) {
        rl->used++;
        return 1;
    }
    rl->held++;
    return 0;
}

/* ---- line building: always one valid line, however long or odd the input ---- */

typedef struct lb {
    char *b;
    size_t len, cap; /* cap: where content must stop */
    int cut;         /* something did not fit */
} lb_t;

static int lb_raw(lb_t *o, const char *s, size_t n)
{
    if (o->len + n > o->cap) return o->cut = 1, -1;
    memcpy(o->b + o->len, s, n);
    o->len += n;
    return 0;
}

/* The escaped form of the character at p (n bytes left): JSON (\uXXXX, bad UTF-8 as U+FFFD)
 * or text (\xXX; quotes and backslashes escaped only inside a quoted value). Sets *piece to
 * the bytes to write (esc or p itself) and *adv to the source bytes used; returns the length. */
static size_t escape_one(const unsigned char *p, size_t n, int json, int quoted, char esc[8],
                         const char **piece, size_t *adv)
{
    unsigned c = p[0];
    *piece = esc;
    *adv = 1;
    if ((json || quoted) && (c == '"' || c == '\\')) {
        esc[0] = '\\', esc[1] = (char)c;
        return 2;
    }
    if (c == '\n') return *piece = "\\n", 2;
    if (c == '\r') return *piece = "\\r", 2;
    if (c == '\t') return *piece = "\\t", 2;
    if (c < 0x20 || c == 0x7F) return (size_t)snprintf(esc, 8, json ? "\\u%04x" : "\\x%02x", c);
    if (c < 0x80) return esc[0] = (char)c, 1;
    size_t k = utf8_len(p, n);
    if (k > 0) return *piece = (const char *)p, *adv = k;
    if (json) return *piece = "\\ufffd", 6;
    return (size_t)snprintf(esc, 8, "\\x%02x", c);
}

/* Appends s (at most max source bytes) as a JSON string. whole: all of it or nothing (keys).
 * The closing quote always fits once the opening one was written. Returns 0 when a string was
 * written (its content possibly cut), -1 when nothing was. */
static int lb_json(lb_t *o, const char *s, size_t max, int whole)
{
    size_t start = o->len;
    if (o->len + 2 > o->cap) return o->cut = 1, -1;
    o->b[o->len++] = '"';
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strnlen(s, max), i = 0;
    int truncated = n == max && s[n] != 0;
    while (i < n) {
        char esc[8];
        const char *piece;
        size_t adv, pl = escape_one(p + i, n - i, 1, 1, esc, &piece, &adv);
        if (o->len + pl + 1 > o->cap) {
            truncated = 1;
            break;
        }
        memcpy(o->b + o->len, piece, pl);
        o->len += pl;
        i += adv;
    }
    if (truncated) {
        o->cut = 1;
        if (whole) {
            o->len = start;
            return -1;
        }
    }
    o->b[o->len++] = '"';
    return 0;
}

/* Appends s for a text line: control characters and invalid UTF-8 escaped; quoted
 * (logfmt style) when quote is set and s is empty or holds a space, '"', '=' or an escape. */
static void lb_text(lb_t *o, const char *s, size_t max, int quote)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strnlen(s, max);
    int q = 0;
    if (quote) {
        q = n == 0;
        for (size_t i = 0; i < n && !q; i++)
            q = p[i] <= ' ' || p[i] == '"' || p[i] == '=' || p[i] == '\\' || p[i] == 0x7F ||
                (p[i] >= 0x80 && !utf8_len(p + i, n - i));
    }
    if (q && lb_raw(o, "\"", 1)) return;
    for (size_t i = 0; i < n;) {
        char esc[8];
        const char *piece;
        size_t adv, pl = escape_one(p + i, n - i, 0, q, esc, &piece, &adv);
        if (o->len + pl + (size_t)q > o->cap) {
            o->cut = 1;
            break;
        }
        memcpy(o->b + o->len, piece, pl);
        o->len += pl;
        i += adv;
    }
    if (q) o->b[o->len++] = '"'; /* room kept above */
}

static int reserved_key(const char *k)
{
    return !strcmp(k, "time") || !strcmp(k, "level") || !strcmp(k, "target") ||
           !strcmp(k, "message") || !strcmp(k, "truncated");
}

static int fields_have(const char *const *fields, const char *key)
{
    for (const char *const *f = fields; f && f[0] && f[1]; f += 2)
        if (!strcmp(f[0], key)) return 1;
    return 0;
}

static void json_field(lb_t *o, const char *key, const char *value)
{
    size_t save = o->len;
    char k[80];
    if (reserved_key(key)) { /* never a second "message" key: Loki and jq keep only one */
        snprintf(k, sizeof k, "field_%s", key);
        key = k;
    }
    size_t cap = o->cap;
    int bad = lb_raw(o, ",", 1) || lb_json(o, key, 256, 1) || lb_raw(o, ":", 1);
    if (!bad) { /* one value gets at most VALUE_MAX_BYTES of the line, escapes included */
        if (o->len + VALUE_MAX_BYTES + 2 < o->cap) o->cap = o->len + VALUE_MAX_BYTES + 2;
        bad = lb_json(o, value, VALUE_MAX_BYTES, 0);
        o->cap = cap;
    }
    if (bad) {
        o->len = save;
        o->cut = 1;
    }
}

static void text_field(lb_t *o, const char *key, const char *value)
{
    if (lb_raw(o, " ", 1)) return;
    lb_text(o, key, 256, 0);
    if (lb_raw(o, "=", 1)) return;
    size_t cap = o->cap;
    if (o->len + VALUE_MAX_BYTES + 2 < o->cap) o->cap = o->len + VALUE_MAX_BYTES + 2;
    lb_text(o, value, VALUE_MAX_BYTES, 1);
    o->cap = cap;
}

/* Formats one event into line (LINE_MAX_BYTES); returns its length, '\n' included. */
static size_t format_line(char *line, log_level_t level, const char *target,
                          const char *const *fields, const char *msg)
{
    char ts[40];
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    size_t tl = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + tl, sizeof ts - tl, ".%06ldZ", now.tv_nsec / 1000);
    const char *cx[] = {"request_id", ctx.request_id, "trace_id",
                        ctx.trace_id, "span_id",      ctx.span_id};
    lb_t o = {line, 0, LINE_MAX_BYTES - JSON_RESERVE, 0};
    if (atomic_load_explicit(&L.jsonl, memory_order_relaxed)) {
        lb_raw(&o, "{\"time\":\"", 9);
        lb_raw(&o, ts, strlen(ts));
        lb_raw(&o, "\",\"level\":\"", 11);
        lb_raw(&o, level_names[level], strlen(level_names[level]));
        lb_raw(&o, "\",\"target\":", 11);
        lb_json(&o, target, 64, 0);
        lb_raw(&o, ",\"message\":", 11);
        o.cap -= FIELDS_ROOM; /* an odd message may not crowd out the fields */
        lb_json(&o, msg, MSG_MAX_BYTES, 0);
        o.cap += FIELDS_ROOM;
        for (int i = 0; i < 6; i += 2) /* the call's ids first: they must survive a cut */
            if (cx[i + 1] && cx[i + 1][0] && !fields_have(fields, cx[i]))
                json_field(&o, cx[i], cx[i + 1]);
        for (const char *const *f = fields; f && f[0] && f[1]; f += 2)
            json_field(&o, f[0], f[1]);
        o.cap = LINE_MAX_BYTES - 1;
        if (o.cut) lb_raw(&o, ",\"truncated\":true", 17);
        lb_raw(&o, "}", 1);
    } else {
        static const char *up[] = {"TRACE", "DEBUG", "INFO ", "WARN ", "ERROR", "OFF  "};
        lb_raw(&o, ts, strlen(ts));
        lb_raw(&o, " ", 1);
        lb_raw(&o, up[level], 5);
        lb_raw(&o, " ", 1);
        lb_text(&o, target, 64, 0);
        lb_raw(&o, ": ", 2);
        o.cap -= FIELDS_ROOM;
        lb_text(&o, msg, MSG_MAX_BYTES, 0);
        o.cap += FIELDS_ROOM;
        for (const char *const *f = fields; f && f[0] && f[1]; f += 2)
            text_field(&o, f[0], f[1]);
        for (int i = 0; i < 6; i += 2)
            if (cx[i + 1] && cx[i + 1][0] && !fields_have(fields, cx[i]))
                text_field(&o, cx[i], cx[i + 1]);
        o.cap = LINE_MAX_BYTES - 1;
        if (o.cut) lb_raw(&o, " [truncated]", 12);
    }
    line[o.len++] = '\n';
    return o.len;
}

/* ---- the writer ---- */

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return; /* stderr gone: nothing better to do with the line */
        p += w;
        n -= (size_t)w;
    }
}

static void *writer_main(void *arg)
{
    (void)arg;
    static char chunk[65536];
    static char notice[LINE_MAX_BYTES];
    pthread_mutex_lock(&L.mu);
    for (;;) {
        while (L.len == 0 && L.unreported == 0)
            pthread_cond_wait(&L.cv, &L.mu);
        size_t n = L.len < sizeof chunk ? L.len : sizeof chunk;
        size_t first = RING_BYTES - L.head < n ? RING_BYTES - L.head : n;
        memcpy(chunk, L.ring + L.head, first);
        memcpy(chunk + first, L.ring, n - first);
        L.head = (L.head + n) % RING_BYTES;
        L.len -= n;
        unsigned long lost = L.len == 0 ? L.unreported : 0; /* said once the backlog is out */
        if (lost) L.unreported = 0;
        int fd = L.fd;
        L.writing = 1;
        pthread_mutex_unlock(&L.mu);
        write_all(fd, chunk, n);
        if (lost) {
            char num[24];
            snprintf(num, sizeof num, "%lu", lost);
            const char *f[] = {"dropped", num, NULL};
            write_all(
                fd, notice,
                format_line(notice, LOG_WARN, "log", f, "log lines dropped: stderr was too slow"));
        }
        pthread_mutex_lock(&L.mu);
        L.writing = 0;
        pthread_cond_broadcast(&L.cv);
    }
    return NULL;
}

/* Waits, with mu held, until the writer has written everything queued (at most 2 s). */
static void drain_locked(void)
{
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 2;
    while ((L.len > 0 || L.writing) && L.started)
        if (pthread_cond_timedwait(&L.cv, &L.mu, &deadline) == ETIMEDOUT) break;
}

void log_flush(void)
{
    pthread_mutex_lock(&L.mu);
    drain_locked();
    pthread_mutex_unlock(&L.mu);
}

int log_set_fd(int fd)
{
    pthread_mutex_lock(&L.mu);
    drain_locked();
    int old = L.fd;
    L.fd = fd;
    pthread_mutex_unlock(&L.mu);
    return old;
}

static void enqueue(const char *line, size_t n)
{
    pthread_mutex_lock(&L.mu);
    if (!L.started) {
        pthread_attr_t a;
        pthread_attr_init(&a);
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
        L.started = pthread_create(&L.writer, &a, writer_main, NULL) == 0;
        pthread_attr_destroy(&a);
    }
    if (!L.started) { /* no thread: write through, better than losing start-up errors */
        int fd = L.fd;
        pthread_mutex_unlock(&L.mu);
        write_all(fd, line, n);
        return;
    }
    if (RING_BYTES - L.len < n) {
        atomic_fetch_add(&L.dropped, 1);
        L.unreported++;
    } else {
        size_t tail = (L.head + L.len) % RING_BYTES;
        size_t first = RING_BYTES - tail < n ? RING_BYTES - tail : n;
        memcpy(L.ring + tail, line, first);
        memcpy(L.ring, line + first, n - first);
        L.len += n;
        pthread_cond_signal(&L.cv);
    }
    pthread_mutex_unlock(&L.mu);
}

void log_write(log_level_t level, const char *target, const char *const *fields, const char *fmt,
               ...)
{
    char msg[MSG_MAX_BYTES], line[LINE_MAX_BYTES];
    if ((unsigned)level >= LOG_OFF) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    enqueue(line, format_line(line, level, target ? target : "", fields, msg));
}
