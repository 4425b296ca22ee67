#!/usr/bin/env bash
# Installs the Debian 12 packages inferd needs, only those missing. Usage: tools/deps.sh build|test|bench
set -euo pipefail
build=(build-essential cmake pkg-config libnghttp2-dev libevent-dev libprotobuf-c-dev protobuf-c-compiler
       protobuf-compiler libprotobuf-dev libssl-dev zlib1g-dev libjansson-dev libhttp-parser-dev libcmocka-dev
       libutf8proc-dev)
test=(python3 python3-grpcio python3-protobuf python3-numpy python3-h2 python3-yaml nghttp2-client curl openssl clang-format
      golang-go golang-google-grpc-dev golang-google-protobuf-dev prometheus procps
      podman runc debootstrap  # the container image test (tools/image.sh)
      clang-14 libfuzzer-14-dev) # the fuzz harnesses (test/fuzz, tools/fuzz.sh) and their replay
bench=(libgrpc++-dev protobuf-compiler-grpc nghttp2-client util-linux)
want=("${build[@]}")
case "${1:-build}" in
  test) want+=("${test[@]}") ;;
  bench) want+=("${test[@]}" "${bench[@]}") ;;
esac
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
