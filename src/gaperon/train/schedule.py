"""Learning-rate schedules: pure functions of the step, so a resumed run gets the same LR.

Two step counters matter. `sched_step` counts optimizer steps since the schedule (re)started: a
`continue` phase keeps it, so warmup is not repeated and the LR simply drops to the new phase's
peak (Gaperon's step drops); other load modes restart it at 0. `phase_step`/`phase_total` place
the step inside the current phase: cosine, linear and WSD decays always span the phase itself.
A `cooldown` phase ignores its own schedule and decays linearly from the previous phase's last LR
to `min_lr` (0 by default) over the phase.
"""

from __future__ import annotations

import math

from gaperon.train.config import LRSpec, PhaseSpec, Recipe, phase_steps


def lr_at(spec: LRSpec, sched_step: int, phase_step: int, phase_total: int) -> float:
    """The LR used for the optimizer step numbered `phase_step` (0-based) of a phase."""
    if spec.warmup_steps and sched_step < spec.warmup_steps:
        return spec.peak * (sched_step + 1) / spec.warmup_steps
    if spec.schedule == "constant":
        return spec.peak
    # Decays start after the warmup's share of this phase (none when warmup happened earlier).
    start = max(0, min(phase_total, spec.warmup_steps - (sched_step - phase_step)))
    span = max(1, phase_total - start)
    progress = min(1.0, max(0.0, (phase_step - start) / span))
    if spec.schedule == "cosine":
        return spec.min_lr + 0.5 * (spec.peak - spec.min_lr) * (1 + math.cos(math.pi * progress))
    if spec.schedule == "linear":
        return spec.peak + (spec.min_lr - spec.peak) * progress
    if spec.schedule == "wsd":
        decay_steps = max(1, round(phase_total * spec.cooldown_fraction))
        decay_start = phase_total - decay_steps
        if phase_step < decay_start:
            return spec.peak
        return spec.peak + (spec.min_lr - spec.peak) * (phase_step - decay_start + 1) / decay_steps
    raise ValueError(f"unknown schedule {spec.schedule!r}")


def cooldown_lr(start_lr: float, phase_step: int, phase_total: int, min_lr: float = 0.0) -> float:
    """Linear decay from `start_lr` (first step) toward `min_lr` (reached after the last step)."""
    frac = phase_step / max(1, phase_total)
    return start_lr + (min_lr - start_lr) * frac


def phase_lr(
    phase: PhaseSpec, decays_from: float | None, sched_step: int, phase_step: int, phase_total: int
) -> float:
    """The LR of one step: a `cooldown` phase with something before it (`decays_from`, the previous
    phase's last LR) decays from there; every other phase follows its own schedule."""
    if phase.load == "cooldown" and decays_from is not None:
        return cooldown_lr(decays_from, phase_step, phase_total, phase.lr.min_lr)
    return lr_at(phase.lr, sched_step, phase_step, phase_total)


def lr_plan(recipe: Recipe, points: int = 5) -> list[list[tuple[int, int, float | None]]]:
    """A few (global step, phase step, lr) per phase, walking the counters as the trainer does
    (steps 1-based). A first-phase cooldown under `init_from` decays from that run's last LR,
    unknown here: its LRs are None."""
    out: list[list[tuple[int, int, float | None]]] = []
    global0, sched0, last_lr = 0, 0, None
    for index, phase in enumerate(recipe.phases):
        n = phase_steps(phase, recipe.batch.global_batch)
        if index > 0 and phase.load != "continue":
            sched0 = 0
        unknown = index == 0 and phase.load == "cooldown"  # needs init_from's last LR
        picks = {0, n - 1, *(round(k * (n - 1) / (points - 1)) for k in range(1, points - 1))}
        if 0 < phase.lr.warmup_steps - sched0 <= n:
            picks.add(phase.lr.warmup_steps - sched0 - 1)  # the end of warmup
        rows: list[tuple[int, int, float | None]] = []
        for ps in sorted(picks):
            lr = None if unknown else phase_lr(phase, last_lr if index > 0 else None, sched0 + ps, ps, n)
            rows.append((global0 + ps + 1, ps + 1, lr))
        out.append(rows)
        last_lr = rows[-1][2]
        global0, sched0 = global0 + n, sched0 + n
    return out
