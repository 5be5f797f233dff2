#!/usr/bin/env bash
# monitor_port.test.sh - cohort-learner --monitor-listen: a second port that serves Monitor
# (and the health service) and nothing else, the one a deployment publishes to operators.
#   * cohortctl status / health work on both ports;
#   * Learner rpcs on the Monitor port are UNIMPLEMENTED, its health service does not know
#     cohort.v1.Learner; the main port still serves both;
#   * a token guards the Monitor port too;
#   * a --monitor-listen address that cannot be bound: clear error, exit 1, no hang.
# usage: bash tests/monitor_port.test.sh BUILD_DIR
set -euo pipefail
BUILD=${1:?usage: monitor_port.test.sh BUILD_DIR}
for b in cohort-learner cohortctl; do
    [ -x "$BUILD/$b" ] || { echo "FAIL: $BUILD/$b is not built (build the tree first: cmake --build $BUILD)" >&2; exit 1; }
done
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY=/usr/bin/python3
WORK="$(mktemp -d)"
LPID=
cleanup() {
    [ -n "$LPID" ] && kill -9 "$LPID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK"
fail() { echo "FAIL: $*" >&2; [ -f learner.out ] && tail -n 20 learner.out >&2; exit 1; }
port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

LPORT=$(port); MPORT=$(port)
"$BUILD/cohort-learner" --listen "127.0.0.1:$LPORT" --monitor-listen "127.0.0.1:$MPORT" \
    --token s3cret --out "$WORK/run" --sft-steps 0 --rl-steps 10 --eval-every 0 \
    --ckpt-every 0 > learner.out 2>&1 &
LPID=$!
CTL=("$BUILD/cohortctl" --token s3cret)
for _ in $(seq 100); do
    "${CTL[@]}" --learner "127.0.0.1:$MPORT" health cohort.v1.Monitor >/dev/null 2>&1 && break
    sleep 0.2
done
grep -q "Monitor also on port $MPORT" learner.out || fail "the learner did not announce its Monitor port"
out=$("${CTL[@]}" --learner "127.0.0.1:$MPORT" status) || fail "status on the Monitor port"
grep -q "^step 0/10 " <<<"$out" || fail "unexpected status: $out"
"${CTL[@]}" --learner "127.0.0.1:$LPORT" status >/dev/null || fail "status on the main port"
echo "status answers on the Monitor port and on the main port"

rc=0; out=$("$BUILD/cohortctl" --learner "127.0.0.1:$MPORT" status 2>&1) || rc=$?
[ "$rc" -ne 0 ] && grep -q UNAUTHENTICATED <<<"$out" || fail "no token on the Monitor port: $out"
echo "the Monitor port wants the token: $(head -1 <<<"$out")"

"$PY" - "$ROOT" "$WORK" "$LPORT" "$MPORT" <<'PY' || fail "Learner rpcs on the Monitor port"
import sys, grpc
sys.path.insert(0, sys.argv[1] + "/tests")
import cohort_stubs
m = cohort_stubs.load(sys.argv[1], sys.argv[2])
md = (("authorization", "Bearer s3cret"),)
def learner_stub(port):
    return m.learner_pb2_grpc.LearnerStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
def health(port, service):
    h = m.health_pb2_grpc.HealthStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
    try:
        return m.health_pb2.HealthCheckResponse.ServingStatus.Name(
            h.Check(m.health_pb2.HealthCheckRequest(service=service), timeout=5).status)
    except grpc.RpcError as e:
        return e.code().name
req = m.learner_pb2.RegisterRequest(name="probe")
try:
    learner_stub(sys.argv[4]).RegisterActor(req, metadata=md, timeout=5)
    sys.exit("RegisterActor answered on the Monitor port")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.UNIMPLEMENTED, e
    print("RegisterActor on the Monitor port:", e.code().name)
rep = learner_stub(sys.argv[3]).RegisterActor(req, metadata=md, timeout=5)
assert rep.actor_id != 0
print("RegisterActor on the main port: actor", hex(rep.actor_id))
got = (health(sys.argv[4], "cohort.v1.Learner"), health(sys.argv[4], "cohort.v1.Monitor"),
       health(sys.argv[3], "cohort.v1.Learner"))
assert got == ("NOT_FOUND", "SERVING", "SERVING"), got
print("health on the Monitor port: Learner NOT_FOUND, Monitor SERVING; main port: Learner SERVING")
PY

kill -TERM "$LPID"
for _ in $(seq 100); do kill -0 "$LPID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$LPID" 2>/dev/null && fail "the learner did not stop within 10 s of SIGTERM"
wait "$LPID" || fail "the learner exited with an error after SIGTERM"
LPID=
echo "SIGTERM: both servers stopped, exit 0"

# an address that cannot be bound: error, exit 1 (the main server, already started, stops)
"$PY" -c 'import socket,time,sys; s=socket.socket(); s.bind(("127.0.0.1",int(sys.argv[1]))); s.listen(); time.sleep(30)' "$MPORT" &
HOLD=$!
sleep 0.3
rc=0
timeout 30 "$BUILD/cohort-learner" --listen "127.0.0.1:0" --monitor-listen "127.0.0.1:$MPORT" \
    --out "$WORK/run2" --sft-steps 0 --rl-steps 10 > bad.out 2>&1 || rc=$?
kill "$HOLD" 2>/dev/null || true
[ "$rc" -eq 1 ] || { cat bad.out; fail "exit status $rc with the Monitor port taken (want 1)"; }
grep -q "cannot listen on '127.0.0.1:$MPORT'" bad.out || { cat bad.out; fail "no clear message"; }
echo "Monitor port taken: $(grep "cannot listen" bad.out)"
echo "monitor_port.test.sh: OK"
