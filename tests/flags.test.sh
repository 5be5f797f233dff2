#!/usr/bin/env bash
# flags.test.sh - every numeric and choice flag of every binary refuses bad values.
#
# Table-driven: one row per flag. Each flag is given a non-number ("abc"), a negative value
# ("-1", or a row's own) and an out-of-range value (the row's); every run must exit with
# status 2 within 10 s, name the flag on stderr and leave no sanitizer report. Runs point at
# closed ports and missing files, so a binary that does not refuse would hang or fail
# differently, never pass. A missing binary fails the test.
#
# --stop TEXT (a string, not a number) has its own refusals: empty, too long, not UTF-8, a
# ninth string. Addresses (--listen, --monitor-listen, --metrics-listen, --learner, --reward)
# refuse a port out of range or not a number, a missing port and an unbracketed IPv6 host.
# Coverage: the numeric and choice flags that `cohort-train --help` and
# `cohort-learner --help` list must all have a row here (a new flag without a row fails).
# Last, a real cohort-train run is repeated from its own settings record with
# `--config FILE`, and the two records must be equal (but for "out").
#
# usage: bash tests/flags.test.sh BUILD_DIR
set -uo pipefail

BUILD=${1:?usage: flags.test.sh BUILD_DIR}
BUILD="$(cd "$BUILD" && pwd)" || exit 1
PY=/usr/bin/python3
[[ -x $PY ]] || PY=python3
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
export OPENBLAS_NUM_THREADS=1 COHORT_KEEP_BLAS_KERNELS=1
unset COHORT_TOKEN COHORT_LEARNER

# ---- the table ----------------------------------------------------------------------------
# TRAINING rows (run against cohort-train and cohort-learner): FLAG OUT-OF-RANGE [NEGATIVE]
# (choices get non-member names for all three values)
TRAINING='
--task nonesuch
--digits 10
--numbers 9
--max-number 1001
--max-target 100001
--min-len 33
--max-len 33
--seed 18446744073709551616
--sft-steps 100000001
--sft-batch 65537
--sft-lr 1.5
--sft-warmup 100000001
--sft-demos 1000000001
--sft-until 1.5
--raft-steps 100000001
--raft-threshold 1001
--rl-steps 100000001
--prompts 4097
--group-size 1025
--rl-lr 2
--rl-warmup 100000001
--estimator nonesuch
--aggregation nonesuch
--eps-low 11
--eps-high 11
--beta 101
--entropy-coef 11
--temperature 11
--top-k 1048577
--top-p 1.5
--max-new-tokens 65537
--format-weight 101
--weight-decay 11
--grad-clip 2e6
--adam-beta1 1
--adam-beta2 1
--adam-eps 2
--schedule nonesuch
--min-lr-ratio 1.5
--eval-every 100000001
--eval-size 10001
--ckpt-every 100000001
--log-every 100000001
'
# OTHER rows: BINARY-KEY FLAG OUT-OF-RANGE [NEGATIVE] ('-' = negatives are valid; the row's
# out-of-range value covers that side)
OTHER='
train       --threads            257
learner     --threads            257
learner     --max-staleness      1000001
learner     --buffer             1048577
learner     --lease-ttl-ms       86400001
learner     --heartbeat-ms       3600001
actor       --threads            257
actor       --seed               18446744073709551616
actor       --prompts-per-lease  1025
actor       --max-steps          99999999999999999999
actor       --reward-timeout-ms  600001
tool-init   --seed               18446744073709551616
tool-sample --num                4097
tool-sample --temperature        11
tool-sample --top-p              1.5
tool-sample --top-k              1048577
tool-sample --seed               18446744073709551616
tool-sample --max-new-tokens     65537
tool-logprobs --temperature      11
tool-grad   --mode               nonesuch
tool-grad   --estimator          nonesuch
tool-grad   --aggregation        nonesuch
tool-grad   --eps-low            11
tool-grad   --eps-high           11
tool-grad   --beta               101
tool-grad   --entropy-coef       11
tool-grad   --max-new-tokens     65537
tool-grad   --temperature        11
ctl         --from               99999999999999999999 -99999999999999999999
ctl-set     lr                   2
ctl-set     beta                 101
ctl-set     temperature          11
ctl-set     entropy_coef         11
ctl-set     eps_low              11
ctl-set     eps_high             11
reward      --workers            17
reward      --stats-every        86401
bench-model --threads            257
bench-broadcast --mb             4097
bench-broadcast --reps           1001
'

