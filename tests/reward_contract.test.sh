#!/usr/bin/env bash
# reward_contract.test.sh - cohort-reward keeps the promises of reward.proto and verifier.proto,
# checked from a Python grpcio client (stubs generated from proto/) against the running
# service, with copies of the Python example verifier as custom verifiers:
#   * bad requests (no items, empty / duplicated / too long item_id, no task, timeout_ms too
#     large, negative completion_num_tokens) -> INVALID_ARGUMENT naming the item;
#   * metadata_json that is not JSON -> that item ITEM_FAILED with the reason, never sent to a
#     verifier; the other items of the call scored;
#   * each deadline source, as the verifier sees it on arrival (context.time_remaining()): the
#     caller's gRPC deadline, ScoreRequest.timeout_ms, the route's timeout_ms;
#   * a call whose deadline is shorter than its slow verifier: answered OK before the deadline
#     with the item ITEM_TIMED_OUT, never DEADLINE_EXCEEDED;
#   * concurrency: 6 slow items in about one item's time, both through VerifyBatch (one call)
#     and through the Verify fallback of a verifier without VerifyBatch (UNIMPLEMENTED, then
#     remembered); max_in_flight 2 makes them take 3 rounds;
#   * health: an endpoint that turns NOT_SERVING leaves the rotation (its items go to the other
#     endpoint; a route with no serving endpoint fails at once naming the state) and comes back
#     when it serves again; a dead endpoint is "unreachable";
#   * per verifier: a token from a file and from an environment variable, TLS with a CA file;
#     wrong settings refused at start with a message naming the key;
#   * the Status rpc and the Prometheus page (--metrics-listen) show per-verifier and
#     per-endpoint latency, in-flight, timeouts, errors and ejections;
#   * SIGTERM stops it cleanly.
# usage: bash tests/reward_contract.test.sh BUILD_DIR
set -euo pipefail
BUILD=${1:?usage: reward_contract.test.sh BUILD_DIR}
BUILD="$(cd "$BUILD" && pwd)"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY=/usr/bin/python3
[ -x "$BUILD/cohort-reward" ] || { echo "FAIL: $BUILD/cohort-reward is not built" >&2; exit 1; }
"$PY" -c 'import grpc, grpc_tools' 2>/dev/null || { echo "SKIP: python3-grpcio / python3-grpc-tools missing"; exit 77; }
command -v openssl >/dev/null || { echo "SKIP: openssl is not installed"; exit 77; }
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; if [ -n "${KEEP_WORK:-}" ]; then echo "work files kept in $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT
cd "$WORK"

port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem -days 1 -subj "/CN=localhost" \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" > /dev/null 2>&1
PA=$(port); PB=$(port); PC=$(port); PD=$(port); PF=$(port); PG=$(port); DEAD=$(port); RP=$(port); MP=$(port)
V="$ROOT/reward/examples/python-verifier/verifier.py"
T="--task m_route --task m_pair --task m_lonely --task slow_nb --task slow_nb2 --task slow_b --task tok_file --task tls_env --task m_dead"
# A: plain (batch), B: no VerifyBatch, C: batch, D: token, F: TLS + token, G: flippable health
"$PY" "$V" --host 127.0.0.1 --port "$PA" $T --metadata-delay --workers 16 --log A.log > A.out 2>&1 & PIDS+=($!)
"$PY" "$V" --host 127.0.0.1 --port "$PB" $T --metadata-delay --workers 16 --no-batch --log B.log > B.out 2>&1 & PIDS+=($!)
"$PY" "$V" --host 127.0.0.1 --port "$PC" $T --metadata-delay --workers 16 --log C.log > C.out 2>&1 & PIDS+=($!)
"$PY" "$V" --host 127.0.0.1 --port "$PD" $T --token file-secret --log D.log > D.out 2>&1 & PIDS+=($!)
"$PY" "$V" --host 127.0.0.1 --port "$PF" $T --token env-secret --tls-cert cert.pem --tls-key key.pem --log F.log > F.out 2>&1 & PIDS+=($!)
"$PY" "$V" --host 127.0.0.1 --port "$PG" $T --health-file G.health --log G.log > G.out 2>&1 & PIDS+=($!)
printf 'file-secret\n' > tok.txt
export VTOK=env-secret

