#!/usr/bin/env bash
# actor.test.sh - cohort-actor against the real cohort-learner and cohort-reward, over loopback:
#   * two actors register, download and verify the weights, lease prompts, sample, score and
#     submit groups; the learner's version advances (metrics.jsonl);
#   * SIGKILL one actor: its leases expire and training goes on with the other;
#   * stop the reward service so the surviving actor holds a lease (Score retries), then
#     SIGTERM it: it returns the lease and exits 0.
# usage: bash tests/actor.test.sh BUILD_DIR
set -euo pipefail
BUILD=${1:?usage: actor.test.sh BUILD_DIR}
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/ctl_poll.sh"
for b in cohort-learner cohort-actor cohort-reward; do
    if [ ! -x "$BUILD/$b" ]; then
        echo "FAIL: $BUILD/$b is not built (build the tree first: cmake --build $BUILD)" >&2
        exit 1
    fi
done
PY=/usr/bin/python3
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK"

fail() {
    echo "FAIL: $*" >&2
    for f in learner.out reward.out a1.out a2.out; do
        [ -f "$f" ] && { echo "---- $f (tail)" >&2; tail -n 25 "$f" >&2; }
    done
    exit 1
}
port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# newest step in the learner's metrics file (0 if none)
step() {
    "$PY" - "$WORK/run/metrics.jsonl" <<'PY'
import json, sys
best = 0
try:
    for line in open(sys.argv[1]):
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if isinstance(r, dict) and isinstance(r.get("step"), int):
            best = max(best, r["version"] if isinstance(r.get("version"), int) else r["step"])
except OSError:
    pass
print(best)
PY
}
# wait_for SECONDS CMD...: poll CMD every 0.2 s
wait_for() {
    local t=$1; shift
    local n=$((t * 5))
    for _ in $(seq "$n"); do
        if "$@"; then return 0; fi
        sleep 0.2
    done
    return 1
}
step_at_least() { [ "$(step)" -ge "$1" ]; }

LPORT=$(port); RPORT=$(port)
"$BUILD/cohort-reward" --listen "127.0.0.1:$RPORT" --workers 2 --stats-every 0 > reward.out 2>&1 &
RPID=$!; PIDS+=($RPID)
"$BUILD/cohort-learner" --listen "127.0.0.1:$LPORT" --out "$WORK/run" --sft-steps 0 \
    --rl-steps 100000 --prompts 2 --group-size 4 --heartbeat-ms 300 --lease-ttl-ms 2000 \
    --eval-every 0 --ckpt-every 0 --max-staleness 4 > learner.out 2>&1 &
LPID=$!; PIDS+=($LPID)
# an operator watching all along (cohortctl status / workers in the background)
ctl_poll_start "$BUILD/cohortctl" "$WORK/ctl_poll.log" --learner "127.0.0.1:$LPORT"
PIDS+=($CTL_POLL_PID)

ACTOR=("$BUILD/cohort-actor" --learner "127.0.0.1:$LPORT" --reward "127.0.0.1:$RPORT" --threads 1)
"${ACTOR[@]}" --name a1 --seed 1 > a1.out 2>&1 &
A1=$!; PIDS+=($A1)
"${ACTOR[@]}" --name a2 --seed 2 --prompts-per-lease 2 --reward-timeout-ms 2000 > a2.out 2>&1 &
A2=$!; PIDS+=($A2)

# both actors hold a verified version and submit; the learner's version advances
wait_for 30 grep -q "downloaded and verified" a1.out || fail "actor a1 never downloaded weights"
wait_for 30 grep -q "downloaded and verified" a2.out || fail "actor a2 never downloaded weights"
wait_for 30 step_at_least 5 || fail "the learner's version did not advance (step $(step))"
grep -q "registered as" learner.out || fail "the learner did not log the registrations"
[ "$(grep -c "registered as" learner.out)" -ge 2 ] || fail "not both actors registered"
if grep -q "ERROR: AddressSanitizer\|runtime error:" a1.out a2.out; then fail "sanitizer report"; fi
echo "actors: weights downloaded, groups submitted, learner at step $(step)"

# SIGKILL one actor: training continues (its leases expire after the lease TTL)
kill -9 "$A1"
wait "$A1" 2>/dev/null || true
S0=$(step)
wait_for 20 step_at_least $((S0 + 5)) || fail "training stalled after SIGKILL of a1 (step $(step), was $S0)"
echo "after SIGKILL of a1: learner advanced from step $S0 to $(step)"
# the learner's lease counters (Monitor.Status, through cohortctl)
lease_field() { # lease_field NAME: a counter of cohortctl status's "leases issued" line
    local out
    out=$("$BUILD/cohortctl" --learner "127.0.0.1:$LPORT" status 2>/dev/null) || { echo -1; return; }
    sed -n 's/.*leases issued [0-9]* (again \([0-9]*\)).*completed [0-9]*  expired \([0-9]*\)  returned \([0-9]*\)  of dead actors \([0-9]*\).*/again=\1 expired=\2 returned=\3 dead=\4/p' <<<"$out" \
        | tr ' ' '\n' | sed -n "s/^$1=//p"
}
# (whether a1 held a lease at the kill is chance; the compose drill kills an actor that does)
echo "after SIGKILL of a1: $(lease_field dead) lease(s) of a dead actor, $(lease_field expired) expired, $(lease_field again) issued again"

# make a2 hold a lease: with the reward service gone, its Score call retries
kill -TERM "$RPID"
wait "$RPID" 2>/dev/null || true
wait_for 15 grep -q "Reward.Score at" a2.out || fail "a2 never noticed the reward service was gone"
kill -TERM "$A2"
RC=0
for _ in $(seq 100); do kill -0 "$A2" 2>/dev/null || break; sleep 0.1; done
kill -0 "$A2" 2>/dev/null && fail "a2 did not exit within 10 s of SIGTERM"
wait "$A2" || RC=$?
[ "$RC" -eq 0 ] || fail "a2 exited with status $RC after SIGTERM"
grep -Eq "returned [1-9][0-9]* of [1-9][0-9]* leases" a2.out || fail "a2 did not return its leases"
grep -q "stopped: [1-9][0-9]* groups submitted" a2.out || fail "a2 submitted no groups"
if grep -q "ERROR: AddressSanitizer\|runtime error:" a2.out; then fail "sanitizer report in a2"; fi
echo "a2: SIGTERM -> $(grep -E "returned [0-9]+ of" a2.out | tail -1 | sed 's/.*: //'), exit 0"
[ "$(lease_field returned)" -ge 1 ] || fail "the learner's status counts no returned lease"
ctl_poll_stop --need-answer || fail "cohortctl polling"

kill -TERM "$LPID" 2>/dev/null || true
for _ in $(seq 50); do kill -0 "$LPID" 2>/dev/null || break; sleep 0.1; done
echo "actor.test.sh: OK"
