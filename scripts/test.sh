#!/usr/bin/env bash
# The whole test suite: the Rust kernel, service and binary tests.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test
