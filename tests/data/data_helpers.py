"""Helpers for the data tests: tiny corpora written on the fly and a byte-level tokenizer.

`ByteTokenizer` (one id per UTF-8 byte, EOS = 256) keeps sampler tests instant and makes expected
token streams trivial to compute; the real Llama-3.1 tokenizer is used where the pipeline must be
checked end to end (it is cached per process).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import zstandard


class ByteTokenizer:
    name = "bytes"
    eos_id = 256
    vocab_size = 257

    def __init__(self, tag: str = "v1"):
        self.tag = tag

    def identity(self) -> str:
        return f"byte-tokenizer-{self.tag}"

    def encode_batch(self, texts):
        return [list(t.encode("utf-8")) for t in texts]

    def decode(self, ids):
        return bytes(i for i in ids if i < 256).decode("utf-8")


def write_jsonl(path: Path, records: list, compress: str | None = None) -> Path:
    lines = []
    for r in records:
        lines.append(
            r
            if isinstance(r, bytes)
            else (r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)).encode()
        )
    blob = b"\n".join(lines) + b"\n"
    if compress == "gz":
        blob = gzip.compress(blob)
    elif compress == "zst":
        blob = zstandard.ZstdCompressor().compress(blob)
    path.write_bytes(blob)
    return path


def make_docs(n: int, lang: str = "fr", seed: int = 0) -> list[dict]:
    """Varied documents (distinct texts, lengths 1-40 sentences)."""
    words = (
        "le chat mange une pomme rouge sous la pluie tandis que the quick brown fox jumps over "
        "lazy dogs été déjà garçon naïve café"
    ).split()
    docs = []
    for i in range(n):
        k = (i * 7919 + seed * 31) % 97
        sent = " ".join(words[(k + j) % len(words)] for j in range(5 + k % 11))
        docs.append(
            {"text": f"Doc {seed}-{i}. " + (sent + ". ") * (1 + k % 40), "lang": lang, "source": "test"}
        )
    return docs
