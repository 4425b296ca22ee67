#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser of outside input (test/fuzz). Builds the libFuzzer
# harnesses with clang-14, AddressSanitizer and UndefinedBehaviorSanitizer in build-fuzz/,
# then runs each one for SECONDS (default 600) on its corpus: build-fuzz/fuzz/corpus/<harness>
# (kept between runs, grown by each), the generated seeds and the kept regression inputs.
# Prints one line per harness: executions, coverage (edges, features), corpus size, findings.
# A crash, leak, timeout or sanitizer report leaves its input in build-fuzz/fuzz/artifacts/
# <harness>/ and fails the script (findings counts this run's); make it a regression test (test/fuzz/regress/<harness>/
# if it is a few hundred bytes, else a unit test that builds it) and fix the bug.
#
#   tools/fuzz.sh [SECONDS]
#   FUZZ_JOBS=2 tools/fuzz.sh 600       harnesses run at once (default 1; each is nice'd)
#   FUZZ_ONLY="gguf h2" tools/fuzz.sh   a subset
#   FUZZ_ARGS="-max_len=65536"          more libFuzzer flags for every harness
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-600}
jobs=${FUZZ_JOBS:-1}
CC=clang-14 cmake -S . -B build-fuzz -DINFERD_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build-fuzz -j"$(nproc)" --target fuzz >/dev/null
fz=build-fuzz/fuzz
harnesses=${FUZZ_ONLY:-$(cat $fz/harnesses.txt)}
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

run() { # harness
  local h=$1 bin=build-fuzz/test/fuzz/fuzz_$1
  local dirs=("$fz/corpus/$h" "$fz/seeds/$h")
  [[ -d test/fuzz/regress/$h ]] && dirs+=("test/fuzz/regress/$h")
  mkdir -p "$fz/corpus/$h" "$fz/artifacts/$h" "$fz/logs"
  touch "$fz/logs/$h.start"
  # -timeout: an input taking longer is a hang (a finding); -rss_limit_mb: a memory blow-up is too
  # shellcheck disable=SC2086
  nice "$bin" -max_total_time="$secs" -timeout=25 -rss_limit_mb=2560 -print_final_stats=1 \
    -artifact_prefix="$fz/artifacts/$h/" ${FUZZ_ARGS:-} "${dirs[@]}" >"$fz/logs/$h.log" 2>&1 || true
}

summary() { # harness
  local h=$1 log=$fz/logs/$1.log
  local done execs cov total ft corp found
  done=$(grep -E '^#[0-9]+[[:space:]]+(DONE|pulse|NEW|REDUCE|INITED)' "$log" | tail -1 || true)
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$done")
  total=$(sed -n 's/.*(\([0-9]*\) inline 8-bit counters).*/\1/p' "$log" | head -1)
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$done")
  corp=$(sed -n 's/.* corp: \([0-9]*\/[0-9]*[a-zA-Z]*\).*/\1/p' <<<"$done")
  found=$(find "$fz/artifacts/$h" -type f -newer "$fz/logs/$h.start" | wc -l)
  printf '%-14s %8ss %12s %14s %8s %14s %9s\n' "$h" "$secs" "${execs:-?}" \
    "${cov:-?}/${total:-?}" "${ft:-?}" "${corp:-?}" "$found"
  [[ $found == 0 ]] && ! grep -qE 'ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer)|runtime error' "$log"
}

echo "tools/fuzz.sh: $secs s per harness, $jobs at once ($(nproc) cores), logs in $fz/logs/"
active=0
for h in $harnesses; do
  run "$h" &
  active=$((active + 1))
  if ((active >= jobs)); then
    wait -n
    active=$((active - 1))
  fi
done
wait
printf '%-14s %9s %12s %14s %8s %14s %9s\n' harness time executions edges/instrum. features corpus findings
rc=0
for h in $harnesses; do
  summary "$h" || rc=1
done
if ((rc)); then
  echo "tools/fuzz.sh: findings: see $fz/artifacts/ and $fz/logs/"
fi
exit $rc
