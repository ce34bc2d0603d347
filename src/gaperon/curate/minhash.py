"""MinHash near-deduplication across the whole input, as two datatrove passes and one reduce.

Datatrove's four stages (signatures, buckets, clusters, filter) become: `MinhashCollect` (per task:
numpy-vectorised signatures, plus each document's shingle-hash set for verification),
`MinhashReduce` (one task: LSH bands -> candidate pairs -> kept only if their TRUE Jaccard on
shingle sets reaches `threshold` -> connected components, streamed from disk: see
`reduce_from_disk`) and `MinhashApply` (per task: drop every
member of a component except the one first in input order, `(file index, line)`). Which copy
survives is therefore independent of the number of tasks.

Verification makes the output a subset of what datatrove's bucket stage alone would remove: a
candidate pair is only merged when its exact Jaccard is at least `threshold`. LSH with many short
bands (28 x 4 by default) finds the ~0.63-Jaccard pairs that a 5%-word edit leaves at 5-grams,
which datatrove's 14 x 8 default misses; verification removes its false candidates.
"""

from __future__ import annotations

import glob
import json
import os
import zlib
from collections.abc import Iterator

import numpy as np
from datatrove.data import Document, DocumentsPipeline

from gaperon.curate.steps import CountingStep, Counts, register_step
from gaperon.curate.text import words
from gaperon.errors import DataError

MIX = np.uint64(0x9E3779B97F4A7C15)
_SHIFT32 = np.uint64(32)


def order_key(doc: Document) -> int:
    return (int(doc.metadata["_file"]) << 40) | int(doc.metadata["_line"])


class MinhashParams:
    def __init__(self, ngram: int = 4, bands: int = 28, rows: int = 4, seed: int = 1, threshold: float = 0.5):
        self.ngram, self.bands, self.rows, self.seed, self.threshold = ngram, bands, rows, seed, threshold
        rng = np.random.default_rng(seed)
        n = bands * rows
        self.a = rng.integers(1, 2**63, size=n, dtype=np.uint64) | np.uint64(1)  # odd multipliers
        self.b = rng.integers(0, 2**63, size=n, dtype=np.uint64)


def shingles(text: str, ngram: int) -> np.ndarray:
    """Sorted unique 32-bit hashes of the word n-grams of the lower-cased text."""
    ws = words(text.lower())
    if not ws:
        return np.zeros(0, dtype=np.uint32)
    wh = np.fromiter((zlib.crc32(w.encode()) for w in ws), dtype=np.uint64, count=len(ws))
    n = min(ngram, len(ws))
    m = len(ws) - n + 1
    h = np.zeros(m, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):  # polynomial combination, wrapping mod 2^64
            h = h * MIX + wh[j : j + m]
        h ^= h >> np.uint64(29)
        h *= MIX
    return np.unique((h >> _SHIFT32).astype(np.uint32))


def signature(sh: np.ndarray, p: MinhashParams) -> np.ndarray:
    """min over shingles of multiply-shift hashes ((a x + b) mod 2^64) >> 32, one per permutation."""
    if sh.size == 0:
        return np.full(p.a.size, 0xFFFFFFFF, dtype=np.uint32)
    x = sh.astype(np.uint64)
    with np.errstate(over="ignore"):
        hv = (p.a[:, None] * x[None, :] + p.b[:, None]) >> _SHIFT32
    return hv.min(axis=1).astype(np.uint32)


def _save_dir(path: str, **arrays: np.ndarray) -> None:
    """One .npy per array (memory-mappable by the reduce), the folder renamed into place whole."""
    import shutil

    tmp = path + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    for name, a in arrays.items():
        np.save(os.path.join(tmp, f"{name}.npy"), a)
    shutil.rmtree(path, ignore_errors=True)  # a rerun of this task replaces its own output
    os.replace(tmp, path)


