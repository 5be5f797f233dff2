#!/usr/bin/env bash
# compose_drill.sh - the docker-compose drill, on this machine's Docker engine (tests/run.sh
# runs it after the ctest suites whenever an engine answers; otherwise it prints a SKIP line):
#   1. base images from the Debian archive (deploy/make-base-images.sh) and the Cohort image,
#      its size printed, checked to hold no compiler and no build tree; `config` accepts the file;
#   2. `up` with 3 actors; the learner turns healthy (gRPC health check) and reports progress,
#      read with cohortctl from outside the containers through the one published port;
#   3. one actor container killed: training goes on, its leases come back (issued again);
#   4. the learner container restarted: it resumes from the checkpoint volume at the step it
#      stopped, the actors reconnect and training goes on;
#   5. actors scaled 3 -> 1 -> 3 (the learner's actor count follows);
#   6. `down -v`: no container, network or volume of the project left.
# usage: bash tests/compose_drill.sh [BUILD_DIR]     (COHORT_SKIP_DOCKER=1 skips it)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BUILD=$(cd "${1:-$ROOT/build}" && pwd)
cd "$ROOT"

DRILL="compose drill"
source "$ROOT/tests/drill_lib.sh"
drill_engine
if docker compose version >/dev/null 2>&1; then
    DC=(docker compose)
else
    if ! command -v docker-compose >/dev/null; then
        echo "compose drill: installing docker-compose (Debian package)"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-compose >/dev/null
    fi
    DC=(docker-compose)
fi
[ -x "$BUILD/cohortctl" ] || { echo "FAIL: $BUILD/cohortctl missing (build first)"; exit 1; }

P=cohortdrill
dc() { "${DC[@]}" -p "$P" "$@"; }
drill_settings   # COHORT_* settings of the run, and CTL

drill_dump() { dc ps; dc logs --tail=25; }
cleanup() { dc down -v --remove-orphans >/dev/null 2>&1 || true; }
trap cleanup EXIT
cleanup   # a project left over by an interrupted run

running_actors() { docker ps --filter "label=com.docker.compose.project=$P" \
    --filter "label=com.docker.compose.service=actor" --format '{{.ID}}' | wc -l; }

# ---- 1. images ------------------------------------------------------------------------------
echo "== compose drill: images ($(el)) =="
bash deploy/make-base-images.sh
dc config -q || fail "the compose file is not accepted by ${DC[*]} config"
echo "${DC[*]} config: accepted"
dc build -q 2>&1 | grep -v -e DEPRECATED -e "legacy builder" -e buildx -e "docs.docker.com" -e '^ *$' || true
docker image inspect cohort:latest >/dev/null 2>&1 || fail "the image cohort:latest was not built"
docker image inspect cohort-go-verifier:latest >/dev/null 2>&1 || fail "the image cohort-go-verifier:latest (the Go example verifier) was not built"
for img in debian:12-slim cohort:latest cohort-go-verifier:latest; do
    echo "image $img: $(( $(docker image inspect "$img" --format '{{.Size}}') / 1000000 )) MB"
