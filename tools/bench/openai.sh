#!/bin/sh
# The OpenAI API (server-sent events) beside gRPC Generate, in one run on one server.
#
# Release build (no sanitizers, CUDA off) in build-bench-inf/ (shared with engine.sh), the
# stories15M-shaped model engine.sh uses (dim 288, hidden 768, 6 layers, 6 heads, vocab 32000,
# seq 256, random weights). For 1 and 16 concurrent streams, the same requests (5 prompt token
# ids, greedy, ignore_eos, T tokens) through
#   grpc   : `inferctl bench` (C client, nghttp2, one h2c connection per stream)
#   openai : `inferctl bench --api openai` (C client, POST /v1/completions with stream and
#            include_usage, one HTTP/1.1 keep-alive connection per stream)
# alternately REPEAT times (grpc, openai, grpc, ...), medians kept, because the machine may be
# shared. Prints aggregate tokens/s, per-stream decode tokens/s, time to first token p50/p99,
# the reactor thread's CPU time per streamed token (1/CLK_TCK resolution, over all runs of an API),
# and openai/grpc. Goal (issue 12): within 3%.
#
#   tools/bench/openai.sh [threads (default: all cores)] [tokens per stream (200)]
# env: REPEAT (5), STREAMS ("1 16"), REQUESTS (per stream count: 2 x streams), BUILD_DIR
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/tools/bench/lib.sh"
build=${BUILD_DIR:-$root/build-bench-inf}
threads=${1:-$(nproc)}
tokens=${2:-200}
repeat=${REPEAT:-5}
streams=${STREAMS:-"1 16"}

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DINFERD_SANITIZE=OFF -DINFERD_TESTS=OFF \
  -DINFERD_CUDA=OFF >/dev/null
cmake --build "$build" --target inferd inferctl mkmodel -j"$(nproc)" >/dev/null
model=$build/models/stories15M-shape.bin
tok=$build/models/stories15M-shape.tokenizer.bin
if [ ! -f "$model" ]; then
  mkdir -p "$build/models"
  "$build/tools/mkmodel/mkmodel" --dim 288 --hidden-dim 768 --layers 6 --heads 6 --kv-heads 6 \
    --vocab 32000 --seq-len 256 --seed 15 --out "$model" --tokenizer-out "$tok" >/dev/null
fi
inferctl=$build/tools/inferctl/inferctl
start_inferd "$build" --model "$model" --tokenizer "$tok" --threads "$threads" --max-batch 64 \
  --max-queued 1024

echo "openai.sh: $(machine), threads $threads, $tokens tokens/stream, median of $repeat," \
  "load average $(load_average)"
echo "model: stories15M shape (dim 288, hidden 768, 6 layers, 6 heads, vocab 32000, seq 256), fp32 random weights"

# the reactor runs both APIs: its CPU time per streamed token is the API path's own cost, a
# figure a shared machine's load moves far less than tokens/s (reactor_ticks, tools/bench/lib.sh)
hz=$(getconf CLK_TCK)

for c in $streams; do
  n=${REQUESTS:-$((2 * c))}
  : >"$tmp/grpc" && : >"$tmp/openai"
  r=0
  ticks_grpc=0 ticks_openai=0
  while [ $r -lt "$repeat" ]; do
    t0=$(reactor_ticks)
    "$inferctl" --addr "127.0.0.1:$port" bench --streams "$c" --requests "$n" --max-tokens "$tokens" \
      --conns "$c" >>"$tmp/grpc"
    t1=$(reactor_ticks)
    "$inferctl" --addr "127.0.0.1:$port" bench --streams "$c" --requests "$n" --max-tokens "$tokens" \
      --api openai >>"$tmp/openai"
    t2=$(reactor_ticks)
    ticks_grpc=$((ticks_grpc + t1 - t0)) ticks_openai=$((ticks_openai + t2 - t1))
    r=$((r + 1))
  done
  # tokens each API streamed: the measured requests plus inferctl's warm-up round (16 per stream)
  w=$((tokens < 16 ? tokens : 16))
  ntok=$((repeat * (n * tokens + c * w)))
  for api in grpc openai; do
    agg=$(field 'aggregate' <"$tmp/$api" | median)
    dec=$(field 'decode' <"$tmp/$api" | median)
    p50=$(field 'p50' <"$tmp/$api" | median)
    p99=$(field 'p99' <"$tmp/$api" | median)
    fail=$(sed -n 's/.*failed \([0-9]*\).*/\1/p' <"$tmp/$api" | awk '{s+=$1} END {print s+0}')
    if [ "$api" = grpc ]; then ticks=$ticks_grpc; else ticks=$ticks_openai; fi
    cpu=$(awk -v t="$ticks" -v hz="$hz" -v n="$ntok" 'BEGIN {printf "%.1f", t / hz * 1e6 / n}')
    printf "%-6s streams %3d  aggregate %8.1f tok/s  per-stream decode %7.1f tok/s  ttft p50 %7.2f ms  p99 %7.2f ms  reactor CPU/token %5.1f us  failed %s\n" \
      "$api" "$c" "$agg" "$dec" "$p50" "$p99" "$cpu" "$fail"
    eval "agg_$api=$agg; p50_$api=$p50; cpu_$api=$cpu"
  done
  awk -v a="$agg_openai" -v g="$agg_grpc" -v ta="$p50_openai" -v tg="$p50_grpc" -v ca="$cpu_openai" \
    -v cg="$cpu_grpc" -v c="$c" \
    'BEGIN {printf "openai/grpc streams %3d  aggregate %.3f  ttft p50 %.3f  reactor CPU/token %.2f\n", c, a / g, ta / tg, (cg > 0 ? ca / cg : 0)}'
done
