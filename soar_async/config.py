"""One typed configuration for every process, with SOAR's published defaults.

Layers, later wins: built-in defaults (the paper's numbers) < TOML file < environment
variables `SOAR_<SECTION>__<KEY>` < command-line `--set section.key=value`. Every layer
goes through the same checker, so an unknown key or a value of the wrong type fails the
same way wherever it came from, naming the key and the source. Environment and `--set`
values are text, interpreted once the key's type is known: a `str` key takes the text as
it is (so the ARC id `20818e16` stays a string), a list key takes a TOML array or
comma-separated items, any other key a TOML scalar.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(ValueError):
    """A configuration key is unknown or has a value of the wrong type."""


@dataclass
class SearchConfig:
    """Per-task search budget and sampling settings (SOAR paper, section 3)."""

    samples_per_task: int = 3000
    refinements_per_task: int = 3000
    completions_per_sample_request: int = 50
    completions_per_refine_request: int = 4
    temperature: float = 1.0
    min_p: float = 0.05
    max_tokens_sample: int = 4096
    max_tokens_refine: int = 2048
    stop_after_correct: int = 100
    rex_c: float = 20.0
    rex_islands: int = 4
    seed: int = 0


@dataclass
class VoteConfig:
    """Weighted majority vote: weight of an answer = sum over its programs of 1 + c*h."""

    c: float = 1000.0
    attempts: int = 2


@dataclass
class TrainConfig:
    """Hindsight-relabelled fine-tuning; each generation re-trains from the base model."""

    sampling_examples_per_task: int = 50
    refinement_examples_per_task: int = 50
    lora_rank: int = 256
    lora_alpha: int = 32
    use_rslora: bool = True
    learning_rate: float = 5e-5
    epochs: int = 3
    effective_batch_size: int = 32
    warmup_ratio: float = 0.1
    lr_scheduler: str = "cosine"
    max_seq_len: int = 8192


@dataclass
class ModelConfig:
    """Which model the LLM actors serve; a local directory, never a hub download."""

    path: str = ""
    engine: str = "vllm"
    max_concurrent_requests: int = 64
    dtype: str = "auto"


@dataclass
class SandboxConfig:
    """Limits for untrusted programs; 0 or empty means the automatic default."""

    workers: int = 0
    memory_mb: int = 512
    wall_s: float = 0.0
    stdout_bytes: int = 4096


@dataclass
class BusSettings:
    """How to reach NATS; no URL means start an embedded server under the run directory."""

    nats_urls: list[str] = field(default_factory=list)
    user: str = ""
    password: str = ""
    token: str = ""
    creds_file: str = ""
    nkey_seed_file: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    connect_timeout_s: float = 5.0
    request_timeout_s: float = 10.0
    ack_wait_s: float = 30.0
    """Seconds a work-queue consumer waits for an ack before redelivering; must agree with
    the runtime's default `QueueSpec.ack_wait` (30 s)."""
    max_deliver: int = 5
    replicas: int = 1


@dataclass
class RunConfig:
    """Where a run keeps its state (logs, embedded JetStream store, SQLite archive, outputs)."""

    name: str = "default"
    dir: str = "runs"
    tasks: str = "arc-agi-1:evaluation"
    log_level: str = "info"

    @property
    def path(self) -> Path:
        return Path(self.dir) / self.name


