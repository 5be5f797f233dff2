#!/usr/bin/env bash
# model_reference.test.sh - cohort-tool's forward pass against an independent numpy
# implementation of Hugging Face LlamaForCausalLM (tests/reference_llama.py).
#
# For a GQA config (untied lm_head) and a tied multi-query config:
#   * a checkpoint from `cohort-tool init` (std 0.02: near-uniform logits);
#   * the same weights rounded to BF16 and to F16 (read by cohort-tool as such);
#   * larger random weights (std 0.3, norms 1 +- 0.2: logits that vary a lot), as F32, BF16
#     and F16;
# `cohort-tool logprobs` must agree with numpy on the very same weights to < 1e-4.
# Then `cohort-tool grad --mode sft` is checked against central finite differences of the
# numpy loss (float64).
#
# usage: bash tests/model_reference.test.sh BUILD_DIR
set -euo pipefail

BUILD=${1:?usage: model_reference.test.sh BUILD_DIR}
TOOL="$BUILD/cohort-tool"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REF="$HERE/reference_llama.py"
PY=/usr/bin/python3
TOL=1e-4
export OPENBLAS_NUM_THREADS=1

[[ -x "$TOOL" ]] || { echo "FAIL: $TOOL is not built" >&2; exit 1; }
"$PY" -c 'import numpy' 2>/dev/null || { echo "FAIL: $PY cannot import numpy (apt-get install python3-numpy)" >&2; exit 1; }

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

# compare LABEL DIR SEQS [TEMPERATURE]: tool and numpy log-probabilities on DIR's weights
compare() {
    local label=$1 dir=$2 seqs=$3 temp=${4:-1}
    "$TOOL" logprobs "$dir" --temperature "$temp" < "$seqs" > "$dir.tool.jsonl"
    "$PY" "$REF" logprobs "$dir" --temperature "$temp" < "$seqs" > "$dir.ref.jsonl"
    "$PY" "$REF" compare "$dir.tool.jsonl" "$dir.ref.jsonl" --tol "$TOL" --label "$label"
}

# GQA: 4 query heads share 2 kv heads; untied lm_head
cat > gqa.json <<'EOF'
{"architectures": ["LlamaForCausalLM"], "vocab_size": 98, "hidden_size": 48,
 "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
 "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
 "max_position_embeddings": 64, "tie_word_embeddings": false}
EOF
# tied embeddings, multi-query (one kv head), 3 layers, other eps and theta
cat > tied.json <<'EOF'
{"architectures": ["LlamaForCausalLM"], "vocab_size": 98, "hidden_size": 32,
 "intermediate_size": 80, "num_hidden_layers": 3, "num_attention_heads": 4,
 "num_key_value_heads": 1, "rms_norm_eps": 1e-6, "rope_theta": 500000.0,
 "max_position_embeddings": 40, "tie_word_embeddings": true}
EOF

for name in gqa tied; do
    "$TOOL" init --config "$name.json" --out "$name" --seed 7 > /dev/null
    "$PY" "$REF" makeseqs "$name" 10 --seed 3 > "$name.seqs.jsonl"

    compare "$name init F32" "$name" "$name.seqs.jsonl"
    compare "$name init F32 temperature 0.7" "$name" "$name.seqs.jsonl" 0.7
    for dt in BF16 F16; do
        "$PY" "$REF" convert "$name" "$name.$dt" --dtype "$dt"
        "$TOOL" inspect "$name.$dt" > "$name.$dt.inspect.txt"
        grep -q "model.norm.weight .* $dt" "$name.$dt.inspect.txt" \
            || { echo "FAIL: inspect does not report $dt for $name.$dt" >&2; exit 1; }
        compare "$name init $dt" "$name.$dt" "$name.seqs.jsonl"
    done

    "$PY" "$REF" randomize "$name" "$name.big" --std 0.3 --seed 11
    compare "$name std-0.3 F32" "$name.big" "$name.seqs.jsonl"
    for dt in BF16 F16; do
        "$PY" "$REF" convert "$name.big" "$name.big.$dt" --dtype "$dt"
        compare "$name std-0.3 $dt" "$name.big.$dt" "$name.seqs.jsonl"
    done

    # gradient: SFT token-mean loss on a few sequences, against finite differences
    head -n 5 "$name.seqs.jsonl" > "$name.sft.seqs.jsonl"
    "$PY" "$REF" sftbatch "$name.sft.seqs.jsonl" "$name.sft.jsonl"
    "$TOOL" grad "$name.big" --batch "$name.sft.jsonl" --mode sft --out "$name.grads.safetensors" > /dev/null
    "$PY" "$REF" gradcheck "$name.big" "$name.sft.jsonl" "$name.grads.safetensors"
done

echo "model_reference: all checks passed"
