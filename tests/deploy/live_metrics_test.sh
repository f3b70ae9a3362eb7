#!/usr/bin/env bash
# Live metrics test (see live_metrics_test.py): a real dots-server driven by dotsctl, its
# /metrics checked with promtool and against dotsctl stats, and a real Prometheus on loopback
# scraping it. Registered in CMake only when the dots-server target exists.
# Usage: live_metrics_test.sh SERVER_BIN DOTSCTL_BIN
set -euo pipefail
[ "$#" -eq 2 ] || { echo "usage: live_metrics_test.sh SERVER_BIN DOTSCTL_BIN" >&2; exit 2; }
for tool in promtool prometheus; do
  command -v "$tool" >/dev/null || { echo "$tool missing (apt package prometheus)" >&2; exit 1; }
done
exec /usr/bin/python3 "$(dirname "$0")/live_metrics_test.py" "$1" "$2"
