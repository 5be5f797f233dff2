#!/usr/bin/env bash
# learner_monitor.test.sh - what an operator sees of a learner, for real over loopback:
#   - during the SFT warm start the learner already serves: health SERVING, GetStatus with
#     phase "sft" and the step advancing, RegisterActor answered, LeasePrompts empty with a
#     retry hint (the actor waits), DownloadWeights UNAVAILABLE until the first version;
#   - the Prometheus page (--metrics-listen) shows the phase, the step and, once RL runs, the
#     drops by reason, lease counters and the actor's series; 404 elsewhere;
#   - refused groups are counted by reason in the next step's record of WatchMetrics and of
#     metrics.jsonl (groups_dropped_by_reason), and in Status (cumulative);
#   - Status.settings says task "file" for a prompt file; a prompt file's "messages" are
#     rendered with --chat-template at the learner, "prompt" lines are raw text with <bos>;
#   - WatchMetrics ends with OK when the run finishes (monitor.proto's promise), after the
#     last step's record; cohortctl watch exits 0 then.
# usage: bash tests/learner_monitor.test.sh BUILD_DIR
set -euo pipefail
BUILD=${1:?usage: learner_monitor.test.sh BUILD_DIR}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY=/usr/bin/python3
for b in cohort-learner cohortctl; do
  [ -x "$BUILD/$b" ] || { echo "FAIL: $BUILD/$b is not built"; exit 1; }
