#!/usr/bin/env bash
# End-to-end test of the container image, run by .ci/run:
#   bash tests/docker/run.sh
# Installs Docker (Debian's docker.io) and starts dockerd when absent, builds
# the static server binary on the host and the image's runtime stage from it
# (no registry is reachable, so nothing is pulled), runs it, waits for its
# HEALTHCHECK to report healthy, calls it from the host, checks that it runs
# as non-root, scrapes /metrics, sends SIGTERM with a call in flight and checks
# that the call is answered and the process exits 0; then runs the image again
# with TLS and a token file and calls it over TLS. Removes everything it created.
# The container shares the host's network namespace, so every call stays on
# 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/../.."

NAME="softmaxd-docker-test-$$"
IMAGE="softmaxd:docker-test-$$"
SIZE_LIMIT=$((25 * 1024 * 1024))
WORK=$(mktemp -d)
STARTED_DOCKERD=""
DRAIN_PID=""
passed=0

ok() {
    echo "ok: $*"
    passed=$((passed + 1))
}
fail() {
    echo "FAILED: $*" >&2
    echo "$passed passed, 1 failed"
    exit 1
}

cleanup() {
    set +e
    [ -n "$DRAIN_PID" ] && kill "$DRAIN_PID" 2>/dev/null
    if [ -n "${DOCKER:-}" ]; then
        "${DOCKER[@]}" rm -f "$NAME" "$NAME-tls" >/dev/null 2>&1
        "${DOCKER[@]}" rmi -f "$IMAGE" >/dev/null 2>&1
        # Build cache is ours alone only when the daemon is.
        [ -n "$STARTED_DOCKERD" ] && "${DOCKER[@]}" builder prune -af >/dev/null 2>&1
    fi
    if [ -n "$STARTED_DOCKERD" ]; then
        kill "$STARTED_DOCKERD" 2>/dev/null
        for _ in $(seq 1 30); do kill -0 "$STARTED_DOCKERD" 2>/dev/null || break; sleep 1; done
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# ---- Docker daemon -----------------------------------------------------------
missing=()
command -v dockerd >/dev/null && command -v docker >/dev/null || missing+=(docker.io)
command -v docker-compose >/dev/null || missing+=(docker-compose)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} (apt-get)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The image build needs BuildKit, which skips the stages this build does not
# use (the rust builder, whose base image cannot be pulled here). Debian's
# 20.10 client has it built in; newer clients need the buildx plugin.
if docker buildx version >/dev/null 2>&1; then
    DOCKER=(docker)
    BUILD=(docker buildx build --load)
elif [ -x /usr/bin/docker ]; then
    DOCKER=(/usr/bin/docker)
    BUILD=(env DOCKER_BUILDKIT=1 /usr/bin/docker build)
else
    fail "no docker client with BuildKit (install docker-buildx or Debian's docker.io)"
fi
if ! "${DOCKER[@]}" info >/dev/null 2>&1; then
    echo "starting dockerd (log: $WORK/dockerd.log)"
    dockerd >"$WORK/dockerd.log" 2>&1 &
    STARTED_DOCKERD=$!
    for _ in $(seq 1 60); do
        "${DOCKER[@]}" info >/dev/null 2>&1 && break
        kill -0 "$STARTED_DOCKERD" 2>/dev/null || break
        sleep 1
    done
    if ! "${DOCKER[@]}" info >/dev/null 2>&1; then
        tail -20 "$WORK/dockerd.log" >&2
        STARTED_DOCKERD=""
        fail "dockerd did not start (its log is above)"
    fi
fi
ok "docker daemon $("${DOCKER[@]}" version --format '{{.Server.Version}}')"

# ---- Binaries and image ------------------------------------------------------
# crt-static: a self-contained glibc binary for the empty scratch image. The
# server resolves no host names (its addresses are IPs), so static glibc's
# missing NSS does not matter. `cargo rustc` passes the flags to the final
# link of this one binary, so it is built from the dependencies `cargo test`
# has just compiled (test profile, stripped) instead of a second, release
# build of the whole tree: the image's behaviour is what this tests, and a
# release build cost CI several minutes. The Dockerfile's own builder stage
# still builds the release binary.
cargo rustc --locked --quiet --bin softmaxd -- -C target-feature=+crt-static -C strip=symbols
mkdir "$WORK/bin"
BIN="$WORK/bin/softmaxd"
cp target/debug/softmaxd "$BIN"
# Leave no static binary where `cargo test` expects its own: the next build
# puts its own back.
rm -f target/debug/softmaxd
if readelf -lW "$BIN" | grep -q 'INTERP'; then
    fail "$BIN is dynamically linked"