@dataclass
class Config:
    search: SearchConfig = field(default_factory=SearchConfig)
    vote: VoteConfig = field(default_factory=VoteConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    bus: BusSettings = field(default_factory=BusSettings)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    def to_toml(self) -> str:
        """The whole configuration as TOML: `soar config show` prints it, files can start from it."""
        lines: list[str] = []
        for section, values in self.to_dict().items():
            lines.append(f"[{section}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in values.items())
            lines.append("")
        return "\n".join(lines)


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _check_type(value: Any, tp: Any, key: str, source: str) -> Any:
    """Return `value` coerced to `tp` where lossless (int -> float), else raise naming the key."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            try:
                return _check_type(value, arg, key, source)
            except ConfigError as e:
                errors.append(e)
        raise errors[-1]
    if origin is list:
        (item,) = typing.get_args(tp)
        if isinstance(value, str) and item is str:
            value = [s for s in (p.strip() for p in value.split(",")) if s]
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key} must be a list, got {type(value).__name__} {value!r}")
        return [_check_type(v, item, key, source) for v in value]
    if tp is type(None):
        if value is None:
            return None
    elif tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(value, tp):
        return value
    name = getattr(tp, "__name__", str(tp))
    raise ConfigError(f"{source}: {key} must be {name}, got {type(value).__name__} {value!r}")


def _section_types(cfg: Config) -> dict[str, dict[str, Any]]:
    out = {}
    for f in dataclasses.fields(cfg):
        section = getattr(cfg, f.name)
        hints = typing.get_type_hints(type(section))
        out[f.name] = {sf.name: hints[sf.name] for sf in dataclasses.fields(section)}
    return out


def apply(cfg: Config, values: Mapping[str, Any], source: str) -> Config:
    """Overlay a {section: {key: value}} mapping onto `cfg`, checking every key and type."""
    types_ = _section_types(cfg)
    for section, entries in values.items():
        if section not in types_:
            raise ConfigError(f"{source}: unknown section [{section}] (known: {', '.join(types_)})")
        if not isinstance(entries, Mapping):
            raise ConfigError(f"{source}: [{section}] must be a table of keys")
        for key, value in entries.items():
            if key not in types_[section]:
                known = ", ".join(types_[section])
                raise ConfigError(f"{source}: unknown key {section}.{key} (known in [{section}]: {known})")
            tp = types_[section][key]
            if isinstance(value, RawText):
                value = _from_text(value, tp, f"{section}.{key}", source)
            checked = _check_type(value, tp, f"{section}.{key}", source)
            setattr(getattr(cfg, section), key, checked)
    return cfg


class RawText(str):
    """A value given as text (environment variable, `--set`), parsed only once the type of
    its key is known: ARC task ids such as `13713586` or `20818e16` must stay strings."""


def _parse_scalar(text: str) -> Any:
    """A non-string value given as text: TOML syntax if it parses, else the bare string (which
    then fails the type check, naming the key)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _unquote(text: str) -> str:
    """Strip one pair of matching surrounding quotes, nothing else (no escape processing)."""
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _from_text(text: str, tp: Any, key: str, source: str) -> Any:
    """Interpret command-line / environment text for a key of type `tp`.

    `str`: the text itself (one pair of surrounding quotes stripped). `list[...]`: a TOML
    array (`['a', 'b']`) or comma-separated items, each interpreted as the item type. Any
    other type: a TOML scalar (`0.3`, `true`, `7`).
    """
    text = text.strip()
    if tp is str:
        return _unquote(text)
    if typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp)
        if text.startswith("["):
            try:
                return tomllib.loads(f"v = {text}")["v"]
            except tomllib.TOMLDecodeError as e:
                raise ConfigError(f"{source}: {key} must be a list, got unparsable {text!r}: {e}") from None
        parts = [p.strip() for p in text.split(",")]
        return [_from_text(p, item, key, source) for p in parts if p]
    return _parse_scalar(text)


def _nest(pairs: Iterable[tuple[str, Any]], source: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for dotted, value in pairs:
        section, sep, key = dotted.partition(".")
        if not sep or not key:
            raise ConfigError(f"{source}: {dotted!r} must look like section.key")
        out.setdefault(section, {})[key] = value
    return out


ENV_PREFIX = "SOAR_"


def from_env(environ: Mapping[str, str]) -> dict[str, dict[str, Any]]:
    """`SOAR_SEARCH__MIN_P=0.1` -> {"search": {"min_p": RawText("0.1")}}; other SOAR_ variables
    are not ours. The text is interpreted by `apply`, which knows each key's type."""
    pairs = []
    for name, raw in environ.items():
        if name.startswith(ENV_PREFIX) and "__" in name:
            section, _, key = name[len(ENV_PREFIX) :].lower().partition("__")
            pairs.append((f"{section}.{key}", RawText(raw)))
    return _nest(pairs, "environment")


def load(
    file: str | Path | None = None,
    *,
    overrides: Iterable[str] = (),
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Build the configuration from all layers. `overrides` are `section.key=value` strings."""
    cfg = Config()
    if file is not None:
        path = Path(file)
        try:
            data = tomllib.loads(path.read_text())
        except OSError as e:
            raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"config file {path}: bad TOML: {e}") from None
        apply(cfg, data, f"config file {path}")
    apply(cfg, from_env(os.environ if environ is None else environ), "environment")
    pairs = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r} must look like section.key=value")
        pairs.append((key.strip(), RawText(raw.strip())))
    apply(cfg, _nest(pairs, "--set"), "--set")
    return cfg
