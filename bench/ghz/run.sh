#!/usr/bin/env bash
# Runs ghz configs against a running softmaxd and fails if any call failed.
#   bench/ghz/run.sh [CONFIG.json ...]      (default: every config here)
#   GHZ_HOST=softmaxd.example:50051 bench/ghz/run.sh bench/ghz/forward_attention.json
# Run from the repository root: the configs name their data files from there.
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v ghz >/dev/null || { echo "ghz not found: see README, 'Load testing with ghz'" >&2; exit 2; }
python3 bench/ghz/gen_data.py >/dev/null
configs=("$@")
[ ${#configs[@]} -gt 0 ] || configs=(bench/ghz/*.json)
reports=$(mktemp -d)
trap 'rm -rf "$reports"' EXIT
status=0
for config in "${configs[@]}"; do
    report="$reports/$(basename "$config")"
    ghz --config "$config" --format json --output "$report" ${GHZ_HOST:+"$GHZ_HOST"}
    python3 bench/ghz/check_report.py "$report" || status=1
done
exit $status
