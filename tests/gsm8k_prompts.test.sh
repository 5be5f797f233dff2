#!/usr/bin/env bash
# gsm8k_prompts.test.sh - deploy/gsm8k-to-prompts.py on the real GSM8K test split:
#   * 1319 lines, each exactly {"messages": [{"role": "user", "content": Q}], "prompt": Q,
#     "task": "math", "answer": N} with Q the source question and N the number after "####"
#     without thousands separators (hand-checked: line 1 -> "18", line 3 -> "70000");
#   * every answer parses as a number;
#   * a missing input file, or a solution without "####", stops it with the file and line
#     named and no output file left behind;
#   * cohort-reward (BUILD_DIR/cohort-reward, over loopback from Python) scores task "math"
#     items of the converted file: every test-split reference solution is right and its
#     number + 1 wrong, each with the verifier's reason in the item's detail.
# usage: bash tests/gsm8k_prompts.test.sh BUILD_DIR
set -euo pipefail
BUILD=${1:?usage: gsm8k_prompts.test.sh BUILD_DIR}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="$ROOT/../shared/testdata/gsm8k"
PY=/usr/bin/python3
WORK="$(mktemp -d)"
RPID=
cleanup() {
    if [ -n "$RPID" ]; then kill "$RPID" 2>/dev/null || true; wait "$RPID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

[ -f "$DATA/test.jsonl" ] || { echo "FAIL: $DATA/test.jsonl is missing"; exit 1; }

"$PY" "$ROOT/deploy/gsm8k-to-prompts.py" "$DATA/test.jsonl" -o "$WORK/test.prompts.jsonl" \
    2> "$WORK/err"
grep -q "1319 prompts" "$WORK/err" || { echo "FAIL: no count on stderr"; cat "$WORK/err"; exit 1; }

"$PY" - "$DATA/test.jsonl" "$WORK/test.prompts.jsonl" <<'PY'
import json, re, sys
from fractions import Fraction
src = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8") if l.strip()]
out = open(sys.argv[2], encoding="utf-8").read().split("\n")
assert out[-1] == "", "the file must end with a newline"
out = out[:-1]
assert len(out) == 1319, f"{len(out)} lines, want 1319"
assert len(src) == 1319
for i, (line, s) in enumerate(zip(out, src), 1):
    o = json.loads(line)
    assert list(o) == ["messages", "prompt", "task", "answer"], f"line {i}: keys {list(o)}"
    q = s["question"]
    assert o["messages"] == [{"role": "user", "content": q}], f"line {i}: messages"
    assert o["prompt"] == q, f"line {i}: prompt"
    assert o["task"] == "math", f"line {i}: task"
    a = o["answer"]
    assert isinstance(a, str) and re.fullmatch(r"-?\d+(\.\d+)?(/\d+)?", a), f"line {i}: {a!r}"
    Fraction(a)  # parses as a number
    want = s["answer"].split("####")[-1].strip().replace(",", "")
    assert a == want, f"line {i}: answer {a!r}, want {want!r}"
first, third = json.loads(out[0]), json.loads(out[2])
assert first["answer"] == "18", first["answer"]
assert first["prompt"].startswith("Janet\u2019s ducks lay 16 eggs per day.")
assert third["answer"] == "70000", third["answer"]  # "#### 70000" in the source
# the thousands separators really occur in the source answers and are gone in the output
n_commas = sum(1 for s in src if "," in s["answer"].split("####")[-1])
assert n_commas > 0, "expected answers with thousands separators in the test split"
print(f"ok: 1319 prompts; {n_commas} answers had thousands separators")
PY

# bad input: named, non-zero exit, no output left behind
if "$PY" "$ROOT/deploy/gsm8k-to-prompts.py" "$WORK/nope.jsonl" > "$WORK/o" 2> "$WORK/e"; then
    echo "FAIL: a missing input file was accepted"; exit 1
fi
grep -q "cannot read .*nope.jsonl" "$WORK/e" ||
    { echo "FAIL: missing file not named"; cat "$WORK/e"; exit 1; }
{ printf '{"question": "q1", "answer": "1+1=2\\n#### 2"}\n\n'
  printf '{"question": "q2", "answer": "no final line"}\n'; } > "$WORK/bad.jsonl"
if "$PY" "$ROOT/deploy/gsm8k-to-prompts.py" "$WORK/bad.jsonl" -o "$WORK/bad.out" 2> "$WORK/e"; then
    echo "FAIL: a solution without #### was accepted"; exit 1
fi
grep -q "bad.jsonl line 3: the answer has no number after '####'" "$WORK/e" ||
    { echo "FAIL: bad line not named"; cat "$WORK/e"; exit 1; }
[ ! -e "$WORK/bad.out" ] && [ ! -e "$WORK/bad.out.tmp" ] ||
    { echo "FAIL: output left behind after an error"; exit 1; }
# the reward service: task "math" routed to the built-in verifier, reasons in the detail
[ -x "$BUILD/cohort-reward" ] || { echo "FAIL: $BUILD/cohort-reward is not built"; exit 1; }
RPORT=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])')
echo '{"format_weight": 0.5}' > "$WORK/reward.json"
"$BUILD/cohort-reward" --listen "127.0.0.1:$RPORT" --config "$WORK/reward.json" --workers 2 \
    --stats-every 0 > "$WORK/reward.out" 2>&1 &
