#!/usr/bin/env bash
# The main job on the embedded default: SOAR's learning loop for two generations with the
# bundled SmolLM2-135M-Instruct on this CPU (config/cpu-small.toml). An embedded nats-server,
# the LLM worker (vLLM's CPU build), the proposer, refiner, archive, executors (WebAssembly
# sandbox), the trainer and the conductor, all in one process:
#   generation 0: search three short ARC-AGI-1 training tasks with the base model;
#   relabel its programs (and the baseline's on 40 other training tasks, the seeds) into
#   training data, train a LoRA adapter (one epoch here), hot-swap it into the LLM worker;
#   generation 1: search the same tasks with the trained model.
# Prints the per-generation table, then `soar results` (usable share and mean train accuracy
# per generation). Everything stays in runs/daemon; a second `make run` finds the loop done.
# Extra arguments go to `soar daemon` (e.g. --generations 3 --set train.epochs=3).
set -euo pipefail
cd "$(dirname "$0")/.."
run_dir=runs/daemon
.venv/bin/soar daemon --config config/cpu-small.toml \
  --tasks 'arc-agi-1:training#6150a2bd,e9afcf9a,d037b0a7' --generations 2 \
  --set train.epochs=1 --run-dir "$run_dir" "$@"
exec .venv/bin/soar results --run "$run_dir"
