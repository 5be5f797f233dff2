#!/usr/bin/env bash
# learner_rule.test.sh - the whole learning rule over the wire. cohort-learner takes every
# learning-rule option cohort-train takes (compared from both --help texts), and a short real
# cluster (cohort-reward, cohort-learner, cohort-actor on loopback) runs with a non-default
# estimator, aggregation, clip range, entropy bonus, KL weight and --max-new-tokens 64, given
# partly by --config FILE (JSON) and partly by flags that override it. The settings are read
# back from the head of metrics.jsonl, from the checkpoint's trainer_state.json and from
# Monitor.Status; the actor's long completions are accepted (no "invalid" drops). A second
# short run takes --max-new-tokens 2048 through learner, actor and reward service. Stop strings
# come from the file ("stop": [...]) and are replaced by the command line's --stop (the first
# --stop replaces the file's list, a second adds to it); the actor cuts completions at them and
# the learner accepts the cut completions (no "invalid" drops).
# usage: bash tests/learner_rule.test.sh BUILD_DIR
set -euo pipefail
BUILD=${1:?usage: learner_rule.test.sh BUILD_DIR}
PY=/usr/bin/python3
for b in cohort-learner cohort-train cohort-reward cohort-actor cohortctl; do
  [ -x "$BUILD/$b" ] || { echo "FAIL: $BUILD/$b is not built"; exit 1; }
done
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
cd "$WORK"

# every cohort-train option (but --resume, which the learner spells the same) is a learner option
flags() { "$BUILD/$1" --help | grep -o -- '--[a-z][a-z0-9-]*' | sort -u; }
flags cohort-train > train.flags
flags cohort-learner > learner.flags
missing=$(comm -23 train.flags learner.flags || true)
[ -z "$missing" ] || { echo "FAIL: cohort-learner --help lacks: $missing"; exit 1; }
echo "cohort-learner --help lists all $(wc -l < train.flags) options of cohort-train"

port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
LP=$(port); RP=$(port)
cat > rule.json <<'EOF'
{"estimator": "rloo", "aggregation": "seq_mean_token_mean", "eps_low": 0.1, "eps-high": 0.3,
 "max_new_tokens": 64, "beta": 0.5, "entropy_coef": 0.01, "rl_steps": 50, "stop": ["==", "+"]}
EOF
export COHORT_KEEP_BLAS_KERNELS=1
"$BUILD/cohort-reward" --listen "127.0.0.1:$RP" --stats-every 0 > reward.log 2>&1 & PIDS+=($!)
# --beta on the command line overrides the file's 0.5
"$BUILD/cohort-learner" --config rule.json --listen "127.0.0.1:$LP" --out run --sft-steps 0 \
  --rl-steps 4 --beta 0.02 --prompts 2 --group-size 3 --eval-every 0 --ckpt-every 0 \
  --stop '#' --stop 'e' \
  > learner.log 2>&1 & LPID=$!; PIDS+=($LPID)
"$BUILD/cohort-actor" --learner "127.0.0.1:$LP" --reward "127.0.0.1:$RP" --name rule \
  > actor.log 2>&1 & PIDS+=($!)
for _ in $(seq 600); do
  "$BUILD/cohortctl" --learner "127.0.0.1:$LP" status > status.txt 2>/dev/null || true
  grep -q "rloo" status.txt && break
  kill -0 "$LPID" 2>/dev/null || break
  sleep 0.1
done
grep -q "rloo" status.txt || { echo "FAIL: cohortctl status shows no settings: $(cat status.txt)"; tail -5 learner.log; exit 1; }
for _ in $(seq 600); do kill -0 "$LPID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$LPID" 2>/dev/null; then echo "FAIL: the cluster did not finish 4 steps"; tail -5 learner.log actor.log; exit 1; fi
grep -q "training finished at step 4" learner.log || { echo "FAIL: $(tail -5 learner.log)"; exit 1; }
grep -q "2 stop string(s)" actor.log || { echo "FAIL: the actor did not take the 2 stop strings: $(grep -m2 sampling actor.log)"; exit 1; }

"$PY" - <<'PY'
import json, sys
want = {"estimator": "rloo", "aggregation": "seq_mean_token_mean", "eps_low": 0.1, "eps_high": 0.3,
        "max_new_tokens": 64, "beta": 0.02, "entropy_coef": 0.01, "rl_steps": 4,
        "kl_estimator": "k3", "kl_placement": "loss", "stop": ["#", "e"]}
lines = [json.loads(l) for l in open("run/metrics.jsonl")]
state = json.load(open("run/checkpoints/" + open("run/checkpoints/latest").read().strip() + "/trainer_state.json"))
for where, s in (("metrics.jsonl", lines[0]["settings"]), ("trainer_state.json", state["settings"])):
    for k, v in want.items():
        got = s.get(k)
        ok = abs(got - v) < 1e-6 if isinstance(v, float) else got == v
        if not ok:
            sys.exit(f"FAIL: {where}: settings[{k!r}] = {got!r}, want {v!r}")
steps = [l for l in lines[1:] if l.get("phase") == "rl"]
assert len(steps) == 4, steps
assert all(l["groups_dropped_by_reason"]["invalid"] == 0 for l in steps), steps
print("settings read back from metrics.jsonl and the checkpoint: rloo, seq_mean_token_mean, "
      "clip [0.9, 1.3], beta 0.02 (flag over file), entropy 0.01, max_new_tokens 64, "
      "stop ['#', 'e'] (flags over file); no invalid drops")
PY
echo "status: $(grep -m1 -i "estimator\|rloo" status.txt)"

# --max-new-tokens 2048 in every process: learner (leases, validation, the policy's context
# raised to fit), actor (sampling), reward service (scoring long texts)
LP2=$(port)
"$BUILD/cohort-learner" --listen "127.0.0.1:$LP2" --out run2048 --sft-steps 0 --rl-steps 1 \
  --prompts 1 --group-size 2 --max-new-tokens 2048 --eval-every 0 --ckpt-every 0 \
  > learner2048.log 2>&1 & LPID=$!; PIDS+=($LPID)
"$BUILD/cohort-actor" --learner "127.0.0.1:$LP2" --reward "127.0.0.1:$RP" --name long --quiet \
  > actor2048.log 2>&1 & PIDS+=($!)
for _ in $(seq 600); do kill -0 "$LPID" 2>/dev/null || break; sleep 0.1; done
grep -q "training finished at step 1" learner2048.log || { echo "FAIL: --max-new-tokens 2048: $(tail -5 learner2048.log actor2048.log)"; exit 1; }
"$PY" - <<'PY'
import json
lines = [json.loads(l) for l in open("run2048/metrics.jsonl")]
assert lines[0]["settings"]["max_new_tokens"] == 2048, lines[0]["settings"]
assert lines[0]["settings"]["model_config"]["max_position_embeddings"] >= 2048 + 7, lines[0]["settings"]
step = [l for l in lines[1:] if l.get("phase") == "rl"]
assert len(step) == 1 and step[0]["groups_dropped_by_reason"]["invalid"] == 0, step
print("--max-new-tokens 2048: one step through learner, actor and reward service, no invalid group")
PY
echo "learner_rule.test.sh: OK"
