#!/usr/bin/env bash
# tls_cluster.test.sh - the services over TLS with a bearer token: a certificate made at test
# time with openssl; cohort-learner and cohort-reward serve TLS; an actor with --tls-ca and the
# token trains (the learner's steps advance); cohortctl over TLS reads the status; a plaintext
# client against the TLS port and a client without the token are refused.
# usage: bash tests/tls_cluster.test.sh BUILD_DIR
set -euo pipefail
BUILD=${1:?usage: tls_cluster.test.sh BUILD_DIR}
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/ctl_poll.sh"
PY=/usr/bin/python3
for b in cohort-learner cohort-reward cohort-actor cohortctl; do
  [ -x "$BUILD/$b" ] || { echo "FAIL: $BUILD/$b is not built (build the tree first: cmake --build $BUILD)" >&2; exit 1; }
done
command -v openssl >/dev/null || { echo "SKIP: openssl is not installed (apt-get install openssl)"; exit 77; }
WORK="$(mktemp -d)"
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT
cd "$WORK"
openssl req -x509 -newkey rsa:2048 -nodes -keyout key.pem -out cert.pem -days 1 -subj "/CN=localhost" \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" > /dev/null 2>&1
port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
LP=$(port); RP=$(port)
export COHORT_KEEP_BLAS_KERNELS=1
"$BUILD/cohort-reward" --listen "127.0.0.1:$RP" --tls-cert cert.pem --tls-key key.pem --token tok \
  --stats-every 0 > reward.log 2>&1 & PIDS+=($!)
"$BUILD/cohort-learner" --listen "127.0.0.1:$LP" --tls-cert cert.pem --tls-key key.pem --token tok \
  --out run --sft-steps 0 --rl-steps 3 --prompts 1 --group-size 2 --eval-every 0 > learner.log 2>&1 &
LPID=$!; PIDS+=($LPID)
# an operator watching over TLS while it trains (the run may end before an answer comes)
ctl_poll_start "$BUILD/cohortctl" "$WORK/ctl_poll.log" --learner "127.0.0.1:$LP" --tls-ca cert.pem --token tok
PIDS+=($CTL_POLL_PID)
"$BUILD/cohort-actor" --learner "127.0.0.1:$LP" --reward "127.0.0.1:$RP" --tls-ca cert.pem --token tok \
  --name tls --quiet > actor.log 2>&1 & PIDS+=($!)
for _ in $(seq 300); do kill -0 "$LPID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$LPID" 2>/dev/null; then echo "FAIL: no training over TLS"; tail -n 3 learner.log actor.log; exit 1; fi
grep -q "training finished at step 3" learner.log || { echo "FAIL: $(tail -3 learner.log)"; exit 1; }
ctl_poll_stop || exit 1
echo "actor over TLS with a token: the learner trained 3 steps"
# a fresh learner to poke at
LP2=$(port)
"$BUILD/cohort-learner" --listen "127.0.0.1:$LP2" --tls-cert cert.pem --tls-key key.pem --token tok \
  --out run2 --sft-steps 0 --rl-steps 1 --eval-every 0 > learner2.log 2>&1 & LPID=$!; PIDS+=($LPID)
ok=0
for _ in $(seq 100); do
  if "$BUILD/cohortctl" --learner "127.0.0.1:$LP2" --tls-ca cert.pem --token tok status > st.txt 2>&1; then ok=1; break; fi
  sleep 0.1
done
[ $ok = 1 ] && grep -q "^step" st.txt || { echo "FAIL: cohortctl over TLS: $(cat st.txt)"; exit 1; }
if "$BUILD/cohortctl" --learner "127.0.0.1:$LP2" status > plain.txt 2>&1; then echo "FAIL: plaintext client accepted"; exit 1; fi
grep -q UNAVAILABLE plain.txt || { echo "FAIL: plaintext: $(cat plain.txt)"; exit 1; }
if "$BUILD/cohortctl" --learner "127.0.0.1:$LP2" --tls-ca cert.pem status > notok.txt 2>&1; then echo "FAIL: no token accepted"; exit 1; fi
grep -q UNAUTHENTICATED notok.txt || { echo "FAIL: no token: $(cat notok.txt)"; exit 1; }
echo "cohortctl over TLS ok; plaintext -> UNAVAILABLE; no token -> UNAUTHENTICATED"
echo "tls_cluster.test.sh: OK"
