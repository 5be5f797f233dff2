#!/usr/bin/python3
"""check_prom_dashboard.py - the learner's metrics page, the metric table in learner/prom.h and
the Grafana dashboard deploy/grafana/cohort-learner.json must agree.

    check_prom_dashboard.py PAGE PROM_H DASHBOARD
        PAGE       a page rendered from a view with every field set (build/prom_sample)
        PROM_H     learner/prom.h (its table: lines " *   cohort_NAME   gauge|counter ...")
        DASHBOARD  the dashboard JSON

Checks:
  * the page is well-formed text exposition 0.0.4: every family has HELP then TYPE before its
    samples, sample lines parse (name, escaped labels, a number or NaN/+Inf/-Inf), no series
    twice, counters and only counters end in _total;
  * the families on the page are exactly those in prom.h's table, with the same types;
  * the dashboard: a Prometheus datasource variable that every panel and query uses; unique
    panel ids; panels inside the 24-column grid; every metric a query (or a variable) names is
    on the page; counters appear only inside rate()/irate()/increase(), and nothing else does;
    every {{label}} of a legend is a label of the query's metrics (or instance/job).
Exit 0 with a summary when all holds; exit 1 and one line per problem otherwise.
"""
import json
import re
import sys

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL_VALUE = r'"(?:[^"\\\n]|\\\\|\\"|\\n)*"'
LABELS = rf"\{{(?:{NAME}={LABEL_VALUE})(?:,{NAME}={LABEL_VALUE})*\}}"
NUMBER = r"(?:NaN|[+-]Inf|[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)"
SAMPLE = re.compile(rf"^({NAME})({LABELS})? ({NUMBER})$")
RANGE_FN = re.compile(r"\b(?:rate|irate|increase)\(\s*$")


def check_page(page, bad):
    """Returns {family: (type, set of label names)}."""
    fams = {}
    help_of, type_of = None, None
    seen = set()
    if page and not page.endswith("\n"):
        bad("page: the last line has no newline")
    for n, line in enumerate(page.splitlines(), 1):
        if line.startswith("# HELP "):
            parts = line.split(" ", 3)
            if len(parts) < 4 or not parts[3]:
                bad(f"page line {n}: HELP without text: {line!r}")
            help_of = parts[2] if len(parts) > 2 else None
        elif line.startswith("# TYPE "):
            parts = line.split(" ")
            if len(parts) != 4 or parts[3] not in ("gauge", "counter", "untyped", "summary", "histogram"):
                bad(f"page line {n}: malformed TYPE line: {line!r}")
                continue
            if parts[2] != help_of:
                bad(f"page line {n}: TYPE of {parts[2]} not right after its HELP")
            if parts[2] in fams:
                bad(f"page line {n}: family {parts[2]} declared twice")
            type_of = parts[2]
            fams[type_of] = (parts[3], set())
        elif line.startswith("#"):
            bad(f"page line {n}: unexpected comment {line!r}")
        else:
            m = SAMPLE.match(line)
            if not m:
                bad(f"page line {n}: not a sample line: {line!r}")
                continue
            name, labels = m.group(1), m.group(2) or ""
            if name != type_of:
                bad(f"page line {n}: sample of {name} outside its family (current: {type_of})")
                continue
            fams[name][1].update(re.findall(rf"({NAME})=", labels))
            if (name, labels) in seen:
                bad(f"page line {n}: series {name}{labels} appears twice")
            seen.add((name, labels))
    for f, (t, _) in fams.items():
        if (t == "counter") != f.endswith("_total"):
            bad(f"page: {f} is a {t}: counters, and only counters, end in _total")
        if not f.startswith("cohort_"):
            bad(f"page: {f} does not start with cohort_")
    if not fams:
        bad("page: no metric families")
    return fams


def check_header(text, fams, bad):
    table = dict(re.findall(r"^ \*   (cohort_[a-z0-9_]+)\s+(gauge|counter)\b", text, re.M))
    if not table:
        bad("prom.h: no metric table found (lines ' *   cohort_NAME   gauge|counter ...')")
    for f, t in table.items():
        if f not in fams:
            bad(f"prom.h documents {f}, which the page does not have")
        elif fams[f][0] != t:
            bad(f"prom.h says {f} is a {t}, the page says {fams[f][0]}")
    for f in fams:
        if f not in table:
            bad(f"the page has {f}, which prom.h's table does not document")
    return table


