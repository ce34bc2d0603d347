"""A fastText-style hashed n-gram linear classifier, in numpy.

Word unigrams and bigrams (the DCLM classifier's features) are hashed into a fixed number of
buckets; a document is its L2-normalised bag of buckets, and a softmax-linear layer over it is
trained with minibatch SGD. Fast to train and to score, no tokenizer and no model download: the
baseline the neural backends must beat, and the classifier the haystack audit compares against.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gaperon import atomic
from gaperon.curate.classifier.base import LABELS, label_ids, read_config, valid_accuracy
from gaperon.errors import ModelFormatError

_TOKEN = re.compile(r"\w+|[^\w\s]")


def features(
    text: str, buckets: int, ngrams: int = 2, max_tokens: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """(bucket ids, L2-normalised counts) of the n-grams of the first `max_tokens` words (as score's 512)."""
    toks = _TOKEN.findall(text.lower())[:max_tokens] or ["<empty>"]
    grams = list(toks)
    for n in range(2, ngrams + 1):
        grams += [" ".join(toks[i : i + n]) for i in range(len(toks) - n + 1)]
    ids = np.fromiter((zlib.crc32(g.encode("utf-8")) % buckets for g in grams), np.int64, len(grams))
    uniq, counts = np.unique(ids, return_counts=True)
    vals = counts.astype(np.float32)
    return uniq, vals / np.linalg.norm(vals)


class NGramClassifier:
    def __init__(
        self,
        *,
        buckets: int = 1 << 18,
        ngrams: int = 2,
        epochs: int = 20,
        lr: float = 0.5,
        l2: float = 1e-6,
        batch_size: int = 16,
        seed: int = 0,
    ) -> None:
        self.labels: tuple[str, ...] = LABELS
        self.buckets, self.ngrams, self.epochs, self.lr = buckets, ngrams, epochs, lr
        self.l2, self.batch_size, self.seed = l2, batch_size, seed
        self.weight = np.zeros((buckets, len(LABELS)), np.float32)
        self.bias = np.zeros(len(LABELS), np.float32)

    def _featurize(self, texts: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        return [features(t, self.buckets, self.ngrams) for t in texts]

    def _logits(self, feats: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
        idx = np.concatenate([f[0] for f in feats])
        val = np.concatenate([f[1] for f in feats])
        doc = np.repeat(np.arange(len(feats)), [len(f[0]) for f in feats])
        out = np.zeros((len(feats), len(self.labels)), np.float32)
        np.add.at(out, doc, self.weight[idx] * val[:, None])
        return out + self.bias

    def fit(self, texts, labels, *, class_weight=None, valid=None) -> dict[str, Any]:
        feats = self._featurize(texts)
        y = label_ids(labels, self.labels)
        w = np.array([(class_weight or {}).get(lab, 1.0) for lab in self.labels], np.float32)[y]
        rng = np.random.default_rng(self.seed)
        total = self.epochs * ((len(feats) + self.batch_size - 1) // self.batch_size)
        step, losses, best = 0, [], (-1.0, 0, self.weight.copy(), self.bias.copy())
        for _ in range(self.epochs):
            order = rng.permutation(len(feats))
            epoch_loss = 0.0
            for start in range(0, len(order), self.batch_size):
                batch = order[start : start + self.batch_size]
                lr = self.lr * (1.0 - step / total)  # linear decay, as fastText
                epoch_loss += self._sgd_step([feats[i] for i in batch], y[batch], w[batch], lr)
                step += 1
            losses.append(epoch_loss / len(order))
            acc = valid_accuracy(self, valid)
            if acc is not None and acc > best[0]:
                best = (acc, len(losses), self.weight.copy(), self.bias.copy())
        if best[0] >= 0:  # keep the epoch that did best on the validation split
            self.weight, self.bias = best[2], best[3]
        return {
            "epochs": self.epochs,
            "steps": step,
            "train_loss": losses,
            "best_epoch": best[1],
            "valid_accuracy": best[0] if best[0] >= 0 else None,
        }

    def _sgd_step(self, feats, y: np.ndarray, w: np.ndarray, lr: float) -> float:
        logits = self._logits(feats)
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        loss = float(-(w * np.log(p[np.arange(len(y)), y] + 1e-12)).sum())
        g = p
        g[np.arange(len(y)), y] -= 1.0
        g *= w[:, None] / len(y)
        idx = np.concatenate([f[0] for f in feats])
        val = np.concatenate([f[1] for f in feats])
        doc = np.repeat(np.arange(len(feats)), [len(f[0]) for f in feats])
        if self.l2:
            self.weight[idx] *= 1.0 - lr * self.l2
        np.add.at(self.weight, idx, -lr * val[:, None] * g[doc])
        self.bias -= lr * g.sum(0)
        return loss

    def predict_proba(self, texts: Sequence[str], *, batch_size: int = 256) -> np.ndarray:
        out = []
        for start in range(0, len(texts), batch_size):
            logits = self._logits(self._featurize(texts[start : start + batch_size]))
            p = np.exp(logits - logits.max(1, keepdims=True))
            out.append(p / p.sum(1, keepdims=True))
        return np.concatenate(out) if out else np.zeros((0, len(self.labels)), np.float32)

    def save(self, path: str | Path) -> None:
        cfg = {
            "gaperon_backend": "ngram",
            "id2label": dict(enumerate(self.labels)),
            "buckets": self.buckets,
            "ngrams": self.ngrams,
            "hash": "crc32 of the UTF-8 n-gram (lowercased \\w+|punctuation tokens joined by a space)",
        }
        with atomic.atomic_path(path) as tmp:
            tmp.mkdir()
            (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
            np.savez(tmp / "weights.npz", weight=self.weight, bias=self.bias)

    @classmethod
    def load(cls, path: str | Path) -> NGramClassifier:
        cfg = read_config(path)
        model = cls(buckets=int(cfg["buckets"]), ngrams=int(cfg["ngrams"]))
        try:
            with np.load(Path(path) / "weights.npz") as z:
                model.weight, model.bias = z["weight"], z["bias"]
        except (OSError, KeyError, ValueError) as e:
            raise ModelFormatError(f"{path}/weights.npz: unreadable ({e})") from None
        if model.weight.shape != (model.buckets, len(LABELS)):
            raise ModelFormatError(f"{path}/weights.npz: weight shape {model.weight.shape} != config")
        model.labels = tuple(cfg["id2label"][str(i)] for i in range(len(LABELS)))
        return model
