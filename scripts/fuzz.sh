#!/usr/bin/env bash
# Builds the libFuzzer targets of fuzz/ with AddressSanitizer and UndefinedBehaviorSanitizer
# (clang-14) in their own build directory, then runs each for FUZZ_SECONDS seconds on a COPY of
# its seed corpus (fuzz/corpus/<target>/ is never written). Fails if any target crashes, leaks,
# times out on an input, trips a sanitizer or violates one of its invariants; the input is then
# kept under <build-dir>/fuzz-work/<target>/artifacts/ and the log next to it.
#
#   scripts/fuzz.sh [build-dir]            (default build-fuzz)
#   FUZZ_SECONDS=600 scripts/fuzz.sh       seconds per target (default 30)
#   FUZZ_TARGETS="npy_fuzz rpc_fuzz" ...   a subset (default: all nine)
#   FUZZ_ARGS="-jobs=2 -workers=2" ...     extra libFuzzer flags
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${1:-build-fuzz}"
FUZZ_SECONDS="${FUZZ_SECONDS:-30}"
ALL_TARGETS="json_fuzz run_config_fuzz npy_fuzz safetensors_fuzz jsonl_pool_fuzz run_archive_fuzz"
ALL_TARGETS="$ALL_TARGETS rpc_fuzz labels_fuzz adapter_fuzz"
FUZZ_TARGETS="${FUZZ_TARGETS:-$ALL_TARGETS}"
FUZZ_ARGS="${FUZZ_ARGS:-}"

if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
  # RelWithDebInfo: optimised like the real server, with line numbers in sanitizer reports.
  CC=clang-14 CXX=clang++-14 cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DDOTS_FUZZ=ON -DDOTS_SANITIZE=address,undefined -DDOTS_WERROR=OFF >/dev/null
fi
cmake --build "$BUILD_DIR" -j 2 --target fuzz_targets

WORK="$BUILD_DIR/fuzz-work"
# Scratch files of the targets (pool files, the server's state directory) go to tmpfs when there
# is one: jsonl_pool_fuzz writes its input to a file on every run, ~6x faster there than on disk.
SCRATCH_ROOT=/dev/shm
[ -d "$SCRATCH_ROOT" ] && [ -w "$SCRATCH_ROOT" ] || SCRATCH_ROOT="$PWD/$WORK"
mkdir -p "$SCRATCH_ROOT"
SCRATCH=$(mktemp -d "$SCRATCH_ROOT/dots-fuzz.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:abort_on_error=1:print_stacktrace=1}"
log_stat() {  # log_stat LOG NAME: the last "stat::NAME: <number>" libFuzzer printed, or ?
  grep -oE "stat::$2:[[:space:]]+[0-9]+" "$1" | tail -1 | grep -oE '[0-9]+$' || echo "?"
}
failed=()
for target in $FUZZ_TARGETS; do
  dir="$WORK/$target"
  rm -rf "$dir"
  mkdir -p "$dir/corpus" "$dir/artifacts" "$SCRATCH/$target"
  cp fuzz/corpus/"$target"/* "$dir/corpus/"
  # rpc_fuzz, run_archive_fuzz: per-input leak checks (LeakSanitizer scans the whole heap of a
  # gRPC server or RocksDB after most inputs, as their threads keep allocating) halve the speed;
  # leaks are still checked at exit, and rpc_fuzz checks for leaked calls itself. rpc_fuzz also
  # drops the entropic schedule, whose bookkeeping grows with the server's ~40k features (1.4x).
  case "$target" in
    rpc_fuzz) target_args="-detect_leaks=0 -entropic=0" ;;
    run_archive_fuzz) target_args="-detect_leaks=0" ;;
    *) target_args="" ;;
  esac
  status=0
  # -timeout: one input running longer is a hang. -malloc_limit_mb: no input (at most a few KB)
  # has any business making the code allocate 512 MB at once; that is an allocation sized by an
  # untrusted length field.
  # shellcheck disable=SC2086
  TMPDIR="$SCRATCH/$target" "$BUILD_DIR/bin/$target" -max_total_time="$FUZZ_SECONDS" \
    -timeout=30 -rss_limit_mb=4096 -malloc_limit_mb=512 -print_final_stats=1 \
    -artifact_prefix="$dir/artifacts/" $target_args $FUZZ_ARGS "$dir/corpus" \
    >"$dir/log" 2>&1 </dev/null || status=$?
  # "#123456 DONE cov: 1234 ft: 5678 corp: 321/45Kb lim: 4096 exec/s: 4115 rss: 120Mb"
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$dir/log" | tail -1 || true)
  runs=$(log_stat "$dir/log" number_of_executed_units)
  rate=$(log_stat "$dir/log" average_exec_per_sec)
  cov=$(grep -oE 'cov: [0-9]+' <<<"$done_line" | grep -oE '[0-9]+' || echo "?")
  ft=$(grep -oE 'ft: [0-9]+' <<<"$done_line" | grep -oE '[0-9]+' || echo "?")
  corp=$(grep -oE 'corp: [0-9]+/[0-9]+[a-zA-Z]*' <<<"$done_line" | cut -d' ' -f2 || echo "?")
  rss=$(log_stat "$dir/log" peak_rss_mb)
  artifacts=$(find "$dir/artifacts" -type f | wc -l)
  if [ "$status" -ne 0 ] || [ "$artifacts" -ne 0 ] || [ -z "$done_line" ]; then
    echo "fuzz: $target FAILED (exit $status, $artifacts artifacts in $dir/artifacts, log $dir/log)"
    grep -m 3 -E 'ERROR: |runtime error|invariant violated|Timeout|out-of-memory' "$dir/log" || true
    failed+=("$target")
  else
    echo "fuzz: $target ok: $runs runs in ${FUZZ_SECONDS}s ($rate/s), cov $cov, ft $ft," \
      "corpus $corp, peak RSS ${rss} MB"
  fi
done
if [ "${#failed[@]}" -ne 0 ]; then
  echo "fuzz: FAILED: ${failed[*]}"
  exit 1
fi
echo "fuzz: all targets ran ${FUZZ_SECONDS}s without a crash"
