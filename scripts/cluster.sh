#!/usr/bin/env bash
# A local dots cluster: N dots-server replicas and the HAProxy router in front of them, on
# loopback ports, each replica with its own state directory under DIR.
#
#   scripts/cluster.sh up N DIR       start N replicas and the router, wait until every replica
#                                     serves and the router passes its health checks; print the
#                                     addresses; write the router's to DIR/router and the
#                                     replicas', one a line in replica order, to DIR/replicas
#   scripts/cluster.sh down DIR       stop the router and every replica (SIGTERM: drained)
#   scripts/cluster.sh restart DIR I  start replica I (from 0) again on its address, after it died
#   scripts/cluster.sh add DIR        start one more replica and append it to DIR/replicas; the
#                                     router still routes to the old list: run `dotsctl cluster
#                                     rebalance --servers $(paste -sd, DIR/replicas)`, then reload
#   scripts/cluster.sh reload DIR     regenerate the router's config from DIR/replicas and reload
#                                     HAProxy gracefully (calls in flight finish)
#
# Environment: DOTS_BIN (default build/bin: dots-server and dotsctl), DOTS_SERVER_FLAGS (extra
# dots-server flags, e.g. --sync=always), HAPROXY (default haproxy). Logs in DIR/*.log.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
BIN="${DOTS_BIN:-$ROOT/build/bin}"
HAPROXY="${HAPROXY:-haproxy}"
PY=/usr/bin/python3

die() {
  echo "cluster.sh: $*" >&2
  exit 1
}

usage() {
  sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

need_tools() {
  [ -x "$BIN/dots-server" ] || die "no $BIN/dots-server: build first (make build) or set DOTS_BIN"
  command -v "$HAPROXY" >/dev/null ||
    die "HAProxy is not installed: apt-get install haproxy (scripts/install-deps.sh does)"
}

free_port() {
  "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_replica DIR I [ADDRESS]: starts replica I (port 0 when no address), waits until it
# listens, records DIR/replica-I/{address,pid}.
start_replica() {
  local dir="$1" i="$2" address="${3:-127.0.0.1:0}" rdir="$1/replica-$2"
  mkdir -p "$rdir"
  : >"$rdir/stdout"
  # shellcheck disable=SC2086
  "$BIN/dots-server" --listen="$address" --metrics_listen=127.0.0.1:0 --state_dir="$rdir/state" \
    --drain_seconds=5 ${DOTS_SERVER_FLAGS:-} >"$rdir/stdout" 2>>"$dir/replica-$i.log" &
  local pid=$! got=""
  echo "$pid" >"$rdir/pid"
  for _ in $(seq 1 600); do
    got=$(sed -n 's/^dots-server listening on \(.*\)$/\1/p' "$rdir/stdout")
    [ -n "$got" ] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ -z "$got" ]; then
    tail -n 20 "$dir/replica-$i.log" >&2 || true
    die "replica $i did not start (log: $dir/replica-$i.log)"
  fi
  echo "$got" >"$rdir/address"
}

# write_config DIR: the router's config from DIR/replicas, on the ports of DIR/router(.stats).
write_config() {
  local dir="$1"
  mapfile -t replicas <"$dir/replicas"
  "$ROOT/deploy/haproxy/make-config.sh" --listen "$(cat "$dir/router")" \
    --stats "$(cat "$dir/router.stats")" "${replicas[@]}" >"$dir/haproxy.cfg.new"
  "$HAPROXY" -c -q -f "$dir/haproxy.cfg.new" || die "the generated config does not load"
  mv "$dir/haproxy.cfg.new" "$dir/haproxy.cfg"
}

# wait_router DIR: until HAProxy reports every replica of backend `any` up.
wait_router() {
  local dir="$1" n
  n=$(wc -l <"$dir/replicas")
  for _ in $(seq 1 300); do
    if "$PY" - "$(cat "$dir/router.stats")" "$n" <<'PY' 2>/dev/null; then return 0; fi
import sys, urllib.request
rows = urllib.request.urlopen(f"http://{sys.argv[1]}/stats;csv", timeout=2).read().decode()
up = [r for r in rows.splitlines() if r.startswith("any,dots-") and ",UP," in r]
sys.exit(0 if len(up) >= int(sys.argv[2]) else 1)
PY
    kill -0 "$(cat "$dir/haproxy.pid")" 2>/dev/null || die "HAProxy exited (log: $dir/haproxy.log)"
    sleep 0.2
  done
  die "the router's health checks did not pass for all $n replicas within 60 s"
}

start_router() {
  local dir="$1"
  for attempt in 1 2 3 4 5; do
    echo "127.0.0.1:$(free_port)" >"$dir/router"
    echo "127.0.0.1:$(free_port)" >"$dir/router.stats"
    write_config "$dir"
    # Master-worker mode: SIGUSR2 to the master reloads the config, SIGTERM stops it.
    "$HAPROXY" -W -db -f "$dir/haproxy.cfg" >>"$dir/haproxy.log" 2>&1 &
    echo $! >"$dir/haproxy.pid"
    sleep 0.5
    if kill -0 "$(cat "$dir/haproxy.pid")" 2>/dev/null; then return 0; fi
    echo "cluster.sh: HAProxy did not start (attempt $attempt; a port was taken?)" >&2
  done
  tail -n 20 "$dir/haproxy.log" >&2 || true
  die "HAProxy did not start (log: $dir/haproxy.log)"
}

stop_pid() {  # stop_pid PIDFILE SECONDS
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 $(($2 * 10))); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  echo "cluster.sh: pid $pid did not stop within $2 s: killing it" >&2
  kill -KILL "$pid" 2>/dev/null || true
}

