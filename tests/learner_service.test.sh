#!/usr/bin/env bash
# learner_service.test.sh - cohort-learner for real over loopback, driven by a Python grpcio
# client generated from proto/: health; registration; the version stream and a chunked,
# checksummed weight download reassembled and verified; leases; bad submissions (malformed
# bytes, wrong group size, non-finite log-prob, unknown lease, unknown actor) each with its
# status while the server keeps serving; a valid group that triggers an update whose new
# version reaches the watcher; Monitor status, workers, pause/resume, checkpoint; SIGTERM
# writes a checkpoint and exits 0. cohortctl: status, workers, set (good and bad keys), pause,
# resume, checkpoint, watch, plot, and a clear error when no learner answers.
# usage: bash tests/learner_service.test.sh BUILD_DIR
set -euo pipefail
BUILD=${1:?usage: learner_service.test.sh BUILD_DIR}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/tests/ctl_poll.sh"
PY=/usr/bin/python3
WORK="$(mktemp -d)"
LPID=""
cleanup() { [ -n "$LPID" ] && kill "$LPID" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
cd "$WORK"
PORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
COHORT_KEEP_BLAS_KERNELS=1 "$BUILD/cohort-learner" --listen "127.0.0.1:$PORT" --out run --sft-steps 3 \
  --rl-steps 3 --prompts 1 --group-size 2 --eval-every 0 --ckpt-every 0 --heartbeat-ms 5000 \
  > learner.out 2>&1 &
LPID=$!
# an operator watching all along (cohortctl status / workers in the background)
ctl_poll_start "$BUILD/cohortctl" "$WORK/ctl_poll.log" --learner "127.0.0.1:$PORT"

"$PY" - "$ROOT" "$PORT" "$WORK" <<'PY' || { echo "FAIL: learner output:"; cat learner.out; exit 1; }
import json, os, sys, time, zlib
import grpc
root, port, work = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, os.path.join(root, "tests")); import cohort_stubs
S = cohort_stubs.load(root, work)
lpb, lrpc, mpb, mrpc = S.learner_pb2, S.learner_pb2_grpc, S.monitor_pb2, S.monitor_pb2_grpc
hpb, hrpc = S.health_pb2, S.health_pb2_grpc
ch = grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 16 << 20)])
for _ in range(300):
    try:
        if hrpc.HealthStub(ch).Check(hpb.HealthCheckRequest(service="cohort.v1.Learner"), timeout=1).status == hpb.HealthCheckResponse.SERVING:
            break
    except grpc.RpcError:
        time.sleep(0.1)
else:
    sys.exit("FAIL: cohort-learner never became healthy")
L = lrpc.LearnerStub(ch); M = mrpc.MonitorStub(ch)
# the 3 warm-start steps run while the learner serves; the RL phase publishes the first version
for _ in range(600):
    if M.GetStatus(mpb.GetStatusRequest(), timeout=2).phase == "rl":
        break
    time.sleep(0.05)
else:
    sys.exit("FAIL: the learner never reached its RL phase")
def code_of(fn, *a, **k):
    try:
        fn(*a, **k); return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()

reg = L.RegisterActor(lpb.RegisterRequest(name="py", threads=1), timeout=5)
assert reg.actor_id != 0 and reg.group_size == 2, reg
v0 = reg.current_version
watch = L.WatchVersions(lpb.WatchVersionsRequest(actor_id=reg.actor_id), timeout=60)
n0 = next(watch)
assert n0.version == v0 and n0.manifest.config_json and n0.manifest.tokenizer_json, n0
# download in small chunks, resume mid-way, verify every CRC and the whole
blob = bytearray(); first = True
for ch_ in L.DownloadWeights(lpb.DownloadRequest(actor_id=reg.actor_id, version=v0, max_chunk_bytes=65536), timeout=30):
    assert ch_.offset == len(blob) and zlib.crc32(ch_.data) == ch_.chunk_crc32
    if first: assert ch_.manifest.config_json; first = False
    blob += ch_.data
    if len(blob) >= 3 * 65536: break
for ch_ in L.DownloadWeights(lpb.DownloadRequest(actor_id=reg.actor_id, version=v0, offset=len(blob)), timeout=30):
    assert ch_.offset == len(blob) and zlib.crc32(ch_.data) == ch_.chunk_crc32
    blob += ch_.data
