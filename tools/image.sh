#!/usr/bin/env bash
# Builds inferd's container image with podman and tags it inferd:VERSION (VERSION is what the
# built `inferd --version` prints; deploy/kubernetes/deployment.yaml runs that name).
#
# Usage: tools/image.sh [--cuda] [--tag NAME] [--base IMAGE] [--mirror URL] [--no-cache]
#                       [--iidfile FILE]
#        tools/image.sh --base-only [--base IMAGE] [--mirror URL]
#
#   (default)    Containerfile: Debian 12 (debian:bookworm-slim) build and runtime stages,
#                CPU engine. Prints the image's name and size at the end.
#   --cuda       Containerfile.cuda: NVIDIA's CUDA devel/runtime images (Ubuntu 24.04, CUDA
#                13.0); tagged inferd:VERSION-cuda. It builds only where those base images
#                are present locally or can be pulled: there is no fallback for them.
#   --tag NAME   tag the image NAME instead.
#   --base IMAGE the Debian base (default debian:bookworm-slim).
#   --mirror URL the Debian mirror for debootstrap (default: the one apt is configured with
#                in /etc/apt/sources.list{,.d/*}, else http://deb.debian.org/debian).
#   --base-only  make sure the Debian base image exists (see below), then stop.
#   --no-cache   rebuild every layer.
#   --iidfile F  also write the image's ID to F (a tag can be moved by a concurrent build).
#
# The Debian base: used when podman has it locally; else pulled from docker.io; where no
# container registry can be reached, made here with `debootstrap --variant=minbase bookworm`
# from the configured Debian mirror, trimmed like Debian's slim images (no docs, man pages,
# locales, apt lists) and `podman import`ed as localhost/debian:bookworm-slim. That needs root
# and the debootstrap package (tools/deps.sh test installs it).
#
# Podman runs as `podman --runtime runc --cgroup-manager=cgroupfs` (crun fails on a hybrid
# cgroup v1/v2 host; override with INFERD_PODMAN_FLAGS), builds with `--network host` (the
# build stages run apt-get against the mirror) and explicit `--ulimit nofile=… nproc=…` set
# to this shell's hard limits (nproc at most kernel.pid_max): podman's defaults are higher
# than a container without CAP_SYS_RESOURCE may set on such hosts. `podman run` needs the
# same flags: `tools/image.sh --run-flags` prints them.
set -euo pipefail
shopt -s inherit_errexit # a failure inside $(ensure_base) must stop the script too
cd "$(dirname "$0")/.."

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//p}' "$0"
}

read -r -a podman_flags <<<"${INFERD_PODMAN_FLAGS---runtime runc --cgroup-manager=cgroupfs}"
pm() { podman "${podman_flags[@]}" "$@"; }

run_flags() {
  local nofile nproc pidmax
  nofile=$(ulimit -Hn)
  nproc=$(ulimit -Hu)
  pidmax=$(cat /proc/sys/kernel/pid_max 2>/dev/null || echo 32768)
  [[ $nofile == unlimited ]] && nofile=1048576
  if [[ $nproc == unlimited ]] || ((nproc > pidmax)); then nproc=$pidmax; fi
  echo "--network host --ulimit nofile=$nofile:$nofile --ulimit nproc=$nproc:$nproc"
}

cuda=0 tag="" base="debian:bookworm-slim" mirror="${INFERD_DEBIAN_MIRROR:-}" base_only=0 cache=() iid=()
while (($#)); do
  case "$1" in
    -h | --help) usage; exit 0 ;;
    --run-flags) run_flags; exit 0 ;;
    --cuda) cuda=1 ;;
    --tag) tag=${2:?--tag needs a NAME}; shift ;;
    --base) base=${2:?--base needs an IMAGE}; shift ;;
    --mirror) mirror=${2:?--mirror needs a URL}; shift ;;
    --base-only) base_only=1 ;;
    --no-cache) cache=(--no-cache) ;;
    --iidfile) iid=(--iidfile "${2:?--iidfile needs a FILE}"); shift ;;
    *) echo "image.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
command -v podman >/dev/null || { echo "image.sh: podman is not installed (apt-get install podman runc)" >&2; exit 1; }
read -r -a rflags <<<"$(run_flags)"

# The configured Debian mirror: the first bookworm source apt uses here.
host_mirror() {
  local f uri
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] || continue
    uri=$(awk 'BEGIN{RS=""} /Suites:[^\n]*bookworm([ \n]|$)/ && !/debian-security/ {
                 if (match($0, /URIs:[ \t]*[^ \t\n]+/)) { s = substr($0, RSTART, RLENGTH);
                   sub(/URIs:[ \t]*/, "", s); print s; exit } }' "$f")
    [[ -n $uri ]] && { echo "$uri"; return; }
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f $f ]] || continue
    uri=$(awk '$1 == "deb" { i = 2; if ($2 ~ /^\[/) while ($i !~ /\]$/) i++; if ($2 ~ /^\[/) i++;
                 if ($(i+1) == "bookworm" && $i !~ /security/) { print $i; exit } }' "$f")
    [[ -n $uri ]] && { echo "$uri"; return; }
  done
  echo http://deb.debian.org/debian
}

