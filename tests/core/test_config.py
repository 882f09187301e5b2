"""Configuration layering and the errors for unknown keys and wrong types."""

from __future__ import annotations

from pathlib import Path

import pytest

from soar_async.config import Config, ConfigError, load

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
    assert c.bus.nats_urls == ["nats://a:1", "nats://b:2"]
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
    urls = ["nats://a:1", "nats://b:2"]
    assert load(overrides=["bus.nats_urls=['nats://a:1', 'nats://b:2']"], environ={}).bus.nats_urls == urls
    assert load(environ={"SOAR_BUS__NATS_URLS": "nats://a:1,nats://b:2"}).bus.nats_urls == urls
    assert load(overrides=["bus.nats_urls='nats://a:1', \"nats://b:2\""], environ={}).bus.nats_urls == urls
    assert load(overrides=["bus.nats_urls="], environ={}).bus.nats_urls == []
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
