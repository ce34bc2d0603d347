"""Selection on the quality classifier's output, per source: by label, and by top-k% of scores.

Both read only `metadata.quality_label` ("low"|"medium"|"high") and `metadata.quality_score`
(P(high) + 0.5 P(medium)), written by the classifier's `quality_score` step. Sources are matched
with shell patterns on `metadata.source`; documents of sources no rule names pass untouched.

Gaperon's use: French web keeps "high" (plus "medium" from a named subset), English web keeps the
top 10% of scores, which needs the whole distribution first: `top_k` is a two-pass step (collect
scores per task, one reduce computes each source's threshold, then filter).
"""

from __future__ import annotations

import fnmatch
import glob
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from datatrove.data import Document, DocumentsPipeline

from gaperon.config import config_error, from_dict
from gaperon.curate.steps import CountingStep, Counts, register_step
from gaperon.errors import ConfigError

LABELS = ("low", "medium", "high")


@dataclass
class LabelRule:
    sources: list[str]  # shell patterns on metadata.source, e.g. ["fr-web*"]
    keep: list[str] = field(default_factory=lambda: ["high"])
    # Labels also kept for documents whose `subset_field` is one of `subset_values` (a named subset).
    subset_keep: list[str] = field(default_factory=list)
    subset_field: str = "subset"
    subset_values: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for lab in [*self.keep, *self.subset_keep]:
            if lab not in LABELS:
                raise ConfigError(f"label {lab!r} is not one of {list(LABELS)}")


def _source(doc: Document) -> str:
    return str(doc.metadata.get("source", ""))


def _match(patterns: list[str], source: str) -> bool:
    return any(fnmatch.fnmatchcase(source, p) for p in patterns)


class LabelSelect(CountingStep):
    name = "select by label"

    def __init__(self, rules: list[LabelRule]) -> None:
        super().__init__()
        self.rules = rules

    def decide(self, doc: Document) -> str | None:
        source = _source(doc)
        for rule in self.rules:
            if not _match(rule.sources, source):
                continue
            label = doc.metadata.get("quality_label")
            if label not in LABELS:
                return "no_quality_label"
            if label in rule.keep:
                return None
            if label in rule.subset_keep and str(doc.metadata.get(rule.subset_field)) in rule.subset_values:
                return None
            return f"label_{label}"
        return None

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        counts = Counts()
        for doc in data:
            counts.seen(doc)
            reason = self.decide(doc)
            if reason is None:
                counts.keep(doc)
                yield doc
            else:
                counts.drop(doc, reason)
        self.write_counts(counts, rank)


@register_step("select_labels")
def _select_labels(spec: dict) -> LabelSelect:
    rules = spec.pop("rules", None)
    if spec:
        raise ConfigError(f"unknown field(s) {', '.join(spec)}; known: rules")
    if not isinstance(rules, list) or not rules:
        raise config_error(
            "", "rules", "a non-empty list of {sources, keep, subset_keep, subset_field, subset_values}"
        )
    return LabelSelect([from_dict(LabelRule, r, path=f"rules[{i}]") for i, r in enumerate(rules)])


@dataclass
class TopKRule:
    sources: list[str]
    top_percent: float = 10.0


class TopKCollect(CountingStep):
    name = "top-k scores"

    def __init__(self, rules: list[TopKRule]) -> None:
        super().__init__()
        self.rules = rules
        self.work_dir = ""

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        scores: dict[int, list[float]] = {i: [] for i in range(len(self.rules))}
        for doc in data:
            i = _rule_index(self.rules, doc)
            if i is not None and isinstance(doc.metadata.get("quality_score"), int | float):
                scores[i].append(float(doc.metadata["quality_score"]))
            yield doc
        os.makedirs(self.work_dir, exist_ok=True)
        tmp = os.path.join(self.work_dir, f".scores_{rank:05d}.json")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({str(k): v for k, v in scores.items()}, fh)
        os.replace(tmp, os.path.join(self.work_dir, f"scores_{rank:05d}.json"))


def _rule_index(rules: list[TopKRule], doc: Document) -> int | None:
    source = _source(doc)
    for i, r in enumerate(rules):
        if _match(r.sources, source):
            return i
    return None


def top_k_threshold(scores: np.ndarray, top_percent: float) -> float:
    """The score of the ceil(k% * n)-th best document: keeping `score >= threshold` keeps the top k%
    (plus documents tied with the last one kept)."""
    if scores.size == 0:
        return math.inf
    k = max(1, math.ceil(scores.size * top_percent / 100.0))
    return float(np.sort(scores)[::-1][k - 1])


class TopKReduce(CountingStep):
    name = "top-k thresholds"

    def __init__(self, rules: list[TopKRule]) -> None:
        super().__init__()
        self.rules = rules
        self.work_dir = ""

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        per_rule: dict[int, list[float]] = {i: [] for i in range(len(self.rules))}
        for f in sorted(glob.glob(os.path.join(self.work_dir, "scores_*.json"))):
            with open(f, encoding="utf-8") as fh:
                for k, v in json.load(fh).items():
                    per_rule[int(k)].extend(v)
        out = {
            str(i): {"n": len(v), "threshold": top_k_threshold(np.asarray(v), self.rules[i].top_percent)}
            for i, v in per_rule.items()
        }
        tmp = os.path.join(self.work_dir, "thresholds.json.tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(out, fh)
        os.replace(tmp, os.path.join(self.work_dir, "thresholds.json"))
        yield from ()


class TopKApply(CountingStep):
    name = "select top-k"

    def __init__(self, rules: list[TopKRule]) -> None:
        super().__init__()
        self.rules = rules
        self.work_dir = ""

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> Iterator[Document]:
        with open(os.path.join(self.work_dir, "thresholds.json"), encoding="utf-8") as fh:
            thr = {int(k): v["threshold"] for k, v in json.load(fh).items()}
        counts = Counts()
        for doc in data:
            counts.seen(doc)
            i = _rule_index(self.rules, doc)
            score = doc.metadata.get("quality_score")
            if i is not None and not isinstance(score, int | float):
                counts.drop(doc, "no_quality_score")
            elif i is not None and float(score) < thr[i]:
                counts.drop(doc, "below_top_k")
            else:
                counts.keep(doc)
                yield doc
        self.write_counts(counts, rank)


class TopKSelect:
    two_pass = True

    def __init__(self, rules: list[TopKRule]) -> None:
        self.rules = rules

    def passes(self) -> tuple[CountingStep, CountingStep, CountingStep]:
        return TopKCollect(self.rules), TopKReduce(self.rules), TopKApply(self.rules)


@register_step("select_top_k", two_pass=True)
def _select_top_k(spec: dict) -> TopKSelect:
    rules = spec.pop("rules", None)
    if spec:
        raise ConfigError(f"unknown field(s) {', '.join(spec)}; known: rules")
    if not isinstance(rules, list) or not rules:
        raise config_error("", "rules", "a non-empty list of {sources, top_percent}")
    return TopKSelect([from_dict(TopKRule, r, path=f"rules[{i}]") for i, r in enumerate(rules)])
