#!/usr/bin/env bash
# clang-format with the repository's .clang-format over every C, C++ and CUDA source of the
# project (server/, health/, metrics/, engine/, cuda/, tools/, test/).
#
#   tools/format.sh          reformat those files in place
#   tools/format.sh --check  list the files clang-format would change and fail (CI)
set -euo pipefail
cd "$(dirname "$0")/.."
cf=$(command -v clang-format || command -v clang-format-14 || true)
if [ -z "$cf" ]; then
  echo "format.sh: clang-format not installed (tools/deps.sh test installs it)" >&2
  exit 2
fi
mapfile -d '' files < <(find server health metrics engine cuda tools test -type f \
  \( -name '*.c' -o -name '*.h' -o -name '*.cc' -o -name '*.cu' -o -name '*.cuh' \) -print0 |
  sort -z)
if [ "${1:-}" = --check ]; then
  bad=()
  for f in "${files[@]}"; do
    "$cf" --style=file --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("$f")
  done
  if ((${#bad[@]})); then
    echo "format.sh: not formatted with .clang-format (run tools/format.sh):"
    printf '  %s\n' "${bad[@]}"
    exit 1
  fi
  echo "format.sh: ${#files[@]} files formatted"
  exit 0
fi
"$cf" --style=file -i "${files[@]}"