assert len(blob) == n0.total_bytes and zlib.crc32(bytes(blob)) == n0.checksum, (len(blob), n0.total_bytes)
got = code_of(lambda: list(L.DownloadWeights(lpb.DownloadRequest(version=v0 + 99), timeout=5)))
assert got == grpc.StatusCode.NOT_FOUND, got

leases = L.LeasePrompts(lpb.LeaseRequest(actor_id=reg.actor_id, max_prompts=1), timeout=5).leases
assert len(leases) == 1 and leases[0].prompt_tokens[0] == 1 and leases[0].task == "addition", leases
le = leases[0]
T = reg.sampling.temperature
def comp(tokens=(2,), lp=(-0.5,), v=v0, reward=1.0):
    return lpb.ScoredCompletion(completion_tokens=list(tokens), behaviour_logprobs=list(lp), policy_version=v, reward=reward, status=1)
raw = ch.unary_unary("/cohort.v1.Learner/SubmitGroup", request_serializer=lambda b: b, response_deserializer=lambda b: b)
assert code_of(raw, b"\xff\xff\xff", timeout=5) == grpc.StatusCode.INVALID_ARGUMENT
bad = [
    ("wrong group size", lpb.SubmitGroupRequest(actor_id=reg.actor_id, lease_id=le.lease_id, completions=[comp()], temperature=T), grpc.StatusCode.INVALID_ARGUMENT),
    ("non-finite logprob", lpb.SubmitGroupRequest(actor_id=reg.actor_id, lease_id=le.lease_id, completions=[comp(), comp(lp=(float("nan"),))], temperature=T), grpc.StatusCode.INVALID_ARGUMENT),
    ("length mismatch", lpb.SubmitGroupRequest(actor_id=reg.actor_id, lease_id=le.lease_id, completions=[comp(), comp(tokens=(5, 2))], temperature=T), grpc.StatusCode.INVALID_ARGUMENT),
    ("future version", lpb.SubmitGroupRequest(actor_id=reg.actor_id, lease_id=le.lease_id, completions=[comp(), comp(v=v0 + 5)], temperature=T), grpc.StatusCode.INVALID_ARGUMENT),
    ("unknown lease", lpb.SubmitGroupRequest(actor_id=reg.actor_id, lease_id=12345, completions=[comp(), comp()], temperature=T), grpc.StatusCode.NOT_FOUND),
    ("unknown actor", lpb.SubmitGroupRequest(actor_id=777, lease_id=le.lease_id, completions=[comp(), comp()], temperature=T), grpc.StatusCode.NOT_FOUND),
    ("non-finite reward", lpb.SubmitGroupRequest(actor_id=reg.actor_id, lease_id=le.lease_id, completions=[comp(), comp(reward=float("inf"))], temperature=T), grpc.StatusCode.INVALID_ARGUMENT),
    ("positive logprob", lpb.SubmitGroupRequest(actor_id=reg.actor_id, lease_id=le.lease_id, completions=[comp(), comp(lp=(0.5,))], temperature=T), grpc.StatusCode.INVALID_ARGUMENT),
    ("token out of range", lpb.SubmitGroupRequest(actor_id=reg.actor_id, lease_id=le.lease_id, completions=[comp(), comp(tokens=(100000,))], temperature=T), grpc.StatusCode.INVALID_ARGUMENT),
    ("NaN temperature", lpb.SubmitGroupRequest(actor_id=reg.actor_id, lease_id=le.lease_id, completions=[comp(), comp()], temperature=float("nan")), grpc.StatusCode.INVALID_ARGUMENT),
]
# requests with no fields are decoded all the same: bytes that are no such message are refused,
# and a Checkpoint request of random bytes writes no checkpoint (issue 12)
ck_dir = os.path.join(sys.argv[3] if len(sys.argv) > 3 else ".", "")
for meth in ("/cohort.v1.Monitor/GetStatus", "/cohort.v1.Monitor/ListWorkers", "/cohort.v1.Monitor/Checkpoint",
             "/cohort.v1.Monitor/SetHyperparameters", "/cohort.v1.Learner/WatchVersions"):
    stub = (ch.unary_stream if meth.endswith("WatchVersions") else ch.unary_unary)(
        meth, request_serializer=lambda b: b, response_deserializer=lambda b: b)
    for junk in (b"\x00\x01", b"\xff\xff\xff", b"\x0b\x0c"):   # field 0, a bad key, a group
        try:
            r = stub(junk, timeout=5)
            if meth.endswith("WatchVersions"):
                next(iter(r))
            raise AssertionError(f"{meth} answered the bytes {junk!r}")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, (meth, junk, e.code(), e.details())
