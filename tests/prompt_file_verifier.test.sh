#!/usr/bin/env bash
# prompt_file_verifier.test.sh - a run whose prompt file names a task served by the Python
# example verifier: cohort-learner --prompts-file (task "match", metadata {"target": ...}),
# cohort-reward routing "match" to reward/examples/python-verifier/verifier.py, one actor.
# The learner's RL steps use the verifier's rewards, and the metadata written in the prompt
# file reaches the verifier untouched. Two more tasks of the file go to a verifier that sleeps
# past its deadline and to an endpoint that is down: their groups are reported (timed out /
# failed), counted as dropped ("reward_failed") in the learner's metrics, and training goes on.
# The verifier also receives the exact prompt and completion token ids (token in, token out).
# The run has stop strings (--stop): every completion the verifier sees ends at its EOS, at
# --max-new-tokens, or right after the first token whose text completes a stop string (that
# token kept, its text sent with the stop string in it), and never runs past one.
# usage: bash tests/prompt_file_verifier.test.sh BUILD_DIR
set -euo pipefail
BUILD=${1:?usage: prompt_file_verifier.test.sh BUILD_DIR}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY=/usr/bin/python3
for b in cohort-learner cohort-reward cohort-actor; do
  [ -x "$BUILD/$b" ] || { echo "FAIL: $BUILD/$b is not built (build the tree first: cmake --build $BUILD)" >&2; exit 1; }
done
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
cd "$WORK"
port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
LP=$(port); RP=$(port); VP=$(port); SP=$(port); DP=$(port)
cat > prompts.jsonl <<'JSONL'
{"prompt": "up:abc=", "task": "match", "metadata": {"target": "ABC", "from": "prompt-file-7"}}
{"prompt": "up:ok=", "task": "match", "metadata": {"target": "OK", "from": "prompt-file-7"}}
{"prompt": "up:xyz=", "task": "match", "metadata": {"target": "XYZ", "from": "prompt-file-7"}}
{"prompt": "up:q=", "task": "slowmatch", "metadata": {"target": "Q"}}
{"prompt": "up:r=", "task": "gonematch", "metadata": {"target": "R"}}
JSONL
cat > reward.json <<JSON
{"verifiers": [{"name": "match", "task": "match", "endpoints": ["127.0.0.1:$VP"], "timeout_ms": 5000},
               {"name": "slow", "task": "slowmatch", "endpoints": ["127.0.0.1:$SP"], "timeout_ms": 200},
               {"name": "gone", "task": "gonematch", "endpoints": ["127.0.0.1:$DP"], "timeout_ms": 200}]}
JSON
"$PY" "$ROOT/reward/examples/python-verifier/verifier.py" --host 127.0.0.1 --port "$VP" --log verifier.log > verifier.out 2>&1 &
PIDS+=($!)
"$PY" "$ROOT/reward/examples/python-verifier/verifier.py" --host 127.0.0.1 --port "$SP" --delay-ms 2000 > slow.out 2>&1 &
PIDS+=($!)
"$BUILD/cohort-reward" --listen "127.0.0.1:$RP" --config reward.json --stats-every 0 > reward.log 2>&1 &
PIDS+=($!)
"$BUILD/cohort-learner" --listen "127.0.0.1:$LP" --out run --sft-steps 0 --rl-steps 6 --prompts 2 \
  --group-size 4 --eval-every 0 --prompts-file prompts.jsonl --threads 1 --max-new-tokens 16 \
  --stop e --stop A --stop = --stop '+' --stop 'never in 16' > learner.log 2>&1 &
LPID=$!
PIDS+=($LPID)
"$BUILD/cohort-actor" --learner "127.0.0.1:$LP" --reward "127.0.0.1:$RP" --name pf --seed 3 --quiet > actor.log 2>&1 &
PIDS+=($!)
for _ in $(seq 600); do kill -0 "$LPID" 2>/dev/null || break; sleep 0.2; done
if kill -0 "$LPID" 2>/dev/null; then echo "FAIL: the run did not finish"; tail learner.log actor.log; exit 1; fi
wait "$LPID" || { echo "FAIL: learner exit"; cat learner.log; exit 1; }
grep -q "training finished at step 6" learner.log || { echo "FAIL: $(tail -3 learner.log)"; exit 1; }
DROPPED=$(grep "^step .*dropped" learner.log | tail -1 | sed 's/.*dropped \([0-9]*\).*/\1/')
[ "${DROPPED:-0}" -ge 1 ] || { echo "FAIL: no dropped group counted: $(tail -2 learner.log)"; exit 1; }
echo "groups with timed-out or failed items dropped and counted: $DROPPED; training finished"
"$PY" - <<'PY'
import json
logged = [json.loads(l) for l in open("verifier.log")]
assert logged and all(l["task"] == "match" for l in logged), logged[:3]
assert all(l["metadata"].get("from") == "prompt-file-7" for l in logged), logged[:3]
assert {l["metadata"]["target"] for l in logged} <= {"ABC", "OK", "XYZ"}
# token in, token out: the verifier gets the exact ids the policy saw and sampled (the
# character tokenizer: id = code - 29, <bos> = 1, <eos> = 2), and the completion's text
# Stop strings: a completion whose text holds one ends with the token that completes it.
STOPS = ["e", "A", "=", "+", "never in 16"]
text = lambda ids: "".join(chr(t + 29) for t in ids if t > 2)
stopped = 0
for l in logged:
    assert l["prompt_tokens"] == [1] + [ord(c) - 29 for c in l["prompt"]], l
    ct = l["completion_tokens"]
    assert ct and len(ct) <= 16, l
    if any(s in text(ct) for s in STOPS):
        # cut right after the completing token: the prefix before it holds no stop string,
        # and the text sent is the kept tokens', stop string included
        assert not any(s in text(ct[:-1]) for s in STOPS), ("runs past a stop string", l)
        assert text(ct) == l["completion"], l
        stopped += 1
        continue
    assert ct[-1] == 2 or len(ct) == 16, l
    body = ct[:-1] if ct[-1] == 2 else ct
    assert text(body) == l["completion"], l
assert stopped > 0, "no completion ended at a stop string"
steps = [json.loads(l) for l in open("run/metrics.jsonl")][1:]
assert len(steps) == 6 and all(s["phase"] == "rl" and s["groups_used"] >= 1 for s in steps), steps
print(f"prompt file -> verifier: {len(logged)} verifications with the file's metadata "
      f"({stopped} ended at a stop string, none ran past one); "
      f"6 RL steps, reward means {[round(s['reward_mean'], 3) for s in steps]}")
PY
echo "prompt_file_verifier.test.sh: OK"
