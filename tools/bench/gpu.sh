#!/bin/sh
# GPU benchmark for issue 6 (needs an NVIDIA GPU; exits 77 without one).
# Release build with CUDA in build-bench-gpu/, then for a stories15M-shaped model (dim 288,
# hidden 768, 6 layers, 6 heads, vocab 32000, seq 256) and a stories110M-shaped one (dim
# 768, hidden 2048, 12 layers, 12 heads, vocab 32000, seq 1024), random weights from
# mkmodel:
#   * single-stream and 64-stream decode tokens/s on cuda fp32, cuda bf16 and the CPU
#   * the decode step time at batch 1 against the memory-bandwidth bound
#     (weight bytes read per step / measured device copy bandwidth)
# Paste the output into tools/bench/RESULTS.md. Goals (issue 6): batch-1 step within 2x
# of the bound for the 110M shape; 64-stream aggregate over 50x the CPU's.
#   tools/bench/gpu.sh [tokens per stream (200)] [cuda streams (4)] [cpu threads (all)]
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build-bench-gpu}
tokens=${1:-200}
streams=${2:-4}
threads=${3:-$(nproc)}
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DINFERD_SANITIZE=OFF -DINFERD_TESTS=OFF \
  -DINFERD_CUDA=ON >/dev/null
if ! grep -q '^INFERD_HAVE_CUDA:INTERNAL=ON' "$build/CMakeCache.txt"; then
  echo "gpu.sh: the CUDA backend was not built (no CUDA Toolkit found)" >&2
  exit 77
fi
cmake --build "$build" --target mkmodel gpu_bench -j"$(nproc)" >/dev/null
mk() { # name mkmodel-args...
  name=$1; shift
  if [ ! -f "$build/models/$name.bin" ]; then
    mkdir -p "$build/models"
    "$build/tools/mkmodel/mkmodel" "$@" --out "$build/models/$name.bin" \
      --tokenizer-out "$build/models/$name.tokenizer.bin"
  fi
}
mk stories15M-shape --dim 288 --hidden-dim 768 --layers 6 --heads 6 --kv-heads 6 \
  --vocab 32000 --seq-len 256 --seed 15
mk stories110M-shape --dim 768 --hidden-dim 2048 --layers 12 --heads 12 --kv-heads 12 \
  --vocab 32000 --seq-len 1024 --seed 110
bench="$build/tools/gpu_bench"
echo "gpu.sh: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo 'nvidia-smi unavailable')"
echo "host: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
status=0
for shape in stories15M-shape stories110M-shape; do
  m="$build/models/$shape.bin"
  t="$build/models/$shape.tokenizer.bin"
  echo "== $shape"
  "$bench" "$m" "$t" cuda:0 fp32 "$streams" "$tokens" 1 64 || status=$?
  "$bench" "$m" "$t" cuda:0 bf16 "$streams" "$tokens" 1 64 || status=$?
  # the CPU contrast (engine threads = cpu threads); fewer tokens, it is slow
  cpu_tokens=$((tokens / 4 > 16 ? tokens / 4 : 16))
  INFERD_THREADS=$threads "$bench" "$m" "$t" cpu fp32 0 "$cpu_tokens" 1 64 || status=$?
done
exit $status
