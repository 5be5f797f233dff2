#!/usr/bin/env bash
# plot-metrics.sh METRICS.jsonl OUT.png - reward, held-out accuracy and KL against step.
set -euo pipefail
in=$1; out=$2
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
/usr/bin/python3 - "$in" "$tmp" <<'PY'
import json, sys
src, tmp = sys.argv[1], sys.argv[2]
with open(src) as f, open(tmp + "/r.dat", "w") as r, open(tmp + "/e.dat", "w") as e:
    for line in f:
        try:
            o = json.loads(line)
        except ValueError:
            continue
        if "step" not in o:
            continue
        if o.get("phase") != "sft" and o.get("reward_mean") is not None:
            r.write(f"{o['step']} {o['reward_mean']} {o.get('kl') or 0}\n")
        if o.get("eval_accuracy") is not None:
            e.write(f"{o['step']} {o['eval_accuracy']}\n")
PY
gnuplot <<GP
set terminal pngcairo size 1000,600
set output "$out"
set xlabel "step"
set ylabel "reward / accuracy"
set y2label "KL"
set ytics nomirror
set y2range [0:*]
set y2tics
set key left top
set grid
plot "$tmp/e.dat" using 1:2 with linespoints title "held-out accuracy", \
     "$tmp/r.dat" using 1:2 with lines title "reward mean", \
     "$tmp/r.dat" using 1:3 axes x1y2 with lines title "KL"
GP
