"""Best-fit-decreasing packing of examples into fixed-length rows, and the rows as tensors.

Examples are sorted longest first and each goes into the open row whose free space it fills
best (a sorted list of free spaces, so O(n log n) searches). Inside a row every example is its own
document: `doc_ids` change at each example, so the trainer's document masking restarts positions
and forbids attention across examples; padding is one more document whose labels are ignored.
Labels are the next token where that token is learned and belongs to the same example, else -100.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from gaperon.data.sft.render import IGNORE


def best_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Bins (lists of item indices) of total length <= capacity each; every length must fit."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    free: list[tuple[int, int]] = []  # (free space, bin index), sorted
    bins: list[list[int]] = []
    for i in order:
        n = lengths[i]
        if n > capacity:
            raise ValueError(f"item {i} has length {n} > capacity {capacity}")
        k = bisect.bisect_left(free, (n, -1))
        if k < len(free):
            space, b = free.pop(k)
        else:
            space, b = capacity, len(bins)
            bins.append([])
        bins[b].append(i)
        if space - n > 0:
            bisect.insort(free, (space - n, b))
    return bins


@dataclass
class RowBatch:
    tokens: Tensor  # (rows, capacity) int64
    doc_ids: Tensor  # (rows, capacity) int32; 0 = padding, examples 1, 2, ...
    labels: Tensor  # (rows, capacity - 1) int64, IGNORE where nothing is learned
    source_ids: Tensor  # (rows,) int32


class PackedExamples:
    """Examples stored flat (ids, mask, offsets) plus the rows they are packed into."""

    def __init__(
        self,
        examples: Sequence,
        capacity: int,
        pad_id: int,
        packing: bool = True,
        sources: Sequence[int] = (),
    ) -> None:
        self.capacity, self.pad_id = capacity, pad_id
        lengths = [len(e.ids) for e in examples]
        self.offsets = np.zeros(len(examples) + 1, dtype=np.int64)
        np.cumsum(lengths, out=self.offsets[1:])
        self.ids = np.fromiter(
            (t for e in examples for t in e.ids), dtype=np.int64, count=int(self.offsets[-1])
        )
        self.mask = np.fromiter(
            (m for e in examples for m in e.mask), dtype=np.bool_, count=int(self.offsets[-1])
        )
        self.sources = np.asarray(sources if len(sources) else [0] * len(examples), dtype=np.int32)
        self.rows = best_fit_decreasing(lengths, capacity) if packing else [[i] for i in range(len(examples))]

    @property
    def real_tokens(self) -> int:
        return int(self.offsets[-1])

    @property
    def slots(self) -> int:
        return len(self.rows) * self.capacity

    @property
    def padding_share(self) -> float:
        return 1.0 - self.real_tokens / max(self.slots, 1)

    def trained_targets(self) -> int:
        """Learned tokens that are targets (an example's first token never is)."""
        return int(self.mask.sum() - self.mask[self.offsets[:-1]].sum())

    def build(self, row_indices: Sequence[int]) -> RowBatch:
        n, c = len(row_indices), self.capacity
        tokens = np.full((n, c), self.pad_id, dtype=np.int64)
        docs = np.zeros((n, c), dtype=np.int32)
        learn = np.zeros((n, c), dtype=np.bool_)
        src = np.zeros(n, dtype=np.int32)
        for r, row in enumerate(row_indices):
            pos = 0
            for k, e in enumerate(self.rows[row], 1):
                a, b = self.offsets[e], self.offsets[e + 1]
                tokens[r, pos : pos + b - a] = self.ids[a:b]
                learn[r, pos : pos + b - a] = self.mask[a:b]
                docs[r, pos : pos + b - a] = k
                pos += b - a
            src[r] = self.sources[self.rows[row][0]]
        keep = learn[:, 1:] & (docs[:, 1:] == docs[:, :-1]) & (docs[:, 1:] > 0)
        labels = np.where(keep, tokens[:, 1:], IGNORE)
        return RowBatch(
            torch.from_numpy(tokens), torch.from_numpy(docs), torch.from_numpy(labels), torch.from_numpy(src)
        )
