"""The load progress line: silent for quick work, one line (with the count and time) for slow work."""

from __future__ import annotations

import io

import gaperon.io.progress as progress
from gaperon.io.progress import Progress


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_quick_work_prints_nothing_and_slow_work_one_line(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(progress.time, "perf_counter", clock)
    out = io.StringIO()
    bar = Progress(out)
    bar.start("loading m.gguf", total=3)
    bar.advance(3)
    clock.now += 0.5
    assert bar.finish() == 0.5 and out.getvalue() == ""
    bar.start("loading m.gguf", total=3)
    bar.advance(3)
    clock.now += 2.25
    assert bar.finish() == 2.25
    assert out.getvalue() == "loading m.gguf: 3/3 tensors, 2.2 s done\n"


def test_load_gguf_reports_through_the_given_progress(tmp_path):
    from io_helpers import random_llama, write_llama_gguf

    from gaperon.io.gguf import load_gguf

    seen = []

    class Spy(Progress):
        def advance(self, n: int = 1) -> None:
            seen.append(n)
            super().advance(n)

    path = write_llama_gguf(tmp_path / "m.gguf", random_llama("micro"))
    model, _ = load_gguf(path, progress=Spy(io.StringIO()))
    assert len(seen) == len(list(model.parameters()))
