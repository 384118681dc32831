#!/usr/bin/env bash
# Runs the Rust, Python and Node client suites against one real softmaxd:
# builds the server as `cargo test` builds it (dev profile, the features its
# tests unify; after `cargo test` this is no work, where a release build cost
# CI four minutes), starts
# it on a free loopback port, installs the clients' dependencies from PyPI
# and npm, runs the three suites, stops the server, and exits non-zero if
# any suite failed.
#
# Needs only Rust, Python >= 3.9 and Node >= 18. The Python venv lives in
# target/clients-venv (override with SOFTMAXD_CLIENTS_VENV).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV=${SOFTMAXD_CLIENTS_VENV:-$ROOT/target/clients-venv}
LOG=$ROOT/target/clients-server.log

step() { printf '\n== %s\n' "$*"; }

BIN=target/debug/softmaxd
# The suites' own restart tests start this binary too.
export SOFTMAXD_BIN=$ROOT/$BIN
RUST_SUITES=(--test client_vectors --test client_rpcs --test client_retry)
step "build the server ($BIN) and the Rust client suite"
cargo test --locked --no-run "${RUST_SUITES[@]}"

step "install the Python client and its test dependencies ($VENV)"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r clients/python/requirements-test.txt
# Always reinstall the client itself, so the suite tests this checkout's code.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --force-reinstall --no-deps ./clients/python

step "install the Node client's dependencies"
(cd clients/node && npm ci --no-audit --no-fund --loglevel=error)

step "start softmaxd"
PORT=$("$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export SOFTMAX_ADDR="127.0.0.1:$PORT"
"$BIN" --listen "$SOFTMAX_ADDR" >"$LOG" 2>&1 &
SERVER_PID=$!
stop_server() {
  if kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" || true
  fi
}
trap stop_server EXIT
for _ in $(seq 1 100); do
  if "$BIN" health-check --addr "$SOFTMAX_ADDR" --timeout 1 >/dev/null 2>&1; then
    break
  fi
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "softmaxd exited; log:"; cat "$LOG"; exit 1; }
  sleep 0.2
done
"$BIN" health-check --addr "$SOFTMAX_ADDR" --timeout 5
echo "softmaxd serving on $SOFTMAX_ADDR (pid $SERVER_PID, log $LOG)"

failed=()
step "Rust client suite"
cargo test --locked "${RUST_SUITES[@]}" || failed+=(rust)
step "Python client suite"
(cd clients/python && "$VENV/bin/python" -m pytest -q -p no:cacheprovider) || failed+=(python)
step "Node client suite"
(cd clients/node && node --test test/*.test.js) || failed+=(node)

stop_server
trap - EXIT
if [ ${#failed[@]} -gt 0 ]; then
  echo "client suites failed: ${failed[*]}"
  exit 1
fi
echo "client suites passed: rust python node"
