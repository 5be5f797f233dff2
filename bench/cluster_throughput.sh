#!/usr/bin/env bash
# cluster_throughput.sh [BUILD_DIR] [RL_STEPS] - RL completions per second of the local
# cluster (cohort-learner + cohort-reward + 2 cohort-actor on loopback) next to the
# single-process run (cohort-train) on the same task and model, same settings, both from
# the same random policy (no SFT: throughput only). Prints both and their ratio.
set -euo pipefail
BUILD=${1:-build}
STEPS=${2:-40}
BUILD=$(cd "$BUILD" && pwd)
PY=/usr/bin/python3
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
cd "$WORK"
P=32; G=16
rate() {  # completions/s over the RL steps of a metrics file, excluding the first step
  "$PY" - "$1" "$P" "$G" <<'PY'
import json, sys
st = [o for o in map(json.loads, open(sys.argv[1])) if o.get("phase") == "rl"]
n = len(st) - 1
print(f"{n * int(sys.argv[2]) * int(sys.argv[3]) / (st[-1]['time_s'] - st[0]['time_s']):.0f}")
PY
}
"$BUILD/cohort-train" --out single --sft-steps 0 --rl-steps "$STEPS" --prompts $P --group-size $G \
  --eval-every 0 --ckpt-every 0 --threads 2 --quiet
SINGLE=$(rate single/metrics.jsonl)
port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
LP=$(port); RP=$(port)
"$BUILD/cohort-reward" --listen "127.0.0.1:$RP" --workers 2 --stats-every 0 > reward.log 2>&1 & PIDS+=($!)
"$BUILD/cohort-learner" --listen "127.0.0.1:$LP" --out cluster --sft-steps 0 --rl-steps "$STEPS" \
  --prompts $P --group-size $G --eval-every 0 --ckpt-every 0 --threads 1 > learner.log 2>&1 &
LPID=$!; PIDS+=($LPID)
for i in 1 2; do
  "$BUILD/cohort-actor" --learner "127.0.0.1:$LP" --reward "127.0.0.1:$RP" --name "a$i" --seed "$i" \
    --threads 1 --quiet > "a$i.log" 2>&1 & PIDS+=($!)
done
wait "$LPID"
CLUSTER=$(rate cluster/metrics.jsonl)
echo "RL completions/s, $P prompts x $G completions per step, $STEPS steps, OpenBLAS kernels ${OPENBLAS_CORETYPE:-as chosen by the binaries}:"
echo "  single process (cohort-train, 2 BLAS threads):              $SINGLE"
echo "  local cluster (learner + reward + 2 actors, 1 thread each): $CLUSTER"
"$PY" -c "print(f'  ratio cluster / single: {$CLUSTER / $SINGLE:.2f}')"