cat > reward.json <<JSON
{"health_check_ms": 200,
 "verifiers": [
   {"name": "plain", "task": "match", "endpoints": ["127.0.0.1:$PA"], "timeout_ms": 5000},
   {"name": "route300", "task": "m_route", "endpoints": ["127.0.0.1:$PA"], "timeout_ms": 300},
   {"name": "nobatch", "task": "slow_nb", "endpoints": ["127.0.0.1:$PB"], "timeout_ms": 5000},
   {"name": "nobatch2", "task": "slow_nb2", "endpoints": ["127.0.0.1:$PB"], "timeout_ms": 5000,
    "max_in_flight": 2},
   {"name": "batch", "task": "slow_b", "endpoints": ["127.0.0.1:$PC"], "timeout_ms": 5000},
   {"name": "tokfile", "task": "tok_file", "endpoints": ["127.0.0.1:$PD"], "token_file": "tok.txt"},
   {"name": "tlsenv", "task": "tls_env", "endpoints": ["127.0.0.1:$PF"], "tls_ca_file": "cert.pem",
    "token_env": "VTOK", "weight": 2.0},
   {"name": "pair", "task": "m_pair", "endpoints": ["127.0.0.1:$PA", "127.0.0.1:$PG"]},
   {"name": "lonely", "task": "m_lonely", "endpoints": ["127.0.0.1:$PG"]},
   {"name": "dead", "task": "m_dead", "endpoints": ["127.0.0.1:$DEAD"]}]}
JSON

# wrong per-verifier settings are refused at start, naming the key
bad() { # $1 = verifier entry, $2 = text the message must contain
  printf '{"verifiers": [%s]}' "$1" > bad.json
  if "$BUILD/cohort-reward" --listen 127.0.0.1:0 --config bad.json --stats-every 0 > bad.out 2>&1; then
    echo "FAIL: config accepted: $1"; exit 1; fi
  grep -qF -- "$2" bad.out || { echo "FAIL: for $1 expected '$2' in:"; cat bad.out; exit 1; }
}
E="\"task\": \"t\", \"endpoints\": [\"127.0.0.1:1\"]"
bad "{$E, \"tokn_file\": \"x\"}" '"tokn_file"'
bad "{$E, \"token\": \"s\"}" 'token_file'
bad "{$E, \"token_file\": \"$WORK/nope.txt\"}" 'token_file'
bad "{$E, \"token_env\": \"COHORT_SURELY_UNSET_VAR\"}" 'COHORT_SURELY_UNSET_VAR'
bad "{$E, \"token_file\": \"tok.txt\", \"token_env\": \"VTOK\"}" 'token_env'
bad "{$E, \"tls_ca_file\": \"$WORK/nope.pem\"}" 'tls_ca_file'
bad "{$E, \"max_in_flight\": 0}" 'max_in_flight'
bad "{$E, \"timeout_ms\": \"soon\"}" 'timeout_ms'
bad "{$E, \"weight\": []}" 'weight'
echo "reward contract: wrong per-verifier settings refused, naming the key: ok"

"$BUILD/cohort-reward" --listen "127.0.0.1:$RP" --config reward.json --workers 2 --stats-every 0 \
  --metrics-listen "127.0.0.1:$MP" > reward.out 2>&1 &
RPID=$!
PIDS+=($RPID)

