# Shared pieces of the server benchmarks (engine.sh, openai.sh, prompt_load.sh), sourced:
#   . "$root/tools/bench/lib.sh"
# POSIX sh, like the scripts that use it.

# A free TCP port on 127.0.0.1.
free_port() {
  /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_inferd BUILD [inferd options...]: starts BUILD/server/inferd on 127.0.0.1:$port (no system
# port, warnings only, no shutdown delay) in the background, stopped and cleaned up on exit, and
# waits until inferd.v1.Inference is SERVING. Sets port, pid and tmp (a scratch folder, removed on
# exit; inferd's stderr is $tmp/inferd.err).
start_inferd() {
  sb_build=$1
  shift
  port=$(free_port)
  tmp=$(mktemp -d)
  "$sb_build/server/inferd" --listen "127.0.0.1:$port" --system-port -1 --log warn --shutdown-delay 0 \
    "$@" 2>"$tmp/inferd.err" &
  pid=$!
  trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$tmp"' EXIT INT TERM
  sb_i=0
  until "$sb_build/tools/inferctl/inferctl" --addr "127.0.0.1:$port" health inferd.v1.Inference \
    >/dev/null 2>&1; do
    sb_i=$((sb_i + 1))
    if [ $sb_i -gt 300 ] || ! kill -0 $pid 2>/dev/null; then
      echo "inferd did not become SERVING:" >&2
      cat "$tmp/inferd.err" >&2
      exit 1
    fi
    sleep 0.1
  done
}

# The CPU's name, the core count and the load average, for a benchmark's first line.
machine() {
  echo "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores"
}
load_average() { cut -d' ' -f1-3 /proc/loadavg; }

# The median of the numbers on stdin.
median() { sort -g | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
# The number after NAME in a line of stdin ("aggregate 512.3 tok/s": field aggregate).
field() { sed -n "s/.*$1 *\([0-9.]*\).*/\1/p"; }
# CPU ticks (user+system) of inferd's reactor (its main thread, which serves every API); divide
# by $(getconf CLK_TCK) for seconds.
reactor_ticks() { awk '{print $14 + $15}' "/proc/$pid/task/$pid/stat"; }
