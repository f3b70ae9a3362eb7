#!/usr/bin/env bash
# `make demo`: dots on real data next to its baselines, then a real GRPO training loop driven by a
# live dots-server (examples/tiny_grpo), then the paper's pipeline with a small transformer
# (examples/lm_grpo --quick). Usage: scripts/demo.sh [BUILD_DIR] (default build):
# binaries from BUILD_DIR/bin, Python stubs from BUILD_DIR/python. A few minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${1:-build}"
BIN="$BUILD_DIR/bin"
DATA=data/oneshot-rlvr/questions.jsonl
PY=/usr/bin/python3  # Debian's numpy, grpcio and matplotlib are visible only to it
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
OUT="${DEMO_OUT:-$BUILD_DIR/demo}"
mkdir -p "$OUT"

tmp=$(mktemp -d)
server_pid=""
stop_server() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid"
    local code=0
    wait "$server_pid" || code=$?
    server_pid=""
    return "$code"
  fi
}
cleanup() {
  stop_server || true
  rm -rf "$tmp"
}
trap cleanup EXIT

cat <<MSG
== dots demo, part 1: selection quality on real data ==
Replaying a real GRPO run of Qwen2.5-Math-1.5B over 1,209 math questions ($DATA):
at every epoch dots predicts each question's current success rate, hands out 256 questions
(32 of them reference questions), and receives the real observed outcome of each. A question
is "effective" when 0 < success < 1: only those carry GRPO gradient. Uniform selection hands
out about 51 % effective questions; an oracle would hand out 100 %.

MSG
"$BIN/dots-bench" trajectory --data "$DATA" --seeds 1-5
echo
echo "Same, without the static 7B-model priors (cold start from text similarity only):"
"$BIN/dots-bench" trajectory --data "$DATA" --seeds 1-5 --no-prior

echo
echo "Offline estimation with dotsctl: label 200 questions with their first observed success rate,"
echo "predict the rest (first 5 lines shown):"
head -n 200 "$DATA" | sed -E 's/^\{"key": ("[^"]*").*"history": \[([0-9.]+).*$/{"key": \1, "success_rate": \2}/' \
  > "$tmp/labels.jsonl"
"$BIN/dotsctl" estimate --questions "$DATA" --labels "$tmp/labels.jsonl" 2>/dev/null \
  | sed -n '201,205p'

cat <<MSG

== dots demo, part 2: a real GRPO loop driven by a live dots-server ==
examples/tiny_grpo trains a small numpy policy on multi-step toy questions (8,000 in the pool,
generated from the seed and uploaded with their features as embeddings) with GRPO, G = 8:
once with the dots selector plus rollout replay (dots_rr), once with uniform selection and
no replay (the GRPO baseline), and once selecting on the exact success rates (oracle, the
ceiling of the effective ratio), 3 seeds each. See examples/tiny_grpo/README.md.

MSG
"$BIN/dots-server" --listen=127.0.0.1:0 --metrics_listen=127.0.0.1:0 \
  --state_dir="$tmp/state" >"$tmp/server.out" 2>"$tmp/server.err" &
server_pid=$!
address=""
for _ in $(seq 1 300); do
  address=$(sed -n 's/^dots-server listening on \(.*\)$/\1/p' "$tmp/server.out")
  [ -n "$address" ] && break
  if ! kill -0 "$server_pid" 2>/dev/null; then break; fi
  sleep 0.1
done
if [ -z "$address" ]; then
  echo "demo: dots-server did not start:" >&2
  cat "$tmp/server.err" >&2
  exit 1
fi
sleep 0.2  # the metrics line follows the listening line
metrics=$(sed -n 's/^dots-server metrics on \(.*\)$/\1/p' "$tmp/server.out")
echo "dots-server listening on $address (metrics: http://$metrics/metrics, state: $tmp/state)"
echo

PYTHONPATH="$BUILD_DIR/python:client/python" "$PY" examples/tiny_grpo/tiny_grpo.py \
  --server "$address" --seeds 3 --steps 150 --arms dots_rr,uniform,oracle \
  --out "$OUT/tiny_grpo" --log-every 50

if [ -n "$metrics" ]; then
  echo
  echo "From the server's Prometheus metrics (http://$metrics/metrics), dots_reported_groups_total:"
  "$PY" - "$metrics" <<'PYCODE' || true
import re, sys, urllib.request
text = urllib.request.urlopen(f"http://{sys.argv[1]}/metrics", timeout=5).read().decode()
counts = {}
for m in re.finditer(r'^dots_reported_groups_total\{outcome="(\w+)",run="([^"]+)"\} (\S+)$', text,
                     re.M):
    counts.setdefault(m.group(2), {})[m.group(1)] = float(m.group(3))
for run, c in sorted(counts.items()):
    total = sum(c.values())
    print(f"  {run}: {total:6.0f} groups reported, {c.get('effective', 0):6.0f} effective "
          f"({100 * c.get('effective', 0) / max(total, 1):.0f} %), "
          f"{c.get('solve_all', 0):.0f} all-correct, {c.get('solve_none', 0):.0f} all-wrong")
PYCODE
fi

cat <<MSG

== dots demo, part 3: the paper's pipeline with a small transformer ==
examples/lm_grpo pre-trains a 2-layer transformer on arithmetic questions written in words
(cached under $BUILD_DIR/lm_grpo_cache after the first run), embeds the pool with its hidden
states, labels the pool with other models, trains the paper's adapter with dotsctl, then runs
GRPO (G = 8) with uniform selection, dots (paper mode, trained adapter), dots + rollout replay
and dots with an online adapter, one seed, few steps (--quick). See examples/lm_grpo/README.md.

MSG
code=0
PYTHONPATH="$BUILD_DIR/python:client/python" "$PY" examples/lm_grpo/lm_grpo.py \
  --server "$address" --dotsctl "$BIN/dotsctl" --cache "$BUILD_DIR/lm_grpo_cache" --quick \
  --seeds 1 --out "$OUT/lm_grpo" --log-every 8 || code=$?

echo
echo "Stopping dots-server (SIGTERM)..."
stop_server || code=$?
echo "dots-server exited with status $code"
echo
echo "tiny_grpo's table: $OUT/tiny_grpo/table.md; lm_grpo's tables: $OUT/lm_grpo/table.md."
echo "More: README.md, examples/tiny_grpo/README.md, examples/lm_grpo/README.md,"
echo "dots-bench trajectory --help, dotsctl --help."
exit "$code"
