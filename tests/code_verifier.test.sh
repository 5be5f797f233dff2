#!/usr/bin/env bash
# code_verifier.test.sh - the built-in `code` verifier inside cohort-reward, called over
# loopback from Python (grpcio stubs generated from proto/):
#   * correct, wrong, crashing, looping, fork-bombing, memory-hogging, file-writing and
#     network-opening programs each get ITEM_OK with the right reward and reason;
#   * while a request full of slow programs is being scored, Health and a built-in task
#     answer at once (the sandboxes run on the worker threads, never on the event loop);
#   * several code requests at once each answer within their deadline (bounded pool);
#   * no sandbox process is left behind; an item without tests is ITEM_FAILED.
# Needs root for the sandbox's uid switch (skipped otherwise: the unit tests in
# tests/test_code.c cover the rest).
# usage: bash tests/code_verifier.test.sh BUILD_DIR
set -euo pipefail
BUILD="$(cd "${1:?usage: code_verifier.test.sh BUILD_DIR}" && pwd)"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY=/usr/bin/python3
if [ "$(id -u)" != 0 ]; then echo "code_verifier: not root, skipped"; exit 77; fi
if ! unshare --net --pid --ipc --fork true 2>/dev/null; then
  echo "code_verifier: this machine does not allow new namespaces (the sandbox), skipped"; exit 77
fi
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
trap 'cat "$WORK/reward.out" >&2 || true' ERR
cd "$WORK"
chmod 755 "$WORK"
mkdir sandboxes && chmod 755 sandboxes

port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
RPORT=$(port)
UID_BASE=$(( 300000 + ($$ % 10000) * 64 ))
cat > reward.json <<JSON
{"format_weight": 0.5, "default_timeout_ms": 30000,
 "code": {"timeout_ms": 5000, "test_timeout_ms": 1500, "cpu_s": 2, "memory_mb": 64,
          "file_mb": 1, "processes": 16, "max_sandboxes": 2, "uid_base": $UID_BASE,
          "tmp_dir": "$WORK/sandboxes"}}
JSON
"$BUILD/cohort-reward" --listen "127.0.0.1:$RPORT" --config reward.json --workers 3 --stats-every 0 > reward.out 2>&1 &
RPID=$!
PIDS+=($RPID)

"$PY" - "$ROOT" "$RPORT" "$WORK" "$UID_BASE" <<'PY'
import json, os, sys, threading, time
import grpc
root, port, work, uid_base = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
sys.path.insert(0, os.path.join(root, "tests")); import cohort_stubs
S = cohort_stubs.load(root, work)
pb, cpb, rpc = S.reward_pb2, S.common_pb2, S.reward_pb2_grpc
hpb, hrpc = S.health_pb2, S.health_pb2_grpc

ch = grpc.insecure_channel(f"127.0.0.1:{port}")
health = hrpc.HealthStub(ch)
for _ in range(100):
    try:
        if health.Check(hpb.HealthCheckRequest(service=""), timeout=1).status == hpb.HealthCheckResponse.SERVING:
            break
    except grpc.RpcError:
        time.sleep(0.1)
else:
    sys.exit("FAIL: cohort-reward never became healthy")
stub = rpc.RewardStub(ch)

ADD = json.dumps({"tests": [{"stdin": "1 2\n", "stdout": "3\n"}, {"stdin": "2 3\n", "stdout": "5"}]})
ONE = json.dumps({"tests": [{"stdout": "ok"}]})
PROGRAMS = {  # id -> (completion, metadata, reward, reason)
    "correct": ("Sum:\n```python\na, b = map(int, input().split())\nprint(a + b)\n```", ADD, 1.5,
                "2/2 tests passed"),
    "wrong": ("```python\na, b = map(int, input().split())\nprint(a + b if a == 1 else a * b)\n```", ADD,
              0.5 * 1 + 0.5, "1/2 tests passed; test 2: wrong output (expected '5', got '6')"),
    "crash": ("print(1 / 0)", ADD, 0.0, "test 1: crashed: ZeroDivisionError: division by zero"),
    "loop": ("```python\nwhile True:\n    pass\n```", ONE, 0.5, "test 1: timeout after 1500 ms"),
    "bomb": ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n", ONE, 0.0,
             "test 1: timeout after 1500 ms"),
    "hog": ("x = []\nwhile True:\n    x.append(bytearray(10 ** 6))\n", ONE, 0.0, "test 1: memory limit (64 MB)"),
    "file": ("open('f', 'wb').write(b'x' * (2 << 20))\nprint('ok')", ONE, 0.0, "test 1: file size limit (1 MB)"),
    "net": ("import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=1)\nprint('ok')", ONE, 0.0,
            "test 1: crashed: OSError: [Errno 101] Network is unreachable"),
    "asserts": ("def f(x):\n    return 2 * x\n",
                json.dumps({"asserts": ["assert f(1) == 2", "assert f(2) == 5"]}), 0.5,
                "1/2 tests passed; assert 2: AssertionError"),
}
items = [pb.RewardItem(item_id=k, task="code", prompt="p", completion=c, metadata_json=m)
         for k, (c, m, _, _) in PROGRAMS.items()]
