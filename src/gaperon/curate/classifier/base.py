"""What every quality-classifier backend is, and how a saved one is found again.

Three backends share one interface so `train`, `score` and the curation step never ask which
one they hold. Probabilities always come in the order of `labels` (high, low, medium: the
id2label order of the published Gaperon classifier's folder). A saved classifier is a folder
with a config.json: a Hugging Face sequence-classification folder for the encoder backend (and
for any such folder, e.g. a local copy of almanach/gaperon-quality-classifier), our own format
naming `gaperon_backend` for the others.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from gaperon.errors import ModelFormatError

LABELS = ("high", "low", "medium")


@runtime_checkable
class QualityClassifier(Protocol):
    labels: tuple[str, ...]

    def fit(
        self,
        texts: Sequence[str],
        labels: Sequence[str],
        *,
        class_weight: dict[str, float] | None = None,
        valid: tuple[Sequence[str], Sequence[str]] | None = None,
    ) -> dict[str, Any]:
        """Train; return a small log (losses, steps, what was chosen on `valid`)."""
        ...

    def predict_proba(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        """[len(texts), len(labels)] probabilities, rows summing to 1."""
        ...

    def save(self, path: str | Path) -> None: ...


def quality_score(proba: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """Gaperon's score: P(high) + 0.5 P(medium)."""
    names = [str(x).lower() for x in labels]
    try:
        hi, med = names.index("high"), names.index("medium")
    except ValueError:
        raise ModelFormatError(f"classifier labels {list(labels)} lack 'high' or 'medium'") from None
    return proba[:, hi] + 0.5 * proba[:, med]


def valid_accuracy(clf: QualityClassifier, valid: tuple[Sequence[str], Sequence[str]] | None) -> float | None:
    """Accuracy on a validation split (None without one): what `fit` logs and selects on."""
    if not valid or not len(valid[0]):
        return None
    pred = clf.predict_proba(list(valid[0])).argmax(1)
    return float(np.mean([clf.labels[i] == y for i, y in zip(pred, valid[1], strict=True)]))


def label_ids(labels: Sequence[str], names: Sequence[str] = LABELS) -> np.ndarray:
    index = {n: i for i, n in enumerate(names)}
    return np.array([index[x] for x in labels], dtype=np.int64)


def read_config(path: str | Path) -> dict:
    cfg_path = Path(path) / "config.json"
    if not cfg_path.is_file():
        raise ModelFormatError(f"{path}: not a classifier folder (no config.json)")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFormatError(f"{cfg_path}: not valid JSON ({e})") from None
    if not isinstance(cfg, dict):
        raise ModelFormatError(f"{cfg_path}: a JSON object is expected")
    return cfg


def load_classifier(path: str | Path, *, device: str = "cpu", precision: str = "fp32") -> QualityClassifier:
    """Any saved classifier folder: ours (any backend) or a Hugging Face sequence classifier.

    `precision` (fp32, bf16, int8-dynamic) applies to the encoder backend; the others run in fp32.
    """
    backend = read_config(path).get("gaperon_backend", "encoder")
    if backend != "encoder" and precision != "fp32":
        from gaperon.errors import ConfigError

        raise ConfigError(f"{path}: precision {precision!r} is for encoder classifiers; this is {backend}")
    if backend == "ngram":
        from gaperon.curate.classifier.ngram import NGramClassifier

        return NGramClassifier.load(path)
    if backend == "embedding":
        from gaperon.curate.classifier.embedding import EmbeddingClassifier

        return EmbeddingClassifier.load(path)
    if backend == "encoder":
        from gaperon.curate.classifier.encoder import EncoderClassifier

        return EncoderClassifier.load(path, device=device, precision=precision)
    raise ModelFormatError(f"{path}/config.json: unknown gaperon_backend {backend!r}")
