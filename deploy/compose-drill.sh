#!/usr/bin/env bash
# compose-drill.sh - the docker-compose drill (issue 4), run by hand for now (not yet in CI):
# base images, image build, `up` with 3 actors, progress read by cohortctl from outside, an
# actor container killed, the learner container restarted (resumes from the volume), actors
# scaled 3 -> 1 -> 3, `down`, and no container of the project left. Prints image sizes.
set -euo pipefail
cd "$(dirname "$0")/.."
P=cohortdrill
export COHORT_SFT_STEPS=${COHORT_SFT_STEPS:-100} COHORT_RL_STEPS=${COHORT_RL_STEPS:-5000}
export COHORT_MONITOR_PORT=${COHORT_MONITOR_PORT:-50451}
CTL="./build/cohortctl --learner 127.0.0.1:$COHORT_MONITOR_PORT"
docker version >/dev/null 2>&1 || { echo "SKIP: no Docker engine answers"; exit 0; }
[ -x build/cohortctl ] || cmake --build build --target cohortctl >/dev/null
trap 'docker-compose -p $P down -v >/dev/null 2>&1 || true' EXIT
bash deploy/make-base-images.sh
docker-compose -p $P build -q
docker images cohort --format 'image {{.Repository}}:{{.Tag}}: {{.Size}}'
docker run --rm cohort:latest sh -c 'command -v cc gcc cmake >/dev/null && echo "FAIL: compiler in the runtime image" && exit 1 || echo "runtime image: no compiler, no build tree"'
docker-compose -p $P up -d --scale actor=3
step() { { $CTL status 2>/dev/null || true; } | sed -n 's/^step \([0-9]*\)\/.*/\1/p'; }
wait_step() { for _ in $(seq 600); do s=$(step); [ -n "$s" ] && [ "$s" -ge "$1" ] && return 0; sleep 0.5; done; echo "FAIL: no progress past $1"; exit 1; }
wait_step $((COHORT_SFT_STEPS + 5)); echo "training: step $(step)"
docker kill ${P}_actor_1 >/dev/null; S=$(step); wait_step $((S + 20)); echo "actor killed: training went on to step $(step)"
docker-compose -p $P restart learner >/dev/null 2>&1
wait_step $((S + 40)); LOGS=$(docker-compose -p $P logs learner 2>&1 || true)
grep -q "resuming from" <<<"$LOGS" || { echo "FAIL: learner did not resume"; exit 1; }
echo "learner restarted: resumed from its checkpoint volume, now at step $(step)"
docker-compose -p $P up -d --scale actor=1 >/dev/null 2>&1; sleep 5; $CTL status | sed -n 2p
docker-compose -p $P up -d --scale actor=3 >/dev/null 2>&1; sleep 10; $CTL status | sed -n 2p
docker-compose -p $P down -v >/dev/null 2>&1
left=$(docker ps -a --filter "name=$P" --format '{{.Names}}' | wc -l)
[ "$left" = 0 ] || { echo "FAIL: $left containers left"; exit 1; }
echo "compose drill: OK (no container left)"
