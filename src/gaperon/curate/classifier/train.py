"""Train a quality classifier on labelled jsonl files and report how well it does on held-out data.

Input is the `annotate` schema (`text`, `label` in high/low/medium, optional `language`): either a
folder with train/validation/test.jsonl (as `gaperon classifier labels` writes), or any files,
split here stratified by (language, label). Classes are weighted by inverse frequency (reported)
so a judge that says "medium" half the time does not make a "medium" classifier. Outputs:
OUT/model (a classifier folder), OUT/metrics.json, OUT/report.md, OUT/confusion.png.
"""

from __future__ import annotations

import inspect
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from gaperon import atomic
from gaperon.curate.classifier.base import LABELS, QualityClassifier
from gaperon.curate.classifier.io import read_labelled
from gaperon.curate.classifier.metrics import plot_confusion, scores
from gaperon.errors import ConfigError

Backend = Literal["ngram", "embedding", "encoder"]


@dataclass
class TrainConfig:
    backend: Backend = "ngram"
    model: str | None = None  # encoder backend: a local Hugging Face model folder to fine-tune
    seed: int = 0
    class_weights: Literal["balanced", "none"] = "balanced"
    max_train: int | None = None  # a stratified subset of the training split, for quick runs
    split: tuple[float, float, float] = (0.8, 0.1, 0.1)  # when the data is not already split
    batch_size: int = 32  # scoring batch for evaluation
    options: dict[str, Any] = field(default_factory=dict)  # the backend's own settings


def make_backend(cfg: TrainConfig) -> QualityClassifier:
    from gaperon.curate.classifier.embedding import EmbeddingClassifier
    from gaperon.curate.classifier.encoder import EncoderClassifier
    from gaperon.curate.classifier.ngram import NGramClassifier

    cls = {"ngram": NGramClassifier, "embedding": EmbeddingClassifier, "encoder": EncoderClassifier}[
        cfg.backend
    ]
    known = set(inspect.signature(cls).parameters) - {"base"}
    unknown = sorted(set(cfg.options) - known)
    if unknown:
        raise ConfigError(
            f"options: unknown field(s) {unknown} for backend {cfg.backend}; known: {sorted(known)}"
        )
    kwargs = dict(cfg.options)
    kwargs.setdefault("seed", cfg.seed)
    if cfg.backend == "encoder":
        if not cfg.model:
            raise ConfigError("model: the encoder backend needs a local Hugging Face model folder")
        return EncoderClassifier(cfg.model, **kwargs)
    return cls(**kwargs)


