#!/usr/bin/python3
"""The Grafana dashboard and the alert rules against deploy/metrics.txt.

Checks, for deploy/grafana/dots-dashboard.json, deploy/prometheus/alerts.yml and
deploy/k8s/prometheusrule.yaml:
  - every PromQL expression parses (promtool check rules, the real PromQL parser);
  - every expression names only metrics of deploy/metrics.txt, the list that
    tests/server/metrics_test.cc checks a real scrape of server/metrics.cc against (histograms as
    NAME_bucket / NAME_sum / NAME_count);
  - the dashboard has what the issue asks for: uid, title, schemaVersion, tags, a `datasource`
    and a `run` template variable, every panel on ${datasource}, no overlapping panels, and every
    dots_* and process_* metric shown somewhere;
  - the dashboard's replica view (a row titled "Replicas", for a cluster of replicas behind the
    router): runs, resident memory and RPC rate per replica, every query of the row keeping the
    `instance` label (on Kubernetes the pod's name, deploy/k8s/servicemonitor.yaml) and naming it
    in its legend.
Usage: promql_names_test.py SOURCE_DIR
"""
import json
import os
import re
import subprocess
import sys
import tempfile

import yaml

KEYWORDS = {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring",
            "group_left", "group_right", "inf", "nan", "atan2", "start", "end"}


