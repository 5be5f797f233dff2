#!/usr/bin/env bash
# tool_chat.test.sh - `cohort-tool chat` end to end against the real chat templates.
#
#   every line of ../shared/testdata/chat-templates/real-templates.jsonl, turned on the fly
#   into the tool's input ({"messages", "add_generation_prompt", "template", "bos_token",
#   "eos_token", "extra_context"}), gives {"text": expected}; a bad line in the middle
#   gives {"error": ...} naming it and the lines after it are still answered;
#   DIR mode: a folder's tokenizer_config.json supplies template and tokens (an AddedToken
#   object for bos_token), a line's "bos_token" overrides it; a folder without a template
#   answers {"error": ...} per line; a missing folder fails with a message.
#
# usage: bash tests/tool_chat.test.sh BUILD_DIR
set -euo pipefail

BUILD="$(cd "${1:?usage: tool_chat.test.sh BUILD_DIR}" && pwd)"
TOOL="$BUILD/cohort-tool"
PY=/usr/bin/python3
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
DATA="$HERE/../../shared/testdata/chat-templates"

[[ -x "$TOOL" ]] || { echo "FAIL: $TOOL is not built" >&2; exit 1; }
[[ -f "$DATA/real-templates.jsonl" ]] || { echo "FAIL: test data missing: $DATA" >&2; exit 1; }

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"

fail() { echo "FAIL: $*" >&2; exit 1; }

# ---- real templates through the tool, with a bad line in the middle ----------------------
"$PY" - "$DATA" > in.jsonl <<'EOF'
import json, sys
data = sys.argv[1]
lines = [json.loads(l) for l in open(data + "/real-templates.jsonl") if l.strip()]
for i, d in enumerate(lines):
    rec = {"messages": d["messages"], "add_generation_prompt": d["add_generation_prompt"],
           "template": open(data + "/" + d["template_file"], encoding="utf-8").read(),
           "bos_token": d["bos_token"], "eos_token": d["eos_token"]}
    if "extra_context" in d:
        rec["extra_context"] = d["extra_context"]
    print(json.dumps(rec, ensure_ascii=False))
    if i == 2:
        print('{"messages": [{"role": "user", "content": "x"}], "template": "{% if %}"}')
        print("this line is not JSON")
EOF
"$TOOL" chat --date 2024-07-26 < in.jsonl > out.jsonl 2> err.txt || fail "chat exited $? ($(cat err.txt))"
if grep -q "Sanitizer" err.txt; then fail "sanitizer report: $(cat err.txt)"; fi

"$PY" - "$DATA" <<'EOF' || exit 1
import json, sys
data = sys.argv[1]
want = [json.loads(l) for l in open(data + "/real-templates.jsonl") if l.strip()]
got = [json.loads(l) for l in open("out.jsonl")]
if len(got) != len(want) + 2:
    sys.exit(f"FAIL: {len(got)} output lines for {len(want) + 2} input lines")
bad = [got[3], got[4]]
got = got[:3] + got[5:]
if "error" not in bad[0] or "line 4" not in bad[0]["error"] or "line 1" not in bad[0]["error"]:
    sys.exit(f"FAIL: a template syntax error should name input line 4 and template line 1: {bad[0]}")
if "error" not in bad[1] or "line 5" not in bad[1]["error"]:
    sys.exit(f"FAIL: a non-JSON line should be named: {bad[1]}")
for w, g in zip(want, got):
    if g.get("text") != w["expected"]:
        t, e = g.get("text") or "", w["expected"]
        i = next((k for k in range(min(len(t), len(e))) if t[k] != e[k]), min(len(t), len(e)))
        sys.exit(f"FAIL: {w['name']}: {g.get('error', '')} first difference at {i}: "
                 f"got {t[max(0, i - 30):i + 30]!r}, expected {e[max(0, i - 30):i + 30]!r}")
print(f"ok: {len(want)} real templates rendered exactly; bad lines answered and skipped")
EOF

# ---- DIR mode ------------------------------------------------------------------------------
mkdir model base
"$PY" - <<'EOF'
import json
tmpl = ("{{ bos_token }}{% for m in messages %}<|{{ m.role }}|>{{ m.content | trim }}{{ eos_token }}"
        "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
json.dump({"chat_template": tmpl, "bos_token": {"content": "<s>", "lstrip": False},
           "eos_token": "</s>"}, open("model/tokenizer_config.json", "w"))
json.dump({"bos_token": "<s>", "eos_token": "</s>"}, open("base/tokenizer_config.json", "w"))
EOF
cat > dir_in.jsonl <<'EOF'
{"messages": [{"role": "user", "content": " hi "}], "add_generation_prompt": true}
{"messages": [{"role": "user", "content": "hi"}], "add_generation_prompt": false, "bos_token": "[B]"}
{"messages": "not a list"}
{"messages": [{"role": "user", "content": "x"}], "template": "{{ messages[0].content }}!"}
EOF
"$TOOL" chat model < dir_in.jsonl > dir_out.jsonl 2> err.txt || fail "chat DIR exited $? ($(cat err.txt))"
cat > dir_want.jsonl <<'EOF'
{"text":"<s><|user|>hi</s><|assistant|>"}
{"text":"[B]<|user|>hi</s>"}
EOF
head -2 dir_out.jsonl | diff dir_want.jsonl - || fail "DIR mode output differs"
sed -n 3p dir_out.jsonl | grep -q '"error":"line 3 needs \\"messages\\"' || fail "bad messages: $(sed -n 3p dir_out.jsonl)"
sed -n 4p dir_out.jsonl | grep -qx '{"text":"x!"}' || fail "line template override: $(sed -n 4p dir_out.jsonl)"

"$TOOL" chat base < dir_in.jsonl > base_out.jsonl 2> err.txt || fail "chat base exited $?"
sed -n 1p base_out.jsonl | grep -q 'has no chat_template' || fail "base model: $(sed -n 1p base_out.jsonl)"
sed -n 4p base_out.jsonl | grep -qx '{"text":"x!"}' || fail "base model with a line template: $(sed -n 4p base_out.jsonl)"

if "$TOOL" chat "$WORK/nonexistent" < /dev/null > /dev/null 2> err.txt; then fail "a missing DIR was accepted"; fi
grep -q "tokenizer_config.json" err.txt || fail "missing DIR message: $(cat err.txt)"
if "$TOOL" chat --date 2024-13-01 < /dev/null > /dev/null 2> err.txt; then fail "a bad --date was accepted"; fi

echo "ok: cohort-tool chat"
