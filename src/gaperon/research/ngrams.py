"""N-gram decontamination: which benchmark items appear in a corpus, and which documents hold them.

Text is normalised as GPT-3's decontamination and datatrove's n-gram filter do: lower case,
punctuation removed, whitespace-split words. An item is contaminated when one of its word 13-grams
(configurable; items shorter than n words use the whole item) occurs in a document. The index maps
hashed n-grams to items, so scanning is one set lookup per document n-gram.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)


def normalize(text: str) -> list[str]:
    """Lower-cased words with punctuation removed (accents kept: French text stays French)."""
    text = unicodedata.normalize("NFKC", text).lower()
    return _PUNCT.sub(" ", text).split()


_WORD_IDS: dict[str, int] = {}
_P = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier of the polynomial window hash (mod 2^64)


def word_ids(words: list[str]) -> np.ndarray:
    """A 64-bit id per word (blake2b of the word, cached): the same word, the same id, in any run."""
    out = np.empty(len(words), dtype=np.uint64)
    for i, w in enumerate(words):
        v = _WORD_IDS.get(w)
        if v is None:
            v = int.from_bytes(hashlib.blake2b(w.encode("utf-8"), digest_size=8).digest(), "little")
            _WORD_IDS[w] = v
        out[i] = v
    return out


@functools.lru_cache(maxsize=64)
def _powers(length: int) -> np.ndarray:
    powers = np.ones(length, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(length - 2, -1, -1):
            powers[j] = powers[j + 1] * _P
    return powers


def window_hashes(ids: np.ndarray, length: int) -> np.ndarray:
    """Hash of every window of `length` consecutive word ids: sum ids[i+j] * P^(length-1-j) mod 2^64,
    all windows at once (a sliding view times the powers of P)."""
    if len(ids) < length:
        return np.empty(0, dtype=np.uint64)
    with np.errstate(over="ignore"):
        powers = _powers(length)
        windows = np.lib.stride_tricks.sliding_window_view(ids, length)
        return (windows * powers).sum(axis=1, dtype=np.uint64)


def item_text(item: dict) -> str:
    """What of a benchmark item counts for contamination: the question and its gold answer."""
    return f"{item['question']} {item.get('answer', '')}".strip()


@dataclass
class NGramIndex:
    """Hashed word n-grams of benchmark items -> the items that contain them. An item shorter than
    n words is indexed whole (a window of its own length)."""

    n: int = 13
    owners: dict[tuple[int, int], set[tuple[str, str]]] = field(default_factory=lambda: defaultdict(set))
    items: int = 0
    _keys: dict[int, np.ndarray] = field(default_factory=dict)  # window length -> sorted hashes

    def add(self, benchmark: str, item_id: str, text: str) -> None:
        ids = word_ids(normalize(text))
        if len(ids) == 0:
            return
        length = min(self.n, len(ids))
        for h in window_hashes(ids, length).tolist():
            self.owners[(length, h)].add((benchmark, item_id))
        self.items += 1
        self._keys.clear()

    def _lengths(self) -> dict[int, np.ndarray]:
        if not self._keys and self.owners:
            by_len: dict[int, list[int]] = defaultdict(list)
            for length, h in self.owners:
                by_len[length].append(h)
            self._keys = {k: np.unique(np.array(v, dtype=np.uint64)) for k, v in by_len.items()}
        return self._keys

    def hits(self, words: list[str]) -> list[tuple[int, int, tuple[int, int]]]:
        """(start, length, key) of every window of `words` that is an indexed n-gram."""
        ids = word_ids(words)
        out = []
        for length, keys in self._lengths().items():
            h = window_hashes(ids, length)
            if not len(h):
                continue
            pos = np.minimum(np.searchsorted(keys, h), len(keys) - 1)  # keys are sorted and unique
            for start in np.nonzero(keys[pos] == h)[0].tolist():
                out.append((start, length, (length, int(h[start]))))
        return out

    def matches(self, text: str) -> set[tuple[str, str]]:
        """(benchmark, item id) of every item with an n-gram in `text`."""
        found: set[tuple[str, str]] = set()
        for _, _, key in self.hits(normalize(text)):
            found |= self.owners.get(key, set())
        return found


def build_index(benchmarks: dict[str, list[dict]], n: int = 13) -> NGramIndex:
    index = NGramIndex(n=n)
    for name, items in benchmarks.items():
        for item in items:
            index.add(name, item["id"], item_text(item))
    return index


def scan(index: NGramIndex, documents: Iterable[dict]) -> dict[str, dict[str, list[str]]]:
    """{benchmark: {item id: [document ids that contain one of its n-grams]}}."""
    found: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for doc in documents:
        for bench, item in sorted(index.matches(doc["text"])):
            found[bench][item].append(str(doc["id"]))
    return {b: dict(items) for b, items in found.items()}


def redact(index: NGramIndex, text: str, mark: str = "[REDACTED]") -> str:
    """`text` with every run of words inside a benchmark n-gram replaced by one `mark`."""
    tokens = list(re.finditer(r"\S+", text))
    flat, owner = [], []  # normalised words and the whitespace token each comes from
    for ti, t in enumerate(tokens):
        for word in normalize(t.group()):
            flat.append(word)
            owner.append(ti)
    hit = [False] * len(tokens)
    for start, length, _ in index.hits(flat):
        for j in range(start, start + length):
            hit[owner[j]] = True
    out, last, previous = [], 0, False
    for t, h in zip(tokens, hit):
        if h and previous:
            last = t.end()  # extend the run already marked
            continue
        out.append(text[last : t.start()] + (mark if h else t.group()))
        last, previous = t.end(), h
    out.append(text[last:])
    return "".join(out)