# strings with a NUL byte or not UTF-8 are refused at the door, naming the field
rawset = ch.unary_unary("/cohort.v1.Monitor/SetHyperparameters", request_serializer=lambda b: b, response_deserializer=lambda b: b)
try:
    rawset(b"\x0a\x0f\x0a\x04lr\x00x\x11" + b"\x00" * 7 + b"\x3f", timeout=5)   # key "lr\0x"
    raise AssertionError("a setting key with a NUL byte was accepted")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.INVALID_ARGUMENT and "NUL" in e.details(), (e.code(), e.details())
# a set the loss would refuse is refused up front, atomically: nothing of it applied (issue 12:
# eps_low=5 and entropy_coef=1e300 were "applied", then every update failed)
before = M.GetStatus(mpb.GetStatusRequest(), timeout=5).settings
for bad_set in ([mpb.Setting(key="eps_high", value=0.3), mpb.Setting(key="eps_low", value=5)],
                [mpb.Setting(key="entropy_coef", value=1e300)], [mpb.Setting(key="eps_low", value=1.0)]):
    try:
        M.SetHyperparameters(mpb.SetRequest(settings=bad_set), timeout=5)
        raise AssertionError(f"accepted: {bad_set}")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, (bad_set, e.code(), e.details())
after = M.GetStatus(mpb.GetStatusRequest(), timeout=5).settings
assert after.eps_high == before.eps_high and after.eps_low == before.eps_low and after.entropy_coef == before.entropy_coef, (before, after)
assert code_of(raw, b"\x0a" + b"\xff" * (17 << 20), timeout=10) == grpc.StatusCode.RESOURCE_EXHAUSTED
for name, req, want in bad:
    got = code_of(L.SubmitGroup, req, timeout=5)
    assert got == want, f"{name}: {got} != {want}"
st = M.GetStatus(mpb.GetStatusRequest(), timeout=5)
assert st.buffered_groups == 0 and st.step == v0, st
rep = L.SubmitGroup(lpb.SubmitGroupRequest(actor_id=reg.actor_id, lease_id=le.lease_id,
                    completions=[comp(reward=1.0), comp(tokens=(20, 2), lp=(-1.0, -0.2), reward=0.0)], temperature=T), timeout=5)
assert rep.accepted, rep
assert code_of(L.SubmitGroup, lpb.SubmitGroupRequest(actor_id=reg.actor_id, lease_id=le.lease_id,
               completions=[comp(), comp()], temperature=T), timeout=5) in (grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.NOT_FOUND)
n1 = next(watch)   # the update publishes version v0 + 1
assert n1.version == v0 + 1, n1
st = M.GetStatus(mpb.GetStatusRequest(), timeout=5)
assert st.step == v0 + 1 and st.last.step == v0 + 1, st
w = M.ListWorkers(mpb.ListWorkersRequest(), timeout=5).workers
assert len(w) == 1 and w[0].name == "py" and w[0].groups_accepted == 1, w
assert M.Pause(mpb.ControlRequest(reason="test"), timeout=5).paused
assert L.LeasePrompts(lpb.LeaseRequest(actor_id=reg.actor_id, max_prompts=1), timeout=5).paused
assert not M.Resume(mpb.ControlRequest(), timeout=5).paused
cp = M.Checkpoint(mpb.CheckpointRequest(), timeout=30)
assert os.path.isdir(cp.path), cp
le2 = L.LeasePrompts(lpb.LeaseRequest(actor_id=reg.actor_id, max_prompts=2), timeout=5).leases
assert len(le2) == 2
# a group sampled with a version more than max_staleness (2) behind: FAILED_PRECONDITION
cur = M.GetStatus(mpb.GetStatusRequest(), timeout=5).step
assert cur >= 3
got = code_of(L.SubmitGroup, lpb.SubmitGroupRequest(actor_id=reg.actor_id, lease_id=le2[1].lease_id,
              completions=[comp(v=cur - 3), comp(v=cur - 3)], temperature=T), timeout=5)
