#!/usr/bin/env bash
# reward_service.test.sh - cohort-reward for real, over loopback, called from Python (grpcio
# stubs generated from proto/), with the Python example verifier as a custom Verifier:
#   * built-in tasks scored with their components; any correct countdown expression counts;
#   * a task routed to the example verifier: partial credit, and the item's metadata reaches
#     the verifier untouched;
#   * a verifier that sleeps past its deadline -> ITEM_TIMED_OUT; one whose endpoint is down ->
#     ITEM_FAILED; an unknown task -> ITEM_UNKNOWN_TASK; never a silent 0;
#   * malformed request bytes -> INVALID_ARGUMENT, and the server keeps serving;
#   * cohortctl --server: score (a built-in task and a routed one), reward-status, health;
#   * Health answers SERVING; SIGTERM stops it cleanly, printing per-verifier stats.
# usage: bash tests/reward_service.test.sh BUILD_DIR
set -euo pipefail
BUILD=${1:?usage: reward_service.test.sh BUILD_DIR}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY=/usr/bin/python3
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
cd "$WORK"

port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
VPORT=$(port); SPORT=$(port); DEAD=$(port); RPORT=$(port)

"$PY" "$ROOT/reward/examples/python-verifier/verifier.py" --host 127.0.0.1 --port "$VPORT" --log "$WORK/verifier.log" > verifier.out 2>&1 &
PIDS+=($!)
"$PY" "$ROOT/reward/examples/python-verifier/verifier.py" --host 127.0.0.1 --port "$SPORT" --delay-ms 3000 > slow.out 2>&1 &
PIDS+=($!)
cat > reward.json <<JSON
{"format_weight": 0.5,
 "verifiers": [
   {"name": "match", "task": "match", "endpoints": ["127.0.0.1:$VPORT"], "timeout_ms": 5000},
   {"name": "slow", "task": "slowmatch", "endpoints": ["127.0.0.1:$SPORT"], "timeout_ms": 300},
   {"name": "gone", "task": "gonematch", "endpoints": ["127.0.0.1:$DEAD"], "timeout_ms": 300}]}
JSON
"$BUILD/cohort-reward" --listen "127.0.0.1:$RPORT" --config reward.json --workers 2 --stats-every 0 > reward.out 2>&1 &
RPID=$!
PIDS+=($RPID)

"$PY" - "$ROOT" "$RPORT" "$WORK" "$VPORT" "$SPORT" <<'PY'
import json, os, sys, time
import grpc
root, port, work = sys.argv[1], sys.argv[2], sys.argv[3]
verifier_ports = sys.argv[4:]
sys.path.insert(0, os.path.join(root, "tests")); import cohort_stubs
S = cohort_stubs.load(root, work)
pb, cpb, rpc = S.reward_pb2, S.common_pb2, S.reward_pb2_grpc
hpb, hrpc = S.health_pb2, S.health_pb2_grpc

ch = grpc.insecure_channel(f"127.0.0.1:{port}")
# wait for both servers (reward + the verifier, which compiles its stubs first)
health = hrpc.HealthStub(ch)
for _ in range(100):
    try:
        if health.Check(hpb.HealthCheckRequest(service=""), timeout=1).status == hpb.HealthCheckResponse.SERVING:
            break
    except grpc.RpcError:
        time.sleep(0.1)
else:
    sys.exit("FAIL: cohort-reward never became healthy")
# and both example verifiers (they compile their stubs when they start)
for vp in verifier_ports:
    vh = hrpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{vp}"))
    for _ in range(200):
        try:
            if vh.Check(hpb.HealthCheckRequest(service=""), timeout=1).status == hpb.HealthCheckResponse.SERVING:
                break
        except grpc.RpcError:
            time.sleep(0.1)
    else:
        sys.exit(f"FAIL: the example verifier on port {vp} never became healthy")
stub = rpc.RewardStub(ch)
meta = json.dumps({"target": "ABC", "note": "from the prompt file"})
items = [
    pb.RewardItem(item_id="a1", task="addition", prompt="12+34=", completion="46", answer="46"),
    pb.RewardItem(item_id="a2", task="addition", prompt="12+34=", completion="45", answer="46"),
    pb.RewardItem(item_id="c1", task="countdown", prompt="3,5,7>22:", completion="(7+5*3)",
                  metadata_json='{"numbers":[3,5,7],"target":22}'),
    pb.RewardItem(item_id="m1", task="match", prompt="up:abc=", completion="ABD", metadata_json=meta),
    pb.RewardItem(item_id="u1", task="nosuchtask", prompt="x", completion="y"),
]
ok = None
for _ in range(100):  # the verifier may still be starting
    rep = stub.Score(pb.ScoreRequest(items=items), timeout=10)
    r = {x.item_id: x for x in rep.results}
    if r["m1"].status == cpb.ITEM_OK:
        ok = r
        break
    time.sleep(0.1)
assert ok is not None, f"the example verifier never answered: {r['m1']}"
r = ok
assert r["a1"].status == cpb.ITEM_OK and r["a1"].reward == 1.5, r["a1"]
assert [c.name for c in r["a1"].components] == ["correct", "format"], r["a1"].components
assert r["a2"].status == cpb.ITEM_OK and r["a2"].reward == 0.5, r["a2"]
assert r["c1"].status == cpb.ITEM_OK and r["c1"].components[0].value == 1.0, r["c1"]
m1 = r["m1"]
assert abs(m1.reward - 2/3) < 1e-9 and m1.components[0].name == "verifier:match", m1
assert r["u1"].status == cpb.ITEM_UNKNOWN_TASK and r["u1"].reward == 0.0 and "nosuchtask" in r["u1"].detail, r["u1"]
logged = [json.loads(l) for l in open(os.path.join(work, "verifier.log"))]
assert any(l["metadata"] == json.loads(meta) for l in logged), logged

