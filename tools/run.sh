#!/usr/bin/env bash
# Sets up and runs inferd on its built-in default model: installs missing Debian packages,
# builds a release binary, serves gRPC on :50051 and the system port on :8081.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/deps.sh build
cmake -S . -B build-release -DCMAKE_BUILD_TYPE=Release -DINFERD_TESTS=OFF >/dev/null
cmake --build build-release -j"$(nproc)" >/dev/null
exec build-release/server/inferd "$@"
