#!/usr/bin/env bash
# Attach a worker on this machine to a running soar-async system.
#
#   ops/scripts/attach-worker.sh nats://head-node:4222 [ROLE] [CONCURRENCY]
#
# ROLE defaults to executor, CONCURRENCY to the number of cores. Credentials come from the
# environment (never the command line, which other users can read in `ps`):
#   SOAR_NATS_USER / SOAR_NATS_PASSWORD, SOAR_NATS_TOKEN, SOAR_NATS_CREDS (a .creds file),
#   SOAR_NATS_CA (CA certificate for tls:// URLs).
# Several URLs (a cluster) are comma-separated. SIGTERM / Ctrl-C drains: in-flight work is
# finished or handed back, nothing is lost. SOAR_HOME is the checkout (default: this script's).
set -euo pipefail

url="${1:-${SOAR_NATS_URL:-}}"
role="${2:-executor}"
concurrency="${3:-$(nproc)}"
if [[ -z "$url" ]]; then
  echo "usage: $0 NATS_URL [ROLE] [CONCURRENCY]   (or set SOAR_NATS_URL)" >&2
  exit 2
fi
home="${SOAR_HOME:-$(cd "$(dirname "$0")/../.." && pwd)}"
soar="${SOAR_BIN:-$home/.venv/bin/soar}"
if [[ ! -x "$soar" ]]; then
  echo "soar not found at $soar: create the venv first (pip install -e $home) or set SOAR_BIN" >&2
  exit 1
fi
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
run_dir="${SOAR_RUN_DIR:-$home/runs/worker-$(hostname -s)}"
exec "$soar" worker --role "$role" --concurrency "$concurrency" --nats "$url" --run-dir "$run_dir"