assert got == grpc.StatusCode.FAILED_PRECONDITION, got
drops = dict(M.GetStatus(mpb.GetStatusRequest(), timeout=5).last.groups_dropped_by_reason)
assert drops["stale"] >= 1 and drops["invalid"] >= 6, drops
assert L.ReturnLeases(lpb.ReturnLeasesRequest(actor_id=reg.actor_id, lease_ids=[le2[0].lease_id]), timeout=5).returned == 1
watch.cancel()
print("learner service: registration, versions, chunked download, leases, bad input, update, monitor: ok")
PY

# cohortctl against the same learner
CTL="$BUILD/cohortctl --learner 127.0.0.1:$PORT"
$CTL status > status.txt || { echo "FAIL: cohortctl status"; exit 1; }
grep -q "^step " status.txt && grep -q "actors 1" status.txt && grep -q "groups dropped:.* stale 1 " status.txt || { echo "FAIL: status: $(cat status.txt)"; exit 1; }
$CTL workers | grep -q " py " || { echo "FAIL: cohortctl workers"; exit 1; }
$CTL health | grep -q "^SERVING" && $CTL health cohort.v1.Monitor | grep -q "^SERVING" || { echo "FAIL: cohortctl health"; exit 1; }
if $CTL health no.such.Service 2> /dev/null; then echo "FAIL: health of an unknown service"; exit 1; fi
$CTL set lr=0.001 temperature=1 > set.txt && grep -q "lr = 0.001" set.txt || { echo "FAIL: cohortctl set"; exit 1; }
if $CTL set nosuch=1 2> set.err; then echo "FAIL: unknown setting accepted"; exit 1; fi
grep -q "unknown setting" set.err || { echo "FAIL: set message: $(cat set.err)"; exit 1; }
if $CTL set lr=5 2> set.err; then echo "FAIL: out-of-range lr accepted"; exit 1; fi
$CTL pause "maintenance" | grep -q paused && $CTL status | grep -q PAUSED && $CTL resume | grep -q resumed \
  || { echo "FAIL: cohortctl pause/resume"; exit 1; }
$CTL checkpoint | grep -q "written to" || { echo "FAIL: cohortctl checkpoint"; exit 1; }
timeout 3 $CTL watch --from 1 > watch.txt || true
grep -q "^step .* reward" watch.txt || { echo "FAIL: cohortctl watch printed: $(cat watch.txt)"; exit 1; }
$BUILD/cohortctl plot run/metrics.jsonl plot.png > /dev/null && [ -s plot.png ] || { echo "FAIL: cohortctl plot"; exit 1; }
if $BUILD/cohortctl --learner 127.0.0.1:1 status 2> down.err; then echo "FAIL: status against nothing"; exit 1; fi
grep -q "UNAVAILABLE" down.err || { echo "FAIL: unclear message: $(cat down.err)"; exit 1; }

ctl_poll_stop --need-answer || exit 1
# Ctrl-C then the script's SIGTERM at once (issue 12: the second signal used to find the
# default action and kill the learner before its final checkpoint)
kill -INT "$LPID"
for _ in $(seq 400); do grep -q "signal 2, stopping" learner.out && break; sleep 0.005; done
kill -TERM "$LPID" 2>/dev/null || true   # (gone already when its checkpoint was quick)
for _ in $(seq 300); do kill -0 "$LPID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$LPID" 2>/dev/null; then echo "FAIL: cohort-learner did not stop on SIGINT + SIGTERM" >&2; cat learner.out; exit 1; fi
rc=0; wait "$LPID" || rc=$?
[ $rc -eq 0 ] || { echo "FAIL: cohort-learner exited with status $rc after SIGINT + SIGTERM (a second signal must not cut the shutdown short)"; cat learner.out; exit 1; }
LPID=""
grep -q "checkpoint written" learner.out || { echo "FAIL: no checkpoint on SIGTERM"; cat learner.out; exit 1; }
[ -s run/checkpoints/latest ] || { echo "FAIL: no latest checkpoint"; exit 1; }
# --resume-if-present (what a restarted container runs) continues from that checkpoint
CK=$(sed 's/step-0*//' run/checkpoints/latest)
COHORT_KEEP_BLAS_KERNELS=1 "$BUILD/cohort-learner" --listen 127.0.0.1:0 --out run --resume-if-present \
  --sft-steps 3 --rl-steps 3 --prompts 1 --group-size 2 --eval-every 0 > learner_r.out 2>&1 &
