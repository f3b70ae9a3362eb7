#!/usr/bin/env bash
# End-to-end test of dotsctl against a real dots-server: a whole small run driven from the shell.
#
#   tests/e2e/dotsctl_e2e_test.sh PATH/TO/dots-server PATH/TO/dotsctl
#
# Starts dots-server on 127.0.0.1:0 (reading the port from its "listening on" line), then: run
# create, pool load (with a malformed line and an .npy), four steps of next -> report (including
# replayed groups whose payloads must come back byte-identical), duplicates, stats, estimates, run
# list/get/delete, and the exit codes of failures (1, gRPC code on stderr) and usage errors (2).
# Prints "dotsctl e2e: N passed, M failed" and exits non-zero on any failure.
set -u

SERVER_BIN=${1:?usage: $0 DOTS_SERVER DOTSCTL}
DOTSCTL_BIN=${2:?usage: $0 DOTS_SERVER DOTSCTL}
PY=/usr/bin/python3  # Debian's python with numpy (the first python3 on PATH may lack it)

WORK=$(mktemp -d)
STATE=$(mktemp -d)
SERVER_PID=""
cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null
    wait "$SERVER_PID" 2>/dev/null
  fi
  rm -rf "$WORK" "$STATE"
}
trap cleanup EXIT

PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + 1)); echo "ok   - $1"; }
fail() { FAILED=$((FAILED + 1)); echo "FAIL - $1" >&2; }
# check NAME COMMAND...: passes when COMMAND exits 0.
check() {
  local name=$1
  shift
  if "$@"; then pass "$name"; else fail "$name"; fi
}
# expect_exit NAME WANT_RC GOT_RC FILE PATTERN: passes when GOT_RC is WANT_RC and FILE (the
# command's stderr) matches the grep PATTERN.
expect_exit() {
  local name=$1 want=$2 got=$3 file=$4 pattern=$5
  if [[ "$got" -eq "$want" ]] && grep -q -- "$pattern" "$file"; then
    pass "$name"
  else
    fail "$name (exit $got, stderr: $(head -c 300 "$file"))"
  fi
}
# py EXPR-SCRIPT FILE...: runs a python snippet; exit status is the result.
py() { "$PY" -c "$@"; }

# ---- start the server on a free port ----
"$SERVER_BIN" --listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 --state_dir="$STATE" >"$WORK/server.out" 2>"$WORK/server.err" &
SERVER_PID=$!
PORT=""
for _ in $(seq 1 100); do
  PORT=$(sed -n 's/^dots-server listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' \
    "$WORK/server.out")
  [[ -n "$PORT" ]] && break
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then break; fi
  sleep 0.1
done
if [[ -z "$PORT" ]]; then
  echo "dots-server did not report a port; stderr:" >&2
  cat "$WORK/server.err" >&2
  echo "dotsctl e2e: 0 passed, 1 failed"
  exit 1
fi
export DOTS_SERVER="127.0.0.1:$PORT"
unset DOTS_TOKEN
ctl() { "$DOTSCTL_BIN" "$@"; }

# ---- run create ----
cat >"$WORK/config.json" <<'EOF'
{"batch_size": 8, "group_size": 4, "reference_size": 2, "seed": 3,
 "estimator": {"mode": "history"}}
EOF
ctl run create e2e --config "$WORK/config.json" >"$WORK/create.json"
check "run create exits 0" test $? -eq 0
check "run create prints run_id and the canonical config object" py '
import json, sys
d = json.load(open(sys.argv[1]))
assert set(d) == {"run_id", "config"}, d.keys()
assert d["run_id"] == "e2e"
c = d["config"]
assert isinstance(c, dict) and c["batch_size"] == 8 and c["group_size"] == 4
assert c["estimator"]["mode"] == "history" and "fresh_fraction" in c
' "$WORK/create.json"

ctl run create e2e --config "$WORK/config.json" >/dev/null 2>"$WORK/dup.err"
rc=$?
expect_exit "run create of an existing run exits 1 with ALREADY_EXISTS" \
  1 "$rc" "$WORK/dup.err" \
  '^dotsctl: ALREADY_EXISTS: '

echo '{"batch_size": 0}' >"$WORK/bad_config.json"
ctl run create e2e-bad --config "$WORK/bad_config.json" >/dev/null 2>"$WORK/badcfg.err"
rc=$?
expect_exit "a bad config exits 1 with INVALID_ARGUMENT naming the key" \
  1 "$rc" "$WORK/badcfg.err" \
  '^dotsctl: INVALID_ARGUMENT: .*batch_size'