fi
ok "static binary $BIN ($(stat -c %s "$BIN") bytes)"
cargo build --locked --quiet --example smoke_client
CLIENT=target/debug/examples/smoke_client

mkdir "$WORK/context"
cp "$BIN" "$WORK/context/softmaxd"
"${BUILD[@]}" --quiet --build-arg BINARY_FROM=prebuilt -f Dockerfile -t "$IMAGE" "$WORK/context" >/dev/null
size=$("${DOCKER[@]}" image inspect -f '{{.Size}}' "$IMAGE")
[ "$size" -lt "$SIZE_LIMIT" ] || fail "image is $size bytes, over the $SIZE_LIMIT goal"
ok "image $IMAGE built from the runtime stage: $size bytes ($((size / 1024 / 1024)) MiB)"

user=$("${DOCKER[@]}" image inspect -f '{{.Config.User}}' "$IMAGE")
[ "$user" = "65532:65532" ] || fail "image user is '$user'"
ok "image declares USER $user"

docker-compose -f docker-compose.yml config -q || fail "docker-compose.yml is invalid"
ok "docker-compose.yml is valid"

# ---- Run ---------------------------------------------------------------------
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
ADDR="127.0.0.1:$(free_port)"
METRICS="127.0.0.1:$(free_port)"
# The production hardening of deploy/kubernetes: read-only root, no
# capabilities, no privilege escalation. Flags after the image name reach the
# server through ENTRYPOINT.
"${DOCKER[@]}" run -d --name "$NAME" --network host \
    --read-only --cap-drop ALL --security-opt no-new-privileges \
    -e SOFTMAXD_LISTEN="$ADDR" -e SOFTMAXD_HEALTH_ADDR="$ADDR" \
    "$IMAGE" --metrics-listen "$METRICS" --drain-timeout 15 --log-format json >/dev/null

