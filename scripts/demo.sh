#!/usr/bin/env bash
# `make demo`: the selection quality of dots on real data, next to its baselines.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${1:-build}"
DATA=data/oneshot-rlvr/questions.jsonl
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"

cat <<MSG
== dots demo ==
Replaying a real GRPO run of Qwen2.5-Math-1.5B over 1,209 math questions ($DATA):
at every epoch dots predicts each question's current success rate, hands out 256 questions
(32 of them reference questions), and receives the real observed outcome of each. A question
is "effective" when 0 < success < 1: only those carry GRPO gradient. Uniform selection hands
out about 51 % effective questions; an oracle would hand out 100 %.

MSG
"$BUILD_DIR/bin/dots-bench" trajectory --data "$DATA" --seeds 1-5
echo
echo "Same, without the static 7B-model priors (cold start from text similarity only):"
"$BUILD_DIR/bin/dots-bench" trajectory --data "$DATA" --seeds 1-5 --no-prior

echo
echo "Offline estimation with dotsctl: label 200 questions with their first observed success rate,"
echo "predict the rest (first 5 lines shown):"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
head -n 200 "$DATA" | sed -E 's/^\{"key": ("[^"]*").*"history": \[([0-9.]+).*$/{"key": \1, "success_rate": \2}/' \
  > "$tmp/labels.jsonl"
"$BUILD_DIR/bin/dotsctl" estimate --questions "$DATA" --labels "$tmp/labels.jsonl" 2>/dev/null \
  | sed -n '201,205p'
echo
echo "More: README.md (benchmark table), dots-bench trajectory --help, dotsctl --help."
