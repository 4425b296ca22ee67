/* Lines are formatted by the caller's thread and handed to one writer thread through a
 * bounded ring; when stderr is slow and the ring is full, lines are dropped and counted,
 * so the reactor never waits on stderr. */
#include "log.h"

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
#define LINE_MAX_BYTES 8192
#define MAX_RULES 32

typedef struct rule {
    char module[32];
    log_level_t level;
} rule_t;

/* The logger is the one process-wide object: every module and thread writes to the same
 * stderr, so it is global by nature. */
static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t writer;
    int started;
    char ring[RING_BYTES];
    size_t head, len; /* bytes queued start at head */
    log_level_t def;
    rule_t rules[MAX_RULES];
    int nrules;
    int jsonl;
    atomic_ulong dropped;
    int fd;
} L = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, {0}, 0, 0, LOG_INFO, {{{0}, 0}}, 0, 0, 0, 2};

static const char *level_names[] = {"trace", "debug", "info", "warn", "error", "off"};

static int parse_level(const char *s, size_t n, log_level_t *out)
{
    for (int i = 0; i <= LOG_OFF; i++)
        if (strlen(level_names[i]) == n && !strncasecmp(s, level_names[i], n)) return *out = (log_level_t)i, 0;
    return -EINVAL;
}

int log_configure(const char *spec, int jsonl, char *err, size_t errlen)
{
    log_level_t def = LOG_INFO;
    rule_t rules[MAX_RULES];
    int n = 0;
    const char *p = spec ? spec : "info";
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        const char *eq = memchr(p, '=', len);
        log_level_t lv;
        if (eq) {
            size_t ml = (size_t)(eq - p);
            if (ml == 0 || ml >= sizeof rules[0].module || n == MAX_RULES || parse_level(eq + 1, len - ml - 1, &lv)) {
                snprintf(err, errlen, "invalid log directive '%.*s'", (int)len, p);
                return -EINVAL;
            }
            memcpy(rules[n].module, p, ml);
            rules[n].module[ml] = 0;
            rules[n++].level = lv;
        } else if (parse_level(p, len, &def)) {
            snprintf(err, errlen, "invalid log level '%.*s'", (int)len, p);
            return -EINVAL;
        }
        if (!comma) break;
        p = comma + 1;
    }
    pthread_mutex_lock(&L.mu);
    L.def = def;
    memcpy(L.rules, rules, sizeof(rule_t) * (size_t)n);
    L.nrules = n;
    L.jsonl = jsonl;
    pthread_mutex_unlock(&L.mu);
    return 0;
}

int log_enabled(log_level_t level, const char *target)
{
    log_level_t lim = L.def;
    for (int i = 0; i < L.nrules; i++)
        if (!strcmp(L.rules[i].module, target)) lim = L.rules[i].level;
    return level >= lim && level != LOG_OFF;
}

unsigned long log_dropped(void)
{
    return atomic_load(&L.dropped);
}

static void *writer_main(void *arg)
{
    (void)arg;
    char chunk[65536];
    pthread_mutex_lock(&L.mu);
    for (;;) {
        while (L.len == 0) pthread_cond_wait(&L.cv, &L.mu);
        size_t n = L.len < sizeof chunk ? L.len : sizeof chunk;
        for (size_t i = 0; i < n; i++) chunk[i] = L.ring[(L.head + i) % RING_BYTES];
        L.head = (L.head + n) % RING_BYTES;
        L.len -= n;
        pthread_mutex_unlock(&L.mu);
        size_t off = 0;
        while (off < n) {
            ssize_t w = write(L.fd, chunk + off, n - off);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) break;
            off += (size_t)w;
        }
        pthread_mutex_lock(&L.mu);
        pthread_cond_broadcast(&L.cv);
    }
    return NULL;
}

void log_flush(void)
{
    pthread_mutex_lock(&L.mu);
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 2;
    while (L.len > 0 && L.started)
        if (pthread_cond_timedwait(&L.cv, &L.mu, &deadline) == ETIMEDOUT) break;
    pthread_mutex_unlock(&L.mu);
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
        pthread_mutex_unlock(&L.mu);
        (void)!write(L.fd, line, n);
        return;
    }
    if (RING_BYTES - L.len < n) {
        atomic_fetch_add(&L.dropped, 1);
    } else {
        size_t tail = (L.head + L.len) % RING_BYTES;
        for (size_t i = 0; i < n; i++) L.ring[(tail + i) % RING_BYTES] = line[i];
        L.len += n;
        pthread_cond_signal(&L.cv);
    }
    pthread_mutex_unlock(&L.mu);
}

/* Appends s JSON-escaped; returns the new length (bounded by cap). */
static size_t json_str(char *buf, size_t len, size_t cap, const char *s)
{
    if (len < cap) buf[len++] = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p && len + 7 < cap; p++) {
        if (*p == '"' || *p == '\\') {
            buf[len++] = '\\';
            buf[len++] = (char)*p;
        } else if (*p < 0x20) {
            len += (size_t)snprintf(buf + len, cap - len, "\\u%04x", *p);
        } else {
            buf[len++] = (char)*p;
        }
    }
    if (len < cap) buf[len++] = '"';
    return len;
}

void log_write(log_level_t level, const char *target, const char *const *fields, const char *fmt, ...)
{
    char msg[4096], line[LINE_MAX_BYTES], ts[40];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    struct tm tm;
    gmtime_r(&now.tv_sec, &tm);
    size_t tl = strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts + tl, sizeof ts - tl, ".%06ldZ", now.tv_nsec / 1000);
    size_t n = 0, cap = sizeof line - 2;
    if (L.jsonl) {
        n += (size_t)snprintf(line, cap, "{\"time\":\"%s\",\"level\":\"%s\",\"target\":", ts, level_names[level]);
        n = json_str(line, n, cap, target);
        n += (size_t)snprintf(line + n, cap - n, ",\"message\":");
        n = json_str(line, n, cap, msg);
        for (const char *const *f = fields; f && f[0] && f[1] && n < cap; f += 2) {
            line[n++] = ',';
            n = json_str(line, n, cap, f[0]);
            if (n < cap) line[n++] = ':';
            n = json_str(line, n, cap, f[1]);
        }
        if (n < cap) line[n++] = '}';
    } else {
        static const char *up[] = {"TRACE", "DEBUG", "INFO", "WARN", "ERROR", "OFF"};
        n += (size_t)snprintf(line, cap, "%s %-5s %s: %s", ts, up[level], target, msg);
        for (const char *const *f = fields; f && f[0] && f[1] && n < cap; f += 2)
            n += (size_t)snprintf(line + n, cap - n, " %s=%s", f[0], f[1]);
    }
    if (n > cap) n = cap;
    line[n++] = '\n';
    enqueue(line, n);
}