def panels_of(dash):
    for p in dash.get("panels", []):
        yield p
        yield from p.get("panels", []) or []


def check_dashboard(dash, fams, bad):
    vars_ = {v.get("name"): v for v in dash.get("templating", {}).get("list", [])}
    ds = [v for v in vars_.values() if v.get("type") == "datasource" and v.get("query") == "prometheus"]
    if not ds:
        bad("dashboard: no Prometheus datasource variable (templating type datasource, query prometheus)")
        ds_ref = "${datasource}"
    else:
        ds_ref = "${" + ds[0]["name"] + "}"
    for k in ("title", "uid", "schemaVersion", "panels"):
        if k not in dash:
            bad(f"dashboard: no {k}")

    exprs = []  # (where, expr, legend)
    for name, v in vars_.items():
        if v.get("type") == "query":
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            exprs.append((f"variable {name}", q or "", ""))
            if (v.get("datasource") or {}).get("uid") != ds_ref:
                bad(f"dashboard: variable {name} does not use the datasource variable {ds_ref}")
    ids = set()
    for p in panels_of(dash):
        title = p.get("title", "?")
        if p.get("id") in ids:
            bad(f"dashboard: panel id {p.get('id')} used twice")
        ids.add(p.get("id"))
        g = p.get("gridPos") or {}
        if not g or g.get("x", 0) + g.get("w", 0) > 24 or g.get("w", 0) <= 0 or g.get("h", 0) <= 0:
            bad(f"dashboard: panel '{title}' has a bad gridPos {g}")
        if p.get("type") == "row":
            continue
        if (p.get("datasource") or {}).get("uid") != ds_ref:
            bad(f"dashboard: panel '{title}' does not use the datasource variable {ds_ref}")
        if not p.get("targets"):
            bad(f"dashboard: panel '{title}' has no query")
        for t in p.get("targets", []):
            if (t.get("datasource") or {}).get("uid") != ds_ref:
                bad(f"dashboard: a query of '{title}' does not use the datasource variable {ds_ref}")
            exprs.append((f"panel '{title}'", t.get("expr", ""), t.get("legendFormat", "")))

    used = set()
    for where, expr, legend in exprs:
        names = re.findall(r"\bcohort_[a-z0-9_]+", expr)
        if not names:
            bad(f"dashboard: {where}: query names no cohort_ metric: {expr!r}")
        labels = {"instance", "job"}
        for m in re.finditer(r"\bcohort_[a-z0-9_]+", expr):
            name = m.group(0)
            used.add(name)
            if name not in fams:
                bad(f"dashboard: {where} uses {name}, which the learner does not export")
                continue
            labels |= fams[name][1]
            in_range_fn = bool(RANGE_FN.search(expr[:m.start()]))
            if fams[name][0] == "counter" and not in_range_fn:
                bad(f"dashboard: {where}: counter {name} used without rate()/increase()")
            if fams[name][0] != "counter" and in_range_fn:
                bad(f"dashboard: {where}: rate()/increase() of {name}, a {fams[name][0]}")
        for lab in re.findall(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}", legend):
            if lab not in labels:
                bad(f"dashboard: {where}: legend uses {{{{{lab}}}}}, not a label of {sorted(set(names))}")
    return used, len(list(panels_of(dash)))


def main(page_path, header_path, dash_path):
    problems = []
    bad = problems.append
    with open(page_path) as f:
        page = f.read()
    with open(header_path) as f:
        header = f.read()
    fams = check_page(page, bad)
    table = check_header(header, fams, bad)
    try:
        with open(dash_path) as f:
            dash = json.load(f)
    except (OSError, ValueError) as e:
        bad(f"dashboard: {dash_path} does not parse as JSON: {e}")
        dash = None
    used, npanels = check_dashboard(dash, fams, bad) if dash is not None else (set(), 0)
    if problems:
        for p in problems:
            print(p)
        return 1
    unused = sorted(set(fams) - used)
    print(f"page: {len(fams)} families, all documented in prom.h ({len(table)} rows); "
          f"dashboard: {npanels} panels use {len(used)} of them, all exported"
          + (f" (not on the dashboard: {', '.join(unused)})" if unused else ""))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        sys.exit(2)
    sys.exit(main(*sys.argv[1:]))