RPID=$!
"$PY" - "$ROOT" "$RPORT" "$WORK" "$DATA/test.jsonl" <<'PY'
import json, os, sys, time
import grpc
root, port, work, src = sys.argv[1:5]
sys.path.insert(0, os.path.join(root, "tests")); import cohort_stubs
S = cohort_stubs.load(root, work)
pb, cpb = S.reward_pb2, S.common_pb2
hpb, hrpc = S.health_pb2, S.health_pb2_grpc
ch = grpc.insecure_channel(f"127.0.0.1:{port}")
for _ in range(100):
    try:
        if hrpc.HealthStub(ch).Check(hpb.HealthCheckRequest(service=""), timeout=1).status == \
                hpb.HealthCheckResponse.SERVING:
            break
    except grpc.RpcError:
        time.sleep(0.1)
else:
    sys.exit("FAIL: cohort-reward never became healthy")
stub = S.reward_pb2_grpc.RewardStub(ch)
prompts = [json.loads(l) for l in open(os.path.join(work, "test.prompts.jsonl"), encoding="utf-8")]
solutions = [json.loads(l)["answer"] for l in open(src, encoding="utf-8") if l.strip()]
n = 0
for lo in range(0, len(prompts), 500):
    items = []
    for i in range(lo, min(lo + 500, len(prompts))):
        p = prompts[i]
        items.append(pb.RewardItem(item_id=f"r{i}", task=p["task"], prompt=p["prompt"],
                                   completion=solutions[i], answer=p["answer"]))
        items.append(pb.RewardItem(item_id=f"w{i}", task=p["task"], prompt=p["prompt"],
                                   completion=solutions[i], answer=str(int(p["answer"]) + 1)))
    rep = stub.Score(pb.ScoreRequest(items=items), timeout=30)
    for r in rep.results:
        i = int(r.item_id[1:])
        a = prompts[i]["answer"]
        assert r.status == cpb.ITEM_OK, r
        if r.item_id[0] == "r":
            assert r.reward == 1.5, r
            written = solutions[i].split("####")[-1].strip()  # "1,450,000" for 1450000
            assert r.detail == f"answer {written} (after ####) equals reference {a}", r
        else:
            assert r.reward == 0.5, r  # wrong, but given in the #### format
            assert f"!= reference {int(a) + 1}" in r.detail, r
        assert [c.name for c in r.components] == ["correct", "format"], r
        n += 1
assert n == 2 * 1319, n
# hand-checked items: the reasons of the brief
items = [pb.RewardItem(item_id="a", task="math", prompt="q", completion="so it is 17", answer="18"),
         pb.RewardItem(item_id="b", task="math", prompt="q", completion="no idea", answer="18"),
         pb.RewardItem(item_id="c", task="math", prompt="q", completion="#### 1", answer="")]
r = {x.item_id: x for x in stub.Score(pb.ScoreRequest(items=items), timeout=10).results}
assert r["a"].status == cpb.ITEM_OK and r["a"].reward == 0.0, r["a"]
assert r["a"].detail == "answer 17 (last number) != reference 18", r["a"].detail
assert r["b"].detail == "no number found; reference 18", r["b"].detail
assert r["c"].status == cpb.ITEM_FAILED and "no reference answer" in r["c"].detail, r["c"]
print(f"ok: cohort-reward scored {n} GSM8K items with reasons")
PY
echo "gsm8k_prompts: ok"
