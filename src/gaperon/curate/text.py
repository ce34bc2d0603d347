"""Language-aware word splitting and word lists shared by the heuristic filters and MinHash.

A regex splitter instead of spaCy/nltk: no model to download, ~2.6x less CPU, and punctuation
marks are never counted as words (datatrove's spaCy words count "," and "." as words, which makes
Gopher's "80% of words contain a letter" rule drop good French and English prose).
"""

from __future__ import annotations

import re

# A word: a run of letters/digits. Apostrophes and hyphens split ("l'invite" -> "l", "invite"),
# which is what the stop-word lists and the average word length expect.
_WORD = re.compile(r"[^\W_]+")
_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"'»”)\]]*\s+")

# Function words whose presence says "this is running text in this language" (Gopher's rule).
STOP_WORDS: dict[str, frozenset[str]] = {
    "en": frozenset({"the", "be", "to", "of", "and", "that", "have", "with"}),
    "fr": frozenset(
        {"le", "la", "les", "de", "des", "du", "et", "est", "un", "une", "que", "qui", "dans", "pour", "en"}
    ),
}
TERMINAL_PUNCTUATION = (".", "!", "?", "…", '"', "'", "»", "”", ":", ";")
# C4's boilerplate lines, with the French phrases of the same cookie/legal banners.
POLICY_PHRASES: dict[str, tuple[str, ...]] = {
    "en": (
        "terms of use",
        "privacy policy",
        "cookie policy",
        "uses cookies",
        "use of cookies",
        "use cookies",
    ),
    "fr": (
        "conditions d'utilisation",
        "conditions générales",
        "politique de confidentialité",
        "mentions légales",
        "utilise des cookies",
        "utilisation des cookies",
        "accepter les cookies",
    ),
}


def words(text: str) -> list[str]:
    """Words of `text` in order, punctuation excluded."""
    return _WORD.findall(text)


def sentences(text: str) -> list[str]:
    """A regex sentence splitter (no punkt model ships offline)."""
    return [s for s in _SENTENCE_END.split(text) if s.strip()]


def stop_words(lang: str) -> frozenset[str]:
    """The stop words of `lang`; languages we have no list for use the union (never an English-only
    list, which is what drops 97% of French documents in stock Gopher)."""
    if lang in STOP_WORDS:
        return STOP_WORDS[lang]
    return frozenset().union(*STOP_WORDS.values())


def policy_phrases(lang: str) -> tuple[str, ...]:
    return POLICY_PHRASES.get(lang, tuple(p for ps in POLICY_PHRASES.values() for p in ps))
