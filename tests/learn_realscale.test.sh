#!/usr/bin/env bash
# learn_realscale.test.sh - a policy of real scale through the whole cluster: SmolLM2-135M's
# shape (hidden 576, 30 layers, 9 heads, 3 KV heads, MLP 1536, vocabulary 49152, tied; random
# weights, since no pretrained weights can be downloaded here) with the byte-level BPE
# tokenizer of the same vocabulary size (../shared/testdata/tokenizers/starcoder) and a ChatML
# chat template, trained for 2 GRPO steps on GSM8K prompts (deploy/gsm8k-to-prompts.py,
# "messages" rendered once at the learner) scored by the built-in math verifier, by
# cohort-learner + cohort-reward + cohort-actor on loopback. Checked: the run finishes; every
# step trains a group and refuses none as invalid; the checkpoint keeps the tokenizer files
# byte for byte.
# Optimised build only (label slow). usage: bash tests/learn_realscale.test.sh BUILD_DIR
set -euo pipefail
BUILD=${1:?usage: learn_realscale.test.sh BUILD_DIR}
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="$ROOT/../shared/testdata"
PY=/usr/bin/python3
for b in cohort-learner cohort-reward cohort-actor cohort-tool; do
  [ -x "$BUILD/$b" ] || { echo "FAIL: $BUILD/$b is not built"; exit 1; }
done
for f in tokenizers/starcoder/tokenizer.json tokenizers/starcoder/tokenizer_config.json gsm8k/test.jsonl; do
  [ -f "$DATA/$f" ] || { echo "FAIL: test data $DATA/$f is missing"; exit 1; }
done
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
cd "$WORK"
T0=$SECONDS

# the policy folder, as a user brings it: config.json, model.safetensors, tokenizer.json,
# tokenizer_config.json (with a chat template)
cat > config.json <<'EOF'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 49152,
 "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30,
 "num_attention_heads": 9, "num_key_value_heads": 3, "max_position_embeddings": 2048,
 "rms_norm_eps": 1e-05, "rope_theta": 100000.0, "tie_word_embeddings": true,
 "bos_token_id": 0, "eos_token_id": 0}
EOF
"$BUILD/cohort-tool" init --config config.json --out policy --seed 3 > init.log
cp "$DATA/tokenizers/starcoder/tokenizer.json" policy/tokenizer.json
"$PY" - "$DATA/tokenizers/starcoder/tokenizer_config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["chat_template"] = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + "
                      "message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
                      "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
json.dump(c, open("policy/tokenizer_config.json", "w"), indent=1)
PY
"$PY" "$ROOT/deploy/gsm8k-to-prompts.py" "$DATA/gsm8k/test.jsonl" -o all.jsonl > /dev/null 2>&1
head -8 all.jsonl > gsm.jsonl
echo "policy: $(head -1 init.log); prompts: 8 GSM8K questions ($((SECONDS - T0)) s)"

port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
LP=$(port); RP=$(port)
export COHORT_KEEP_BLAS_KERNELS=1
"$BUILD/cohort-reward" --listen "127.0.0.1:$RP" --stats-every 0 > reward.log 2>&1 & PIDS+=($!)
"$BUILD/cohort-learner" --listen "127.0.0.1:$LP" --out run --init policy --prompts-file gsm.jsonl \
  --sft-steps 0 --rl-steps 2 --prompts 1 --group-size 2 --max-new-tokens 16 --eval-every 0 \
  --ckpt-every 0 --threads 2 > learner.log 2>&1 & LPID=$!; PIDS+=($LPID)
"$BUILD/cohort-actor" --learner "127.0.0.1:$LP" --reward "127.0.0.1:$RP" --name smol --threads 2 \
  > actor.log 2>&1 & PIDS+=($!)
for _ in $(seq 1500); do kill -0 "$LPID" 2>/dev/null || break; sleep 0.2; done
if kill -0 "$LPID" 2>/dev/null; then echo "FAIL: 2 steps did not finish within 300 s"; tail -5 learner.log actor.log; exit 1; fi
grep -q "training finished at step 2" learner.log || { echo "FAIL: $(tail -5 learner.log)"; exit 1; }
grep "^step" learner.log

"$PY" - "$DATA/tokenizers/starcoder" <<'PY'
import json, sys
lines = [json.loads(l) for l in open("run/metrics.jsonl")]
s = lines[0]["settings"]
assert s["task"] == "file" and s["model_config"]["vocab_size"] == 49152, s
steps = [l for l in lines[1:] if l.get("phase") == "rl"]
assert len(steps) == 2, steps
for l in steps:
    assert l["groups_used"] + l["groups_dropped_by_reason"]["zero_signal"] >= 1, l
    assert l["groups_dropped_by_reason"]["invalid"] == 0, l
ck = "run/checkpoints/" + open("run/checkpoints/latest").read().strip()
for f in ("tokenizer.json", "tokenizer_config.json"):
    src = open(f"policy/{f}", "rb").read()
    assert open(f"{ck}/{f}", "rb").read() == src, f"{ck}/{f} differs from policy/{f}"
print(f"metrics: 2 RL steps on file prompts, no invalid group; {ck} keeps the tokenizer files")
PY
echo "learn_realscale.test.sh: OK in $((SECONDS - T0)) s"
