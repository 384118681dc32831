#!/usr/bin/env bash
# The whole test suite: the Rust kernel, service and binary tests, then the
# Python, Node and Rust clients against one real server, then the
# deployment lint and the container test. Each part installs what it needs
# that a fresh machine lacks (pip/npm packages into target/ and
# node_modules, hadolint, docker.io). `cargo test` alone is the quick part.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test
scripts/test-clients.sh
bash tests/deploy/lint.sh
bash tests/docker/run.sh