host_security_mirror() {
  cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null |
    grep -v '^[[:space:]]*#' | grep -o 'http[^ ]*debian-security[^ ]*' | head -n 1 || true
}

debootstrap_base() {
  local name=$1
  [[ $(id -u) == 0 ]] || { echo "image.sh: debootstrap needs root" >&2; exit 1; }
  command -v debootstrap >/dev/null || { echo "image.sh: debootstrap is not installed (apt-get install debootstrap)" >&2; exit 1; }
  [[ -n $mirror ]] || mirror=$(host_mirror)
  root=$(mktemp -d /var/tmp/inferd-rootfs.XXXXXX) # global: the EXIT trap removes it
  trap 'rm -rf "$root" "$root.log"' EXIT
  echo "image.sh: no $name locally or from a registry: debootstrap --variant=minbase bookworm from $mirror" >&2
  debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 ||
    { tail -n 20 "$root.log" >&2; rm -f "$root.log"; echo "image.sh: debootstrap failed" >&2; exit 1; }
  rm -f "$root.log"
  # apt sources as on Debian's own images: the release, its updates and security.
  local sec
  sec=$(host_security_mirror)
  rm -f "$root/etc/apt/sources.list"
  {
    printf 'Types: deb\nURIs: %s\nSuites: bookworm bookworm-updates\nComponents: main\n' "$mirror"
    printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
    [[ -n $sec ]] && printf '\nTypes: deb\nURIs: %s\nSuites: bookworm-security\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$sec"
  } >"$root/etc/apt/sources.list.d/debian.sources"
  # What Debian's slim images leave out, kept out of later installs too.
  cat >"$root/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
EOF
  printf 'APT::Install-Recommends "false";\nAPT::Keep-Downloaded-Packages "false";\n' \
    >"$root/etc/apt/apt.conf.d/90slim"
  find "$root/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
  rm -rf "$root"/usr/share/{man,info,locale,lintian}/* "$root"/var/lib/apt/lists/* \
    "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin "$root"/var/log/*.log
  tar --numeric-owner -C "$root" -c . | pm import --change 'CMD ["bash"]' - "$name" >/dev/null
  rm -rf "$root"
  trap - EXIT
  echo "image.sh: imported $name" >&2
}

# Echoes the local name of the Debian base, making it first when needed.
ensure_base() {
  local n rc
  for n in "$base" "localhost/$base" "docker.io/library/$base"; do
    rc=0
    pm image exists "$n" || rc=$?
    ((rc == 0)) && { echo "$n"; return; }
    ((rc == 1)) || { echo "image.sh: podman cannot look up images (exit $rc)" >&2; exit 1; }
  done
  if [[ $base != */* ]] && timeout 60 podman "${podman_flags[@]}" pull -q "docker.io/library/$base" >/dev/null 2>&1; then
    echo "docker.io/library/$base"
    return
  fi
  if [[ $base != debian:bookworm* ]]; then
    echo "image.sh: base image $base is not present and cannot be pulled" >&2
    exit 1
  fi
  debootstrap_base "localhost/$base"
  echo "localhost/$base"
}

if ((cuda)); then
  file=Containerfile.cuda
  # NVIDIA's bases have no debootstrap fallback: they must be here or pullable.
  build_args=(--pull=missing)
else
  file=Containerfile
  base_ref=$(ensure_base)
  ((base_only)) && { echo "$base_ref"; exit 0; }
  build_args=(--pull=never --build-arg "BASE_IMAGE=$base_ref")
fi

tmp_tag="localhost/inferd:build-$$"
echo "image.sh: podman build -f $file (base ${base_ref:-from $file})" >&2
start=$(date +%s)
pm build "${rflags[@]}" "${cache[@]}" "${iid[@]}" "${build_args[@]}" -f "$file" -t "$tmp_tag" . >&2 ||
  { echo "image.sh: podman build failed" >&2; exit 1; }
if [[ -z $tag ]]; then
  version=$(pm run --rm "${rflags[@]}" "$tmp_tag" --version | awk '{print $2}')
  [[ -n $version ]] || { pm rmi "$tmp_tag" >/dev/null; echo "image.sh: the image's inferd --version printed nothing" >&2; exit 1; }
  tag="inferd:$version"
  ((cuda)) && tag="$tag-cuda"
fi
pm tag "$tmp_tag" "$tag"
# The build stage is the next build's cache (toolchain, objects): name it, so that pruning the
# build stages of earlier builds (untagged, labelled by the Containerfiles; tens of MB per
# source change) keeps it and its parents.
cache_tag="localhost/inferd-build-cache:$( ((cuda)) && echo cuda || echo cpu)"
pm build "${rflags[@]}" "${build_args[@]}" --target build -f "$file" -t "$cache_tag" . >/dev/null 2>&1 &&
  pm image prune -f --filter label=io.inferd.stage=build >/dev/null 2>&1 || true
pm untag "$tmp_tag" "$tmp_tag" >/dev/null 2>&1 || true
size=$(pm image inspect --format '{{.Size}}' "$tag")
echo "image.sh: built $tag in $(($(date +%s) - start)) s, $((size / 1000000)) MB" >&2
echo "$tag"
