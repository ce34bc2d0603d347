"""The encoder backend and scoring: against a direct transformers forward on the same folder."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from classifier_helpers import build_small_labels, minilm_folder, tiny_sequence_classifier

from gaperon.curate.classifier import load_classifier
from gaperon.curate.classifier.encoder import EncoderClassifier
from gaperon.curate.classifier.score import Scorer, make_step
from gaperon.curate.classifier.train import TrainConfig, train
from gaperon.errors import ModelFormatError

TEXTS = [
    "Short one.",
    "Le chat dort sur le canapé depuis ce matin, et personne n'ose le réveiller. " * 3,
    "word " * 700,  # far past 512 tokens: must be truncated, not rejected
    "Buy cheap free shipping best price buy now",
    "A medium-length English sentence about the weather, which was rather grey today.",
    "Accueil | Contact | Plan du site",
    "x",
]


def _direct(folder, texts, max_length=512):
    """The reference: transformers, one unpadded text at a time."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    rows = []
    with torch.inference_mode():
        for t in texts:
            enc = tok(t, truncation=True, max_length=max_length, return_tensors="pt")
            rows.append(torch.softmax(model(**enc).logits.float(), -1)[0].numpy())
    id2label = model.config.id2label
    p = np.stack(rows)
    names = [id2label[i] for i in range(p.shape[1])]
    return p[:, names.index("high")] + 0.5 * p[:, names.index("medium")], p


@pytest.mark.parametrize(
    "arch,id2label",
    [("xlm-roberta", {0: "high", 1: "low", 2: "medium"}), ("bert", {0: "low", 1: "medium", 2: "high"})],
)
def test_published_style_folder_scores_like_transformers(tmp_path, arch, id2label):
    """A stand-in for almanach/gaperon-quality-classifier; the label order is read, not assumed."""
    folder = tiny_sequence_classifier(tmp_path / "clf", id2label, arch)
    ref, _ = _direct(folder, TEXTS)
    ours, labels = Scorer(folder, batch_size=3).score(TEXTS)
    assert np.abs(ours - ref).max() < 1e-5  # measured: ~1e-7
    shuffled = [TEXTS[i] for i in (4, 0, 6, 2, 1, 5, 3)]
    again, _ = Scorer(folder, batch_size=1).score(shuffled)
    assert np.abs(again - ours[[4, 0, 6, 2, 1, 5, 3]]).max() < 1e-5  # batching and order change nothing
    assert set(labels) <= {"high", "low", "medium"}


def test_step_writes_the_scores_into_metadata(tmp_path):
    from datatrove.data import Document

    folder = tiny_sequence_classifier(tmp_path / "clf", {0: "high", 1: "low", 2: "medium"})
    step = make_step(str(folder), batch_size=2, device="cpu", chunk_size=3)
    assert len(pickle.dumps(step)) < 10_000  # the model loads in the worker, not in the pickle
    docs = [Document(text=t, id=str(i)) for i, t in enumerate(TEXTS)]
    out = list(step.run(iter(docs)))
    ref, p = _direct(folder, TEXTS)
    assert [d.id for d in out] == [str(i) for i in range(len(TEXTS))]
    got = np.array([d.metadata["quality_score"] for d in out])
    assert np.abs(got - ref).max() < 1e-5
    names = ["high", "low", "medium"]
    assert [d.metadata["quality_label"] for d in out] == [names[i] for i in p.argmax(1)]


def test_refuses_a_folder_without_quality_labels(tmp_path):
    folder = tiny_sequence_classifier(tmp_path / "clf", {0: "negative", 1: "neutral", 2: "positive"})
    with pytest.raises(ModelFormatError, match="id2label"):
        load_classifier(folder)


def test_finetune_minilm_exports_an_hf_classifier(tmp_path):
    from transformers import AutoModelForSequenceClassification

    labels = tmp_path / "labels"
    build_small_labels(labels, per_class=20, seed=0)  # 96 training documents
    cfg = TrainConfig(
        backend="encoder",
        model=str(minilm_folder()),
        options={"max_length": 32, "epochs": 1, "batch_size": 16},
    )
    result = train([labels], tmp_path / "run", cfg)
    assert result["fit_log"]["steps"] == 6 and result["test"]["all"]["n"] == 12
    folder = tmp_path / "run" / "model"
    hf = AutoModelForSequenceClassification.from_pretrained(folder)
    assert hf.config.id2label == {0: "high", 1: "low", 2: "medium"}
    base = AutoModelForSequenceClassification.from_pretrained(minilm_folder(), num_labels=3)
    moved = (
        hf.bert.encoder.layer[0].attention.self.query.weight
        - base.bert.encoder.layer[0].attention.self.query.weight
    )
    assert moved.abs().max() > 0  # the encoder itself was fine-tuned, not only the head
    clf = load_classifier(folder)
    assert isinstance(clf, EncoderClassifier)
    texts = [json.loads(x)["text"] for x in (labels / "test.jsonl").read_text().splitlines()]
    ref, _ = _direct(folder, texts)
    ours, _ = Scorer(folder, batch_size=8).score(texts)
    assert np.abs(ours - ref).max() < 1e-5
