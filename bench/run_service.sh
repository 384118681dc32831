#!/usr/bin/env bash
# Service benchmarks: softmaxd against its echo (identity) twin and against a
# grpcio + numpy Python peer, for the cases of the performance issue, with the
# servers and the load tool pinned to different cores; then peak server RSS
# under 64 concurrent [256,4096] calls, and the --parallel-threshold crossover.
#
#   bench/run_service.sh [all|compare|rss|threshold]
#
# Knobs (environment): DURATION (s per run, 5), WARMUP (s, 1), ROUNDS
# (alternated softmaxd/echo runs, median kept; 3), CONCURRENCY (16),
# SERVER_CPU (0), CLIENT_CPU (1), VENV (bench/.venv), OUT (dir for JSON).
set -euo pipefail
cd "$(dirname "$0")/.."

WHAT=${1:-all}
DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
ROUNDS=${ROUNDS:-3}
CONCURRENCY=${CONCURRENCY:-16}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
VENV=${VENV:-bench/.venv}
OUT=${OUT:-$(mktemp -d -t softmaxd-bench.XXXXXX)}
mkdir -p "$OUT"
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN=$TARGET_DIR/release
PORT_SOFTMAXD=${PORT_SOFTMAXD:-50151}
PORT_ECHO=${PORT_ECHO:-50152}
PORT_PYTHON=${PORT_PYTHON:-50153}

echo "== softmaxd service benchmark, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, JSON in $OUT"

if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install -q --disable-pip-version-check grpcio grpcio-tools numpy
PY=$VENV/bin/python
cargo build --release --quiet --bins

# Several servers run at once here: none of them serves Prometheus metrics.
export SOFTMAXD_METRICS_LISTEN=

PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    wait 2>/dev/null || true
}
trap cleanup EXIT