# ---- pool load: 60 questions, line 11 malformed, embeddings for all 61 question lines ----
py '
import json, sys
import numpy as np
with open(sys.argv[1], "w") as f:
    for i in range(60):
        if i == 10:
            f.write("{\"key\": \"broken\", \"prompt\": 17}\n")  # line 11: prompt not a string
        f.write(json.dumps({"key": "q%d" % i, "prompt": "What is %d + %d?" % (i, i),
                            "metadata": {"answer": 2 * i}, "prior": (i % 5) / 5}) + "\n")
        if i == 30:
            f.write("\n")  # a blank line is skipped, not counted
rng = np.random.default_rng(0)
np.save(sys.argv[2], rng.standard_normal((61, 8)).astype(np.float32))
np.save(sys.argv[3], rng.standard_normal((60, 8)).astype(np.float32))
' "$WORK/pool.jsonl" "$WORK/pool.npy" "$WORK/short.npy"

ctl pool load e2e --questions "$WORK/pool.jsonl" --embeddings "$WORK/short.npy" \
  >/dev/null 2>"$WORK/short.err"
rc=$?
expect_exit "pool load with an .npy of the wrong row count exits 1 naming both files" \
  1 "$rc" "$WORK/short.err" \
  'short.npy: 60 rows, but .*pool.jsonl has 61'

ctl pool load e2e --questions "$WORK/pool.jsonl" --embeddings "$WORK/pool.npy" \
  >"$WORK/load.json" 2>"$WORK/load.err"
check "pool load exits 0" test $? -eq 0
check "pool load adds 60 and rejects line 11 with the field" py '
import json, sys
d = json.load(open(sys.argv[1]))
assert set(d) == {"added", "updated", "rejected"}, d
assert d["added"] == 60 and d["updated"] == 0, d
assert len(d["rejected"]) == 1, d
r = d["rejected"][0]
assert r["line"] == 11 and "prompt" in r["error"], r
' "$WORK/load.json"
check "pool load reports progress on stderr" grep -q "60/60" "$WORK/load.err"

ctl run get e2e >"$WORK/get.json"
check "run get shows pool_size 60 and the config" py '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["run_id"] == "e2e" and d["pool_size"] == 60 and d["config"]["batch_size"] == 8, d
' "$WORK/get.json"

# ---- training: steps 0..3 (two rounds), every item reported ----
# Rewards: half the items mixed (informative, replayable) and half all-ones; payload = bytes
# derived from key and step, carried as base64.
make_report() {  # make_report NEXT_JSON STEP OUT_JSONL
  py '
import base64, json, sys
batch = json.load(open(sys.argv[1]))
step = int(sys.argv[2])
with open(sys.argv[3], "w") as out:
    for i, item in enumerate(batch["items"]):
        mixed = i % 2 == 0
        payload = ("%s@%d|" % (item["key"], step)).encode() + bytes(range(256)) * (i + 1)
        out.write(json.dumps({"key": item["key"],
                              "rewards": [1, 0, 1, 0] if mixed else [1, 1, 1, 1],
                              "policy_version": step,
                              "payload_b64": base64.b64encode(payload).decode()}) + "\n")
' "$@"
}

steps_ok=1
for step in 0 1 2 3; do
  if ! ctl next e2e --step "$step" --policy-version "$step" >"$WORK/next$step.json" \
    2>"$WORK/next$step.err"; then
    steps_ok=0
    cat "$WORK/next$step.err" >&2
    break
  fi
  make_report "$WORK/next$step.json" "$step" "$WORK/report$step.jsonl"
  if ! ctl report e2e --step "$step" --file "$WORK/report$step.jsonl" \
    >"$WORK/report$step.json"; then
    steps_ok=0
    break
  fi
done
check "four steps of next -> report succeed" test "$steps_ok" -eq 1

check "next prints the documented shape" py '
import json, sys
d = json.load(open(sys.argv[1]))
for k in ("run_id", "step", "round", "items", "replay", "reference_batch", "batch_size"):
    assert k in d, k
assert d["run_id"] == "e2e" and d["step"] == 0 and d["round"] == 0 and d["batch_size"] == 8
assert len(d["items"]) == 8 and d["replay"] == []
for it in d["items"]:
    assert set(it) == {"key", "role", "prompt", "metadata"}, it
    assert it["role"] in ("fresh", "reference")
    i = int(it["key"][1:])
    assert it["prompt"] == "What is %d + %d?" % (i, i) and it["metadata"] == {"answer": 2 * i}
' "$WORK/next0.json"

# Only handed-out items are rolled out and reported; replayed groups are not.
check "every report is accepted in full" py '
import json, sys
for step in range(4):
    items = len(json.load(open(sys.argv[1] + "/next%d.json" % step))["items"])
    d = json.load(open(sys.argv[1] + "/report%d.json" % step))
    assert set(d) == {"accepted", "duplicates", "rejected"}, d
    assert d == {"accepted": items, "duplicates": 0, "rejected": []}, (step, d)
