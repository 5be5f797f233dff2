#!/usr/bin/env bash
# tool.test.sh - cohort-tool end to end: every subcommand for real, and its errors.
#
#   init      from a config; refuses to overwrite; a small vocabulary saves no tokenizer
#   inspect   tensor names, dtypes, parameter count, --json
#   sample    reproducible with a seed, different with another, needs a tokenizer
#   logprobs  one output line per input line with len(tokens) - 1 entries; bad lines fail
#             with a message naming the line
#   grad      writes gradients under the parameter names and prints the loss JSON; --beta
#             without --ref fails with a message; bad batch lines are named
#
# usage: bash tests/tool.test.sh BUILD_DIR
set -euo pipefail

BUILD=${1:?usage: tool.test.sh BUILD_DIR}
TOOL="$BUILD/cohort-tool"
PY=/usr/bin/python3
export OPENBLAS_NUM_THREADS=1

[[ -x "$TOOL" ]] || { echo "FAIL: $TOOL is not built" >&2; exit 1; }

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

fail() { echo "FAIL: $*" >&2; exit 1; }

# check_stderr PATTERN WHAT: err.txt holds PATTERN and no sanitizer report (a failing
# command must still clean up after itself)
check_stderr() {
    grep -Eq -- "$1" err.txt || { cat err.txt >&2; fail "stderr of '$2' lacks /$1/"; }
    if grep -Eq "Sanitizer|runtime error" err.txt; then
        cat err.txt >&2
        fail "sanitizer report from '$2'"
    fi
}

# expect_fail PATTERN CMD...: CMD must exit nonzero and print PATTERN (grep -E) on stderr
expect_fail() {
    local pattern=$1
    shift
    local rc=0
    "$@" > out.txt 2> err.txt || rc=$?
    [[ $rc -ne 0 ]] || fail "expected failure, got exit 0: $*"
    check_stderr "$pattern" "$*"
}

# expect_fail_stdin PATTERN INPUT CMD...: the same with INPUT on stdin
expect_fail_stdin() {
    local pattern=$1 input=$2
    shift 2
    local rc=0
    printf '%s' "$input" | "$@" > out.txt 2> err.txt || rc=$?
    [[ $rc -ne 0 ]] || fail "expected failure, got exit 0: $* <<< $input"
    check_stderr "$pattern" "$*"
}

# ---- help -------------------------------------------------------------------------------
"$TOOL" --help > help.txt
grep -q "usage: cohort-tool" help.txt || fail "--help"
for sub in init inspect sample logprobs grad; do
    "$TOOL" "$sub" --help > help.txt
    grep -q "usage: cohort-tool $sub" help.txt || fail "$sub --help"
done
expect_fail "unknown command" "$TOOL" frobnicate
expect_fail "usage" "$TOOL"
expect_fail "unrecognized option|--help" "$TOOL" init --bogus

# ---- init -------------------------------------------------------------------------------
cat > cfg.json <<'EOF'
{"architectures": ["LlamaForCausalLM"], "vocab_size": 98, "hidden_size": 32,
 "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
 "num_key_value_heads": 2, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
 "max_position_embeddings": 48, "tie_word_embeddings": false}
EOF
sed 's/"tie_word_embeddings": false/"tie_word_embeddings": true/' cfg.json > tied.json
sed 's/"vocab_size": 98/"vocab_size": 50/' cfg.json > small.json

"$TOOL" init --config cfg.json --out ck --seed 1 > init.txt
grep -q "parameters" init.txt || fail "init prints no summary"
for f in config.json model.safetensors tokenizer.json; do
    [[ -f ck/$f ]] || fail "init did not write ck/$f"
