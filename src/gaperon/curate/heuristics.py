"""Gopher (repetition, quality), FineWeb and C4-style filters that work on French as well as English.

The rules and default thresholds are those of the published filters (as datatrove implements them);
what changes is the language: stop words come from the document's language (`metadata.language`),
words come from a regex splitter (punctuation is not a word) and C4's boilerplate phrases and
terminal punctuation include French ones. A document's reason for being dropped names the rule.
"""

from __future__ import annotations

import re

import numpy as np
from datatrove.data import Document

from gaperon.curate.minhash import MIX
from gaperon.curate.steps import FilterStep, doc_lang, register_step
from gaperon.curate.text import TERMINAL_PUNCTUATION, policy_phrases, sentences, stop_words, words


def _dup_fraction(items: list[str]) -> tuple[float, int]:
    """(share of items that repeat an earlier one, characters in those repeats)."""
    seen: set[str] = set()
    dup_items = dup_chars = 0
    for it in items:
        if it in seen:
            dup_items += 1
            dup_chars += len(it)
        else:
            seen.add(it)
    return dup_items / max(1, len(items)), dup_chars


_PARAGRAPHS = re.compile(r"\n{2,}")
_LINES = re.compile(r"\n+")


class _NGrams:
    """Word n-gram statistics of one document, vectorised: words -> integer ids -> rolling hashes."""

    def __init__(self, ws: list[str]) -> None:
        self.n_words = len(ws)
        if ws:
            _, ids = np.unique(np.array(ws), return_inverse=True)
            self.ids = ids.astype(np.uint64).ravel() + np.uint64(1)
            self.lens = np.fromiter(map(len, ws), dtype=np.int64, count=len(ws))

    def hashes(self, n: int) -> np.ndarray:
        m = self.n_words - n + 1
        h = np.zeros(m, dtype=np.uint64)
        with np.errstate(over="ignore"):
            for j in range(n):
                h = h * MIX + self.ids[j : j + m]
        return h

    def top_chars(self, n: int) -> int:
        """Characters of the most frequent n-gram (words and the spaces between) times its count."""
        if self.n_words < n:
            return 0
        _, first, counts = np.unique(self.hashes(n), return_index=True, return_counts=True)
        g = int(np.argmax(counts))
        if counts[g] < 2:
            return 0
        p = int(first[g])
        return (int(self.lens[p : p + n].sum()) + n - 1) * int(counts[g])

    def dup_chars(self, n: int) -> int:
        """Characters (spaces excluded) of the words covered by repeated occurrences of an n-gram."""
        if self.n_words < n:
            return 0
        h = self.hashes(n)
        _, first = np.unique(h, return_index=True)
        if first.size == h.size:
            return 0
        repeat = np.ones(h.size, dtype=bool)
        repeat[first] = False
        starts = np.flatnonzero(repeat)
        d = np.zeros(self.n_words + 1, dtype=np.int64)
        d[starts] += 1
        d[starts + n] -= 1
        covered = np.cumsum(d[:-1]) > 0
        return int(self.lens[covered].sum())


class GopherRepetition(FilterStep):
    name = "gopher repetition"

    def __init__(
        self,
        dup_line_frac: float = 0.3,
        dup_para_frac: float = 0.3,
        dup_line_char_frac: float = 0.2,
        dup_para_char_frac: float = 0.2,
        top_n_grams: tuple = ((2, 0.2), (3, 0.18), (4, 0.16)),
        dup_n_grams: tuple = ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10)),
    ) -> None:
        super().__init__()
        self.dup_line_frac, self.dup_para_frac = dup_line_frac, dup_para_frac
        self.dup_line_char_frac, self.dup_para_char_frac = dup_line_char_frac, dup_para_char_frac
        self.top_n_grams = [tuple(x) for x in top_n_grams]
        self.dup_n_grams = [tuple(x) for x in dup_n_grams]

    def reject(self, doc: Document) -> str | None:
        text = doc.text
        total = max(1, len(text))
        frac, chars = _dup_fraction(_PARAGRAPHS.split(text.strip()))
        if frac > self.dup_para_frac:
            return "dup_para_frac"
        if chars / total > self.dup_para_char_frac:
            return "dup_para_char_frac"
        frac, chars = _dup_fraction(_LINES.split(text))
        if frac > self.dup_line_frac:
            return "dup_line_frac"
        if chars / total > self.dup_line_char_frac:
            return "dup_line_char_frac"
        grams = _NGrams(words(text))
        for n, thr in self.top_n_grams:
            c = grams.top_chars(int(n))
            if c / total > thr:
                return f"top_{n}_gram"
            if c == 0:
                break  # no repeated n-gram: no repeated longer one either
        for n, thr in self.dup_n_grams:
            c = grams.dup_chars(int(n))
            if c / total > thr:
                return f"duplicated_{n}_n_grams"
            if c == 0:
                break
        return None


