#!/usr/bin/env bash
# learn_sigkill.test.sh - the SIGKILL drill: exactly-once training of acknowledged groups.
#
# A cohort-learner trains from groups that two Python actors (grpcio clients generated from
# proto/) submit as fast as they can; each actor records every acknowledgement it receives
# (the group's acceptance number and lease). The drill kills the learner with SIGKILL at 10
# random moments and restarts it each time with --resume-if-present; the actors re-register
# by themselves. At the end it checks, from the actors' records and the learner's ledger
# (OUT/ledger.jsonl: the (seq, lease) pairs each step trained; the last line of a step is
# the one in the run's history):
#   - every acknowledged group with a seq up to the last trained one was trained exactly
#     once, under the lease the actor was told; no lease was trained twice (a group made
#     durable whose reply died with a killed learner is trained once and counted);
#   - the acknowledged groups after the last trained one are still in the log (the count of
#     records the final learner reports);
#   - the run reached its last step, and trained between every two kills.
# usage: bash tests/learn_sigkill.test.sh BUILD_DIR    (COHORT_DRILL_SEED=N to repeat a run)
set -euo pipefail
BUILD=${1:?usage: learn_sigkill.test.sh BUILD_DIR}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY=/usr/bin/python3
for b in cohort-learner; do
  [ -x "$BUILD/$b" ] || { echo "FAIL: $BUILD/$b is not built"; exit 1; }