# Starts a server pinned to SERVER_CPU (or $CPUS) and records its pid in LAST_PID.
start() {
    taskset -c "${CPUS:-$SERVER_CPU}" "$@" >"$OUT/server-$$-${#PIDS[@]}.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

stop() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

wait_port() {
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "nothing listens on port $1" >&2
    return 1
}

bench() {
    # Exit status 2 means some calls failed: they are in the report.
    taskset -c "$CLIENT_CPU" "$BIN/softmaxd-bench" --json --warmup "$WARMUP" --duration "$DURATION" "$@" ||
        [ $? -eq 2 ]
}

CASES=(
    "forward 1,1000 f32 raw"
    "forward 64,1000 f32 typed"
    "forward 256,4096 f32 raw"
    "backward 64,1000 f32 raw"
)

compare() {
    start "$BIN/softmaxd" --listen "127.0.0.1:$PORT_SOFTMAXD"
    local pid_softmaxd=$LAST_PID
    start "$BIN/softmaxd" --echo --listen "127.0.0.1:$PORT_ECHO"
    local pid_echo=$LAST_PID
    start "$PY" bench/python_peer.py --port "$PORT_PYTHON"
    local pid_python=$LAST_PID
    wait_port "$PORT_SOFTMAXD"
    wait_port "$PORT_ECHO"
    wait_port "$PORT_PYTHON"
    local i=0
    for c in "${CASES[@]}"; do
        read -r rpc shape dtype enc <<<"$c"
        local args=(--rpc "$rpc" --shape "$shape" --dtype "$dtype" --encoding "$enc" --concurrency "$CONCURRENCY")
        echo "-- $rpc [$shape] $dtype $enc" >&2
        bench "${args[@]}" --addr "127.0.0.1:$PORT_SOFTMAXD" \
            --compare-echo "127.0.0.1:$PORT_ECHO" --rounds "$ROUNDS" \
            --server-pid "$pid_softmaxd" --echo-pid "$pid_echo" >"$OUT/case$i-echo.json"
        bench "${args[@]}" --addr "127.0.0.1:$PORT_PYTHON" --server-pid "$pid_python" \
            >"$OUT/case$i-python.json"
        i=$((i + 1))
    done
    "$PY" - "$OUT" "${#CASES[@]}" <<'PYEOF'
import json, sys
out, n = sys.argv[1], int(sys.argv[2])
print()
# echo/python: the transport's own multiple of the Python peer, the most
# softmaxd/python can be while softmaxd costs at least what echo does.
print("| case | softmaxd calls/s | echo calls/s | python calls/s | softmaxd/echo (rounds) | softmaxd/python | echo/python | server CPU us/call: softmaxd, echo, python | echo/softmaxd by CPU (rounds) | softmaxd p50 / p99 us | softmaxd MB/s |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")

def spread(ratios):
    """ " (lo-hi)" over the rounds: how far the median can be trusted."""
    ratios = [r for r in ratios if r is not None]
    return f" ({min(ratios):.2f}-{max(ratios):.2f})" if len(ratios) > 1 else ""

for i in range(n):
    c = json.load(open(f"{out}/case{i}-echo.json"))
    p = json.load(open(f"{out}/case{i}-python.json"))
    s, e = c["softmaxd"], c["echo"]
    rounds = c["rounds"]
    calls = spread(r["softmaxd_calls_per_s"] / max(r["echo_calls_per_s"], 1e-9) for r in rounds)
    cpu = spread(r["echo_cpu_us_per_call"] / max(r["softmaxd_cpu_us_per_call"], 1e-9)
                 if r["echo_cpu_us_per_call"] and r["softmaxd_cpu_us_per_call"] else None
                 for r in rounds)
    shape = ",".join(map(str, s["shape"]))
    name = f'{s["rpc"]} [{shape}] {s["dtype"]} {s["encoding"]}'
    errs = sum(s["errors"].values()) + sum(e["errors"].values()) + sum(p["errors"].values())
    flag = f" ({errs} errors)" if errs else ""
    print(f'| {name}{flag} | {s["calls_per_s"]:.0f} | {e["calls_per_s"]:.0f} | {p["calls_per_s"]:.0f} '
          f'| {c["ratio"]:.2f}{calls} | {s["calls_per_s"] / max(p["calls_per_s"], 1e-9):.1f} '
          f'| {e["calls_per_s"] / max(p["calls_per_s"], 1e-9):.1f} '
          f'| {s["server_cpu_us_per_call"]:.0f}, {e["server_cpu_us_per_call"]:.0f}, {p["server_cpu_us_per_call"]:.0f} '
          f'| {c["cpu_ratio"]:.2f}{cpu} '
          f'| {s["latency_us"]["p50"]:.0f} / {s["latency_us"]["p99"]:.0f} | {s["mb_per_s"]:.0f} |')
PYEOF
    cleanup
    PIDS=()
}

rss() {
    local conc=64
    for which in softmaxd echo; do
        local flags=()
        [ "$which" = echo ] && flags=(--echo)
        start "$BIN/softmaxd" "${flags[@]}" --listen "127.0.0.1:$PORT_SOFTMAXD"
        local pid=$LAST_PID
        wait_port "$PORT_SOFTMAXD"
        local base
        base=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
        bench --addr "127.0.0.1:$PORT_SOFTMAXD" --rpc forward --shape 256,4096 --encoding raw \
            --concurrency "$conc" >"$OUT/rss-$which.json"
        local hwm
        hwm=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
        stop "$pid"
        "$PY" - "$OUT/rss-$which.json" "$which" "$base" "$hwm" "$conc" <<'PYEOF'
import json, sys
r = json.load(open(sys.argv[1]))
which, base, hwm, conc = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
req = r["request_bytes"]
inflight = conc * req
print(f"{which}: peak RSS (VmHWM) {hwm / 1024:.0f} MiB (idle {base / 1024:.0f} MiB) under {conc} concurrent "
      f"Forward [256,4096] f32 raw; requests in flight {inflight / 2**20:.0f} MiB: "
      f"peak/in-flight {hwm * 1024 / inflight:.2f}x; {r['calls_per_s']:.0f} calls/s, "
      f"{sum(r['errors'].values())} errors")
PYEOF
    done
}

threshold() {
    # Both cores for the server (the pool needs two); one call at a time, so
    # the load tool is mostly idle on its core.
    echo
    echo "| shape (Forward f32 raw, concurrency 1) | inline calls/s | inline p50 us | pool calls/s | pool p50 us |"
    echo "|---|---:|---:|---:|---:|"
    for shape in 8,1000 32,1000 64,1000 128,1000 256,1000 256,4096 1024,4096; do
        for mode in inline pool; do
            local t=1000000000
            [ "$mode" = pool ] && t=0
            CPUS=0,1 start "$BIN/softmaxd" --parallel-threshold "$t" --listen "127.0.0.1:$PORT_SOFTMAXD"
            local pid=$LAST_PID
            wait_port "$PORT_SOFTMAXD"
            bench --addr "127.0.0.1:$PORT_SOFTMAXD" --rpc forward --shape "$shape" --encoding raw \
                --concurrency 1 >"$OUT/thr-$shape-$mode.json"
            stop "$pid"
        done
        "$PY" - "$OUT/thr-$shape-inline.json" "$OUT/thr-$shape-pool.json" "$shape" <<'PYEOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
print(f'| [{sys.argv[3]}] | {a["calls_per_s"]:.0f} | {a["latency_us"]["p50"]:.0f} '
      f'| {b["calls_per_s"]:.0f} | {b["latency_us"]["p50"]:.0f} |')
PYEOF
    done
}

case "$WHAT" in
    compare) compare ;;
    rss) rss ;;
    threshold) threshold ;;
    all) compare; echo; rss; threshold ;;
    *) echo "usage: $0 [all|compare|rss|threshold]" >&2; exit 2 ;;
esac
