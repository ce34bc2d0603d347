"""A GGUF file's layout, read lazily: metadata values are decoded when asked for, tensors stay mapped.

`gguf.GGUFReader` builds a numpy view for every part of every field up front (one per vocabulary
string: ~100k views for a 49k-token vocabulary), which took most of a GGUF model's load time. Here
the header is walked once with `struct` over an `mmap`, each key remembers where its value lies, and
only the keys a caller reads are decoded. Tensor data comes back as plain ndarrays over the map
(no copy, no `np.memmap` slicing overhead). Every structural problem is a `ModelFormatError` that
names the file.
"""

from __future__ import annotations

import contextlib
import mmap
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gaperon.errors import ModelFormatError

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
# GGUF value types -> struct format of one scalar (8 = string, 9 = array are handled apart).
_SCALAR = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_NUMPY = {k: np.dtype(f"<{v}") for k, v in _SCALAR.items()}
_STRING, _ARRAY = 8, 9
_U64 = struct.Struct("<Q")
# Plain tensor types (F32, F16) -> numpy dtype; every other type (BF16 too) is rows of raw bytes.
_PLAIN_TENSOR = {0: np.float32, 1: np.float16}


class _Truncated(Exception):
    """Internal: a read ran past the end of the file (turned into a ModelFormatError naming it)."""


@dataclass(frozen=True)
class GGUFTensor:
    name: str
    shape: tuple[int, ...]  # numpy / PyTorch order (rows first), the reverse of GGUF's dims
    ggml_type: int
    offset: int  # absolute, in the file
    n_bytes: int

    @property
    def type_name(self) -> str:
        from gguf import GGMLQuantizationType

        try:
            return GGMLQuantizationType(self.ggml_type).name
        except ValueError:
            return f"type {self.ggml_type}"


class _Cursor:
    def __init__(self, buf: mmap.mmap | bytes, pos: int = 0) -> None:
        self.buf, self.pos = buf, pos

    def unpack(self, fmt: str) -> Any:
        size = struct.calcsize("<" + fmt)
        if self.pos + size > len(self.buf):
            raise _Truncated
        value = struct.unpack_from("<" + fmt, self.buf, self.pos)
        self.pos += size
        return value[0] if len(value) == 1 else value

    def string(self) -> str:
        n = self.unpack("Q")
        if self.pos + n > len(self.buf):
            raise _Truncated
        raw = self.buf[self.pos : self.pos + n]
        self.pos += n
        return bytes(raw).decode("utf-8", errors="replace")

    def strings(self, count: int) -> list[str]:
        """`count` strings back to back (a vocabulary: the one loop that matters for speed)."""
        buf, pos, end, out = self.buf, self.pos, len(self.buf), []
        unpack = _U64.unpack_from
        for _ in range(count):
            if pos + 8 > end:
                raise _Truncated
            n = unpack(buf, pos)[0]
            pos += 8
            if pos + n > end:
                raise _Truncated
            out.append(buf[pos : pos + n].decode("utf-8", errors="replace"))
            pos += n
        self.pos = pos
        return out

    def skip_strings(self, count: int) -> None:
        buf, pos, end = self.buf, self.pos, len(self.buf)
        unpack = _U64.unpack_from
        for _ in range(count):
            if pos + 8 > end:
                raise _Truncated
            pos += 8 + unpack(buf, pos)[0]
        if pos > end:
            raise _Truncated
        self.pos = pos

    def skip_value(self, vtype: int) -> None:
        if vtype == _STRING:
            n = self.unpack("Q")
            self.pos += n
        elif vtype == _ARRAY:
            etype, count = self.unpack("IQ")
            if etype in _SCALAR:
                self.pos += struct.calcsize("<" + _SCALAR[etype]) * count
            elif etype == _STRING:
                self.skip_strings(count)
            else:
                for _ in range(count):
                    self.skip_value(etype)
        elif vtype in _SCALAR:
            self.pos += struct.calcsize(_SCALAR[vtype])
        else:
            raise ValueError(f"unknown value type {vtype}")
        if self.pos > len(self.buf):
            raise _Truncated

    def value(self, vtype: int) -> Any:
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, count = self.unpack("IQ")
            if etype in _NUMPY:
                size = _NUMPY[etype].itemsize * count
                if self.pos + size > len(self.buf):
                    raise _Truncated
                arr = np.frombuffer(self.buf, dtype=_NUMPY[etype], count=count, offset=self.pos)
                self.pos += size
                return arr.tolist()
            if etype == _STRING:
                return self.strings(count)
            return [self.value(etype) for _ in range(count)]
        if vtype in _SCALAR:
            return self.unpack(_SCALAR[vtype])
        raise ValueError(f"unknown value type {vtype}")