"$PY" - "$ROOT" "$RP" "$WORK" "$MP" "$PA" "$PB" "$PC" "$PD" "$PF" "$PG" "$DEAD" <<'PY'
import json, os, sys, time, threading, urllib.request
import grpc
root, rport, work, mport = sys.argv[1:5]
PA, PB, PC, PD, PF, PG, DEAD = sys.argv[5:12]
sys.path.insert(0, os.path.join(root, "tests")); import cohort_stubs
S = cohort_stubs.load(root, work)
pb, cpb, rpc = S.reward_pb2, S.common_pb2, S.reward_pb2_grpc
hpb, hrpc = S.health_pb2, S.health_pb2_grpc
OK, FAILED, TIMED_OUT = cpb.ITEM_OK, cpb.ITEM_FAILED, cpb.ITEM_TIMED_OUT

def wait_serving(target, what, creds=None):
    ch = grpc.secure_channel(target, creds) if creds else grpc.insecure_channel(target)
    h = hrpc.HealthStub(ch)
    for _ in range(300):
        try:
            if h.Check(hpb.HealthCheckRequest(service=""), timeout=1).status == hpb.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError:
            pass
        time.sleep(0.1)
    sys.exit(f"FAIL: {what} never became healthy")

wait_serving(f"127.0.0.1:{rport}", "cohort-reward")
for p in (PA, PB, PC, PD, PG):
    wait_serving(f"127.0.0.1:{p}", f"verifier on port {p}")
wait_serving(f"127.0.0.1:{PF}", "TLS verifier",
             grpc.ssl_channel_credentials(open(os.path.join(work, "cert.pem"), "rb").read()))
stub = rpc.RewardStub(grpc.insecure_channel(f"127.0.0.1:{rport}"))

def status():
    st = stub.Status(pb.RewardStatusRequest(), timeout=5)
    return {v.name: v for v in st.verifiers}, st

def wait_for(pred, what, secs=15):
    end = time.monotonic() + secs
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.1)
    sys.exit(f"FAIL: {what}")

# the health probes see every live endpoint serving (and the dead one unreachable) first
def settled():
    vs, _ = status()
    states = {(n, e.address): e.state for n, v in vs.items() for e in v.endpoints}
    return all(s == ("unreachable" if a.endswith(":" + DEAD) else "serving") for (n, a), s in states.items())
wait_for(settled, "endpoints never settled: %s" % status()[0])

def item(i, task="match", target="abc", completion="abc", **meta):
    m = dict(target=target, **meta)
    return pb.RewardItem(item_id=i, task=task, prompt="p-" + i, completion=completion,
                         metadata_json=json.dumps(m))

def log(name):
    path = os.path.join(work, name + ".log")
    return [json.loads(l) for l in open(path)] if os.path.exists(path) else []

def arrivals(name, prompt):
    return [l for l in log(name) if l["prompt"] == prompt]

# ---- 1. bad requests: INVALID_ARGUMENT naming the item --------------------------------------
def refused(req, *needles):
    try:
        stub.Score(req, timeout=5)
    except grpc.RpcError as e:
        assert e.code() == grpc.StatusCode.INVALID_ARGUMENT, (e.code(), e.details())
        for n in needles:
            assert n in e.details(), (n, e.details())
        return
    sys.exit(f"FAIL: accepted {req}")
refused(pb.ScoreRequest(), "no items")
refused(pb.ScoreRequest(items=[item("a"), item("")]), "item 1", "empty item_id")
refused(pb.ScoreRequest(items=[item("a"), item("b"), item("a")]), "item 2", '"a"', "item 0")
refused(pb.ScoreRequest(items=[item("x" * 129)]), "item 0", "longer than 128")
refused(pb.ScoreRequest(items=[pb.RewardItem(item_id="nt", prompt="p", completion="c")]), "item 0", '"nt"', "task")
refused(pb.ScoreRequest(items=[item("a")], timeout_ms=600001), "timeout_ms")
bad_tokens = item("neg"); bad_tokens.completion_num_tokens = -1
refused(pb.ScoreRequest(items=[item("a"), bad_tokens]), "item 1", '"neg"', "completion_num_tokens")
rep = stub.Score(pb.ScoreRequest(items=[item("fine")]), timeout=10)
assert rep.results[0].status == OK and rep.results[0].reward == 1.0, rep
print("reward contract: bad requests refused naming the item: ok")