LPID=$!
for _ in $(seq 100); do grep -q "RL from step" learner_r.out && break; sleep 0.1; done
grep -q "resuming from run/checkpoints/latest" learner_r.out && grep -q "RL from step $CK" learner_r.out \
  || { echo "FAIL: --resume-if-present: $(cat learner_r.out)"; exit 1; }
kill -TERM "$LPID"; wait "$LPID" || true; LPID=""
echo "learner_service.test.sh: OK"

# a user's prompt file: task names and metadata reach the lease untouched; bad files refused
cat > prompts.jsonl <<'JSONL'
{"prompt": "up:abc=", "task": "match", "metadata": {"target": "ABC", "source": "file"}}

{"prompt": "up:xy=", "task": "match", "answer": "XY", "metadata": {"target": "XY"}}
JSONL
PORT2=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
COHORT_KEEP_BLAS_KERNELS=1 "$BUILD/cohort-learner" --listen "127.0.0.1:$PORT2" --out run2 --sft-steps 0 \
  --rl-steps 2 --prompts 2 --group-size 2 --eval-every 0 --prompts-file prompts.jsonl \
  --lease-ttl-ms 500 > learner2.out 2>&1 &
LPID=$!
"$PY" - "$ROOT" "$PORT2" "$WORK" <<'PY' || { echo "FAIL: learner output:"; cat learner2.out; exit 1; }
import json, os, sys, time
import grpc
root, port, work = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, os.path.join(root, "tests")); import cohort_stubs
S = cohort_stubs.load(root, work)
lpb, lrpc = S.learner_pb2, S.learner_pb2_grpc
L = lrpc.LearnerStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
for _ in range(300):
    try:
        reg = L.RegisterActor(lpb.RegisterRequest(name="f"), timeout=1); break
    except grpc.RpcError:
        time.sleep(0.1)
leases = L.LeasePrompts(lpb.LeaseRequest(actor_id=reg.actor_id, max_prompts=2), timeout=5).leases
assert [l.task for l in leases] == ["match", "match"], leases
assert json.loads(leases[0].metadata_json) == {"target": "ABC", "source": "file"}, leases[0]
assert leases[1].answer == "XY" and leases[1].prompt == "up:xy=", leases[1]
print("prompt file: tasks, answers and metadata reach the leases untouched")
# an expired lease (TTL 500 ms): NOT_FOUND saying so; its prompt is issued again
time.sleep(0.9)
c = lambda: lpb.ScoredCompletion(completion_tokens=[2], behaviour_logprobs=[-0.1], policy_version=reg.current_version, reward=0.5, status=1)
try:
    L.SubmitGroup(lpb.SubmitGroupRequest(actor_id=reg.actor_id, lease_id=leases[0].lease_id, completions=[c(), c()],
                                         temperature=reg.sampling.temperature), timeout=5)
    sys.exit("FAIL: a group for an expired lease was accepted")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.NOT_FOUND and "expired" in e.details(), (e.code(), e.details())
again = L.LeasePrompts(lpb.LeaseRequest(actor_id=reg.actor_id, max_prompts=2), timeout=5).leases
assert sorted(l.prompt_id for l in again) == sorted(l.prompt_id for l in leases), (again, leases)
print("expired lease: refused with NOT_FOUND, its prompts issued again")
PY
kill -TERM "$LPID"; wait "$LPID" || true; LPID=""
printf '{"prompt": 5, "task": "match"}\n' > bad.jsonl
if "$BUILD/cohort-learner" --listen 127.0.0.1:0 --out run3 --sft-steps 0 --rl-steps 1 --eval-every 0 \
     --prompts-file bad.jsonl > bad.out 2>&1; then echo "FAIL: bad prompt file accepted"; exit 1; fi
