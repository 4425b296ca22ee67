/* Number formatting for the exposition: shared by the registry (bucket labels) and the
 * renderer (sample values), so neither needs the other. Not a public header. */
#ifndef INFERD_METRICS_NUMBER_H
#define INFERD_METRICS_NUMBER_H

#include <stddef.h>
#include <stdint.h>

/** Writes v in decimal and a NUL into buf (>= 21 bytes). Returns the length. */
size_t metrics_fmt_u64(char *buf, uint64_t v);
/** Formats v so Prometheus and OpenMetrics parsers read back the same double (integers exactly,
 * else the shortest of %.15g / %.17g that round-trips; +Inf, -Inf, NaN). buf holds >= 32 bytes.
 * Returns the length. */
size_t metrics_fmt_double(char *buf, double v);

#endif
