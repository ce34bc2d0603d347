"""Typed configs from YAML: dataclasses in, clear errors out.

Each stage defines its own dataclasses next to the code that uses them (`data.mixture`,
`train.config`, ...); this module only turns plain YAML/dicts into them, checking names and types,
and applies `key.sub=value` overrides from the command line. Errors name the file and the field, one
way everywhere: `recipes/x.yaml: phases[0].lr.peak: expected a number` (`config_error`). Dataclass
fields marked `metadata={"internal": True}` are not recipe keys: refused, and never listed as known.
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

__all__ = [
    "ConfigError",
    "apply_overrides",
    "config_error",
    "field_path",
    "from_dict",
    "load_yaml",
    "parse_override",
    "public_fields",
    "to_dict",
    "within",
]

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
                    raise ConfigError(f"override {text!r}: {_spelled(keys[: i + 1])} is not a mapping")
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
        raise config_error("", _spelled(path[:-1]), f"no item {key!r} in a list of {len(node)}") from None


def _spelled(keys: list[str]) -> str:
    """Override keys as a field path: ['phases', '0', 'lr'] -> 'phases[0].lr'."""
    out = ""
    for k in keys:
        out = field_path(out, int(k) if k.isdigit() else k)
    return out


def field_path(path: str, key: str | int) -> str:
    """One step deeper: ('phases', 0) -> 'phases[0]'; ('phases[0]', 'lr') -> 'phases[0].lr'."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else str(key)


def config_error(source: str | Path | None, path: str, reason: str) -> ConfigError:
    """THE spelling of a config error: 'FILE: field.path[0].sub: reason' (empty parts left out)."""
    source = str(source or "")
    message = ": ".join(part for part in (source, path, reason) if part)
    return ConfigError(message, source=source, path=path, reason=reason)


def within(error: ConfigError, source: str | Path | None, path: str) -> ConfigError:
    """`error`, raised about a value inside field `path` of `source` (its own path relative to it),
    spelled with the full path: within('rules[0].keep: ...', 'r.yaml', 'steps[1]') ->
    'r.yaml: steps[1].rules[0].keep: ...'. An error that already names another file is left as it is."""
    if error.source and error.source != str(source or ""):
        return error
    inner = error.path
    full = path + inner if inner.startswith("[") else ".".join(p for p in (path, inner) if p)
    return config_error(error.source or source, full, error.reason)


def public_fields(tp: Any) -> dict[str, dataclasses.Field]:
    """A dataclass's recipe keys: init fields not marked internal."""
    return {f.name: f for f in dataclasses.fields(tp) if f.init and not f.metadata.get("internal")}


def from_dict(cls: type[T], data: Any, where: str | Path = "", *, path: str = "") -> T:
    """Build dataclass `cls` from a dict, recursively, checking unknown keys and value types.

    `where`: the file (or a label) errors name; `path`: the field that holds `data` in it."""
    return _convert(cls, data, str(where), path)


def _convert(tp: Any, value: Any, src: str, path: str) -> Any:
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return _convert_dataclass(tp, value, src, path)
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return _convert_union(tp, value, src, path)
    if origin is typing.Literal:
        if value not in typing.get_args(tp):
            raise config_error(src, path, f"{value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if origin in (list, tuple):
        return _convert_sequence(tp, origin, value, src, path)
    if origin is dict:
        if not isinstance(value, dict):
            raise config_error(src, path, f"expected a mapping, got {value!r}")
        kt, vt = typing.get_args(tp) or (Any, Any)
        return {
            _convert(kt, k, src, path): _convert(vt, v, src, field_path(path, str(k)))
            for k, v in value.items()
        }
    scalar = _SCALARS.get(tp)
    if scalar is None:
        return value
    try:
        return scalar(value)
    except ValueError as e:
        raise config_error(src, path, str(e)) from None


def _convert_dataclass(tp: Any, value: Any, src: str, path: str) -> Any:
    if isinstance(value, tp):
        return value
    if not isinstance(value, dict):
        raise config_error(src, path, f"expected a mapping for {tp.__name__}, got {value!r}")
    hints = typing.get_type_hints(tp)
    fields = public_fields(tp)
    unknown = sorted(set(value) - set(fields))
    if unknown:
        raise config_error(
            src, path, f"unknown field(s) {', '.join(map(str, unknown))}; known: {', '.join(sorted(fields))}"
        )
    kwargs = {k: _convert(hints[k], v, src, field_path(path, k)) for k, v in value.items()}
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise config_error(src, path, f"missing required field(s) {', '.join(missing)}")
    try:
        return tp(**kwargs)
    except ConfigError as e:
        raise within(e, src, path) from None
    except (ValueError, TypeError) as e:
        raise config_error(src, path, str(e)) from None


def _convert_union(tp: Any, value: Any, src: str, path: str) -> Any:
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    errors = []
    for a in args:
        if a is type(None):
            continue
        try:
            return _convert(a, value, src, path)
        except ConfigError as e:
            errors.append(e)
    if len(errors) == 1:
        raise errors[0]
    raise config_error(src, path, f"{value!r} matches none of {tp}")


def _convert_sequence(tp: Any, origin: Any, value: Any, src: str, path: str) -> Any:
    if not isinstance(value, list | tuple):
        raise config_error(src, path, f"expected a list, got {value!r}")
    args = typing.get_args(tp) or (Any, ...)
    if origin is tuple and args[-1] is not Ellipsis:  # fixed length: tuple[float, float]
        if len(value) != len(args):
            raise config_error(src, path, f"expected {len(args)} values, got {len(value)}: {value!r}")
        return tuple(_convert(a, v, src, field_path(path, i)) for i, (a, v) in enumerate(zip(args, value)))
    items = [_convert(args[0], v, src, field_path(path, i)) for i, v in enumerate(value)]
    return items if origin is list else tuple(items)


def _to_float(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"expected a number, got {value!r}")
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"expected a number, got {value!r}") from None


def _to_int(value: Any) -> int:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    return value


def _to_bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true/false, got {value!r}")
    return value


def _to_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {value!r}")
    return value


def _to_path(value: Any) -> Path:
    if not isinstance(value, str | Path):
        raise ValueError(f"expected a path, got {value!r}")
    return Path(value)


_SCALARS: dict[Any, Callable[[Any], Any]] = {
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