grep -q "bad.jsonl line 1" bad.out || { echo "FAIL: unclear message: $(cat bad.out)"; exit 1; }
echo "learner_service.test.sh: prompt file OK"

# authentication: with --token, every call but Health needs "authorization: Bearer <token>"
PORT5=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
COHORT_KEEP_BLAS_KERNELS=1 "$BUILD/cohort-learner" --listen "127.0.0.1:$PORT5" --out run5 --sft-steps 0 \
  --rl-steps 1 --eval-every 0 --token s3cret > learner5.out 2>&1 &
LPID=$!
"$PY" - "$ROOT" "$PORT5" "$WORK" <<'PY' || { echo "FAIL: learner output:"; cat learner5.out; exit 1; }
import os, sys, time
import grpc
root, port, work = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, os.path.join(root, "tests")); import cohort_stubs
S = cohort_stubs.load(root, work)
lpb, lrpc = S.learner_pb2, S.learner_pb2_grpc
L = lrpc.LearnerStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
def code(md):
    try:
        L.RegisterActor(lpb.RegisterRequest(name="t"), timeout=2, metadata=md); return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()
for _ in range(300):
    if code([("authorization", "Bearer s3cret")]) == grpc.StatusCode.OK: break
    time.sleep(0.1)
assert code([("authorization", "Bearer s3cret")]) == grpc.StatusCode.OK
assert code(None) == grpc.StatusCode.UNAUTHENTICATED
assert code([("authorization", "Bearer wrong")]) == grpc.StatusCode.UNAUTHENTICATED
print("token: missing and wrong refused (UNAUTHENTICATED), right accepted")
PY
kill -TERM "$LPID"; wait "$LPID" || true; LPID=""

# backpressure: a buffer of 1 group and updates of 2 -> the second submission is held until its
# deadline (DEADLINE_EXCEEDED), the buffered group is untouched, the lease stays valid
PORT3=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
COHORT_KEEP_BLAS_KERNELS=1 "$BUILD/cohort-learner" --listen "127.0.0.1:$PORT3" --out run4 --sft-steps 0 \
  --rl-steps 2 --prompts 2 --group-size 2 --buffer 1 --eval-every 0 > learner4.out 2>&1 &
LPID=$!
"$PY" - "$ROOT" "$PORT3" "$WORK" <<'PY' || { echo "FAIL: learner output:"; cat learner4.out; exit 1; }
import os, sys, time
import grpc
root, port, work = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, os.path.join(root, "tests")); import cohort_stubs
S = cohort_stubs.load(root, work)
lpb, lrpc = S.learner_pb2, S.learner_pb2_grpc
L = lrpc.LearnerStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
for _ in range(300):
    try:
        reg = L.RegisterActor(lpb.RegisterRequest(name="b"), timeout=1); break
    except grpc.RpcError:
        time.sleep(0.1)
leases = L.LeasePrompts(lpb.LeaseRequest(actor_id=reg.actor_id, max_prompts=2), timeout=5).leases
assert len(leases) == 2
v, T = reg.current_version, reg.sampling.temperature
def group(le):
    c = lambda r: lpb.ScoredCompletion(completion_tokens=[2], behaviour_logprobs=[-0.3], policy_version=v, reward=r, status=1)
    return lpb.SubmitGroupRequest(actor_id=reg.actor_id, lease_id=le.lease_id, completions=[c(1.0), c(0.0)], temperature=T)
r1 = L.SubmitGroup(group(leases[0]), timeout=5)
assert r1.accepted and r1.buffered_groups == 1 and r1.buffer_capacity == 1, r1
for attempt in range(2):
    t0 = time.monotonic()
    try:
        L.SubmitGroup(group(leases[1]), timeout=0.7)
        sys.exit("FAIL: a submission into a full buffer was answered")
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, e
    assert time.monotonic() - t0 >= 0.6
again = L.RegisterActor(lpb.RegisterRequest(name="c"), timeout=5)  # still serving
assert again.actor_id
print("backpressure: held until the deadline, lease kept, server serving")
PY
kill -TERM "$LPID"; wait "$LPID" || { echo "FAIL: learner exit"; cat learner4.out; exit 1; }; LPID=""
echo "learner_service.test.sh: backpressure OK"
