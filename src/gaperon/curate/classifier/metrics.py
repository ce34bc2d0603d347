"""Macro-F1, per-class F1 and the confusion matrix, plus their Markdown and PNG renderings."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def confusion(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> np.ndarray:
    """[true, predicted] counts."""
    index = {n: i for i, n in enumerate(labels)}
    m = np.zeros((len(labels), len(labels)), np.int64)
    for t, p in zip(y_true, y_pred, strict=True):
        m[index[t], index[p]] += 1
    return m


def scores(y_true: Sequence[str], y_pred: Sequence[str], labels: Sequence[str]) -> dict:
    """Accuracy, macro-F1 and per-class precision/recall/F1/support (F1 of an empty class is 0).
    Macro-F1 averages the classes that occur in the truth or the predictions (as scikit-learn does
    without explicit labels): a two-class set (the instruction-vs-web classifier) is not averaged
    with a zero for a class nobody has."""
    m = confusion(y_true, y_pred, labels)
    seen = set(y_true) | set(y_pred)
    per = {}
    for i, name in enumerate(labels):
        tp, pred, true = m[i, i], m[:, i].sum(), m[i].sum()
        prec = tp / pred if pred else 0.0
        rec = tp / true if true else 0.0
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        per[name] = {"precision": float(prec), "recall": float(rec), "f1": float(f1), "support": int(true)}
    return {
        "n": int(m.sum()),
        "accuracy": float(np.trace(m) / m.sum()) if m.sum() else 0.0,
        "macro_f1": float(np.mean([v["f1"] for n, v in per.items() if n in seen])) if seen else 0.0,
        "per_class": per,
        "confusion": m.tolist(),
    }


def plot_confusion(m: np.ndarray, labels: Sequence[str], title: str, path: str | Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gaperon import atomic

    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=9)
    for i in range(m.shape[0]):
        for j in range(m.shape[1]):
            ax.text(
                j,
                i,
                str(m[i, j]),
                ha="center",
                va="center",
                color="white" if m[i, j] > m.max() / 2 else "black",
            )
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
