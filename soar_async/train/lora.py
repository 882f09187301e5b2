"""LoRA fine-tuning on relabelled chat examples: SOAR's per-generation training step.

Every call trains a fresh rank-stabilised LoRA adapter (peft, `use_rslora`) on the base model,
never on the previous generation's adapter: SOAR re-trains from the base model each generation
on all data gathered so far. The loop is Hugging Face's `Trainer`, so one process on a CPU or a
GPU and several GPUs under `accelerate launch` / `torchrun` run the same code.

A training is a directory, `out_dir`, that makes it restartable and idempotent:

- `out_dir/spec.json`: what is trained (the spec and the dataset's digest). A second `train` on
  the same directory with a different spec or dataset is refused, never silently mixed.
- `out_dir/checkpoints/checkpoint-N`: adapter, optimiser, scheduler and RNG state every
  `save_steps` optimiser steps. A killed trainer started again on the same directory resumes
  from the latest complete one, so it loses at most `save_steps` steps, and ends on the same
  number of steps as an uninterrupted run.
- `out_dir/adapter`: the final PEFT adapter with `train_result.json`, written into a temporary
  folder and renamed into place, so it is either complete or absent. Once it is there, `train`
  returns its result at once (a redelivered request trains nothing) and the checkpoints are gone.

Progress is reported through `on_event(dict)`: `train_start`, `train_progress` (every optimiser
step), `checkpoint`, `train_done`. `soar_async.train.process.run_training` runs this in a child
process and streams those events to an async caller.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import random
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from soar_async.config import TrainConfig

ADAPTER_DIR = "adapter"
CHECKPOINTS_DIR = "checkpoints"
SPEC_FILE = "spec.json"
RESULT_FILE = "train_result.json"
"""Written into the adapter folder before it is renamed into place: its presence marks a finished
training."""

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")

EventSink = Callable[[dict[str, Any]], None]

_D = TrainConfig()
_KNOBS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name != "base_model" and "examples" not in f.name)
"""TrainConfig's training knobs, which TrainSpec repeats (not the example counts, which shape the
dataset, nor `base_model`, which TrainSpec resolves to a directory)."""

_NOT_IDENTITY = frozenset(
    {"out_dir", "device", "dtype", "threads", "save_steps", "per_device_batch_size", "gradient_checkpointing"}
)
"""Spec fields that change how a training runs, not what it learns: a checkpoint made under other
values of these may be resumed (e.g. on a bigger machine)."""


class TrainingError(RuntimeError):
    """The training cannot run as specified (no example fits, the out_dir belongs to another spec)."""


@dataclass(frozen=True, slots=True)
class TrainSpec:
    """One training job: where the base model, the data and the output are, and every knob.

    The knobs mean what they mean in `soar_async.config.TrainConfig` and are checked by it;
    `from_config` takes them from a configuration. JSON round-trips with `to_json` /
    `from_json`, which is how the spec reaches a trainer process.

    Attributes:
      base_model: A local Hugging Face model directory (never a hub id).
      dataset: A JSONL file of chat examples (`soar_async.relabel.write_jsonl`).
      out_dir: The training's directory (see the module docstring).
    """

    base_model: str
    dataset: str
    out_dir: str
    lora_rank: int = _D.lora_rank
    lora_alpha: int = _D.lora_alpha
    use_rslora: bool = _D.use_rslora
    lora_dropout: float = _D.lora_dropout
    target_modules: tuple[str, ...] = _D.target_modules
    learning_rate: float = _D.learning_rate
    epochs: int = _D.epochs
    effective_batch_size: int = _D.effective_batch_size
    per_device_batch_size: int = _D.per_device_batch_size
    warmup_ratio: float = _D.warmup_ratio
    lr_scheduler: str = _D.lr_scheduler
    max_grad_norm: float = _D.max_grad_norm
    max_seq_len: int = _D.max_seq_len
    seed: int = _D.seed
    gradient_checkpointing: bool = _D.gradient_checkpointing
    save_steps: int = _D.save_steps
    device: str = _D.device
    dtype: str = _D.dtype
    threads: int = _D.threads

    def __post_init__(self) -> None:
        for name in ("base_model", "dataset", "out_dir"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                object.__setattr__(self, name, os.fspath(value))
            elif not isinstance(value, str) or not value:
                raise ValueError(f"train spec: {name} must be a non-empty path, got {value!r}")
        # TrainConfig checks types and ranges (and coerces int -> float, list -> tuple).
        checked = TrainConfig(**{k: getattr(self, k) for k in _KNOBS})
        for k in _KNOBS:
            object.__setattr__(self, k, getattr(checked, k))

    @classmethod
    def from_config(
        cls, train: TrainConfig, *, base_model: str | Path, dataset: str | Path, out_dir: str | Path, **overrides: Any
    ) -> TrainSpec:
        """A spec with the knobs of `train` (`overrides` win), for the given paths."""
        knobs = {k: getattr(train, k) for k in _KNOBS}
        knobs.update(overrides)
        return cls(base_model=str(base_model), dataset=str(dataset), out_dir=str(out_dir), **knobs)

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainSpec:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"train spec: unknown key(s) {', '.join(sorted(unknown))}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> TrainSpec:
        return cls.from_dict(json.loads(text))

    def identity(self) -> dict[str, Any]:
        """The fields that decide what is learnt (see `_NOT_IDENTITY`)."""
        return {k: v for k, v in self.to_dict().items() if k not in _NOT_IDENTITY}

    @property
    def adapter_dir(self) -> Path:
        return Path(self.out_dir) / ADAPTER_DIR

    @property
    def checkpoints_dir(self) -> Path:
        return Path(self.out_dir) / CHECKPOINTS_DIR


@dataclass(frozen=True, slots=True)
class TrainResult:
    """What a finished training produced, as stored in `adapter/train_result.json`.

    Attributes:
      adapter_dir: The PEFT adapter folder.
      steps: Optimiser steps of the whole training (across resumptions).
      examples: Examples trained on; `dropped` more were longer than max_seq_len.
      first_loss: Mean answer-token loss of the first optimiser step (None if none was logged).
      final_loss: That of the last step.
      seconds: Wall time of the `train` call that finished it (model loading included).
      tokens_per_s: Tokens (padding excluded) through forward and backward per second of that
        call's training loop.
      resumed_from_step: The checkpoint's step that call resumed from; 0 for a fresh start.
      tokens: Tokens of the kept examples; answer_tokens of them carry a loss.
      reused: True when `train` found the adapter already complete and trained nothing.
    """

    adapter_dir: Path
    steps: int
    examples: int
    dropped: int
    first_loss: float | None
    final_loss: float | None
    seconds: float
    tokens_per_s: float
    resumed_from_step: int
    tokens: int = 0
    answer_tokens: int = 0
    reused: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["adapter_dir"] = str(self.adapter_dir)
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainResult:
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in data.items() if k in names}
        kw["adapter_dir"] = Path(kw["adapter_dir"])
        return cls(**kw)


# --- the training directory ---------------------------------------------------------------------


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (the dataset's identity: same path, other content, other training)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def read_result(adapter_dir: str | Path) -> TrainResult | None:
    """The result of a complete adapter folder, else None."""
    adapter_dir = Path(adapter_dir)
    try:
        data = json.loads((adapter_dir / RESULT_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not (adapter_dir / "adapter_config.json").is_file():
        return None
    return TrainResult.from_dict({**data, "adapter_dir": str(adapter_dir)})


def _claim(spec: TrainSpec, *, with_dataset: bool) -> None:
    """Record what `out_dir` trains, or check that it is what it already records."""
    out = Path(spec.out_dir)
    path = out / SPEC_FILE
    digest = file_digest(spec.dataset) if with_dataset else None
    if path.is_file():
        stored = json.loads(path.read_text())
        old = TrainSpec.from_dict(stored["spec"])
        if old.identity() != spec.identity():
            diff = sorted(k for k, v in spec.identity().items() if old.identity().get(k) != v)
            raise TrainingError(f"{out} holds a training of another spec (other {', '.join(diff)}); use a new out_dir")
        if digest is not None and stored.get("dataset_sha256") not in (None, digest):
            raise TrainingError(f"{out} holds a training on other data than {spec.dataset} has now; use a new out_dir")
        return
    out.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # one per process: ranks of a launcher race here
    tmp.write_text(json.dumps({"spec": spec.to_dict(), "dataset_sha256": digest}, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def _checkpoint_step(path: Path) -> int | None:
    """The step of a complete checkpoint folder (its trainer state, written last, parses and
    agrees with its name; adapter, optimiser and scheduler are there), else None."""
    m = CHECKPOINT_RE.match(path.name)
    if not m or not path.is_dir():
        return None
    try:
        state = json.loads((path / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return None
    needed = ("adapter_config.json", "optimizer.pt", "scheduler.pt")
    if state.get("global_step") != int(m.group(1)) or not all((path / f).is_file() for f in needed):
        return None
    return int(m.group(1))


def latest_checkpoint(checkpoints_dir: str | Path, *, clean: bool = False) -> tuple[Path, int] | None:
    """The latest complete checkpoint and its step; with `clean`, incomplete newer ones (a trainer
    killed while writing them) are deleted."""
    folder = Path(checkpoints_dir)
    if not folder.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := CHECKPOINT_RE.match(p.name))]
    for step, path in sorted(found, reverse=True):
        if _checkpoint_step(path) == step:
            return path, step
        if clean:
            shutil.rmtree(path, ignore_errors=True)
    return None


# --- devices ------------------------------------------------------------------------------------


def resolve_device(device: str) -> str:
    """The device, "cuda" or "cpu", for a configured `train.device`."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise TrainingError("train.device is cuda but no CUDA device is visible")
    return device