done
KILLS=${COHORT_DRILL_KILLS:-10}
SEED=${COHORT_DRILL_SEED:-$RANDOM}
echo "sigkill drill: $KILLS kills, seed $SEED (COHORT_DRILL_SEED=$SEED repeats the kill times)"
WORK="$(mktemp -d)"
LPID=""; APIDS=()
cleanup() {
  [ -n "$LPID" ] && kill -9 "$LPID" 2>/dev/null || true
  for p in "${APIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK"
PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
STEPS=300
start_learner() {
  COHORT_KEEP_BLAS_KERNELS=1 "$BUILD/cohort-learner" --listen "127.0.0.1:$PORT" --out run \
    --resume-if-present --sft-steps 0 --rl-steps $STEPS --prompts 4 --group-size 4 \
    --max-new-tokens 4 --eval-every 0 --ckpt-every 3 --max-staleness 4 --lease-ttl-ms 4000 \
    --heartbeat-ms 300 --seed 7 >> learner.out 2>&1 &
  LPID=$!
}

cat > actor.py <<'PY'
# A minimal actor: random completions with valid shapes, every acknowledgement recorded.
import os, random, sys, time
import grpc
root, port, work, out = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
sys.path.insert(0, os.path.join(root, "tests")); import cohort_stubs
S = cohort_stubs.load(root, work)
lpb, lrpc = S.learner_pb2, S.learner_pb2_grpc
rnd = random.Random(out)
acks = open(out, "a")
ch = grpc.insecure_channel(f"127.0.0.1:{port}")
L = lrpc.LearnerStub(ch)
def reason(e):
    for k, v in (e.trailing_metadata() or ()):
        if k == "cohort-reason":
            return v
    return ""
while True:
    try:
        reg = L.RegisterActor(lpb.RegisterRequest(name="drill", threads=1), timeout=2)
    except grpc.RpcError:
        time.sleep(0.2); continue
    aid, G, temp = reg.actor_id, reg.group_size, reg.sampling.temperature
    maxnew, version = reg.sampling.max_new_tokens, reg.current_version
    try:
        while True:
            hb = L.Heartbeat(lpb.HeartbeatRequest(actor_id=aid, held_version=version), timeout=2)
            version = hb.current_version
            rep = L.LeasePrompts(lpb.LeaseRequest(actor_id=aid, max_prompts=2), timeout=2)
            if not rep.leases:
                time.sleep(rep.retry_after_ms / 1000.0); continue
            for ls in rep.leases:
                comps = []
                for _ in range(G):
                    n = rnd.randint(1, maxnew)
                    comps.append(lpb.ScoredCompletion(
                        completion_tokens=[rnd.randint(3, 20) for _ in range(n)],
                        behaviour_logprobs=[-1.0] * n, policy_version=version,
                        reward=float(rnd.randint(0, 1)), status=1))
                req = lpb.SubmitGroupRequest(actor_id=aid, lease_id=ls.lease_id,
                                             completions=comps, temperature=temp)
                try:
                    r = L.SubmitGroup(req, timeout=10)
                except grpc.RpcError as e:
                    if reason(e) == "unknown_actor" or e.code() == grpc.StatusCode.UNAVAILABLE:
                        raise
                    continue  # stale, expired, ...: the group is dropped, never acknowledged
                if r.accepted:
                    acks.write(f"{r.group_seq} {ls.lease_id:016x}\n"); acks.flush()
    except grpc.RpcError:
        time.sleep(0.1)  # the learner restarted or is gone: register again
PY

start_learner
for i in 1 2; do
  "$PY" actor.py "$ROOT" "$PORT" "$WORK" "acks$i.txt" 2> "actor$i.err" &
  APIDS+=($!)
done
"$PY" - "$SEED" "$KILLS" > kills.txt <<'PY'
import random, sys
r = random.Random(int(sys.argv[1]))
print(" ".join(f"{r.uniform(0.05, 1.5):.2f}" for _ in range(int(sys.argv[2]))))
PY
step_of() { grep -o '"step": [0-9]*' run/ledger.jsonl 2>/dev/null | tail -1 | grep -o '[0-9]*' || echo 0; }
# each kill falls at a random moment while training runs: after the (re)started learner has
# trained at least one more step, plus a random delay
wait_progress() {
  local before=$1
  for _ in $(seq 1 200); do
    [ "$(step_of)" -gt "$before" ] && return 0
    sleep 0.1
  done
  echo "FAIL: no training progress within 20 s (ledger step $before)"; tail -20 learner.out; exit 1
}
k=0
for t in $(cat kills.txt); do
  wait_progress "$(step_of)"
  sleep "$t"
  k=$((k + 1))
  kill -9 "$LPID" 2>/dev/null || { echo "FAIL: the learner was gone before kill $k:"; tail -20 learner.out; exit 1; }
  wait "$LPID" 2>/dev/null || true
  echo "kill $k after ${t}s at ledger step $(step_of)"
  echo "---- SIGKILL $k ----" >> learner.out
  start_learner
done
# let the run finish
for _ in $(seq 1 600); do
  kill -0 "$LPID" 2>/dev/null || break
  sleep 0.2
done
if kill -0 "$LPID" 2>/dev/null; then
  echo "FAIL: the run did not finish within 120 s after the last kill (ledger step $(step_of))"; tail -20 learner.out; exit 1
fi
wait "$LPID" && rc=0 || rc=$?
LPID=""
[ $rc -eq 0 ] || { echo "FAIL: the final learner exited $rc"; tail -20 learner.out; exit 1; }
grep -q "training finished at step $STEPS" learner.out || { echo "FAIL: no 'training finished at step $STEPS'"; tail -20 learner.out; exit 1; }
RESUMES=$(grep -c "resumed the RL data" learner.out || true)
echo "learner restarted $KILLS times, resumed the RL data $RESUMES times"

"$PY" - "$STEPS" <<'PY'
import json, sys
steps = int(sys.argv[1])
acked = {}
for f in ("acks1.txt", "acks2.txt"):
    for line in open(f):
        seq, lease = line.split()
        seq = int(seq)
        if seq in acked and acked[seq] != lease:
            sys.exit(f"FAIL: seq {seq} acknowledged twice, for leases {acked[seq]} and {lease}")
        acked[seq] = lease
lineage = {}
for line in open("run/ledger.jsonl"):
    o = json.loads(line)
    lineage[o["step"]] = o["groups"]  # a redone step: its last line counts
missing_steps = [s for s in range(1, steps + 1) if s not in lineage]
if missing_steps:
    sys.exit(f"FAIL: the ledger has no line for steps {missing_steps[:10]}")
trained = {}
for s in range(1, steps + 1):
    for seq, lease in lineage[s]:
        if seq in trained:
            sys.exit(f"FAIL: seq {seq} trained twice: steps {trained[seq][0]} and {s}")
        trained[seq] = (s, lease)
last = max(trained)
leases = {}
unheard = 0
for seq, (s, lease) in trained.items():
    if lease in leases:
        sys.exit(f"FAIL: lease {lease} trained twice: seqs {leases[lease]} and {seq}")
    leases[lease] = seq
    if seq not in acked:
        # made durable, then the learner was killed before its reply reached the actor:
        # trained once, and its lease died with that learner, so it cannot come again
        unheard += 1
    elif acked[seq] != lease:
        sys.exit(f"FAIL: seq {seq}: acknowledged for lease {acked[seq]}, trained for {lease}")
if unheard > 4 * 10 * 2:
    sys.exit(f"FAIL: {unheard} trained groups were never acknowledged (more than the kills explain)")
lost = [q for q in acked if q <= last and q not in trained]
if lost:
    sys.exit(f"FAIL: {len(lost)} acknowledged group(s) never trained: seqs {sorted(lost)[:10]}")
after = sorted(q for q in acked if q > last)
print(f"ok: {len(acked)} acknowledged groups; {len(trained)} trained exactly once over {steps} "
      f"steps; 0 lost, 0 twice; {unheard} durable but their reply lost in a kill; {len(after)} "
      f"acknowledged after the last step's batch")
PY
echo "sigkill drill: ok"
