"""karma.config (dataclass <-> YAML, overrides, errors naming the dotted key) and TrainConfig."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

from karma.config import field_docs, from_dict, load_config, merge_overrides, save_config, to_dict
from karma.errors import ConfigError
from karma.train.config import TrainConfig


@dataclass
class Inner:
    """A nested section."""

    size: int = 2
    """number of things"""
    kind: Literal["a", "b"] = "a"
    """which kind"""
    rate: float = 0.5
    """a rate in [0, 1]"""

    def __post_init__(self) -> None:
        if not 0 <= self.rate <= 1:
            raise ValueError(f"rate: must be in [0, 1], got {self.rate}")


@dataclass
class Outer:
    """The top level."""

    name: str = "run"
    """run name"""
    inner: Inner = field(default_factory=Inner)
    """the nested section"""
    tags: list[str] = field(default_factory=list)
    """free tags"""
    out: Path | None = None
    """optional output path"""
    train: TrainConfig = field(default_factory=TrainConfig)
    """training"""


def test_nested_dataclasses_from_plain_data() -> None:
    config = from_dict(Outer, {"name": "x", "inner": {"size": 3, "kind": "b"}, "out": "a/b"})
    assert config.inner == Inner(size=3, kind="b")
    assert config.out == Path("a/b")
    assert to_dict(config)["inner"] == {"size": 3, "kind": "b", "rate": 0.5}


def test_overrides_set_nested_values_with_yaml_types(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("name: base\ninner:\n  size: 1\n")
    config = load_config(Outer, path, ["inner.size=7", "inner.rate=0.25", "tags=[x, y]"])
    assert (config.name, config.inner.size, config.inner.rate, config.tags) == (
        "base",
        7,
        0.25,
        ["x", "y"],
    )
    assert merge_overrides({}, ["a.b=1"]) == {"a": {"b": 1}}


def test_save_then_load_round_trips(tmp_path: Path) -> None:
    config = Outer(name="r", inner=Inner(size=4), train=TrainConfig(lr=1e-3, betas=(0.8, 0.9)))
    save_config(config, tmp_path / "c.yaml")
    assert load_config(Outer, tmp_path / "c.yaml") == config


def test_unknown_key_names_the_dotted_key_and_valid_keys() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown config key inner\.sise; valid keys here: kind, rate, size"
    ):
        from_dict(Outer, {"inner": {"sise": 3}})


def test_literal_value_outside_choices_is_rejected() -> None:
    with pytest.raises(ConfigError, match=r"inner\.kind: 'c' is not one of 'a', 'b'"):
        load_config(Outer, overrides=["inner.kind=c"])


def test_wrong_type_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"inner\.size: expected an integer, got 'many'"):
        from_dict(Outer, {"inner": {"size": "many"}})


def test_post_init_value_error_becomes_config_error_with_dotted_key() -> None:
    with pytest.raises(ConfigError, match=r"^inner\.rate: must be in \[0, 1\], got 2"):
        from_dict(Outer, {"inner": {"rate": 2}})


def test_override_without_equals_sign_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not of the form key=value"):
        load_config(Outer, overrides=["inner.size"])


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Outer, tmp_path / "nope.yaml")


def test_field_docs_reads_the_line_after_each_field() -> None:
    assert field_docs(Inner) == {
        "size": "number of things",
        "kind": "which kind",
        "rate": "a rate in [0, 1]",
    }


def test_every_train_config_field_has_a_docstring() -> None:
    docs = field_docs(TrainConfig)
    assert [f.name for f in dataclasses.fields(TrainConfig) if not docs.get(f.name)] == []


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lr=0", r"train\.lr: must be > 0"),
        ("train.grad_accum=0", r"train\.grad_accum: must be >= 1"),
        ("train.max_steps=0", r"train\.max_steps: must be >= 1"),
        ("train.semantic_warmup_steps=-1", r"train\.semantic_warmup_steps: must be >= 0"),
        ("train.max_epochs=0", r"train\.max_epochs: must be >= 1 or null"),
        ("train.clip_norm=-1", r"train\.clip_norm: must be > 0 or null"),
        ("train.betas=[0.9, 1.5]", r"train\.betas: must be two numbers in \[0, 1\)"),
        ("train.min_lr_ratio=2", r"train\.min_lr_ratio: must be in \[0, 1\]"),
        ("train.keep_checkpoints=0", r"train\.keep_checkpoints: must be >= 1"),
        ("train.num_threads=0", r"train\.num_threads: must be >= 1 or null"),
        ("train.precision=fp16", r"train\.precision: 'fp16' is not one of 'auto', 'fp32', 'bf16'"),
        ("train.distributed=zero3", r"train\.distributed: 'zero3' is not one of"),
        ("train.early_stopping_metric=''", r"train\.early_stopping_metric: must name"),
    ],
)
def test_train_config_errors_name_the_field(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(Outer, overrides=[override])


def test_train_config_accepts_null_limits_and_yaml_lists() -> None:
    config = load_config(
        Outer, overrides=["train.max_epochs=3", "train.clip_norm=null", "train.betas=[0.8, 0.95]"]
    )
    assert (config.train.max_epochs, config.train.clip_norm, config.train.betas) == (
        3,
        None,
        (0.8, 0.95),
    )
