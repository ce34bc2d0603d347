"""Fine-tune any local Hugging Face encoder (XLM-R, XLM-V, CamemBERT, mmBERT, BERT) as a classifier.

The result is a plain `AutoModelForSequenceClassification` folder with id2label high/low/medium,
so it loads the same way as the published Gaperon classifier (XLM-V) and in any transformers
code. Scoring goes through `forward_proba`: all texts tokenized at once, sorted by length so each
batch pads little, truncated to `max_length` tokens, softmax in float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gaperon import atomic
from gaperon.curate.classifier.base import LABELS, label_ids, read_config, valid_accuracy
from gaperon.errors import ConfigError, ModelFormatError

PRECISIONS = ("fp32", "bf16", "int8-dynamic")
CPU_BATCH_TOKENS = 1024  # CPU: 1-2 texts of 512 tokens a batch used ~10% less CPU than 16 (cache)
CHARS_PER_TOKEN = 8  # a prefix of max_length * 8 characters holds max_length tokens in nearly every text


def _prefix(text: str, budget: int) -> str | None:
    """The text up to its last whitespace before `budget` characters, or None if it is short or unbroken."""
    if len(text) <= budget:
        return None
    ws = max(text.rfind(" ", 0, budget), text.rfind("\n", 0, budget), text.rfind("\t", 0, budget))
    return text[:ws] if ws > 0 else None


def tokenize_truncated(tokenizer, texts: Sequence[str], max_length: int) -> dict[str, list[list[int]]]:
    """The tokenizer's own `truncation=True` encoding, without tokenizing the tail it throws away.

    A long text is cut at a whitespace well past `max_length` tokens' worth of characters. Tokenizers
    that pre-split on whitespace (WordPiece, SentencePiece's Metaspace, byte-level BPE) encode the
    words before a whitespace the same whatever follows, so when the prefix alone fills `max_length`
    tokens they are the first tokens of the whole text. A prefix that falls short is re-encoded whole.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    usable = (
        backend is not None and backend.pre_tokenizer is not None and tokenizer.truncation_side == "right"
    )
    budget = max_length * CHARS_PER_TOKEN
    cut = [_prefix(t, budget) if usable else None for t in texts]
    enc = tokenizer(
        [c if c is not None else t for c, t in zip(cut, texts)], truncation=True, max_length=max_length
    )
    out = {k: list(enc[k]) for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
    redo = [i for i, c in enumerate(cut) if c is not None and len(out["input_ids"][i]) < max_length]
    if redo:
        again = tokenizer([texts[i] for i in redo], truncation=True, max_length=max_length)
        for k in out:
            for j, i in enumerate(redo):
                out[k][i] = again[k][j]
    return out


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    t = torch.full((len(rows), max(map(len, rows))), value, dtype=torch.long)
    for r, x in enumerate(rows):
        t[r, : len(x)] = torch.tensor(x, dtype=torch.long)
    return t


def forward_proba(
    model,
    tokenizer,
    texts: Sequence[str],
    *,
    batch_size: int = 32,
    max_length: int = 512,
    device: str | torch.device = "cpu",
    max_batch_tokens: int | None = None,
    forward: Any = None,
) -> np.ndarray:
    """Softmax probabilities [n, num_labels], in input order; batching and order do not change them.

    `max_batch_tokens` caps a batch's padded size as well as its count (on CPU a few long texts at
    a time stay in cache; short texts still go many at a time).

    All texts are tokenized in one call (only the prefix that can reach the first `max_length`
    tokens), sorted by token length so a batch pads only to its own longest text, and a batch of
    texts of one length (the common case: most web pages fill 512 tokens) goes without a mask.
    `forward` (a `ClsForward`, same logits) replaces `model(...).logits` when given.
    """
    if not texts:
        return np.zeros((0, model.config.num_labels), np.float32)
    enc = tokenize_truncated(tokenizer, texts, max_length)
    lengths = np.array([len(x) for x in enc["input_ids"]])
    order = np.argsort(-lengths, kind="stable")  # longest first: a too-large batch fails at once
    out = np.empty((len(texts), model.config.num_labels), np.float32)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with torch.inference_mode():
        for idx in _batches(order, lengths, batch_size, max_batch_tokens):
            batch = {"input_ids": _pad([enc["input_ids"][i] for i in idx], pad_id)}
            if lengths[idx[0]] != lengths[idx[-1]]:
                batch["attention_mask"] = _pad([enc["attention_mask"][i] for i in idx], 0)
            if "token_type_ids" in enc:
                batch["token_type_ids"] = _pad([enc["token_type_ids"][i] for i in idx], 0)
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = forward(**batch) if forward is not None else model(**batch).logits
            out[idx] = torch.softmax(logits.float(), dim=-1).cpu().numpy()
    return out


def _batches(order: np.ndarray, lengths: np.ndarray, batch_size: int, max_tokens: int | None):
    """Consecutive runs of `order` (longest first): at most batch_size texts and max_tokens padded."""
    start = 0
    while start < len(order):
        n = batch_size
        if max_tokens is not None:  # the first text is the batch's longest
            n = max(1, min(n, max_tokens // max(1, int(lengths[order[start]]))))
        yield order[start : start + n]
        start += n


def set_precision(model, precision: str, device: str):
    """fp32 (the default, scores as transformers gives them), bf16, or int8-dynamic (CPU only).

    bf16 halves memory traffic and uses the bf16 units of GPUs and recent CPUs; int8-dynamic
    quantizes every Linear layer's weights to int8 (activations quantized on the fly). Both
    change scores slightly (about 1e-3 to 1e-2): opt-in only.
    """
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16":
        return model.to(torch.bfloat16)
    if precision == "int8-dynamic":
        if str(device) != "cpu":
            raise ConfigError(f"precision int8-dynamic runs on the CPU only, not {device}")
        import warnings

        with warnings.catch_warnings():  # torch's notice that this API moves to torchao
            warnings.simplefilter("ignore")
            return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    return model


class EncoderClassifier:
    def __init__(
        self,
        base: str | Path | None = None,
        *,
        max_length: int = 512,
        epochs: int = 1,
        lr: float = 3e-5,
        batch_size: int = 16,
        weight_decay: float = 0.01,
        warmup: float = 0.1,
        seed: int = 0,
        device: str = "cpu",
    ) -> None:
        self.labels: tuple[str, ...] = LABELS
        self.base, self.max_length, self.epochs, self.lr = base, max_length, epochs, lr
        self.batch_size, self.weight_decay, self.warmup, self.seed = batch_size, weight_decay, warmup, seed
        self.device = device
        self.model: Any = None
        self.tokenizer: Any = None
        self.fast = True  # score through ClsForward where it applies (fp32 BERT family); False: never
        self._fast: Any = None  # the ClsForward built for the current weights, or None

    def _init_from_base(self) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if self.base is None or not (Path(self.base) / "config.json").is_file():
            raise ModelFormatError(f"encoder backend: {self.base!r} is not a local Hugging Face model folder")
        self.tokenizer = AutoTokenizer.from_pretrained(self.base)
        self.model = AutoModelForSequenceClassification.from_pretrained(
            self.base,
            num_labels=len(LABELS),
            id2label=dict(enumerate(LABELS)),
            label2id={n: i for i, n in enumerate(LABELS)},
            ignore_mismatched_sizes=True,  # a base with another head (or none) gets a fresh 3-way head
        ).to(self.device)
        self.labels = LABELS

    def fit(self, texts, labels, *, class_weight=None, valid=None) -> dict[str, Any]:
        torch.manual_seed(self.seed)
        self._init_from_base()
        y = torch.tensor(label_ids(labels, self.labels))
        weight = torch.tensor([(class_weight or {}).get(n, 1.0) for n in self.labels], dtype=torch.float32)
        loss_fn = torch.nn.CrossEntropyLoss(weight=weight.to(self.device))
        params = [p for p in self.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        steps = self.epochs * math.ceil(len(texts) / self.batch_size)
        warm = max(1, int(self.warmup * steps))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm)))
        )
        gen = torch.Generator().manual_seed(self.seed)
        losses: list[float] = []
        self.model.train()
        for _ in range(self.epochs):
            for idx in torch.randperm(len(texts), generator=gen).split(self.batch_size):
                batch = self.tokenizer(
                    [texts[i] for i in idx],
                    truncation=True,
                    max_length=self.max_length,
                    padding=True,
                    return_tensors="pt",
                ).to(self.device)
                loss = loss_fn(self.model(**batch).logits.float(), y[idx].to(self.device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                losses.append(loss.item())
        self.model.eval()
        self._fast = None  # new weights: rebuilt (and re-checked) at the next predict
        return {
            "epochs": self.epochs,
            "steps": steps,
            "train_loss": losses,
            "valid_accuracy": valid_accuracy(self, valid),
        }

    def _forward(self) -> Any:
        if not self.fast or self.model.training:
            return None
        if self._fast is None:
            from gaperon.curate.classifier.clsforward import ClsForward

            self._fast = ClsForward.build(self.model) or False  # False: checked, does not apply
        return self._fast or None

    def predict_proba(self, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
        return forward_proba(
            self.model,
            self.tokenizer,
            texts,
            batch_size=batch_size,
            max_length=self.max_length,
            device=self.device,
            max_batch_tokens=CPU_BATCH_TOKENS if str(self.device) == "cpu" else None,
            forward=self._forward(),
        )

    def save(self, path: str | Path) -> None:
        with atomic.atomic_path(path) as tmp:
            self.model.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)

    @classmethod
    def load(
        cls, path: str | Path, *, device: str = "cpu", max_length: int = 512, precision: str = "fp32"
    ) -> EncoderClassifier:
        """Any sequence-classification folder whose id2label names high, low and medium."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        cfg = read_config(path)
        names = {str(v).lower() for v in (cfg.get("id2label") or {}).values()}
        if not {"high", "medium"} <= names:
            raise ModelFormatError(f"{path}/config.json: id2label {cfg.get('id2label')} lacks high/medium")
        self = cls(path, max_length=max_length, device=device)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForSequenceClassification.from_pretrained(path).to(device).eval()
        self.model = set_precision(model, precision, device)
        id2label = self.model.config.id2label
        self.labels = tuple(str(id2label[i]).lower() for i in range(self.model.config.num_labels))
        return self
