"""LR schedules are pure functions of the step counters."""

from __future__ import annotations

import math

import pytest

from gaperon.train.config import LRSpec
from gaperon.train.schedule import cooldown_lr, lr_at


def test_warmup_then_constant():
    s = LRSpec(peak=1e-3, warmup_steps=4)
    assert [lr_at(s, i, i, 10) for i in range(6)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])


def test_continue_keeps_warmup_done_and_drops_to_new_peak():
    # A `continue` phase: the schedule step carries on (100), the phase step restarts.
    s = LRSpec(peak=9.5e-5, warmup_steps=4)
    assert lr_at(s, 100, 0, 10) == 9.5e-5


def test_cosine_spans_the_phase_after_warmup():
    s = LRSpec(peak=1.0, schedule="cosine", warmup_steps=2, min_lr=0.1)
    assert lr_at(s, 1, 1, 12) == 1.0  # last warmup step
    assert lr_at(s, 2, 2, 12) == pytest.approx(1.0)  # decay starts at the peak
    assert lr_at(s, 7, 7, 12) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_at(s, 12, 12, 12) == pytest.approx(0.1)
    # In a continued phase the decay starts at the phase's first step.
    assert lr_at(s, 50, 0, 10) == pytest.approx(1.0)
    assert lr_at(s, 55, 5, 10) == pytest.approx(0.55)


def test_linear_and_wsd():
    lin = LRSpec(peak=1.0, schedule="linear", min_lr=0.0)
    assert [lr_at(lin, i, i, 4) for i in range(4)] == pytest.approx([1.0, 0.75, 0.5, 0.25])
    wsd = LRSpec(peak=1.0, schedule="wsd", cooldown_fraction=0.25, min_lr=0.0)
    got = [lr_at(wsd, i, i, 8) for i in range(8)]
    assert got == pytest.approx([1.0] * 6 + [0.5, 0.0])


def test_cooldown_from_previous_lr_to_zero():
    got = [cooldown_lr(3e-5, i, 4) for i in range(4)]
    assert got == pytest.approx([3e-5, 2.25e-5, 1.5e-5, 0.75e-5])
    assert cooldown_lr(3e-5, 4, 4) == 0.0
