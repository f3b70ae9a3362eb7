#!/usr/bin/env bash
# promtool on deploy/prometheus: the scrape config (with its file_sd target files), the alert
# rules and their unit tests, and the same rules as shipped in the Kubernetes PrometheusRule. The
# scrape config has a job `dots` (what the alert rules select) and the HAProxy router under a job
# of its own.
# Usage: prometheus_test.sh SOURCE_DIR
set -euo pipefail
src=${1:?usage: prometheus_test.sh SOURCE_DIR}
dir="$src/deploy/prometheus"
command -v promtool >/dev/null || { echo "promtool missing (apt package prometheus)" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

promtool check config "$dir/prometheus.yml"
/usr/bin/python3 - "$dir" <<'PY'
import os, sys, yaml
d = sys.argv[1]
jobs = {j["job_name"]: j for j in yaml.safe_load(open(f"{d}/prometheus.yml"))["scrape_configs"]}
errors = []
if "dots" not in jobs:
    errors.append("prometheus.yml: no job dots (the alert rules select job=\"dots\")")
router = jobs.get("dots-router")
if not router:
    errors.append("prometheus.yml: no job dots-router (HAProxy's /metrics)")
elif router.get("metrics_path", "/metrics") != "/metrics":
    errors.append("prometheus.yml: job dots-router must scrape /metrics (HAProxy's prometheus-exporter)")
for name, job in jobs.items():
    for sd in job.get("file_sd_configs", []):
        for f in sd["files"]:
            if "*" not in f and not os.path.exists(os.path.join(d, f)):
                errors.append(f"prometheus.yml: job {name}: {f} is missing")
if errors: sys.exit("\n".join(errors))
PY
promtool check rules "$dir/alerts.yml"
(cd "$dir" && promtool test rules alerts_test.yml)

# Every alert has at least one unit test, and every tested alert exists.
/usr/bin/python3 - "$dir" <<'PY'
import sys, yaml
d = sys.argv[1]
alerts = {r["alert"] for g in yaml.safe_load(open(f"{d}/alerts.yml"))["groups"] for r in g["rules"] if "alert" in r}
tests = yaml.safe_load(open(f"{d}/alerts_test.yml"))["tests"]
tested = {c["alertname"] for t in tests for c in t.get("alert_rule_test", [])}
firing = {c["alertname"] for t in tests for c in t.get("alert_rule_test", []) if c.get("exp_alerts")}
silent = {c["alertname"] for t in tests for c in t.get("alert_rule_test", []) if not c.get("exp_alerts")}
errors = []
for a in sorted(alerts):
    if a not in firing: errors.append(f"alerts_test.yml: no case where {a} fires")
    if a not in silent: errors.append(f"alerts_test.yml: no case where {a} stays silent")
for a in sorted(tested - alerts): errors.append(f"alerts_test.yml: tests unknown alert {a}")
if errors: sys.exit("\n".join(errors))
print(f"{len(alerts)} alerts, each with firing and silent unit tests")
PY

# The PrometheusRule's spec is a rules file too: check it and run the same unit tests on it.
/usr/bin/python3 - "$src/deploy/k8s/prometheusrule.yaml" "$work/rules.yml" <<'PY'
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
yaml.safe_dump({"groups": doc["spec"]["groups"]}, open(sys.argv[2], "w"), sort_keys=False)
PY
sed 's#^  - alerts.yml$#  - rules.yml#' "$dir/alerts_test.yml" > "$work/rules_test.yml"
grep -q '^  - rules.yml$' "$work/rules_test.yml" || { echo "could not retarget alerts_test.yml" >&2; exit 1; }
promtool check rules "$work/rules.yml"
(cd "$work" && promtool test rules rules_test.yml)

# A broken rule must be caught (guards against a promtool that checks nothing).
printf 'groups:\n- name: x\n  rules:\n  - alert: Bad\n    expr: sum(rate(x[5m]) by\n' > "$work/bad.yml"
if promtool check rules "$work/bad.yml" >/dev/null 2>&1; then
  echo "promtool accepted a malformed rule" >&2
  exit 1
fi
echo "prometheus_test: OK"