cmd="${1:-}"
case "$cmd" in
  up)
    [ $# -eq 3 ] || usage
    n="$2" dir="$3"
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "N must be a positive number of replicas, not \"$n\""
    need_tools
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    [ ! -f "$dir/haproxy.pid" ] || ! kill -0 "$(cat "$dir/haproxy.pid")" 2>/dev/null ||
      die "$dir already holds a running cluster (scripts/cluster.sh down $dir)"
    : >"$dir/replicas"
    for i in $(seq 0 $((n - 1))); do
      start_replica "$dir" "$i"
      cat "$dir/replica-$i/address" >>"$dir/replicas"
    done
    start_router "$dir"
    wait_router "$dir"
    echo "router: $(cat "$dir/router") (HAProxy metrics: http://$(cat "$dir/router.stats")/metrics)"
    i=0
    while read -r address; do
      echo "replica $i: $address (state: $dir/replica-$i/state)"
      i=$((i + 1))
    done <"$dir/replicas"
    ;;
  down)
    [ $# -eq 2 ] || usage
    dir="$2"
    [ -d "$dir" ] || die "no cluster directory $dir"
    stop_pid "$dir/haproxy.pid" 10
    for pidfile in "$dir"/replica-*/pid; do
      [ -f "$pidfile" ] && stop_pid "$pidfile" 30
    done
    echo "cluster in $dir stopped"
    ;;
  restart)
    [ $# -eq 3 ] || usage
    dir="$2" i="$3"
    need_tools
    [ -f "$dir/replica-$i/address" ] || die "no replica $i in $dir"
    if kill -0 "$(cat "$dir/replica-$i/pid")" 2>/dev/null; then die "replica $i is running"; fi
    start_replica "$dir" "$i" "$(cat "$dir/replica-$i/address")"
    echo "replica $i: $(cat "$dir/replica-$i/address")"
    ;;
  add)
    [ $# -eq 2 ] || usage
    dir="$2"
    need_tools
    [ -f "$dir/replicas" ] || die "no cluster in $dir (scripts/cluster.sh up N $dir)"
    i=$(wc -l <"$dir/replicas")
    start_replica "$dir" "$i"
    cat "$dir/replica-$i/address" >>"$dir/replicas"
    echo "replica $i: $(cat "$dir/replica-$i/address") (not routed yet: rebalance, then reload)"
    ;;
  reload)
    [ $# -eq 2 ] || usage
    dir="$2"
    need_tools
    write_config "$dir"
    kill -USR2 "$(cat "$dir/haproxy.pid")" || die "HAProxy is not running"
    sleep 0.5
    wait_router "$dir"
    echo "router reloaded with $(wc -l <"$dir/replicas") replicas"
    ;;
  *) usage ;;
esac