# a verifier past its deadline, and one whose endpoint is down
t0 = time.monotonic()
rep = stub.Score(pb.ScoreRequest(items=[
    pb.RewardItem(item_id="s", task="slowmatch", prompt="p", completion="x", metadata_json='{"target":"x"}'),
    pb.RewardItem(item_id="g", task="gonematch", prompt="p", completion="x", metadata_json='{"target":"x"}')]), timeout=10)
r = {x.item_id: x for x in rep.results}
assert r["s"].status == cpb.ITEM_TIMED_OUT and "300 ms" in r["s"].detail, r["s"]
assert r["g"].status == cpb.ITEM_FAILED and r["g"].detail, r["g"]
assert len(r["s"].components) == 0 and r["s"].reward == 0.0
assert time.monotonic() - t0 < 3.0, "the timed-out verifier held the call too long"

# malformed bytes: INVALID_ARGUMENT, then the server still serves
raw = ch.unary_unary("/cohort.v1.Reward/Score", request_serializer=lambda b: b, response_deserializer=lambda b: b)
try:
    raw(b"\xff\xff\xff\x07garbage", timeout=5)
    sys.exit("FAIL: malformed request accepted")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
    assert "malformed" in e.details(), e.details()
rep = stub.Score(pb.ScoreRequest(items=[items[0]]), timeout=5)
assert rep.results[0].reward == 1.5
try:
    stub.Score(pb.ScoreRequest(items=[pb.RewardItem(item_id="x", prompt="p", completion="c")]), timeout=5)
    sys.exit("FAIL: item without task accepted")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, e
print("reward service: scoring, custom verifier, metadata, timeout, down endpoint, bad input: ok")
PY

# ---- cohortctl against the reward service ------------------------------------------------------
CTL=("$BUILD/cohortctl" --server "127.0.0.1:$RPORT")
out=$("${CTL[@]}" score --task addition '12+30=' 42) || { echo "FAIL: cohortctl score (addition): $out" >&2; exit 1; }
grep -q '^reward 1\.5 (ITEM_OK' <<<"$out" || { echo "FAIL: cohortctl score addition: $out" >&2; exit 1; }
rc=0; out=$("${CTL[@]}" score --task addition '12+30=' 41) || rc=$?
[ $rc -eq 0 ] && grep -q '^reward 0\.5 ' <<<"$out" || { echo "FAIL: cohortctl score, wrong answer: $out" >&2; exit 1; }
out=$("${CTL[@]}" score --task match --metadata '{"target": "ABC"}' 'say ABC' ABC) \
    || { echo "FAIL: cohortctl score (routed to the verifier): $out" >&2; exit 1; }
grep -q '^reward 1 ' <<<"$out" || { echo "FAIL: cohortctl score match: $out" >&2; exit 1; }
rc=0; out=$("${CTL[@]}" score --task nosuchtask p c) || rc=$?
[ $rc -eq 1 ] && grep -q 'ITEM_UNKNOWN_TASK' <<<"$out" || { echo "FAIL: cohortctl score unknown task (rc $rc): $out" >&2; exit 1; }
rc=0; out=$("${CTL[@]}" score p c 2>&1) || rc=$?
[ $rc -eq 2 ] && grep -q 'needs --task' <<<"$out" || { echo "FAIL: cohortctl score without --task (rc $rc): $out" >&2; exit 1; }
out=$("${CTL[@]}" reward-status) || { echo "FAIL: cohortctl reward-status: $out" >&2; exit 1; }
grep -q '^verifier match (task match' <<<"$out" && grep -q "endpoint 127.0.0.1:$VPORT serving in rotation" <<<"$out" \
    || { echo "FAIL: cohortctl reward-status: $out" >&2; exit 1; }
grep -q "endpoint 127.0.0.1:$DEAD .*OUT of rotation" <<<"$out" || { echo "FAIL: the dead endpoint should be out of rotation: $out" >&2; exit 1; }
"$BUILD/cohortctl" --server "127.0.0.1:$VPORT" health >/dev/null || { echo "FAIL: cohortctl --server VERIFIER health" >&2; exit 1; }
echo "cohortctl --server: score, reward-status and health against the reward service and a verifier"

kill -TERM "$RPID"
for _ in $(seq 50); do kill -0 "$RPID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$RPID" 2>/dev/null; then echo "FAIL: cohort-reward did not stop on SIGTERM" >&2; exit 1; fi
wait "$RPID" || { echo "FAIL: cohort-reward exited with an error"; cat reward.out; exit 1; }
grep -q "verifier slow (task slowmatch): 1 calls, 0 ok, 0 failed, 1 timed out" reward.out || { echo "FAIL: stats"; cat reward.out; exit 1; }
grep -q "verifier gone (task gonematch): 1 calls, 0 ok, 1 failed" reward.out || { echo "FAIL: stats"; cat reward.out; exit 1; }
echo "reward_service.test.sh: OK"
