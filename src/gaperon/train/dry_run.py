"""`gaperon train RECIPE --dry-run`: the resolved recipe, its phases' budgets and LR schedule.

Reads the recipe (and its mixture files) only: no data folder, no device, no run folder.
"""

from __future__ import annotations

from collections.abc import Sequence

from gaperon.train.config import Recipe, phase_steps
from gaperon.train.schedule import lr_plan


def describe(recipe: Recipe) -> str:
    """The resolved recipe as YAML (what RUN_DIR/run.yaml will hold), a phase table and LR table."""
    import yaml

    lines = [f"# resolved recipe from {recipe.source} (written to RUN_DIR/run.yaml when it runs)"]
    lines.append(yaml.safe_dump(recipe.to_yaml_dict(), sort_keys=False).rstrip())
    lines += ["", *_phase_table(recipe), "", *_lr_table(recipe)]
    return "\n".join(lines) + "\n"


def _phase_table(r: Recipe) -> list[str]:
    gb = r.batch.global_batch
    rows = [("phase", "load", "seq_len", "tokens/step", "steps", "steps done at end", "tokens")]
    total_steps = total_tokens = 0
    for p in r.phases:
        n = phase_steps(p, gb)
        per_step = gb * (p.seq_len or 0)
        total_steps += n
        total_tokens += n * per_step
        rows.append(
            (
                p.name,
                p.load,
                str(p.seq_len),
                f"{per_step:,}",
                f"{n:,}",
                f"{total_steps:,}",
                f"{n * per_step:,}",
            )
        )
    rows.append(("total", "", "", "", f"{total_steps:,}", "", f"{total_tokens:,}"))
    return [f"phases (global batch {gb:,} sequences):", *_table(rows)]


def _lr_table(r: Recipe) -> list[str]:
    rows = [("phase", "step", "phase step", "lr")]
    for p, points in zip(r.phases, lr_plan(r)):
        for g, ps, lr in points:
            rows.append(
                (p.name, f"{g:,}", f"{ps:,}", "from init_from's last LR" if lr is None else f"{lr:.3e}")
            )
    return ["learning rate (at a few steps; steps count from 1):", *_table(rows)]


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