class MinhashCollect(CountingStep):
    """Pass 1: signatures and shingle sets of this task's documents; documents flow through."""

    name = "minhash signatures"

    def __init__(self, params: MinhashParams) -> None:
        super().__init__()
        self.params = params
        self.work_dir = ""  # set by the planner

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        counts, keys, sigs, sets = Counts(), [], [], []
        for doc in data:
            counts.seen(doc)
            with self.track_time():
                sh = shingles(doc.text, self.params.ngram)
                sigs.append(signature(sh, self.params))
            sets.append(sh)
            keys.append(order_key(doc))
            counts.keep(doc)
            yield doc
        sig = np.stack(sigs) if sigs else np.zeros((0, self.params.a.size), dtype=np.uint32)
        offsets = np.zeros(len(sets) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([x.size for x in sets])
        _save_dir(
            os.path.join(self.work_dir, f"sig_{rank:05d}"),
            keys=np.asarray(keys, dtype=np.int64),
            bands=band_keys(sig, self.params.bands, self.params.rows),
            shingles=np.concatenate(sets) if sets else np.zeros(0, dtype=np.uint32),
            offsets=offsets,
        )
        self.write_counts(counts, rank)


def band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """[bands, n] one 64-bit bucket key per band of each signature."""
    weights = (np.arange(1, rows + 1, dtype=np.uint64) * MIX) | np.uint64(1)
    out = np.empty((bands, len(sigs)), dtype=np.uint64)
    for b in range(bands):
        band = sigs[:, b * rows : (b + 1) * rows].astype(np.uint64)
        with np.errstate(over="ignore"):
            out[b] = (band * weights).sum(axis=1) ^ band[:, 0]
    return out


def _band_pairs(key: np.ndarray, pairs: set[tuple[int, int]]) -> None:
    """Add the pairs of one band: `key[i]` is document i's bucket (documents in input order)."""
    order = np.argsort(key, kind="stable")
    sk = key[order]
    starts = np.flatnonzero(np.r_[True, sk[1:] != sk[:-1]])
    ends = np.r_[starts[1:], len(sk)]
    for s, e in zip(starts[ends - starts > 1], ends[ends - starts > 1]):
        members = order[s:e]
        for i in range(1, len(members)):
            a, c = int(members[0]), int(members[i])
            pairs.add((min(a, c), max(a, c)))
            a = int(members[i - 1])
            pairs.add((min(a, c), max(a, c)))


def candidate_pairs(sigs: np.ndarray, bands: int, rows: int) -> set[tuple[int, int]]:
    """Index pairs sharing at least one band; each bucket links its members to its first and to
    their neighbour (enough for connected components once verified)."""
    pairs: set[tuple[int, int]] = set()
    if len(sigs) < 2:
        return pairs
    for key in band_keys(sigs, bands, rows):
        _band_pairs(key, pairs)
    return pairs


def jaccard(x: np.ndarray, y: np.ndarray) -> float:
    if x.size == 0 and y.size == 0:
        return 1.0
    inter = np.intersect1d(x, y, assume_unique=True).size
    return inter / (x.size + y.size - inter)


def duplicates_to_remove(
    keys: np.ndarray, sigs: np.ndarray, sets: list[np.ndarray], p: MinhashParams
) -> dict:
    """Order keys to remove (all but the first-in-input member of each verified component).

    In memory; the job's reduce gives the same answer from disk (`reduce_from_disk`).
    """
    cands = candidate_pairs(sigs, p.bands, p.rows)
    return _components(keys, cands, lambda i: sets[i], p.threshold)


def _components(keys: np.ndarray, cands: set[tuple[int, int]], shingle_set, threshold: float) -> dict:
    """Verify candidates by true Jaccard, join them; keys are in input order, so the root is first."""
    parent = np.arange(len(keys), dtype=np.int64)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    verified = 0
    for i, j in sorted(cands):
        if jaccard(shingle_set(i), shingle_set(j)) >= threshold:
            verified += 1
            ri, rj = find(i), find(j)
            if ri != rj:  # the root is the member first in input order
                if keys[ri] < keys[rj]:
                    parent[rj] = ri
                else:
                    parent[ri] = rj
    remove = sorted(int(keys[i]) for i in range(len(keys)) if find(i) != i)
    return {"candidates": len(cands), "verified": verified, "remove": remove}


def reduce_from_disk(folders: list[str], p: MinhashParams) -> dict:
    """`duplicates_to_remove` over the collect pass's per-task folders, without loading them whole.

    Held in memory: each document's order key and union-find parent, one band's bucket keys at a
    time (read from the memory-mapped [bands, n] arrays), and the candidate pairs. Signatures are
    never loaded (the collect pass stored their band keys), and a candidate's shingle sets are read
    from the memory-mapped files only when it is verified.
    """
    maps = [
        {
            n: np.load(os.path.join(f, f"{n}.npy"), mmap_mode="r")
            for n in ("keys", "bands", "shingles", "offsets")
        }
        for f in folders
    ]
    if not maps:
        return {"candidates": 0, "verified": 0, "remove": []}
    keys = np.concatenate([np.asarray(m["keys"]) for m in maps])
    order = np.argsort(keys, kind="stable")  # input order, whatever the sharding
    keys = keys[order]
    starts = np.cumsum([0] + [len(m["keys"]) for m in maps])
    cands: set[tuple[int, int]] = set()
    if len(keys) >= 2:
        for b in range(p.bands):
            _band_pairs(np.concatenate([np.asarray(m["bands"][b]) for m in maps])[order], cands)

    def shingle_set(i: int) -> np.ndarray:
        g = int(order[i])
        t = int(np.searchsorted(starts, g, side="right")) - 1
        off, local = maps[t]["offsets"], g - int(starts[t])
        return np.asarray(maps[t]["shingles"][int(off[local]) : int(off[local + 1])])

    return _components(keys, cands, shingle_set, p.threshold)


class MinhashReduce(CountingStep):
    """One task: all signatures -> the order keys of the documents to drop."""

    name = "minhash clusters"

    def __init__(self, params: MinhashParams) -> None:
        super().__init__()
        self.params = params
        self.work_dir = ""
        self.tasks: int | None = None  # the collect pass's tasks, set by the planner

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        folders = sorted(
            f
            for f in glob.glob(os.path.join(self.work_dir, "sig_*"))
            if os.path.isdir(f) and not f.endswith(".tmp")
        )
        if glob.glob(os.path.join(self.work_dir, "sig_*.npz")):
            raise DataError(
                f"{self.work_dir}: signatures in an older format (sig_*.npz); delete it and rerun"
            )
        if self.tasks is not None and len(folders) != self.tasks:
            raise DataError(
                f"{self.work_dir}: {len(folders)} signature folders for {self.tasks} collect tasks; "
                "a task's output is missing (delete this folder and its stage's completions to redo it)"
            )
        result = reduce_from_disk(folders, self.params)
        tmp = os.path.join(self.work_dir, "remove.json.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(result, fh)
        os.replace(tmp, os.path.join(self.work_dir, "remove.json"))
        yield from ()


class MinhashApply(CountingStep):
    """Pass 2: drop the documents the reduce marked."""

    name = "minhash dedup"

    def __init__(self) -> None:
        super().__init__()
        self.work_dir = ""

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        with open(os.path.join(self.work_dir, "remove.json"), encoding="utf-8") as fh:
            remove = set(json.load(fh)["remove"])
        counts = Counts()
        for doc in data:
            counts.seen(doc)
            if order_key(doc) in remove:
                counts.drop(doc, "near_duplicate")
            else:
                counts.keep(doc)
                yield doc
        self.write_counts(counts, rank)


class MinhashDedup:
    """The recipe's `minhash_dedup` step: the planner splits it into collect / reduce / apply."""

    two_pass = True

    def __init__(self, **kw: float) -> None:
        self.params = MinhashParams(**kw)  # type: ignore[arg-type]

    def passes(self) -> tuple[CountingStep, CountingStep, CountingStep]:
        return MinhashCollect(self.params), MinhashReduce(self.params), MinhashApply()


@register_step("minhash_dedup", two_pass=True)
def _minhash(spec: dict) -> MinhashDedup:
    return MinhashDedup(**spec)
