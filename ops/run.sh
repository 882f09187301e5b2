#!/usr/bin/env bash
# The main job on the embedded default: an embedded nats-server, the LLM worker (vLLM's CPU
# build with the bundled SmolLM2-135M-Instruct), the proposer, refiner, archive and executor
# actors with the WebAssembly sandbox, searching five short ARC-AGI-1 evaluation tasks
# (sampling + REX refinement), then the vote. Writes runs/default/submission.json,
# runs/default/report.json and runs/default/archive.sqlite, and prints the score table.
# A second `make run` resumes the same run (answered from what is stored).
# Extra arguments go to `soar solve` (e.g. --tasks arc-agi-1:evaluation[:20] --samples 64).
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/soar solve \
  --tasks 'arc-agi-1:evaluation#66e6c45b,00576224,be03b35f,4cd1b7b2,ca8de6ea' \
  --samples 16 --refinements 16 --resume \
  --set search.completions_per_sample_request=4 \
  --set search.max_tokens_sample=1024 --set search.max_tokens_refine=1024 \
  "$@"