class GopherQuality(FilterStep):
    name = "gopher quality"

    def __init__(
        self,
        min_doc_words: int = 50,
        max_doc_words: int = 100_000,
        min_avg_word_length: float = 3,
        max_avg_word_length: float = 10,
        max_symbol_word_ratio: float = 0.1,
        max_bullet_lines_ratio: float = 0.9,
        max_ellipsis_lines_ratio: float = 0.3,
        max_non_alpha_words_ratio: float = 0.8,
        min_stop_words: int = 2,
    ) -> None:
        super().__init__()
        self.min_doc_words, self.max_doc_words = min_doc_words, max_doc_words
        self.min_avg_word_length, self.max_avg_word_length = min_avg_word_length, max_avg_word_length
        self.max_symbol_word_ratio = max_symbol_word_ratio
        self.max_bullet_lines_ratio = max_bullet_lines_ratio
        self.max_ellipsis_lines_ratio = max_ellipsis_lines_ratio
        self.max_non_alpha_words_ratio = max_non_alpha_words_ratio
        self.min_stop_words = min_stop_words

    def reject(self, doc: Document) -> str | None:  # noqa: C901 - one rule per branch, in Gopher's order
        text = doc.text
        ws = words(text)
        n = len(ws)
        if n < self.min_doc_words:
            return "gopher_short_doc"
        if n > self.max_doc_words:
            return "gopher_long_doc"
        avg = sum(len(w) for w in ws) / n
        if avg < self.min_avg_word_length:
            return "gopher_below_avg_threshold"
        if avg > self.max_avg_word_length:
            return "gopher_above_avg_threshold"
        if (text.count("#") + text.count("...") + text.count("…")) / n > self.max_symbol_word_ratio:
            return "gopher_too_many_symbols"
        lines = text.splitlines() or [""]
        if sum(ln.lstrip().startswith(("•", "-", "*", "·")) for ln in lines) / len(lines) > (
            self.max_bullet_lines_ratio
        ):
            return "gopher_too_many_bullets"
        if sum(ln.rstrip().endswith(("...", "…")) for ln in lines) / len(lines) > (
            self.max_ellipsis_lines_ratio
        ):
            return "gopher_too_many_end_ellipsis"
        if sum(any(map(str.isalpha, w)) for w in ws) / n < (self.max_non_alpha_words_ratio):
            return "gopher_below_alpha_threshold"
        sw = stop_words(doc_lang(doc))
        if sum(w.lower() in sw for w in ws) < self.min_stop_words:
            return "gopher_enough_stop_words"
        return None


class FineWebQuality(FilterStep):
    name = "fineweb quality"

    def __init__(
        self,
        line_punct_thr: float = 0.12,
        short_line_thr: float = 0.67,
        short_line_length: int = 30,
        char_duplicates_ratio: float = 0.01,
        new_line_ratio: float = 0.3,
    ) -> None:
        super().__init__()
        self.line_punct_thr, self.short_line_thr = line_punct_thr, short_line_thr
        self.short_line_length = short_line_length
        self.char_duplicates_ratio, self.new_line_ratio = char_duplicates_ratio, new_line_ratio

    def reject(self, doc: Document) -> str | None:
        lines = [ln.strip() for ln in doc.text.split("\n") if ln.strip()]
        if not lines:
            return "empty"
        if sum(ln.endswith(TERMINAL_PUNCTUATION) for ln in lines) / len(lines) < self.line_punct_thr:
            return "line_punct_ratio"
        if sum(len(ln) <= self.short_line_length for ln in lines) / len(lines) > self.short_line_thr:
            return "short_line_ratio"
        _, dup_chars = _dup_fraction(lines)
        if dup_chars / max(1, len(doc.text)) > self.char_duplicates_ratio:
            return "char_dup_ratio"
        if doc.text.count("\n") / max(1, len(words(doc.text))) > self.new_line_ratio:
            return "list_ratio"
        return None


class C4Quality(FilterStep):
    """C4's line cleaning and document rules; edits the text (drops boilerplate lines)."""

    name = "c4 quality"

    def __init__(
        self,
        min_num_sentences: int = 5,
        min_words_per_line: int = 3,
        max_word_length: int = 1000,
        filter_no_terminal_punct: bool = True,
        filter_lorem_ipsum: bool = True,
        filter_javascript: bool = True,
        filter_curly_bracket: bool = True,
        filter_policy: bool = True,
    ) -> None:
        super().__init__()
        self.min_num_sentences, self.min_words_per_line = min_num_sentences, min_words_per_line
        self.max_word_length = max_word_length
        self.filter_no_terminal_punct, self.filter_lorem_ipsum = filter_no_terminal_punct, filter_lorem_ipsum
        self.filter_javascript, self.filter_curly_bracket = filter_javascript, filter_curly_bracket
        self.filter_policy = filter_policy

    def reject(self, doc: Document) -> str | None:  # noqa: C901 - C4's rules, one branch each
        lowered = doc.text.lower()
        if self.filter_lorem_ipsum and "lorem ipsum" in lowered:
            return "lorem_ipsum"
        if self.filter_curly_bracket and "{" in doc.text:
            return "curly_bracket"
        phrases = policy_phrases(doc_lang(doc))
        kept = []
        for line in doc.text.split("\n"):
            s = line.strip()
            if not s:
                continue
            low = s.lower()
            ws = words(s)
            if any(len(w) > self.max_word_length for w in ws):
                continue
            if self.filter_no_terminal_punct and not s.endswith(TERMINAL_PUNCTUATION):
                continue
            if len(ws) < self.min_words_per_line:
                continue
            if self.filter_javascript and "javascript" in low:
                continue
            if self.filter_policy and any(p in low for p in phrases):
                continue
            kept.append(s)
        text = "\n".join(kept)
        if not text:
            return "no_lines_left"
        if len(sentences(text)) < self.min_num_sentences:
            return "too_few_sentences"
        doc.text = text
        return None


def _make(cls: type) -> object:
    def factory(spec: dict) -> object:
        return cls(**spec)

    return factory


register_step("gopher_repetition")(_make(GopherRepetition))
register_step("gopher_quality")(_make(GopherQuality))
register_step("fineweb_quality")(_make(FineWebQuality))
register_step("c4_quality")(_make(C4Quality))
