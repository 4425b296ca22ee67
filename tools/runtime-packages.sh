#!/usr/bin/env bash
# Prints the Debian packages that hold the shared libraries the given ELF files load, one a
# line, sorted. Fails, naming the file and the library, when a library is not found or no
# installed package owns it. The container image's build stage (Containerfile) runs it on the
# built binaries, so the runtime stage installs exactly what they link, whatever a new
# dependency adds, instead of a list kept by hand.
# Usage: tools/runtime-packages.sh FILE...
set -euo pipefail
if (($# == 0)) || [[ $1 == -h || $1 == --help ]]; then
  sed -n '2,7s/^# \{0,1\}//p' "$0"
  exit $((($# == 0) ? 2 : 0))
fi
pkgs=()
for f in "$@"; do
  if ! out=$(ldd "$f" 2>&1); then
    echo "runtime-packages: ldd $f: $out" >&2
    exit 1
  fi
  while read -r name arrow path _; do
    [[ $arrow == "=>" ]] || continue # the vDSO and the dynamic loader (libc6, always there)
    if [[ $path == not ]]; then
      echo "runtime-packages: $f needs $name, which is not installed" >&2
      exit 1
    fi
    real=$(realpath -e "$path")
    # dpkg knows a library by the path its package shipped (/lib or /usr/lib on a merged-/usr
    # system): match by file name, then keep the owner whose path is the same file.
    owner=""
    while IFS= read -r line; do
      [[ $line == diversion* ]] && continue
      p=${line%%: *} file=${line#*: }
      [[ -e $file && $(realpath -e "$file") == "$real" ]] || continue
      owner=${p%%,*}
      owner=${owner%%:*}
      break
    done < <(dpkg-query -S "*/$(basename "$path")" 2>/dev/null || true)
    if [[ -z $owner ]]; then
      echo "runtime-packages: $f needs $path, which no installed package owns" >&2
      exit 1
    fi
    pkgs+=("$owner")
  done <<<"$out"
done
printf '%s\n' "${pkgs[@]}" | sort -u
