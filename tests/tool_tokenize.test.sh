#!/usr/bin/env bash
# tool_tokenize.test.sh - cohort-tool encode / decode with Hugging Face tokenizer folders.
#
#   encode   every text of a testdata tokenizer's cases.jsonl gives exactly its ids, from a
#            folder that holds only tokenizer.json + tokenizer_config.json;
#            --add-special-tokens prepends BOS where add_bos_token says so
#   decode   the ids give back each case's "decode" text
#   errors   a bad line is answered with {"error": ...} and the next line still answered;
#            a folder without tokenizer.json fails with a message
#
# usage: bash tests/tool_tokenize.test.sh BUILD_DIR
set -euo pipefail

BUILD=${1:?usage: tool_tokenize.test.sh BUILD_DIR}
TOOL="$BUILD/cohort-tool"
PY=/usr/bin/python3
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DATA="$SRC/../shared/testdata/tokenizers"

fail() { echo "FAIL: $*" >&2; exit 1; }
[[ -x "$TOOL" ]] || fail "$TOOL is not built"
[[ -d "$DATA" ]] || fail "the tokenizer test data $DATA is missing"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

for name in gpt2 llama2; do
    # a folder with just the two tokenizer files (links: the test data stays untouched)
    dir="$WORK/$name"
    mkdir "$dir"
    ln -s "$DATA/$name/tokenizer.json" "$dir/tokenizer.json"
    ln -s "$DATA/$name/tokenizer_config.json" "$dir/tokenizer_config.json"
    cases="$DATA/$name/cases.jsonl"

    $PY -c 'import json,sys
for l in open(sys.argv[1], encoding="utf-8"):
    print(json.dumps({"text": json.loads(l)["text"]}, ensure_ascii=False))' "$cases" \
        > "$WORK/texts.jsonl"
    "$TOOL" encode "$dir" < "$WORK/texts.jsonl" > "$WORK/ids.jsonl" 2> "$WORK/err.txt" ||
        { cat "$WORK/err.txt" >&2; fail "encode $name exited with an error"; }
    $PY - "$cases" "$WORK/ids.jsonl" "$name" <<'PYEOF'
import json, sys
cases = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8")]
outs = [json.loads(l) for l in open(sys.argv[2], encoding="utf-8")]
assert len(cases) == len(outs), f"{sys.argv[3]}: {len(outs)} output lines for {len(cases)} inputs"
for i, (c, o) in enumerate(zip(cases, outs)):
    assert o.get("ids") == c["ids"], f"{sys.argv[3]} case {i} {c['text']!r}: {o} != {c['ids']}"
print(f"encode {sys.argv[3]}: {len(cases)} cases match")
PYEOF

    $PY -c 'import json,sys
for l in open(sys.argv[1], encoding="utf-8"):
    print(json.dumps({"ids": json.loads(l)["ids"]}))' "$cases" > "$WORK/in_ids.jsonl"
    "$TOOL" decode "$dir" < "$WORK/in_ids.jsonl" > "$WORK/texts_out.jsonl" 2> "$WORK/err.txt" ||
        { cat "$WORK/err.txt" >&2; fail "decode $name exited with an error"; }
    $PY - "$cases" "$WORK/texts_out.jsonl" "$name" <<'PYEOF'
import json, sys
cases = [json.loads(l) for l in open(sys.argv[1], encoding="utf-8")]
outs = [json.loads(l) for l in open(sys.argv[2], encoding="utf-8")]
assert len(cases) == len(outs), f"{sys.argv[3]}: {len(outs)} output lines for {len(cases)} inputs"
n = 0
for i, (c, o) in enumerate(zip(cases, outs)):
    assert "text" in o, f"{sys.argv[3]} case {i}: {o}"
    if "decode" in c:
        assert o["text"] == c["decode"], f"{sys.argv[3]} case {i}: {o['text']!r} != {c['decode']!r}"
        n += 1
print(f"decode {sys.argv[3]}: {n} cases match")
PYEOF
done

