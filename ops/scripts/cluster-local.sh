#!/usr/bin/env bash
# Run the 3-node NATS cluster from ops/nats/cluster on this machine (loopback ports 4222-4224).
#
#   ops/scripts/cluster-local.sh start|stop|status [DATA_DIR]
#
# Then: soar up --nats nats://127.0.0.1:4222,nats://127.0.0.1:4223,nats://127.0.0.1:4224 --replicas 3
# and attach workers with the same URL list. Stop one node (kill its pid from DATA_DIR/nN.pid) to
# watch the actors fail over.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
home="$(cd "$here/.." && pwd)"
bin="${NATS_SERVER:-$home/.venv/bin/nats-server}"
data="${2:-$home/runs/nats-cluster}"
mkdir -p "$data"
case "${1:-}" in
  start)
    for i in 1 2 3; do
      (cd "$data" && nohup "$bin" -c "$here/nats/cluster/n$i.conf" -P "$data/n$i.pid" >"$data/n$i.log" 2>&1 &)
    done
    sleep 2
    for i in 1 2 3; do echo "n$i pid $(cat "$data/n$i.pid" 2>/dev/null || echo '?') log $data/n$i.log"; done
    ;;
  stop)
    for i in 1 2 3; do
      [[ -f "$data/n$i.pid" ]] && kill "$(cat "$data/n$i.pid")" 2>/dev/null || true
    done
    ;;
  status)
    for i in 1 2 3; do
      if [[ -f "$data/n$i.pid" ]] && kill -0 "$(cat "$data/n$i.pid")" 2>/dev/null; then
        echo "n$i running (pid $(cat "$data/n$i.pid"))"
      else
        echo "n$i stopped"
      fi
    done
    ;;
  *) echo "usage: $0 start|stop|status [DATA_DIR]" >&2; exit 2 ;;
esac
