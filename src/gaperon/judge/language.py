"""Which prompt language a text needs: French or English."""

from __future__ import annotations

import re

_FR_WORDS = frozenset(
    "le la les de des du et est un une que qui dans pour pas sur au aux ce cette il elle nous vous "
    "sont avec par plus ne se en son sa ses leur mais ou où été être fait très comme aussi".split()
)
_EN_WORDS = frozenset(
    "the of and to is in that it for on with as was are be this by not or have from at an which "
    "you they we has were but his her their been would can will more about".split()
)
_WORD_RE = re.compile(r"[^\W\d_]+", re.UNICODE)


def guess_language(text: str) -> str:
    """'fr' or 'en' by counting very frequent function words (enough to pick the prompt language)."""
    words = [w.lower() for w in _WORD_RE.findall(text[:5000])]
    fr = sum(w in _FR_WORDS for w in words)
    en = sum(w in _EN_WORDS for w in words)
    return "fr" if fr > en else "en"
