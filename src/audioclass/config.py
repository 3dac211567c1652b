"""Typed stage configs, built from ``params.yaml`` and checked where they enter.

Each stage declares a frozen dataclass for its ``params.yaml`` section. The
dataclass fields are the only keys the section may have; all are required, so
``params.yaml`` is the one place defaults live. Types are checked here; ranges
and cross-field rules are checked in each dataclass's ``__post_init__`` with
:func:`require`. Every error names the full key, e.g.
``params.yaml: augment.copies: expected an integer >= 1, got 0``, with the
name of the params file actually read.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from audioclass.errors import ConfigError

T = TypeVar("T")

# The sections of params.yaml, one per stage (or family of stages) that reads it.
SECTIONS = (
    "extract",
    "split",
    "augment",
    "spectrograms",
    "raw_vectors",
    "classical",
    "cnn1d",
    "features",
    "feature_models",
    "tune",
    "train",
    "embed",
    "head",
    "ensemble",
    "analyse",
)


# The params file this process read last: what a ParamError names. One stage runs per process.
_params_file = "params.yaml"


class ParamError(ConfigError):
    """A parameter that passed its own checks but does not fit the data (a fold that is not there,
    fmax above Nyquist), raised where the data is known: ``<params file>: <key>: <message>``,
    naming the file :func:`load_params` read."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{_params_file}: {key}: {message}")


class _KeyError(ConfigError):
    """A ConfigError that still lacks the section prefix of its key."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


def require(condition: bool, key: str, expected: str, got: Any) -> None:
    """Raise a ConfigError for ``key`` unless ``condition`` holds."""
    if not condition:
        raise _KeyError(key, f"expected {expected}, got {got!r}")


def load_params(path: str | Path = "params.yaml") -> dict:
    """Read the whole params file as a dict, rejecting a top-level section that no stage reads."""
    global _params_file
    params = _read_yaml(path)
    unknown = sorted(set(params) - set(SECTIONS), key=str)
    if unknown:
        guess = difflib.get_close_matches(str(unknown[0]), SECTIONS, n=1)
        hint = f"did you mean {guess[0]!r}? " if guess else ""
        raise ConfigError(f"{path}: {unknown[0]}: unknown section; {hint}expected sections among {list(SECTIONS)}")
    _params_file = str(path)
    return params


def _read_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        with path.open() as f:
            params = yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: params file not found; expected a YAML file of stage sections (--params)") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err}); expected the syntax fixed where it points".replace("\n", " ")) from None
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: expected a mapping of stage sections")
    return params


def stage_config(cls: type[T], params: Mapping, section: str, source: str = "params.yaml") -> T:
    """Build ``cls`` from ``params[section]``; errors read ``source: section.key: …``."""
    if section not in params:
        raise ConfigError(f"{source}: {section}: missing section; expected a '{section}:' section as in the project's params.yaml")
    try:
        return from_mapping(cls, params[section])
    except _KeyError as err:
        raise ConfigError(f"{source}: {section}.{err.key}: {err.message}") from None


def file_config(cls: type[T], path: str | Path) -> T:
    """Build ``cls`` from a whole YAML file (e.g. tuned hyperparameters); errors read ``path: key: …``."""
    try:
        return from_mapping(cls, _read_yaml(path))
    except _KeyError as err:
        raise ConfigError(f"{path}: {err.key}: {err.message}") from None


def nested_config(cls: type[T], raw: Any, key: str) -> T:
    """Build ``cls`` from ``raw`` within another config's checks; errors name ``key.<field>``."""
    try:
        return from_mapping(cls, raw)
    except _KeyError as err:
        raise _KeyError(f"{key}.{err.key}".rstrip("."), err.message) from None


def from_mapping(cls: type[T], raw: Any) -> T:
    """Build dataclass ``cls`` from ``raw``, rejecting unknown, missing or mistyped keys."""
    if not isinstance(raw, Mapping):
        raise _KeyError("", f"expected a mapping, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in raw:
        if key not in fields:
            raise _KeyError(str(key), f"unknown key; expected one of {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name in fields:
        if name not in raw:
            raise _KeyError(name, "missing key")
        try:
            values[name] = _convert(raw[name], hints[name], name)
        except _KeyError as err:
            # Nested dataclasses report their own key; prefix it with ours.
            raise _KeyError(f"{name}.{err.key}".rstrip("."), err.message) from None
        except _TypeMismatch as err:
            raise _KeyError(name, str(err)) from None
    return cls(**values)


class _TypeMismatch(Exception):
    pass


def _convert(value: Any, hint: Any, name: str) -> Any:
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_mapping(hint, value)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, name)
            except _TypeMismatch:
                continue
        raise _TypeMismatch(f"expected {_describe(hint)}, got {value!r}")
    if origin is Literal:
        choices = typing.get_args(hint)
        if value not in choices:
            raise _TypeMismatch(f"expected one of {list(choices)}, got {value!r}")
        return value
    if origin in (tuple, list):
        (item,) = typing.get_args(hint)[:1]
        if not isinstance(value, (list, tuple)):
            raise _TypeMismatch(f"expected a list, got {value!r}")
        return tuple(_convert(v, item, name) for v in value)
    if hint is dict:  # a free-form mapping (e.g. a search space); its dataclass checks the contents
        if not isinstance(value, Mapping):
            raise _TypeMismatch(f"expected a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise _TypeMismatch(f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _TypeMismatch(f"expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _TypeMismatch(f"expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise _TypeMismatch(f"expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint!r} for {name}")  # a bug, not user input


def _describe(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    names = " or ".join(getattr(a, "__name__", str(a)) for a in args)
    return f"{names} or null" if type(None) in typing.get_args(hint) else names