done
check=$(docker run --rm cohort:latest sh -c '
    for c in cc gcc g++ clang cmake make ld as; do command -v "$c" >/dev/null && echo "compiler tool: $c"; done
    for d in /src /build /out; do [ -e "$d" ] && echo "build tree: $d"; done
    ls /usr/include/grpc /usr/include/protobuf-c >/dev/null 2>&1 && echo "development headers"
    for b in cohort-learner cohort-reward cohort-actor cohortctl; do command -v "$b" >/dev/null || echo "missing: $b"; done
    true')
[ -z "$check" ] || fail "runtime image: $check"
echo "runtime image: the binaries, no compiler, no build tree, no headers ($(el))"

# ---- 2. up with 3 actors --------------------------------------------------------------------
echo "== compose drill: up with 3 actors ($(el)) =="
dc up -d --scale actor=3 2>&1 | grep -v -e DEPRECATED -e '^ *$' | sed 's/^/  /' || true
for _ in $(seq 300); do
    h=$(docker inspect --format '{{.State.Health.Status}}' "$(dc ps -q learner 2>/dev/null)" 2>/dev/null || true)
    [ "$h" = healthy ] && break
    sleep 1
done
[ "$h" = healthy ] || fail "the learner container never turned healthy (health: $h)"
echo "learner container: healthy (grpc.health.v1 via cohortctl health) ($(el))"
until_ok 240 "3 actors training" '[ "$STEP" -ge $((COHORT_SFT_STEPS + 5)) ] && [ "$ACTORS" -eq 3 ]'
echo "cohortctl from outside: step $STEP, $ACTORS actors ($(el))"
"${CTL[@]}" workers | sed 's/^/  /'
# the custom verifiers, Python and Go, each in its container: healthy, in the reward service's
# rotation, and scoring a routed item (cohortctl inside the reward container: its port is not
# published)
for v in verifier go-verifier; do
    for _ in $(seq 60); do
        h=$(docker inspect --format '{{.State.Health.Status}}' "$(dc ps -q $v 2>/dev/null)" 2>/dev/null || true)
        [ "$h" = healthy ] && break
        sleep 1
    done
    [ "$h" = healthy ] || fail "the $v container never turned healthy (health: $h)"
done
RCTL=(docker exec "$(dc ps -q reward)" cohortctl --server 127.0.0.1:50052)
out=$("${RCTL[@]}" score --task length --metadata '{"chars": 5}' 'five letters' hello 2>&1) \
    || fail "a task routed to the Go verifier was not scored: $out"
grep -q '^reward 1 ' <<<"$out" || fail "the Go verifier's score for 'hello' (5 chars) is not 1: $out"
out=$("${RCTL[@]}" score --task match --metadata '{"target": "ABC"}' 'say ABC' ABC 2>&1) \
    || fail "a task routed to the Python verifier was not scored: $out"
grep -q '^reward 1 ' <<<"$out" || fail "the Python verifier's score is not 1: $out"
st=$("${RCTL[@]}" reward-status 2>&1) || fail "reward-status: $st"
grep -q 'endpoint go-verifier:50062 serving in rotation' <<<"$st" || fail "the Go verifier is not in rotation: $st"
grep -q 'endpoint verifier:50061 serving in rotation' <<<"$st" || fail "the Python verifier is not in rotation: $st"
echo "verifier containers (Python and Go): healthy, in the reward service's rotation, each scored a routed item"
rc=0; out=$(env -u COHORT_TOKEN "$BUILD/cohortctl" --learner "127.0.0.1:$COHORT_MONITOR_PORT" status 2>&1) || rc=$?
[ "$rc" -ne 0 ] && grep -q UNAUTHENTICATED <<<"$out" || fail "the published port answered without the token"
echo "published Monitor port: refuses calls without the token"

# ---- 3. kill one actor ----------------------------------------------------------------------
echo "== compose drill: kill one actor container ($(el)) =="
snap || fail "status"
S=$STEP; D0=$((DEAD + EXPIRED)); A0=$AGAIN
# kill an actor while it holds leases: freeze one (docker pause), ask the learner what it
# holds (ListWorkers names actors by container hostname = short id), kill it or thaw it
victim= held=0
for _ in $(seq 40); do
    for id in $(dc ps -q actor 2>/dev/null); do
        docker pause "$id" >/dev/null 2>&1 || continue
        held=$("${CTL[@]}" workers 2>/dev/null | awk -v n="${id:0:12}" '$2 == n {print $7}')
        if [ "${held:-0}" -gt 0 ]; then victim=$id; break 2; fi
        docker unpause "$id" >/dev/null 2>&1 || true
    done
    sleep 0.5
done
[ -n "$victim" ] || fail "no actor was seen holding a lease"
docker kill "$victim" >/dev/null
echo "killed actor container ${victim:0:12} holding $held lease(s)"
until_ok 60 "the killed actor's leases back and training going on" \
    '[ $((DEAD + EXPIRED)) -gt $D0 ] && [ "$AGAIN" -gt $A0 ] && [ "$STEP" -ge $((S + 10)) ]'
echo "actor killed at step $S: $((DEAD + EXPIRED - D0)) lease(s) of the dead actor came back ($((AGAIN - A0)) issued again); training at step $STEP with $ACTORS actor(s) ($(el))"

# ---- 4. restart the learner -----------------------------------------------------------------
echo "== compose drill: restart the learner container ($(el)) =="
snap || fail "status"
S=$STEP
dc restart learner >/dev/null 2>&1 || fail "restart learner"
until_ok 120 "the learner back (new process)" '[ "$UPTIME" -lt 60 ] && [ "$STEP" -ge "$S" ]'
R=$STEP
LOGS=$(dc logs learner 2>&1 || true)   # (not grep -q on a pipe: SIGPIPE under pipefail)
grep -q "resuming from /data/run/checkpoints/latest" <<<"$LOGS" \
    || fail "the restarted learner did not resume from its volume"
FROM=$(sed -n 's/.*RL from step \([0-9]*\).*/\1/p' <<<"$LOGS" | tail -1)
[ "${FROM:-0}" -ge "$S" ] || fail "the learner stopped after step $S but resumed from step ${FROM:-?}"
until_ok 120 "actors reconnected and training going on" '[ "$ACTORS" -ge 2 ] && [ "$STEP" -ge $((R + 10)) ]'
echo "learner restarted after step $S (SIGTERM: checkpoint): resumed from the volume at step $FROM; $ACTORS actors reconnected; step $STEP ($(el))"

# ---- 5. scale 3 -> 1 -> 3 ---------------------------------------------------------------------
echo "== compose drill: scale actors 3 -> 1 -> 3 ($(el)) =="
dc up -d --scale actor=1 >/dev/null 2>&1 || fail "scale to 1"
until_ok 60 "one actor" '[ "$ACTORS" -eq 1 ] && [ "$(running_actors)" -eq 1 ]'
S=$STEP
until_ok 60 "training with one actor" '[ "$STEP" -ge $((S + 5)) ]'
echo "scaled to 1: 1 container, learner counts $ACTORS actor, step $STEP (leases handed back so far: $RETURNED) ($(el))"
dc up -d --scale actor=3 >/dev/null 2>&1 || fail "scale to 3"
until_ok 90 "three actors" '[ "$ACTORS" -eq 3 ] && [ "$(running_actors)" -eq 3 ]'
S=$STEP
until_ok 60 "training with three actors" '[ "$STEP" -ge $((S + 5)) ]'
echo "scaled to 3: 3 containers, learner counts $ACTORS actors, step $STEP ($(el))"

# ---- 6. down --------------------------------------------------------------------------------
echo "== compose drill: down ($(el)) =="
dc down -v >/dev/null 2>&1 || fail "down"
left=$(docker ps -a --filter "label=com.docker.compose.project=$P" --format '{{.Names}}')
[ -z "$left" ] || fail "containers left after down: $left"
nets=$(docker network ls --filter "label=com.docker.compose.project=$P" --format '{{.Name}}')
[ -z "$nets" ] || fail "networks left after down: $nets"
vols=$(docker volume ls --filter "label=com.docker.compose.project=$P" --format '{{.Name}}')
[ -z "$vols" ] || fail "volumes left after down -v: $vols"
trap - EXIT
echo "compose drill: OK in $(el) (no container, network or volume of the project left)"
