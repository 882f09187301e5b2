"""Configuration layering, immutability, and the errors for unknown keys, wrong types and ranges."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from soar_async.config import BusSettings, Config, ConfigError, SearchConfig, apply, load

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_are_the_papers_numbers() -> None:
    c = Config()
    assert (c.search.samples_per_task, c.search.refinements_per_task) == (3000, 3000)
    assert (c.search.completions_per_sample_request, c.search.completions_per_refine_request) == (50, 4)
    assert (c.search.temperature, c.search.min_p) == (1.0, 0.05)
    assert (c.search.max_tokens_sample, c.search.max_tokens_refine) == (4096, 2048)
    assert c.search.stop_after_correct == 100 and c.search.rex_c == 20
    assert c.vote.c == 1000
    assert (c.train.lora_rank, c.train.lora_alpha, c.train.learning_rate, c.train.epochs) == (256, 32, 5e-5, 3)


def test_default_toml_matches_the_code() -> None:
    assert load(ROOT / "config" / "default.toml", environ={}) == Config()


def test_layers_file_env_cli(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[search]\nmin_p = 0.2\ntemperature = 0.7\n[bus]\nnats_urls = ['nats://x:1']\n")
    env = {"SOAR_SEARCH__MIN_P": "0.3", "SOAR_BUS__NATS_URLS": "nats://a:1, nats://b:2", "SOAR_OTHER": "x"}
    c = load(f, overrides=["search.seed=7"], environ=env)
    assert c.search.temperature == 0.7
    assert c.search.min_p == 0.3
    assert c.bus.nats_urls == ("nats://a:1", "nats://b:2")
    assert c.search.seed == 7
    assert load(f, overrides=["search.min_p=0.4"], environ=env).search.min_p == 0.4


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[search]\nnope = 1\n", "unknown key search.nope"),
        ("[serch]\nmin_p = 1\n", r"unknown section \[serch\]"),
        ("[search]\nmin_p = 'high'\n", "search.min_p must be float, got str"),
        ("[train]\nepochs = 2.5\n", "train.epochs must be int, got float"),
        ("[train]\nuse_rslora = 1\n", "train.use_rslora must be bool, got int"),
        ("[bus]\nnats_urls = 3\n", "bus.nats_urls must be a list"),
        ("[search\n", "bad TOML"),
    ],
)
def test_file_errors_name_the_key(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=needle) as info:
        load(f, environ={})
    assert str(f) in str(info.value)


def test_env_and_cli_errors_name_their_source() -> None:
    with pytest.raises(ConfigError, match=r"environment: unknown key search.mnp"):
        load(environ={"SOAR_SEARCH__MNP": "1"})
    with pytest.raises(ConfigError, match=r"--set: vote.c must be float"):
        load(overrides=["vote.c=lots"], environ={})
    with pytest.raises(ConfigError, match=r"section\.key=value"):
        load(overrides=["vote.c"], environ={})


def test_to_toml_round_trips(tmp_path: Path) -> None:
    c = load(overrides=["bus.nats_urls=['nats://h:4222']", "run.name='x y'"], environ={})
    f = tmp_path / "out.toml"
    f.write_text(c.to_toml())
    assert load(f, environ={}) == c


def test_string_keys_take_cli_and_env_text_as_is() -> None:
    """ARC ids that look like numbers stay strings (TOML would read an int and a float)."""
    assert load(overrides=["run.tasks=13713586"], environ={}).run.tasks == "13713586"
    assert load(overrides=["run.tasks=20818e16"], environ={}).run.tasks == "20818e16"
    assert load(environ={"SOAR_RUN__TASKS": "20818e16"}).run.tasks == "20818e16"
    assert load(environ={"SOAR_RUN__NAME": " 007 "}).run.name == "007"
    # one pair of surrounding quotes is stripped, nothing else is interpreted
    assert load(overrides=["run.name='x y'"], environ={}).run.name == "x y"
    assert load(overrides=['run.name="true"'], environ={}).run.name == "true"
    assert load(overrides=["model.path=C:\\new\\models"], environ={}).model.path == "C:\\new\\models"
    assert load(overrides=["run.name=''"], environ={}).run.name == ""


def test_list_keys_take_toml_arrays_or_commas() -> None:
    urls = ("nats://a:1", "nats://b:2")
    assert load(overrides=["bus.nats_urls=['nats://a:1', 'nats://b:2']"], environ={}).bus.nats_urls == urls
    assert load(environ={"SOAR_BUS__NATS_URLS": "nats://a:1,nats://b:2"}).bus.nats_urls == urls
    assert load(overrides=["bus.nats_urls='nats://a:1', \"nats://b:2\""], environ={}).bus.nats_urls == urls
    assert load(overrides=["bus.nats_urls="], environ={}).bus.nats_urls == ()
    with pytest.raises(ConfigError, match=r"--set: bus.nats_urls must be a list"):
        load(overrides=["bus.nats_urls=['a'"], environ={})
    with pytest.raises(ConfigError, match=r"environment: bus.nats_urls must be str, got int"):
        load(environ={"SOAR_BUS__NATS_URLS": "[1, 2]"})


def test_non_string_keys_still_parse_as_toml_and_errors_name_the_source() -> None:
    c = load(overrides=["search.seed=13713586", "vote.c=20818e16", "train.use_rslora=false"], environ={})
    assert c.search.seed == 13713586 and c.vote.c == 20818e16 and c.train.use_rslora is False
    with pytest.raises(ConfigError, match=r"environment: search.seed must be int, got str '20818e1x'"):
        load(environ={"SOAR_SEARCH__SEED": "20818e1x"})
    with pytest.raises(ConfigError, match=r"--set: search.seed must be int, got float"):
        load(overrides=["search.seed=20818e16"], environ={})
    with pytest.raises(ConfigError, match=r"--set: train.use_rslora must be bool, got str"):
        load(overrides=["train.use_rslora=yes"], environ={})


def test_ack_wait_default_agrees_with_the_runtime() -> None:
    from soar_async.bus.topology import QueueSpec

    assert Config().bus.ack_wait_s == QueueSpec("s", "w", "d").ack_wait == 30.0


def test_default_toml_lists_every_key_with_its_default() -> None:
    """Not only equal after loading (a missing key would load as its default): the file spells out
    every section and key, in the code's order."""
    data = tomllib.loads((ROOT / "config" / "default.toml").read_text())
    assert data == Config().to_dict()
    assert [list(v) for v in data.values()] == [list(v) for v in Config().to_dict().values()]


