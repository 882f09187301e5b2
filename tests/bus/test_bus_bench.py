"""`soar bench bus` runs end to end on a small batch and reports its ratios (no timing asserts)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from bushelpers import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("sandbox_built")]


def test_bench_bus_small_json() -> None:
    p = subprocess.run(
        [
            sys.executable,
            "-m",
            "soar_async.cli",
            "bench",
            "bus",
            "--json",
            "--programs",
            "6",
            "--heavy",
            "1",
            "--rounds",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads(p.stdout)
    assert r["actor"]["programs"] == 6 and r["core"]["delivered"] == r["core"]["sent"]
    for k in ("jetstream_vs_core_hop_latency_p50", "core_vs_jetstream_throughput", "bus_overhead_fraction_of_sandbox"):
        assert r["ratios"][k] > 0
