#include "server/core/trace.h"

#include <string.h>
#include <sys/random.h>
#include <time.h>

static const char hex[] = "0123456789abcdef";

static int hexok(const char *s, size_t n)
{
    int nonzero = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return 0;
        nonzero |= c != '0';
    }
    return nonzero;
}

void trace_rng_init(trace_rng_t *r)
{
    if (getrandom(r->s, sizeof r->s, 0) != (ssize_t)sizeof r->s) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        r->s[0] = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ULL;
        r->s[1] = (uint64_t)ts.tv_sec ^ 0xbf58476d1ce4e5b9ULL;
    }
    if (!r->s[0] && !r->s[1]) r->s[0] = 1;
}

/* xorshift128+: ids need to be unique, not secret; a syscall per request is too dear. */
static uint64_t next(trace_rng_t *r)
{
    uint64_t x = r->s[0], y = r->s[1];
    r->s[0] = y;
    x ^= x << 23;
    r->s[1] = x ^ y ^ (x >> 17) ^ (y >> 26);
    return r->s[1] + y;
}

static void random_hex(trace_rng_t *r, char *out, size_t n)
{
    for (size_t i = 0; i < n; i += 16) {
        uint64_t v = next(r);
        for (size_t k = 0; k < 16 && i + k < n; k++, v >>= 4)
            out[i + k] = hex[v & 15];
    }
    out[n] = 0;
}

int trace_start(trace_rng_t *r, const char *tp, char trace_id[33], char span_id[17])
{
    random_hex(r, span_id, 16);
    /* 00-<32 hex trace>-<16 hex parent>-<2 hex flags>; anything else starts a new trace */
    if (tp && strlen(tp) == 55 && !strncmp(tp, "00-", 3) && tp[35] == '-' && tp[52] == '-' &&
        hexok(tp + 3, 32) && hexok(tp + 36, 16) &&
        (hexok(tp + 53, 2) || !strncmp(tp + 53, "00", 2))) {
        memcpy(trace_id, tp + 3, 32);
        trace_id[32] = 0;
        return 1;
    }
    random_hex(r, trace_id, 32);
    return 0;
}
