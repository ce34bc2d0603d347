"""Stream documents out of jsonl (plain, .gz, .zst), parquet and folders of .txt files.

Real corpora are dirty: a crawl dump has broken lines, wrong encodings and empty records. Rather
than dying on line 3,412,001 or silently dropping data, every skipped record is counted per reason
and the first offending `file:line` is kept, so the tokenize manifest says exactly what was lost.
Files are read line by line (or parquet batch by batch): memory never grows with file size.
"""

from __future__ import annotations

import contextlib
import gzip
import importlib
import io
import json
import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zstandard

from gaperon.errors import DataError

JSONL_SUFFIXES = (
    ".jsonl",
    ".ndjson",
    ".json",
    ".jsonl.gz",
    ".ndjson.gz",
    ".json.gz",
    ".jsonl.zst",
    ".ndjson.zst",
    ".json.zst",
)
PARQUET_SUFFIXES = (".parquet",)
TEXT_SUFFIXES = (".txt",)
DEFAULT_MAX_CHARS = 10_000_000
BLOCK_BYTES = 1 << 18  # a parallel reader's jsonl block ends at this many raw bytes (or its record count)

RepeatFn = Callable[[dict], int]


@dataclass
class ReaderReport:
    """What the readers kept and what they dropped, and where they first saw each problem."""

    documents: int = 0
    files: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    first: dict[str, str] = field(default_factory=dict)
    truncated: int = 0
    first_truncated: str = ""

    def skip(self, reason: str, where: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1
        self.first.setdefault(reason, where)

    def truncate(self, where: str) -> None:
        self.truncated += 1
        if not self.first_truncated:
            self.first_truncated = where

    def summary(self) -> str:
        parts = [
            f"{n} {reason} (first at {self.first[reason]})" for reason, n in sorted(self.skipped.items())
        ]
        if self.truncated:
            parts.append(f"{self.truncated} truncated (first at {self.first_truncated})")
        return ", ".join(parts) or "nothing skipped"

    def to_dict(self) -> dict:
        return {
            "documents": self.documents,
            "files": self.files,
            "skipped": dict(sorted(self.skipped.items())),
            "first": dict(sorted(self.first.items())),
            "truncated": self.truncated,
            "first_truncated": self.first_truncated,
        }


def skip_line(reader: dict) -> str:
    """'skipped N of M records: a malformed_json (first at f:3), b empty_text (...)' (N is the sum of
    the per-reason counts; truncated documents are kept, so they are said apart)."""
    skipped = reader.get("skipped", {})
    first = reader.get("first", {})
    n = sum(skipped.values())
    total = n + int(reader.get("documents", 0))
    line = f"skipped {n:,} of {total:,} records"
    if n:
        line += ": " + ", ".join(
            f"{c:,} {why} (first at {first.get(why, '?')})" for why, c in skipped.items()
        )
    if reader.get("truncated"):
        line += f"; kept {reader['truncated']:,} truncated (first at {reader.get('first_truncated')})"
    return line


def load_repeat_fn(spec: str) -> RepeatFn:
    """'package.module:function' -> the function (Gapetron's per-dataset repeat-count hook)."""
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise DataError(f"repeat function {spec!r} must look like package.module:function")
    try:
        fn = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise DataError(f"cannot load repeat function {spec!r}: {e}") from None
    if not callable(fn):
        raise DataError(f"repeat function {spec!r} is not callable")
    return fn


def expand_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """Files to read, in a deterministic order: folders are walked (sorted) for supported files."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and _kind(f) is not None)
            if not found:
                raise DataError(f"{p}: folder holds no .txt, .jsonl[.gz|.zst] or .parquet file")
            out.extend(found)
        elif p.is_file():
            if _kind(p) is None:
                raise DataError(f"{p}: unsupported file type (want .txt, .jsonl[.gz|.zst], .parquet)")
            out.append(p)
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return out


def _kind(path: Path) -> str | None:
    name = path.name.lower()
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    if name.endswith(TEXT_SUFFIXES):
        return "txt"
    return None


@dataclass
class ReadOptions:
    text_field: str = "text"
    repeat_field: str | None = None
    repeat_fn: RepeatFn | None = None
    source: str | None = None
    max_chars: int = DEFAULT_MAX_CHARS


def read_documents(
    paths: Iterable[str | Path],
    options: ReadOptions | None = None,
    report: ReaderReport | None = None,
    *,
    first_only: bool = False,
) -> Iterator[dict]:
    """Yield {"text", "source", "lang", "repeat", "where"} for every usable document, in input order.

    `repeat` is how many times the document is to be emitted (1 unless a repeat field or function
    says otherwise; 0-repeat documents are dropped). A file yielding no document raises DataError.
    With `first_only`, stop each file after its first document (a cheap up-front check).
    """
    options = options or ReadOptions()
    report = report if report is not None else ReaderReport()
    for given in paths:
        # One .txt file is one document: an empty one is skipped, but a folder must yield something.
        txt_total, txt_before = 0, dict(report.skipped)
        files = expand_inputs([given])
        for path in files:
            report.files += 1
            n = 0
            before = dict(report.skipped)
            for doc in _read_file(path, options, report):
                n += 1
                report.documents += 1
                yield doc
                if first_only:
                    break
            if _kind(path) == "txt":
                txt_total += n
                if first_only and n:
                    break  # one document proves a folder of .txt files usable
            elif n == 0:
                raise DataError(f"{path}: yields no document ({_why(report, before)})")
        if txt_total == 0 and all(_kind(f) == "txt" for f in files):
            raise DataError(f"{given}: yields no document ({_why(report, txt_before)})")


def _why(report: ReaderReport, before: dict[str, int]) -> str:
    lost = {k: v - before.get(k, 0) for k, v in report.skipped.items()}
    return (
        ", ".join(f"{v} {k} (first at {report.first[k]})" for k, v in sorted(lost.items()) if v)
        or "file is empty"
    )


def _read_file(path: Path, options: ReadOptions, report: ReaderReport) -> Iterator[dict]:
    kind = _kind(path)
    if kind == "txt":
        yield from _read_txt(path, options, report)
    elif kind == "parquet":
        yield from _read_parquet(path, options, report)
    else:
        yield from _read_jsonl(path, options, report)


def _open_binary(path: Path) -> io.BufferedIOBase:
    name = path.name.lower()
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    if name.endswith(".zst"):
        return io.BufferedReader(_ZstdReader(path), buffer_size=1 << 20)
    return open(path, "rb")  # noqa: SIM115


class _ZstdReader(io.RawIOBase):
    """A .zst stream (one or more frames) that fails on a truncated last frame, which zstandard's
    own `stream_reader` accepts silently (the tail of the file would just be missing)."""

    def __init__(self, path: Path) -> None:
        import zstandard

        self._f = open(path, "rb")  # noqa: SIM115 - closed in close()
        self._dctx = zstandard.ZstdDecompressor()
        self._obj = self._dctx.decompressobj()
        self._in_frame = False
        self._buf = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not self._buf:
            chunk = self._f.read(1 << 20)
            if not chunk:
                if self._in_frame:
                    raise EOFError("truncated zstd stream: the last frame is incomplete")
                return 0
            self._buf = memoryview(self._decompress(chunk))
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def _decompress(self, data: bytes) -> bytes:
        out = []
        while data:
            self._in_frame = True
            out.append(self._obj.decompress(data))
            if not self._obj.eof:
                break
            data, self._in_frame = self._obj.unused_data, False
            self._obj = self._dctx.decompressobj()
        return b"".join(out)

    def close(self) -> None:
        self._f.close()
        super().close()


_orjson_loads: Callable[[bytes], Any] | None
try:
    from orjson import loads as _orjson_loads
except ImportError:  # optional: the standard json module gives the same documents, slower
    _orjson_loads = None


def _fast_json(raw: bytes, options: ReadOptions) -> Any:
    """The line parsed by orjson (~2x faster than json.loads, and straight from the bytes), or None
    to take the json path. orjson refuses what json accepts in a few cases (NaN, lone surrogate
    escapes) and refuses bad UTF-8 and blank lines: all go to the json path, so what is accepted and
    how each problem is counted stay json's. It reads integers beyond 64 bits as floats: a float
    repeat count goes to json too, and a repeat function (which sees every field) always does."""
    if _orjson_loads is None or options.repeat_fn is not None:
        return None
    try:
        obj = _orjson_loads(raw)
    except ValueError:
        return None
    if options.repeat_field and isinstance(_get(obj, options.repeat_field), float):
        return None
    return obj


def _jsonl_doc(raw: bytes, where: str, path: Path, options: ReadOptions, report: ReaderReport) -> dict | None:
    """One jsonl line -> a document, or None (blank, or skipped and counted)."""
    obj = _fast_json(raw, options)
    if obj is not None:
        if not isinstance(obj, dict):
            report.skip("not_an_object", where)
            return None
        return _make_doc(obj, where, path, options, report)
    if not raw.strip():
        return None
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        report.skip("invalid_utf8", where)
        return None
    try:
        obj = json.loads(line)
    except ValueError:
        report.skip("malformed_json", where)
        return None
    if not isinstance(obj, dict):
        report.skip("not_an_object", where)
        return None
    return _make_doc(obj, where, path, options, report)


def _read_jsonl(path: Path, options: ReadOptions, report: ReaderReport) -> Iterator[dict]:
    with _jsonl_errors(path):
        with _open_binary(path) as f:
            for lineno, raw in enumerate(f, 1):
                doc = _jsonl_doc(raw, f"{path}:{lineno}", path, options, report)
                if doc is not None:
                    yield doc


@contextlib.contextmanager
def _jsonl_errors(path: Path) -> Iterator[None]:
    """A stream that cannot be read or decompressed is a DataError naming the file."""
    try:
        yield
    except (OSError, EOFError) as e:
        raise DataError(f"{path}: cannot read compressed/plain stream: {e}") from None
    except zstandard.ZstdError as e:
        raise DataError(f"{path}: corrupt zstd stream: {e}") from None


def _read_txt(path: Path, options: ReadOptions, report: ReaderReport) -> Iterator[dict]:
    where = f"{path}:1"
    with open(path, "rb") as f:
        raw = f.read(4 * options.max_chars + 4)  # utf-8 is at most 4 bytes per char
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        # A cut in the middle of a multi-byte char at the read limit is not an encoding error.
        if len(raw) > 4 * options.max_chars and e.start >= len(raw) - 4:
            text = raw[: e.start].decode("utf-8")
        else:
            report.skip("invalid_utf8", where)
            return
    doc = _make_doc({options.text_field: text}, where, path, options, report, default_field=True)
    if doc is not None:
        yield doc


def _read_parquet(path: Path, options: ReadOptions, report: ReaderReport) -> Iterator[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable parquet file: {e}") from None
    names = set(pf.schema_arrow.names)
    wanted = {f.split(".")[0] for f in (options.text_field, options.repeat_field, "source", "lang") if f}
    columns = sorted(wanted & names)
    row = 0
    for batch in pf.iter_batches(batch_size=1024, columns=columns or None):
        records = batch.to_pylist() if columns else [{}] * batch.num_rows
        for obj in records:
            row += 1
            doc = _make_doc(obj, f"{path}:{row}", path, options, report)
            if doc is not None:
                yield doc


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def _make_doc(
    obj: dict, where: str, path: Path, options: ReadOptions, report: ReaderReport, default_field: bool = False
) -> dict | None:
    text = _get(obj, options.text_field) if not default_field else obj[options.text_field]
    if text is None:
        report.skip("missing_text", where)
        return None
    if not isinstance(text, str):
        report.skip("non_string_text", where)
        return None
    if not text.strip():
        report.skip("empty_text", where)
        return None
    if len(text) > options.max_chars:
        text = text[: options.max_chars]
        report.truncate(where)
    source = obj.get("source") if isinstance(obj.get("source"), str) else None
    lang = obj.get("lang") if isinstance(obj.get("lang"), str) else None
    doc = {
        "text": text,
        "source": options.source or source or path.name.split(".")[0],
        "lang": lang or "unknown",
        "repeat": 1,
        "where": where,
    }
    repeat: Any = 1
    if options.repeat_field:
        repeat = _get(obj, options.repeat_field)
        if repeat is None:
            repeat = 1  # documents without the metadata are kept once
    if options.repeat_fn is not None:
        repeat = options.repeat_fn({**obj, **doc, "repeat": repeat})  # sees the record and the field's count
    if isinstance(repeat, float) and math.isfinite(repeat) and repeat.is_integer():
        repeat = int(repeat)
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 0:
        report.skip("bad_repeat", where)
        return None
    if repeat == 0:
        report.skip("zero_repeat", where)
        return None
    doc["repeat"] = repeat
    return doc


# ----------------------------------------------------------------------------- block-parallel reading


@dataclass
class Block:
    """One block of a file for a parallel reader: its documents (None when another reader owns
    it) and what reading them skipped. Blocks are numbered across all files, in input order."""

    number: int
    docs: list[dict] | None
    report: ReaderReport


def read_blocks(
    files: list[Path],
    options: ReadOptions,
    block_records: int,
    owned: Callable[[int], bool],
    block_bytes: int = BLOCK_BYTES,
) -> Iterator[Block | Path]:
    """Every block of `files` in order, parsing only the blocks `owned(number)` accepts; a file's
    end is signalled by yielding its Path.

    Each of N parallel readers calls this on the same files with its own `owned` (number % N == k):
    all agree on the numbering, each parses and tokenizes only its share, and merging their blocks
    by number restores input order exactly. A jsonl block is `block_records` raw lines (the other
    readers only split lines: decompression and line splitting are cheap next to parsing and
    encoding), or fewer when they reach `block_bytes` (long documents: blocks of similar work, so N
    readers finish together); a parquet block is `block_records` rows; a .txt file is one block.
    """
    number = 0
    for path in files:
        kind = _kind(path)
        if kind == "txt":
            report = ReaderReport()
            yield Block(number, list(_read_txt(path, options, report)) if owned(number) else None, report)
            number += 1
        elif kind == "parquet":
            for docs, report in _parquet_blocks(path, options, block_records, owned, number):
                yield Block(number, docs, report)
                number += 1
        else:
            for docs, report in _jsonl_blocks(path, options, (block_records, block_bytes), owned, number):
                yield Block(number, docs, report)
                number += 1
        yield path


def _jsonl_blocks(
    path: Path, options: ReadOptions, size: tuple[int, int], owned: Callable[[int], bool], first: int
) -> Iterator[tuple[list[dict] | None, ReaderReport]]:
    with _jsonl_errors(path), _open_binary(path) as f:
        lineno = 0
        while True:
            lines = _take_lines(f, *size)
            if not lines:
                return
            report = ReaderReport()
            docs = None
            if owned(first):
                docs = []
                for j, raw in enumerate(lines, lineno + 1):
                    doc = _jsonl_doc(raw, f"{path}:{j}", path, options, report)
                    if doc is not None:
                        docs.append(doc)
            lineno += len(lines)
            first += 1
            yield docs, report


def _take_lines(f: Iterable[bytes], max_lines: int, max_bytes: int) -> list[bytes]:
    """The next lines of `f`: `max_lines` of them, or fewer once they hold `max_bytes`."""
    lines: list[bytes] = []
    n = 0
    for raw in f:
        lines.append(raw)
        n += len(raw)
        if len(lines) >= max_lines or n >= max_bytes:
            break
    return lines


def _parquet_blocks(
    path: Path, options: ReadOptions, size: int, owned: Callable[[int], bool], first: int
) -> Iterator[tuple[list[dict] | None, ReaderReport]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        rows = pq.ParquetFile(path).metadata.num_rows
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: not a readable parquet file: {e}") from None
    docs_iter = None
    for start in range(0, rows, size):
        report = ReaderReport()
        if not owned(first):
            yield None, report
        else:
            if docs_iter is None:
                docs_iter = _ParquetRows(path, options)
            docs = []
            for row, obj in docs_iter.rows(start, min(rows, start + size)):
                doc = _make_doc(obj, f"{path}:{row}", path, options, report)
                if doc is not None:
                    docs.append(doc)
            yield docs, report
        first += 1


class _ParquetRows:
    """Random access to a parquet file's records by row range (reads only the needed columns)."""

    def __init__(self, path: Path, options: ReadOptions) -> None:
        import pyarrow.parquet as pq

        self.table = pq.read_table(path, columns=_parquet_columns(pq.ParquetFile(path), options) or None)

    def rows(self, start: int, stop: int) -> Iterator[tuple[int, dict]]:
        part = self.table.slice(start, stop - start)
        records = part.to_pylist() if part.num_columns else [{}] * part.num_rows
        yield from enumerate(records, start + 1)


def _parquet_columns(pf: Any, options: ReadOptions) -> list[str]:
    names = set(pf.schema_arrow.names)
    wanted = {f.split(".")[0] for f in (options.text_field, options.repeat_field, "source", "lang") if f}
    return sorted(wanted & names)
