"""A process running a vLLM engine killed with SIGKILL leaves no engine processes behind.

Without the reaper (soar_async/llm/reaper.py), vLLM's EngineCore and its worker were
re-parented to init and kept 4 GB and most of a core busy after `soar solve` was killed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

SCRIPT = r"""
import json, sys, anyio, psutil
from soar_async.config import ModelConfig
from soar_async.llm.vllm_engine import VLLMEngine

async def main():
    cfg = ModelConfig(engine="vllm", path=sys.argv[1], update_mode="merged", seed=0)
    eng = await VLLMEngine.start(cfg, sys.argv[1])
    kids = [c.pid for c in psutil.Process().children(recursive=True)]
    print("CHILDREN " + json.dumps(kids), flush=True)
    await anyio.sleep(600)

if __name__ == "__main__":
    anyio.run(main)
"""


@pytest.mark.slow
def test_engine_processes_die_with_a_killed_owner(tiny_model_dir: Path, tmp_path: Path) -> None:
    script = tmp_path / "owner.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VLLM_LOGGING_LEVEL": "WARNING"}
    owner = subprocess.Popen(
        [sys.executable, str(script), str(tiny_model_dir)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env
    )
    try:
        assert owner.stdout is not None
        line = b""
        while not line.startswith(b"CHILDREN "):  # vLLM prints to stdout too
            line = owner.stdout.readline()
            assert line, "the engine did not start"
        kids = [psutil.Process(p) for p in json.loads(line.split(b" ", 1)[1]) if psutil.pid_exists(p)]
        engine = [
            k for k in kids if "reaper" not in " ".join(k.cmdline()) and "VLLM" in k.name() + " ".join(k.cmdline())
        ]
        assert engine, f"no vLLM engine process among {[(k.pid, k.name()) for k in kids]}"
    finally:
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()
    deadline = time.monotonic() + 30
    alive = kids
    while alive and time.monotonic() < deadline:
        alive = [k for k in alive if k.is_running() and k.status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.2)
    assert not alive, f"left running after the owner was killed: {[(k.pid, k.name()) for k in alive]}"
