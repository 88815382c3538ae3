"""CLI options generated from the config dataclasses: every field listed with its docstring."""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import typing
from pathlib import Path

import pytest

from karma.cli import build_parser
from karma.config import field_docs, load_config, overrides_from_options
from karma.serve.config import IndexConfig, ServeConfig
from karma.train.run_config import RunConfig

TINY = Path(__file__).resolve().parents[1] / "configs" / "debug" / "tiny.yaml"


def leaf_fields(cls: type, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, docstring) of every non-dataclass field of a nested config."""
    hints, docs, out = typing.get_type_hints(cls), field_docs(cls), []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out += leaf_fields(hints[f.name], f"{prefix}{f.name}.")
        else:
            out.append((f"{prefix}{f.name}", docs[f.name]))
    return out


def help_text(command: str) -> str:
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
    return re.sub(r"\s+", " ", sub.format_help())


def test_train_help_lists_every_run_config_field_with_its_docstring() -> None:
    text = help_text("train")
    fields = leaf_fields(RunConfig)
    assert len(fields) > 60
    for key, doc in fields:
        option = "--output-dir" if key == "output_dir" else f"--{key}"
        assert option in text, key
        if key != "output_dir":
            assert re.sub(r"\s+", " ", doc) in text, key


def test_every_command_help_formats() -> None:
    """argparse expands % in help strings: a docstring's "42 %" once broke `data prepare --help`."""
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for name, sub in commands.items():
        nested = [a for a in sub._actions if isinstance(a, argparse._SubParsersAction)]
        for parser_ in [sub, *(p for a in nested for p in a.choices.values())]:
            assert parser_.format_help(), name


def test_train_options_are_overrides() -> None:
    args = build_parser().parse_args(
        ["train", str(TINY), "data.batch_size=3", "--train.max_steps", "7", "--data.mode", "search"]
    )
    options = overrides_from_options(args)
    assert sorted(options) == ["data.mode=search", "train.max_steps=7"]
    config = load_config(RunConfig, TINY, [*args.overrides, *options])
    assert (config.train.max_steps, config.data.batch_size, config.data.mode) == (7, 3, "search")
    with pytest.raises(SystemExit):  # a Literal field only takes its values
        build_parser().parse_args(["train", str(TINY), "--data.mode", "both"])


@pytest.mark.parametrize(("command", "cls"), [("serve", ServeConfig), ("index", IndexConfig)])
def test_serve_and_index_options_come_from_their_config(command: str, cls: type) -> None:
    text = help_text(command)
    for f in dataclasses.fields(cls):
        assert f"--{f.name.replace('_', '-')}" in text, f.name
        assert re.sub(r"\s+", " ", field_docs(cls)[f.name]) in text, f.name
    args = build_parser().parse_args([command, "ARTIFACT"])
    assert cls(**{name: getattr(args, name) for name in args.config_fields}) == cls()


@pytest.fixture
def bars_on(monkeypatch: pytest.MonkeyPatch) -> typing.Iterator[None]:
    """The libraries' progress bars on and the variable unset, as in a fresh process (another
    test's `--no-progress` may have turned them off), and put back as they were afterwards."""
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as hf_logging

    were_on = hf_logging.is_progress_bar_enabled(), not hub_utils.are_progress_bars_disabled()
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "0")  # so that teardown restores its absence
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS")
    hf_logging.enable_progress_bar()
    hub_utils.enable_progress_bars()
    yield
    (hf_logging.enable_progress_bar if were_on[0] else hf_logging.disable_progress_bar)()
    (hub_utils.enable_progress_bars if were_on[1] else hub_utils.disable_progress_bars)()


@pytest.mark.usefixtures("bars_on")
def test_no_progress_hides_the_libraries_bars_too(tmp_path: Path) -> None:
    """transformers draws its own "Loading weights" bar; `--no-progress` must hide it as well."""
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as hf_logging

    from karma.cli import main

    # the handler then fails on the missing file: the flag is applied before it runs
    assert main(["experiment", str(tmp_path / "missing.yaml"), "--no-progress"]) == 2
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    assert not hf_logging.is_progress_bar_enabled()
    assert hub_utils.are_progress_bars_disabled()


@pytest.mark.usefixtures("bars_on")
def test_progress_bars_stay_without_the_flag(tmp_path: Path) -> None:
    from transformers.utils import logging as hf_logging

    from karma.cli import main

    assert main(["experiment", str(tmp_path / "missing.yaml")]) == 2
    assert "HF_HUB_DISABLE_PROGRESS_BARS" not in os.environ
    assert hf_logging.is_progress_bar_enabled()