def load_metric_list(path):
    """name -> type from deploy/metrics.txt; errors name file:line."""
    metrics = {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            fields = line.split()
            if len(fields) != 2 or fields[1] not in {"counter", "gauge", "histogram", "summary",
                                                      "synthetic"}:
                sys.exit(f"{path}:{number}: want 'NAME TYPE', got {line!r}")
            if fields[0] in metrics:
                sys.exit(f"{path}:{number}: {fields[0]} listed twice")
            metrics[fields[0]] = fields[1]
    return metrics


def queryable_names(metrics):
    """The series names a PromQL expression may select."""
    names = set()
    for name, kind in metrics.items():
        if kind == "histogram":
            names |= {name + "_bucket", name + "_sum", name + "_count"}
        elif kind == "summary":
            names |= {name, name + "_sum", name + "_count"}
        else:
            names.add(name)
    return names


def substitute_grafana_variables(expr):
    """Grafana's $__rate_interval etc. become a duration; template variables a regex."""
    expr = re.sub(r"\$__\w+", "5m", expr)
    expr = re.sub(r"\$\{\w+(:\w+)?\}|\$\w+", ".*", expr)
    return expr


def metric_names(expr):
    """Metric names selected by a PromQL expression (without parsing it fully: strings, label
    matchers, ranges and grouping clauses are stripped, then every identifier that is not a
    function call or a keyword is a metric name)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    s = re.sub(r"\{[^}]*\}", " ", s)
    s = re.sub(r"\[[^\]]*\]", " ", s)
    s = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\boffset\s+-?\w+", " ", s)
    s = re.sub(r"(?<![\w:])\d[\w.]*(?:[eE][+-]?\d+)?", " ", s)  # numbers and durations
    names = set()
    for m in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", s):
        rest = s[m.end():].lstrip()
        if rest.startswith("("):
            continue  # a function or aggregation
        if m.group(0).lower() in KEYWORDS:
            continue
        names.add(m.group(0))
    return names


# What the replica row must show, per replica: a metric each, from deploy/metrics.txt.
REPLICA_VIEW = {
    "dots_pool_questions": "runs (one dots_pool_questions series per run)",
    "process_resident_memory_bytes": "resident memory",
    "dots_grpc_requests_total": "RPC rate",
}
AGGREGATIONS = r"sum|count|avg|min|max|stddev|stdvar|group|topk|bottomk|quantile|count_values"


def keeps_instance(expr):
    """Whether every aggregation of a PromQL expression keeps the `instance` label: `by (...)`
    listing it, or `without (...)` not listing it, written before the aggregated expression."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    for m in re.finditer(rf"\b({AGGREGATIONS})\s*(?:(by|without)\s*\(([^)]*)\))?\s*\(", s):
        labels = {x.strip() for x in (m.group(3) or "").split(",")}
        if m.group(2) == "by" and "instance" in labels:
            continue
        if m.group(2) == "without" and "instance" not in labels:
            continue
        return False
    return True


def replica_panels(dashboard):
    """The panels of the row titled "Replicas": below it, above the next row. None without it."""
    panels = dashboard.get("panels", [])
    rows = sorted((p for p in panels if p.get("type") == "row"), key=lambda p: p["gridPos"]["y"])
    for i, row in enumerate(rows):
        if row.get("title", "").strip().lower() == "replicas":
            top = row["gridPos"]["y"]
            bottom = rows[i + 1]["gridPos"]["y"] if i + 1 < len(rows) else float("inf")
            inside = [p for p in panels if p.get("type") != "row" and top < p["gridPos"]["y"] < bottom]
            return inside + list(row.get("panels", []))  # a collapsed row holds its panels
    return None


def check_replica_view(dashboard, where, errors):
    panels = replica_panels(dashboard)
    if panels is None:
        errors.append(f"{where}: no row titled 'Replicas' (the per-replica view)")
        return
    shown = set()
    for panel in panels:
        for target in panel.get("targets", []):
            expr = target.get("expr", "")
            at = f"{where}: replica view, panel {panel.get('title')!r} target {target.get('refId')}"
            if not keeps_instance(expr):
                errors.append(f"{at}: aggregates the replicas together (keep `by (instance)`): {expr}")
                continue
            if "{{instance}}" not in target.get("legendFormat", ""):
                errors.append(f"{at}: the legend must name the replica ({{{{instance}}}})")
                continue
            shown |= metric_names(substitute_grafana_variables(expr))
    for name, what in REPLICA_VIEW.items():
        if name not in shown:
            errors.append(f"{where}: the replica view shows no {what} per replica ({name})")


def self_test():
    """The extractor on expressions with a known answer, so it cannot silently accept all."""
    cases = {
        'sum by (le, run) (rate(a_bucket{run=~"x|y", le!="1"}[5m])) / on(run) group_left b':
            {"a_bucket", "b"},
        'histogram_quantile(0.9, sum(rate(c_bucket[1m])) by (le))': {"c_bucket"},
        'up{job="dots"} == 0 or absent(up{job="dots"})': {"up"},
        'time() - max(d offset 5m) > bool 1e3': {"d"},
        'label_replace(e, "dst", "$1", "src", "(.*)") unless f': {"e", "f"},
        'avg_over_time(g[30m:1m]) < 0.8 * h': {"g", "h"},
    }
    for expr, want in cases.items():
        got = metric_names(expr)
        if got != want:
            sys.exit(f"metric_names self-test: {expr!r}: got {sorted(got)}, want {sorted(want)}")
    keeps = {
        'process_resident_memory_bytes{instance=~"$instance"}': True,
        'sum by (instance) (rate(a[5m]))': True,
        'count by (run, instance) (a) or 0 * max by (instance) (b)': True,
        'sum without (run) (a)': True,
        'sum(rate(a[5m]))': False,
        'count(a{instance="x"})': False,
        'count by (instance) (a) or 0 * max(b)': False,
        'sum by (method) (a)': False,
        'sum without (instance) (a)': False,
        'max_over_time(a[5m])': True,
    }
    for expr, want in keeps.items():
        if keeps_instance(expr) != want:
            sys.exit(f"keeps_instance self-test: {expr!r}: got {not want}, want {want}")
    broken = {"panels": [{"type": "row", "title": "Replicas", "gridPos": {"h": 1, "w": 24, "x": 0, "y": 0}},
                         {"type": "timeseries", "title": "t", "gridPos": {"h": 8, "w": 24, "x": 0, "y": 1},
                          "targets": [{"refId": "A", "expr": "count(dots_pool_questions)",
                                       "legendFormat": "{{instance}}"}]}]}
    errors = []
    check_replica_view(broken, "self-test", errors)
    if not any("aggregates the replicas together" in e for e in errors) or \
            not any("resident memory" in e for e in errors):
        sys.exit(f"check_replica_view self-test: accepted a broken replica view: {errors}")


def walk_panels(panels):
    for panel in panels:
        yield panel
        yield from walk_panels(panel.get("panels", []))


def dashboard_expressions(dashboard, where):
    """(location, PromQL) of every query in the dashboard."""
    out = []
    for panel in walk_panels(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if target.get("expr"):
                out.append((f"{where}: panel {panel.get('title')!r} target {target.get('refId')}",
                            target["expr"]))
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        query = query.get("query", "") if isinstance(query, dict) else query or ""
        m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", query)
        if m:
            query = m.group(1)
        elif re.fullmatch(r"\s*label_values\(\s*\w+\s*\)\s*", query):
            continue
        else:
            m = re.fullmatch(r"\s*query_result\((.*)\)\s*", query)
            query = m.group(1) if m else query
        out.append((f"{where}: template variable {variable.get('name')!r}", query))
    for annotation in dashboard.get("annotations", {}).get("list", []):
        if annotation.get("expr"):
            out.append((f"{where}: annotation {annotation.get('name')!r}", annotation["expr"]))
    return out


def rule_expressions(groups, where):
    return [(f"{where}: {r.get('alert') or r.get('record')}", str(r["expr"]))
            for g in groups for r in g["rules"]]


def check_dashboard_structure(dashboard, where, errors):
    for key in ("uid", "title", "schemaVersion", "tags"):
        if not dashboard.get(key):
            errors.append(f"{where}: missing {key}")
    variables = {v.get("name"): v for v in dashboard.get("templating", {}).get("list", [])}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        errors.append(f"{where}: templating needs a 'datasource' variable (type datasource, "
                      "query prometheus)")
    if "run" not in variables or variables["run"].get("type") != "query":
        errors.append(f"{where}: templating needs a 'run' query variable")
    ids = set()
    cells = {}
    for panel in walk_panels(dashboard.get("panels", [])):
        title = panel.get("title")
        if panel.get("id") in ids:
            errors.append(f"{where}: panel {title!r}: duplicate id {panel.get('id')}")
        ids.add(panel.get("id"))
        pos = panel.get("gridPos") or {}
        if not all(isinstance(pos.get(k), int) for k in ("h", "w", "x", "y")):
            errors.append(f"{where}: panel {title!r}: gridPos needs integer h, w, x, y")
            continue
        if pos["x"] + pos["w"] > 24:
            errors.append(f"{where}: panel {title!r}: wider than the 24-column grid")
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                if (x, y) in cells:
                    errors.append(f"{where}: panel {title!r} overlaps {cells[(x, y)]!r}")
                    break
                cells[(x, y)] = title
            else:
                continue
            break
        if panel.get("type") == "row":
            continue
        if not panel.get("targets"):
            errors.append(f"{where}: panel {title!r} has no queries")
        sources = [panel.get("datasource")] + [t.get("datasource") for t in panel["targets"]]
        for source in sources:
            if not isinstance(source, dict) or source.get("uid") != "${datasource}":
                errors.append(f"{where}: panel {title!r}: datasource must be ${{datasource}}, "
                              f"got {source!r}")
                break
        if not panel.get("description"):
            errors.append(f"{where}: panel {title!r} has no description")


def promtool_parse(expressions, errors):
    """Parses every expression with the real PromQL parser (as recording rules)."""
    rules = {"groups": [{"name": "parse", "rules": [
        {"record": f"dashboard:expr_{i}", "expr": expr} for i, (_, expr) in
        enumerate(expressions)]}]}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "exprs.yml")
        with open(path, "w") as f:
            yaml.safe_dump(rules, f)
        result = subprocess.run(["promtool", "check", "rules", path], capture_output=True,
                                text=True)
        if result.returncode != 0:
            # promtool names the failing rule by index; map it back to its location.
            text = result.stdout + result.stderr
            for m in re.finditer(r"dashboard:expr_(\d+)", text):
                where, expr = expressions[int(m.group(1))]
                errors.append(f"{where}: PromQL does not parse: {expr}")
            errors.append("promtool check rules:\n" + text)
        else:
            print(f"promtool parsed {len(expressions)} expressions")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    src = sys.argv[1]
    self_test()
    metrics_path = os.path.join(src, "deploy/metrics.txt")
    metrics = load_metric_list(metrics_path)
    allowed = queryable_names(metrics)
    errors = []

    dashboard_path = os.path.join(src, "deploy/grafana/dots-dashboard.json")
    try:
        with open(dashboard_path) as f:
            dashboard = json.load(f)
    except json.JSONDecodeError as e:
        sys.exit(f"{dashboard_path}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}")
    check_dashboard_structure(dashboard, dashboard_path, errors)
    check_replica_view(dashboard, dashboard_path, errors)
    dash_exprs = dashboard_expressions(dashboard, dashboard_path)

    alerts_path = os.path.join(src, "deploy/prometheus/alerts.yml")
    with open(alerts_path) as f:
        alert_exprs = rule_expressions(yaml.safe_load(f)["groups"], alerts_path)
    rule_path = os.path.join(src, "deploy/k8s/prometheusrule.yaml")
    with open(rule_path) as f:
        k8s_exprs = rule_expressions(yaml.safe_load(f)["spec"]["groups"], rule_path)

    all_exprs = [(where, substitute_grafana_variables(expr)) for where, expr in dash_exprs]
    all_exprs += alert_exprs + k8s_exprs
    used = set()
    for where, expr in all_exprs:
        names = metric_names(expr)
        if not names:
            errors.append(f"{where}: selects no metric: {expr}")
        for name in sorted(names - allowed):
            errors.append(f"{where}: {name} is not exported by dots-server "
                          f"(deploy/metrics.txt): {expr}")
        used |= names

    # The dashboard shows every dots_* and process_* metric.
    dash_used = set()
    for _, expr in dash_exprs:
        dash_used |= metric_names(substitute_grafana_variables(expr))
    for name, kind in sorted(metrics.items()):
        if not name.startswith(("dots_", "process_")):
            continue
        series = {name} if kind not in ("histogram",) else {
            name + "_bucket", name + "_sum", name + "_count"}
        if not series & dash_used:
            errors.append(f"{dashboard_path}: no panel shows {name}")

    promtool_parse(all_exprs, errors)
    if errors:
        print("\n".join(errors), file=sys.stderr)
        sys.exit(1)
    print(f"{len(dash_exprs)} dashboard, {len(alert_exprs)} alert and {len(k8s_exprs)} "
          f"PrometheusRule expressions name only the {len(metrics)} metrics of deploy/metrics.txt "
          f"({len(used)} series names used)")


if __name__ == "__main__":
    main()