# --add-special-tokens: llama2 has add_bos_token (BOS 1), gpt2 has not
out=$(echo '{"text": "Hello"}' | "$TOOL" encode "$WORK/llama2" --add-special-tokens)
[[ "$out" == '{"ids":[1,15043]}' ]] || fail "llama2 --add-special-tokens gave $out"
out=$(echo '{"text": "Hello"}' | "$TOOL" encode "$WORK/llama2")
[[ "$out" == '{"ids":[15043]}' ]] || fail "llama2 without --add-special-tokens gave $out"
out=$(echo '{"text": "Hello"}' | "$TOOL" encode "$WORK/gpt2" --add-special-tokens)
[[ "$out" == '{"ids":[15496]}' ]] || fail "gpt2 --add-special-tokens gave $out"
# special tokens are kept when decoding
out=$(echo '{"ids": [1, 15043, 2]}' | "$TOOL" decode "$WORK/llama2")
[[ "$out" == '{"text":"<s> Hello</s>"}' ]] || fail "llama2 decode with specials gave $out"

# bad lines: an error each, and the tool goes on
printf '%s\n' 'not json' '{"text": 5}' '{"text": "ok"}' '{"ids": [1]}' \
    | "$TOOL" encode "$WORK/gpt2" > "$WORK/out.jsonl" 2> "$WORK/err.txt" ||
    fail "encode with bad lines exited with an error"
$PY - "$WORK/out.jsonl" <<'PYEOF'
import json, sys
o = [json.loads(l) for l in open(sys.argv[1])]
assert len(o) == 4, o
assert "error" in o[0] and "line 1" in o[0]["error"], o[0]
assert "error" in o[1] and "\"text\"" in o[1]["error"], o[1]
assert o[2] == {"ids": [482]}, o[2]
assert "error" in o[3], o[3]
PYEOF
printf '%s\n' '{"ids": [-1]}' '{"ids": [50257]}' '{"ids": "x"}' '{"ids": [15496]}' \
    | "$TOOL" decode "$WORK/gpt2" > "$WORK/out.jsonl" 2> "$WORK/err.txt" ||
    fail "decode with bad lines exited with an error"
$PY - "$WORK/out.jsonl" <<'PYEOF'
import json, sys
o = [json.loads(l) for l in open(sys.argv[1])]
assert len(o) == 4, o
assert "error" in o[0] and "ids[0]" in o[0]["error"], o[0]
assert "error" in o[1] and "50256" in o[1]["error"], o[1]
assert "error" in o[2] and "\"ids\"" in o[2]["error"], o[2]
assert o[3] == {"text": "Hello"}, o[3]
PYEOF
if grep -Eq "Sanitizer|runtime error" "$WORK/err.txt"; then cat "$WORK/err.txt" >&2; fail "sanitizer report"; fi

# a folder without a tokenizer, and a broken tokenizer.json
mkdir "$WORK/empty"
if echo '{"text": "a"}' | "$TOOL" encode "$WORK/empty" > /dev/null 2> "$WORK/err.txt"; then
    fail "encode of a folder without tokenizer.json succeeded"
fi
grep -q "has no tokenizer.json" "$WORK/err.txt" || { cat "$WORK/err.txt" >&2; fail "no message"; }
mkdir "$WORK/broken"
head -c 5000 "$DATA/gpt2/tokenizer.json" > "$WORK/broken/tokenizer.json"
if echo '{"text": "a"}' | "$TOOL" encode "$WORK/broken" > /dev/null 2> "$WORK/err.txt"; then
    fail "encode with a truncated tokenizer.json succeeded"
fi
grep -q "truncated" "$WORK/err.txt" || { cat "$WORK/err.txt" >&2; fail "truncation not named"; }
if grep -Eq "Sanitizer|runtime error" "$WORK/err.txt"; then cat "$WORK/err.txt" >&2; fail "sanitizer report"; fi
echo "tool_tokenize: ok"
