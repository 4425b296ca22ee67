/* Number formatting for the exposition (see number.h). */
#include "number.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t metrics_fmt_u64(char *buf, uint64_t v)
{
    char tmp[24];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        buf[i] = tmp[n - 1 - i];
    buf[n] = 0;
    return n;
}

size_t metrics_fmt_double(char *buf, double v)
{
    if (isnan(v)) {
        memcpy(buf, "NaN", 4);
        return 3;
    }
    if (isinf(v)) {
        memcpy(buf, v > 0 ? "+Inf" : "-Inf", 5);
        return 4;
    }
    /* Integers (the common case: counts, bytes) print exactly without snprintf. */
    if (fabs(v) < 9007199254740992.0 && v == (double)(int64_t)v) {
        if (v < 0) {
            buf[0] = '-';
            return 1 + metrics_fmt_u64(buf + 1, (uint64_t)(-(int64_t)v));
        }
        return metrics_fmt_u64(buf, (uint64_t)v);
    }
    int n = snprintf(buf, 32, "%.15g", v);
    if (strtod(buf, NULL) == v) return (size_t)n;
    return (size_t)snprintf(buf, 32, "%.17g", v);
}
