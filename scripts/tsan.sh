#!/usr/bin/env bash
# The clang-14 ThreadSanitizer build in build-tsan/ (part of `make test`):
#  - compiled with clang's thread-safety analysis as errors (DOTS_THREAD_SAFETY_ANALYSIS), so
#    every ABSL_GUARDED_BY and ABSL_EXCLUSIVE_LOCKS_REQUIRED in the tree is checked;
#  - then the concurrency stress tests under TSan.
# Suppressions cover Debian's uninstrumented libraries only (tests/stress/tsan.supp). A report
# fails the run: halt_on_error=1 in the tests and in every dots-server they start.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${1:-build-tsan}"
# Configured every time (cheap), so an older build-tsan/ picks up the options too.
CC=clang-14 CXX=clang++-14 cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DDOTS_SANITIZE=thread -DDOTS_WERROR=OFF -DDOTS_THREAD_SAFETY_ANALYSIS=ON >/dev/null
# The thread-safety analysis runs wherever the tree is compiled: build all of it, then run the
# tests that exercise threads.
cmake --build "$BUILD_DIR" -j "$(nproc)"

export TSAN_OPTIONS="suppressions=$PWD/tests/stress/tsan.supp halt_on_error=1 second_deadlock_stack=1"
export DOTS_SOURCE_DIR="$PWD"
run() {
  local start=$SECONDS
  echo "tsan: $*"
  "$@"
  echo "tsan: $1 passed in $((SECONDS - start)) s"
}
run "$BUILD_DIR/bin/stress_tests"
