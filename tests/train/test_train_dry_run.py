"""One source of truth per field: the recipe is resolved once (recipe values win over the mixture
file's), validation changes nothing, and `--dry-run` shows what would run, touching nothing."""

from __future__ import annotations

import copy
import math

import pytest
import yaml
from train_helpers import recipe, two_phases

from gaperon.cli import main
from gaperon.config import from_dict, load_yaml
from gaperon.train.config import Recipe, check_recipe, load_recipe, resolve_recipe
from gaperon.train.schedule import lr_plan


def _mixture_recipe(tmp_path):
    (tmp_path / "mix.yaml").write_text(
        yaml.safe_dump(
            {
                "seq_len": 32,
                "tokens": "4K",
                "seed": 7,
                "sources": [{"name": "x", "path": "nope", "weight": 1}],
            }
        )
    )
    phases = [
        {"name": "a", "mixture": "mix.yaml", "lr": {"peak": 3.0e-3, "warmup_steps": 2}},
        {"name": "b", "mixture": "mix.yaml", "seq_len": 16, "steps": 5, "load": "cooldown"},
    ]
    return recipe(tmp_path, phases=phases)


def test_resolution_is_separate_and_validation_pure(tmp_path):
    path = _mixture_recipe(tmp_path)
    raw = from_dict(Recipe, load_yaml(path), where=str(path))
    raw.base_dir, raw.source = path.parent, str(path)
    before = copy.deepcopy(raw)
    resolved = resolve_recipe(raw)
    assert raw == before  # resolving returns a new recipe
    a, b = resolved.phases
    assert (a.seq_len, a.seed, a.tokens, a.steps) == (32, 7, 4000.0, None)  # from the mixture file
    assert (b.seq_len, b.seed, b.steps) == (16, 7, 5)  # the recipe wins
    snapshot = copy.deepcopy(resolved)
    check_recipe(resolved)
    assert resolved == snapshot
    assert resolve_recipe(resolved) == resolved
    with pytest.raises(ValueError, match=r"phases\[0\].seq_len: missing"):
        check_recipe(raw)  # an unresolved recipe is checked as it is, not filled in
    assert raw == before


def test_dry_run_prints_resolved_recipe_budgets_and_lr(tmp_path, capsys):
    path = _mixture_recipe(tmp_path)
    assert main(["train", str(path), "--dry-run", "batch.global_batch=8"]) == 0
    out = capsys.readouterr().out
    assert not (tmp_path / "nope").exists() and not list(tmp_path.glob("run*"))
    resolved = yaml.safe_load(out.split("\n\n")[0])
    assert resolved["phases"][0]["seq_len"] == 32 and resolved["phases"][0]["tokens"] == 4000.0
    steps_a = math.ceil(4000 / (8 * 32))  # 16
    assert f"a      continue  32       256          {steps_a}" in out
    assert "total" in out and f"{steps_a + 5}" in out
    lines = {tuple(line.split()[:3]): line.split()[3] for line in out.splitlines() if line.startswith("  a ")}
    assert lines[("a", "1", "1")] == f"{3e-3 / 2:.3e}"  # warmup step 1 of 2
    assert lines[("a", "2", "2")] == f"{3e-3:.3e}"


def test_dry_run_needs_no_out_but_training_does(tmp_path, capsys):
    path = recipe(tmp_path)
    assert main(["train", str(path)]) == 2
    assert "--out RUN_DIR is required" in capsys.readouterr().err


def test_lr_plan_matches_what_the_trainer_used(tmp_path):
    from gaperon.train import train
    from gaperon.train.metrics import read_metrics

    path = recipe(tmp_path, phases=two_phases("cooldown", (5, 4)))
    out = tmp_path / "run"
    train(path, out)
    used = {r["step"]: r["lr"] for r in read_metrics(out / "metrics.jsonl") if "lr" in r}
    plan = lr_plan(load_recipe(path))
    points = [(g, lr) for phase in plan for g, _, lr in phase]
    assert len(points) >= 6
    for g, lr in points:
        assert used[g] == pytest.approx(lr, rel=1e-12), g
    run_yaml = yaml.safe_load((out / "run.yaml").read_text())
    assert run_yaml == load_recipe(path).to_yaml_dict()  # what ran is what the dry run shows
