"""One progress line for slow model reads and writes, shown only when the work takes over a second.

A quick load prints nothing; a slow one shows `loading NAME: 120/272 tensors, 3.1 s` on one line
that updates in place on a terminal (and is written once, at the end, elsewhere).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

SHOW_AFTER_S = 1.0
_EVERY_S = 0.25


class Progress:
    """`stream`: where to write; None means stderr when it is a terminal, else nothing at all."""

    def __init__(self, stream: TextIO | None = None, *, unit: str = "tensors") -> None:
        if stream is None:
            stream = sys.stderr if sys.stderr is not None and sys.stderr.isatty() else None
        self.stream = stream
        self.unit = unit
        self.label, self.total, self.done = "", 0, 0
        self._start = self._last = 0.0
        self._shown = False

    @property
    def live(self) -> bool:
        return self.stream is not None and self.stream.isatty()

    def start(self, label: str, total: int) -> None:
        self.label, self.total, self.done = label, total, 0
        self._start = self._last = time.perf_counter()
        self._shown = False

    def advance(self, n: int = 1) -> None:
        self.done += n
        now = time.perf_counter()
        if self.live and now - self._start > SHOW_AFTER_S and now - self._last > _EVERY_S:
            self._last = now
            self._write("\r" + self._line(now))

    def finish(self) -> float:
        """Seconds since start(); writes the final line when the work took over a second."""
        now = time.perf_counter()
        elapsed = now - self._start
        if self.stream is not None and elapsed > SHOW_AFTER_S:
            self._write(("\r" if self._shown else "") + self._line(now) + " done\n")
        elif self._shown:
            self._write("\n")
        return elapsed

    def _line(self, now: float) -> str:
        return f"{self.label}: {self.done}/{self.total} {self.unit}, {now - self._start:.1f} s"

    def _write(self, text: str) -> None:
        assert self.stream is not None
        self.stream.write(text)
        self.stream.flush()
        self._shown = True