# The image's HEALTHCHECK runs every 10 s; the first report takes that long.
wait_healthy() {
    local status=""
    for _ in $(seq 1 60); do
        status=$("${DOCKER[@]}" inspect -f '{{.State.Status}}/{{.State.Health.Status}}' "$1")
        case "$status" in
            running/healthy) return 0 ;;
            running/*) sleep 1 ;;
            *) break ;;
        esac
    done
    "${DOCKER[@]}" logs "$1" >&2 || true
    fail "container $1 is '$status', not running/healthy"
}
wait_healthy "$NAME"
ok "HEALTHCHECK (softmaxd health-check inside the image) reports healthy"

pid=$("${DOCKER[@]}" inspect -f '{{.State.Pid}}' "$NAME")
uids=$(awk '/^Uid:/ {print $2, $3, $4, $5}' "/proc/$pid/status")
[ "$uids" = "65532 65532 65532 65532" ] || fail "server process runs with uids '$uids'"
ok "server process (host pid $pid) runs as uid 65532, not root"

"$BIN" health-check --addr "$ADDR" || fail "health-check from the host"
"$BIN" health-check --addr "$ADDR" --service softmax.v1.SoftmaxService || fail "health-check of the API"
ok "health-check from the host: SERVING"

"$CLIENT" check --addr "$ADDR" || fail "calls from the host"
ok "every RPC, health and reflection answer correctly from the host"

python3 bench/ghz/gen_data.py >/dev/null
for config in bench/ghz/*.json; do
    read -r call file count < <(python3 -c '
import json, sys
c = json.load(open(sys.argv[1]))
print(c["call"], c.get("binary-file", "-"), c.get("stream-call-count", 0))' "$config")
    [ "$file" = - ] && continue
    "$CLIENT" replay --addr "$ADDR" --call "$call" --file "$file" --stream-count "$count" \
        || fail "replaying $config"
done
ok "the ghz configs' data files are accepted by the server"

# The calls above, exactly: check makes one of each RPC plus a refused NaN
# Forward; the replays add two Forwards, one Backward, one Jacobian and one
# ForwardStream.
python3 - "http://$METRICS/metrics" <<'PY' || fail "metrics do not count the calls made"
import re, sys, urllib.request
text = urllib.request.urlopen(sys.argv[1], timeout=10).read().decode()
def handled(method, code):
    total = 0.0
    for line in text.splitlines():
        m = re.match(r'grpc_server_handled_total\{(.*)\} (\S+)$', line)
        if m and f'grpc_method="{method}"' in m[1] and f'grpc_code="{code}"' in m[1] \
                and 'grpc_service="softmax.v1.SoftmaxService"' in m[1]:
            total += float(m[2])
    return total
want = {("Forward", "OK"): 3, ("Forward", "INVALID_ARGUMENT"): 1, ("Backward", "OK"): 2,
        ("Jacobian", "OK"): 2, ("CrossEntropy", "OK"): 1, ("ForwardStream", "OK"): 1}
got = {k: handled(*k) for k in want}
if got != want:
    sys.exit(f"grpc_server_handled_total: {got}, expected {want}")
for name in ("grpc_server_handling_seconds_bucket", "grpc_server_request_bytes_sum",
             "grpc_server_in_flight", "softmaxd_request_elements_count"):
    if name not in text:
        sys.exit(f"{name} missing")
PY
ok "/metrics (--metrics-listen passed through docker run) counts exactly the calls made"

# ---- SIGTERM with a call in flight -------------------------------------------
mkfifo "$WORK/drain.in"
"$CLIENT" drain --addr "$ADDR" <"$WORK/drain.in" >"$WORK/drain.out" 2>&1 &
DRAIN_PID=$!
exec 3>"$WORK/drain.in"
for _ in $(seq 1 30); do
    grep -q READY "$WORK/drain.out" && break
    sleep 0.5
done
grep -q READY "$WORK/drain.out" || { cat "$WORK/drain.out" >&2; fail "the stream did not open"; }
"${DOCKER[@]}" kill --signal TERM "$NAME" >/dev/null
# Once the server is draining, new health checks fail (NOT_SERVING or refused).
for _ in $(seq 1 40); do
    "$BIN" health-check --addr "$ADDR" --timeout 1 >/dev/null 2>&1 || break
    sleep 0.25
done
if "$BIN" health-check --addr "$ADDR" --timeout 1 >/dev/null 2>&1; then
    fail "still SERVING after SIGTERM"
fi
echo go >&3
exec 3>&-
drain_status=0
wait "$DRAIN_PID" || drain_status=$?
DRAIN_PID=""
cat "$WORK/drain.out"
[ "$drain_status" -eq 0 ] || fail "the in-flight stream was not answered after SIGTERM"
ok "a call in flight at SIGTERM is answered"

exit_code=$(timeout 60 "${DOCKER[@]}" wait "$NAME") || fail "container did not exit after SIGTERM"
if [ "$exit_code" != 0 ]; then
    "${DOCKER[@]}" logs "$NAME" >&2 || true
    fail "container exited with $exit_code"
fi
ok "container exited 0 after draining"

# ---- TLS and bearer tokens -----------------------------------------------------
# Certificates from the client's rcgen-based generator, mounted read-only; the
# HEALTHCHECK probes over TLS through SOFTMAXD_HEALTH_TLS_CA.
PKI="$WORK/pki"
"$CLIENT" pki --dir "$PKI" >/dev/null
echo smoke-token >"$PKI/tokens"
chmod 0755 "$PKI" && chmod 0644 "$PKI"/*
TLS_ADDR="127.0.0.1:$(free_port)"
"${DOCKER[@]}" run -d --name "$NAME-tls" --network host \
    --read-only --cap-drop ALL --security-opt no-new-privileges -v "$PKI:/pki:ro" \
    -e SOFTMAXD_LISTEN="$TLS_ADDR" -e SOFTMAXD_HEALTH_ADDR="$TLS_ADDR" \
    -e SOFTMAXD_HEALTH_TLS_CA=/pki/ca.pem \
    "$IMAGE" --metrics-listen "" --tls-cert /pki/server.pem --tls-key /pki/server.key \
    --auth-token-file /pki/tokens >/dev/null
wait_healthy "$NAME-tls"
ok "TLS container reports healthy (its HEALTHCHECK speaks TLS)"
"$CLIENT" check --addr "$TLS_ADDR" --ca "$PKI/ca.pem" --token smoke-token || fail "calls over TLS with a token"
ok "every RPC, health and reflection over TLS with a bearer token"
"$CLIENT" refused --addr "$TLS_ADDR" --ca "$PKI/ca.pem" || fail "refusals over TLS"
ok "no token: UNAUTHENTICATED; plaintext client: refused"
"${DOCKER[@]}" stop -t 30 "$NAME-tls" >/dev/null
exit_code=$("${DOCKER[@]}" inspect -f '{{.State.ExitCode}}' "$NAME-tls")
[ "$exit_code" = 0 ] || fail "TLS container exited with $exit_code after docker stop"
ok "docker stop: TLS container exited 0"

echo "$passed passed, 0 failed"