@dataclass(frozen=True, slots=True)
class Precision:
    """How a training computes: the dtype the weights are loaded in, and the dtype the
    Trainer's autocast computes in (None: none, everything in `weights`)."""

    weights: Any
    autocast: Any | None


def resolve_precision(dtype: str, device: str) -> Precision:
    """The precision for a configured `train.dtype` on `device`.

    "auto" on CPU keeps fp32 weights (and fp32 LoRA weights and optimiser state) and computes
    the matrix products in bf16 under autocast where the cores do bf16 natively: SmolLM2's LoRA
    step ran 1.47x faster so on this machine's two cores (351 against 239 tokens/s at 1000
    tokens), while bf16 weights gained less (325). Elsewhere it is fp32 throughout. A named
    dtype loads the weights in it and, when it is a half precision, computes in it too.
    """
    import torch

    if dtype == "auto":
        if device == "cuda":
            half = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            return Precision(half, half)
        from soar_async.devices import cpu_has_native_bf16

        return Precision(torch.float32, torch.bfloat16 if cpu_has_native_bf16() else None)
    weights = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    return Precision(weights, None if weights == torch.float32 else weights)


def cpu_threads(threads: int) -> int:
    """Torch threads for `train.threads` (0: every core this process may use)."""
    if threads > 0:
        return threads
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


