#!/usr/bin/env bash
# swarm_drill.sh - the same docker-compose.yml as a Docker Swarm stack, on a one-node swarm
# made for the drill (tests/run.sh runs it after the compose drill whenever an engine answers
# that is not already part of a swarm: an existing swarm is never touched):
#   1. `docker swarm init`, `docker stack deploy -c docker-compose.yml`, actors scaled to 3;
#      progress read with cohortctl from outside through the published Monitor port;
#   2. the learner's container killed: Swarm starts a new task, which resumes from the
#      volume; the actors reconnect (gRPC re-resolves the learner's name: endpoint_mode dnsrr);
#   3. actors scaled 3 -> 1;
#   4. `docker stack rm`, the volume removed, `docker swarm leave`: nothing of it left.
# Needs the image cohort:latest (the compose drill builds it; built here if missing).
# usage: bash tests/swarm_drill.sh [BUILD_DIR]     (COHORT_SKIP_DOCKER=1 skips it)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD=$(cd "${1:-$ROOT/build}" && pwd)
cd "$ROOT"
DRILL="swarm drill"
source "$ROOT/tests/drill_lib.sh"
drill_engine
state=$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || echo unknown)
if [ "$state" != inactive ]; then
    echo "SKIP: swarm drill: this engine's swarm state is '$state' (the drill only runs on an engine outside any swarm)"
    exit 0
fi
[ -x "$BUILD/cohortctl" ] || { echo "FAIL: $BUILD/cohortctl missing (build first)"; exit 1; }

S=cohortswarm
drill_settings   # COHORT_* settings of the run, and CTL
drill_dump() {
    docker stack ps --no-trunc "$S" | head -20
    for svc in learner actor; do docker service logs --tail 15 "${S}_$svc"; done
}
stack_containers() { docker ps -aq --filter "label=com.docker.stack.namespace=$S"; }
cleanup() {
    docker stack rm "$S" >/dev/null 2>&1 || true
    for _ in $(seq 60); do [ -z "$(stack_containers)" ] && break; sleep 1; done
    docker volume rm "${S}_cohort-data" >/dev/null 2>&1 || true
    docker swarm leave --force >/dev/null 2>&1 || true
}
trap cleanup EXIT

if ! docker image inspect cohort:latest >/dev/null 2>&1; then
    bash deploy/make-base-images.sh && docker build -q -t cohort:latest . >/dev/null
fi
if ! docker image inspect cohort-go-verifier:latest >/dev/null 2>&1; then
    bash deploy/make-base-images.sh && docker build -q -t cohort-go-verifier:latest \
        -f reward/examples/go-verifier/Dockerfile . >/dev/null
fi

echo "== swarm drill: init, stack deploy, 3 actors ($(el)) =="
docker swarm init --advertise-addr 127.0.0.1 >/dev/null || fail "docker swarm init"
docker stack deploy -c docker-compose.yml "$S" 2>&1 | grep -v -e "^Ignoring unsupported" -e "^Since --detach" \
    -e "^In a future release" -e '^ *$' | sed 's/^/  /' || true
docker service scale -d "${S}_actor=3" >/dev/null || fail "scale actors to 3"
until_ok 300 "3 actors training" '[ "$STEP" -ge $((COHORT_SFT_STEPS + 5)) ] && [ "$ACTORS" -eq 3 ]'
echo "stack up: step $STEP, $ACTORS actors, read through the published port ($(el))"
docker stack services "$S" --format '  {{.Name}} {{.Replicas}} {{.Ports}}'

echo "== swarm drill: kill the learner's container ($(el)) =="
snap || fail "status"
K=$STEP
old=$(docker ps -q --filter "label=com.docker.swarm.service.name=${S}_learner")
[ -n "$old" ] || fail "no running learner container"
docker kill "$old" >/dev/null
until_ok 180 "a new learner task, resumed, actors back" \
    '[ "$UPTIME" -lt 120 ] && [ "$STEP" -gt $COHORT_SFT_STEPS ] && [ "$ACTORS" -eq 3 ]'
R=$STEP
LOGS=$(docker service logs "${S}_learner" 2>&1 || true)   # (grep -q on a pipe: SIGPIPE)
grep -q "resuming from /data/run/checkpoints/latest" <<<"$LOGS" \
    || fail "the new learner task did not resume from the volume"
FROM=$(sed -n 's/.*RL from step \([0-9]*\).*/\1/p' <<<"$LOGS" | tail -1)
until_ok 120 "training after the learner's restart" '[ "$STEP" -ge $((R + 10)) ]'
echo "learner killed at step $K: Swarm started a new task; it resumed from the volume's last checkpoint (step $FROM); $ACTORS actors reconnected; step $STEP ($(el))"

echo "== swarm drill: scale actors 3 -> 1 ($(el)) =="
docker service scale -d "${S}_actor=1" >/dev/null || fail "scale actors to 1"
until_ok 90 "one actor" '[ "$ACTORS" -eq 1 ]'
T=$STEP
until_ok 60 "training with one actor" '[ "$STEP" -ge $((T + 5)) ]'
echo "scaled to 1: the learner counts $ACTORS actor, step $STEP ($(el))"

echo "== swarm drill: stack rm, swarm leave ($(el)) =="
trap - EXIT
cleanup
[ -z "$(stack_containers)" ] || fail "containers left after stack rm"
[ "$(docker info --format '{{.Swarm.LocalNodeState}}')" = inactive ] || fail "the engine is still in a swarm"
! docker volume inspect "${S}_cohort-data" >/dev/null 2>&1 || fail "volume left"
echo "swarm drill: OK in $(el) (stack removed, swarm left)"