# ---- 2. metadata_json that is not JSON ------------------------------------------------------
rep = stub.Score(pb.ScoreRequest(items=[
    item("good-meta"),
    pb.RewardItem(item_id="bad-meta", task="match", prompt="p-bad-meta", completion="x", metadata_json="{not json")]),
    timeout=10)
r = {x.item_id: x for x in rep.results}
assert r["good-meta"].status == OK, r["good-meta"]
assert r["bad-meta"].status == FAILED and "not valid JSON" in r["bad-meta"].detail, r["bad-meta"]
assert not arrivals("A", "p-bad-meta"), "invalid metadata reached the verifier"
print("reward contract: invalid metadata_json fails only its item, never sent: ok")

# ---- 3. deadlines: what the verifier sees on arrival ------------------------------------------
# (the verifier's clock starts when the call arrives, and gRPC sends a timeout rounded up to a
# few significant digits: allow 1 % + 5 ms over the budget)
def seen(prompt_id, **kw):
    stub.Score(pb.ScoreRequest(items=[item(prompt_id)], timeout_ms=kw.get("timeout_ms", 0)),
               timeout=kw.get("deadline", 10))
    got = arrivals("A", "p-" + prompt_id)
    assert len(got) == 1, got
    return got[0]["time_remaining_ms"]
left = seen("dl-caller", deadline=0.6)          # caller 600 ms, less the reply margin (60 ms)
assert 300 < left <= 540 * 1.01 + 5, f"caller deadline: verifier saw {left} ms"
left = seen("dl-timeout", timeout_ms=700)      # ScoreRequest.timeout_ms
assert 450 < left <= 700 * 1.01 + 5, f"timeout_ms: verifier saw {left} ms"
stub.Score(pb.ScoreRequest(items=[item("dl-route", task="m_route")]), timeout=10)  # route 300
got = arrivals("A", "p-dl-route")
assert len(got) == 1 and 100 < got[0]["time_remaining_ms"] <= 300 * 1.01 + 5, got
left = seen("dl-default")                      # none of them short: the default 5000 ms
assert 4000 < left <= 5000 * 1.01 + 5, f"default: verifier saw {left} ms"
print("reward contract: the verifier's deadline is the caller's / timeout_ms / the route's, whichever is least: ok")

# a slow verifier and a 1 s call deadline: OK before the deadline, the item ITEM_TIMED_OUT,
# the other item of the call scored
t0 = time.monotonic()
rep = stub.Score(pb.ScoreRequest(items=[item("slow-1", task="slow_nb", delay_ms=3000), item("quick-1")]), timeout=1.0)
dt = time.monotonic() - t0
r = {x.item_id: x for x in rep.results}
assert dt < 1.0, dt
assert r["slow-1"].status == TIMED_OUT and r["slow-1"].reward == 0, r["slow-1"]
assert r["quick-1"].status == OK, r["quick-1"]
# ... and with timeout_ms shorter than the call deadline, the item ends at timeout_ms
t0 = time.monotonic()
rep = stub.Score(pb.ScoreRequest(items=[item("slow-2", task="slow_b", delay_ms=3000)], timeout_ms=400), timeout=10)
dt = time.monotonic() - t0
assert rep.results[0].status == TIMED_OUT and "400 ms" in rep.results[0].detail, rep.results[0]
assert 0.35 < dt < 1.5, dt
print(f"reward contract: a slow verifier gives ITEM_TIMED_OUT before the call's deadline (never DEADLINE_EXCEEDED): ok")

# ---- 4. concurrency ---------------------------------------------------------------------------
def timed(task, n, delay, tag):
    items = [item(f"{tag}-{k}", task=task, delay_ms=delay) for k in range(n)]
    t0 = time.monotonic()
    rep = stub.Score(pb.ScoreRequest(items=items), timeout=20)
    dt = time.monotonic() - t0
    assert all(x.status == OK for x in rep.results), rep
    return dt
