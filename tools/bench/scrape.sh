#!/bin/sh
# Benchmark: a live /metrics scrape of a real inferd server holding 10,000 series (issue 3:
# "a scrape never blocks the loop for long"). Builds a release inferd_core (no sanitizers)
# in its own directory and links tools/bench/scrape_bench.c against it. Reports, for text
# 0.0.4 and OpenMetrics, plain and gzip:
#   loop: — http_serve() of GET /metrics: the time one scrape holds the reactor;
#   http/1.1: — a whole scrape over 127.0.0.1 as the client sees it (new connection each).
# Usage: tools/bench/scrape.sh [series=10000] [runs=50] [hist_percent=50]
# Environment: BUILD_DIR (default build-bench-scrape), CC.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build-bench-scrape}
cc=${CC:-cc}
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DINFERD_SANITIZE=OFF -DINFERD_TESTS=OFF \
    -DINFERD_CUDA=OFF >/dev/null
cmake --build "$build" --target inferd_core -j"$(nproc)" >/dev/null
libs=$(find "$build" -name 'libinferd_*.a' ! -name 'libinferd_engine.a' ! -name 'libinferd_services.a' | sort)
# shellcheck disable=SC2046,SC2086
"$cc" -std=c11 -O2 -DNDEBUG -D_GNU_SOURCE -Wall -Wextra -Werror -I"$root" -I"$build/proto/gen" \
    $(pkg-config --cflags libevent_core libnghttp2 libprotobuf-c) \
    "$root/tools/bench/scrape_bench.c" -o "$build/scrape_bench" \
    -Wl,--start-group $libs -Wl,--end-group \
    $(pkg-config --libs libevent_core libevent_pthreads libevent_openssl libnghttp2 libprotobuf-c openssl zlib jansson) \
    -lhttp_parser -lpthread -lm
echo "# $(uname -m), $(nproc) CPUs, $("$cc" --version | head -n 1)"
"$build/scrape_bench" "${1:-10000}" "${2:-50}" "${3:-50}"
