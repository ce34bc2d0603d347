"""Typed configs from YAML: dataclasses in, clear errors out.

Each stage defines its own dataclasses next to the code that uses them (`data.mixture`,
`train.config`, ...); this module only turns plain YAML/dicts into them, checking names and types,
and applies `key.sub=value` overrides from the command line. Errors name the file and the field.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from gaperon.errors import ConfigError

__all__ = ["ConfigError", "apply_overrides", "from_dict", "load_yaml", "parse_override", "to_dict"]

T = TypeVar("T")


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 text ({e})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.lr=3e-4' -> (['train', 'lr'], 0.0003); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.sub=value")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):  # YAML 1.1 reads "3e-4" as a string; a user means a number
        try:
            value = float(value) if value.strip() not in ("nan", "inf", "-inf") else value
        except ValueError:
            pass
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Return a copy of `data` with each 'a.b.c=value' set. List items are addressed by index."""
    import copy

    out = copy.deepcopy(data)
    for text in overrides:
        keys, value = parse_override(text)
        node: Any = out
        for i, k in enumerate(keys[:-1]):
            if isinstance(node, list):
                node = node[_list_index(node, k, keys[: i + 1])]
            else:
                node = node.setdefault(k, {})
                if not isinstance(node, dict | list):
                    raise ConfigError(f"override {text!r}: {'.'.join(keys[: i + 1])} is not a mapping")
        last = keys[-1]
        if isinstance(node, list):
            node[_list_index(node, last, keys)] = value
        else:
            node[last] = value
    return out


def _list_index(node: list, key: str, path: list[str]) -> int:
    try:
        idx = int(key)
        node[idx]
        return idx
    except (ValueError, IndexError):
        raise ConfigError(f"{'.'.join(path)}: no item {key!r} in a list of {len(node)}") from None


def from_dict(cls: type[T], data: Any, where: str = "") -> T:
    """Build dataclass `cls` from a dict, recursively, checking unknown keys and value types."""
    return _convert(cls, data, where or cls.__name__)


def _convert(tp: Any, value: Any, where: str) -> Any:
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return _convert_dataclass(tp, value, where)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _convert_union(tp, value, where)
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if origin in (list, tuple):
        return _convert_sequence(tp, origin, value, where)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        kt, vt = typing.get_args(tp) or (Any, Any)
        return {_convert(kt, k, where): _convert(vt, v, f"{where}.{k}") for k, v in value.items()}
    scalar = _SCALARS.get(tp)
    return scalar(value, where) if scalar is not None else value


def _convert_dataclass(tp: Any, value: Any, where: str) -> Any:
    if isinstance(value, tp):
        return value
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
    hints = typing.get_type_hints(tp)
    fields = {f.name: f for f in dataclasses.fields(tp) if f.init}
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise ConfigError(
            f"{where}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}"
        )
    kwargs = {k: _convert(hints[k], v, f"{where}.{k}") for k, v in value.items()}
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{where}: missing required field(s) {', '.join(missing)}")
    try:
        return tp(**kwargs)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{where}: {e}") from None


def _convert_union(tp: Any, value: Any, where: str) -> Any:
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    errors = []
    for a in args:
        if a is type(None):
            continue
        try:
            return _convert(a, value, where)
        except ConfigError as e:
            errors.append(str(e))
    raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {tp}")


def _convert_sequence(tp: Any, origin: Any, value: Any, where: str) -> Any:
    if not isinstance(value, list | tuple):
        raise ConfigError(f"{where}: expected a list, got {value!r}")
    args = typing.get_args(tp) or (Any, ...)
    if origin is tuple and args[-1] is not Ellipsis:  # fixed length: tuple[float, float]
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}: {value!r}")
        return tuple(_convert(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    items = [_convert(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)]
    return items if origin is list else tuple(items)


def _to_float(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ConfigError(f"{where}: expected a number, got {value!r}")
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"{where}: expected a number, got {value!r}") from None


def _to_int(value: Any, where: str) -> int:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}: expected an integer, got {value!r}")
    return value


def _to_bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    return value


def _to_str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def _to_path(value: Any, where: str) -> Path:
    if not isinstance(value, str | Path):
        raise ConfigError(f"{where}: expected a path, got {value!r}")
    return Path(value)


_SCALARS: dict[Any, Callable[[Any, str], Any]] = {
    float: _to_float,
    int: _to_int,
    bool: _to_bool,
    str: _to_str,
    Path: _to_path,
}


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain YAML-able dict (Paths as strings)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list | tuple):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj
