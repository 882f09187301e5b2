#!/usr/bin/env bash
# A few LoRA steps of the trainer (soar_async.train) per model, printed as one JSON object:
# device, dtype, steps, tokens/s and peak CUDA memory (torch.cuda.max_memory_allocated).
#
#   ops/gpu-train-check.sh                      # the tiny random Qwen2 model only (seconds)
#   ops/gpu-train-check.sh /models/Qwen2.5-0.5B-Instruct [--gradient-checkpointing] [--rank 256]
#
# Always measures the tiny model written by soar_async.llm.tiny first, then every model folder
# given. On a machine without CUDA it runs on CPU and says so (the JSON has "cuda": false), which
# is how it is tested off the GPU. Needs torch, transformers and peft only: it uses the project's
# .venv when there is one, else python3 (e.g. a GPU image with PyTorch) with this checkout on
# PYTHONPATH. Options: `python -m soar_async.train.check --help`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -n "${PYTHON:-}" ]]; then
    py="$PYTHON"
elif [[ -x "$root/.venv/bin/python" ]]; then
    py="$root/.venv/bin/python"
else
    py=python3
fi
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec "$py" -m soar_async.train.check "$@"
