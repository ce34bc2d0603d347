"""N-gram decontamination: which benchmark items appear in a corpus, and which documents hold them.

Text is normalised as GPT-3's decontamination and datatrove's n-gram filter do: lower case,
punctuation removed, whitespace-split words. An item is contaminated when one of its word 13-grams
(configurable; items shorter than n words use the whole item) occurs in a document. The index maps
hashed n-grams to items, so scanning is one set lookup per document n-gram.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)


def normalize(text: str) -> list[str]:
    """Lower-cased words with punctuation removed (accents kept: French text stays French)."""
    text = unicodedata.normalize("NFKC", text).lower()
    return _PUNCT.sub(" ", text).split()


def _key(words: list[str]) -> bytes:
    return hashlib.blake2b(" ".join(words).encode("utf-8"), digest_size=8).digest()


def ngram_keys(words: list[str], n: int) -> Iterator[bytes]:
    if len(words) < n:
        if words:
            yield _key(words)
        return
    for i in range(len(words) - n + 1):
        yield _key(words[i : i + n])


def item_text(item: dict) -> str:
    """What of a benchmark item counts for contamination: the question and its gold answer."""
    return f"{item['question']} {item.get('answer', '')}".strip()


@dataclass
class NGramIndex:
    """Hashed word n-grams of benchmark items -> the items that contain them."""

    n: int = 13
    owners: dict[bytes, set[tuple[str, str]]] = field(default_factory=lambda: defaultdict(set))
    short_lengths: set[int] = field(default_factory=set)  # items shorter than n words
    items: int = 0

    def add(self, benchmark: str, item_id: str, text: str) -> None:
        words = normalize(text)
        if 0 < len(words) < self.n:
            self.short_lengths.add(len(words))
        for k in ngram_keys(words, self.n):
            self.owners[k].add((benchmark, item_id))
        self.items += 1

    def windows(self, words: list[str]) -> Iterator[tuple[int, int, bytes]]:
        """(start, length, key) of every window of `words` that could be an indexed n-gram."""
        for length in sorted({self.n, *self.short_lengths}):
            for i in range(len(words) - length + 1):
                yield i, length, _key(words[i : i + length])

    def matches(self, text: str) -> set[tuple[str, str]]:
        """(benchmark, item id) of every item with an n-gram in `text`."""
        found: set[tuple[str, str]] = set()
        for _, _, k in self.windows(normalize(text)):
            hit = self.owners.get(k)
            if hit:
                found |= hit
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
    for start, length, k in index.windows(flat):
        if k in index.owners:
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