done
expect_fail "already holds a checkpoint.*--force" "$TOOL" init --config cfg.json --out ck
"$TOOL" init --config cfg.json --out ck --seed 1 --force > /dev/null
"$TOOL" init --config cfg.json --out ck2 --seed 2 > /dev/null
"$TOOL" init --config tied.json --out tied > /dev/null
"$TOOL" init --config small.json --out small 2> small.err > /dev/null
grep -q "without tokenizer" small.err || fail "init with vocab 50 does not explain the missing tokenizer"
[[ ! -e small/tokenizer.json ]] || fail "init wrote a tokenizer for vocab 50"
expect_fail "--config" "$TOOL" init --out x
expect_fail "no-such.json" "$TOOL" init --config no-such.json --out x
expect_fail "--seed" "$TOOL" init --config cfg.json --out x --seed -3

# ---- inspect ----------------------------------------------------------------------------
"$TOOL" inspect ck > inspect.txt
for t in model.embed_tokens.weight model.layers.0.self_attn.q_proj.weight \
         model.layers.1.mlp.down_proj.weight model.norm.weight lm_head.weight; do
    grep -q "$t" inspect.txt || fail "inspect does not list $t"
done
grep -q "F32" inspect.txt || fail "inspect shows no dtype"
grep -q "num_key_value_heads *2" inspect.txt || fail "inspect shows no config"
grep -q "^parameters: [0-9]" inspect.txt || fail "inspect shows no parameter count"
"$TOOL" inspect tied > inspect_tied.txt
grep -q lm_head.weight inspect_tied.txt && fail "inspect of a tied checkpoint lists lm_head"
"$TOOL" inspect small > inspect_small.txt
grep -q "tokenizer: none" inspect_small.txt || fail "inspect does not report the missing tokenizer"
"$TOOL" inspect ck --json > inspect.json
"$PY" - inspect.json <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
names = [t["name"] for t in d["tensors"]]
assert "lm_head.weight" in names and len(names) == 2 * 9 + 3, names
assert d["parameters"] == sum(t["numel"] for t in d["tensors"]) == d["config_parameters"]
assert d["config"]["num_key_value_heads"] == 2 and d["problems"] == []
assert all(t["dtype"] == "F32" for t in d["tensors"])
EOF
expect_fail "cannot read" "$TOOL" inspect no-such-dir
expect_fail "DIR" "$TOOL" inspect

# ---- sample -----------------------------------------------------------------------------
"$TOOL" sample ck --prompt "12+34=" -n 3 --seed 5 --max-new-tokens 12 > s1.txt
"$TOOL" sample ck --prompt "12+34=" -n 3 --seed 5 --max-new-tokens 12 > s2.txt
"$TOOL" sample ck --prompt "12+34=" -n 3 --seed 6 --max-new-tokens 12 > s3.txt
[[ $(wc -l < s1.txt) -eq 3 ]] || fail "sample -n 3 printed $(wc -l < s1.txt) lines"
cmp -s s1.txt s2.txt || fail "sample with the same seed differs"
cmp -s s1.txt s3.txt && fail "sample with another seed is identical"
"$TOOL" sample ck --prompt "hi" --seed 5 --temperature 0.5 --top-p 0.9 --top-k 20 --verbose > sv.txt
grep -Eq $'^-[0-9.]+\t' sv.txt || fail "sample --verbose shows no log-probability"
expect_fail "no tokenizer.json.*logprobs" "$TOOL" sample small --prompt "hi"
expect_fail "max_position_embeddings|--max-new-tokens" "$TOOL" sample ck --prompt "hi" --max-new-tokens 100
expect_fail "--temperature" "$TOOL" sample ck --prompt "hi" --temperature 0
expect_fail "--prompt" "$TOOL" sample ck
expect_fail "encode|character|byte" "$TOOL" sample ck --prompt $'tab\there'

# ---- logprobs ---------------------------------------------------------------------------
cat > seqs.jsonl <<'EOF'
{"tokens": [1, 20, 21, 22, 23]}
{"tokens": [1, 2]}

{"tokens": [1, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49], "extra": "ignored"}
EOF
"$TOOL" logprobs ck < seqs.jsonl > lp.jsonl
"$PY" - seqs.jsonl lp.jsonl <<'EOF'
import json, math, sys
ins = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
outs = [json.loads(l) for l in open(sys.argv[2])]
assert len(ins) == len(outs), (len(ins), len(outs))
for i, o in zip(ins, outs):
    assert list(o) == ["logprobs"]
    assert len(o["logprobs"]) == len(i["tokens"]) - 1
    assert all(math.isfinite(x) and x <= 0 for x in o["logprobs"])