# ---- running one row ----------------------------------------------------------------------
declare -A BIN=(
    [train]=cohort-train [learner]=cohort-learner [actor]=cohort-actor
    [tool-init]=cohort-tool [tool-sample]=cohort-tool [tool-logprobs]=cohort-tool
    [tool-grad]=cohort-tool [ctl]=cohortctl [ctl-set]=cohortctl [reward]=cohort-reward
    [bench-model]=bench_model [bench-broadcast]=bench_broadcast)

# the command line of binary KEY given FLAG VALUE, into the array CMD
command_for() {
    local key=$1 flag=$2 value=$3 b="$BUILD/${BIN[$1]}"
    case $key in
    train) CMD=("$b" --out "$WORK/train" "$flag" "$value") ;;
    learner) CMD=("$b" --listen 127.0.0.1:0 --out "$WORK/learner" "$flag" "$value") ;;
    actor) CMD=("$b" --learner 127.0.0.1:9 --reward 127.0.0.1:9 --quiet "$flag" "$value") ;;
    tool-init) CMD=("$b" init --config "$WORK/none.json" --out "$WORK/ck" "$flag" "$value") ;;
    tool-sample) CMD=("$b" sample "$WORK/nock" --prompt hi "$flag" "$value") ;;
    tool-logprobs) CMD=("$b" logprobs "$WORK/nock" "$flag" "$value") ;;
    tool-grad) CMD=("$b" grad "$WORK/nock" --batch "$WORK/b" --out "$WORK/g" "$flag" "$value") ;;
    ctl) CMD=("$b" --learner 127.0.0.1:9 watch "$flag" "$value") ;;
    ctl-set) CMD=("$b" --learner 127.0.0.1:9 set "$flag=$value") ;;
    reward) CMD=("$b" --listen 127.0.0.1:0 --stats-every 0 "$flag" "$value") ;;
    *) CMD=("$b" "$flag" "$value") ;;
    esac
}

declare -A TIMEOUTS MISSING
FAILS=0
RUNS=0
fail() {
    echo "FAIL: $*" >&2
    FAILS=$((FAILS + 1))
}

# check KEY FLAG VALUE: exit status 2 within 10 s, FLAG named on stderr, no sanitizer report
check() {
    local key=$1 flag=$2 value=$3 bin=${BIN[$1]}
    if [[ ! -x "$BUILD/$bin" ]]; then
        [[ -n ${MISSING[$bin]:-} ]] || fail "$BUILD/$bin is not built"
        MISSING[$bin]=1
        return
    fi
    if ((${TIMEOUTS[$bin]:-0} >= 3)); then
        fail "$bin $flag $value: not run ($bin already ran past 10 s three times)"
        return
    fi
    command_for "$key" "$flag" "$value"
    RUNS=$((RUNS + 1))
    timeout -k 2 10 "${CMD[@]}" </dev/null >"$WORK/out.txt" 2>"$WORK/err.txt"
    local rc=$?
    local shown="${CMD[*]#"$BUILD/"}"
    if ((rc == 124 || rc == 137)); then
        TIMEOUTS[$bin]=$((${TIMEOUTS[$bin]:-0} + 1))
        fail "$shown: still running after 10 s (a bad value must be refused before anything starts)"
    elif ((rc != 2)); then
        fail "$shown: exit status $rc, expected 2; stderr: $(head -c 300 "$WORK/err.txt")"
    elif ! grep -qF -- "$flag" "$WORK/err.txt"; then
        fail "$shown: stderr does not name $flag: $(head -c 300 "$WORK/err.txt")"
    fi
    if grep -Eq "Sanitizer|runtime error" "$WORK/err.txt"; then
        fail "$shown: sanitizer report"
        head -20 "$WORK/err.txt" >&2
    fi
}

# the three values of a row
check_row() {
    local key=$1 flag=$2 over=$3 neg=${4:--1}
    check "$key" "$flag" abc
    [[ $neg == - ]] || check "$key" "$flag" "$neg"
    check "$key" "$flag" "$over"
}

while read -r flag over neg; do
    [[ -n $flag ]] || continue
    check_row train "$flag" "$over" ${neg:+"$neg"}
    check_row learner "$flag" "$over" ${neg:+"$neg"}
done <<<"$TRAINING"
while read -r key flag over neg; do
    [[ -n $key ]] || continue
    check_row "$key" "$flag" "$over" ${neg:+"$neg"}
done <<<"$OTHER"

