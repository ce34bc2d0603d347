"""Token ids -> text, one token at a time, for streaming.

Two things make this more than `decode(ids)`: a character may span several byte-level tokens
(never emit half of it), and a stop string may arrive split over tokens (hold back any tail that
could still grow into one, and cut the text before it when it completes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

REPLACEMENT = "\ufffd"


class Decoder(Protocol):
    def decode(self, ids: Sequence[int], *, skip_special: bool = ...) -> str: ...


class IncrementalDetokenizer:
    """Decodes a growing id list, returning only newly completed text (vLLM's offset scheme).

    Decoding a short window (from the last safe boundary) keeps each step O(1) and lets tokenizers
    whose pieces depend on their left context (leading spaces) decode correctly.
    """

    def __init__(self, tok: Decoder, skip_special: bool = True) -> None:
        self.tok = tok
        self.skip_special = skip_special
        # A model's vocabulary may be padded past the tokenizer's: such ids decode to nothing.
        self._vocab = getattr(tok, "vocab_size", None)
        self.ids: list[int] = []
        self._prefix = 0
        self._read = 0

    def _decode(self, ids: Sequence[int]) -> str:
        if self._vocab is not None:
            ids = [i for i in ids if i < self._vocab]
        return self.tok.decode(list(ids), skip_special=self.skip_special)

    def push(self, token_id: int) -> str:
        self.ids.append(int(token_id))
        prefix_text = self._decode(self.ids[self._prefix : self._read])
        new_text = self._decode(self.ids[self._prefix :])
        if len(new_text) > len(prefix_text) and not new_text.endswith(REPLACEMENT):
            self._prefix, self._read = self._read, len(self.ids)
            return new_text[len(prefix_text) :]
        return ""

    def flush(self) -> str:
        """Whatever is left at the end (an incomplete character decodes as U+FFFD)."""
        prefix_text = self._decode(self.ids[self._prefix : self._read])
        new_text = self._decode(self.ids[self._prefix :])
        self._prefix = self._read = len(self.ids)
        return new_text[len(prefix_text) :]


class StopStringFilter:
    """Passes text through until a stop string appears; the stop string itself is never emitted."""

    def __init__(self, stop_strings: Sequence[str]) -> None:
        self.stops = [s for s in stop_strings if s]
        self._held = ""
        self.stopped = False

    def push(self, text: str) -> str:
        if self.stopped:
            return ""
        pending = self._held + text
        if not self.stops:
            return pending
        hits = [i for i in (pending.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            self._held = ""
            return pending[: min(hits)]
        keep = self._longest_stop_prefix_suffix(pending)
        self._held = pending[len(pending) - keep :] if keep else ""
        return pending[: len(pending) - keep]

    def _longest_stop_prefix_suffix(self, text: str) -> int:
        best = 0
        for s in self.stops:
            for n in range(min(len(s) - 1, len(text)), best, -1):
                if text.endswith(s[:n]):
                    best = n
                    break
        return best

    def flush(self) -> str:
        out, self._held = ("" if self.stopped else self._held), ""
        return out


class TextAssembler:
    """Token ids in, safe text deltas out; `stopped` turns true when a stop string completes."""

    def __init__(self, tok: Decoder, stop_strings: Sequence[str] = ()) -> None:
        self.detok = IncrementalDetokenizer(tok)
        self.stop = StopStringFilter(stop_strings)
        self.text = ""

    @property
    def stopped(self) -> bool:
        return self.stop.stopped

    def push(self, token_id: int) -> str:
        delta = self.stop.push(self.detok.push(token_id))
        self.text += delta
        return delta

    def flush(self) -> str:
        """Call once generation ended for another reason: releases held-back text."""
        delta = self.stop.push(self.detok.flush()) if not self.stopped else ""
        delta += self.stop.flush()
        self.text += delta
        return delta
