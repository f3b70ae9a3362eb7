#!/usr/bin/env bash
# Fails when any C++ file in the tree differs from clang-format (Google style, .clang-format).
set -euo pipefail
cd "$(dirname "$0")/.."
files=$(git ls-files '*.h' '*.cc' '*.cpp' 2>/dev/null || true)
[ -n "$files" ] || files=$(find core server client bench tests -name '*.h' -o -name '*.cc' 2>/dev/null)
bad=0
for f in $files; do
  [ -f "$f" ] || continue
  if ! clang-format --dry-run --Werror "$f" >/dev/null 2>&1; then
    echo "check-format: $f is not clang-formatted (run: make format)"
    bad=1
  fi
done
[ "$bad" -eq 0 ] && echo "check-format: $(echo "$files" | wc -w) files clean"
exit "$bad"
