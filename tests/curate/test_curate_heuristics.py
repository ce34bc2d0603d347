"""Heuristic filters keep French as well as English; each rule fires on a document built to break it."""

from __future__ import annotations

from pathlib import Path

import pytest
from curate_helpers import samples
from datatrove.data import Document

from gaperon.curate.heuristics import C4Quality, FineWebQuality, GopherQuality, GopherRepetition
from gaperon.curate.select import LabelRule, LabelSelect, TopKRule, top_k_threshold
from gaperon.curate.steps import build_step
from gaperon.errors import ConfigError


def _kept_share(docs: list[dict], lang: str) -> float:
    steps = [GopherRepetition(), GopherQuality(), FineWebQuality()]
    kept = 0
    for d in docs:
        doc = Document(text=d["text"], id=d["id"], metadata={"language": lang})
        kept += all(s.reject(doc) is None for s in steps)
    return kept / len(docs)


def test_french_survives_the_heuristics_at_least_as_well_as_english():
    fr, en = samples("fr", 1000), samples("en", 1000)
    share_fr, share_en = _kept_share(fr, "fr"), _kept_share(en, "en")
    print(f"heuristics keep {share_fr:.1%} of {len(fr)} French and {share_en:.1%} of {len(en)} English docs")
    assert share_fr >= share_en
    assert share_fr > 0.5  # stock Gopher with English stop words keeps 2.6% of French


def test_stop_words_follow_the_document_language():
    text = " ".join(["le chat de la voisine dort dans les jardins et une souris passe"] * 8)
    fr = Document(text=text, id="a", metadata={"language": "fr"})
    en = Document(text=text, id="a", metadata={"language": "en"})
    assert GopherQuality().reject(fr) is None
    assert GopherQuality().reject(en) == "gopher_enough_stop_words"


def test_punctuation_is_not_counted_as_words():
    # One word in five followed by a lone punctuation mark: spaCy-style tokens would make 20% of
    # "words" letter-less and trip the 80% rule; ours keeps it.
    text = " ".join(f"the house of the people {'!' if i % 2 else ','}" for i in range(30))
    assert GopherQuality().reject(Document(text=text, id="p", metadata={"language": "en"})) is None


@pytest.mark.parametrize(
    ("step", "text", "reason"),
    [
        (GopherQuality(), "too short to be a document", "gopher_short_doc"),
        (GopherQuality(), " ".join(["1234 5678 the and"] * 30), "gopher_below_alpha_threshold"),
        (GopherRepetition(), "same paragraph here\n\n" * 20 + "other", "dup_para_frac"),
        (
            GopherRepetition(),
            "\n".join(["a repeated line of text"] * 5 + [f"line {i}" for i in range(6)]),
            "dup_line_frac",
        ),
        (FineWebQuality(), "\n".join(f"short line {i}" for i in range(40)), "line_punct_ratio"),
        (C4Quality(), "var x = {a: 1}; function() {}.", "curly_bracket"),
        (C4Quality(), "Lorem ipsum dolor sit amet.", "lorem_ipsum"),
    ],
)
def test_each_rule_names_its_reason(step, text, reason):
    assert step.reject(Document(text=text, id="x", metadata={"language": "en"})) == reason


def test_c4_removes_french_cookie_banner_lines():
    lines = [f"Voici la phrase numéro {i} de ce texte tout à fait normal." for i in range(6)]
    doc = Document(
        text="\n".join(["Ce site utilise des cookies pour vous offrir un meilleur service.", *lines]),
        id="c",
        metadata={"language": "fr"},
    )
    assert C4Quality().reject(doc) is None
    assert "cookies" not in doc.text and doc.text.count("\n") == 5


def test_label_selection_per_source_with_a_named_subset():
    sel = LabelSelect(
        [LabelRule(sources=["fr-web*"], keep=["high"], subset_keep=["medium"], subset_values=["news"])]
    )

    def doc(label, source="fr-web", subset="blogs"):
        return Document(
            text="t", id="i", metadata={"source": source, "quality_label": label, "subset": subset}
        )

    assert sel.decide(doc("high")) is None
    assert sel.decide(doc("medium")) == "label_medium"
    assert sel.decide(doc("medium", subset="news")) is None
    assert sel.decide(doc("low", subset="news")) == "label_low"
    assert sel.decide(doc("low", source="en-web")) is None  # no rule for this source: untouched
    assert sel.decide(Document(text="t", id="i", metadata={"source": "fr-web"})) == "no_quality_label"


def test_top_k_threshold_keeps_exactly_k_percent_without_ties():
    import numpy as np

    scores = np.random.default_rng(0).random(1000)
    thr = top_k_threshold(scores, 10)
    assert (scores >= thr).sum() == 100
    assert (scores >= top_k_threshold(scores[:7], 10)).sum() >= 1


def test_unknown_step_and_bad_labels_name_the_field():
    with pytest.raises(ConfigError, match=r"steps\[3\].type: unknown step 'nope'"):
        build_step({"type": "nope"}, "steps[3]")
    with pytest.raises(ConfigError, match="rules"):
        build_step({"type": "select_labels", "rules": [{"sources": ["x"], "keep": ["great"]}]}, "steps[0]")
    with pytest.raises(ConfigError, match=r"steps\[0\]"):
        build_step({"type": "gopher_quality", "min_words": 3}, "steps[0]")
    assert TopKRule(sources=["a"]).top_percent == 10.0


def test_gaperon_web_recipe_names_its_steps_in_order():
    from gaperon.curate.pipeline import load_recipe
    from gaperon.curate.steps import STEP_TYPES

    recipe = load_recipe(Path(__file__).resolve().parents[2] / "recipes" / "curate" / "gaperon-web.yaml")
    kinds = [s["type"] for s in recipe.steps]
    assert kinds == [
        "language_id",
        "gopher_repetition",
        "gopher_quality",
        "fineweb_quality",
        "c4_quality",
        "minhash_dedup",
        "quality_score",
        "select_labels",
        "select_top_k",
        "rehydrate",
    ]
    for i, spec in enumerate(recipe.steps):
        if spec["type"] != "quality_score":  # the classifier's step needs a trained model folder
            build_step(spec, f"steps[{i}]")
    assert {k for k in kinds if k != "quality_score"} <= set(STEP_TYPES)


def test_rehydrate_by_field_and_by_function():
    from gaperon.curate.rehydrate import Rehydrate

    docs = [
        Document(text="x" * 200, id="long", metadata={"dup_count": 3}),
        Document(text="short", id="short", metadata={"dup_count": 0}),
        Document(text="short", id="bad", metadata={"dup_count": "many"}),
        Document(text="short", id="plain", metadata={}),
    ]
    by_field = [d.id for d in Rehydrate(field="dup_count").run(iter(docs))]
    assert by_field == ["long", "long", "long", "plain"]
    by_fn = [d.id for d in Rehydrate(fn="curate_helpers:repeat_by_length").run(iter(docs[3:] + docs[:1]))]
    assert by_fn == ["plain", "long", "long"]
    with pytest.raises(ConfigError):
        Rehydrate()
