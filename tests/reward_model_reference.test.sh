#!/usr/bin/env bash
# reward_model_reference.test.sh - the reward-model component against numpy: a Hugging Face
# LlamaForSequenceClassification folder (made by tests/reference_llama.py mkrm from a
# randomised policy) scored by `cohort-tool score` and by the independent numpy model must
# agree to < 1e-4; a classifier with two labels and a folder without score.weight are
# refused with a message.
#
# usage: bash tests/reward_model_reference.test.sh BUILD_DIR
set -euo pipefail

BUILD=${1:?usage: reward_model_reference.test.sh BUILD_DIR}
TOOL="$BUILD/cohort-tool"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REF="$HERE/reference_llama.py"
PY=/usr/bin/python3
export OPENBLAS_NUM_THREADS=1

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

cat > cfg.json <<'JSON'
{"vocab_size": 98, "hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2,
 "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64,
 "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": false}
JSON
"$TOOL" init --config cfg.json --out lm --seed 3 >/dev/null
"$PY" "$REF" randomize lm big --std 0.3 --seed 5
"$PY" "$REF" mkrm big rm --seed 7
"$PY" "$REF" makeseqs rm 12 --seed 9 > seqs.jsonl

"$TOOL" score rm < seqs.jsonl > tool.jsonl
"$PY" "$REF" rmscore rm < seqs.jsonl > ref.jsonl
"$PY" - tool.jsonl ref.jsonl <<'PY'
import json, sys
a = [json.loads(l)["score"] for l in open(sys.argv[1])]
b = [json.loads(l)["score"] for l in open(sys.argv[2])]
assert len(a) == len(b) == 12, (len(a), len(b))
d = max(abs(x - y) for x, y in zip(a, b))
spread = max(b) - min(b)
print(f"reward model: {len(a)} scores, max |cohort - numpy| = {d:.3g} (scores span {spread:.3g})")
assert spread > 0.1, "scores barely differ: the comparison would mean little"
sys.exit(0 if d < 1e-4 else 1)
PY

# refusals: two labels; no score head; a causal LM is not a reward model
"$PY" - "$REF" rm <<'PY'
import importlib.util, json, os, shutil, sys
spec = importlib.util.spec_from_file_location("ref", sys.argv[1]); ref = importlib.util.module_from_spec(spec); spec.loader.exec_module(ref)
src = sys.argv[2]
w, _ = ref.read_safetensors(os.path.join(src, "model.safetensors"))
for name, change in (("two", lambda w: w.__setitem__("score.weight", w["score.weight"].repeat(2, axis=0))),
                     ("noscore", lambda w: w.pop("score.weight"))):
    os.makedirs(name, exist_ok=True)
    shutil.copy(os.path.join(src, "config.json"), name)
    ww = dict(w); change(ww)
    ref.write_safetensors(os.path.join(name, "model.safetensors"), ww)
PY
if "$TOOL" score two < seqs.jsonl > /dev/null 2> err.txt; then echo "FAIL: two labels accepted" >&2; exit 1; fi
grep -q "shape \[1, 48\]" err.txt || { echo "FAIL: unclear message: $(cat err.txt)" >&2; exit 1; }
if "$TOOL" score noscore < seqs.jsonl > /dev/null 2> err.txt; then echo "FAIL: no score head accepted" >&2; exit 1; fi
grep -q "score.weight" err.txt || { echo "FAIL: unclear message: $(cat err.txt)" >&2; exit 1; }
if "$TOOL" score lm < seqs.jsonl > /dev/null 2> err.txt; then echo "FAIL: a causal LM accepted as reward model" >&2; exit 1; fi
grep -q "lm_head" err.txt || { echo "FAIL: unclear message: $(cat err.txt)" >&2; exit 1; }
echo "reward model reference: OK"
