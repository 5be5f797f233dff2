#!/usr/bin/env bash
# go_verifier.test.sh - the Go example verifier (reward/examples/go-verifier) from proto/ alone:
#   1. build.sh installs protoc-gen-go / protoc-gen-go-grpc with `go install` into a local
#      GOBIN, generates the cohort.v1 Go package from proto/ with protoc (the files'
#      go_package), and builds the verifier with Go modules (grpc-go, protobuf-go: the first
#      run downloads them through the Go module proxy into the module cache);
#   2. `go test`: the scoring rules, Verify / VerifyBatch / health / bearer token / deadline
#      against an in-process server;
#   3. a short real cluster: cohort-reward routes the prompt file's tasks "match" and "length"
#      to the Go verifier (with a bearer token, which the verifier requires, and a weight),
#      cohort-learner --prompts-file trains 4 RL steps with one cohort-actor; every step uses
#      the verifier's scores (no group dropped for a failed reward), the verifier logged the
#      calls with the prompt file's metadata untouched, and it stops cleanly on SIGTERM.
# Without a Go toolchain (go on PATH or /usr/local/go/bin/go) the test FAILS.
# usage: bash tests/go_verifier.test.sh BUILD_DIR
set -euo pipefail
BUILD=$(cd "${1:?usage: go_verifier.test.sh BUILD_DIR}" && pwd)
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
EX="$ROOT/reward/examples/go-verifier"
PY=/usr/bin/python3
fail() { echo "FAIL: $*" >&2; exit 1; }

GO=$(command -v go || true)
[ -n "$GO" ] || { [ -x /usr/local/go/bin/go ] && GO=/usr/local/go/bin/go; }
[ -n "$GO" ] || fail "no Go toolchain (go on PATH or /usr/local/go/bin/go): install Go to build the Go verifier example"
export PATH="$(dirname "$GO"):$PATH"
# the usual module and build caches; under the build dir only when there is no HOME for them
if [ -z "${HOME:-}" ] && [ -z "${GOPATH:-}" ]; then export GOPATH="$BUILD/go-verifier/gopath"; fi
if [ -z "${HOME:-}" ] && [ -z "${GOCACHE:-}" ]; then export GOCACHE="$BUILD/go-verifier/gocache"; fi
for b in cohort-learner cohort-reward cohort-actor; do
  [ -x "$BUILD/$b" ] || fail "$BUILD/$b is not built (build the tree first: cmake --build $BUILD)"
done