' "$WORK"

# Round 1 (steps 2, 3) replays informative groups of earlier steps: same key, rewards, step,
# policy_version and byte-identical payload as reported.
check "replayed groups come back byte-identical" py '
import json, sys
reported = {}
for step in (0, 1, 2):
    for line in open(sys.argv[1] + "/report%d.jsonl" % step):
        r = json.loads(line)
        reported[(r["key"], step)] = r
n = 0
for step in (2, 3):
    d = json.load(open(sys.argv[1] + "/next%d.json" % step))
    assert len(d["items"]) + len(d["replay"]) == 8, d
    for g in d["replay"]:
        assert set(g) == {"key", "step", "policy_version", "rewards", "payload_b64"}, g
        r = reported[(g["key"], g["step"])]
        assert g["step"] < step and g["rewards"] == r["rewards"], (g, r)
        assert g["policy_version"] == r["policy_version"]
        assert g["payload_b64"] == r["payload_b64"], g["key"]
        n += 1
assert n > 0, "no replay in round 1"
' "$WORK"

ctl report e2e --step 0 --file "$WORK/report0.jsonl" >"$WORK/dup.json"
check "reporting step 0 again counts 8 duplicates" py '
import json, sys
d = json.load(open(sys.argv[1]))
assert d == {"accepted": 0, "duplicates": 8, "rejected": []}, d
' "$WORK/dup.json"

{ head -n 2 "$WORK/report3.jsonl"; echo '{"key": "q1", "rewards": [1, 0], "payload": "x"}'; } \
  >"$WORK/bad_report.jsonl"
ctl report e2e --step 3 --file "$WORK/bad_report.jsonl" >/dev/null 2>"$WORK/bad_report.err"
rc=$?
expect_exit "a malformed report line exits 1 naming file:line and field" \
  1 "$rc" "$WORK/bad_report.err" \
  'bad_report.jsonl:3: field "payload"'

ctl stats e2e >"$WORK/stats.json"
check "stats: step 3, round 1, every report counted, 8 duplicates, nothing leased" py '
import json, sys
d = json.load(open(sys.argv[1]))
reported = sum(len(json.load(open(sys.argv[2] + "/next%d.json" % s))["items"]) for s in range(4))
for k in ("step", "round", "pool_size", "reported_groups", "effective_ratio_last_step",
          "replay_groups", "replay_bytes", "leases_outstanding", "leases_expired"):
    assert k in d, k
assert d["step"] == 3 and d["round"] == 1 and d["pool_size"] == 60, d
assert d["reported_groups"] == reported and d["duplicate_reports"] == 8, (reported, d)
assert d["replayed_groups"] == sum(
    len(json.load(open(sys.argv[2] + "/next%d.json" % s))["replay"]) for s in range(4)), d
assert d["leases_outstanding"] == 0 and d["replay_groups"] > 0 and d["replay_bytes"] > 0, d
assert 0 <= d["effective_ratio_last_step"] <= 1
' "$WORK/stats.json" "$WORK"

ctl estimates e2e >"$WORK/estimates.jsonl"
check "estimates: one JSON line per question, observed ones counted" py '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 60, len(rows)
for r in rows:
    assert set(r) == {"key", "p_hat", "observations", "last_policy_version"}, r
    assert 0 <= r["p_hat"] <= 1
assert sum(1 for r in rows if r["observations"] > 0) > 0
assert all(r["last_policy_version"] == -1 for r in rows if r["observations"] == 0)
' "$WORK/estimates.jsonl"

first_key=$(py 'import json,sys; print(json.load(open(sys.argv[1]))["items"][0]["key"])' \
  "$WORK/next0.json")
ctl estimates e2e --keys "q59,$first_key" >"$WORK/some.jsonl"
check "estimates --keys returns those keys in order" py '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert [r["key"] for r in rows] == ["q59", sys.argv[2]], rows
assert rows[1]["observations"] >= 1
' "$WORK/some.jsonl" "$first_key"

# ---- run list / delete / errors ----
ctl run create other >/dev/null
ctl run list >"$WORK/list.json"
check "run list shows both runs in id order" py '
import json, sys
d = json.load(open(sys.argv[1]))
assert [r["run_id"] for r in d["runs"]] == ["e2e", "other"], d
assert d["runs"][0]["pool_size"] == 60
' "$WORK/list.json"

ctl run delete other >"$WORK/delete.json"
check "run delete prints deleted: true" py '
import json, sys
assert json.load(open(sys.argv[1])) == {"run_id": "other", "deleted": True}
' "$WORK/delete.json"

