# drill_lib.sh - what the Docker drills (compose_drill.sh, swarm_drill.sh) share; sourced.
# The drill sets CTL (a cohortctl command array against the published Monitor port) and
# defines drill_dump (printed on failure) before it calls these.

T0=$(date +%s)
el() { echo "$(( $(date +%s) - T0 ))s"; }
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

fail() {
    echo "FAIL: $DRILL: $* (at $(el))" >&2
    drill_dump >&2 2>&1 || true
    exit 1
}

# drill_engine: exit 0 with a SKIP line unless a Docker engine answers
drill_engine() {
    local why
    if [ "${COHORT_SKIP_DOCKER:-0}" = 1 ]; then
        echo "SKIP: $DRILL: COHORT_SKIP_DOCKER=1"; exit 0
    fi
    if ! command -v docker >/dev/null; then
        echo "SKIP: $DRILL: no docker command here (install Docker Engine to run it)"; exit 0
    fi
    if ! why=$(timeout 30 docker version 2>&1 >/dev/null); then
        echo "SKIP: $DRILL: no Docker engine answers ($(tail -1 <<<"$why"))"; exit 0
    fi
}

# drill_settings: the run's settings for the compose file (a short SFT, an RL run that does
# not end during the drill, a free host port, a token) and CTL, cohortctl against that port
drill_settings() {
    export COHORT_SFT_STEPS=${COHORT_SFT_STEPS:-100} COHORT_RL_STEPS=${COHORT_RL_STEPS:-100000}
    export COHORT_MONITOR_PORT=${COHORT_MONITOR_PORT:-$(free_port)}
    export COHORT_TOKEN=${COHORT_TOKEN:-drill-$RANDOM$RANDOM}
    CTL=("$BUILD/cohortctl" --learner "127.0.0.1:$COHORT_MONITOR_PORT" --token "$COHORT_TOKEN")
}

# snap: one `cohortctl status` through the published port; sets STEP ACTORS UPTIME AGAIN
# EXPIRED RETURNED DEAD; fails when the learner does not answer
snap() {
    local out
    out=$("${CTL[@]}" status 2>/dev/null) || return 1
    STEP=$(sed -n 's/^step \([0-9]*\)\/.*/\1/p' <<<"$out")
    ACTORS=$(sed -n 's/^actors \([0-9]*\) .*/\1/p' <<<"$out")
    UPTIME=$(sed -n 's/.* uptime \([0-9]*\) s .*/\1/p' <<<"$out")
    read -r AGAIN EXPIRED RETURNED DEAD < <(sed -n 's/^leases issued [0-9]* (again \([0-9]*\))  completed [0-9]*  expired \([0-9]*\)  returned \([0-9]*\)  of dead actors \([0-9]*\).*/\1 \2 \3 \4/p' <<<"$out")
    [ -n "$STEP" ] && [ -n "$ACTORS" ] && [ -n "${DEAD:-}" ]
}

# until_ok SECONDS WHAT CONDITION: poll snap + CONDITION (a bash expression) every second
until_ok() {
    local t=$1 what=$2 cond=$3
    for _ in $(seq "$t"); do
        if snap && eval "$cond"; then return 0; fi
        sleep 1
    done
    fail "$what: not within $t s (step ${STEP:-?}, actors ${ACTORS:-?})"
}
