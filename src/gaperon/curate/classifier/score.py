"""Score documents with a quality classifier: score = P(high) + 0.5 P(medium), label = argmax.

One `Scorer` serves the command line, the datatrove step and the benchmark. Texts are scored in
chunks: within a chunk the encoder backend sorts by token length so each batch pads little, and
truncates to the first 512 tokens (Gaperon's setting). Scores do not depend on batching or order.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gaperon.curate.classifier.base import QualityClassifier, load_classifier, quality_score
from gaperon.curate.classifier.io import iter_jsonl, write_jsonl
from gaperon.errors import DataError, UsageError


class Scorer:
    """`precision` fp32 (default: transformers' scores), bf16 or int8-dynamic (opt-in: faster only on
    hardware with bf16 / int8 dot-product units; scores move by ~1e-3); `threads` sets torch's
    intra-op threads (e.g. cores / datatrove workers), None leaves it.
    """

    def __init__(
        self,
        model: str | Path,
        *,
        batch_size: int = 32,
        device: str = "cpu",
        max_length: int = 512,
        precision: str = "fp32",
        threads: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise UsageError(f"batch_size must be >= 1, got {batch_size}")
        if threads is not None:
            if threads < 1:
                raise UsageError(f"threads must be >= 1, got {threads}")
            import torch

            torch.set_num_threads(threads)
        self.clf: QualityClassifier = load_classifier(model, device=device, precision=precision)
        if hasattr(self.clf, "max_length"):
            self.clf.max_length = max_length
        self.batch_size = batch_size

    def proba(self, texts: Sequence[str]) -> np.ndarray:
        return self.clf.predict_proba(list(texts), batch_size=self.batch_size)

    def score(self, texts: Sequence[str]) -> tuple[np.ndarray, list[str]]:
        """(scores, labels) in input order."""
        p = self.proba(texts)
        return quality_score(p, self.clf.labels), [self.clf.labels[i] for i in p.argmax(1)]


@dataclass
class ScoreReport:
    documents: int = 0
    seconds: float = 0.0
    labels: dict[str, int] = field(default_factory=dict)

    @property
    def docs_per_s(self) -> float:
        return self.documents / self.seconds if self.seconds else 0.0


def _chunks(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    buf: list[Any] = []
    for x in items:
        buf.append(x)
        if len(buf) == size:
            yield buf
            buf = []
    if buf:
        yield buf


def score_files(
    model: str | Path,
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    batch_size: int = 32,
    device: str = "cpu",
    text_field: str = "text",
    chunk_size: int = 2048,
    precision: str = "fp32",
    threads: int | None = None,
) -> ScoreReport:
    """Copy every record of `inputs` to `out` (jsonl) with `quality_score` and `quality_label` added."""
    scorer = Scorer(model, batch_size=batch_size, device=device, precision=precision, threads=threads)
    report = ScoreReport()
    t0 = time.perf_counter()

    def records() -> Iterator[dict]:
        for path in inputs:
            for lineno, obj in iter_jsonl(path):
                if not isinstance(obj.get(text_field), str):
                    raise DataError(f"{path}:{lineno}: field {text_field!r} is missing or not a string")
                yield obj

    def scored() -> Iterator[dict]:
        for chunk in _chunks(records(), chunk_size):
            scores, labels = scorer.score([r[text_field] for r in chunk])
            for r, s, lab in zip(chunk, scores, labels, strict=True):
                r["quality_score"] = float(s)
                r["quality_label"] = lab
                report.labels[lab] = report.labels.get(lab, 0) + 1
                yield r

    report.documents = write_jsonl(out, scored())
    report.seconds = time.perf_counter() - t0
    return report


def make_step(model: str, **options: Any):
    """The datatrove step writing doc.metadata['quality_score'] and ['quality_label']."""
    from gaperon.curate.classifier.step import QualityScoreStep

    return QualityScoreStep(model, **options)