class GGUFFile(Mapping[str, Any]):
    """The metadata of a GGUF file as a read-only mapping (values decoded on first access), and its
    tensors. Keep it open while tensor arrays are in use; `close()` releases the map."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: no such GGUF file")
        with open(self.path, "rb") as f:
            magic = f.read(4)
            if magic != GGUF_MAGIC:
                raise ModelFormatError(
                    f"{self.path}: not a GGUF file (starts with {magic!r}, expected {GGUF_MAGIC!r})"
                )
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        self._where: dict[str, tuple[int, int]] = {}  # key -> (value type, offset of the value)
        self._cache: dict[str, Any] = {}
        try:
            self.tensors = self._read_layout()
        except _Truncated:
            raise ModelFormatError(
                f"{self.path}: truncated GGUF file (the header runs past its end)"
            ) from None
        except (ValueError, UnicodeDecodeError) as e:
            raise ModelFormatError(f"{self.path}: corrupt GGUF header ({e})") from None

    def _read_layout(self) -> list[GGUFTensor]:
        cur = _Cursor(self._map, 4)
        version = cur.unpack("I")
        if version not in (2, 3):
            raise ValueError(f"GGUF version {version} (supported: 2, 3; big-endian files are not)")
        n_tensors, n_kv = cur.unpack("QQ")
        for _ in range(n_kv):
            key = cur.string()
            vtype = cur.unpack("I")
            self._where[key] = (vtype, cur.pos)
            cur.skip_value(vtype)
        infos = []
        for _ in range(n_tensors):
            name = cur.string()
            n_dims = cur.unpack("I")
            dims = [cur.unpack("Q") for _ in range(n_dims)]
            ggml_type, offset = cur.unpack("IQ")
            infos.append((name, tuple(reversed(dims)), ggml_type, offset))
        align = int(self.get("general.alignment", DEFAULT_ALIGNMENT))
        start = -(-cur.pos // align) * align
        size = len(self._map)
        tensors = []
        for name, shape, ggml_type, offset in infos:
            t = GGUFTensor(name, shape, ggml_type, start + offset, _n_bytes(shape, ggml_type))
            if t.offset + t.n_bytes > size:
                raise ModelFormatError(
                    f"{self.path}: truncated GGUF file: tensor {name!r} needs bytes up to "
                    f"{t.offset + t.n_bytes}, file has {size}"
                )
            tensors.append(t)
        return tensors

    # -- metadata, decoded on demand
    def __getitem__(self, key: str) -> Any:
        if key not in self._cache:
            vtype, pos = self._where[key]
            try:
                self._cache[key] = _Cursor(self._map, pos).value(vtype)
            except _Truncated:
                raise ModelFormatError(f"{self.path}: truncated GGUF metadata value {key!r}") from None
        return self._cache[key]

    def array_length(self, key: str) -> int:
        """How many items the array `key` holds, without decoding them (0 if absent or not an array)."""
        if key not in self._where or self._where[key][0] != _ARRAY:
            return 0
        return int(_Cursor(self._map, self._where[key][1]).unpack("IQ")[1])

    def __iter__(self) -> Iterator[str]:
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)

    # -- tensors
    def tensor_data(self, t: GGUFTensor) -> np.ndarray:
        """The tensor's stored data without a copy: its own dtype and shape for plain types, rows of
        raw bytes (shape[:-1] + (bytes per row,)) for quantised ones, as `gguf.quants` expects."""
        dtype = _PLAIN_TENSOR.get(t.ggml_type)
        raw = np.frombuffer(self._map, dtype=np.uint8, count=t.n_bytes, offset=t.offset)
        if dtype is not None:
            return raw.view(dtype).reshape(t.shape)
        rows = int(np.prod(t.shape[:-1])) if len(t.shape) > 1 else 1
        return raw.reshape(*t.shape[:-1], t.n_bytes // max(rows, 1))

    def close(self) -> None:
        """Release the map now, or, while arrays from tensor_data() are still alive (an error's
        traceback holds them), when the last of them goes."""
        with contextlib.suppress(BufferError):
            self._map.close()


# Block layouts (bytes per block of 32 values) of the types decoded here without `gguf.quants`.
_Q4_0, _Q4_1, _Q8_0 = 2, 3, 8
_FAST_BLOCK_BYTES = {_Q4_0: 18, _Q4_1: 20, _Q8_0: 34}
_CHUNK_BLOCKS = 1 << 15  # 1M values (4 MiB of fp32) per step: the temporaries stay in cache


def dequantize_fast(raw: np.ndarray, ggml_type: int, shape: tuple[int, ...]) -> np.ndarray | None:
    """fp32 values of a Q4_0, Q4_1 or Q8_0 tensor from its raw bytes, bit-identical to
    `gguf.quants.dequantize` (same float32 operations in the same order: d * q, then + m), or None
    for any other type. gguf's own is general but walks 16 rows per Python call and builds several
    whole-tensor temporaries; here each chunk of blocks is decoded into its slice of the output."""
    per_block = _FAST_BLOCK_BYTES.get(ggml_type)
    if per_block is None:
        return None
    blocks = raw.reshape(-1, per_block)
    out = np.empty((blocks.shape[0], 32), dtype=np.float32)
    for start in range(0, blocks.shape[0], _CHUNK_BLOCKS):
        b = blocks[start : start + _CHUNK_BLOCKS]
        o = out[start : start + _CHUNK_BLOCKS]
        scale = np.ascontiguousarray(b[:, :2]).view(np.float16).astype(np.float32)  # (n, 1)
        if ggml_type == _Q8_0:
            np.multiply(b[:, 2:].view(np.int8), scale, out=o, casting="unsafe")
            continue
        qs, halves = b[:, -16:], o.reshape(-1, 2, 16)
        np.bitwise_and(qs, 0x0F, out=halves[:, 0], casting="unsafe")  # low nibbles: values 0..15
        np.right_shift(qs, 4, out=halves[:, 1], casting="unsafe")  # high nibbles: values 16..31
        if ggml_type == _Q4_0:
            o -= np.float32(8)
            o *= scale
        else:
            o *= scale
            o += np.ascontiguousarray(b[:, 2:4]).view(np.float16).astype(np.float32)
    return out.reshape(shape)


def _n_bytes(shape: tuple[int, ...], ggml_type: int) -> int:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError):
        raise ValueError(f"unknown tensor type {ggml_type}") from None
    n = int(np.prod(shape)) if shape else 1
    if n % block:
        raise ValueError(f"a tensor of shape {list(shape)} is not whole blocks of {block}")
    return n // block * type_size
