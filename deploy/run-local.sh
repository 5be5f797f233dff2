#!/usr/bin/env bash
# The main job: build Cohort (installing what is missing) and train a policy on 3-digit
# addition from scratch on this machine - SFT warm start on generated demonstrations, then
# GRPO - with one progress line per step. Extra arguments go to cohort-train
# (e.g. --task countdown, --rl-steps 500, --resume).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$(nproc)" --target cohort-train cohort-tool >/dev/null
OUT=${COHORT_OUT:-runs/addition}
./build/cohort-train --out "$OUT" --threads "$(nproc)" "$@"
if command -v gnuplot >/dev/null && [ -s "$OUT/metrics.jsonl" ]; then
  bash deploy/plot-metrics.sh "$OUT/metrics.jsonl" "$OUT/metrics.png" && echo "plot: $OUT/metrics.png"
fi
