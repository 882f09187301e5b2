#!/usr/bin/env bash
# The main job on the embedded default: an embedded nats-server, executor actors with the
# WebAssembly sandbox, and one search pass over the ARC-AGI-1 evaluation set with the
# non-learning baseline program source (until the LLM actors land). Writes
# runs/default/submission.json and runs/default/report.json and prints the score.
# Extra arguments go to `soar solve` (e.g. --tasks arc-agi-2:evaluation).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/soar solve --tasks arc-agi-1:evaluation "$@"
