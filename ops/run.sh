#!/usr/bin/env bash
# The main job on the embedded default (see README). Grows with the system.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/soar tasks show 00576224