done
WORK="$(mktemp -d)"
LPID=""; WPID=""; PYPID=""
cleanup() {
  [ -n "$PYPID" ] && kill "$PYPID" 2>/dev/null || true
  [ -n "$LPID" ] && kill -9 "$LPID" 2>/dev/null || true
  [ -n "$WPID" ] && kill "$WPID" 2>/dev/null || true
  wait 2>/dev/null || true; rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK"
port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(port); MPORT=$(port)
printf '%s\n' '{"prompt": "12+34=", "task": "addition", "answer": "46"}' \
  '{"messages": [{"role": "user", "content": "5+5="}], "task": "addition", "answer": "10"}' > prompts.jsonl
# the character policy has no newline in its vocabulary: a one-line template
printf '%s' '{% for m in messages %}[{{ m.role }}] {{ m.content }} {% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}' > chat.jinja
# The client compiles its stubs first (seconds) and only then is the learner started, so the
# warm start (a second or two since the kernels got faster) is seen while it runs.
"$PY" - "$ROOT" "$PORT" "$MPORT" "$WORK" > client.out 2>&1 <<'PY' &
import json, os, sys, time, urllib.request, urllib.error
import grpc
root, port, mport, work = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
sys.path.insert(0, os.path.join(root, "tests")); import cohort_stubs
S = cohort_stubs.load(root, work)
open(os.path.join(work, "stubs.ready"), "w").close()   # the learner starts only now
# connect once the learner answers (a channel that fails its first connect backs off for a
# second or more, longer than the warm start now takes)
for _ in range(3000):
    if os.path.exists(os.path.join(work, "learner.up")):
        break
    time.sleep(0.01)
lpb, lrpc, mpb, mrpc = S.learner_pb2, S.learner_pb2_grpc, S.monitor_pb2, S.monitor_pb2_grpc
hpb, hrpc = S.health_pb2, S.health_pb2_grpc
ch = grpc.insecure_channel(f"127.0.0.1:{port}")
H, L, M = hrpc.HealthStub(ch), lrpc.LearnerStub(ch), mrpc.MonitorStub(ch)
def page():
    return urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode()
def code_of(fn, *a, **k):
    try:
        fn(*a, **k); return grpc.StatusCode.OK
    except grpc.RpcError as e:
        return e.code()

# ---- the warm start is served ----
deadline = time.time() + 30
while True:
    try:
        if H.Check(hpb.HealthCheckRequest(service="cohort.v1.Learner"), timeout=1).status == hpb.HealthCheckResponse.SERVING:
            break
    except grpc.RpcError:
        pass
    if time.time() > deadline: sys.exit("FAIL: never healthy")
    time.sleep(0.05)
seen = []
for _ in range(200):
    st = M.GetStatus(mpb.GetStatusRequest(), timeout=2)
    if st.phase == "sft" and 0 < st.step < 400:
        seen.append(st.step)
    if len(seen) >= 2 and seen[-1] > seen[0]:
        break
    time.sleep(0.01)
assert len(seen) >= 2 and seen[-1] > seen[0], f"FAIL: no advancing sft phase in Status: {seen}"
assert st.total_steps == 403 and st.settings.task == "file", st
reg = L.RegisterActor(lpb.RegisterRequest(name="early", threads=1), timeout=2)
assert reg.actor_id != 0
lr = L.LeasePrompts(lpb.LeaseRequest(actor_id=reg.actor_id, max_prompts=4), timeout=2)
assert len(lr.leases) == 0 and lr.retry_after_ms > 0, lr
c = code_of(lambda: list(L.DownloadWeights(lpb.DownloadRequest(actor_id=reg.actor_id, version=0), timeout=2)))
assert c == grpc.StatusCode.UNAVAILABLE, c
p = page()
assert 'cohort_phase{phase="sft"} 1' in p, p[:2000]
assert "cohort_step " in p
try:
    urllib.request.urlopen(f"http://127.0.0.1:{mport}/nothing", timeout=5); sys.exit("FAIL: /nothing answered")
except urllib.error.HTTPError as e:
    assert e.code == 404
print(f"warm start served: sft steps {seen[0]}..{seen[-1]} seen in Status, registration answered, "
      f"no lease, download UNAVAILABLE; metrics page shows phase sft")

# ---- RL: refused groups show by reason ----
while True:
    hb = L.Heartbeat(lpb.HeartbeatRequest(actor_id=reg.actor_id, held_version=-1), timeout=2)
    lr = L.LeasePrompts(lpb.LeaseRequest(actor_id=reg.actor_id, max_prompts=1), timeout=2)
    if lr.leases: break
    time.sleep(0.05)
v = hb.current_version
ls = lr.leases[0]
comp = lambda r, n=2: lpb.ScoredCompletion(completion_tokens=[5] * n, behaviour_logprobs=[-0.5] * n,
                                          policy_version=v, reward=r, status=1)
# invalid (log-prob count), then sampled at the wrong temperature (settles the lease)
bad = lpb.SubmitGroupRequest(actor_id=reg.actor_id, lease_id=ls.lease_id, temperature=1.0,
                             completions=[comp(1.0), lpb.ScoredCompletion(completion_tokens=[5], behaviour_logprobs=[], policy_version=v, reward=0.0, status=1)])
assert code_of(L.SubmitGroup, bad, timeout=5) == grpc.StatusCode.INVALID_ARGUMENT
try:
    L.SubmitGroup(lpb.SubmitGroupRequest(actor_id=reg.actor_id, lease_id=ls.lease_id, temperature=0.5,
                                         completions=[comp(1.0), comp(0.0)]), timeout=5)
    sys.exit("FAIL: wrong temperature accepted")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert ("cohort-reason", "temperature_mismatch") in (e.trailing_metadata() or ()), e.trailing_metadata()
acked = []
seen = {ls.prompt: list(ls.prompt_tokens)}
for i in range(3):
    while True:
        lr = L.LeasePrompts(lpb.LeaseRequest(actor_id=reg.actor_id, max_prompts=1), timeout=2)
        if lr.leases: break
        time.sleep(0.05)
    seen[lr.leases[0].prompt] = list(lr.leases[0].prompt_tokens)
    v = L.Heartbeat(lpb.HeartbeatRequest(actor_id=reg.actor_id, held_version=-1), timeout=2).current_version
    r = L.SubmitGroup(lpb.SubmitGroupRequest(actor_id=reg.actor_id, lease_id=lr.leases[0].lease_id,
                      temperature=1.0, completions=[comp(1.0), comp(0.0)]), timeout=10)
    assert r.accepted and r.group_seq == i + 1, r
    acked.append(r.group_seq)
# "messages" rendered once at the learner with --chat-template, tokenized as they are (no
# <bos>: a template writes its own); a raw "prompt" gets <bos> (id 1) in front
chat = "[user] 5+5= [assistant] "
assert set(seen) == {"12+34=", chat}, seen
assert seen["12+34="] == [1] + [ord(c) - 29 for c in "12+34="], seen
assert seen[chat] == [ord(c) - 29 for c in chat], seen
print("prompt file: a raw prompt with <bos>, and messages rendered with the chat template")
# the run ends after 3 RL steps; its metrics stream must end OK after the last record
w = M.WatchMetrics(mpb.WatchMetricsRequest(from_step=401), timeout=60)
recs = list(w)  # raises on a non-OK end
assert [m.step for m in recs] == [401, 402, 403], [m.step for m in recs]
d401 = dict(recs[0].groups_dropped_by_reason)
assert d401.get("invalid") == 1 and d401.get("temperature") == 1, d401
assert recs[0].groups_dropped == 2 and dict(recs[1].groups_dropped_by_reason).get("invalid") == 0, recs[1]
print("RL: drops by reason in the next step's record (invalid 1, temperature 1); WatchMetrics ended OK after step 403")
lines = [json.loads(l) for l in open(os.path.join(work, "run", "metrics.jsonl"))]
assert lines[0]["settings"]["task"] == "file", lines[0]
rl = [l for l in lines[1:] if l.get("phase") == "rl"]
assert [l["step"] for l in rl] == [401, 402, 403], rl
assert rl[0]["groups_dropped_by_reason"]["invalid"] == 1 and rl[0]["groups_dropped_by_reason"]["temperature"] == 1
assert rl[0]["groups_dropped"] == 2 and all("groups_dropped_by_reason" in l for l in lines[1:])
assert [l["groups_seq"] for l in rl] == [[1, 1], [2, 2], [3, 3]], [l.get("groups_seq") for l in rl]
print("metrics.jsonl: settings.task file, drops by reason and groups_seq per step")
PY
PYPID=$!
for _ in $(seq 600); do [ -f stubs.ready ] || ! kill -0 "$PYPID" 2>/dev/null && break; sleep 0.05; done
[ -f stubs.ready ] || { cat client.out; echo "FAIL: the Python client never got ready"; exit 1; }
COHORT_KEEP_BLAS_KERNELS=1 "$BUILD/cohort-learner" --listen "127.0.0.1:$PORT" --out run \
  --metrics-listen "127.0.0.1:$MPORT" --prompts-file prompts.jsonl --chat-template chat.jinja \
  --sft-steps 400 --sft-batch 16 \
  --rl-steps 3 --prompts 1 --group-size 2 --eval-every 0 --ckpt-every 0 > learner.out 2>&1 &
LPID=$!
# cohortctl watch from the first step, once the learner answers: it must end by itself, with
# status 0, when the run does
for _ in $(seq 1000); do
  "$BUILD/cohortctl" --learner "127.0.0.1:$PORT" status > /dev/null 2>&1 && break
  sleep 0.01
done
touch learner.up
"$BUILD/cohortctl" --learner "127.0.0.1:$PORT" watch --from 1 > watch.out 2> watch.err &
WPID=$!
wait "$PYPID" || { PYPID=""; cat client.out; echo "FAIL: learner output:"; tail -30 learner.out; exit 1; }
PYPID=""
cat client.out
for _ in $(seq 100); do kill -0 "$LPID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$LPID" 2>/dev/null; then echo "FAIL: the learner did not stop after its last step"; exit 1; fi
wait "$LPID"; LPID=""
grep -q "training finished at step 403" learner.out || { echo "FAIL: $(tail -5 learner.out)"; exit 1; }
for _ in $(seq 50); do kill -0 "$WPID" 2>/dev/null || break; sleep 0.1; done
wait "$WPID" && rc=0 || rc=$?
WPID=""
[ $rc -eq 0 ] || { echo "FAIL: cohortctl watch exited $rc: $(cat watch.err)"; exit 1; }
grep -q "^step    403" watch.out || { echo "FAIL: cohortctl watch output: $(tail -3 watch.out)"; exit 1; }
echo "cohortctl watch: $(wc -l < watch.out) steps, ended with the run (exit 0)"
echo "learner_monitor.test.sh: OK"