# --- training -----------------------------------------------------------------------------------


def _events_callback(emit: EventSink, info: dict[str, Any]) -> Any:
    """A TrainerCallback that turns the Trainer's begin/log/save hooks into events (main process only)."""
    from transformers import TrainerCallback

    class Events(TrainerCallback):
        def __init__(self) -> None:
            self.t0 = time.monotonic()
            self.tokens0 = 0
            self.step0 = 0

        def tokens_per_s(self, state: Any) -> float:
            dt = time.monotonic() - self.t0
            return (state.num_input_tokens_seen - self.tokens0) / dt if dt > 0 else 0.0

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.t0, self.tokens0, self.step0 = time.monotonic(), state.num_input_tokens_seen, state.global_step
            if state.is_world_process_zero:
                emit({"event": "train_start", "steps": state.max_steps, "step": state.global_step, **info})

        def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any) -> None:
            if not state.is_world_process_zero or not logs or "loss" not in logs:
                return
            emit(
                {
                    "event": "train_progress",
                    "step": state.global_step,
                    "steps": state.max_steps,
                    "loss": float(logs["loss"]),
                    "lr": float(logs.get("learning_rate", 0.0)),
                    "grad_norm": float(logs["grad_norm"]) if logs.get("grad_norm") is not None else None,
                    "epoch": float(state.epoch or 0.0),
                    "tokens": int(state.num_input_tokens_seen),
                    "tokens_per_s": round(self.tokens_per_s(state), 1),
                }
            )

        def on_save(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.is_world_process_zero:
                path = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                emit({"event": "checkpoint", "step": state.global_step, "steps": state.max_steps, "path": str(path)})

    return Events()


def train(spec: TrainSpec, on_event: EventSink | None = None) -> TrainResult:
    """Train a LoRA adapter as `spec` says, resuming from `out_dir`'s latest checkpoint; blocking.

    Returns at once, training nothing, when `out_dir/adapter` is already complete. Raises
    TrainingError when no example fits `max_seq_len` or `out_dir` belongs to another spec;
    TemplateMismatch (from the data) when the base model's chat template cannot be masked.
    """
    t_call = time.monotonic()
    main = _is_main_process()

    def emit(event: dict[str, Any]) -> None:
        if on_event is not None and main:
            on_event(event)

    done = read_result(spec.adapter_dir)
    _claim(spec, with_dataset=done is None)
    if done is not None:
        result = dataclasses.replace(done, reused=True)
        emit({"event": "train_done", **result.to_dict()})
        return result
    with _preserved_rng():  # the Trainer seeds the global generators: an in-process caller keeps its own
        result = _train(spec, emit, t_call, main)
    emit({"event": "train_done", **result.to_dict()})
    return result


@contextlib.contextmanager
def _preserved_rng() -> Iterator[None]:
    """Restore Python's, numpy's and torch's global random states, and torch's thread count, afterwards."""
    import numpy as np
    import torch

    py, npy, threads = random.getstate(), np.random.get_state(), torch.get_num_threads()
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py)
            np.random.set_state(npy)
            torch.set_num_threads(threads)


