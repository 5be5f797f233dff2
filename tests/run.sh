#!/usr/bin/env bash
# The whole test suite: installs what is missing, builds the optimised tree and an
# AddressSanitizer + UBSan tree, runs every CMocka suite and script test in both (the long
# learning runs, label "slow", only in the optimised build), then the docker-compose drill
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
echo "== compose drill (Docker engine; skipped when none answers) =="
bash tests/compose_drill.sh build
echo "== swarm drill (the same compose file as a stack on a one-node swarm made for it) =="
bash tests/swarm_drill.sh build
echo "== all tests passed =="
