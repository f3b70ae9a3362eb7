#!/usr/bin/python3
"""Live metrics: a real dots-server, a short training run driven with dotsctl, its /metrics
scraped and checked, and a real Prometheus scraping it on loopback.

 1. dots-server on 127.0.0.1:0 with --metrics_listen=127.0.0.1:0 and the flag file of the
    Kubernetes ConfigMap (so that file is known to parse).
 2. dotsctl: create a run, load 96 real questions (data/oneshot-rlvr), then 6 steps of
    next + report (rewards from each question's recorded success rate), leaving one question
    unreported so that its lease expires; one GetRun of a missing run (NOT_FOUND).
 3. /metrics: `promtool check metrics`; every metric of deploy/metrics.txt present with a HELP
    line; values equal to what dotsctl stats reports and to what the test itself did (calls per
    method and code, replayed groups and their ages, fresh groups reported).
 4. Prometheus (Debian's prometheus) on 127.0.0.1 scrapes dots every second with
    deploy/prometheus/alerts.yml loaded: dots_effective_question_ratio through the HTTP API
    equals the value dots reported; every dashboard expression evaluates without error (and
    panel queries return data); every alert rule evaluates with health "ok"; no alert fires.
 5. Deleting the run removes its series; SIGTERM drains and exits 0.
Usage: live_metrics_test.py SERVER_BIN DOTSCTL_BIN
"""
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import yaml

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
sys.path.insert(0, os.path.dirname(__file__))
from promql_names_test import (dashboard_expressions, load_metric_list,  # noqa: E402
                               replica_panels, substitute_grafana_variables)

RUN = "live"
GROUP_SIZE = 8
STEPS = 6
QUESTIONS = 96


class Failure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failure(message)


