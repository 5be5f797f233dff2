#!/usr/bin/env bash
# bench_side.test.sh - the side-by-side benchmark's two sides compute the same thing (no
# timings are asserted): on one random tiny checkpoint written by bench_side, PyTorch's
# logits (bench/torch_side.py, its own safetensors reader and Llama) match Cohort's within
# 1e-3, its KV-cache path matches its full forward, and the first step's GRPO loss of the
# learner measurement is the same on both sides (within 1e-5). Skips (77) without torch.
#
# usage: bash tests/bench_side.test.sh BUILD_DIR
set -euo pipefail
BUILD=${1:?usage: bench_side.test.sh BUILD_DIR}
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY=/usr/bin/python3
BENCH="$BUILD/bench_side"
TORCH="$HERE/../bench/torch_side.py"
if ! "$PY" -c 'import torch, numpy' 2>/dev/null; then
  echo "SKIP: $PY cannot import torch and numpy"
  exit 77
fi
[ -x "$BENCH" ] || { echo "FAIL: $BENCH is not built"; exit 1; }
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

"$BENCH" make-ckpt --shape tiny --out "$WORK/tiny" > /dev/null
"$BENCH" logits --ckpt "$WORK/tiny" --out "$WORK/tiny.logits"
"$PY" "$TORCH" check --ckpt "$WORK/tiny" --logits "$WORK/tiny.logits" > "$WORK/check.json" || {
  cat "$WORK/check.json"; echo "FAIL: PyTorch's logits differ from Cohort's"; exit 1; }
cat "$WORK/check.json"

args=(--ckpt "$WORK/tiny" --shape tiny --threads 1 --batch 8 --seq 32 --min-time 0 --no-sampler)
"$BENCH" run "${args[@]}" | grep '"line":"learner"' > "$WORK/c.json"
"$PY" "$TORCH" run "${args[@]}" | grep '"line": "learner"' > "$WORK/t.json"
"$PY" - "$WORK/c.json" "$WORK/t.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))["loss0"]
t = json.load(open(sys.argv[2]))["loss0"]
print(f"first-step GRPO loss: Cohort {c:.9g}, PyTorch {t:.9g}")
if not abs(c - t) <= 1e-5 * max(1.0, abs(c)):
    sys.exit("FAIL: the two sides' GRPO losses differ on the same weights and batch")
PY
echo "PASS"
