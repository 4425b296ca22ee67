#!/usr/bin/env bash
# Fails when an #include climbs a floor (ARCHITECTURE.md). Floors, bottom up:
#   0  metrics/, server/base/         (neither includes the other)
#   1  engine/, with cuda/ beside it  (cuda/ may include engine/backend.h and nothing else of
#                                      the engine; the engine includes nothing of cuda/)
#   2  server/core/
#   3  health/
#   4  server/services/
#   5  server/app.c, server/app.h, server/main.c
# A file may include its own folder's headers and headers of lower floors. Generated protobuf
# headers (inferd/, grpc/, google/) sit below every floor. Some folders also may not include
# certain libraries (the engine knows no libevent, nghttp2 or OpenSSL; metrics no zlib).
# test/ and tools/ are outside the floors.
#
#   tools/check-layers.sh [ROOT]      check the tree at ROOT (default: the repository)
#   tools/check-layers.sh --self-test check that the rules catch what they must
set -euo pipefail

# module of a path relative to the root (a folder, or the composition root's files)
module_of() {
  case "$1" in
    server/base/*) echo base ;;
    server/core/*) echo core ;;
    server/services/*) echo services ;;
    server/app.c | server/app.h | server/main.c) echo app ;;
    server/*) echo server ;; # a file straight under server/ other than the composition root
    health/*) echo health ;;
    metrics/*) echo metrics ;;
    engine/*) echo engine ;;
    cuda/*) echo cuda ;;
    *) echo none ;;
  esac
}

floor_of() {
  case "$1" in
    metrics | base) echo 0 ;;
    engine | cuda) echo 1 ;;
    core) echo 2 ;;
    health) echo 3 ;;
    services) echo 4 ;;
    app) echo 5 ;;
    *) echo -1 ;;
  esac
}

# Libraries a module may not include (a prefix of the <...> path).
forbidden_libs() {
  case "$1" in
    engine | cuda) echo "event2/ nghttp2/ openssl/ http_parser.h" ;;
    metrics) echo "event2/ nghttp2/ openssl/ zlib.h http_parser.h" ;;
    base) echo "event2/ nghttp2/ openssl/ http_parser.h" ;;
    *) echo "" ;;
  esac
}

check() {
  local root=$1 bad=0 file rel mod fl line num inc target tmod tfl
  while IFS= read -r -d '' file; do
    rel=${file#"$root"/}
    mod=$(module_of "$rel")
    if [ "$mod" = server ]; then
      echo "$rel: a file straight under server/ belongs in base/, core/ or services/ (or is app.c/main.c)"
      bad=1
      continue
    fi
    fl=$(floor_of "$mod")
    while IFS= read -r line; do
      num=${line%%:*}
      inc=${line#*:}
      if [[ $inc =~ ^[[:space:]]*#[[:space:]]*include[[:space:]]*\"([^\"]+)\" ]]; then
        target=${BASH_REMATCH[1]}
        case "$target" in
          */*) ;;
          *) continue ;; # its own folder
        esac
        tmod=$(module_of "$target")
        [ "$tmod" = none ] && continue # generated protobuf headers, below every floor
        [ "$tmod" = "$mod" ] && continue
        tfl=$(floor_of "$tmod")
        if [ "$mod" = cuda ] && [ "$tmod" = engine ]; then
          [ "$target" = engine/backend.h ] && continue
          echo "$rel:$num: cuda/ includes $target: from the engine it may include engine/backend.h only"
          bad=1
          continue
        fi
        if [ "$tfl" -gt "$fl" ]; then
          echo "$rel:$num: $mod (floor $fl) includes $target ($tmod, floor $tfl): an include that climbs a floor"
          bad=1
        elif [ "$tfl" -eq "$fl" ]; then
          echo "$rel:$num: $mod (floor $fl) includes $target ($tmod, the same floor): folders beside each other do not include each other"
          bad=1
        fi
      elif [[ $inc =~ ^[[:space:]]*#[[:space:]]*include[[:space:]]*\<([^\>]+)\> ]]; then
        target=${BASH_REMATCH[1]}
        for lib in $(forbidden_libs "$mod"); do
          case "$target" in
            "$lib"*)
              echo "$rel:$num: $mod includes <$target>, a library it must not depend on"
              bad=1
              ;;
          esac
        done
      fi
    done < <(grep -n '^[[:space:]]*#[[:space:]]*include' "$file" || true)
  done < <(find "$root/metrics" "$root/server" "$root/health" "$root/engine" "$root/cuda" \
    -type f \( -name '*.c' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' \) -print0 2>/dev/null)
  return $bad
}

self_test() {
  local t out fails=0
  t=$(mktemp -d)
  trap 'rm -rf "$t"' RETURN
  mkdir -p "$t"/{metrics,server/base,server/core,server/services,health,engine,cuda}
  # a clean tree passes
  printf '#include "server/base/log.h"\n#include "metrics/metrics.h"\n#include "engine/engine.h"\n' >"$t/server/core/ok.c"
  printf '#include "server/core/grpc.h"\n#include "inferd/v1/inference.pb-c.h"\n' >"$t/health/ok.c"
  printf '#include "engine/backend.h"\n#include "stream_pool.h"\n' >"$t/cuda/ok.h"
  printf '#include "health/health.h"\n#include "server/services/x.h"\n' >"$t/server/app.c"
  if ! out=$(check "$t"); then
    echo "self-test: a clean tree was refused:"
    echo "$out"
    fails=1
  fi
  # each of these must be caught, with a message naming the include
  expect() { # file content needle
    local f=$1
    printf '%s\n' "$2" >"$t/$f"
    if out=$(check "$t"); then
      echo "self-test: $f with '$2' passed"
      fails=1
    elif ! grep -qF "$3" <<<"$out"; then
      echo "self-test: $f with '$2': expected '$3' in: $out"
      fails=1
    fi
    rm -f "$t/$f"
  }
  expect server/core/bad.c '#include "health/health.h"' "server/core/bad.c:1: core (floor 2) includes health/health.h"
  expect server/core/bad.c '#include "server/services/inference.h"' "climbs a floor"
  expect health/bad.c '#include "server/services/inference.h"' "health (floor 3) includes server/services/inference.h"
  expect server/base/bad.c '#include "metrics/metrics.h"' "base (floor 0) includes metrics/metrics.h (metrics, the same floor)"
  expect metrics/bad.c '#include "server/base/log.h"' "metrics (floor 0) includes server/base/log.h"
  expect cuda/bad.h '#include "engine/internal.h"' "cuda/ includes engine/internal.h"
  expect engine/bad.c '#include "cuda/cuda_backend.h"' "engine (floor 1) includes cuda/cuda_backend.h (cuda, the same floor)"
  expect engine/bad.c '#include "server/core/grpc.h"' "climbs a floor"
  expect engine/bad.c '#include <event2/event.h>' "engine includes <event2/event.h>"
  expect metrics/bad.c '#include <zlib.h>' "metrics includes <zlib.h>"
  expect server/services/bad.c '#include "server/app.h"' "services (floor 4) includes server/app.h"
  expect server/stray.c '#include <stdio.h>' "a file straight under server/"
  [ $fails = 0 ] && echo "check-layers self-test: ok"
  return $fails
}

if [ "${1:-}" = --self-test ]; then
  self_test
  exit
fi
root=$(cd "${1:-$(dirname "$0")/..}" && pwd)
if check "$root"; then
  echo "check-layers: ok"
else
  echo "check-layers: includes above climb a floor (ARCHITECTURE.md)"
  exit 1
fi
