#!/usr/bin/env bash
# Calls/s and latency of Forward against a release server at rising client
# concurrency, for a small, the default and a large shape, with each
# --max-concurrent-requests in LIMITS (0: none): where throughput stops
# growing is where the limit should cut (bench/README.md, "Choosing
# --max-concurrent-requests"). Latency percentiles are of OK calls only.
#
#   bench/max_concurrency.sh
#
# Knobs (environment): LIMITS ("0"), DURATION (s per run, 5), WARMUP (1), LEVELS
# ("16 64 256 1024"), SHAPES ("1,64 64,1000 256,4096"), CONNECTIONS (8),
# SERVER_CPU (0), CLIENT_CPU (1), PORT (50161).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-5}
WARMUP=${WARMUP:-1}
LEVELS=${LEVELS:-16 64 256 1024}
SHAPES=${SHAPES:-1,64 64,1000 256,4096}
CONNECTIONS=${CONNECTIONS:-8}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
PORT=${PORT:-50161}
LIMITS=${LIMITS:-0}
BIN=${CARGO_TARGET_DIR:-target}/release

SERVER=
stop() {
    if [ -n "$SERVER" ]; then
        kill "$SERVER" 2>/dev/null || true
        wait "$SERVER" 2>/dev/null || true
    fi
}
trap stop EXIT

echo "| limit | shape | concurrency | calls/s | p50 ms | p99 ms | errors |"
echo "| ---: | --- | ---: | ---: | ---: | ---: | --- |"
for limit in $LIMITS; do
    taskset -c "$SERVER_CPU" "$BIN/softmaxd" --listen "127.0.0.1:$PORT" --metrics-listen "" \
        --max-concurrent-requests "$limit" >/dev/null 2>&1 &
    SERVER=$!
    sleep 1
    for shape in $SHAPES; do
        for c in $LEVELS; do
            taskset -c "$CLIENT_CPU" "$BIN/softmaxd-bench" --addr "127.0.0.1:$PORT" --rpc forward \
                --shape "$shape" --dtype f32 --encoding raw --concurrency "$c" \
                --connections "$CONNECTIONS" --duration "$DURATION" --warmup "$WARMUP" --json |
                python3 -c '
import json, sys
r = json.load(sys.stdin)
l = r["latency_us"]
errs = ", ".join("%s %d" % kv for kv in r["errors"].items()) or "none"
print("| %s | [%s] | %d | %.0f | %.2f | %.2f | %s |" % (sys.argv[1], sys.argv[2], r["concurrency"],
      r["calls_per_s"], l["p50"] / 1e3, l["p99"] / 1e3, errs))' "$limit" "$shape" || true
        done
    done
    stop
    SERVER=
done