def test_config_is_frozen_and_hashable() -> None:
    c = load(overrides=["bus.nats_urls=nats://a:1,nats://b:2"], environ={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.search.min_p = 0.5  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.bus = BusSettings()  # type: ignore[misc]
    # slots: no new attributes either (Python 3.11's frozen+slots raises TypeError here, 3.12 AttributeError)
    with pytest.raises((AttributeError, TypeError)):
        c.search.typo = 1  # type: ignore[attr-defined]
    assert isinstance(c.bus.nats_urls, tuple)
    assert hash(c) == hash(load(overrides=["bus.nats_urls=['nats://a:1', 'nats://b:2']"], environ={}))
    assert len({Config(), Config(), c}) == 2


def test_apply_returns_a_new_config_and_leaves_the_old_one() -> None:
    base = Config()
    new = apply(base, {"search": {"min_p": 0.2}, "bus": {"nats_urls": ["nats://x:1"]}}, "test")
    assert (new.search.min_p, new.bus.nats_urls) == (0.2, ("nats://x:1",))
    assert base == Config() and base.search.min_p == 0.05 and base.bus.nats_urls == ()
    assert new.vote is base.vote  # untouched sections are shared, not copied
    assert apply(base, {}, "test") == base


def test_constructors_check_types_and_coerce_losslessly() -> None:
    assert SearchConfig(temperature=1).temperature == 1.0 and isinstance(SearchConfig(temperature=1).temperature, float)
    assert BusSettings(nats_urls=["nats://a:1"]).nats_urls == ("nats://a:1",)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^search.min_p must be float, got str 'x'$"):
        SearchConfig(min_p="x")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^search.min_p must be between 0 and 1, got 2.0$"):
        SearchConfig(min_p=2.0)
    with pytest.raises(ConfigError, match=r"^search must be SearchConfig, got dict"):
        Config(search={})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("setting", "needle"),
    [
        ("search.samples_per_task=-1", "search.samples_per_task must be at least 0, got -1"),
        ("search.completions_per_refine_request=0", "search.completions_per_refine_request must be at least 1, got 0"),
        ("search.temperature=-0.5", "search.temperature must be at least 0, got -0.5"),
        ("search.min_p=1.5", "search.min_p must be between 0 and 1, got 1.5"),
        ("search.min_p=-0.1", "search.min_p must be between 0 and 1, got -0.1"),
        ("search.min_p=nan", "search.min_p must be between 0 and 1, got nan"),
        ("search.rex_islands=0", "search.rex_islands must be at least 1, got 0"),
        ("vote.attempts=0", "vote.attempts must be at least 1, got 0"),
        ("vote.c=-1", "vote.c must be at least 0, got -1.0"),
        ("train.learning_rate=0", "train.learning_rate must be above 0, got 0.0"),
        ("train.warmup_ratio=2", "train.warmup_ratio must be between 0 and 1, got 2.0"),
        ("train.epochs=0", "train.epochs must be at least 1, got 0"),
        ("train.save_steps=0", "train.save_steps must be at least 1, got 0"),
        ("train.per_device_batch_size=0", "train.per_device_batch_size must be at least 1, got 0"),
        ("train.threads=-1", "train.threads must be at least 0, got -1"),
        ("train.max_grad_norm=-1", "train.max_grad_norm must be at least 0, got -1.0"),
        ("train.lora_dropout=1", "train.lora_dropout must be at least 0 and below 1, got 1.0"),
        ("model.max_concurrent_requests=0", "model.max_concurrent_requests must be at least 1, got 0"),
        ("sandbox.workers=-1", "sandbox.workers must be at least 0, got -1"),
        ("sandbox.memory_mb=32", r"sandbox.memory_mb must be 0 \(the default\) or at least 64, got 32"),
        ("sandbox.wall_s=-1", "sandbox.wall_s must be at least 0, got -1.0"),
        ("bus.ack_wait_s=0", "bus.ack_wait_s must be above 0, got 0.0"),
        ("bus.max_deliver=0", "bus.max_deliver must be at least 1, got 0"),
        ("bus.replicas=0", "bus.replicas must be from 1 to 5, got 0"),
        ("bus.replicas=6", "bus.replicas must be from 1 to 5, got 6"),
        ("run.log_level=loud", "run.log_level must be one of debug, info, warning, error, got 'loud'"),
    ],
)
def test_out_of_range_values_name_key_value_and_source(tmp_path: Path, setting: str, needle: str) -> None:
    with pytest.raises(ConfigError, match="^--set: " + needle + "$"):
        load(overrides=[setting], environ={})
    key, _, raw = setting.partition("=")
    section, _, name = key.partition(".")
    with pytest.raises(ConfigError, match="^environment: " + needle + "$"):
        load(environ={f"SOAR_{section.upper()}__{name.upper()}": raw})
    f = tmp_path / "bad.toml"
    value = f"'{raw}'" if section == "run" else raw
    f.write_text(f"[{section}]\n{name} = {value}\n")
    with pytest.raises(ConfigError, match=f"^config file {f}: " + needle + "$"):
        load(f, environ={})


def test_in_range_edges_are_accepted() -> None:
    c = load(
        overrides=[
            "search.min_p=0",
            "search.temperature=0",
            "sandbox.memory_mb=0",
            "bus.replicas=5",
            "vote.attempts=1",
        ],
        environ={"SOAR_RUN__LOG_LEVEL": "debug", "SOAR_SEARCH__SEED": "-3"},
    )
    assert (c.search.min_p, c.search.temperature, c.sandbox.memory_mb, c.bus.replicas) == (0.0, 0.0, 0, 5)
    assert (c.vote.attempts, c.run.log_level, c.search.seed) == (1, "debug", -3)


def test_tuples_round_trip_through_set_env_and_toml(tmp_path: Path) -> None:
    urls = ("nats://a:1", "nats://b:2")
    from_set = load(overrides=["bus.nats_urls=nats://a:1, nats://b:2"], environ={})
    from_env = load(environ={"SOAR_BUS__NATS_URLS": "['nats://a:1', 'nats://b:2']"})
    assert from_set.bus.nats_urls == from_env.bus.nats_urls == urls
    assert from_set.to_dict()["bus"]["nats_urls"] == list(urls)
    assert 'nats_urls = ["nats://a:1", "nats://b:2"]' in from_set.to_toml()
    f = tmp_path / "out.toml"
    f.write_text(from_set.to_toml())
    again = load(f, environ={})
    assert again == from_set and again.bus.nats_urls == urls


def test_sandbox_memory_floor_agrees_with_the_sandbox() -> None:
    from soar_async.config import SANDBOX_MIN_MEMORY_MB
    from soar_async.sandbox.types import MIN_MEMORY_MB

    assert SANDBOX_MIN_MEMORY_MB == MIN_MEMORY_MB


@pytest.mark.parametrize(
    ("setting", "needle"),
    [
        ("train.device=tpu", "train.device must be one of auto, cpu, cuda, got 'tpu'"),
        ("train.dtype=int8", "train.dtype must be one of auto, float32, bfloat16, float16, got 'int8'"),
        ("train.lr_scheduler=cosine_with_min_lr", "train.lr_scheduler must be one of cosine, linear, .*"),
        ("train.target_modules=[]", r"train.target_modules must be not empty, got \(\)"),
        (
            "train.per_device_batch_size=3",
            r"train.per_device_batch_size must be a divisor of train.effective_batch_size \(32\), got 3",
        ),
    ],
)
def test_trainer_settings_are_checked(setting: str, needle: str) -> None:
    with pytest.raises(ConfigError, match="^--set: " + needle):
        load(overrides=[setting], environ={})


def test_trainer_settings_take_lists_and_keep_the_papers_recipe() -> None:
    c = load(overrides=["train.target_modules=q_proj,v_proj", "train.per_device_batch_size=8"], environ={})
    assert c.train.target_modules == ("q_proj", "v_proj") and c.train.per_device_batch_size == 8
    t = Config().train
    assert (t.device, t.dtype, t.threads, t.gradient_checkpointing, t.max_grad_norm) == ("auto", "auto", 0, False, 1.0)
    assert len(t.target_modules) == 7 and t.effective_batch_size % t.per_device_batch_size == 0
