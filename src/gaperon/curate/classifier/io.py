"""Read and write the classifier's jsonl files (plain, .gz or .zst), naming file:line on bad input."""

from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from gaperon import atomic
from gaperon.errors import DataError

LABELS = ("high", "low", "medium")


def _open_text(path: Path) -> IO[str]:
    name = path.name.lower()
    if name.endswith(".zst"):
        import zstandard

        raw = zstandard.ZstdDecompressor().stream_reader(open(path, "rb"))
        return io.TextIOWrapper(raw, encoding="utf-8")
    if name.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def read_jsonl(path: str | Path) -> Iterator[dict]:
    """Every JSON object of a jsonl file; a broken line or encoding is a DataError naming file:line."""
    for _, obj in iter_jsonl(path):
        yield obj


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for every non-blank line of a jsonl file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    with _open_text(path) as f:
        lineno = 0
        try:
            for lineno, line in enumerate(f, 1):  # noqa: B007 - lineno names the failing line below
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
                if not isinstance(obj, dict):
                    raise DataError(f"{path}:{lineno}: a JSON object per line is expected")
                yield lineno, obj
        except UnicodeDecodeError:
            raise DataError(f"{path}:{lineno + 1}: not valid UTF-8") from None


def read_labelled(paths: Iterable[str | Path]) -> list[dict]:
    """Records with a non-empty `text` and a `label` in high/low/medium (the `annotate` schema)."""
    rows: list[dict] = []
    for path in paths:
        for n, obj in iter_jsonl(path):
            text, label = obj.get("text"), obj.get("label")
            if not isinstance(text, str) or not text.strip():
                raise DataError(f"{path}:{n}: field 'text' is missing or empty")
            if label not in LABELS:
                raise DataError(f"{path}:{n}: field 'label' is {label!r}, want one of {LABELS}")
            rows.append({"text": text, "label": label, "language": str(obj.get("language") or "")})
    if not rows:
        raise DataError(f"{', '.join(map(str, paths))}: no labelled record")
    return rows


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    """Write rows atomically (the final name appears only once complete); return how many."""
    n = 0
    with atomic.atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n