dt_batch = timed("slow_b", 6, 500, "cb")
calls = [l for l in log("C") if l["prompt"].startswith("p-cb-")]
assert len(calls) == 6 and all(l["rpc"] == "VerifyBatch" for l in calls), calls
assert max(l["arrived"] for l in calls) - min(l["arrived"] for l in calls) < 0.1, "not one batch"
assert dt_batch < 1.2, f"6 items of 500 ms through VerifyBatch took {dt_batch:.2f} s"
dt_nb = timed("slow_nb", 6, 500, "cn")
calls = [l for l in log("B") if l["prompt"].startswith("p-cn-")]
assert len(calls) == 6 and all(l["rpc"] == "Verify" for l in calls), calls
assert dt_nb < 1.2, f"6 items of 500 ms through Verify took {dt_nb:.2f} s"
dt_nb = timed("slow_nb", 6, 300, "cm")   # the fallback is remembered: straight to Verify
dt2 = timed("slow_nb2", 6, 500, "c2")    # max_in_flight 2: three rounds
assert 1.4 < dt2 < 2.8, f"max_in_flight 2: 6 items of 500 ms took {dt2:.2f} s"
vs, _ = status()
assert not vs["nobatch"].endpoints[0].batch and vs["batch"].endpoints[0].batch, vs
print(f"reward contract: 6 slow items in one item's time (VerifyBatch {dt_batch:.2f} s, Verify fallback; "
      f"max_in_flight 2: {dt2:.2f} s): ok")

# ---- 5. health: ejection and return ------------------------------------------------------------
health = os.path.join(work, "G.health")
open(health, "w").write("NOT_SERVING")
def ep(name, port):
    vs, _ = status()
    return [e for e in vs[name].endpoints if e.address.endswith(":" + port)][0]
wait_for(lambda: not ep("pair", PG).in_rotation, "G never left the rotation")
assert ep("pair", PG).state == "not_serving" and ep("pair", PG).ejections >= 1
before = len(log("G"))
rep = stub.Score(pb.ScoreRequest(items=[item(f"hp-{k}", task="m_pair") for k in range(4)]), timeout=10)
assert all(x.status == OK for x in rep.results), rep
assert len(log("G")) == before, "items went to a NOT_SERVING endpoint"
assert len([l for l in log("A") if l["prompt"].startswith("p-hp-")]) == 4
t0 = time.monotonic()
rep = stub.Score(pb.ScoreRequest(items=[item("lonely-1", task="m_lonely")]), timeout=10)
x = rep.results[0]
assert x.status == FAILED and "no serving endpoint" in x.detail and "not_serving" in x.detail, x
assert time.monotonic() - t0 < 0.5, "a route with no serving endpoint did not fail fast"
rep = stub.Score(pb.ScoreRequest(items=[item("dead-1", task="m_dead")]), timeout=10)
assert rep.results[0].status == FAILED and "unreachable" in rep.results[0].detail, rep.results[0]
open(health, "w").write("SERVING")
wait_for(lambda: ep("lonely", PG).in_rotation, "G never came back")
rep = stub.Score(pb.ScoreRequest(items=[item("lonely-2", task="m_lonely")]), timeout=10)
assert rep.results[0].status == OK, rep.results[0]
print("reward contract: NOT_SERVING endpoint ejected, its route fails fast, back when serving: ok")

# ---- 6. token per verifier, TLS with a CA file ---------------------------------------------------
rep = stub.Score(pb.ScoreRequest(items=[item("tok-1", task="tok_file"), item("tls-1", task="tls_env")]), timeout=10)
r = {x.item_id: x for x in rep.results}
assert r["tok-1"].status == OK, r["tok-1"]
assert r["tls-1"].status == OK and r["tls-1"].reward == 2.0, r["tls-1"]
assert arrivals("D", "p-tok-1")[0]["authorization"] == "Bearer file-secret"
assert arrivals("F", "p-tls-1")[0]["authorization"] == "Bearer env-secret"
assert arrivals("A", "p-fine")[0]["authorization"] == "", "a token leaked to a verifier without one"
print("reward contract: token from file / environment per verifier, TLS with a CA file: ok")

