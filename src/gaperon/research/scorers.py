"""Quality scorers for the haystack audit: anything that maps texts to one number each.

A classifier folder trained by `gaperon classifier train` (Gaperon-style quality, or DCLM-style
instruction-vs-web) scores with its own `score`; `module:function` names any user scorer."""

from __future__ import annotations

import importlib
from collections.abc import Callable

import numpy as np

from gaperon.errors import UsageError

Scorer = Callable[[list[str]], np.ndarray]


def load_scorer(spec: str, *, device: str = "cpu", batch_size: int = 32) -> Scorer:
    """A `module:function` scorer, or a classifier folder scored on `device` (a GPU for encoders)."""
    if ":" in spec and not spec.startswith(("/", ".")):
        module, _, name = spec.partition(":")
        try:
            fn = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as e:
            raise UsageError(f"scorer {spec!r}: {e}") from None
        return lambda texts: np.asarray(fn(texts), dtype=np.float64)
    from gaperon.curate.classifier.score import Scorer as QualityScorer  # the curation stage's classifiers

    scorer = QualityScorer(spec, device=device, batch_size=batch_size)
    return lambda texts: np.asarray(scorer.score(texts)[0], dtype=np.float64)
