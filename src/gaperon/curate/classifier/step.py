"""The quality classifier as a datatrove pipeline step (curation recipes: `type: quality_score`)."""

from __future__ import annotations

from datatrove.data import DocumentsPipeline

from gaperon.curate.classifier.score import Scorer
from gaperon.curate.steps import CountingStep, Counts, register_step


class QualityScoreStep(CountingStep):
    """Adds metadata quality_score = P(high) + 0.5 P(medium) and quality_label; drops nothing.

    The model loads in `run`, inside the worker, so the step pickles small for Slurm and Ray.
    Documents are scored `chunk_size` at a time so length sorting has room to work.
    """

    name = "🏅 quality classifier"
    type = "🔢 - SCORER"

    def __init__(
        self,
        model: str,
        *,
        batch_size: int = 32,
        device: str = "cpu",
        chunk_size: int = 1024,
        max_length: int = 512,
        precision: str = "fp32",
        threads: int | None = None,
    ) -> None:
        super().__init__()
        self.precision, self.threads = precision, threads
        self.model, self.batch_size, self.device = str(model), batch_size, device
        self._counts = Counts()
        self.chunk_size, self.max_length = chunk_size, max_length

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:  # noqa: ARG002 - datatrove's signature
        scorer = Scorer(
            self.model,
            batch_size=self.batch_size,
            device=self.device,
            max_length=self.max_length,
            precision=self.precision,
            threads=self.threads,
        )
        self._counts = Counts()
        buf: list = []
        for doc in data:
            buf.append(doc)
            if len(buf) >= self.chunk_size:
                yield from self._flush(scorer, buf)
                buf = []
        if buf:
            yield from self._flush(scorer, buf)
        self.write_counts(self._counts, rank)  # in the curation report, with the score histogram

    def _flush(self, scorer: Scorer, docs: list) -> DocumentsPipeline:
        with self.track_time(unit="batch"):
            scores, labels = scorer.score([d.text for d in docs])
        for doc, s, lab in zip(docs, scores, labels, strict=True):
            doc.metadata["quality_score"] = float(s)
            doc.metadata["quality_label"] = lab
            self.stat_update(f"label_{lab}")
            self.update_doc_stats(doc)
            self._counts.seen(doc)
            self._counts.keep(doc)
            yield doc


@register_step("quality_score")
def _quality_score(spec: dict) -> QualityScoreStep:
    """`{type: quality_score, model: PATH, batch_size: N, device: cpu, precision: fp32, threads: N}`."""
    return QualityScoreStep(**spec)