# ---- 7. Status rpc and the Prometheus page ---------------------------------------------------------
vs, st = status()
assert st.requests >= 10 and st.requests_invalid >= 7 and st.items_timed_out >= 2, st
p = vs["plain"]
assert p.items >= 5 and p.ok >= 5 and p.latency_p50_ms > 0 and p.latency_p99_ms >= p.latency_p50_ms, p
assert p.endpoints[0].calls >= 5 and p.endpoints[0].latency_p99_ms > 0, p
assert vs["nobatch"].timed_out >= 1 and vs["nobatch"].endpoints[0].timeouts >= 1, vs["nobatch"]
assert vs["lonely"].no_endpoint >= 1 and vs["lonely"].ejections >= 1, vs["lonely"]
assert vs["dead"].endpoints[0].state == "unreachable" and vs["dead"].endpoints[0].errors + vs["dead"].no_endpoint >= 1
assert vs["nobatch2"].max_in_flight == 2 and vs["tlsenv"].weight == 2.0
page = ""
want = f'cohort_reward_endpoint_ejections_total{{verifier="lonely",endpoint="127.0.0.1:{PG}"}} 1'
for _ in range(50):  # the page is rendered every 0.5 s
    page = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode()
    if want in page:
        break
    time.sleep(0.2)
def sample(prefix):
    lines = [l for l in page.splitlines() if l.startswith(prefix)]
    assert lines, f"no {prefix} in the page:\n{page}"
    return float(lines[0].rsplit(" ", 1)[1])
def at_least(prefix, v):
    assert sample(prefix) >= v, (prefix, [l for l in page.splitlines() if "ejections" in l])
at_least(f'cohort_reward_endpoint_ejections_total{{verifier="lonely",endpoint="127.0.0.1:{PG}"}}', 1)
assert sample(f'cohort_reward_endpoint_up{{verifier="dead",endpoint="127.0.0.1:{DEAD}",state="unreachable"}}') == 0
assert sample(f'cohort_reward_endpoint_calls_total{{verifier="nobatch",endpoint="127.0.0.1:{PB}",outcome="timeout"}}') >= 1
assert sample('cohort_reward_verifier_latency_ms{verifier="plain",quantile="0.99"}') > 0
assert sample(f'cohort_reward_endpoint_latency_ms{{verifier="plain",endpoint="127.0.0.1:{PA}",quantile="0.5"}}') > 0
assert sample('cohort_reward_verifier_in_flight{verifier="batch"}') == 0
assert sample('cohort_reward_items_total{status="timed_out"}') >= 2
assert "# TYPE cohort_reward_endpoint_in_flight gauge" in page
print("reward contract: Status rpc and Prometheus page: latency p50/p99, in flight, timeouts, errors, ejections: ok")
PY

kill -TERM "$RPID"
for _ in $(seq 100); do kill -0 "$RPID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$RPID" 2>/dev/null; then echo "FAIL: cohort-reward did not stop on SIGTERM" >&2; cat reward.out; exit 1; fi
wait "$RPID" || { echo "FAIL: cohort-reward exited with an error"; cat reward.out; exit 1; }
n=$(grep -c "verifier nobatch endpoint .* has no VerifyBatch" reward.out || true)
[ "$n" = 1 ] || { echo "FAIL: expected the VerifyBatch fallback noted once, got $n"; cat reward.out; exit 1; }
grep -q "verifier lonely endpoint 127.0.0.1:$PG taken out of rotation (health: NOT_SERVING)" reward.out || { echo "FAIL: no ejection logged"; cat reward.out; exit 1; }
grep -q "verifier lonely endpoint 127.0.0.1:$PG back in rotation" reward.out || { echo "FAIL: no return logged"; cat reward.out; exit 1; }
echo "reward_contract.test.sh: OK"
