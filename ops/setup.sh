#!/usr/bin/env bash
# Set up (or refresh) the project's virtual environment in .venv.
#
# torch is installed first and pinned: this machine keeps a CPU build of torch 2.13.0 on
# disk, and any other version would pull several GB of CUDA wheels. Everything after it
# sees torch already satisfied. Re-running is cheap: a stamp keyed on pyproject.toml and
# this script skips the install when nothing changed.
#
# usage: ops/setup.sh [EXTRAS]    e.g. ops/setup.sh dev   or   ops/setup.sh dev,train
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-dev}"
python="${PYTHON:-python3}"
venv=.venv

if [ ! -x "$venv/bin/python" ]; then
  echo "setup: creating $venv"
  "$python" -m venv "$venv"
fi

stamp="$venv/.soar-setup-$(cat pyproject.toml ops/setup.sh | sha256sum | cut -c1-16)-${extras//,/_}"
if [ -f "$stamp" ]; then
  exit 0
fi

pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
echo "setup: installing torch==2.13.0 (CPU build from this machine's disk)"
"${pip[@]}" install torch==2.13.0
echo "setup: installing soar-async[$extras]"
"${pip[@]}" install -e ".[$extras]"
rm -f "$venv"/.soar-setup-*
touch "$stamp"
echo "setup: done ($("$venv/bin/soar" --version))"
