#!/usr/bin/env bash
# Prints the Debian packages that provide the shared libraries the given binaries load, one per
# line, sorted: what the runtime image must install (docker/Dockerfile runs it in the build
# stage; tests/deploy/docker_test.sh runs it on the binaries built here).
# Usage: runtime-packages.sh BINARY...
set -euo pipefail
[ "$#" -ge 1 ] || { echo "usage: $0 BINARY..." >&2; exit 2; }

libs=$(ldd "$@" | awk '$2 == "=>" && $3 ~ /^\// {print $3}' | sort -u)
for lib in $libs; do
  # Debian 12 is merged-/usr: a library may be registered under /lib or /usr/lib, and
  # alternatives (libblas.so.3 -> OpenBLAS) are symlinks to the real file.
  owner=""
  for path in "$lib" "/usr$lib" "${lib#/usr}" "$(readlink -f "$lib")"; do
    if owner=$(dpkg-query -S "$path" 2>/dev/null | head -n 1) && [ -n "$owner" ]; then break; fi
  done
  if [ -z "$owner" ]; then
    echo "runtime-packages: no Debian package provides $lib" >&2
    exit 1
  fi
  # "libgrpc++1.51:amd64: /usr/lib/..." -> "libgrpc++1.51"
  echo "${owner%%:*}"
done | sort -u
