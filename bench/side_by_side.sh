#!/usr/bin/env bash
# side_by_side.sh [--runs N] [--quick] [--build DIR] [--shapes "tiny small ..."]
#
# Cohort next to PyTorch on the same checkpoints, one command: learner tokens/s (forward +
# GRPO loss + backward + AdamW), sampler tokens/s (1 and 16 completions of one prompt, KV
# cache), and one whole single-process GRPO step on the tiny policy (3-digit addition,
# 32 prompts x 8 completions), each at 1 and 2 threads, for the shapes tiny (64 x 2), small
# (256 x 6), medium (512 x 8) and SmolLM2-135M's (576 x 30, vocabulary 49152, random weights).
#
# For every shape it writes one random-init Hugging Face folder (config.json +
# model.safetensors, F32) with bench_side, checks that PyTorch's logits on a fixed batch
# match Cohort's within 1e-3, then runs bench_side (C) and bench/torch_side.py (PyTorch) --runs
# times per thread count, alternating. It prints a table: the median of each side's figure,
# the median of the per-run ratios Cohort / PyTorch (> 1: Cohort faster), and each side's
# fraction of the physical bound measured by bench_side in the same run (learner: the OpenBLAS
# sgemm peak; batch-1 decode: memory read bandwidth over a buffer the size of the weights one
# token reads; 16 rows: the lesser of 16x that and the sgemm peak).
#
#   --runs N     repeats per shape and thread count (default 3; the median is reported)
#   --quick      tiny and small only, short timings: a smoke run of about two minutes
#   --build DIR  the CMake build tree (default build/; bench_side is built there if missing)
#   --shapes S   a subset of "tiny small medium smollm2"
#   --smollm2-runs N  repeats for the SmolLM2 shape (default 1: it takes minutes per run on
#                a loaded 2-core machine; its batches are small: learner 2 x 16 tokens,
#                sampler 8 + 8 tokens, one timed iteration each)
#   --json FILE  also keep every measurement (JSON lines of both sides) in FILE
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=/usr/bin/python3
RUNS=3
QUICK=0
BUILD="$ROOT/build"
SHAPES=""
KEEP=""
SRUNS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) RUNS=${2:?--runs needs a number}; shift 2 ;;
    --quick) QUICK=1; shift ;;
    --build) BUILD=${2:?--build needs a directory}; shift 2 ;;
    --shapes) SHAPES=${2:?--shapes needs a list}; shift 2 ;;
    --smollm2-runs) SRUNS=${2:?--smollm2-runs needs a number}; shift 2 ;;
    --json) KEEP=${2:?--json needs a file}; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "side_by_side.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
for n in "$RUNS" "$SRUNS"; do
  case "$n" in ''|*[!0-9]*|0) echo "side_by_side.sh: --runs and --smollm2-runs take a whole number >= 1, not '$n'" >&2; exit 2 ;; esac
done
if [ -z "$SHAPES" ]; then
  if [ "$QUICK" = 1 ]; then SHAPES="tiny small"; else SHAPES="tiny small medium smollm2"; fi
fi
for s in $SHAPES; do
  case "$s" in tiny|small|medium|smollm2) ;; *) echo "side_by_side.sh: unknown shape '$s' (tiny small medium smollm2)" >&2; exit 2 ;; esac
done
if ! "$PY" -c 'import torch, numpy' 2>/dev/null; then
  echo "side_by_side.sh: $PY cannot import torch and numpy (Debian: apt-get install python3-torch python3-numpy)" >&2
  exit 1
fi

T0=$(date +%s)
say() { printf '[%4ds] %s\n' "$(( $(date +%s) - T0 ))" "$*" >&2; }

if [ ! -x "$BUILD/bench_side" ]; then
  say "building bench_side in $BUILD"
  if [ ! -f "$BUILD/CMakeCache.txt" ]; then
    cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release > /dev/null
  fi
  cmake --build "$BUILD" --target bench_side -j"$(nproc)" > /dev/null
fi
BENCH="$BUILD/bench_side"
TORCH="$ROOT/bench/torch_side.py"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
OUT="$WORK/results.jsonl"
: > "$OUT"

