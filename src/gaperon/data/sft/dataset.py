"""An SFT phase's data: sources -> rendered, truncated, packed examples -> batches by step.

The batch at a step is a pure function of (seed, step), as for pretraining: the packed rows are
fixed by the data, each epoch visits them in a permutation drawn from (seed, epoch), and step `s`
takes positions [s*B, (s+1)*B) of that endless sequence. So a resumed run reads exactly the rows
an uninterrupted one would, whatever the number of ranks. The global batch's trained-token count
travels with each rank's rows: the trainer divides the summed loss by it (mean over trained tokens
of the global batch, independent of micro-batching and of the number of ranks).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from gaperon.data.readers import ReaderReport
from gaperon.data.sft.formats import read_conversations
from gaperon.data.sft.pack import PackedExamples, RowBatch
from gaperon.data.sft.render import Example, render_batch, truncate
from gaperon.data.sft.spec import SFTDataSpec
from gaperon.errors import DataError

CHUNK = 512  # conversations rendered and tokenized together


@dataclass
class SFTReport:
    conversations: int = 0
    examples: int = 0
    dropped_truncated: int = 0
    first_dropped: str = ""
    truncated: int = 0
    real_tokens: int = 0
    trained_tokens: int = 0
    rows: int = 0
    padding_share: float = 0.0
    readers: dict = field(default_factory=dict)

    @property
    def trained_fraction(self) -> float:
        return self.trained_tokens / max(self.real_tokens, 1)

    def summary(self) -> str:
        return (
            f"{self.examples:,} examples from {self.conversations:,} conversations, "
            f"{self.real_tokens:,} tokens, trained-token fraction {self.trained_fraction:.3f}, "
            f"{self.rows:,} rows, padding {100 * self.padding_share:.1f}%, "
            f"{self.dropped_truncated} dropped by truncation"
            + (f" (first {self.first_dropped})" if self.first_dropped else "")
            + f", {self.truncated} cut"
        )


def load_examples(
    spec: SFTDataSpec, tokenizer, max_tokens: int, resolve: Callable[[str], str] = str
) -> tuple[list[Example], list[int], SFTReport]:
    """All sources rendered and truncated to `max_tokens`; (examples, source index each, report)."""
    report = SFTReport()
    examples: list[Example] = []
    sources: list[int] = []
    if not spec.sources:
        raise DataError("sft.sources: no data source")
    for si, src in enumerate(spec.sources):
        if src.repeat < 1:
            raise DataError(f"sft.sources[{si}].repeat: must be >= 1, got {src.repeat}")
        rr = ReaderReport()
        path = src.path if src.path.startswith("pkg:") else resolve(src.path)
        convs = list(read_conversations(path, src.format, rr, src.limit))
        report.readers[src.path] = rr.to_dict()
        report.conversations += len(convs)
        kept: list[Example] = []
        for start in range(0, len(convs), CHUNK):
            chunk = convs[start : start + CHUNK]
            for ex in render_batch(tokenizer, [m for _, m in chunk], [w for w, _ in chunk]):
                cut = truncate(ex, max_tokens, spec.truncation)
                if cut is None:
                    report.dropped_truncated += 1
                    report.first_dropped = report.first_dropped or ex.where
                    continue
                report.truncated += len(cut.ids) < len(ex.ids)
                kept.append(cut)
        for _ in range(src.repeat):
            examples.extend(kept)
            sources.extend([si] * len(kept))
    if not examples:
        raise DataError(f"sft: no example left ({report.dropped_truncated} dropped by truncation)")
    report.examples = len(examples)
    return examples, sources, report


@dataclass
class SFTBatch:
    tokens: torch.Tensor
    doc_ids: torch.Tensor
    labels: torch.Tensor
    source_ids: torch.Tensor
    global_trained: int  # learned targets in the whole global batch (all ranks)


class SFTSampler:
    """Answers `batch(step, rank, world_size)` like the pretraining samplers."""

    def __init__(self, packed: PackedExamples, global_batch: int, seed: int, report: SFTReport) -> None:
        self.packed, self.global_batch, self.seed, self.report = packed, global_batch, seed, report
        self.seq_len = packed.capacity - 1
        self._perm: tuple[int, np.ndarray] | None = None
        h = hashlib.sha256()
        h.update(packed.ids.tobytes())
        h.update(packed.mask.tobytes())
        h.update(str(packed.rows).encode())
        self.digest = h.hexdigest()[:16]

    def _epoch_perm(self, epoch: int) -> np.ndarray:
        if self._perm is None or self._perm[0] != epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = (epoch, torch.randperm(len(self.packed.rows), generator=gen).numpy())
        return self._perm[1]

    def row_indices(self, step: int) -> list[int]:
        n = len(self.packed.rows)
        out = []
        for pos in range(step * self.global_batch, (step + 1) * self.global_batch):
            out.append(int(self._epoch_perm(pos // n)[pos % n]))
        return out

    def batch(self, step: int, rank: int = 0, world_size: int = 1) -> SFTBatch:
        full: RowBatch = self.packed.build(self.row_indices(step))
        trained = int((full.labels != -100).sum())
        per = self.global_batch // world_size
        sl = slice(rank * per, (rank + 1) * per)
        return SFTBatch(full.tokens[sl], full.doc_ids[sl], full.labels[sl], full.source_ids[sl], trained)

    def validation_batches(self, n_sequences: int, batch_size: int) -> list:  # noqa: ARG002
        return []  # SFT phases hold out nothing; evaluate the result with `gaperon eval`

    def state_dict(self) -> dict:
        return {"kind": "sft", "seed": self.seed, "rows": len(self.packed.rows), "digest": self.digest}

    def load_state_dict(self, state: dict) -> None:
        if state.get("kind") == "sft" and state.get("digest") != self.digest:
            raise ValueError(
                f"the SFT data changed since the checkpoint (digest {state.get('digest')} -> {self.digest}); "
                "resuming would not replay the same batches"
            )


def build_sft_sampler(
    spec: SFTDataSpec,
    tokenizer,
    seq_len: int,
    global_batch: int,
    seed: int,
    resolve: Callable[[str], str] = str,
) -> SFTSampler:
    """Read, render, truncate and pack a phase's data (DataError / TemplateSpanError when unusable)."""
    capacity = seq_len + 1
    examples, sources, report = load_examples(spec, tokenizer, capacity, resolve)
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else tokenizer.eos_id
    packed = PackedExamples(examples, capacity, pad, spec.packing, sources)
    report.real_tokens = packed.real_tokens
    report.trained_tokens = packed.trained_targets()
    report.rows = len(packed.rows)
    report.padding_share = packed.padding_share
    if report.trained_tokens == 0:
        raise DataError("sft: the trained-token fraction is 0 (no assistant token to learn)")
    return SFTSampler(packed, global_batch, seed, report)
