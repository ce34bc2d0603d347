"""The step registry and the counting base every curation step shares.

A recipe names steps as `{type: NAME, ...}`; `STEP_TYPES[NAME]` is a factory taking the remaining
keys. Another module adds a step type with one line::

    @register_step("quality_score")
    def _quality_score(spec: dict) -> PipelineStep: ...

Each step counts documents in / kept / dropped per reason and per language, and writes its counts
(plus score histograms) as one JSON file per task, so the report of a job that was resumed or ran
on many machines is the sum of the files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep

from gaperon.config import config_error, within
from gaperon.errors import ConfigError

# type name -> factory(spec) returning a PipelineStep, or for two-pass steps an object with
# `two_pass = True` and `passes() -> (collect, reduce, apply)` steps.
STEP_TYPES: dict[str, Callable[[dict], Any]] = {}
HIST_BINS = 50  # histogram bins over [0, 1] for language and quality scores
GLOBAL_STEPS: set[str] = set()  # step types that need the whole input before deciding (two-pass)


def register_step(name: str, *, two_pass: bool = False) -> Callable:
    """Register a factory `spec dict -> PipelineStep` under the recipe type `name`."""

    def deco(factory: Callable[[dict], Any]) -> Callable[[dict], Any]:
        STEP_TYPES[name] = factory
        if two_pass:
            GLOBAL_STEPS.add(name)
        return factory

    return deco


def build_step(spec: dict, where: str, source: str = "") -> Any:
    """Recipe mapping -> step instance; unknown types and bad keys name the recipe field (`where`, e.g.
    'steps[3]', in the file `source`), spelled as every config error is (`gaperon.config.config_error`)."""
    _load_builtin_steps()
    if not isinstance(spec, dict) or "type" not in spec:
        raise config_error(source, where, f"a step is a mapping with a 'type' key, got {spec!r}")
    kind = spec["type"]
    if kind not in STEP_TYPES:
        raise config_error(
            source, f"{where}.type", f"unknown step {kind!r}; known: {', '.join(sorted(STEP_TYPES))}"
        )
    args = {k: v for k, v in spec.items() if k != "type"}
    try:
        step = STEP_TYPES[kind](args)
    except TypeError as e:
        if "keyword argument" not in str(e) and "missing" not in str(e):
            raise  # a bug inside the step, not a bad recipe key
        raise config_error(source, where, str(e)) from None
    except ConfigError as e:
        raise within(e, source, where) from None
    step.step_type = kind
    return step


def _load_builtin_steps() -> None:
    # Importing the modules runs their @register_step decorators.
    from gaperon.curate import heuristics, lid, minhash, rehydrate, select  # noqa: F401

    try:  # the classifier's scoring step lives in its own module, registered on import
        import gaperon.curate.classifier  # noqa: F401
    except ImportError as e:
        if "gaperon.curate.classifier" not in str(e):
            raise


def doc_lang(doc: Document) -> str:
    return str(doc.metadata.get("language") or doc.metadata.get("lang") or "unknown")


class Counts:
    """in/kept/dropped per reason and per language, and score histograms, for one step and task."""

    def __init__(self) -> None:
        self.docs_in = 0
        self.kept = 0
        self.dropped: dict[str, int] = {}
        self.lang: dict[str, dict[str, int]] = {}
        self.hist: dict[str, list[int]] = {}

    def seen(self, doc: Document) -> None:
        self.docs_in += 1
        self._lang(doc)["in"] += 1

    def keep(self, doc: Document) -> None:
        self.kept += 1
        self._lang(doc)["kept"] += 1
        for key in ("language_score", "quality_score"):
            v = doc.metadata.get(key)
            if isinstance(v, int | float):
                h = self.hist.setdefault(key, [0] * HIST_BINS)
                h[min(HIST_BINS - 1, max(0, int(float(v) * HIST_BINS)))] += 1

    def drop(self, doc: Document, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1
        self._lang(doc)["dropped"] += 1

    def _lang(self, doc: Document) -> dict[str, int]:
        return self.lang.setdefault(doc_lang(doc), {"in": 0, "kept": 0, "dropped": 0})

    def to_dict(self) -> dict[str, Any]:
        return {
            "in": self.docs_in,
            "kept": self.kept,
            "dropped": dict(sorted(self.dropped.items())),
            "languages": dict(sorted(self.lang.items())),
            "histograms": self.hist,
        }


class CountingStep(PipelineStep):
    """A datatrove step that counts what it sees; `counts_dir` is set by the job planner."""

    name = "gaperon step"
    type = "curate"

    def __init__(self) -> None:
        super().__init__()
        self.counts_dir: str | None = None  # set on the instance by the planner

    def write_counts(self, counts: Counts, rank: int) -> None:
        if not self.counts_dir:
            return
        d = Path(self.counts_dir)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".{rank:05d}.json.tmp"
        tmp.write_text(json.dumps(counts.to_dict()), encoding="utf-8")
        os.replace(tmp, d / f"{rank:05d}.json")


class FilterStep(CountingStep):
    """Keep a document unless `reject` names a reason; may also edit the text in place."""

    def reject(self, doc: Document) -> str | None:
        raise NotImplementedError

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        counts = Counts()
        for doc in data:
            counts.seen(doc)
            with self.track_time():
                reason = self.reject(doc)
            if reason is None:
                counts.keep(doc)
                yield doc
            else:
                counts.drop(doc, reason)
        self.write_counts(counts, rank)
