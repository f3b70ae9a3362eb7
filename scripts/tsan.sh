#!/usr/bin/env bash
# Builds the concurrency stress tests with ThreadSanitizer (clang) and runs them.
# Suppressions cover Debian's uninstrumented libraries only (tests/stress/tsan.supp).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR="${1:-build-tsan}"
if [ ! -f "$BUILD_DIR/CMakeCache.txt" ]; then
  CC=clang-14 CXX=clang++-14 cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DDOTS_SANITIZE=thread -DDOTS_WERROR=OFF >/dev/null
fi
cmake --build "$BUILD_DIR" -j "$(nproc)" --target stress_tests
TSAN_OPTIONS="suppressions=$PWD/tests/stress/tsan.supp halt_on_error=1 second_deadlock_stack=1" \
  "$BUILD_DIR/bin/stress_tests"
