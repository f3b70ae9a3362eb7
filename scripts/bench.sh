#!/usr/bin/env bash
# `make bench`: performance benchmarks (Google Benchmark) and the real-data trajectory benchmark.
# Performance figures are ratios against baselines measured by the same binary in the same run
# (the machine's SGEMM peak for scoring), never absolute times alone.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${1:-build}"
shift || true
# Spinning OpenMP workers fight OpenBLAS/Eigen threads for the cores; passive waiting avoids it.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
# OpenBLAS 0.3.21 does not recognise AVX-512 Zen parts; only safe where avx512f exists.
if [ -z "${OPENBLAS_CORETYPE:-}" ] && grep -qw avx512f /proc/cpuinfo; then
  export OPENBLAS_CORETYPE=SkylakeX
fi
echo "== BLAS: $(ldd "$BUILD_DIR/bin/dots-perf" | awk '/libopenblas/ {print $3}')"
echo "== scoring and selection (bench/perf)"
"$BUILD_DIR/bin/dots-perf" --benchmark_counters_tabular=true "$@"
echo
echo "== trajectory replay (bench/trajectory), seeds 1-5"
"$BUILD_DIR/bin/dots-bench" trajectory --data data/oneshot-rlvr/questions.jsonl --seeds 1-5
"$BUILD_DIR/bin/dots-bench" trajectory --data data/oneshot-rlvr/questions.jsonl --seeds 1-5 --no-prior