def stratified_split(rows: list[dict], fractions: Sequence[float], seed: int) -> list[list[dict]]:
    """Split each (language, label) group by `fractions`, deterministically by seed."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["language"], r["label"]), []).append(r)
    parts: list[list[dict]] = [[] for _ in fractions]
    rng = random.Random(seed)
    for key in sorted(groups):
        g = groups[key][:]
        rng.shuffle(g)
        start = 0
        for i, frac in enumerate(fractions):
            end = len(g) if i == len(fractions) - 1 else start + round(frac * len(g))
            parts[i] += g[start:end]
            start = end
    return parts


def balanced_weights(labels: Sequence[str]) -> dict[str, float]:
    counts = Counter(labels)
    present = [n for n in LABELS if counts[n]]
    return {n: len(labels) / (len(present) * counts[n]) if counts[n] else 0.0 for n in LABELS}


def load_splits(data: Sequence[str | Path], cfg: TrainConfig) -> dict[str, list[dict]]:
    folder = Path(data[0])
    if len(data) == 1 and folder.is_dir():
        names = {"train": "train.jsonl", "validation": "validation.jsonl", "test": "test.jsonl"}
        missing = [n for n in names.values() if not (folder / n).is_file()]
        if missing:
            raise FileNotFoundError(f"{folder}: missing {', '.join(missing)}")
        return {k: read_labelled([folder / v]) for k, v in names.items()}
    train, valid, test = stratified_split(read_labelled(data), cfg.split, cfg.seed)
    return {"train": train, "validation": valid, "test": test}


def evaluate(clf: QualityClassifier, rows: list[dict], batch_size: int) -> dict:
    proba = clf.predict_proba([r["text"] for r in rows], batch_size=batch_size)
    pred = [clf.labels[i] for i in proba.argmax(1)]
    out = {"all": scores([r["label"] for r in rows], pred, LABELS)}
    for lang in sorted({r["language"] for r in rows} - {""}):
        sel = [i for i, r in enumerate(rows) if r["language"] == lang]
        out[lang] = scores([rows[i]["label"] for i in sel], [pred[i] for i in sel], LABELS)
    return out


def train(data: Sequence[str | Path], out: str | Path, cfg: TrainConfig) -> dict:
    """Fit `cfg.backend` on the train split; evaluate on validation and test; write OUT/*."""
    splits = load_splits(data, cfg)
    if cfg.max_train and len(splits["train"]) > cfg.max_train:
        frac = cfg.max_train / len(splits["train"])
        splits["train"] = stratified_split(splits["train"], (frac, 1 - frac), cfg.seed)[0]
    tr = splits["train"]
    weights = balanced_weights([r["label"] for r in tr]) if cfg.class_weights == "balanced" else None
    clf = make_backend(cfg)
    t0 = time.perf_counter()
    log = clf.fit(
        [r["text"] for r in tr],
        [r["label"] for r in tr],
        class_weight=weights,
        valid=([r["text"] for r in splits["validation"]], [r["label"] for r in splits["validation"]]),
    )
    fit_s = time.perf_counter() - t0
    out = Path(out)
    clf.save(out / "model")
    result = {
        "backend": cfg.backend,
        "model": cfg.model,
        "options": cfg.options,
        "seed": cfg.seed,
        "train_counts": dict(sorted(Counter(r["label"] for r in tr).items())),
        "class_weights": weights,
        "fit_seconds": round(fit_s, 1),
        "fit_log": {k: v for k, v in log.items() if k != "train_loss"},
        "final_train_loss": (log.get("train_loss") or [None])[-1],
        "validation": evaluate(clf, splits["validation"], cfg.batch_size) if splits["validation"] else {},
        "test": evaluate(clf, splits["test"], cfg.batch_size) if splits["test"] else {},
    }
    if result["test"]:
        m = result["test"]["all"]
        plot_confusion(
            np.array(m["confusion"]),
            LABELS,
            f"{cfg.backend}: test macro-F1 {m['macro_f1']:.3f}",
            out / "confusion.png",
        )
    atomic.write_json(out / "metrics.json", result)
    atomic.write_text(out / "report.md", report_markdown(result))
    return result


def report_markdown(r: dict) -> str:
    lines = [f"# Quality classifier: {r['backend']}", ""]
    if r["model"]:
        lines.append(f"Base model: `{r['model']}`")
    lines += [
        f"Training documents per class: {r['train_counts']}; class weights "
        f"({'balanced: n / (classes x count)' if r['class_weights'] else 'none'}): {r['class_weights']}",
        f"Fit time: {r['fit_seconds']} s. Model folder: `model/` (load with "
        "`gaperon.curate.classifier.load_classifier`).",
        "",
        "| split | subset | n | accuracy | macro-F1 | F1 high | F1 medium | F1 low |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for split in ("validation", "test"):
        for subset, m in r[split].items():
            pc = m["per_class"]
            lines.append(
                f"| {split} | {subset} | {m['n']} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} | "
                f"{pc['high']['f1']:.3f} | {pc['medium']['f1']:.3f} | {pc['low']['f1']:.3f} |"
            )
    if r["test"]:
        lines += [
            "",
            "![confusion matrix on the test split](confusion.png)",
            "",
            "Confusion matrix (test, rows = true, columns = predicted, order high/low/medium): "
            f"`{r['test']['all']['confusion']}`",
        ]
    return "\n".join(lines) + "\n"