# per-shape sizes: learner batch x seq, sampler prompt length + new tokens, min seconds
# timed per measurement (each measurement also has an untimed warm-up iteration)
sizes() {
  local mt=1.5
  [ "$QUICK" = 1 ] && mt=0.5
  case "$1" in
    tiny)    echo "--batch 32 --seq 64 --prompt-len 16 --new-tokens 48 --min-time $mt" ;;
    small)   echo "--batch 16 --seq 64 --prompt-len 16 --new-tokens 48 --min-time $mt" ;;
    medium)  echo "--batch 8 --seq 64 --prompt-len 16 --new-tokens 48 --min-time $mt" ;;
    smollm2) echo "--batch 2 --seq 16 --prompt-len 8 --new-tokens 8 --min-time 0 --min-iters 1" ;;
  esac
}

tag() {  # add run number to each JSON line
  "$PY" -c '
import json, sys
for l in sys.stdin:
    l = l.strip()
    if l.startswith("{"):
        o = json.loads(l); o["run"] = int(sys.argv[1]); print(json.dumps(o))
' "$1"
}

say "OPENBLAS_CORETYPE=${OPENBLAS_CORETYPE:-unset}; shapes: $SHAPES; runs: $RUNS; scratch $WORK"
for shape in $SHAPES; do
  ck="$WORK/$shape"
  "$BENCH" make-ckpt --shape "$shape" --out "$ck" > /dev/null
  "$BENCH" logits --ckpt "$ck" --out "$WORK/$shape.logits"
  if ! "$PY" "$TORCH" check --ckpt "$ck" --logits "$WORK/$shape.logits" > "$WORK/$shape.check"; then
    cat "$WORK/$shape.check" >&2
    echo "side_by_side.sh: $shape: PyTorch's logits do not match Cohort's within 1e-3 on the same checkpoint: the comparison would be meaningless" >&2
    exit 1
  fi
  tag 0 < "$WORK/$shape.check" >> "$OUT"
  diff=$("$PY" -c 'import json,sys; print("%.2g" % json.load(open(sys.argv[1]))["max_abs_diff"])' "$WORK/$shape.check")
  say "$shape: checkpoint written; logits agree (max diff $diff)"
  extra=""
  [ "$shape" = tiny ] && extra="--grpo --grpo-steps $([ "$QUICK" = 1 ] && echo 2 || echo 4)"
  nr=$RUNS
  [ "$shape" = smollm2 ] && nr=$SRUNS
  for th in 1 2; do
    for run in $(seq 1 "$nr"); do
      say "$shape, $th thread(s), run $run/$nr: Cohort"
      # shellcheck disable=SC2046
      OPENBLAS_NUM_THREADS=$th "$BENCH" run --ckpt "$ck" --shape "$shape" --threads "$th" \
        $(sizes "$shape") $extra ${extra:+--grpo-dir "$WORK/grpo-$th-$run"} | tag "$run" >> "$OUT"
      rm -rf "$WORK/grpo-$th-$run"
      say "$shape, $th thread(s), run $run/$nr: PyTorch"
      # PyTorch's OpenMP pool and its OpenBLAS pool both get the thread count; passive
      # waiting keeps OpenMP's idle threads from spinning on cores OpenBLAS needs (4-5x
      # faster at 2 threads on a shared machine)
      # shellcheck disable=SC2046
      OPENBLAS_NUM_THREADS=$th OMP_NUM_THREADS=$th OMP_WAIT_POLICY=PASSIVE "$PY" "$TORCH" run --ckpt "$ck" \
        --shape "$shape" --threads "$th" $(sizes "$shape") $extra | tag "$run" >> "$OUT"
    done
  done
  rm -rf "$ck"
done
[ -n "$KEEP" ] && cp "$OUT" "$KEEP"
say "done"

TORCH_BLAS=$(realpath /lib/x86_64-linux-gnu/libblas.so.3 2>/dev/null || echo unknown)
"$PY" - "$OUT" "$TORCH_BLAS" <<'PY'
import json, statistics, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
med = statistics.median
blas = next((r for r in recs if r.get("event") == "blas"), {})
tinfo = next((r for r in recs if r.get("event") == "torch"), {})
print()
print(f"OPENBLAS_CORETYPE={blas.get('coretype_env', '?')}; Cohort: OpenBLAS kernels "
      f"{blas.get('corename', '?')} ({blas.get('config', '?')})")
