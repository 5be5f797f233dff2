#!/usr/bin/env bash
# run-cluster.sh - a local Cohort cluster on loopback: cohort-reward, cohort-learner and two
# cohort-actor processes training 2-digit addition (SFT warm start in the learner, then GRPO
# on the actors' groups). The learner's progress lines are shown; every process logs to
# OUT/logs/. Ctrl-C stops all of it cleanly: actors hand back their leases and the learner
# writes a checkpoint (run it again with --resume to continue).
# Extra arguments go to cohort-learner (e.g. --rl-steps 300, --resume).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target cohort-learner cohort-reward cohort-actor cohortctl >/dev/null
OUT=${COHORT_OUT:-runs/cluster}
LPORT=${COHORT_LEARNER_PORT:-50051}
RPORT=${COHORT_REWARD_PORT:-50052}
ACTORS=${COHORT_ACTORS:-2}
mkdir -p "$OUT/logs"
PIDS=()
TAILPID=""
stop() {
  trap - INT TERM EXIT
  echo "stopping the cluster..."
  for p in "${PIDS[@]:1}"; do kill -TERM "$p" 2>/dev/null || true; done   # reward, actors
  kill -TERM "${PIDS[0]}" 2>/dev/null || true                            # learner: checkpoint
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  [ -n "$TAILPID" ] && kill "$TAILPID" 2>/dev/null || true
  grep -h "checkpoint written" "$OUT/logs/learner.err" 2>/dev/null | tail -1 || true
  if command -v gnuplot >/dev/null && [ -s "$OUT/metrics.jsonl" ]; then
    ./build/cohortctl plot "$OUT/metrics.jsonl" "$OUT/metrics.png" || true
  fi
  echo "stopped; checkpoints in $OUT/checkpoints, metrics in $OUT/metrics.jsonl"
}
trap stop INT TERM EXIT
./build/cohort-learner --listen "127.0.0.1:$LPORT" --out "$OUT" --threads 1 "$@" \
  > "$OUT/logs/learner.log" 2> "$OUT/logs/learner.err" &
PIDS+=($!)
./build/cohort-reward --listen "127.0.0.1:$RPORT" --workers 2 > "$OUT/logs/reward.log" 2>&1 &
PIDS+=($!)
for i in $(seq "$ACTORS"); do
  ./build/cohort-actor --learner "127.0.0.1:$LPORT" --reward "127.0.0.1:$RPORT" --name "actor-$i" \
    --threads 1 --seed "$i" --quiet > "$OUT/logs/actor-$i.log" 2>&1 &
  PIDS+=($!)
done
echo "cluster: learner :$LPORT, reward :$RPORT, $ACTORS actors; 'build/cohortctl status' to look in"
tail -n +1 -F "$OUT/logs/learner.log" 2>/dev/null &
TAILPID=$!
while kill -0 "${PIDS[0]}" 2>/dev/null; do wait "${PIDS[0]}" 2>/dev/null || true; done
