"""Typed configuration: dataclasses <-> YAML, with `key=value` overrides.

Every config in karma is a (nested) dataclass. A field's documentation is the string literal on the
line after it (as in litgpt); `field_docs` reads it so `--help` and error messages can show it.
`__post_init__` of a config raises `ValueError` naming the bad field; `from_dict` turns that, and
any unknown key or wrongly typed value, into a `ConfigError` that names the dotted key. A config
class may list old field names in `RENAMED_KEYS` (old -> new) and `REMOVED_KEYS` (old -> why), so
an old config fails with the new name rather than "unknown key".
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import itertools
import textwrap
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from karma.errors import ConfigError

T = TypeVar("T")


def field_docs(cls: type) -> dict[str, str]:
    """Map each field of dataclass `cls` to the docstring written on the line after it."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        body = ast.parse(source).body[0].body  # type: ignore[attr-defined]
        for node, nxt in itertools.pairwise(body):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def to_dict(obj: Any) -> Any:
    """Plain (YAML-safe) data from a config dataclass."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check (and where lossless, convert) `value` against type annotation `tp`."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is Literal:
        if value not in get_args(tp):
            choices = ", ".join(repr(a) for a in get_args(tp))
            raise ConfigError(f"{key}: {value!r} is not one of {choices}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_tp, *_) = get_args(tp) or (Any,)
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        _, val_tp = get_args(tp) or (Any, Any)
        return {k: _coerce(v, val_tp, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, prefix=f"{key}.")
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise ConfigError(f"{key}: expected a path, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass `cls` from plain data, naming the dotted key of any bad value."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    renamed: dict[str, str] = getattr(cls, "RENAMED_KEYS", {})
    removed: dict[str, str] = getattr(cls, "REMOVED_KEYS", {})
    for key in unknown:
        if key in renamed:
            raise ConfigError(f"{prefix}{key} was renamed to {prefix}{renamed[key]}")
        if key in removed:
            raise ConfigError(f"{prefix}{key} was removed: {removed[key]}")
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]!s}; valid keys here: {', '.join(sorted(names))}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{prefix}{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ValueError as exc:
        raise ConfigError(f"{prefix}{exc}") from None


def parse_override(text: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], YAML-parsed value)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. train.lr=3e-4)")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def merge_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `key=value` overrides to nested plain data (in place) and return it."""
    for text in overrides:
        path, value = parse_override(text)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {part} is not a section")
            node = child
        node[path[-1]] = value
    return data


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with a clear error for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})".replace("\n", " ")) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return data


def load_config(
    cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None
) -> T:
    """Config `cls` from an optional YAML file plus `key=value` overrides."""
    data = read_yaml(path) if path is not None else {}
    merge_overrides(data, overrides or [])
    try:
        return from_dict(cls, data)
    except ConfigError as exc:
        where = f"{path}: " if path is not None else ""
        raise ConfigError(f"{where}{exc}") from None


def save_config(obj: Any, path: str | Path) -> None:
    """Write a config dataclass as YAML (the run directory's resolved config)."""
    Path(path).write_text(yaml.safe_dump(to_dict(obj), sort_keys=False), encoding="utf-8")


# --- command-line options generated from config dataclasses ----------------------------------


def help_docs(cls: type) -> dict[str, str]:
    """`field_docs(cls)` ready for argparse help, which formats help strings with %."""
    return {name: doc.replace("%", "%%") for name, doc in field_docs(cls).items()}


def _option_help(doc: str, default: Any) -> str:
    shown = to_dict(default)
    text = f"{doc} (default: {'null' if shown is None else shown})" if doc else ""
    return text.replace("%", "%%")  # argparse formats help strings with %


def _default(f: dataclasses.Field) -> Any:  # type: ignore[type-arg]
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def add_override_options(
    parser: argparse.ArgumentParser, cls: type, prefix: str = "", skip: tuple[str, ...] = ()
) -> None:
    """One `--section.field VALUE` option per leaf field of nested dataclass `cls`.

    Help is the field's docstring; every option defaults to "not given" (a YAML config supplies
    the rest), and `overrides_from_options` turns the given ones into `section.field=value`
    overrides, parsed like the positional ones. Nested dataclasses become option groups.
    """
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    group: Any = parser
    if prefix:
        group = parser.add_argument_group(f"{prefix.rstrip('.')}", (cls.__doc__ or "").strip())
    nested = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        key = f"{prefix}{f.name}"
        if key in skip:
            continue
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            nested.append((key, tp))
            continue
        choices = get_args(tp) if get_origin(tp) is Literal else None
        group.add_argument(
            f"--{key}",
            dest=f"override:{key}",
            default=argparse.SUPPRESS,
            metavar=None if choices else (tp.__name__.upper() if isinstance(tp, type) else "VALUE"),
            choices=choices,
            help=_option_help(docs.get(f.name, ""), _default(f)),
        )
    for key, tp in nested:
        add_override_options(parser, tp, f"{key}.", skip)


def overrides_from_options(args: argparse.Namespace) -> list[str]:
    """The `section.field=value` overrides of the options `add_override_options` added."""
    return [
        f"{name.removeprefix('override:')}={value}"
        for name, value in vars(args).items()
        if name.startswith("override:")
    ]


def add_config_options(
    parser: argparse.ArgumentParser | Any, cls: type, skip: tuple[str, ...] = ()
) -> list[str]:
    """One `--field-name` option per field of flat dataclass `cls`, its default and docstring.

    Returns the field names added; build the config with `cls(**{n: getattr(args, n) ...})`.
    `X | None` fields take X; a Literal field takes one of its values.
    """
    hints = typing.get_type_hints(cls)
    docs = field_docs(cls)
    names = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in skip:
            continue
        tp = hints[f.name]
        if get_origin(tp) in (Union, types.UnionType):
            tp = next(a for a in get_args(tp) if a is not type(None))
        kwargs: dict[str, Any] = {}
        if get_origin(tp) is Literal:
            kwargs["choices"] = get_args(tp)
            tp = type(get_args(tp)[0])
        if tp not in (int, float, str):
            raise TypeError(f"{cls.__name__}.{f.name}: no command-line option for {tp}")
        default = _default(f)
        parser.add_argument(
            f"--{f.name.replace('_', '-')}",
            dest=f.name,
            type=tp,
            default=default,
            help=_option_help(docs.get(f.name, ""), default),
            **kwargs,
        )
        names.append(f.name)
    return names


class DeferredOptionsParser(argparse.ArgumentParser):
    """An `ArgumentParser` that adds some options only when it is used.

    `karma --help` builds every subcommand's parser; options generated from a config whose module
    imports torch (RunConfig) are added by `defer_options` the first time this subcommand parses
    its arguments or prints its help, so the top-level help stays quick.
    """

    deferred: list[Callable[[argparse.ArgumentParser], None]]

    def _add_deferred(self) -> None:
        pending, self.deferred = getattr(self, "deferred", []), []
        for add in pending:
            add(self)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:  # type: ignore[override]
        self._add_deferred()
        return super().parse_known_args(args, namespace)

    def format_help(self) -> str:
        self._add_deferred()
        return super().format_help()

    def format_usage(self) -> str:
        self._add_deferred()
        return super().format_usage()


def defer_options(
    parser: argparse.ArgumentParser, add: Callable[[argparse.ArgumentParser], None]
) -> None:
    """Run `add(parser)` when `parser` is first used (a `DeferredOptionsParser`), else now."""
    if isinstance(parser, DeferredOptionsParser):
        parser.deferred = [*getattr(parser, "deferred", []), add]
    else:
        add(parser)
