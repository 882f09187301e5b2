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
