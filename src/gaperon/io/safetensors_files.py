"""Sharded safetensors: write them the way `transformers` does, read them lazily with checked headers.

Reading validates each file's header ourselves before handing it to `safe_open`, so a corrupt or
truncated download gives one clear message naming the file instead of a Rust error, and shapes are
known before any tensor data is touched (an 8B folder is checked in milliseconds).
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from gaperon.errors import ModelFormatError, UsageError

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
# A header larger than this is not a real safetensors header (the format caps it at 100 MB).
_MAX_HEADER = 100_000_000

_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}


def parse_size(size: int | str) -> int:
    """'2GB' -> 2_000_000_000, '500MiB' -> 524_288_000 (transformers' convention: GB = 10^9)."""
    if isinstance(size, int):
        value = size
    else:
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(size))
        if not m or m.group(2).upper() not in _UNITS:
            raise UsageError(f"bad size {size!r}: use e.g. 2GB, 500MB, 1GiB or a number of bytes")
        value = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if value <= 0:
        raise UsageError(f"size must be positive, got {size!r}")
    return value


def write_sharded(
    names_and_sizes: Iterable[tuple[str, int]],
    get_tensor: Callable[[str], torch.Tensor],
    folder: Path,
    max_shard_size: int | str = "2GB",
) -> list[str]:
    """Write tensors into `folder` as `model.safetensors`, or as numbered shards plus the index
    when they exceed `max_shard_size`. Tensors are produced shard by shard (`get_tensor(name)`),
    so at most one shard is held in memory. Returns the file names written."""
    limit = parse_size(max_shard_size)
    shards: list[list[str]] = [[]]
    used = 0
    total = 0
    for name, nbytes in names_and_sizes:
        if shards[-1] and used + nbytes > limit:
            shards.append([])
            used = 0
        shards[-1].append(name)
        used += nbytes
        total += nbytes
    if len(shards) == 1:
        files = [SINGLE_NAME]
    else:
        files = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map: dict[str, str] = {}
    for file, names in zip(files, shards):
        tensors = {n: get_tensor(n).contiguous() for n in names}
        save_file(tensors, str(folder / file), metadata={"format": "pt"})
        os.chmod(folder / file, 0o666 & ~_umask())  # safetensors writes 0600; a model folder is for sharing
        weight_map.update({n: file for n in names})
        del tensors
    if len(files) > 1:
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        (folder / INDEX_NAME).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return files


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@dataclass(frozen=True)
class TensorInfo:
    file: Path
    dtype: str
    shape: tuple[int, ...]


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Tensor names -> (file, dtype, shape) from a safetensors header; errors name the file."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ModelFormatError(f"{path}: not a safetensors file (only {size} bytes)")
            (n,) = struct.unpack("<Q", head)
            if n > _MAX_HEADER:
                raise ModelFormatError(f"{path}: not a safetensors file (header length {n} is absurd)")
            if 8 + n > size:
                raise ModelFormatError(
                    f"{path}: truncated safetensors file: header needs {8 + n} bytes, file has {size}"
                )
            raw = f.read(n)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such safetensors file") from None
    try:
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise ValueError("header is not a JSON object")
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelFormatError(f"{path}: corrupt safetensors header ({e})") from None
    out: dict[str, TensorInfo] = {}
    data_end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            begin, end = entry["data_offsets"]
            out[name] = TensorInfo(path, str(entry["dtype"]), tuple(int(d) for d in entry["shape"]))
        except (KeyError, TypeError, ValueError):
            raise ModelFormatError(f"{path}: corrupt safetensors header entry for tensor {name!r}") from None
        data_end = max(data_end, int(end))
    if 8 + n + data_end > size:
        raise ModelFormatError(
            f"{path}: truncated safetensors file: tensors need {8 + n + data_end} bytes, file has {size}"
        )
    return out


class TensorStore:
    """Every tensor of a set of safetensors files, by name, loaded one at a time on demand."""

    def __init__(self, infos: dict[str, TensorInfo]) -> None:
        self.infos = infos
        self._handles: dict[Path, Any] = {}  # safetensors' safe_open handles (untyped)

    @classmethod
    def from_files(cls, files: Iterable[Path]) -> TensorStore:
        infos: dict[str, TensorInfo] = {}
        for file in files:
            for name, info in read_header(file).items():
                if name in infos:
                    raise ModelFormatError(f"{file}: tensor {name!r} also appears in {infos[name].file}")
                infos[name] = info
        return cls(infos)

    def get(self, name: str) -> torch.Tensor:
        info = self.infos[name]
        handle = self._handles.get(info.file)
        if handle is None:
            try:
                handle = safe_open(str(info.file), framework="pt")
            except (SafetensorError, OSError) as e:
                raise ModelFormatError(f"{info.file}: cannot open safetensors file ({e})") from None
            self._handles[info.file] = handle
        try:
            return handle.get_tensor(name)
        except (SafetensorError, OSError) as e:
            raise ModelFormatError(f"{info.file}: cannot read tensor {name!r} ({e})") from None

    def close(self) -> None:
        self._handles.clear()
