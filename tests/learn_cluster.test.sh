#!/usr/bin/env bash
# learn_cluster.test.sh - the whole system on loopback, for real: cohort-reward, cohort-learner
# and two cohort-actor processes train 2-digit addition (SFT on 500 demonstrations in the
# learner, then GRPO on the actors' groups). Checked:
#   * an actor killed with SIGKILL costs nothing but its leases (they are issued again) and
#     training goes on;
#   * the learner stopped (SIGTERM: checkpoint) and started again with --resume continues from
#     its checkpoint step, and the surviving actor reconnects by itself;
#   * held-out accuracy rises as in the single-process test: two consecutive evaluations at
#     least 20 points above the SFT checkpoint's, within 700 RL steps.
# Optimised build only (label slow). usage: bash tests/learn_cluster.test.sh BUILD_DIR
set -euo pipefail
BUILD=${1:?usage: learn_cluster.test.sh BUILD_DIR}
PY=/usr/bin/python3
for b in cohort-learner cohort-reward cohort-actor; do
  [ -x "$BUILD/$b" ] || { echo "FAIL: $BUILD/$b is not built (build the tree first: cmake --build $BUILD)" >&2; exit 1; }
done
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
cd "$WORK"
port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
LP=$(port); RP=$(port)
LEARNER=("$BUILD/cohort-learner" --listen "127.0.0.1:$LP" --out run --seed 1 --sft-steps 800
         --rl-steps 700 --eval-every 25 --ckpt-every 50 --heartbeat-ms 500 --threads 1)
"$BUILD/cohort-reward" --listen "127.0.0.1:$RP" --workers 2 --stats-every 0 > reward.log 2>&1 &
PIDS+=($!)
"${LEARNER[@]}" > learner1.log 2>&1 &
LPID=$!
PIDS+=($LPID)
actor() { "$BUILD/cohort-actor" --learner "127.0.0.1:$LP" --reward "127.0.0.1:$RP" --name "$1" --seed "$2" --threads 1 --quiet > "$1.log" 2>&1 & }
actor a1 1; A1=$!; PIDS+=($A1)
actor a2 2; A2=$!; PIDS+=($A2)

# metrics helpers (metrics.jsonl has DESIGN.md's field names)
last_step() { "$PY" -c 'import json,sys
s=0
for l in open("run/metrics.jsonl"):
    o=json.loads(l); s=max(s,o.get("step",0))
print(s)' 2>/dev/null || echo 0; }
wait_step() {  # wait_step N SECONDS
  for _ in $(seq $(( $2 * 5 ))); do [ "$(last_step)" -ge "$1" ] && return 0; sleep 0.2; done
  echo "FAIL: training did not reach step $1 (at $(last_step))"; tail -5 learner*.log; exit 1
}
wait_step 820 300
echo "RL running: step $(last_step)"
kill -9 "$A1"; wait "$A1" 2>/dev/null || true
for _ in $(seq 100); do grep -q "missed its heartbeats" learner1.log && break; sleep 0.2; done
grep -q "missed its heartbeats" learner1.log || { echo "FAIL: the killed actor's leases were not reclaimed"; exit 1; }
S=$(last_step); wait_step $((S + 15)) 120
echo "after SIGKILL of a1: training went on to step $(last_step); its leases were issued again"

kill -TERM "$LPID"; wait "$LPID" || { echo "FAIL: learner exit"; tail learner1.log; exit 1; }
CK=$(sed 's/step-0*//' run/checkpoints/latest)
echo "learner stopped with a checkpoint at step $CK"
"${LEARNER[@]}" --resume > learner2.log 2>&1 &
LPID=$!; PIDS+=($LPID)
wait_step $((CK + 10)) 180
grep -q "RL from step $CK" learner2.log || { echo "FAIL: the learner did not resume from step $CK"; head learner2.log; exit 1; }
grep -q "registered" learner2.log || { echo "FAIL: no actor reconnected"; exit 1; }
echo "learner resumed at step $CK; actor a2 reconnected; now at step $(last_step)"
actor a3 3; PIDS+=($!)

# accuracy: two consecutive evaluations >= SFT + 20 points
for _ in $(seq 900); do
  R=$("$PY" - <<'PY'
import json
ev = [(o["step"], o["eval_accuracy"]) for o in map(json.loads, open("run/metrics.jsonl")) if "eval_accuracy" in o and "step" in o]
sft = [a for s, a in ev if s == 800]
rl = [a for s, a in ev if s > 800]
if not sft: print("wait"); raise SystemExit
base = sft[-1]; ok = any(rl[i] >= base + 0.2 and rl[i + 1] >= base + 0.2 for i in range(len(rl) - 1))
print(f"{'pass' if ok else 'wait'} sft {100*base:.1f}% best rl {100*max(rl, default=0):.1f}% ({len(rl)} evals)")
PY
)
  case "$R" in pass*) echo "accuracy: $R"; break;; esac
  if ! kill -0 "$LPID" 2>/dev/null; then echo "FAIL: training ended without the rise: $R"; exit 1; fi
  sleep 0.5
done
case "$R" in pass*) ;; *) echo "FAIL: $R"; exit 1;; esac
echo "learn_cluster.test.sh: OK"
