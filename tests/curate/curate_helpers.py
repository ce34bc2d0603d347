"""Small corpora for the curation tests, cut from the bundled samples."""

from __future__ import annotations

import json
from pathlib import Path

import zstandard

from gaperon.curate.demo import read_jsonl

SAMPLES = Path(__file__).resolve().parents[2] / "data" / "samples"


def samples(lang: str, limit: int | None = None) -> list[dict]:
    return list(read_jsonl(SAMPLES / f"{lang}.jsonl.zst", limit))


def write_jsonl_zst(path: Path, records: list[dict]) -> Path:
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    path.write_bytes(zstandard.ZstdCompressor().compress(data))
    return path


def read_output(folder: Path) -> dict[str, bytes]:
    """{file name: decompressed bytes} of a curation output folder."""
    d = zstandard.ZstdDecompressor()
    return {p.name: d.decompressobj().decompress(p.read_bytes()) for p in sorted(folder.glob("*.jsonl.zst"))}


def repeat_by_length(doc: dict) -> int:
    """A `module:function` rehydration hook for the tests: long documents twice, others once."""
    return 2 if len(doc["text"]) > 100 else doc["repeat"]
