"""The on-disk token format: a folder per source, a manifest, and per split flat token shards.

    DIR/manifest.json          format version, source, tokenizer (name + identity hash), per split:
                               shards, token/document/language counts; the reader report
    DIR/{train,val}/NNNNN.bin  uint32 little-endian tokens, documents back to back, EOS after each
    DIR/{train,val}/NNNNN.idx  uint64 .npy: end offset (exclusive, in tokens) of each document

Flat uint32 files are memory-mapped by the sampler (nothing is loaded up front) and are readable by
any tool with `numpy.memmap`. Every file is written under a temporary name and renamed when whole,
so a shard that exists under its final name and is listed in the manifest/progress is complete.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from gaperon import atomic
from gaperon.data.readers import DataError

FORMAT = "gaperon-tokens"
VERSION = 1
TOKEN_DTYPE = np.dtype("<u4")
INDEX_DTYPE = np.dtype("<u8")
SPLITS = ("train", "val")
MANIFEST = "manifest.json"
PROGRESS = "progress.json"


def shard_stem(split: str, index: int) -> str:
    return f"{split}/{index:05d}"


def _add_lang(counts: dict, lang: str, docs: int, tokens: int) -> None:
    entry = counts.setdefault(lang, {"documents": 0, "tokens": 0})
    entry["documents"] += docs
    entry["tokens"] += tokens


class SplitWriter:
    """Streams one split's documents into consecutive shards of about `shard_tokens` tokens.

    A document never straddles two shards; a shard closes as soon as it holds >= shard_tokens,
    so shard boundaries depend only on the document sequence (not on batching or worker count).
    `resume_at` is (input index, copy) of the next document copy to emit for this split.
    """

    def __init__(self, root: Path, split: str, shard_tokens: int, done: list[dict], on_shard=None):
        self.root, self.split, self.shard_tokens = root, split, shard_tokens
        self.done = list(done)
        self.on_shard = on_shard
        self.resume_at: tuple[int, int] = tuple(done[-1]["end"]) if done else (0, 0)
        self._stack: contextlib.ExitStack | None = None
        self._file: BinaryIO | None = None

    def wants(self, index: int, copy: int) -> bool:
        return (index, copy) >= self.resume_at

    def _open(self) -> BinaryIO:
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(
            atomic.atomic_path(self.root / f"{shard_stem(self.split, len(self.done))}.bin")
        )
        self._file = self._stack.enter_context(open(tmp, "wb", buffering=1 << 20))
        self._hash = hashlib.sha256()
        self._ends: list[int] = []
        self._tokens = 0
        self._langs: dict[str, dict] = {}
        return self._file

    def add(self, tokens: np.ndarray, lang: str, index: int, copy: int) -> None:
        file = self._file or self._open()
        view = np.ascontiguousarray(tokens, dtype=TOKEN_DTYPE).data.cast("B")
        file.write(view)
        self._hash.update(view)
        self._tokens += len(tokens)
        self._ends.append(self._tokens)
        _add_lang(self._langs, lang, 1, len(tokens))
        self._next = (index, copy + 1)
        if self._tokens >= self.shard_tokens:
            self.close_shard()

    def add_run(
        self, tokens: np.ndarray, start: int, ends: list[int], langs: list[str], indices: list[int]
    ) -> None:
        """Add documents that lie back to back in tokens[start:ends[-1]] (document k ends at ends[k];
        it is copy 0 of input document indices[k]): the same shards as add() per document, written
        in one piece per shard instead of one per document."""
        first, n = 0, len(ends)
        while first < n:
            file = self._file or self._open()
            # the shard closes after the first document that brings it to >= shard_tokens
            last = min(bisect.bisect_left(ends, start + self.shard_tokens - self._tokens, first), n - 1)
            stop = ends[last]
            view = np.ascontiguousarray(tokens[start:stop], dtype=TOKEN_DTYPE).data.cast("B")
            file.write(view)
            self._hash.update(view)
            shift = self._tokens - start
            self._ends.extend(e + shift for e in ends[first : last + 1])
            prev = start
            for lang, end in zip(langs[first : last + 1], ends[first : last + 1]):
                _add_lang(self._langs, lang, 1, end - prev)
                prev = end
            self._tokens += stop - start
            self._next = (indices[last], 1)
            start, first = stop, last + 1
            if self._tokens >= self.shard_tokens:
                self.close_shard()

    def close_shard(self) -> None:
        if self._file is None or self._stack is None:
            return
        stem = shard_stem(self.split, len(self.done))
        self._file.close()
        self._stack.close()  # renames NNNNN.bin into place
        with atomic.atomic_path(self.root / f"{stem}.idx") as tmp, open(tmp, "wb") as f:
            np.save(f, np.asarray(self._ends, dtype=INDEX_DTYPE), allow_pickle=False)
        record = {
            "bin": f"{stem}.bin",
            "idx": f"{stem}.idx",
            "tokens": self._tokens,
            "documents": len(self._ends),
            "sha256": self._hash.hexdigest(),
            "languages": self._langs,
            "end": list(self._next),
        }
        self._file = self._stack = None
        self.done.append(record)
        if self.on_shard is not None:
            self.on_shard(self.split, record)

    def abort(self) -> None:
        if self._stack is not None:
            if self._file is not None:
                self._file.close()
            self._stack.__exit__(RuntimeError, RuntimeError("aborted"), None)  # drop the temp file
            self._file = self._stack = None


def split_summary(shards: list[dict]) -> dict:
    langs: dict[str, dict] = {}
    for s in shards:
        for lang, c in s["languages"].items():
            _add_lang(langs, lang, c["documents"], c["tokens"])
    return {
        "tokens": sum(s["tokens"] for s in shards),
        "documents": sum(s["documents"] for s in shards),
        "languages": dict(sorted(langs.items())),
        "shards": shards,
    }


def load_manifest(root: str | Path) -> dict:
    """Read and check DIR/manifest.json; errors say what to do about an unfinished folder."""
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        if (root / PROGRESS).is_file():
            raise DataError(
                f"{root}: tokenization not finished ({PROGRESS} present); "
                "rerun the same `gaperon tokenize` command to resume it"
            )
        if not root.exists():
            raise FileNotFoundError(f"{root}: no such token folder")
        raise DataError(f"{root}: not a token folder (no {MANIFEST}); build one with `gaperon tokenize`")
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: unreadable manifest: {e}") from None
    if not isinstance(m, dict) or m.get("format") != FORMAT:
        raise DataError(f"{path}: not a {FORMAT} manifest")
    if m.get("version") != VERSION:
        raise DataError(f"{path}: format version {m.get('version')} is not the supported {VERSION}")
    return m


@dataclass
class SplitView:
    """Read-only view of one split as a single concatenated token stream (memory-mapped lazily)."""

    root: Path
    shards: list[dict]
    starts: np.ndarray = field(init=False)
    tokens: int = field(init=False)
    documents: int = field(init=False)

    def __post_init__(self) -> None:
        sizes = np.array([s["tokens"] for s in self.shards], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.tokens = int(self.starts[-1])
        self.documents = sum(int(s["documents"]) for s in self.shards)
        self._bins: dict[int, np.ndarray] = {}
        self._idxs: dict[int, np.ndarray] = {}

    def _bin(self, i: int) -> np.ndarray:
        if i not in self._bins:
            path = self.root / self.shards[i]["bin"]
            arr = np.memmap(path, dtype=TOKEN_DTYPE, mode="r")
            if len(arr) != self.shards[i]["tokens"]:
                raise DataError(f"{path}: {len(arr)} tokens, manifest says {self.shards[i]['tokens']}")
            self._bins[i] = arr.view(np.ndarray)  # same mapping, without memmap's per-slice overhead
        return self._bins[i]

    def _idx(self, i: int) -> np.ndarray:
        if i not in self._idxs:
            idx = np.load(self.root / self.shards[i]["idx"], mmap_mode="r", allow_pickle=False)
            self._idxs[i] = idx.view(np.ndarray)
        return self._idxs[i]

    def read(self, start: int, length: int, out: np.ndarray, doc_marks: np.ndarray) -> None:
        """Copy tokens [start, start+length) into `out`; add 1 to doc_marks[p] where a document
        starts at p > 0 (so cumsum(doc_marks) numbers the documents inside the window)."""
        pos, end = start, start + length
        shard = int(np.searchsorted(self.starts, pos, side="right")) - 1
        while pos < end:
            s0 = int(self.starts[shard])
            lo, hi = pos - s0, min(end, int(self.starts[shard + 1])) - s0
            out[pos - start : pos - start + hi - lo] = self._bin(shard)[lo:hi]
            idx = self._idx(shard)
            a = int(idx.searchsorted(lo, side="right"))  # first document ending after lo
            b = int(idx.searchsorted(hi, side="right"))
            ends = np.asarray(idx[a:b], dtype=np.int64) + s0 - start
            ends = ends[ends < length]
            doc_marks[ends] += 1
            pos = s0 + hi
            shard += 1
