#!/bin/sh
# Benchmarks metrics/: render time with 10,000 series (text and OpenMetrics) and the cost of
# metrics_inc / metrics_observe single-threaded and with 2 threads contending.
# Release build (-O2, no sanitizers) in its own directory; compiles metrics/ directly so other
# modules' build state does not matter.
# Usage: tools/bench/metrics.sh [series=10000] [runs=50] [hist_percent=50]
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build-bench-metrics}
cc=${CC:-cc}
mkdir -p "$build"
"$cc" -std=c11 -O2 -DNDEBUG -D_GNU_SOURCE -Wall -Wextra -Werror -I"$root/metrics" -I"$root" \
    "$root"/metrics/metrics.c "$root"/metrics/number.c "$root"/metrics/render.c "$root"/metrics/process.c \
    "$root"/server/base/clock.c \
    "$root"/metrics/inferd_metrics.c "$root/tools/bench/metrics_bench.c" \
    -o "$build/metrics_bench" -lpthread -lm
echo "# $(uname -m), $(nproc) CPUs, $("$cc" --version | head -n 1)"
"$build/metrics_bench" "${1:-10000}" "${2:-50}" "${3:-50}"
