#!/bin/sh
# Engine benchmark through the gRPC server, beside the engine alone.
#
# Release build (no sanitizers, CUDA off) in build-bench-inf/, a stories15M-shaped model
# (dim 288, hidden 768, 6 layers, 6 heads, vocab 32000, seq 256, random weights; the same
# file tools/bench/engine_core.sh makes), then for 1, 4, 16 and 64 concurrent streams:
#   engine alone : tools/bench/engine_core.c (engine_submit/engine_poll in one process)
#   server path  : inferd + `inferctl bench` (C client, nghttp2, one h2c connection), the
#                  same requests (5 prompt token ids, greedy, ignore_eos, T tokens each)
# Each pair is run REPEAT times alternately (engine, server, engine, ...) and the median
# kept, because the machine may be shared. Prints single-stream decode tokens/s,
# aggregate tokens/s, time to first token p50/p99 (client-side: HEADERS sent -> first
# message with tokens), the server/engine ratio, and the health Check latency while the
# engine is saturated (64 streams).
#
#   tools/bench/engine.sh [threads (default: all cores)] [tokens per stream (200)]
# env: REPEAT (3), STREAMS ("1 4 16 64"), BUILD_DIR, ROUNDS (requests per stream: 1, the engine benchmark's shape)
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/tools/bench/lib.sh"
build=${BUILD_DIR:-$root/build-bench-inf}
threads=${1:-$(nproc)}
tokens=${2:-200}
repeat=${REPEAT:-3}
streams=${STREAMS:-"1 4 16 64"}
rounds=${ROUNDS:-1}

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DINFERD_SANITIZE=OFF -DINFERD_TESTS=OFF \
  -DINFERD_CUDA=OFF >/dev/null
cmake --build "$build" --target inferd inferctl mkmodel engine_core_bench -j"$(nproc)" >/dev/null
model=$build/models/stories15M-shape.bin
tok=$build/models/stories15M-shape.tokenizer.bin
if [ ! -f "$model" ]; then
  mkdir -p "$build/models"
  "$build/tools/mkmodel/mkmodel" --dim 288 --hidden-dim 768 --layers 6 --heads 6 --kv-heads 6 \
    --vocab 32000 --seq-len 256 --seed 15 --out "$model" --tokenizer-out "$tok"
fi
inferctl=$build/tools/inferctl/inferctl
core=$build/tools/engine_core_bench

start_inferd "$build" --model "$model" --tokenizer "$tok" --threads "$threads" --max-batch 64 \
  --max-queued 1024

echo "engine.sh: $(machine), threads $threads, $tokens tokens/stream, median of $repeat," \
  "load average $(load_average)"
echo "model: stories15M shape (dim 288, hidden 768, 6 layers, 6 heads, vocab 32000, seq 256), fp32 random weights"

hz=$(getconf CLK_TCK)

printf '\n%-7s %10s %10s %7s  %10s %10s %7s  %9s %9s  %s\n' streams engine_agg server_agg ratio \
  engine_dec server_dec ratio ttft_p50 ttft_p99 reactor_cpu/token
for n in $streams; do
  : >"$tmp/e" && : >"$tmp/s"
  r=0
  ticks=0
  while [ $r -lt "$repeat" ]; do
    "$core" "$model" "$tok" "$threads" "$tokens" "$n" >>"$tmp/e"
    t0=$(reactor_ticks)
    "$inferctl" --addr "127.0.0.1:$port" bench --streams "$n" --requests $((n * rounds)) \
      --max-tokens "$tokens" >>"$tmp/s"
    ticks=$((ticks + $(reactor_ticks) - t0))
    r=$((r + 1))
  done
  # tokens the reactor streamed: the measured requests plus the 16-token warm-up round
  ntok=$((repeat * (n * rounds * tokens + n * 16)))
  ea=$(field aggregate <"$tmp/e" | median)
  ed=$(field 'per-stream decode' <"$tmp/e" | median)
  sa=$(field aggregate <"$tmp/s" | median)
  sd=$(field 'per-stream decode' <"$tmp/s" | median)
  t50=$(field 'ttft p50' <"$tmp/s" | median)
  t99=$(field 'p99' <"$tmp/s" | median)
  printf '%-7s %10s %10s %7s  %10s %10s %7s  %7sms %7sms  %s\n' "$n" "$ea" "$sa" \
    "$(echo "$sa $ea" | awk '{printf "%.3f", $1/$2}')" "$ed" "$sd" "$(echo "$sd $ed" | awk '{printf "%.3f", $1/$2}')" \
    "$t50" "$t99" "$(echo "$ticks $hz $ntok" | awk '{printf "%.1f us", $1 / $2 * 1e6 / $3}')"
  cat "$tmp/e" "$tmp/s" >>"$tmp/all"
done
echo
echo "tok/s, medians of $repeat runs. ratio = server/engine (aggregate; per-stream decode); the server's"
echo "overhead per token = 1 - ratio. reactor_cpu/token: CPU time of inferd's reactor thread per streamed token"
echo "(resolution 1/$hz s over all runs), the server path's own cost on top of the engine."
echo

# health Check latency while 64 streams keep the engine saturated
"$inferctl" --addr "127.0.0.1:$port" bench --streams 64 --requests 256 --max-tokens "$tokens" --warmup 0 \
  >"$tmp/load" 2>&1 &
lp=$!
sleep 1
"$inferctl" --addr "127.0.0.1:$port" ping --count 2000 --interval-ms 1 inferd.v1.Inference | sed 's/^/saturated (64 streams): /'
kill $lp 2>/dev/null || true # the load only had to outlast the pings
wait $lp 2>/dev/null || true
echo
echo "raw runs:"
cat "$tmp/all"
