#!/usr/bin/env bash
# run.sh - the libFuzzer harnesses of tests/fuzz: build them with clang (ASan + UBSan +
# coverage) in build-fuzz and run each for SECONDS (default 10), starting from the seed corpus
# in tests/fuzz/corpus/<name>/ (new inputs go to a scratch folder, the tree stays as it is).
# A crash, a sanitizer report or a harness abort fails the run and leaves the reproducer in
# build-fuzz/crashes/<name>/. Installs clang from Debian when missing.
#   bash tests/fuzz/run.sh [SECONDS] [HARNESS...]      (long runs: SECONDS=3600 and more)
#   FUZZ_RUNS=N bash tests/fuzz/run.sh                 (CI: exactly N inputs per harness from
#                                                       seed 1: the same inputs on every run)
# Each harness prints its executions; the total line reads "fuzz: N harnesses, E executions,
# 0 crashes".
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
SECS=${1:-10}
shift || true
cd "$ROOT"
if ! command -v clang >/dev/null; then
    echo "fuzz: installing clang (Debian package)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang >/dev/null
fi
B="$ROOT/build-fuzz"
CC=clang cmake -S . -B "$B" -DCMAKE_BUILD_TYPE=Debug -DCOHORT_FUZZ=ON -DCOHORT_TESTS=OFF \
    -DCMAKE_C_FLAGS_DEBUG="-O1 -g" >/dev/null
ALL=$(cd tests/fuzz && ls fuzz_*.c | sed 's/\.c$//')
NAMES=${*:-$ALL}
cmake --build "$B" -j"$(nproc)" --target $NAMES > "$B/build.log" 2>&1 \
    || { tail -30 "$B/build.log"; echo "FAIL: building the fuzz harnesses (log above)" >&2; exit 1; }
if [ -n "${FUZZ_RUNS:-}" ]; then
    LIMIT=(-runs="$FUZZ_RUNS" -seed=1); SHOWN="$FUZZ_RUNS inputs from seed 1"
else
    LIMIT=(-max_total_time="$SECS"); SHOWN="$SECS s"
fi
total=0 crashes=0 n=0
for h in $NAMES; do
    name=${h#fuzz_}
    seeds="$ROOT/tests/fuzz/corpus/$name"
    [ -d "$seeds" ] || { echo "FAIL: no seed corpus tests/fuzz/corpus/$name for $h" >&2; exit 1; }
    work=$(mktemp -d)
    mkdir -p "$B/crashes/$name"
    rc=0
    ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 UBSAN_OPTIONS=print_stacktrace=1 \
        "$B/$h" "${LIMIT[@]}" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
        -artifact_prefix="$B/crashes/$name/" -print_final_stats=1 "$work" "$seeds" \
        > "$B/$h.log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$B/$h.log" | tail -1)
    rm -rf "$work"
    n=$((n + 1)); total=$((total + ${execs:-0}))
    if [ $rc -ne 0 ]; then
        crashes=$((crashes + 1))
        echo "FAIL: $h (exit $rc) after ${execs:-?} executions; reproducer in build-fuzz/crashes/$name/:" >&2
        grep -E "ERROR|SUMMARY|runtime error|==ABORTING|deadly signal" "$B/$h.log" | head -8 >&2
    else
        echo "fuzz: $h ${execs:-0} executions ($SHOWN), no crash"
    fi
done
echo "fuzz: $n harnesses, $total executions, $crashes crashes"
[ $crashes -eq 0 ]
