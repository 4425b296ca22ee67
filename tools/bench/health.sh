#!/bin/bash
# Benchmark: grpc.health.v1.Health/Check under h2load, inferd against the stock
# gRPC C++ server (Debian's libgrpc++ with grpc::EnableDefaultHealthCheckService),
# in one run on the same machine, plus inferd's resident memory with 1,000 idle
# HTTP/2 connections.
#
# Usage: tools/bench/health.sh            (from anywhere; builds what it needs)
# Environment:
#   BUILD=build-bench   inferd release build folder (relative to the repo root)
#   N=200000            requests per measured run      C=16 M=16  connections, streams each
#   RUNS=3              measured runs per server (the median run by rate is reported)
#   IDLE=1000           idle connections for the memory figure
#   CLIENT_CPU=0 SERVER_CPU=1   taskset cores (h2load on one, each server on the other)
# Needs: cmake, g++, pkg-config, libgrpc++-dev, nghttp2-client (h2load), curl, python3.
# Goals (issue 2): inferd >= 2x the peer's rate with a lower p99; RSS < 32 MiB.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=${BUILD:-build-bench}
case $BUILD in /*) ;; *) BUILD=$ROOT/$BUILD ;; esac
N=${N:-200000}
C=${C:-16}
M=${M:-16}
RUNS=${RUNS:-3}
IDLE=${IDLE:-1000}
CLIENT_CPU=${CLIENT_CPU:-0}
SERVER_CPU=${SERVER_CPU:-1}
PY=/usr/bin/python3
[ -x $PY ] || PY=python3

need() { command -v "$1" >/dev/null || { echo "health.sh: $1 not found (apt-get install $2)" >&2; exit 1; }; }
need h2load nghttp2-client
need curl curl
need taskset util-linux
need g++ g++
need pkg-config pkg-config
pkg-config --exists grpc++ || { echo "health.sh: grpc++ not found (apt-get install libgrpc++-dev)" >&2; exit 1; }
if [ "$(nproc)" -lt 2 ]; then
  echo "health.sh: fewer than 2 CPUs; running unpinned" >&2
  pin_client() { "$@"; }
  pin_server() { exec "$@"; }
else
  pin_client() { taskset -c "$CLIENT_CPU" "$@"; }
  pin_server() { exec taskset -c "$SERVER_CPU" "$@"; }  # only ever run with &: $! is the server
fi

WORK=$(mktemp -d /tmp/inferd-bench.XXXXXX)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]:-}"; do if [ -n "$p" ]; then kill "$p" 2>/dev/null || true; fi; done
  for p in "${PIDS[@]:-}"; do if [ -n "$p" ]; then wait "$p" 2>/dev/null || true; fi; done
  rm -rf "$WORK"
}
trap cleanup EXIT
ulimit -n "$(( IDLE + 1024 > $(ulimit -Hn) ? $(ulimit -Hn) : IDLE + 1024 ))"

# ---- build: inferd (release, no sanitizers) and the peer
echo "== building inferd (Release) in $BUILD" >&2
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DINFERD_SANITIZE=OFF -DINFERD_TESTS=OFF >"$WORK/cmake.log" 2>&1 \
  || { cat "$WORK/cmake.log" >&2; exit 1; }
cmake --build "$BUILD" --target inferd -j"$(nproc)" >"$WORK/build.log" 2>&1 || { tail -50 "$WORK/build.log" >&2; exit 1; }
INFERD=$BUILD/server/inferd
PEER=$BUILD/bench-peer/peer
if [ ! -x "$PEER" ] || [ "$ROOT/tools/bench/peer/peer.cc" -nt "$PEER" ]; then
  echo "== building the gRPC C++ peer in $BUILD/bench-peer" >&2
  mkdir -p "$BUILD/bench-peer"
  # shellcheck disable=SC2046
  g++ -O2 -std=c++17 -o "$PEER" "$ROOT/tools/bench/peer/peer.cc" $(pkg-config --cflags --libs grpc++)
fi

# ---- the request: HealthCheckRequest{service: ""} (empty message), gRPC-framed
printf '\x00\x00\x00\x00\x00' >"$WORK/check.grpc"
PATH_CHECK=/grpc.health.v1.Health/Check

free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {  # pid port
  for _ in $(seq 200); do
    kill -0 "$1" 2>/dev/null || { echo "health.sh: server exited at start" >&2; return 1; }
    (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "health.sh: port $2 not listening" >&2; return 1
}
start_inferd() {  # port -> sets SPID
  pin_server "$INFERD" --listen "127.0.0.1:$1" --system-port -1 --shutdown-delay 0 --drain-timeout 1s \
    --log warn 2>>"$WORK/inferd.log" &
  SPID=$!; PIDS+=("$SPID"); wait_port "$SPID" "$1"
}
start_peer() {
  pin_server "$PEER" "$1" >/dev/null 2>>"$WORK/peer.log" &
  SPID=$!; PIDS+=("$SPID"); wait_port "$SPID" "$1"
}
stop_server() { kill "$SPID" 2>/dev/null || true; wait "$SPID" 2>/dev/null || true; }

grpc_status_once() {  # port: prints the grpc-status trailer of one Check
  curl -sS --noproxy '*' --http2-prior-knowledge --max-time 5 --data-binary @"$WORK/check.grpc" \
    -H 'content-type: application/grpc' -H 'te: trailers' -D - -o /dev/null \
    "http://127.0.0.1:$1$PATH_CHECK" | tr -d '\r' | sed -n 's/^grpc-status: *//p' | tail -1
}