items.append(pb.RewardItem(item_id="notests", task="code", prompt="p", completion="print(1)",
                           metadata_json="{}"))

# the slow request in the background; meanwhile the service answers other calls at once
box = {}
def slow():
    t0 = time.time()
    box["rep"] = stub.Score(pb.ScoreRequest(items=items), timeout=60)
    box["dt"] = time.time() - t0
th = threading.Thread(target=slow)
th.start()
time.sleep(0.3)
worst = 0.0
while th.is_alive():
    t0 = time.time()
    assert health.Check(hpb.HealthCheckRequest(service=""), timeout=2).status == hpb.HealthCheckResponse.SERVING
    rep = stub.Score(pb.ScoreRequest(items=[pb.RewardItem(item_id="a", task="addition", prompt="12+34=",
                                                            completion="46", answer="46")]), timeout=2)
    assert rep.results[0].status == cpb.ITEM_OK and rep.results[0].reward == 1.5, rep
    worst = max(worst, time.time() - t0)
    time.sleep(0.1)
th.join()
assert worst < 1.0, f"FAIL: the service answered slowly ({worst:.2f} s) while code ran"
r = {x.item_id: x for x in box["rep"].results}
for k, (_, _, reward, reason) in PROGRAMS.items():
    x = r[k]
    assert x.status == cpb.ITEM_OK, (k, x)
    assert abs(x.reward - reward) < 1e-9, (k, x.reward, reward, x.detail)
    assert reason in x.detail, (k, x.detail, reason)
assert r["notests"].status == cpb.ITEM_FAILED and "no tests" in r["notests"].detail, r["notests"]
print(f"code items scored in {box['dt']:.2f} s; other calls answered within {worst*1000:.0f} ms meanwhile")

# several code requests at once: each within its deadline (2 sandboxes, 3 workers)
res = [None] * 3
def one(i):
    t0 = time.time()
    rep = stub.Score(pb.ScoreRequest(items=[pb.RewardItem(item_id="l", task="code", prompt="p",
        completion="import time\ntime.sleep(0.5)\nprint('ok')", metadata_json=ONE)]), timeout=10)
    res[i] = (rep.results[0], time.time() - t0)
ths = [threading.Thread(target=one, args=(i,)) for i in range(3)]
t0 = time.time()
for t in ths: t.start()
for t in ths: t.join()
total = time.time() - t0
for x, dt in res:
    assert x.status == cpb.ITEM_OK and x.detail == "1/1 tests passed", x
    assert dt < 5.0, dt
assert total >= 1.0, f"FAIL: 3 sandboxes ran at once on a pool of 2 ({total:.2f} s)"
print(f"3 concurrent code requests in {total:.2f} s")

# nothing left behind: no process of the sandbox uids, no private directory
left = []
for p in os.listdir("/proc"):
    if p.isdigit():
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        if uid_base <= int(line.split()[1]) < uid_base + 64:
                            left.append(p)
                        break
        except OSError:
            pass
assert not left, f"FAIL: sandbox processes left: {left}"
assert os.listdir(os.path.join(work, "sandboxes")) == [], os.listdir(os.path.join(work, "sandboxes"))
print("code_verifier: OK")
PY

kill -TERM "$RPID"
wait "$RPID"
