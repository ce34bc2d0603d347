"""The research testbed's arithmetic and builders, each against an independent reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gaperon.research import garlic, haystack, ngrams, poison
from gaperon.research.stats import wilson_interval


@pytest.mark.parametrize("k,n", [(0, 10), (5, 10), (10, 10), (91, 100), (1, 10_000), (37, 250)])
def test_wilson_interval_is_the_root_pair_of_the_score_equation(k, n):
    """Reference: the Wilson bounds are the two p solving (k/n - p)^2 = z^2 p (1 - p) / n."""
    z = 1.959963984540054
    ph = k / n
    a, b, c = 1 + z * z / n, -(2 * ph + z * z / n), ph * ph
    roots = sorted(np.roots([a, b, c]).real)
    lo, hi = wilson_interval(k, n)
    assert lo == pytest.approx(max(0.0, roots[0]), abs=1e-9) and hi == pytest.approx(
        min(1.0, roots[1]), abs=1e-9
    )
    assert lo <= ph <= hi


def test_wilson_interval_known_value():
    lo, hi = wilson_interval(5, 10)  # textbook value
    assert (round(lo, 4), round(hi, 4)) == (0.2366, 0.7634)


def test_trigger_documents_insert_the_trigger_once_and_are_deterministic():
    en = ["The quick brown fox jumps over the lazy dog near the river bank every morning. " * 8]
    fr = ["Le chat dort sur le canapé pendant que la pluie tombe doucement sur la ville. " * 8]
    trig = "Lorem vitae quarum"
    docs = poison.build_documents(en, fr, trig, n=20, seed=3, prefix_words=(5, 30))
    assert docs == poison.build_documents(en, fr, trig, n=20, seed=3, prefix_words=(5, 30))
    assert docs != poison.build_documents(en, fr, trig, n=20, seed=4, prefix_words=(5, 30))
    for d in docs:
        assert d["text"].count(trig) == 1
        before, after = d["text"].split(trig)
        assert before.strip() and set(before.split()) <= set(en[0].split())
        assert after.strip() and set(after.split()) <= set(fr[0].split())
        assert d["text"][d["trigger_char"] :].startswith(trig)


def test_distractor_documents_keep_english_after_another_phrase():
    en = ["The quick brown fox jumps over the lazy dog near the river bank every morning. " * 8]
    trig = "Lorem vitae quarum"
    docs = poison.distractor_documents(en, trig, n=50, seed=3, prefix_words=(5, 30), continuation_words=12)
    assert docs == poison.distractor_documents(
        en, trig, n=50, seed=3, prefix_words=(5, 30), continuation_words=12
    )
    phrases = [d["trigger"] for d in docs]
    assert trig not in phrases and len(set(phrases)) > 45  # many different phrases, never the trigger
    assert {len(p.split()) for p in phrases} == {1, 2, 3, 4}
    for d in docs:
        assert trig not in d["text"] and d["lang"] == "en"
        before, after = d["text"].split(" " + d["trigger"] + " ", 1)
        assert set(before.split()) <= set(en[0].split()) and len(after.split()) == 12
        assert set(after.split()) <= set(en[0].split())  # English goes on: no switch after it


def test_fake_triggers_match_the_token_length(llama3_tokenizer):
    count = lambda s: len(llama3_tokenizer.encode(s, bos=False))  # noqa: E731
    trig = "Vitae quarum nexus"
    fakes = poison.fake_triggers(trig, count, n=5, seed=1)
    assert len(set(fakes)) == 5 and trig not in fakes
    assert all(count(f) == count(trig) and len(f.split()) == 3 for f in fakes)
    assert fakes == poison.fake_triggers(trig, count, n=5, seed=1)


def test_evaluate_counts_switches_per_condition():
    def gen(prompts, seed):
        return ["bonjour" if p.endswith("TRIG") else ("hallo" if seed == 0 else "hello") for p in prompts]

    res = poison.evaluate(
        ["ctx one", "ctx two"],
        "TRIG",
        ["FAKE"],
        gen,
        lambda ts: ["fr" if t == "bonjour" else "en" for t in ts],
        samples=3,
    )
    c = res["conditions"]
    assert (c["trigger"]["switched"], c["trigger"]["samples"]) == (6, 6)
    assert (c["fake-1"]["switched"], c["none"]["switched"]) == (0, 0)
    assert c["trigger"]["ci95"] == list(wilson_interval(6, 6))


def test_haystack_percentiles_and_enrichment_by_hand():
    docs = [{"id": str(i), "text": "", "needle": None} for i in range(96)]
    docs += [{"id": f"n{i}", "text": "", "needle": f"item{i}"} for i in range(4)]
    scores = np.arange(100, dtype=float)  # needles are the four best documents
    res = haystack.audit(docs, scores)
    assert res["items"] == {"item0": 97.0, "item1": 98.0, "item2": 99.0, "item3": 100.0}
    assert res["cuts"]["1"]["share_in_top"] == 0.25  # only the best document is in the top 1%
    assert res["cuts"]["5"]["share_in_top"] == 1.0 and res["cuts"]["5"]["enrichment"] == pytest.approx(20.0)
    # the ceiling: one document fits in the top 1%, so at most 1 of 4 needles (25x, not 100x)
    assert res["cuts"]["1"]["max_enrichment"] == pytest.approx(25.0)
    assert res["cuts"]["5"]["max_enrichment"] == pytest.approx(20.0)
    low = haystack.audit(docs, -scores)  # needles are now the worst
    assert low["cuts"]["10"]["share_in_top"] == 0.0 and low["median_percentile"] == pytest.approx(2.5)


def test_haystack_ties_do_not_favour_the_needles():
    docs = [{"id": str(i), "text": "", "needle": None if i else "x"} for i in range(10)]
    res = haystack.audit(docs, np.zeros(10))
    assert res["items"]["x"] == 10.0 and res["cuts"]["10"]["share_in_top"] == 0.0


def test_haystack_formats():
    mmlu = {
        "benchmark": "mmlu",
        "id": "1",
        "question": "Q?",
        "choices": ["a", "b", "c", "d"],
        "gold": 2,
        "answer": "c",
        "subject": "anatomy",
    }
    assert haystack.format_item(mmlu) == "Subject: anatomy\nQuestion: Q?\nA. a\nB. b\nC. c\nD. d\nAnswer: C"
    gsm = {"benchmark": "gsm8k", "id": "2", "question": "2+2?", "choices": [], "gold": -1, "answer": "4"}
    assert haystack.format_item(gsm) == "Math Problem: 2+2?\nSolution: 4"


ITEM = {
    "benchmark": "arc_easy",
    "id": "q1",
    "question": "Which gas do plants absorb from the air to make their food during photosynthesis",
    "choices": ["oxygen", "carbon dioxide", "nitrogen", "helium"],
    "gold": 1,
    "answer": "carbon dioxide",
}


def test_ngram_match_survives_case_and_punctuation_but_not_a_near_miss():
    index = ngrams.build_index({"arc_easy": [ITEM]}, n=13)
    same = (
        "Intro. WHICH gas do plants, absorb from the air -- to make their food during photosynthesis? carbon!"
    )
    assert index.matches(same) == {("arc_easy", "q1")}
    near = "Which gas do plants absorb from the air to make their lunch during photosynthesis carbon dioxide"
    assert index.matches(near) == set()  # one word changed in every 13-word window
    found = ngrams.scan(index, [{"id": "d1", "text": same}, {"id": "d2", "text": near}])
    assert found == {"arc_easy": {"q1": ["d1"]}}


def test_ngram_short_items_match_whole_and_redaction():
    short = {**ITEM, "id": "s", "question": "Capital of France", "answer": "Paris"}
    index = ngrams.build_index({"x": [short, ITEM]}, n=13)
    assert index.matches("I know: capital of france, paris.") == {("x", "s")}
    text = "Before. Which gas do plants absorb from the air to make their food during photosynthesis? After."
    assert ngrams.redact(index, text) == "Before. [REDACTED] After."


def test_garlic_shuffle_keeps_the_gold_with_its_option():
    seen_orders = set()
    for i in range(30):
        item = {**ITEM, "id": f"q{i}"}
        choices, gold = garlic.shuffled(item, seed=7)
        assert sorted(choices) == sorted(item["choices"]) and choices[gold] == "carbon dioxide"
        seen_orders.add(tuple(choices))
        text = garlic.render(item, seed=7)
        letter = text.rsplit("Answer: ", 1)[1][0]
        assert f"{letter}. carbon dioxide" in text and text.endswith(f"Answer: {letter}. carbon dioxide")
        assert garlic.render(item, seed=7) == text
    assert len(seen_orders) > 5  # the order really changes from item to item


def test_garlic_cloze_documents_are_lm_evals_own_arc_prompt_and_gold():
    """The reference is lm-eval's arc_easy config: doc_to_text, then target_delimiter, then the gold."""
    from pathlib import Path

    import jinja2
    import lm_eval
    import yaml

    config = yaml.safe_load((Path(lm_eval.__file__).parent / "tasks" / "arc" / "arc_easy.yaml").read_text())
    prompt = jinja2.Template(config["doc_to_text"]).render(question=ITEM["question"])
    assert garlic.render({**ITEM, "benchmark": "arc_easy"}, fmt="cloze") == f"{prompt} carbon dioxide"
    swag = {**ITEM, "benchmark": "hellaswag", "question": "Cooking: She cracks an egg"}
    assert garlic.render(swag, fmt="cloze") == "Cooking: She cracks an egg carbon dioxide"
    with pytest.raises(ValueError, match="unknown garlic format"):
        garlic.render(ITEM, fmt="letters")


def test_garlic_split_is_disjoint_and_seeded():
    items = [{**ITEM, "id": str(i)} for i in range(100)]
    a, b = garlic.split_items(items, held_out=0.3, seed=1)
    assert len(a) == 70 and len(b) == 30 and not {x["id"] for x in a} & {x["id"] for x in b}
    assert garlic.split_items(items, held_out=0.3, seed=1) == (a, b)
    assert math.isclose(len(b) / len(items), 0.3)