EOF
"$TOOL" logprobs ck --temperature 2 < seqs.jsonl > lp2.jsonl
cmp -s lp.jsonl lp2.jsonl && fail "logprobs --temperature changes nothing"
"$TOOL" logprobs small <<< '{"tokens": [1, 49, 3]}' > lp_small.jsonl
grep -q logprobs lp_small.jsonl || fail "logprobs on a checkpoint without tokenizer"
LONG=$("$PY" -c 'import json; print(json.dumps({"tokens": [1] * 49}))')
expect_fail_stdin "line 1.*JSON" $'not json\n' "$TOOL" logprobs ck
expect_fail_stdin "line 2.*tokens.*missing" $'{"tokens": [1, 2]}\n{"ids": [1, 2]}\n' "$TOOL" logprobs ck
expect_fail_stdin "line 1.*vocabulary" $'{"tokens": [1, 98]}\n' "$TOOL" logprobs ck
expect_fail_stdin "line 1.*vocabulary" $'{"tokens": [1, -1]}\n' "$TOOL" logprobs ck
expect_fail_stdin "line 1.*integer" $'{"tokens": [1, 2.5]}\n' "$TOOL" logprobs ck
expect_fail_stdin "line 1.*at least 2" $'{"tokens": [1]}\n' "$TOOL" logprobs ck
expect_fail_stdin "line 1.*max_position_embeddings" "$LONG"$'\n' "$TOOL" logprobs ck
expect_fail_stdin "line 3" $'{"tokens": [1, 2]}\n{"tokens": [1, 3]}\n{"tokens": "x"}\n' "$TOOL" logprobs ck
[[ $(wc -l < out.txt) -eq 2 ]] || fail "logprobs before a bad line: expected 2 complete lines"
expect_fail "--temperature" "$TOOL" logprobs ck --temperature -1

# ---- grad -------------------------------------------------------------------------------
cat > batch.jsonl <<'EOF'
{"group": 0, "tokens": [1, 20, 21, 30, 31, 2], "prompt_len": 3, "behaviour_logprobs": [-4.6, -4.5, -4.7], "reward": 1.0}
{"group": 0, "tokens": [1, 20, 21, 32, 2], "prompt_len": 3, "behaviour_logprobs": [-4.6, -4.6], "reward": 0.0}
{"group": 1, "tokens": [1, 25, 40, 2], "prompt_len": 2, "behaviour_logprobs": [-4.5, -4.6], "reward": 0.5}
{"group": 1, "tokens": [1, 25, 41, 2], "prompt_len": 2, "behaviour_logprobs": [-4.5, -4.6], "reward": 0.5}
EOF
"$TOOL" grad ck --batch batch.jsonl --out g.safetensors > loss.json
[[ -s g.safetensors ]] || fail "grad wrote no g.safetensors"
"$TOOL" grad ck --batch batch.jsonl --ref ck2 --beta 0.1 --estimator rloo --eps-low 0.1 \
    --eps-high 0.3 --entropy-coef 0.01 --aggregation seq_mean_token_mean --temperature 0.9 \
    --drop-zero-signal --out g_kl.safetensors > loss_kl.json
"$TOOL" grad ck --batch batch.jsonl --ref ck2 --beta 0.1 --estimator reinforce_pp \
    --aggregation constant --max-new-tokens 8 --out g_pp.safetensors > loss_pp.json
"$PY" -c '
import json, sys
for l in open("batch.jsonl"):
    d = json.loads(l); d.pop("behaviour_logprobs"); d.pop("reward"); print(json.dumps(d))
