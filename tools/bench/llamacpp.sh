#!/usr/bin/env bash
# Builds llama.cpp's llama-bench and llama-batched-bench once, for speed comparisons (never
# in CI: about ten minutes of two cores). The source is the tree node-llama-cpp 3.21.1 ships
# as a git bundle (commit 80fb11a, through tools/node-deps.sh --llama-src); it is built
# niced, Release, -DGGML_NATIVE=ON (the ISA of this CPU, as a user building it here would
# get) -DLLAMA_CURL=OFF, static, into an ignored folder, and reused while the commit and
# the flags are unchanged. Prints the folder holding the two binaries.
#   tools/bench/llamacpp.sh        env: LLAMACPP_DIR (default build-llamacpp/), JOBS (nproc)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
dir="${LLAMACPP_DIR:-$root/build-llamacpp}"
jobs="${JOBS:-$(nproc)}"
src="$("$root/tools/node-deps.sh" --llama-src | tail -n 1)"
commit="$(git -C "$src" rev-parse --short HEAD)"
flags=(-DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF
       -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_EXAMPLES=ON)
want="$commit ${flags[*]}"
stamp="$dir/.built"
bin="$dir/build/bin"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" && -x "$bin/llama-bench" &&
      -x "$bin/llama-batched-bench" ]]; then
  echo "$bin"
  exit 0
fi
mkdir -p "$dir"
echo "llamacpp: building llama.cpp $commit into $dir (niced, -j$jobs; about ten minutes on 2 cores)" >&2
nice -n 19 cmake -S "$src" -B "$dir/build" "${flags[@]}" >"$dir/configure.log" 2>&1 ||
  { tail -n 30 "$dir/configure.log" >&2; exit 1; }
nice -n 19 cmake --build "$dir/build" --target llama-bench llama-batched-bench -j"$jobs" \
  >"$dir/build.log" 2>&1 || { tail -n 30 "$dir/build.log" >&2; exit 1; }
echo "$want" >"$stamp"
echo "$bin"
