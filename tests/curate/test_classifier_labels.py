"""The offline labelled set: balanced, split without leakage, deterministic by seed, really degraded."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from classifier_helpers import build_small_labels

from gaperon.curate.classifier.io import read_labelled
from gaperon.curate.classifier.labels import LOW, MEDIUM, window
from gaperon.errors import DataError


def _rows(folder, split):
    return [json.loads(x) for x in (folder / f"{split}.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    out = tmp_path_factory.mktemp("labels")
    build_small_labels(out, per_class=10, seed=3)
    return out


def test_balanced_and_split_without_leakage(labelled):
    rows = {s: _rows(labelled, s) for s in ("train", "validation", "test")}
    every = [r for rs in rows.values() for r in rs]
    assert Counter((r["language"], r["label"]) for r in every) == {
        (lang, lab): 10 for lang in ("fr", "en") for lab in ("high", "medium", "low")
    }
    assert Counter(r["label"] for r in rows["test"]) == {"high": 2, "medium": 2, "low": 2}
    sources = [r["id"].rsplit("#", 1)[0] for r in every]
    assert len(set(sources)) == len(sources), "a source document feeds two labelled documents"
    assert {r["degradation"] for r in every if r["label"] == "high"} == {"clean"}
    assert {r["degradation"] for r in every if r["label"] == "medium"} <= set(MEDIUM)
    assert {r["degradation"] for r in every if r["label"] == "low"} <= set(LOW)
    assert read_labelled([labelled / "train.jsonl"])[0].keys() == {"text", "label", "language"}
    assert "NOT the Gaperon labels" in (labelled / "README.md").read_text()


def test_deterministic_by_seed(labelled, tmp_path):
    build_small_labels(tmp_path / "same", per_class=10, seed=3)
    build_small_labels(tmp_path / "other", per_class=10, seed=4)
    assert (tmp_path / "same" / "train.jsonl").read_bytes() == (labelled / "train.jsonl").read_bytes()
    assert (tmp_path / "other" / "train.jsonl").read_bytes() != (labelled / "train.jsonl").read_bytes()


def test_degradations_change_the_text():
    import random

    text = window("La maison est très grande. Elle a trois chambres. Le jardin est beau. " * 20)
    assert len(text) <= 700 and text.endswith(".")
    for name, fn in {**MEDIUM, **LOW}.items():
        assert fn(text, "fr", random.Random(0)) != text, name
    assert "Ã" in LOW["mojibake_shuffled"](text, "fr", random.Random(0))
    assert "â€™" in MEDIUM["partial_mojibake"](
        "It's plain ASCII.", "en", random.Random(0)
    )  # English breaks too
    assert "Accueil" in MEDIUM["boilerplate"](text, "fr", random.Random(0))


def test_bad_labelled_files_name_file_and_line(tmp_path):
    bad = tmp_path / "x.jsonl"
    bad.write_text('{"text": "ok", "label": "high"}\n{"text": "t", "label": "great"}\n')
    with pytest.raises(DataError, match=r"x.jsonl:2: field 'label'"):
        read_labelled([bad])
    bad.write_text('{"text": "ok", "label": "high"}\n{not json\n')
    with pytest.raises(DataError, match=r"x.jsonl:2: not valid JSON"):
        read_labelled([bad])
