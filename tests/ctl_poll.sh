# ctl_poll.sh - sourced by the service tests: poll a learner with `cohortctl status` and
# `cohortctl workers` in the background while the test drives it, the way an operator
# watches a run. Under ThreadSanitizer (tests/run.sh, label "service") this is what makes
# Monitor's reads meet the training loop's writes.
#
#   ctl_poll_start CTL LOG ARGS...  start polling: CTL ARGS status, CTL ARGS workers, every
#                                   0.3 s (ARGS: --learner HOST:PORT [--tls-ca F --token T]);
#                                   sets CTL_POLL_PID (add it to the test's kill list)
#   ctl_poll_stop [--need-answer]   stop after the poll in flight; returns 1 (with a FAIL
#                                   line) if a cohortctl died of a sanitizer report (exit 66,
#                                   the exitcode tests/run.sh gives TSan) or crashed (>= 128),
#                                   or with --need-answer if no status call was answered
#
# The loop also ends when the test script exits (ctl_poll_start puts a stop in front of the
# script's EXIT trap), so it never outlives the test and never blocks the trap's `wait`.

CTL_POLL_PID=
CTL_POLL_LOG=
CTL_POLL_STOP=

ctl_poll_start() {
    local ctl=$1 log=$2
    shift 2
    CTL_POLL_LOG=$log
    CTL_POLL_STOP="$log.stop"
    rm -f "$CTL_POLL_STOP"
    : > "$log"
    # stop the loop when the test exits early too: its EXIT trap (kill, then `wait` for
    # every child) would otherwise wait for the loop forever
    local old
    old=$(trap -p EXIT | sed -e "s/^trap -- '//" -e "s/' EXIT\$//")
    trap "touch '$CTL_POLL_STOP'; $old" EXIT
    local parent=$$
    (
        while [ ! -e "$CTL_POLL_STOP" ] && kill -0 "$parent" 2>/dev/null; do
            for what in status workers; do
                rc=0
                "$ctl" "$@" "$what" >> "$log" 2>&1 || rc=$?
                echo "ctl_poll: $what rc=$rc" >> "$log"
            done
            sleep 0.3
        done
    ) &
    CTL_POLL_PID=$!
}

ctl_poll_stop() {
    [ -n "$CTL_POLL_PID" ] || return 0
    touch "$CTL_POLL_STOP"
    wait "$CTL_POLL_PID" 2>/dev/null || true
    CTL_POLL_PID=
    local polls answered bad
    polls=$(grep -c "^ctl_poll: " "$CTL_POLL_LOG" || true)
    answered=$(grep -c "^ctl_poll: status rc=0$" "$CTL_POLL_LOG" || true)
    bad=$(grep -E "^ctl_poll: [a-z]+ rc=(66|1[2-9][0-9]|2[0-9][0-9])$" "$CTL_POLL_LOG" | head -1 || true)
    echo "cohortctl polls: $polls calls, $answered status answers"
    if [ -n "$bad" ] || grep -q "WARNING: ThreadSanitizer\|ERROR: AddressSanitizer" "$CTL_POLL_LOG"; then
        echo "FAIL: a polling cohortctl failed: ${bad:-sanitizer report}" >&2
        grep -B2 -A30 "WARNING: ThreadSanitizer\|ERROR: AddressSanitizer" "$CTL_POLL_LOG" | head -60 >&2 || true
        return 1
    fi
    if [ "${1:-}" = --need-answer ] && [ "$answered" -eq 0 ]; then
        echo "FAIL: no 'cohortctl status' poll was answered:" >&2
        tail -n 5 "$CTL_POLL_LOG" >&2
        return 1
    fi
    return 0
}
