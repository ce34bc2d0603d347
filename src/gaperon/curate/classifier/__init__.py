"""The Gaperon quality classifier: offline labels, three trainable backends, batched scoring."""

from gaperon.curate.classifier.base import LABELS, QualityClassifier, load_classifier, quality_score

__all__ = ["LABELS", "QualityClassifier", "load_classifier", "quality_score"]
