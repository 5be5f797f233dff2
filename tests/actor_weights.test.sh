#!/usr/bin/env bash
# actor_weights.test.sh - the actor's weight-download options in a real cluster run over
# loopback (cohort-learner, cohort-reward, two cohort-actor processes), a few RL steps:
#   * a1 runs with --weights-bf16 --weights-delta: it warns at start that it samples with the
#     bf16-rounded weights, really downloads in BF16 (its log and the learner's say so) and
#     submits groups the learner trains on;
#   * a2 runs with --weights-delta: once it holds a version, later versions arrive as deltas
#     from it (its log says "delta"; nothing falls back to a full download because of a bad
#     patch), and it submits groups too;
#   * the learner's version advances (an entropy bonus makes every step change the weights,
#     even when a random policy's groups earn no reward), and both actors exit 0 on SIGTERM.
# usage: bash tests/actor_weights.test.sh BUILD_DIR
set -euo pipefail
BUILD=${1:?usage: actor_weights.test.sh BUILD_DIR}
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
            best = max(best, r["step"])
except OSError:
    pass
print(best)
PY
}
wait_for() { # wait_for SECONDS CMD...: poll CMD every 0.2 s
    local t=$1; shift
    for _ in $(seq $((t * 5))); do
        if "$@"; then return 0; fi
        sleep 0.2
    done
    return 1
}
step_at_least() { [ "$(step)" -ge "$1" ]; }
count_at_least() { [ "$(grep -c "$2" "$3" || true)" -ge "$1" ]; } # count_at_least N PATTERN FILE

LPORT=$(port); RPORT=$(port)
"$BUILD/cohort-reward" --listen "127.0.0.1:$RPORT" --workers 2 --stats-every 0 > reward.out 2>&1 &
PIDS+=($!)
"$BUILD/cohort-learner" --listen "127.0.0.1:$LPORT" --out "$WORK/run" --sft-steps 0 \
    --rl-steps 100000 --prompts 2 --group-size 4 --heartbeat-ms 300 --lease-ttl-ms 2000 \
    --eval-every 0 --ckpt-every 0 --max-staleness 4 --entropy-coef 0.01 > learner.out 2>&1 &
LPID=$!; PIDS+=($LPID)
ACTOR=("$BUILD/cohort-actor" --learner "127.0.0.1:$LPORT" --reward "127.0.0.1:$RPORT" --threads 1)
"${ACTOR[@]}" --name a1 --seed 1 --weights-bf16 --weights-delta > a1.out 2>&1 &
A1=$!; PIDS+=($A1)
"${ACTOR[@]}" --name a2 --seed 2 --weights-delta > a2.out 2>&1 &
A2=$!; PIDS+=($A2)

# a1: the start-up warning, BF16 downloads (actor and learner agree), training advances
wait_for 10 grep -q "weights-bf16: sampling with bf16-rounded weights" a1.out ||
    fail "a1 did not warn that it samples with the bf16-rounded weights"
wait_for 30 grep -q "downloaded and verified (bf16" a1.out || fail "a1 never downloaded in BF16"
grep -q "downloaded and verified (f32\|downloaded and verified (delta" a1.out &&
    fail "a1 (--weights-bf16) downloaded something other than BF16"
grep -q "in BF16: its samples come from the bf16-rounded policy" learner.out ||
    fail "the learner did not log a BF16 download"
# a2: a full first version, then deltas from the version it holds
wait_for 30 grep -q "downloaded and verified (f32" a2.out || fail "a2 never downloaded a version"
wait_for 40 count_at_least 2 "downloaded and verified (delta" a2.out ||
    fail "a2 (--weights-delta) never downloaded two versions as deltas (learner at step $(step))"
grep -q "delta refused" a2.out && fail "a2's patched delta failed its CRC check"
# the entropy bonus changes weights every step: some delta carried tensors, not only the header
MAXD=$(sed -n 's/.*downloaded and verified (delta, \([0-9]*\) bytes.*/\1/p' a2.out | sort -n | tail -1)
[ "${MAXD:-0}" -gt 65536 ] || fail "a2's deltas carried no changed tensors (largest ${MAXD:-0} bytes)"
wait_for 30 step_at_least 6 || fail "the learner's version did not advance (step $(step))"
count_at_least 2 "downloaded and verified (bf16" a1.out ||
    fail "a1 downloaded only one version in BF16"
if grep -q "ERROR: AddressSanitizer\|runtime error:" a1.out a2.out; then fail "sanitizer report"; fi
echo "learner at step $(step): a1 downloaded $(grep -c "downloaded and verified (bf16" a1.out)" \
    "versions in BF16, a2 $(grep -c "downloaded and verified (delta" a2.out) as deltas" \
    "($(grep "downloaded and verified (delta" a2.out | tail -1 | sed 's/.*(delta, //; s/,.*//'))"

for a in "$A1" "$A2"; do kill -TERM "$a"; done
for a in "$A1" "$A2"; do
    RC=0
    for _ in $(seq 100); do kill -0 "$a" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$a" 2>/dev/null && fail "an actor did not exit within 10 s of SIGTERM"
    wait "$a" || RC=$?
    [ "$RC" -eq 0 ] || fail "an actor exited with status $RC after SIGTERM"
done
grep -q "stopped: [1-9][0-9]* groups submitted" a1.out || fail "a1 submitted no groups"
grep -q "stopped: [1-9][0-9]* groups submitted" a2.out || fail "a2 submitted no groups"
kill -TERM "$LPID" 2>/dev/null || true
for _ in $(seq 50); do kill -0 "$LPID" 2>/dev/null || break; sleep 0.1; done
echo "actor_weights.test.sh: OK"
