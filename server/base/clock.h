/* The clock of the server and health: CLOCK_MONOTONIC in nanoseconds, the time base of timers,
 * deadlines, durations and rate limits (the engine stamps its events with the same clock). One
 * helper instead of one per file. */
#ifndef INFERD_SERVER_BASE_CLOCK_H
#define INFERD_SERVER_BASE_CLOCK_H

#include <stdint.h>

/** CLOCK_MONOTONIC now, in nanoseconds. */
int64_t clock_now_ns(void);

#endif
