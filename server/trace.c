#include "trace.h"

#include <stdio.h>
#include <string.h>
#include <sys/random.h>

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

static void random_hex(char *out, size_t n)
{
    unsigned char b[16];
    if (getrandom(b, n / 2, 0) != (ssize_t)(n / 2)) memset(b, 0x5a, sizeof b);
    for (size_t i = 0; i < n / 2; i++) snprintf(out + 2 * i, 3, "%02x", b[i]);
    out[n] = 0;
}

int trace_start(const char *tp, char trace_id[33], char span_id[17])
{
    random_hex(span_id, 16);
    /* 00-<32 hex trace>-<16 hex parent>-<2 hex flags> */
    if (tp && strlen(tp) == 55 && !strncmp(tp, "00-", 3) && tp[35] == '-' && tp[52] == '-' && hexok(tp + 3, 32) &&
        hexok(tp + 36, 16) && (hexok(tp + 53, 2) || !strncmp(tp + 53, "00", 2))) {
        memcpy(trace_id, tp + 3, 32);
        trace_id[32] = 0;
        return 1;
    }
    random_hex(trace_id, 32);
    return 0;
}
