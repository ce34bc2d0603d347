"""Metrics against a hand count, the n-gram backend end to end, stratified splits, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from classifier_helpers import build_small_labels

from gaperon.cli import main
from gaperon.curate.classifier import load_classifier
from gaperon.curate.classifier.metrics import scores
from gaperon.curate.classifier.ngram import NGramClassifier
from gaperon.curate.classifier.train import TrainConfig, balanced_weights, stratified_split, train
from gaperon.errors import ConfigError, DataError


def test_macro_f1_matches_a_hand_count():
    y = ["high", "high", "low", "medium", "medium", "medium"]
    p = ["high", "low", "low", "medium", "high", "medium"]
    m = scores(y, p, ("high", "low", "medium"))
    # high: P 1/2 R 1/2 F 1/2; low: P 1/2 R 1 F 2/3; medium: P 1 R 2/3 F 4/5
    assert m["per_class"]["low"]["f1"] == pytest.approx(2 / 3)
    assert m["macro_f1"] == pytest.approx((0.5 + 2 / 3 + 0.8) / 3)
    assert m["confusion"] == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]


def test_macro_f1_skips_a_class_absent_from_truth_and_predictions():
    """A binary high/low set (the haystack's instruction-vs-web classifier) scored over the three
    labels: macro-F1 averaged 0 for `medium` in, reporting 0.66 for a near-perfect classifier."""
    from sklearn.metrics import f1_score

    y = ["high"] * 5 + ["low"] * 4
    p = ["high"] * 4 + ["low"] * 5
    m = scores(y, p, ("high", "low", "medium"))
    assert m["macro_f1"] == pytest.approx(f1_score(y, p, average="macro"))
    assert m["macro_f1"] == pytest.approx((8 / 9 + 8 / 9) / 2)
    # a class the model predicts but the truth never has still counts (as a 0)
    p2 = ["high"] * 4 + ["medium"] + ["low"] * 4
    assert scores(y, p2, ("high", "low", "medium"))["macro_f1"] == pytest.approx(
        f1_score(y, p2, average="macro")
    )


def test_stratified_split_and_balanced_weights():
    rows = [
        {"text": str(i), "label": lab, "language": "fr"} for i, lab in enumerate(["high"] * 30 + ["low"] * 10)
    ]
    tr, va, te = stratified_split(rows, (0.8, 0.1, 0.1), seed=0)
    assert [sum(r["label"] == "low" for r in part) for part in (tr, va, te)] == [8, 1, 1]
    assert len(tr) + len(va) + len(te) == 40
    w = balanced_weights([r["label"] for r in rows])
    assert w["low"] == pytest.approx(3 * w["high"]) and w["medium"] == 0.0


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    out = tmp_path_factory.mktemp("labels")
    build_small_labels(out, per_class=40, seed=0)
    return out


def test_ngram_learns_and_round_trips(labelled, tmp_path):
    cfg = TrainConfig(backend="ngram", options={"buckets": 1 << 16, "epochs": 10})
    result = train([labelled], tmp_path / "run", cfg)
    assert result["test"]["all"]["macro_f1"] > 0.45  # chance is 1/3
    assert set(result["test"]) == {"all", "fr", "en"}
    assert (tmp_path / "run" / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert "macro-F1" in (tmp_path / "run" / "report.md").read_text()
    clf = load_classifier(tmp_path / "run" / "model")
    assert isinstance(clf, NGramClassifier)
    texts = [json.loads(x)["text"] for x in (labelled / "test.jsonl").read_text().splitlines()]
    again = clf.predict_proba(texts, batch_size=5)
    m = result["test"]["all"]
    assert np.trace(np.array(m["confusion"])) == sum(
        clf.labels[i] == json.loads(x)["label"]
        for i, x in zip(again.argmax(1), (labelled / "test.jsonl").read_text().splitlines(), strict=True)
    )
    np.testing.assert_allclose(again.sum(1), 1.0, rtol=1e-5)


def test_unknown_backend_option_is_a_config_error(labelled, tmp_path):
    with pytest.raises(ConfigError, match="unknown field"):
        train([labelled], tmp_path, TrainConfig(backend="ngram", options={"epochz": 1}))


def test_cli_labels_train_score(tmp_path, capsys):
    labels = tmp_path / "labels"
    assert main(["classifier", "labels", "--out", str(labels), "--per-class", "12"]) == 0
    recipe = tmp_path / "r.yaml"
    recipe.write_text("backend: ngram\noptions: {buckets: 4096, epochs: 2}\n")
    rc = main(
        [
            "classifier",
            "train",
            str(recipe),
            "--data",
            str(labels),
            "--out",
            str(tmp_path / "run"),
            "options.epochs=3",
        ]
    )
    assert rc == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["options"]["epochs"] == 3
    docs = tmp_path / "docs.jsonl"
    docs.write_text(
        '{"id": "a", "text": "Bonjour le monde.", "x": 1}\n{"id": "b", "text": "free free free"}\n'
    )
    out = tmp_path / "scored.jsonl"
    assert main(["classifier", "score", str(tmp_path / "run" / "model"), str(docs), "--out", str(out)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a", "b"] and rows[0]["x"] == 1
    clf = load_classifier(tmp_path / "run" / "model")
    p = clf.predict_proba(["Bonjour le monde.", "free free free"])
    hi, med = clf.labels.index("high"), clf.labels.index("medium")
    assert [r["quality_score"] for r in rows] == pytest.approx(list(p[:, hi] + 0.5 * p[:, med]), abs=1e-6)
    assert [r["quality_label"] for r in rows] == [clf.labels[i] for i in p.argmax(1)]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "ok"}\n{"id": "b"}\n')
    assert (
        main(["classifier", "score", str(tmp_path / "run" / "model"), str(bad), "--out", str(tmp_path / "o")])
        == 1
    )
    assert "bad.jsonl:2: field 'text'" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    with pytest.raises(DataError):
        from gaperon.curate.classifier.score import score_files

        score_files(tmp_path / "run" / "model", [bad], tmp_path / "o")