h2load_run() {  # port n logfile -> h2load output on stdout
  pin_client h2load -n "$2" -c "$C" -m "$M" -t 1 -d "$WORK/check.grpc" \
    -H 'content-type: application/grpc' -H 'te: trailers' ${3:+--log-file="$3"} \
    "http://127.0.0.1:$1$PATH_CHECK"
}

# One measured run: prints "rate p50_us p99_us failed"
measure() {  # name port
  local out log="$WORK/$1.$RANDOM.log"
  out=$(h2load_run "$2" "$N" "$log")
  local rate failed ok2xx
  rate=$(sed -n 's/^finished in .*, \([0-9.]*\) req\/s.*/\1/p' <<<"$out")
  failed=$(sed -n 's/^requests: .* \([0-9]*\) failed, \([0-9]*\) errored, \([0-9]*\) timeout.*/\1+\2+\3/p' <<<"$out")
  ok2xx=$(sed -n 's/^status codes: \([0-9]*\) 2xx.*/\1/p' <<<"$out")
  [ "$ok2xx" = "$N" ] || { echo "health.sh: $1: only $ok2xx of $N were 2xx" >&2; echo "$out" >&2; }
  local pct
  pct=$(cut -f3 "$log" | sort -n | awk '{a[NR]=$1} END {p50=a[int(NR*0.50)+1]; p99=a[int(NR*0.99)+1]; print p50, p99}')
  rm -f "$log"
  echo "$rate $pct $((failed))"
}

bench() {  # name start_fn -> sets RESULT to the median "rate p50 p99 failed"
  local port; port=$(free_port)
  "$2" "$port"
  local st; st=$(grpc_status_once "$port")
  [ "$st" = "0" ] || { echo "health.sh: $1: Check answered grpc-status '$st'" >&2; exit 1; }
  h2load_run "$port" $(( N / 10 > 10000 ? N / 10 : 10000 )) "" >/dev/null   # warm-up
  local results=() t0 t1
  t0=$(cpu_ticks "$SPID")
  for _ in $(seq "$RUNS"); do results+=("$(measure "$1" "$port")"); done
  t1=$(cpu_ticks "$SPID")
  stop_server
  # server CPU time per request (user+sys), robust to other load on the machine
  local cpu; cpu=$(awk -v d=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v n=$((N * RUNS)) 'BEGIN {printf "%.2f", d * 1e6 / hz / n}')
  RESULT="$(printf '%s\n' "${results[@]}" | sort -n -k1 | awk -v n="$RUNS" 'NR==int((n+1)/2)') $cpu"
}

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }  # utime + stime of the server process

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

idle_rss() {  # name start_fn -> sets RESULT to "rss_before_kib rss_after_kib"
  local port; port=$(free_port)
  "$2" "$port"
  sleep 0.5
  local before; before=$(rss_kib "$SPID")
  $PY "$ROOT/tools/bench/idle_conns.py" --port "$port" --count "$IDLE" --hold 600 >"$WORK/idle.out" 2>&1 &
  local ipid=$!; PIDS+=("$ipid")
  for _ in $(seq 600); do grep -q holding "$WORK/idle.out" && break; kill -0 $ipid 2>/dev/null || break; sleep 0.1; done
  grep -q holding "$WORK/idle.out" || { echo "health.sh: idle client failed:" >&2; cat "$WORK/idle.out" >&2; exit 1; }
  sleep 1
  local after; after=$(rss_kib "$SPID")
  kill $ipid; wait $ipid 2>/dev/null || true
  stop_server
  RESULT="$before $after"
}

echo "== h2load -n $N -c $C -m $M -t 1, h2load on CPU $CLIENT_CPU, servers on CPU $SERVER_CPU, $RUNS runs each (median)" >&2
bench peer start_peer;       read -r P_RATE P_P50 P_P99 P_FAIL P_CPU <<<"$RESULT"
bench inferd start_inferd;   read -r I_RATE I_P50 I_P99 I_FAIL I_CPU <<<"$RESULT"
idle_rss inferd start_inferd; read -r I_RSS0 I_RSS1 <<<"$RESULT"
idle_rss peer start_peer;     read -r P_RSS0 P_RSS1 <<<"$RESULT"

us2ms() { awk -v u="$1" 'BEGIN {printf "%.3f", u/1000}'; }
kib2mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k/1024}'; }
RATIO=$(awk -v a="$I_RATE" -v b="$P_RATE" 'BEGIN {printf "%.2f", a/b}')

echo
echo "grpc.health.v1.Health/Check, h2load -n $N -c $C -m $M (median of $RUNS), $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
printf '%-24s %12s %10s %10s %8s %14s\n' server 'req/s' 'p50 ms' 'p99 ms' failed 'CPU us/req'
printf '%-24s %12.0f %10s %10s %8s %14s\n' "gRPC C++ $(pkg-config --modversion grpc++)" "$P_RATE" "$(us2ms "$P_P50")" "$(us2ms "$P_P99")" "$P_FAIL" "$P_CPU"
printf '%-24s %12.0f %10s %10s %8s %14s\n' inferd "$I_RATE" "$(us2ms "$I_P50")" "$(us2ms "$I_P99")" "$I_FAIL" "$I_CPU"
echo "ratio inferd/peer: ${RATIO}x (goal >= 2x, with a lower p99: $([ "$I_P99" -lt "$P_P99" ] && echo yes || echo no))"
echo
echo "VmRSS with $IDLE idle h2c connections (after preface+SETTINGS):"
echo "  inferd: $(kib2mib "$I_RSS1") MiB (idle server $(kib2mib "$I_RSS0") MiB; goal < 32 MiB)"
echo "  peer:   $(kib2mib "$P_RSS1") MiB (idle server $(kib2mib "$P_RSS0") MiB)"
