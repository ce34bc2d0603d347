"""An offline labelled set for the quality classifier, made from the bundled corpus.

No large judge runs on our machines, so tests and the demo need labels that cost nothing: clean
documents are "high"; "medium" and "low" are the same kind of documents put through known web-
crawl degradations, mild (one defect, the content still readable) or heavy (the content mostly
lost). Each source document is used once, in one class only, so a classifier cannot learn to
match a degraded copy with its clean original. Real use labels real web documents with a real
judge (`gaperon classifier annotate`); this set only checks that the machinery learns.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from gaperon import atomic
from gaperon.curate.classifier.io import read_jsonl
from gaperon.errors import DataError

LABELS = ("high", "low", "medium")
SPLITS = ("train", "validation", "test")
LANGUAGES = ("fr", "en")
WINDOW_CHARS = 700  # what one labelled document keeps of its source: ~200 tokens

_NAV = {
    "fr": [
        "Accueil | Actualités | Produits | Services | Contact | Plan du site",
        "Se connecter · Créer un compte · Mot de passe oublié ?",
        "Ce site utilise des cookies pour améliorer votre expérience. Accepter | Refuser | Paramètres",
        "Partager sur Facebook | Twitter | LinkedIn | Imprimer | Envoyer par e-mail",
        "© 2024 Tous droits réservés. Mentions légales · Politique de confidentialité · CGV",
        "Inscrivez-vous à notre newsletter ! Votre adresse e-mail : [ OK ]",
        "Vous êtes ici : Accueil > Rubriques > Article",
        "Articles similaires · Les plus lus · Commentaires (0) · Laisser un commentaire",
        "Page précédente | 1 | 2 | 3 | 4 | 5 | Page suivante",
        "Menu ☰ Rechercher... 🔍 Panier (0) Mon compte",
    ],
    "en": [
        "Home | News | Products | Services | Contact Us | Sitemap",
        "Sign in · Register · Forgot your password?",
        "This website uses cookies to improve your experience. Accept | Decline | Settings",
        "Share on Facebook | Twitter | LinkedIn | Print | Email this page",
        "© 2024 All rights reserved. Legal notice · Privacy policy · Terms of use",
        "Subscribe to our newsletter! Your email address: [ OK ]",
        "You are here: Home > Topics > Article",
        "Related posts · Most read · Comments (0) · Leave a reply",
        "Previous page | 1 | 2 | 3 | 4 | 5 | Next page",
        "Menu ☰ Search... 🔍 Cart (0) My account",
    ],
}
_SPAM = {
    "fr": [
        "pas cher",
        "gratuit",
        "meilleur prix",
        "promo",
        "livraison offerte",
        "avis",
        "acheter",
        "en ligne",
    ],
    "en": ["cheap", "free", "best price", "discount", "free shipping", "reviews", "buy", "online"],
}
_MORE = {"fr": "Lire la suite…", "en": "Read more…"}
_SENTENCE = re.compile(r"(?<=[.!?…])\s+")
_WORD = re.compile(r"\w{4,}")


def window(text: str, limit: int = WINDOW_CHARS) -> str:
    """The first `limit` characters of `text`, cut at the last sentence or line end before it."""
    text = text.strip()
    if len(text) <= limit:
        return text
    head = text[:limit]
    cut = max(head.rfind(". "), head.rfind("\n"), head.rfind("? "), head.rfind("! "))
    return head[: cut + 1].strip() if cut > limit // 2 else head.rsplit(" ", 1)[0]


def _sentences(text: str) -> list[str]:
    return [s for s in _SENTENCE.split(text.replace("\n", " ")) if s.strip()]


def _mojibake(text: str, rng: random.Random) -> str:
    """UTF-8 bytes read as cp1252, the commonest broken encoding on the web.

    Web text has typographic apostrophes and non-breaking spaces even in English, which is what
    breaks visibly there ("donâ€™t", "Â "): we put them in first so ASCII text breaks too.
    """
    text = text.replace("'", "\u2019").replace(" - ", " \u2013 ")
    gaps = text.split(" ")
    text = "".join(w + ("\u00a0" if rng.random() < 0.15 else " ") for w in gaps)[:-1]
    return text.encode("utf-8").decode("cp1252", errors="replace")


def _keywords(text: str, rng: random.Random, n: int = 6) -> list[str]:
    counts = Counter(w.lower() for w in _WORD.findall(text))
    words = [w for w, _ in counts.most_common(20)] or ["page"]
    return rng.sample(words, min(n, len(words)))


# Mild degradations: one defect, most of the content still there and readable -> "medium".
def _boilerplate(text: str, lang: str, rng: random.Random) -> str:
    nav = _NAV[lang]
    head = "\n".join(rng.sample(nav, 3))
    tail = "\n".join(rng.sample(nav, 3))
    return f"{head}\n\n{text}\n\n{tail}"


def _some_shuffled(text: str, _lang: str, rng: random.Random) -> str:
    sents = _sentences(text)
    idx = list(range(len(sents)))
    k = max(2, len(idx) // 3)
    chosen = rng.sample(idx, min(k, len(idx)))
    moved = chosen[:]
    rng.shuffle(moved)
    out = sents[:]
    for a, b in zip(chosen, moved, strict=True):
        out[a] = sents[b]
    return " ".join(out)


def _partial_mojibake(text: str, _lang: str, rng: random.Random) -> str:
    lines = text.split("\n")
    for i in rng.sample(range(len(lines)), max(1, len(lines) // 3)):
        lines[i] = _mojibake(lines[i], rng)
    return "\n".join(lines)


def _truncated(text: str, lang: str, rng: random.Random) -> str:
    cut = int(len(text) * rng.uniform(0.4, 0.6))
    return f"{text[:cut].rstrip()} {_MORE[lang]}"


def _light_spam(text: str, lang: str, rng: random.Random) -> str:
    kw = _keywords(text, rng, 3)
    spam = " ".join(f"{w} {rng.choice(_SPAM[lang])}" for w in kw)
    return f"{text}\n\n{spam}"


# Heavy degradations: the content mostly lost under noise -> "low".
def _navigation_page(text: str, lang: str, rng: random.Random) -> str:
    snippet = " ".join(_sentences(text)[:1])[:200]
    lines = rng.sample(_NAV[lang], 6)
    lines.insert(rng.randrange(len(lines)), snippet)
    return "\n".join(lines + rng.sample(_NAV[lang], 3))


def _keyword_spam(text: str, lang: str, rng: random.Random) -> str:
    kw = _keywords(text, rng)
    spam = _SPAM[lang]
    words = [f"{rng.choice(kw)} {rng.choice(spam)}" for _ in range(rng.randint(25, 45))]
    return " ".join(words)


def _word_salad(text: str, _lang: str, rng: random.Random) -> str:
    words = text.split()
    rng.shuffle(words)
    return " ".join(words)


def _full_mojibake(text: str, _lang: str, rng: random.Random) -> str:
    sents = _sentences(text)
    rng.shuffle(sents)
    return _mojibake(" ".join(sents), rng)


def _fragments(text: str, _lang: str, rng: random.Random) -> str:
    words = text.split()
    pieces = []
    for _ in range(rng.randint(4, 8)):
        start = rng.randrange(max(1, len(words) - 3))
        pieces.append(" ".join(words[start : start + rng.randint(1, 4)]))
    return " ... ".join(pieces)


Degradation = Callable[[str, str, random.Random], str]
MEDIUM: dict[str, Degradation] = {
    "boilerplate": _boilerplate,
    "some_sentences_shuffled": _some_shuffled,
    "partial_mojibake": _partial_mojibake,
    "truncated": _truncated,
    "light_keyword_spam": _light_spam,
}
LOW: dict[str, Degradation] = {
    "navigation_page": _navigation_page,
    "keyword_spam": _keyword_spam,
    "word_salad": _word_salad,
    "mojibake_shuffled": _full_mojibake,
    "fragments": _fragments,
}


def _order_key(seed: int, doc_id: str) -> str:
    return hashlib.sha256(f"{seed}:{doc_id}".encode()).hexdigest()


def build_labels(
    sources: dict[str, list[Path]],
    out: str | Path,
    *,
    per_class: int = 200,
    seed: int = 0,
    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1),
) -> dict:
    """Write OUT/{train,validation,test}.jsonl, OUT/stats.json and OUT/README.md; return the stats.

    `sources` maps a language to its jsonl files. Each language gets `per_class` documents of each
    label (balanced), every (language, label) group split by `fractions`. Same seed, same files.
    """
    rng = random.Random(seed)
    splits: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for lang, files in sources.items():
        docs = [d for f in files for d in read_jsonl(f) if len(d.get("text", "")) >= 400]
        docs.sort(key=lambda d: _order_key(seed, str(d.get("id"))))
        if len(docs) < 3 * per_class:
            raise DataError(f"{lang}: {len(docs)} usable documents (>= 400 characters), need {3 * per_class}")
        for c, label in enumerate(("high", "medium", "low")):
            group = []
            for d in docs[c * per_class : (c + 1) * per_class]:
                text = window(d["text"])
                kind = "clean"
                if label != "high":
                    kinds = MEDIUM if label == "medium" else LOW
                    kind = rng.choice(sorted(kinds))
                    text = kinds[kind](text, lang, rng)
                group.append(
                    {
                        "id": f"{d['id']}#{label}",
                        "text": text,
                        "language": lang,
                        "label": label,
                        "degradation": kind,
                    }
                )
            n_train = round(len(group) * fractions[0])
            n_val = round(len(group) * fractions[1])
            splits["train"] += group[:n_train]
            splits["validation"] += group[n_train : n_train + n_val]
            splits["test"] += group[n_train + n_val :]
    out = Path(out)
    stats: dict = {"seed": seed, "per_class": per_class, "splits": {}}
    for name, rows in splits.items():
        random.Random(f"{seed}:{name}").shuffle(rows)
        atomic.write_text(
            out / f"{name}.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
        )
        stats["splits"][name] = {
            f"{lang}/{label}": sum(1 for r in rows if r["language"] == lang and r["label"] == label)
            for lang in sources
            for label in LABELS
        }
    stats["degradations"] = dict(
        sorted(Counter(r["degradation"] for s in splits.values() for r in s).items())
    )
    atomic.write_json(out / "stats.json", stats)
    atomic.write_text(out / "README.md", _readme(stats))
    return stats


def _readme(stats: dict) -> str:
    rows = "\n".join(
        f"| {split} | " + " | ".join(str(v) for v in counts.values()) + " |"
        for split, counts in stats["splits"].items()
    )
    header = " | ".join(next(iter(stats["splits"].values())).keys())
    kinds = "\n".join(f"- `{k}`: {n}" for k, n in stats["degradations"].items())
    return f"""# Offline quality labels (synthetic)

Built by `gaperon classifier labels --seed {stats["seed"]}` from the bundled corpus
(`data/samples/{{fr,en}}.jsonl.zst`). Each document is the first ~{WINDOW_CHARS} characters of one
corpus document, used once, in one class only.

- **high**: the clean text.
- **medium**: one mild defect, the content still readable: {", ".join(f"`{k}`" for k in MEDIUM)}.
- **low**: the content mostly lost under noise: {", ".join(f"`{k}`" for k in LOW)}.

These labels only check that the classifier machinery learns. They are NOT the Gaperon labels:
real use labels real web documents with an LLM judge on six criteria (`gaperon classifier
annotate`), then trains on those files (same schema: `text`, `label`, optional `language`).

| split | {header} |
|{"---|" * (1 + len(next(iter(stats["splits"].values()))))}
{rows}

Degradations used:
{kinds}
"""
