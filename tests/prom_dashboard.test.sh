#!/usr/bin/env bash
# prom_dashboard.test.sh - the learner's Prometheus page, the metric table in learner/prom.h
# and the Grafana dashboard deploy/grafana/cohort-learner.json cannot drift apart:
#   * BUILD/prom_sample renders a view with every field set; tests/check_prom_dashboard.py
#     checks the page's format, that its families are exactly prom.h's table, and that every
#     metric the dashboard queries is on the page (counters only under rate()/increase());
#   * the checker is not blind: broken copies (a renamed metric in a query, rate() of a gauge,
#     a counter without rate(), a legend label no metric has, a table row removed, a page
#     line malformed, no datasource variable) are each reported.
# usage: bash tests/prom_dashboard.test.sh BUILD_DIR
set -euo pipefail
BUILD=${1:?usage: prom_dashboard.test.sh BUILD_DIR}
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY=/usr/bin/python3
SAMPLE="$BUILD/prom_sample"
CHECK=("$PY" "$ROOT/tests/check_prom_dashboard.py")
DASH="$ROOT/deploy/grafana/cohort-learner.json"
HDR="$ROOT/learner/prom.h"
fail() { echo "FAIL: $*" >&2; exit 1; }

[[ -x "$SAMPLE" ]] || fail "$SAMPLE is not built (cmake --build $BUILD --target prom_sample)"
[[ -x "$PY" ]] || fail "$PY is missing (apt-get install python3)"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

"$SAMPLE" > "$WORK/page.txt" || fail "prom_sample failed"
"${CHECK[@]}" "$WORK/page.txt" "$HDR" "$DASH" || fail "page, prom.h and dashboard disagree (above)"

# each broken copy must be reported with the expected problem
n=0
broken() { # broken WHAT EXPECTED-PROBLEM-REGEX WHICH(page|header|dash) SED-SCRIPT
    local what=$1 want=$2 which=$3 script=$4 out rc=0 orig copy
    local page="$WORK/page.txt" hdr="$HDR" dash="$DASH"
    case $which in
        page) orig=$page; copy="$WORK/broken.txt"; page=$copy ;;
        header) orig=$hdr; copy="$WORK/broken.h"; hdr=$copy ;;
        dash) orig=$dash; copy="$WORK/broken.json"; dash=$copy ;;
    esac
    cp "$orig" "$copy"
    sed -i -e "$script" "$copy"
    cmp -s "$orig" "$copy" && fail "broken copy '$what': the sed script changed nothing"
    out=$("${CHECK[@]}" "$page" "$hdr" "$dash" 2>&1) || rc=$?
    [ "$rc" -eq 1 ] || fail "broken copy '$what' passed the check (exit $rc): $out"
    grep -Eq "$want" <<<"$out" || fail "broken copy '$what': expected /$want/, got: $out"
    n=$((n + 1))
}
broken "dashboard queries a metric the learner does not export" \
    "uses cohort_reward_means, which the learner does not export" dash 's/cohort_reward_mean{/cohort_reward_means{/'
broken "rate() of a gauge" "rate\(\)/increase\(\) of cohort_leases_outstanding, a gauge" dash \
    's/"expr": "cohort_leases_outstanding{\([^}]*\)}"/"expr": "rate(cohort_leases_outstanding{\1}[5m])"/'
broken "counter without rate()" "counter cohort_leases_issued_total used without rate" dash \
    's/"expr": "rate(cohort_leases_issued_total{\([^}]*\)}\[$__rate_interval\])"/"expr": "cohort_leases_issued_total{\1}"/'
broken "legend label no metric has" "legend uses \{\{worker\}\}" dash '0,/{{actor}} ({{actor_id}})/s//{{worker}}/'
broken "panel without the datasource variable" "does not use the datasource variable" dash \
    '0,/"uid": "${datasource}"/s//"uid": "P1809F7CD0C75ACF3"/'
broken "no datasource variable" "no Prometheus datasource variable" dash 's/"query": "prometheus"/"query": "loki"/'
broken "dashboard not JSON" "does not parse as JSON" dash '1s/^{/{,/'
broken "metric missing from prom.h's table" "the page has cohort_kl, which prom.h's table does not document" header '/^ \*   cohort_kl  /d'
broken "prom.h documents a metric the page lacks" "prom.h documents cohort_kl_total" header '/^ \*   cohort_kl  /i\ *   cohort_kl_total      counter  made up'
broken "prom.h type disagrees" "prom.h says cohort_step is a counter" header 's/^\( \*   cohort_step  *\)gauge/\1counter/'
broken "malformed sample line" "not a sample line" page 's/^cohort_step 942$/cohort_step 942 x/'
broken "unescaped quote in a label" "not a sample line" page 's/reason="stale"/reason="st"ale"/'
broken "sample without HELP/TYPE" "sample of cohort_kl outside its family" page '/^# TYPE cohort_kl gauge$/d'
broken "gauge named like a counter" "cohort_kl_total is a gauge" page 's/cohort_kl\b/cohort_kl_total/g'
echo "the checker reports each of $n broken copies"
echo "prom_dashboard.test.sh: OK"