def _train(spec: TrainSpec, emit: EventSink, t_call: float, main: bool) -> TrainResult:
    """The training itself (see `train`), from the base model or the latest checkpoint."""
    import torch
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    from soar_async.train.data import PadCollator, encode_dataset, load_examples, pad_id

    device = resolve_device(spec.device)
    precision = resolve_precision(spec.dtype, device)
    if device == "cpu":
        torch.set_num_threads(cpu_threads(spec.threads))
    transformers.logging.set_verbosity_warning()

    tokenizer = AutoTokenizer.from_pretrained(spec.base_model)
    raw = load_examples(spec.dataset)
    encoded, stats = encode_dataset(tokenizer, raw, spec.max_seq_len)
    if not encoded:
        raise TrainingError(
            f"none of the {len(raw)} examples in {spec.dataset} fits in max_seq_len {spec.max_seq_len} tokens"
        )

    found = latest_checkpoint(spec.checkpoints_dir, clean=main)
    resumed_from = found[1] if found else 0
    bf16 = precision.autocast == torch.bfloat16
    fp16 = precision.autocast == torch.float16
    args = TrainingArguments(
        output_dir=str(spec.checkpoints_dir),
        per_device_train_batch_size=spec.per_device_batch_size,
        num_train_epochs=spec.epochs,
        learning_rate=spec.learning_rate,
        lr_scheduler_type=spec.lr_scheduler,
        weight_decay=0.0,
        max_grad_norm=spec.max_grad_norm,
        logging_strategy="steps",
        logging_steps=1,
        save_strategy="steps",
        save_steps=spec.save_steps,
        save_total_limit=2,  # the latest, and the one before in case the latest is cut short
        seed=spec.seed,
        data_seed=spec.seed,
        bf16=bf16,
        fp16=fp16,
        use_cpu=device == "cpu",
        gradient_checkpointing=spec.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if spec.gradient_checkpointing else None,
        include_num_input_tokens_seen="non_padding",
        label_names=["labels"],
        remove_unused_columns=False,
        dataloader_pin_memory=device == "cuda",
        ddp_find_unused_parameters=False,
        report_to="none",
        disable_tqdm=True,
    )
    # Gradient accumulation and warm-up in steps follow from the devices the arguments found
    # (processes under a launcher, or GPUs of one process); set on the arguments afterwards.
    per_step = args.train_batch_size * args.world_size
    accum = max(1, round(spec.effective_batch_size / per_step))
    batches_per_epoch = math.ceil(len(encoded) / per_step)
    steps = spec.epochs * math.ceil(batches_per_epoch / accum)
    args.gradient_accumulation_steps = accum
    args.warmup_steps = math.ceil(steps * spec.warmup_ratio)

    transformers.set_seed(spec.seed)
    model = AutoModelForCausalLM.from_pretrained(spec.base_model, dtype=precision.weights)
    model.config.use_cache = False
    lora = LoraConfig(
        r=spec.lora_rank,
        lora_alpha=spec.lora_alpha,
        lora_dropout=spec.lora_dropout,
        use_rslora=spec.use_rslora,
        target_modules=list(spec.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, lora)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    info = {
        "examples": stats.examples,
        "dropped": stats.dropped_too_long,
        "tokens": stats.tokens,
        "answer_tokens": stats.answer_tokens,
        "longest": stats.longest,
        "device": device,
        "dtype": str(precision.weights).removeprefix("torch."),
        "autocast": str(precision.autocast).removeprefix("torch.") if precision.autocast else None,
        "devices": args.world_size * max(1, args.n_gpu),
        "grad_accum": accum,
        "effective_batch_size": per_step * accum,
        "warmup_steps": args.warmup_steps,
        "trainable_params": trainable,
        "resumed_from_step": resumed_from,
        "threads": torch.get_num_threads() if device == "cpu" else None,
    }
    events = _events_callback(emit, info)
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=_ListDataset([e.as_dict() for e in encoded]),
        data_collator=PadCollator(pad_id(tokenizer)),
        callbacks=[events],
    )
    trainer.remove_callback(PrinterCallback)  # it prints every log to stdout
    trainer.remove_callback(ProgressCallback)
    trainer.train(resume_from_checkpoint=str(found[0]) if found else None)

    state = trainer.state
    losses = [float(h["loss"]) for h in state.log_history if "loss" in h]
    result = TrainResult(
        adapter_dir=spec.adapter_dir,
        steps=state.global_step,
        examples=stats.examples,
        dropped=stats.dropped_too_long,
        first_loss=losses[0] if losses else None,
        final_loss=losses[-1] if losses else None,
        seconds=round(time.monotonic() - t_call, 2),
        tokens_per_s=round(events.tokens_per_s(state), 1),
        resumed_from_step=resumed_from,
        tokens=stats.tokens,
        answer_tokens=stats.answer_tokens,
    )
    if trainer.args.should_save:
        _write_adapter(trainer, spec, result)
    trainer.accelerator.wait_for_everyone()
    return result


