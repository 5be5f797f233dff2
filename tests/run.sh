#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds the optimised tree and an
# AddressSanitizer + UBSan tree, runs every CMocka suite and script test in both (the long
# learning runs, label "slow", only in the optimised build), then builds the services under
# ThreadSanitizer (build-tsan) and runs the tests labelled "service" there (any TSan report
# fails the stage; tests/tsan.supp covers only the uninstrumented libraries), then the
# libFuzzer harnesses (tests/fuzz/run.sh, clang: 100000 inputs each from seed 1), then the
# docker-compose drill
# and the Swarm drill (tests/compose_drill.sh, tests/swarm_drill.sh: whenever a Docker engine
# answers; COHORT_SKIP_DOCKER=1 skips them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/install-deps.sh

JOBS=$(nproc)
echo "== build (Release) =="
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j"$JOBS"
echo "== build (ASan + UBSan) =="
cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DCOHORT_SANITIZE=ON >/dev/null
cmake --build build-asan -j"$JOBS"

echo "== tests (Release) =="
(cd build && ctest --output-on-failure -j"$JOBS")
echo "== tests (ASan + UBSan, without the slow learning runs) =="
(cd build-asan && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
   ctest --output-on-failure -j"$JOBS" -LE slow)
echo "== build (ThreadSanitizer: the services and the CMocka suites labelled service) =="
T0=$SECONDS
cmake -S . -B build-tsan -DCMAKE_BUILD_TYPE=Debug -DCOHORT_TSAN=ON >/dev/null
TSAN_SUITES=$(cd build-tsan && ctest -N -L service | sed -n 's/^ *Test *#[0-9]*: \(test_[a-z0-9_]*\)$/\1/p')
cmake --build build-tsan -j"$JOBS" --target cohort-learner cohort-actor cohort-reward cohortctl cohort-train \
    $TSAN_SUITES
echo "== tests (ThreadSanitizer, label service, while cohortctl polls the learners) =="
# Every report fails: halt_on_error stops the process with exitcode 66 (a test whose server
# dies fails), and the reports of every process (background ones included) go to files in
# TSAN_LOGS, which must stay empty.
TSAN_LOGS=$(mktemp -d)
TSAN_SUPP=$PWD/tests/tsan.supp
TSAN_RC=0
(cd build-tsan && TSAN_OPTIONS="halt_on_error=1 exitcode=66 second_deadlock_stack=1 \
suppressions=$TSAN_SUPP log_path=$TSAN_LOGS/tsan" \
   ctest --output-on-failure -j"$JOBS" -L service) || TSAN_RC=$?
if compgen -G "$TSAN_LOGS/tsan.*" >/dev/null; then
    for f in "$TSAN_LOGS"/tsan.*; do echo "---- ThreadSanitizer report $f"; cat "$f"; done
    echo "FAIL: ThreadSanitizer reported races (above)" >&2
    TSAN_RC=1
fi
rm -rf "$TSAN_LOGS"
[ "$TSAN_RC" -eq 0 ] || exit 1
echo "ThreadSanitizer stage: $((SECONDS - T0)) s"
echo "== fuzz (libFuzzer harnesses of tests/fuzz, 100000 inputs each from seed 1) =="
FUZZ_RUNS=100000 bash tests/fuzz/run.sh
echo "== compose drill (Docker engine; skipped when none answers) =="
bash tests/compose_drill.sh build
echo "== swarm drill (the same compose file as a stack on a one-node swarm made for it) =="
bash tests/swarm_drill.sh build
echo "== all tests passed =="
