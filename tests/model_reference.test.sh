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
# Model families, each initialised by `cohort-tool init`, its biases (when the family has
# them) filled with N(0, 0.5) by python so that they matter, then compared as above (F32,
# temperature 0.7, BF16, std-0.3 weights and biases) and gradient-checked (bias tensors too):
#   * Qwen2ForCausalLM: q/k/v biases, GQA, tied embeddings;
#   * LlamaForCausalLM, Llama 3 style: rope_scaling llama3 and head_dim != hidden / heads;
#   * LlamaForCausalLM with attention_bias: q/k/v/o biases;
#   * MistralForCausalLM with a sliding window wider than max_position_embeddings.
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

# ---- model families -------------------------------------------------------------------
cat > qwen2.json <<'EOF'
{"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "vocab_size": 98,
 "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
 "num_attention_heads": 4, "num_key_value_heads": 2, "rms_norm_eps": 1e-6,
 "rope_theta": 1000000.0, "max_position_embeddings": 40, "tie_word_embeddings": true,
 "use_sliding_window": false, "sliding_window": 16, "max_window_layers": 2,
 "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2}
EOF
cat > llama3.json <<'EOF'
{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 98,
 "hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2,
 "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "rms_norm_eps": 1e-5,
 "rope_theta": 10000.0, "max_position_embeddings": 64, "tie_word_embeddings": false,
 "attention_bias": false, "mlp_bias": false, "eos_token_id": [2, 3],
 "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                  "high_freq_factor": 4.0, "original_max_position_embeddings": 32}}
EOF
cat > llamabias.json <<'EOF'
{"architectures": ["LlamaForCausalLM"], "vocab_size": 98, "hidden_size": 32,
 "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
 "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
 "max_position_embeddings": 40, "tie_word_embeddings": false, "attention_bias": true}
EOF
cat > mistral.json <<'EOF'
{"architectures": ["MistralForCausalLM"], "model_type": "mistral", "vocab_size": 98,
 "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
 "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": null,
 "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 40,
 "tie_word_embeddings": false, "sliding_window": 4096, "eos_token_id": 2}
EOF

# family NAME ARCH N_BIAS: init, inspect (family and bias tensors), non-zero biases, then
# log-probabilities (F32, temperature 0.7, BF16, std-0.3) and the gradient against numpy
family() {
    local name=$1 arch=$2 nbias=$3 got
    "$TOOL" init --config "$name.json" --out "$name" --seed 5 > /dev/null
    "$TOOL" inspect "$name" --json > "$name.inspect.json"
    got=$("$PY" -c 'import json, sys; d = json.load(open(sys.argv[1]))
print(sum(t["name"].endswith(".bias") for t in d["tensors"]), d["config"]["architectures"])' \
        "$name.inspect.json")
    [[ "$got" == "$nbias $arch" ]] \
        || { echo "FAIL: $name: inspect --json shows '$got' (bias tensors, family), expected '$nbias $arch'" >&2; exit 1; }
    "$TOOL" inspect "$name" | grep -q "$arch" \
        || { echo "FAIL: $name: inspect does not name the family $arch" >&2; exit 1; }
    if (( nbias > 0 )); then
        "$PY" "$REF" fillbias "$name" --std 0.5 --seed 13
    fi
    "$PY" "$REF" makeseqs "$name" 10 --seed 3 > "$name.seqs.jsonl"
    compare "$name init F32" "$name" "$name.seqs.jsonl"
    compare "$name init F32 temperature 0.7" "$name" "$name.seqs.jsonl" 0.7
    "$PY" "$REF" convert "$name" "$name.BF16" --dtype BF16
    compare "$name init BF16" "$name.BF16" "$name.seqs.jsonl"
    "$PY" "$REF" randomize "$name" "$name.big" --std 0.3 --seed 11
    compare "$name std-0.3 F32" "$name.big" "$name.seqs.jsonl"
    head -n 5 "$name.seqs.jsonl" > "$name.sft.seqs.jsonl"
    "$PY" "$REF" sftbatch "$name.sft.seqs.jsonl" "$name.sft.jsonl"
    "$TOOL" grad "$name.big" --batch "$name.sft.jsonl" --mode sft --out "$name.grads.safetensors" > /dev/null
    "$PY" "$REF" gradcheck "$name.big" "$name.sft.jsonl" "$name.grads.safetensors"
}

family qwen2 Qwen2ForCausalLM 6        # q/k/v biases in 2 layers
family llama3 LlamaForCausalLM 0
family llamabias LlamaForCausalLM 8    # q/k/v/o biases in 2 layers
family mistral MistralForCausalLM 0

# the biases matter: with them zeroed the log-probabilities move well beyond the tolerance
cp -r qwen2.big qwen2.nobias
"$PY" "$REF" fillbias qwen2.nobias --std 0
"$PY" "$REF" logprobs qwen2.big < qwen2.seqs.jsonl > qwen2.big.ref.jsonl
"$PY" "$REF" logprobs qwen2.nobias < qwen2.seqs.jsonl > qwen2.nobias.ref.jsonl
if "$PY" "$REF" compare qwen2.big.ref.jsonl qwen2.nobias.ref.jsonl --tol 1e-2 > /dev/null; then
    echo "FAIL: zeroing the Qwen2 biases does not change the log-probabilities" >&2; exit 1
fi
# and so does the llama3 scaling: the same weights without rope_scaling give other numbers
cp -r llama3.big llama3.plain
"$PY" -c 'import json, sys; p = sys.argv[1]; c = json.load(open(p)); c.pop("rope_scaling")
json.dump(c, open(p, "w"))' llama3.plain/config.json
"$TOOL" logprobs llama3.plain < llama3.seqs.jsonl > llama3.plain.tool.jsonl
if "$PY" "$REF" compare llama3.big.tool.jsonl llama3.plain.tool.jsonl --tol 1e-3 > /dev/null; then
    echo "FAIL: rope_scaling llama3 does not change the log-probabilities" >&2; exit 1
fi

# configs Cohort does not implement: cohort-tool init refuses them, naming the field
refused() {
    local word=$1 json=$2
    printf '%s\n' "$json" > refused.json
    if "$TOOL" init --config refused.json --out refused > refused.out 2>&1; then
        echo "FAIL: cohort-tool init accepted $json" >&2; exit 1
    fi
    grep -q -- "$word" refused.out \
        || { echo "FAIL: refusing $json, cohort-tool init does not name '$word':" >&2; cat refused.out >&2; exit 1; }
}
SHAPE='"vocab_size": 98, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "max_position_embeddings": 40'
refused 'rope_type is "yarn"' "{$SHAPE, \"num_attention_heads\": 4, \"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4.0}}"
refused 'GPT2LMHeadModel' "{\"architectures\": [\"GPT2LMHeadModel\"], $SHAPE, \"num_attention_heads\": 4}"
refused 'sliding_window = 16' "{\"architectures\": [\"MistralForCausalLM\"], $SHAPE, \"num_attention_heads\": 4, \"sliding_window\": 16}"
refused 'hidden_size = 32 is not divisible' "{$SHAPE, \"num_attention_heads\": 5}"
refused 'num_key_value_heads' "{$SHAPE, \"num_attention_heads\": 4, \"num_key_value_heads\": 3}"

echo "model_reference: all checks passed"