' > sft.jsonl
"$TOOL" grad tied --batch sft.jsonl --mode sft --out g_tied.safetensors > loss_sft.json
"$PY" - <<'EOF'
import json, math, struct
keys = ["loss", "kl", "clip_frac", "entropy", "tokens", "groups", "zero_signal_groups"]
def names(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        h = json.loads(f.read(n))
    h.pop("__metadata__", None)
    assert all(v["dtype"] == "F32" for v in h.values())
    return set(h)
for name in ["loss.json", "loss_kl.json", "loss_pp.json", "loss_sft.json"]:
    lines = open(name).read().splitlines()
    assert len(lines) == 1, (name, lines)
    d = json.loads(lines[0])
    assert all(k in d for k in keys), (name, d)
    assert all(math.isfinite(d[k]) for k in keys), (name, d)
    assert d["groups"] == 2, (name, d)
    assert d["tokens"] == (5 if name == "loss_kl.json" else 9), (name, d)
base = json.load(open("loss.json"))
assert base["zero_signal_groups"] == 1 and base["kl"] == 0, base
kl = json.load(open("loss_kl.json"))
assert kl["kl"] > 0, kl     # ck2 is a different random init
assert kl["tokens"] == 5, kl  # group 1 (all rewards 0.5) dropped
g = names("g.safetensors")
assert "lm_head.weight" in g and "model.layers.1.mlp.up_proj.weight" in g and len(g) == 21, g
t = names("g_tied.safetensors")
assert "lm_head.weight" not in t and len(t) == 20, t
EOF
expect_fail "--ref" "$TOOL" grad ck --batch batch.jsonl --beta 0.1 --out x.safetensors
expect_fail "--ref" "$TOOL" grad ck --batch batch.jsonl --beta 0.1 --estimator reinforce_pp --out x.safetensors
expect_fail "--out" "$TOOL" grad ck --batch batch.jsonl
expect_fail "estimator" "$TOOL" grad ck --batch batch.jsonl --estimator nope --out x.safetensors
expect_fail "no-such.jsonl" "$TOOL" grad ck --batch no-such.jsonl --out x.safetensors
[[ ! -e x.safetensors ]] || fail "a failed grad wrote x.safetensors"

bad_batch() {  # bad_batch PATTERN LINE: a batch whose 2nd line is LINE must fail naming it
    { head -n 1 batch.jsonl; printf '%s\n' "$2"; } > bad.jsonl
    expect_fail "bad.jsonl line 2.*$1" "$TOOL" grad ck --batch bad.jsonl --out x.safetensors
}
bad_batch "behaviour_logprobs.*2 entries" '{"group": 0, "tokens": [1, 5, 6, 7], "prompt_len": 1, "behaviour_logprobs": [-1, -1], "reward": 0}'
bad_batch "behaviour_logprobs.*missing" '{"group": 0, "tokens": [1, 5, 6, 7], "prompt_len": 1, "reward": 0}'
bad_batch "behaviour_logprobs.*finite" '{"group": 0, "tokens": [1, 5], "prompt_len": 1, "behaviour_logprobs": [null], "reward": 0}'
bad_batch "prompt_len" '{"group": 0, "tokens": [1, 5], "prompt_len": 2, "behaviour_logprobs": [], "reward": 0}'
bad_batch "prompt_len.*missing" '{"group": 0, "tokens": [1, 5], "behaviour_logprobs": [-1], "reward": 0}'
bad_batch "reward" '{"group": 0, "tokens": [1, 5], "prompt_len": 1, "behaviour_logprobs": [-1], "reward": "high"}'
bad_batch "reward.*missing" '{"group": 0, "tokens": [1, 5], "prompt_len": 1, "behaviour_logprobs": [-1]}'
bad_batch "group" '{"group": 0.5, "tokens": [1, 5], "prompt_len": 1, "behaviour_logprobs": [-1], "reward": 0}'
bad_batch "vocabulary" '{"group": 0, "tokens": [1, 500], "prompt_len": 1, "behaviour_logprobs": [-1], "reward": 0}'
bad_batch "JSON" '{"group": 0, "tokens": [1, 5]'
[[ ! -e x.safetensors ]] || fail "a failed grad wrote x.safetensors"

echo "tool: all checks passed"