print(f"PyTorch {tinfo.get('version', '?')}: BLAS_INFO={tinfo.get('blas', '?')}, libblas.so.3 -> "
      f"{sys.argv[2]} (the same OpenBLAS, same kernel choice); eager mode, float32, "
      "OMP_NUM_THREADS = OPENBLAS_NUM_THREADS = threads, OMP_WAIT_POLICY=PASSIVE")
for r in recs:
    if r.get("event") == "check":
        print(f"{r['ckpt'].rsplit('/', 1)[-1]}: logits agree (max diff {r['max_abs_diff']:.2g}; "
              f"PyTorch KV-cache path vs its full forward {r['kv_cache_diff']:.2g})")
vals = {}
for r in recs:
    if "line" in r:
        vals.setdefault((r["shape"], r["threads"], r["line"], r["side"]), {})[r["run"]] = r
shapes = []
for r in recs:
    if "line" in r and r["shape"] not in shapes:
        shapes.append(r["shape"])
names = {"learner": "learner tokens/s", "sampler1": "sampler tokens/s, 1 completion",
         "sampler16": "sampler tokens/s, 16 completions", "grpo_step": "GRPO steps/s (32x8)"}
bounds = {"learner": "bound_learner", "sampler1": "bound_sampler1", "sampler16": "bound_sampler16"}
label = {"tiny": "tiny 64x2", "small": "small 256x6", "medium": "medium 512x8",
         "smollm2": "SmolLM2-135M shape"}
print()
print("| line | threads | Cohort | PyTorch | ratio | fraction of bound (Cohort / PyTorch) |")
print("|---|---|---|---|---|---|")
for s in shapes:
    for th in (1, 2):
        pk = vals.get((s, th, "sgemm_peak", "cohort"), {})
        bw = vals.get((s, th, "read_bw", "cohort"), {})
        if pk:
            p = med([r["value"] for r in pk.values()])
            b = med([r["value"] for r in bw.values()])
            d = med([r["bw_dram_gbs"] for r in bw.values()])
            print(f"| {label[s]}: bounds | {th} | sgemm {p:.0f} GFLOP/s | read {b:.0f} GB/s "
                  f"(weights-sized), {d:.0f} GB/s (256 MiB) | | |")
        for line in ("learner", "sampler1", "sampler16", "grpo_step"):
            c = vals.get((s, th, line, "cohort"), {})
            t = vals.get((s, th, line, "torch"), {})
            if not c or not t:
                continue
            runs = sorted(set(c) & set(t))
            ratio = med([c[k]["value"] / t[k]["value"] for k in runs])
            cv = med([c[k]["value"] for k in runs])
            tv = med([t[k]["value"] for k in runs])
            frac = ""
            bd = vals.get((s, th, bounds.get(line, ""), "cohort"), {})
            if bd:
                fc = med([c[k]["value"] / bd[k]["value"] for k in runs])
                ft = med([t[k]["value"] / bd[k]["value"] for k in runs])
                frac = f"{fc:.2f} / {ft:.2f}"
            fmt = (lambda v: f"{v:.2f}") if line == "grpo_step" else (lambda v: f"{v:.0f}")
            print(f"| {label[s]}: {names[line]} | {th} | {fmt(cv)} | {fmt(tv)} | {ratio:.2f} | {frac} |")
    lc = [r for k, rr in vals.items() if k[0] == s and k[2] == "learner" for r in rr.values()]
    l0 = {r["side"]: r["loss0"] for r in lc if r["run"] == 1 and r["threads"] == 1}
    if len(l0) == 2:
        print(f"| {label[s]}: first-step GRPO loss | 1 | {l0['cohort']:.7g} | {l0['torch']:.7g} | "
              f"diff {abs(l0['cohort'] - l0['torch']):.1g} | |")
print()
print("ratio = Cohort / PyTorch throughput, median of the per-run ratios (> 1: Cohort faster);")
print("figures are medians over runs. Bounds are measured by bench_side in the same run.")
PY
