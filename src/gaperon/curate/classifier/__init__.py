"""The Gaperon quality classifier: offline labels, three trainable backends, batched scoring."""

from gaperon.curate.classifier import step as _step  # noqa: F401 - registers the `quality_score` curation step
from gaperon.curate.classifier.base import LABELS, QualityClassifier, load_classifier, quality_score

__all__ = ["LABELS", "QualityClassifier", "load_classifier", "quality_score"]
