#!/usr/bin/env bash
# deploy_manifests.test.sh - the deployment files hold together, without a cluster:
#   * docker-compose.yml: `docker-compose config` (or `docker compose config`) accepts it;
#     only the learner's Monitor port is published; health checks on every server; restart
#     policies; the checkpoint volume; settings from environment variables;
#   * deploy/k8s: every manifest parses and what it refers to exists (tests/check_manifests.py);
#   * the checker is not blind: broken copies of the manifests (a missing ConfigMap, a wrong
#     port, a Service renamed, bad YAML, ...) are each reported.
# usage: bash tests/deploy_manifests.test.sh [BUILD_DIR]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY=/usr/bin/python3
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# ---- docker-compose.yml ----------------------------------------------------------------------
if docker compose version >/dev/null 2>&1; then DC=(docker compose); else DC=(docker-compose); fi
if command -v "${DC[0]}" >/dev/null; then
    (cd "$ROOT" && "${DC[@]}" config -q) || fail "${DC[*]} config refuses docker-compose.yml"
    echo "${DC[*]} config: docker-compose.yml accepted"
else
    echo "note: no docker-compose here; the compose file is checked by the rules below only"
fi
"$PY" - "$ROOT/docker-compose.yml" <<'PY' || fail "docker-compose.yml"
import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
s = c["services"]
assert set(s) >= {"learner", "reward", "actor", "verifier", "go-verifier"}, sorted(s)
published = {n: v.get("ports") for n, v in s.items() if v.get("ports")}
assert list(published) == ["learner"], f"published ports: {published}"
lp = published["learner"]
assert len(lp) == 1 and lp[0]["target"] == 50050 and lp[0]["mode"] == "host", published
for n in ("learner", "reward", "verifier", "go-verifier"):  # Swarm: no virtual IP in front of gRPC servers
    assert s[n]["deploy"].get("endpoint_mode") == "dnsrr", f"{n}: endpoint_mode"
assert "--monitor-listen 0.0.0.0:50050" in s["learner"]["command"], "50050 must be the Monitor-only port"
for n in ("learner", "reward", "verifier"):
    hc = s[n].get("healthcheck", {}).get("test", [])
    assert "health" in hc and "cohortctl" in hc, f"{n}: health check is not the gRPC health service: {hc}"
for n, v in s.items():
    assert v.get("restart"), f"{n}: no restart policy"
    assert v.get("deploy", {}).get("restart_policy"), f"{n}: no Swarm restart policy"
gv = s["go-verifier"]
assert gv["healthcheck"]["test"][1:3] == ["go-verifier", "--probe"], f"go-verifier: health check {gv['healthcheck']}"
assert gv["build"]["dockerfile"] == "reward/examples/go-verifier/Dockerfile", gv["build"]
import json, os
rj = json.load(open(os.path.join(os.path.dirname(sys.argv[1]), "deploy/compose/reward.json")))
for v in rj["verifiers"]:  # every verifier endpoint is a service of the compose file
    for ep in v["endpoints"]:
        host = ep.rpartition(":")[0]
        assert host in s, f"deploy/compose/reward.json routes task {v['task']} to {ep}: no such service"
assert {v["task"] for v in rj["verifiers"]} >= {"match", "length"}, "reward.json: the Python and Go verifiers"
assert "cohort-data:/data" in s["learner"]["volumes"] and "cohort-data" in c["volumes"]
assert any(m.endswith(":/etc/cohort/reward.json:ro") for m in s["reward"]["volumes"])
env = s["learner"]["environment"]
assert "${COHORT_TOKEN" in str(env) and "${COHORT_RL_STEPS" in s["learner"]["command"]
print("docker-compose.yml: services", ", ".join(sorted(s)), "- only learner:50050 (Monitor) published;",
      "gRPC health checks on learner, reward, verifier, go-verifier; restart policies; volume cohort-data;",
      "reward.json routes to compose services")
PY

# ---- Kubernetes manifests ---------------------------------------------------------------------
CHECK=("$PY" "$ROOT/tests/check_manifests.py")
"${CHECK[@]}" "$ROOT/deploy/k8s" || fail "deploy/k8s manifests"

# each broken copy must be reported with the expected problem
n=0
broken() { # broken WHAT EXPECTED-PROBLEM-REGEX FILE SED-SCRIPT
    local what=$1 want=$2 file=$3 script=$4 out rc=0
    rm -rf "$WORK/k8s" && cp -r "$ROOT/deploy/k8s" "$WORK/k8s"
    sed -i -e "$script" "$WORK/k8s/$file"
    cmp -s "$ROOT/deploy/k8s/$file" "$WORK/k8s/$file" && fail "broken copy '$what': the sed script changed nothing"
    out=$("${CHECK[@]}" "$WORK/k8s" 2>&1) || rc=$?
    [ "$rc" -eq 1 ] || fail "broken copy '$what' passed the check (exit $rc): $out"
    grep -Eq "$want" <<<"$out" || fail "broken copy '$what': expected /$want/, got: $out"
    n=$((n + 1))
}
broken "ConfigMap left out" "ConfigMap cohort-config does not exist" kustomization.yaml '/configmap.yaml/d'
broken "ConfigMap key renamed" "ConfigMap cohort-config has no key COHORT_RL_STEPS" configmap.yaml 's/COHORT_RL_STEPS:/COHORT_RLSTEPS:/'
broken "reward Service on another port" "no Service cohort-reward with port 50052" reward.yaml 's/port: 50052/port: 50053/'
broken "probe on an undeclared port" "startupProbe uses port 50059" learner.yaml '0,/grpc: {port: 50051/s//grpc: {port: 50059/'
broken "Service targetPort misnamed" "targetPort monitr is not a port" learner.yaml 's/targetPort: monitor/targetPort: monitr/'
broken "StatefulSet serviceName" "serviceName cohort-lerner is not a Service" learner.yaml 's/serviceName: cohort-learner/serviceName: cohort-lerner/'
broken "selector mismatch" "selects no pod template" verifier.yaml '/^kind: Service/,/^---/s/component: verifier/component: verifyer/'
broken "reward.json routes to nothing" "routes task match to cohort-verifer:50061" configmap.yaml 's/cohort-verifier:50061/cohort-verifer:50061/'
broken "undefined \$(VAR) in args" 'uses \$\(COHORT_TASK\)' learner.yaml '/- name: COHORT_TASK/,+1d'
broken "volume mount without a volume" "volumeMount config is neither" reward.yaml '/^      volumes:/,$s/- name: config$/- name: cfg/'
broken "required Secret missing" "Secret cohort-token does not exist" actor.yaml 's/optional: true/optional: false/'
broken "manifest not in resources" "actor.yaml is in the folder but not in resources" kustomization.yaml '/actor.yaml/d'
broken "invalid YAML" "does not parse as YAML" reward.yaml '1i\  - : ['
echo "the checker reports each of $n broken copies"
echo "deploy_manifests.test.sh: OK"