def _write_adapter(trainer: Any, spec: TrainSpec, result: TrainResult) -> None:
    """Save the adapter into a temporary folder, add the result, rename it into place, and drop
    the checkpoints (the adapter now marks the training as done)."""
    out = Path(spec.out_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".{ADAPTER_DIR}-", dir=out))
    try:
        trainer.save_model(str(tmp))
        (tmp / "training_args.bin").unlink(missing_ok=True)
        (tmp / RESULT_FILE).write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        tmp.chmod(0o755)
        if spec.adapter_dir.exists():  # a folder without a result: not ours to keep
            shutil.rmtree(spec.adapter_dir)
        os.replace(tmp, spec.adapter_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(spec.checkpoints_dir, ignore_errors=True)


class _ListDataset:
    """A map-style dataset over encoded examples (the Trainer only needs len and getitem)."""

    def __init__(self, rows: list[dict[str, list[int]]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.rows[i]


# --- using adapters -----------------------------------------------------------------------------


def dataset_loss(
    base_model: str | Path,
    adapter_dir: str | Path | None,
    jsonl: str | Path,
    max_seq_len: int,
    *,
    batch_size: int = 1,
    device: str = "auto",
) -> float:
    """Mean loss per answer token of the base model (with the adapter, if given) on a chat-example
    file, masked as in training; no gradients. For tests and benchmarks: did training help?"""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from soar_async.train.data import IGNORE_INDEX, PadCollator, encode_dataset, load_examples, pad_id

    dev = resolve_device(device)
    tokenizer = AutoTokenizer.from_pretrained(str(base_model))
    encoded, _ = encode_dataset(tokenizer, load_examples(jsonl), max_seq_len)
    if not encoded:
        raise ValueError(f"no example of {jsonl} fits in {max_seq_len} tokens")
    model = AutoModelForCausalLM.from_pretrained(str(base_model), dtype=resolve_precision("auto", dev).weights)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter_dir))
    model.to(dev).eval()
    collate = PadCollator(pad_id(tokenizer))
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(encoded), batch_size):
            batch = {k: v.to(dev) for k, v in collate(encoded[i : i + batch_size]).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            logits, labels = logits[:, :-1].float(), batch["labels"][:, 1:]
            loss = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
            )
            total += float(loss)
            count += int((labels != IGNORE_INDEX).sum())
    return total / count


def merge_adapter(base_model: str | Path, adapter_dir: str | Path, out_dir: str | Path) -> Path:
    """The base model with the adapter merged in (peft `merge_and_unload`), tokenizer and chat
    template included, as a Hugging Face folder `out_dir` (written beside it, renamed into place;
    returned at once when already complete). The merge itself is the vLLM engine's, the one the
    "merged" update mode serves."""
    from soar_async.llm.vllm_engine import MERGED_MARKER, _merge_into

    out = Path(out_dir)
    if (out / MERGED_MARKER).is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        _merge_into(Path(base_model), Path(adapter_dir), tmp, Path(adapter_dir).name)
        tmp.chmod(0o755)
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
