"""The training token stream of a phase: the batch at a global step is a pure function of
(seed, phase, step). There is no iterator state to save, so resuming after a crash, or with another
number of data-parallel ranks, replays exactly the same tokens (the "exact resume" peers lack).

How a step's rows are chosen:
1. Sequence slots are dealt to sources by stride scheduling: source i's k-th sequence "arrives" at
   time (k + 1 - u_i) / w_i (u_i a seeded offset), and slots follow arrival order. Every prefix of
   the stream then holds each source within one sequence of its exact share (low discrepancy,
   unlike iid draws), and the number of source-i arrivals before slot t has a closed form, so
   step s needs no knowledge of steps < s. Times are exact integers (no float drift at 1e12 tokens).
2. A source's k-th sequence is window p = k mod n_windows of epoch k // n_windows; windows are
   permuted per epoch by a seeded Feistel bijection (no permutation array: sources can hold
   billions of windows). A window is seq_len + 1 consecutive tokens of the source's concatenated
   train shards (memory-mapped), starting at a multiple of seq_len, so each token is a target once
   per epoch. A source exhausted before the budget is repeated, with a new permutation per epoch.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gaperon.data.mixture import Phase
from gaperon.data.shards import SplitView, load_manifest
from gaperon.errors import ConfigError, DataError

log = logging.getLogger(__name__)

Q = 1 << 32  # fixed-point unit of weights and offsets
Q2 = Q * Q


@dataclass
class Batch:
    """tokens: (rows, seq_len + 1) int64; inputs = tokens[:, :-1], targets = tokens[:, 1:].
    doc_ids: same shape int32, equal within a document (0, 1, ... per row) for document masking.
    source_ids: index into phase.sources of each row."""

    tokens: torch.Tensor
    doc_ids: torch.Tensor
    source_ids: list[int]
    step: int = -1

    @property
    def inputs(self) -> torch.Tensor:
        return self.tokens[:, :-1]

    @property
    def targets(self) -> torch.Tensor:
        return self.tokens[:, 1:]


def _seed_words(*parts: object, n: int = 1) -> list[int]:
    """n 64-bit words derived from parts (stable across runs, machines and Python versions)."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8 * n).digest()
    return [int.from_bytes(digest[8 * i : 8 * i + 8], "little") for i in range(n)]


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on uint64 arrays (wrapping arithmetic)."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def feistel_permute(x: np.ndarray, n: int, keys: list[int]) -> np.ndarray:
    """A seeded bijection of [0, n) applied to `x` (a balanced Feistel network + cycle walking)."""
    x = np.asarray(x, dtype=np.uint64)
    if n <= 1:
        return np.zeros_like(x)
    half = max(1, ((n - 1).bit_length() + 1) // 2)
    mask = np.uint64((1 << half) - 1)
    shift = np.uint64(half)
    round_keys = [np.uint64(k) for k in keys]

    def once(v: np.ndarray) -> np.ndarray:
        left, right = v >> shift, v & mask
        for k in round_keys:
            left, right = right, left ^ (_mix64(right ^ k) & mask)
        return (left << shift) | right

    out = once(x)
    bad = out >= np.uint64(n)
    while bad.any():  # cycle walking: the domain is < 4n, so this ends after a few passes
        out[bad] = once(out[bad])
        bad = out >= np.uint64(n)
    return out


class _Schedule:
    """Stride scheduling in exact integers: which source fills each slot of the global stream."""

    def __init__(self, weights: list[float], seed: int, phase: str):
        self.n = len(weights)
        total = sum(weights)
        raw = [w / total * Q for w in weights]
        W = [int(r) for r in raw]
        for i in sorted(range(self.n), key=lambda i: (-(raw[i] - W[i]), i))[: Q - sum(W)]:
            W[i] += 1  # largest remainder: the integer weights sum to exactly Q
        self.W = W
        self.U = [u % Q for u in _seed_words("slots", seed, phase, n=self.n)]
        self.active = [i for i in range(self.n) if W[i] > 0]

    def key(self, i: int, k: int) -> int:
        return ((k + 1) * Q - self.U[i]) * Q // self.W[i]

    def _lt(self, i: int, K: int) -> int:  # arrivals of source i with key < K
        return max(0, (K * self.W[i] + self.U[i] * Q - 1) // Q2) if self.W[i] else 0

    def _total_le(self, K: int) -> int:
        return sum(self._lt(i, K + 1) for i in self.active)

    def counts(self, t: int) -> list[int]:
        """How many of the first t slots each source holds."""
        if t <= 0:
            return [0] * self.n
        lo, hi = max(0, (t - self.n - 2) * Q), (t + self.n + 2) * Q
        while self._total_le(lo) >= t + 1:
            lo //= 2
        while self._total_le(hi) < t + 1:
            hi *= 2
        while hi - lo > 1:  # smallest K with total_le(K) >= t + 1: the key of slot t
            mid = (lo + hi) // 2
            if self._total_le(mid) >= t + 1:
                hi = mid
            else:
                lo = mid
        K = hi
        c = [self._lt(i, K) for i in range(self.n)]
        extra = t - sum(c)  # slots taken by arrivals exactly at K, in source order
        for i in self.active:
            if extra == 0:
                break
            if self._lt(i, K + 1) > c[i]:
                c[i] += 1
                extra -= 1
        return c

    def slots(self, t0: int, t1: int) -> list[tuple[int, int]]:
        """(source, k) of slots t0..t1-1 in stream order: k is the source's own sequence number."""
        a, b = self.counts(t0), self.counts(t1)
        items = [(self.key(i, k), i, k) for i in self.active for k in range(a[i], b[i])]
        items.sort()
        return [(i, k) for _, i, k in items]


class MixtureSampler:
    """Batches of a phase's mixture at any global step; see the module docstring for the design."""

    def __init__(self, phase: Phase, global_batch: int, tokenizer_identity: str | None = None):
        if global_batch < 1:
            raise ConfigError(f"global_batch must be >= 1, got {global_batch}")
        self.phase, self.global_batch, self.seq_len = phase, global_batch, phase.seq_len
        self.step = 0  # the next step the trainer will ask for (only for state_dict bookkeeping)
        weights = phase.weights
        self.names = [s.name for s in phase.sources]
        self.train: list[SplitView | None] = []
        self.val: list[SplitView | None] = []
        self.identity = tokenizer_identity
        bos_rule: tuple[Any, str] | None = None  # (the BOS id documents start with, the source that says so)
        for s, w in zip(phase.sources, weights):
            if w <= 0:
                self.train.append(None)
                self.val.append(None)
                continue
            m = load_manifest(s.path)
            ident = m["tokenizer"]["identity"]
            if self.identity is None:
                self.identity, first = ident, s
            elif ident != self.identity:
                other = f"source {first.name!r}" if tokenizer_identity is None else "this run's tokenizer"
                raise DataError(
                    f"phase {phase.name!r}: source {s.name!r} ({s.path}) was tokenized with "
                    f"{m['tokenizer']['name']!r} (identity {ident[:12]}...), which differs from {other} "
                    f"(identity {self.identity[:12]}...): tokenizer mismatch"
                )
            bos = m["tokenizer"].get("bos_id")
            if bos_rule is None:
                bos_rule = (bos, s.name)
            elif bos != bos_rule[0]:
                raise DataError(
                    f"phase {phase.name!r}: source {s.name!r} ({s.path}) starts its documents with "
                    f"{bos!r} but source {bos_rule[1]!r} with {bos_rule[0]!r} (a BOS id, or None for no "
                    "BOS): tokenize every source with the same BOS rule"
                )
            self.train.append(SplitView(Path(s.path), m["splits"]["train"]["shards"]))
            self.val.append(SplitView(Path(s.path), m["splits"].get("val", {"shards": []})["shards"]))
        self.bos_id = None if bos_rule is None else bos_rule[0]  # what every document starts with
        self.windows = [0 if v is None else max(0, (v.tokens - 1) // self.seq_len) for v in self.train]
        for s, v, nw in zip(phase.sources, self.train, self.windows):
            if v is not None and nw == 0:
                raise DataError(
                    f"phase {phase.name!r}: source {s.name!r} ({s.path}) has {v.tokens} train tokens, "
                    f"fewer than seq_len + 1 = {self.seq_len + 1}"
                )
        self.schedule = _Schedule(weights, phase.seed, phase.name)
        self.total_steps = phase.tokens // (global_batch * self.seq_len)
        if self.total_steps < 1:
            raise DataError(
                f"phase {phase.name!r}: tokens={phase.tokens} is less than one global batch "
                f"({global_batch} x {self.seq_len} tokens)"
            )
        self._warn_repeats()

    # -- the stream
    def _warn_repeats(self) -> None:
        final = self.epochs(self.total_steps)
        repeated = {n: e for n, e in final.items() if e > 1}
        if repeated:
            log.warning(
                "phase %r: %s exhausted before the %d-token budget and repeated (new order each epoch): %s",
                self.phase.name,
                "source" if len(repeated) == 1 else "sources",
                self.phase.tokens,
                ", ".join(f"{n} {e:.2f} epochs" for n, e in repeated.items()),
            )

    def epochs(self, step: int) -> dict[str, float]:
        """Passes over each source's train windows made by the stream before `step`."""
        counts = self.schedule.counts(step * self.global_batch)
        return {n: (c / w if w else 0.0) for n, c, w in zip(self.names, counts, self.windows)}

    def batch(self, step: int, rank: int = 0, world_size: int = 1) -> Batch:
        """Rows [rank*B/W, (rank+1)*B/W) of global step `step`'s batch."""
        src, starts = self.windows_at(step, rank, world_size)
        self.step = max(self.step, step + 1)
        return self._gather([self.train[i] for i in src], starts, [int(i) for i in src], step)

    def windows_at(self, step: int, rank: int = 0, world_size: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """(source index, train token offset) of each row of the batch: the batch minus the reading."""
        B = self.global_batch
        if world_size < 1 or B % world_size:
            raise ConfigError(f"global_batch {B} is not divisible by world_size {world_size}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside [0, {world_size})")
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        per = B // world_size
        slots = self.schedule.slots(step * B, (step + 1) * B)[rank * per : (rank + 1) * per]
        src = np.array([i for i, _ in slots], dtype=np.int64)
        k = np.array([kk for _, kk in slots], dtype=np.int64)
        starts = np.zeros(len(slots), dtype=np.int64)
        for i in np.unique(src):
            rows = np.nonzero(src == i)[0]
            nw = self.windows[i]
            epoch, pos = np.divmod(k[rows], nw)
            for e in np.unique(epoch):
                sel = rows[epoch == e]
                keys = _seed_words("windows", self.phase.seed, self.phase.name, self.names[i], int(e), n=6)
                starts[sel] = feistel_permute(pos[epoch == e], nw, keys).astype(np.int64) * self.seq_len
        return src, starts

    def _val_view(self, i: int) -> SplitView:
        view = self.val[i]
        assert view is not None, "a source without a val split has no val sequences to take"
        return view

    def _gather(self, views: list[SplitView], starts: np.ndarray, source_ids: list[int], step: int) -> Batch:
        L1 = self.seq_len + 1
        tokens = np.empty((len(views), L1), dtype=np.uint32)
        marks = np.zeros((len(views), L1), dtype=np.int32)
        for r, (view, a) in enumerate(zip(views, starts)):
            view.read(int(a), L1, tokens[r], marks[r])
        doc_ids = np.cumsum(marks, axis=1, dtype=np.int32)
        return Batch(torch.from_numpy(tokens.astype(np.int64)), torch.from_numpy(doc_ids), source_ids, step)

    def validation_batches(self, n_sequences: int, batch_size: int) -> list[Batch]:
        """Up to n_sequences held-out windows (the val splits), shared by weight, in fixed batches.

        Deterministic for a phase: the same sequences at every evaluation, whatever the step.
        A source whose val split is shorter than its share gives what it has (logged).
        """
        if n_sequences < 1 or batch_size < 1:
            raise ValueError("n_sequences and batch_size must be >= 1")
        weights = self.phase.weights
        avail = [0 if v is None else max(0, (v.tokens - 1) // self.seq_len) for v in self.val]
        share = [w * n_sequences for w in weights]
        alloc = [int(s) for s in share]
        for i in sorted(range(len(share)), key=lambda i: (-(share[i] - alloc[i]), i))[
            : n_sequences - sum(alloc)
        ]:
            alloc[i] += 1
        take = [min(a, v) for a, v in zip(alloc, avail)]
        short = {self.names[i]: (take[i], alloc[i]) for i in range(len(take)) if take[i] < alloc[i]}
        if short:
            log.info(
                "validation: short val splits (sequences taken/wanted): %s",
                ", ".join(f"{n} {t}/{a}" for n, (t, a) in short.items()),
            )
        items = []
        for i, n in enumerate(take):
            if n:
                keys = _seed_words("val", self.phase.seed, self.names[i], n=6)
                w = feistel_permute(np.arange(n, dtype=np.uint64), avail[i], keys).astype(np.int64)
                items += [((j + 0.5) / n, i, int(w[j]) * self.seq_len) for j in range(n)]
        items.sort()  # interleave sources evenly
        out = []
        for b0 in range(0, len(items), batch_size):
            chunk = items[b0 : b0 + batch_size]
            out.append(
                self._gather(
                    [self._val_view(i) for _, i, _ in chunk],
                    np.array([a for _, _, a in chunk]),
                    [i for _, i, _ in chunk],
                    -1,
                )
            )
        return out

    # -- resume bookkeeping: the stream itself has no state, only its identity is checked
    def _fingerprint(self) -> str:
        parts = [(n, w, v.tokens if v else 0) for n, w, v in zip(self.names, self.schedule.W, self.train)]
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]

    def state_dict(self) -> dict:
        return {
            "phase": self.phase.name,
            "seed": self.phase.seed,
            "global_batch": self.global_batch,
            "seq_len": self.seq_len,
            "mixture": self._fingerprint(),
            "step": self.step,
        }

    def load_state_dict(self, state: dict) -> None:
        """Check the saved stream is this one (same phase, seed, batch, mixture) and take its step."""
        mine = self.state_dict()
        diff = [
            f"{k}: saved {state.get(k)!r}, now {mine[k]!r}"
            for k in mine
            if k != "step" and state.get(k) != mine[k]
        ]
        if diff:
            raise ConfigError("data sampler state does not match this phase (" + "; ".join(diff) + ")")
        self.step = int(state.get("step", 0))