ctl stats other >/dev/null 2>"$WORK/notfound.err"
rc=$?
expect_exit "an unknown run exits 1 with NOT_FOUND on stderr" 1 "$rc" "$WORK/notfound.err" \
  '^dotsctl: NOT_FOUND: .*other'

ctl next missing --step 0 >/dev/null 2>"$WORK/next_missing.err"
rc=$?
expect_exit "next on an unknown run exits 1 with NOT_FOUND" 1 "$rc" "$WORK/next_missing.err" \
  '^dotsctl: NOT_FOUND: '

ctl next e2e >/dev/null 2>&1
check "next without --step is a usage error (exit 2)" test $? -eq 2
ctl frobnicate >/dev/null 2>&1
check "an unknown command is a usage error (exit 2)" test $? -eq 2
ctl run get >/dev/null 2>&1
check "run get without RUN is a usage error (exit 2)" test $? -eq 2

ctl --help >"$WORK/help.txt"
help_ok=1
for c in "run create" "run list" "pool load" "next RUN" "report RUN" "estimates RUN" "stats RUN"; do
  grep -q -- "$c" "$WORK/help.txt" || help_ok=0
done
check "dotsctl --help lists the commands" test "$help_ok" -eq 1
ctl next --help >"$WORK/next_help.txt"
help_ok=1
for f in --step --rank --world-size --policy-version --server --token --timeout --json; do
  grep -q -- "$f" "$WORK/next_help.txt" || help_ok=0
done
check "dotsctl next --help explains every flag" test "$help_ok" -eq 1

# Connection flags work before the command too, and an unreachable server is UNAVAILABLE.
ctl --server "127.0.0.1:$PORT" run get e2e >/dev/null
check "--server before the command" test $? -eq 0
DOTS_SERVER=127.0.0.1:1 ctl run list --timeout 0.5 >/dev/null 2>"$WORK/unavail.err"
rc=$?
expect_exit "an unreachable server exits 1 with UNAVAILABLE" 1 "$rc" "$WORK/unavail.err" \
  '^dotsctl: UNAVAILABLE: '

# ---- run export / import ----
ctl run export e2e --out "$WORK/e2e.dotsrun" >"$WORK/export.json"
check "run export writes the archive and prints its size" py '
import json, os, sys
d = json.load(open(sys.argv[1]))
assert d["run_id"] == "e2e" and d["bytes"] == os.path.getsize(sys.argv[2]) > 0, d
' "$WORK/export.json" "$WORK/e2e.dotsrun"
ctl run import "$WORK/e2e.dotsrun" --as e2e-copy >"$WORK/import.json"
check "run import --as creates the copy with the whole pool" py '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["run_id"] == "e2e-copy" and d["pool_size"] == 60, d
' "$WORK/import.json"
ctl stats e2e-copy >"$WORK/stats_copy.json"
check "the imported run has the exported run's stats" cmp "$WORK/stats.json" "$WORK/stats_copy.json"
head -c 200 "$WORK/e2e.dotsrun" >"$WORK/truncated.dotsrun"
ctl run import "$WORK/truncated.dotsrun" --as e2e-bad >/dev/null 2>"$WORK/import_bad.err"
rc=$?
expect_exit "a truncated archive exits 1 with INVALID_ARGUMENT" 1 "$rc" "$WORK/import_bad.err" \
  '^dotsctl: INVALID_ARGUMENT: .*truncated'

# ---- graceful stop ----
kill -TERM "$SERVER_PID"
wait "$SERVER_PID"
rc=$?
SERVER_PID=""
check "dots-server exits 0 on SIGTERM" test "$rc" -eq 0

# ---- restart on the same state directory: everything is still there ----
"$SERVER_BIN" --listen=127.0.0.1:0 --metrics_listen= --state_dir="$STATE" >"$WORK/server2.out" 2>"$WORK/server2.err" &
SERVER_PID=$!
PORT=""
for _ in $(seq 1 100); do
  PORT=$(sed -n 's/^dots-server listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' \
    "$WORK/server2.out")
  [[ -n "$PORT" ]] && break
  sleep 0.1
done
export DOTS_SERVER="127.0.0.1:$PORT"
ctl stats e2e >"$WORK/stats_restarted.json"
check "after a restart the run's stats are unchanged" cmp "$WORK/stats.json" "$WORK/stats_restarted.json"
ctl next e2e --step 3 >"$WORK/next3_restarted.json"
check "after a restart step 3 is served identically" cmp "$WORK/next3.json" "$WORK/next3_restarted.json"
kill -TERM "$SERVER_PID"
wait "$SERVER_PID"
SERVER_PID=""

echo "dotsctl e2e: $PASSED passed, $FAILED failed"
[[ $FAILED -eq 0 ]]