def http_get(url, timeout=10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LineReader:
    """Collects a process' stdout lines on a thread, so waiting for a line can time out."""

    def __init__(self, process):
        self.process, self.lines, self.lock = process, [], threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            with self.lock:
                self.lines.append(line)

    def wait_for(self, pattern, timeout, what):
        deadline = time.time() + timeout
        while time.time() < deadline:
            with self.lock:
                for line in self.lines:
                    m = re.search(pattern, line)
                    if m:
                        return m
            if self.process.poll() is not None:
                raise Failure(f"{what} exited with {self.process.returncode}: {self.lines}")
            time.sleep(0.05)
        raise Failure(f"{what}: no line matching {pattern!r} within {timeout}s: {self.lines}")


def parse_exposition(text):
    """{(name, frozenset(labels)): value}, plus {name: help} and {name: type}."""
    samples, helps, types = {}, {}, {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            helps[name] = help_text
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            types[name] = kind
        elif line and not line.startswith("#"):
            m = re.match(r'([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)', line)
            check(m, f"/metrics: cannot parse sample line {line!r}")
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', m.group(3) or ""))
            samples[(m.group(1), labels)] = float(m.group(4))
    return samples, helps, types


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


class Dotsctl:
    def __init__(self, binary, server):
        self.binary, self.server = binary, server
        self.calls = {}  # (method, code) -> count, as the test made them

    def __call__(self, method, *args, expect_code="OK", input_file=None):
        cmd = [self.binary, *args, "--server", self.server, "--timeout", "60"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        self.calls[(method, expect_code)] = self.calls.get((method, expect_code), 0) + 1
        if expect_code == "OK":
            check(r.returncode == 0, f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr}")
            return json.loads(r.stdout) if r.stdout.strip().startswith("{") else r.stdout
        check(r.returncode == 1 and expect_code in r.stderr,
              f"{' '.join(cmd)}: want {expect_code}, got {r.returncode}: {r.stderr}")
        return None


def drive_run(ctl, work):
    """A short run; returns what the test did, for comparison with the metrics."""
    source = os.path.join(SRC, "data/oneshot-rlvr/questions.jsonl")
    questions, history = [], {}
    with open(source) as f:
        for line in f:
            q = json.loads(line)
            history[q["key"]] = q["history"]
            questions.append({k: q[k] for k in ("key", "prompt", "metadata", "prior") if k in q})
            if len(questions) == QUESTIONS:
                break
    pool = os.path.join(work, "questions.jsonl")
    with open(pool, "w") as f:
        f.writelines(json.dumps(q) + "\n" for q in questions)
    config = os.path.join(work, "config.json")
    with open(config, "w") as f:
        json.dump({"batch_size": 16, "group_size": GROUP_SIZE, "steps_per_round": 2,
                   "reference_size": 4, "lease_timeout_seconds": 2, "seed": 7,
                   "replay": {"capacity_groups": 64}}, f)
    ctl("CreateRun", "run", "create", RUN, "--config", config)
    ctl("UpsertQuestions", "pool", "load", RUN, "--questions", pool)
    ctl("GetRun", "run", "get", "no-such-run", expect_code="NOT_FOUND")

    did = {"replay_groups_served": 0, "replay_age_sum": 0, "fresh_reported": 0,
           "unreported": None}
    for step in range(STEPS):
        batch = ctl("NextBatch", "next", RUN, "--step", str(step), "--policy-version", str(step))
        check(batch["step"] == step, f"next --step {step}: got step {batch['step']}")
        for g in batch.get("replay", []):
            did["replay_groups_served"] += 1
            did["replay_age_sum"] += step - g["step"]
        lines = []
        items = batch["items"]
        if step == STEPS - 1:  # leave one question unreported: its lease expires
            did["unreported"] = items[-1]["key"]
            items = items[:-1]
        for item in items:
            rate = history[item["key"]][min(step, len(history[item["key"]]) - 1)]
            k = int(round(GROUP_SIZE * rate))
            lines.append(json.dumps({"key": item["key"], "policy_version": step,
                                     "rewards": [1.0] * k + [0.0] * (GROUP_SIZE - k),
                                     "payload_b64": "cm9sbG91dA=="}))
            did["fresh_reported"] += item["role"] == "fresh"
        report = os.path.join(work, f"report-{step}.jsonl")
        with open(report, "w") as f:
            f.write("\n".join(lines) + "\n")
        result = ctl("ReportRollouts", "report", RUN, "--step", str(step), "--file", report)
        check(result["accepted"] == len(lines) and not result["rejected"],
              f"report step {step}: {result}")
    time.sleep(2.5)  # lease_timeout_seconds = 2: the unreported question's lease expires
    return did


def check_scrape(text, metrics, stats, did, calls):
    samples, helps, types = parse_exposition(text)
    r = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                       text=True)
    check(r.returncode == 0, f"promtool check metrics: {r.stdout}{r.stderr}")
    for name, kind in metrics.items():
        if kind == "synthetic":
            continue
        check(types.get(name) == kind, f"/metrics: {name}: type {types.get(name)}, want {kind}")
        check(len(helps.get(name, "")) >= 10, f"/metrics: {name} has no HELP text")
        check(any(n.startswith(name) for n, _ in samples), f"/metrics: {name} has no samples")

    def run_value(name, **labels):
        v = value(samples, name, run=RUN, **labels)
        check(v is not None, f"/metrics: no {name}{{run={RUN!r}, {labels}}}")
        return v

    # Gauges and counters equal the run's own stats (dotsctl stats, same moment).
    for name, stat in [("dots_pool_questions", "pool_size"), ("dots_replay_groups", "replay_groups"),
                       ("dots_replay_bytes", "replay_bytes"),
                       ("dots_leases_outstanding", "leases_outstanding"),
                       ("dots_leases_expired_total", "leases_expired"),
                       ("dots_rounds_planned_total", "rounds_planned"),
                       ("dots_run_step", "step"), ("dots_policy_version", "policy_version")]:
        check(run_value(name) == stats[stat], f"{name} = {run_value(name)}, stats {stat} = {stats[stat]}")
    check(stats["pool_size"] == QUESTIONS and stats["step"] == STEPS - 1, f"stats: {stats}")
    check(stats["leases_expired"] >= 1, f"the unreported question's lease did not expire: {stats}")
    check(math.isclose(run_value("dots_effective_question_ratio"), stats["effective_ratio_last_step"]),
          "dots_effective_question_ratio differs from stats")
    check(0 < stats["effective_ratio_last_step"] <= 1, f"stats: {stats}")
    for outcome, stat in [("effective", "effective_groups"), ("solve_all", "solve_all_groups"),
                          ("solve_none", "solve_none_groups")]:
        check(run_value("dots_reported_groups_total", outcome=outcome) == stats[stat],
              f"dots_reported_groups_total{{outcome={outcome}}} != stats {stat}")
    uniform = run_value("dots_uniform_expected_effective_ratio")
    check(0 < uniform < 1, f"dots_uniform_expected_effective_ratio = {uniform}")
    # Histograms: planning once per planned round seen, ages and errors as the test made them.
    planning = run_value("dots_round_planning_seconds_count")
    check(1 <= planning <= stats["rounds_planned"], f"planning count {planning}")
    check(run_value("dots_round_planning_seconds_sum") > 0, "planning took no time")
    check(did["replay_groups_served"] > 0, "the run never replayed a group")
    check(run_value("dots_replay_age_steps_count") == did["replay_groups_served"],
          f"dots_replay_age_steps_count {run_value('dots_replay_age_steps_count')}, "
          f"test saw {did['replay_groups_served']} replayed groups")
    check(run_value("dots_replay_age_steps_sum") == did["replay_age_sum"],
          f"dots_replay_age_steps_sum {run_value('dots_replay_age_steps_sum')}, "
          f"want {did['replay_age_sum']}")
    check(run_value("dots_prediction_abs_error_count") == did["fresh_reported"],
          f"dots_prediction_abs_error_count {run_value('dots_prediction_abs_error_count')}, "
          f"test reported {did['fresh_reported']} fresh groups")
    check(run_value("dots_prediction_abs_error_bucket", le="1") == did["fresh_reported"],
          "a prediction error outside [0, 1]")
    # RPCs: every call the test made, with its code.
    for (method, code), n in calls.items():
        got = value(samples, "dots_grpc_requests_total", method=method, code=code)
        check(got == n, f"dots_grpc_requests_total{{method={method},code={code}}} = {got}, want {n}")
        count = value(samples, "dots_grpc_request_duration_seconds_count", method=method)
        check(count is not None and count >= n, f"no duration histogram for {method}")
    # Process.
    now = time.time()
    check(value(samples, "process_resident_memory_bytes") > 1e6, "RSS")
    check(value(samples, "process_open_fds") >= 4, "open fds")
    check(value(samples, "process_cpu_seconds_total") > 0, "cpu")
    start = value(samples, "process_start_time_seconds")
    check(now - 600 < start <= now + 1, f"process_start_time_seconds {start}, now {now}")
    check(any(n == "dots_build_info" and v == 1 for (n, _), v in samples.items()), "build info")
    return samples


def prometheus_query(port, expr):
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    try:
        reply = json.loads(http_get(url))
    except urllib.error.HTTPError as e:
        reply = json.loads(e.read().decode())
    return reply


def check_prometheus(work, metrics_port, expected_ratio):
    shutil_copy(os.path.join(SRC, "deploy/prometheus/alerts.yml"), os.path.join(work, "alerts.yml"))
    with open(os.path.join(work, "prometheus.yml"), "w") as f:
        yaml.safe_dump({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                        "rule_files": ["alerts.yml"],
                        "scrape_configs": [{"job_name": "dots", "static_configs": [
                            {"targets": [f"127.0.0.1:{metrics_port}"]}]}]}, f)
    check(subprocess.run(["promtool", "check", "config", os.path.join(work, "prometheus.yml")],
                         capture_output=True).returncode == 0, "generated prometheus.yml")
    for attempt in range(3):
        port = free_port()
        log = open(os.path.join(work, "prometheus.log"), "w")
        prom = subprocess.Popen(
            ["prometheus", f"--config.file={work}/prometheus.yml",
             f"--storage.tsdb.path={work}/tsdb", f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 30
            ready = False
            while time.time() < deadline and prom.poll() is None:
                try:
                    ready = http_get(f"http://127.0.0.1:{port}/-/ready", 2).strip() != ""
                    break
                except OSError:
                    time.sleep(0.2)
            if prom.poll() is not None:
                continue  # the port was taken in between: try another
            check(ready, "prometheus did not become ready")
            return query_prometheus(port, expected_ratio)
        finally:
            prom.terminate()
            try:
                prom.wait(10)
            except subprocess.TimeoutExpired:
                prom.kill()
    raise Failure("prometheus could not start: " + open(os.path.join(work, "prometheus.log")).read())


def shutil_copy(a, b):
    with open(a) as f, open(b, "w") as g:
        g.write(f.read())


def query_prometheus(port, expected_ratio):
    # Wait until the ratio is there and at least three scrapes happened (rate() needs two).
    deadline = time.time() + 60
    got = None
    while time.time() < deadline:
        reply = prometheus_query(port, f'dots_effective_question_ratio{{run="{RUN}"}}')
        result = reply.get("data", {}).get("result", [])
        scrapes = prometheus_query(port, 'count_over_time(up{job="dots"}[1m])')
        n = scrapes.get("data", {}).get("result", [])
        if result and n and float(n[0]["value"][1]) >= 4:
            got = float(result[0]["value"][1])
            break
        time.sleep(0.5)
    check(got is not None, "Prometheus never returned dots_effective_question_ratio")
    check(math.isclose(got, expected_ratio), f"Prometheus says {got}, dots reported {expected_ratio}")
    print(f"prometheus: dots_effective_question_ratio{{run={RUN!r}}} = {got} (dots: {expected_ratio})")
    up = prometheus_query(port, 'up{job="dots"}')["data"]["result"]
    check(up and up[0]["value"][1] == "1", f"up{{job=dots}}: {up}")

    # Every dashboard query runs; panel queries return data.
    with open(os.path.join(SRC, "deploy/grafana/dots-dashboard.json")) as f:
        dashboard = json.load(f)
    empty = []
    exprs = dashboard_expressions(dashboard, "dots-dashboard.json")
    for where, expr in exprs:
        e = expr.replace("$__rate_interval", "1m").replace('"$run"', f'"{RUN}"')
        e = substitute_grafana_variables(e)
        reply = prometheus_query(port, e)
        check(reply.get("status") == "success", f"{where}: {e}: {reply.get('error')}")
        if "panel" in where and not reply["data"]["result"]:
            empty.append(f"{where}: {e}")
    check(not empty, "dashboard queries without data:\n" + "\n".join(empty))
    print(f"prometheus: {len(exprs)} dashboard expressions evaluated, panel queries have data")
    # The replica view: one series per replica, each naming its instance.
    replica_exprs = [(p.get("title"), t["expr"]) for p in replica_panels(dashboard) or []
                     for t in p.get("targets", []) if t.get("expr")]
    check(replica_exprs, "the dashboard has no replica view")
    for title, expr in replica_exprs:
        e = substitute_grafana_variables(expr.replace("$__rate_interval", "1m"))
        result = prometheus_query(port, e)["data"]["result"]
        instances = [r["metric"].get("instance") for r in result]
        check(instances and all(instances) and len(set(instances)) == len(instances),
              f"replica view {title!r}: want one series per instance, got {instances}: {e}")
    print(f"prometheus: {len(replica_exprs)} replica-view queries give one series per replica")

    # The alert rules evaluate cleanly against real data, and nothing fires.
    deadline = time.time() + 20
    while time.time() < deadline:
        rules = json.loads(http_get(f"http://127.0.0.1:{port}/api/v1/rules"))["data"]["groups"]
        states = [(r["name"], r.get("health"), r.get("lastError", "")) for g in rules for r in g["rules"]]
        if states and all(h != "unknown" for _, h, _ in states):
            break
        time.sleep(0.5)
    bad = [s for s in states if s[1] != "ok"]
    check(states and not bad, f"alert rules not evaluated cleanly: {bad or 'none loaded'}")
    firing = prometheus_query(port, 'ALERTS{alertstate="firing"}')["data"]["result"]
    check(not firing, f"alerts firing on a healthy server: {firing}")
    print(f"prometheus: {len(states)} alert rules healthy, none firing")


def flagfile_from_configmap(work):
    with open(os.path.join(SRC, "deploy/k8s/configmap.yaml")) as f:
        flags = yaml.safe_load(f)["data"]["dots.flags"]
    path = os.path.join(work, "dots.flags")
    with open(path, "w") as f:
        f.write(flags)
    return path


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    server_bin, dotsctl_bin = map(os.path.abspath, sys.argv[1:])
    metrics = load_metric_list(os.path.join(SRC, "deploy/metrics.txt"))
    with tempfile.TemporaryDirectory() as work:
        server = subprocess.Popen(
            [server_bin, "--listen=127.0.0.1:0", "--metrics_listen=127.0.0.1:0",
             f"--state_dir={work}/state", f"--flagfile={flagfile_from_configmap(work)}",
             "--drain_seconds=5"],
            stdout=subprocess.PIPE, stderr=open(os.path.join(work, "server.log"), "w"), text=True)
        try:
            output = LineReader(server)
            grpc = output.wait_for(r"dots-server listening on (\S+)", 30, "dots-server")
            m = output.wait_for(r"dots-server metrics on \S+:(\d+)", 10,
                                "dots-server (is server/metrics.h wired into the server? It "
                                "prints 'dots-server metrics on HOST:PORT' once it is)")
            metrics_port = int(m.group(1))
            ctl = Dotsctl(dotsctl_bin, grpc.group(1))
            did = drive_run(ctl, work)
            stats = ctl("GetRunStats", "stats", RUN)
            text = http_get(f"http://127.0.0.1:{metrics_port}/metrics")
            check_scrape(text, metrics, stats, did, ctl.calls)
            print(f"/metrics: {len(metrics)} metrics present, values match dotsctl stats {stats}")
            check_prometheus(work, metrics_port, stats["effective_ratio_last_step"])

            ctl("DeleteRun", "run", "delete", RUN)
            after = http_get(f"http://127.0.0.1:{metrics_port}/metrics")
            check(f'run="{RUN}"' not in after, "series of the deleted run remain")
            server.send_signal(signal.SIGTERM)
            check(server.wait(30) == 0, f"dots-server exited with {server.returncode}")
        except Failure as e:
            print(f"live_metrics_test: FAILED: {e}", file=sys.stderr)
            with open(os.path.join(work, "server.log")) as f:
                print("--- dots-server stderr ---\n" + f.read()[-4000:], file=sys.stderr)
            sys.exit(1)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
    print("live_metrics_test: OK")


if __name__ == "__main__":
    main()