# ---- 1. build from proto/ ---------------------------------------------------------------------
T0=$SECONDS
# every proto file names its package for every language (no M options needed)
for p in "$ROOT"/proto/cohort/v1/*.proto; do
  for o in 'go_package = "cohort.dev/proto/cohort/v1;cohortv1"' 'java_package = "dev.cohort.v1"' \
           'java_multiple_files = true' 'csharp_namespace = "Cohort.V1"'; do
    grep -qxF "option $o;" "$p" || fail "$(basename "$p") lacks: option $o;"
  done
done
VBIN="$BUILD/go-verifier/go-verifier"
mkdir -p "$BUILD/go-verifier"
if ! bash "$EX/build.sh" "$VBIN" > "$BUILD/go-verifier/build.log" 2>&1; then
  sed 's/^/  /' "$BUILD/go-verifier/build.log"; fail "build.sh of the Go verifier (log above)"
fi
[ -x "$VBIN" ] || fail "build.sh did not build $VBIN"
for f in verifier.pb.go verifier_grpc.pb.go common.pb.go; do
  [ -s "$EX/gen/cohort/v1/$f" ] || fail "build.sh generated no gen/cohort/v1/$f"
done
grep -q '^package cohortv1$' "$EX/gen/cohort/v1/verifier.pb.go" || fail "generated package is not cohortv1 (go_package)"
echo "go verifier built from proto/ with $("$GO" version | cut -d' ' -f3) in $((SECONDS - T0)) s"

# ---- 2. go test -------------------------------------------------------------------------------
T1=$SECONDS
if ! (cd "$EX" && "$GO" test -count=1 ./...) > "$BUILD/go-verifier/test.log" 2>&1; then
  sed 's/^/  /' "$BUILD/go-verifier/test.log"; fail "go test of the Go verifier (output above)"
fi
sed 's/^/  /' "$BUILD/go-verifier/test.log"
echo "go test: passed in $((SECONDS - T1)) s"

# ---- 3. a short cluster that trains on the Go verifier's scores ------------------------------
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  { for p in "${PIDS[@]}"; do kill -9 "$p" || true; done; wait || true; } 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK"
port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
LP=$(port); RP=$(port); VP=$(port)
"$PY" -c 'import secrets; print(secrets.token_hex(16))' > verifier.token
chmod 600 verifier.token
cat > prompts.jsonl <<'JSONL'
{"prompt": "up:abc=", "task": "match", "metadata": {"target": "ABC", "from": "go-test"}}
{"prompt": "len:3=", "task": "length", "metadata": {"chars": 3, "from": "go-test"}}
{"prompt": "up:ok=", "task": "match", "metadata": {"target": "OK", "from": "go-test"}}
{"prompt": "len:5=", "task": "length", "metadata": {"chars": 5, "from": "go-test"}}
JSONL
cat > reward.json <<JSON
{"format_weight": 0.0,
 "verifiers": [{"name": "go-match", "task": "match", "weight": 1.0, "timeout_ms": 5000,
                "endpoints": ["127.0.0.1:$VP"]},
               {"name": "go-length", "task": "length", "weight": 0.5, "timeout_ms": 5000,
                "endpoints": ["127.0.0.1:$VP"]}]}
JSON
"$VBIN" --host 127.0.0.1 --port "$VP" --token-file verifier.token --log verifier.log > verifier.out 2>&1 &
VPID=$!
PIDS+=($VPID)
for _ in $(seq 100); do grep -q "serving tasks" verifier.out && break; kill -0 "$VPID" 2>/dev/null || break; sleep 0.1; done
grep -q "serving tasks match, length on 127.0.0.1:$VP (bearer token required)" verifier.out \
  || fail "the Go verifier did not start: $(cat verifier.out)"
"$BUILD/cohort-reward" --listen "127.0.0.1:$RP" --config reward.json --stats-every 0 \
  --verifier-token "$(cat verifier.token)" > reward.log 2>&1 &
PIDS+=($!)
"$BUILD/cohort-learner" --listen "127.0.0.1:$LP" --out run --sft-steps 0 --rl-steps 4 --prompts 2 \
  --group-size 4 --eval-every 0 --prompts-file prompts.jsonl --threads 1 --max-new-tokens 8 \
  > learner.log 2>&1 &
LPID=$!
PIDS+=($LPID)
"$BUILD/cohort-actor" --learner "127.0.0.1:$LP" --reward "127.0.0.1:$RP" --name go --seed 5 --quiet > actor.log 2>&1 &
PIDS+=($!)
for _ in $(seq 600); do kill -0 "$LPID" 2>/dev/null || break; sleep 0.2; done
if kill -0 "$LPID" 2>/dev/null; then tail learner.log actor.log reward.log; fail "the run did not finish in 120 s"; fi
wait "$LPID" || { cat learner.log; fail "learner exit status"; }
grep -q "training finished at step 4" learner.log || fail "$(tail -3 learner.log)"
"$PY" - <<'PY'
import json
logged = [json.loads(l) for l in open("verifier.log")]
assert logged, "the Go verifier was never called"
bad = [l for l in logged if "error" in l]
assert not bad, ("the verifier refused items", bad[:3])
assert {l["task"] for l in logged} <= {"match", "length"}, {l["task"] for l in logged}
assert all(l["metadata"].get("from") == "go-test" for l in logged), logged[:3]
assert all(0.0 <= l["score"] <= 1.0 for l in logged), logged[:3]
assert all(l.get("deadline_ms", 0) > 0 for l in logged), ("calls without a deadline", logged[:3])
assert all(l["prompt_tokens"] for l in logged), ("no prompt token ids", logged[:3])
steps = [json.loads(l) for l in open("run/metrics.jsonl")][1:]
assert len(steps) == 4 and all(s["phase"] == "rl" and s["groups_used"] >= 1 for s in steps), steps
failed = sum(s.get("groups_dropped_by_reason", {}).get("reward_failed", 0) for s in steps)
assert failed == 0, f"{failed} group(s) dropped for a failed reward"
rpcs = sorted({l["rpc"] for l in logged})
print(f"Go verifier: {len(logged)} items judged ({', '.join(rpcs)}; tasks "
      f"{sorted({l['task'] for l in logged})}), bearer token accepted, the prompt file's metadata "
      f"untouched; 4 RL steps, reward means {[round(s['reward_mean'], 3) for s in steps]}")
PY
# a clean stop: health goes NOT_SERVING, in-flight calls finish, exit status 0
kill -TERM "$VPID"
for _ in $(seq 100); do kill -0 "$VPID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$VPID" 2>/dev/null && fail "the Go verifier did not stop within 10 s of SIGTERM"
wait "$VPID" || fail "the Go verifier exited with status $? on SIGTERM: $(tail -2 verifier.out)"
echo "Go verifier stopped cleanly on SIGTERM; whole test $((SECONDS - T0)) s"
echo "go_verifier.test.sh: OK"
