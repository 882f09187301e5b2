"""Model versions on the bus: a PEFT adapter directory travels as one tar archive in the
`soar_adapters` object store, named after its version, so an LLM worker on any machine can
take it up. Names are immutable: a version is never rewritten (vLLM would serve stale prefix
cache entries for a reused adapter name), so a second publish of the same version is refused.
"""

from __future__ import annotations

import io
import re
import shutil
import tarfile
from pathlib import Path

import anyio
import nats.js.errors

from soar_async.bus.conn import Bus
from soar_async.bus.topology import OBJ_ADAPTERS

VERSION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
"""Version names double as object names, directory names and vLLM LoRA names."""


def check_version(version: str) -> str:
    if not VERSION_RE.match(version) or version == "base":
        raise ValueError(f"model version {version!r}: use letters, digits, '.', '_' or '-' (not 'base')")
    return version


def pack(adapter_dir: Path) -> bytes:
    """The adapter directory as an uncompressed tar (safetensors do not compress)."""
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ValueError(f"{adapter_dir} is not a PEFT adapter directory (no adapter_config.json)")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for f in sorted(adapter_dir.rglob("*")):
            if f.is_file():
                tar.add(f, arcname=str(f.relative_to(adapter_dir)))
    return buf.getvalue()


def unpack(data: bytes, dest: Path) -> Path:
    """Extract into `dest` (atomically: a half-written directory is never seen as an adapter)."""
    if (dest / "adapter_config.json").is_file():
        return dest
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(tmp, filter="data")  # no absolute paths, links out or devices
    tmp.rename(dest)
    return dest


async def publish_adapter(bus: Bus, version: str, adapter_dir: Path) -> str:
    """Store the adapter under `adapters/<version>.tar`; returns that reference."""
    check_version(version)
    ref = f"adapters/{version}.tar"
    store = await bus.js.object_store(OBJ_ADAPTERS)
    try:
        await store.get_info(ref)
        raise ValueError(f"model version {version!r} already exists: versions are immutable, pick a new name")
    except nats.js.errors.ObjectNotFoundError:
        pass
    data = await anyio.to_thread.run_sync(pack, adapter_dir)
    await store.put(ref, data)
    return ref


async def fetch_adapter(bus: Bus, ref: str, dest: Path) -> Path:
    """The adapter stored under `ref`, extracted into `dest` (reused when already there)."""
    if (dest / "adapter_config.json").is_file():
        return dest
    store = await bus.js.object_store(OBJ_ADAPTERS)
    try:
        res = await store.get(ref)
    except (nats.js.errors.ObjectNotFoundError, nats.js.errors.ObjectDeletedError):
        raise ValueError(f"adapter {ref!r} not found in object store {OBJ_ADAPTERS}") from None
    return await anyio.to_thread.run_sync(unpack, res.data or b"", dest)