# ---- --stop TEXT: a checked string, not a number -------------------------------------------
# Refused: an empty string, 65 bytes, invalid UTF-8 (a cut-short sequence, a surrogate), and a
# ninth string; each run exits with status 2 naming --stop.
check_stop_ninth() {
    local key=$1 bin=${BIN[$1]} rc
    [[ -x "$BUILD/$bin" ]] || return
    command_for "$key" --stop s0
    for i in 1 2 3 4 5 6 7 8; do CMD+=(--stop "s$i"); done
    RUNS=$((RUNS + 1))
    timeout -k 2 10 "${CMD[@]}" </dev/null >"$WORK/out.txt" 2>"$WORK/err.txt"
    rc=$?
    if ((rc != 2)) || ! grep -qF -- "--stop: more than 8 stop strings" "$WORK/err.txt"; then
        fail "$bin with 9 --stop: exit status $rc; stderr: $(head -c 300 "$WORK/err.txt")"
    fi
}
for key in train learner; do
    check "$key" --stop ""
    check "$key" --stop "$(printf 'x%.0s' {1..65})"
    check "$key" --stop $'ok\xc3'
    check "$key" --stop $'\xed\xa0\x80'
    check_stop_ninth "$key"
done

# ---- addresses: HOST:PORT with a whole port in range, checked before anything starts ----------
# (seen: --listen 127.0.0.1:99999 served on port 34463, the port taken modulo 65536)
for v in 127.0.0.1:99999 127.0.0.1:abc 127.0.0.1: nocolon ::1:5 '[::1:5' 127.0.0.1:-1; do
    check learner --listen "$v"
    check learner --monitor-listen "$v"
    check learner --metrics-listen "$v"
    check reward --listen "$v"
    check reward --metrics-listen "$v"
    check actor --learner "$v"
    check actor --reward "$v"
done
check actor --learner 127.0.0.1:0   # a client needs a real port

# ---- coverage: every numeric/choice flag in --help has a row -------------------------------
for key in train learner; do
    bin=${BIN[$key]}
    [[ -x "$BUILD/$bin" ]] || continue
    flags=$("$BUILD/$bin" --help 2>&1 |
        grep -oE -- '--[a-z0-9-]+ (N|X|G|P|K|ACC|NAME|MS|GROUPS)\b' | awk '{print $1}' | sort -u)
    [[ -n $flags ]] || fail "$bin --help lists no numeric option (format changed?)"
    for f in $flags; do
        if ! grep -qE -- "^$f " <<<"$TRAINING" &&
            ! grep -qE -- "^$key +$f " <<<"$OTHER"; then
            fail "$bin $f (in --help) has no row in tests/flags.test.sh"
        fi
    done
done

# ---- one file reproduces a run ------------------------------------------------------------
if [[ -x "$BUILD/cohort-train" ]]; then
    cd "$WORK"
    "$BUILD/cohort-train" --out a --sft-steps 2 --sft-batch 4 --rl-steps 1 --prompts 2 \
        --group-size 2 --eval-every 0 --estimator rloo --aggregation seq_mean_token_mean \
        --eps-high 0.28 --max-new-tokens 40 --seed 7 --drop-zero-signal --rl-lr 3e-4 --quiet \
        --stop '#' --stop ' 9' \
        >run_a.txt 2>&1 || fail "cohort-train with flags failed: $(tail -3 run_a.txt)"
    head -1 a/metrics.jsonl | "$PY" -c '
import json, sys
json.dump(json.load(sys.stdin)["settings"], open("run.json", "w"), indent=1)' ||
        fail "no settings record at the head of a/metrics.jsonl"
    "$BUILD/cohort-train" --config run.json --out b >run_b.txt 2>&1 ||
        fail "cohort-train --config run.json failed: $(tail -3 run_b.txt)"
    "$PY" - <<'EOF' || fail "the settings of the --config run differ from the flags' run"
import json
a = json.loads(open("a/metrics.jsonl").readline())["settings"]
b = json.loads(open("b/metrics.jsonl").readline())["settings"]
assert a.pop("out") == "a" and b.pop("out") == "b"
diff = {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)}
assert not diff, diff
assert a["estimator"] == "rloo" and a["max_new_tokens"] == 40 and a["seed"] == 7, a
assert a["stop"] == ["#", " 9"], a
# the random policy was made large enough: <bos> + "12+34=" + 40
assert a["model_config"]["max_position_embeddings"] == 47, a["model_config"]
EOF
    # a checkpoint records the same settings
    "$PY" - <<'EOF' || fail "trainer_state.json settings differ from the metrics record"
import json
m = json.loads(open("b/metrics.jsonl").readline())["settings"]
latest = open("b/checkpoints/latest").read().strip()
s = json.load(open("b/checkpoints/%s/trainer_state.json" % latest))["settings"]
assert s == m, (s, m)
EOF
    cd - >/dev/null
fi

echo "flags: $RUNS refusals checked, $FAILS failure(s)"
((FAILS == 0)) || exit 1
echo PASS
