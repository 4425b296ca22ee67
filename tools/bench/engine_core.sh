#!/bin/sh
# Engine-only benchmark: release build (no sanitizers) in build-bench-engine/, a
# stories15M-shaped model (dim 288, hidden 768, 6 layers, 6 heads, vocab 32000, seq 256,
# random weights) from mkmodel, then single-stream and aggregate decode tokens/s at
# 1, 4, 16 and 64 concurrent sequences.
#   tools/bench/engine_core.sh [threads (default: all cores)] [tokens per stream (200)]
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build-bench-engine}
threads=${1:-$(nproc)}
tokens=${2:-200}
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DINFERD_SANITIZE=OFF -DINFERD_TESTS=OFF >/dev/null
cmake --build "$build" --target mkmodel engine_core_bench -j"$(nproc)" >/dev/null
model=$build/models/stories15M-shape.bin
tok=$build/models/stories15M-shape.tokenizer.bin
if [ ! -f "$model" ]; then
  mkdir -p "$build/models"
  "$build/tools/mkmodel/mkmodel" --dim 288 --hidden-dim 768 --layers 6 --heads 6 --kv-heads 6 \
    --vocab 32000 --seq-len 256 --seed 15 --out "$model" --tokenizer-out "$tok"
fi
echo "engine_core: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, threads $threads"
"$build/tools/engine_core_bench" "$model" "$tok" "$threads" "$tokens"
