#!/usr/bin/env bash
# Sets up and runs the whole test suite: installs missing Debian packages, checks the layering
# (tools/check-layers.sh) and the formatting (tools/format.sh --check), builds with
# AddressSanitizer and UndefinedBehaviorSanitizer and runs every test with ctest, then builds
# the threaded tests with ThreadSanitizer and runs them, then replays the fuzz harnesses' seed
# corpora and kept regression inputs (build-fuzz/, clang-14: test/fuzz). Arguments go to the
# ASan and fuzz ctest runs. A failed check fails the run at the end, after the tests have run,
# so one red check does not hide the state of everything else.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh test
checks=0
tools/check-layers.sh --self-test && tools/check-layers.sh || checks=1
tools/format.sh --check || checks=1
cmake -S . -B build-test -DINFERD_SANITIZE=ON -DINFERD_WERROR=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-test -j"$(nproc)"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
rc=0
(cd build-test && ctest --output-on-failure -j"$(nproc)" --timeout 300 "$@") || rc=$?
# The threaded tests again under ThreadSanitizer (its own build of just what they need): the
# engine's workers, the stream pool, the log writer, the gzip offload, health setters from
# other threads, metrics updates from several threads.
tsan_tests=(engine_scheduler engine_pool cuda_stream_pool test_server_log test_server_h2 test_health_registry
            test_metrics_concurrency)
cmake -S . -B build-tsan -DINFERD_TSAN=ON -DINFERD_WERROR=ON -DINFERD_CUDA=OFF \
  -DCMAKE_BUILD_TYPE=Debug >/dev/null
cmake --build build-tsan -j"$(nproc)" --target "${tsan_tests[@]}"
regex="^($(IFS='|'; echo "${tsan_tests[*]}"))\$"
(cd build-tsan && TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
  ctest --output-on-failure -j"$(nproc)" --timeout 300 -R "$regex") || tsan=1
CC=clang-14 cmake -S . -B build-fuzz -DINFERD_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target fuzz
(cd build-fuzz && ctest --output-on-failure -j"$(nproc)" --timeout 300 "$@") || rc=$?
if [ $checks != 0 ]; then
  echo "test.sh: the layering or formatting check failed (see above)"
  [ $rc != 0 ] || rc=1
fi
if [ "${tsan:-0}" != 0 ]; then
  echo "test.sh: a threaded test failed under ThreadSanitizer (build-tsan, see above)"
  [ $rc != 0 ] || rc=1
fi
exit $rc
