"""YAML configurations read into frozen dataclasses, checked key by key.

One home for what every configured command shares (``pretrain``, ``finetune``):

* :func:`build` turns a parsed mapping into a dataclass, recursively: an unknown key at any depth
  is a one-line :class:`~thinkingearth.errors.UserInputError` naming the key (``mae.mask_rato``)
  and the valid ones; a value of the wrong type names the key and what was expected; lists become
  tuples;
* :func:`read_config` reads a YAML file, or a configuration shipped in the package by name, and
  follows ``base: NAME_OR_FILE`` (keys merged over the base recursively by :func:`merge`: mappings
  merge, lists and scalars replace);
* :func:`plain` turns a dataclass dict back into YAML/JSON-safe types.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from thinkingearth.errors import UserInputError

__all__ = ["build", "merge", "plain", "read_config", "shipped_configs"]


def plain(value: Any) -> Any:
    """Mappings, lists and tuples of plain values as dicts and lists (YAML/JSON-safe)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin is tuple:
        return "a list"
    if origin is dict:
        return "a mapping"
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert it (lists to tuples)."""
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise UserInputError(f"{key} must not be null; expected {_type_name(tp)}")
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except UserInputError as error:
                errors.append(error)
        if len(errors) == 1:
            raise errors[0]
        raise UserInputError(f"{key} is {value!r}; expected {_type_name(tp)}")
    if origin is Literal:
        if value not in get_args(tp):
            raise UserInputError(
                f"{key} is {value!r}; expected one of: " + ", ".join(str(a) for a in get_args(tp))
            )
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, Sequence):
            raise UserInputError(f"{key} is {value!r}; expected a list")
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise UserInputError(f"{key} has {len(value)} values; expected {len(args)}")
        return tuple(
            _convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise UserInputError(f"{key} is {value!r}; expected a mapping")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise UserInputError(f"{key} is {value!r}; expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserInputError(f"{key} is {value!r}; expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise UserInputError(f"{key} is {value!r}; expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise UserInputError(f"{key} is {value!r}; expected a string")
        return value
    raise TypeError(f"unsupported annotation {tp!r} for {key}")  # pragma: no cover


def build(cls: Any, data: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``, checking every key and value (see the module)."""
    where = prefix or "the config"
    if not isinstance(data, Mapping):
        raise UserInputError(f"{where} is {data!r}; expected a mapping of keys to values")
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            full = f"{prefix}.{key}" if prefix else str(key)
            raise UserInputError(
                f"unknown key {full!r} in the config; expected one of: {', '.join(names)}"
            )
    kwargs = {}
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        kwargs[key] = _convert(value, hints[key], full)
    return cls(**kwargs)


def shipped_configs(folder: str) -> dict[str, Any]:
    """Configurations shipped in the package under ``thinkingearth/<folder>``: name -> resource."""
    root = resources.files("thinkingearth")
    for part in folder.split("/"):
        root = root / part
    if not root.is_dir():  # pragma: no cover - broken install
        return {}
    return {
        Path(entry.name).stem: entry
        for entry in root.iterdir()
        if entry.name.endswith(".yaml") and entry.is_file()
    }


def read_config(
    name_or_file: str | Path,
    folder: str,
    names: Callable[[], list[str]],
    chain: tuple[str, ...] = (),
) -> dict[str, Any]:
    """Read a YAML configuration (a file, or a shipped name), following ``base:`` chains.

    Args:
        name_or_file: A path to a YAML file, or the name of a configuration shipped under
            ``thinkingearth/<folder>``.
        folder: Package folder of the shipped configurations.
        names: The shipped names to list in the error for an unknown name.
        chain: Configurations already being read (``base`` cycles are an error).

    Returns:
        The merged mapping, without ``base``.

    Raises:
        UserInputError: Unknown name, missing or unreadable file, invalid YAML, an empty
            file, a mapping expected, or a ``base`` chain that loops.
    """
    text: str
    label = str(name_or_file)
    path = Path(name_or_file)
    shipped = shipped_configs(folder)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise UserInputError(f"config file {path} does not exist")
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise UserInputError(f"cannot read config {path}: {error.strerror}") from None
    elif label in shipped:
        text = shipped[label].read_text(encoding="utf-8")
    else:
        raise UserInputError(
            f"unknown config {label!r}: not a file and not a shipped config; expected a YAML file "
            f"or one of: {', '.join(names())}"
        )
    if label in chain:
        raise UserInputError(f"config {label!r} extends itself (base chain {' -> '.join(chain)})")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        first = str(error).strip().splitlines()[0]
        raise UserInputError(f"config {label} is not valid YAML ({first})") from None
    if data is None:  # an empty file, or only comments: most likely the wrong file
        raise UserInputError(
            f"config {label} is empty; expected a mapping of keys to values (e.g. base: NAME)"
        )
    if not isinstance(data, Mapping):
        raise UserInputError(f"config {label} must be a mapping of keys to values")
    data = dict(data)
    base = data.get("base")
    if base is not None:
        if not isinstance(base, str):
            raise UserInputError(f"base in {label} must be a config name or file, got {base!r}")
        base_path = Path(base)
        if not base_path.is_absolute() and path.is_file() and (path.parent / base_path).is_file():
            base = str(path.parent / base_path)
        merged = merge(read_config(base, folder, names, (*chain, label)), data)
        merged.pop("base", None)
        return merged
    return data


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Merge ``over`` into ``base`` recursively: mappings merge, everything else replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out
