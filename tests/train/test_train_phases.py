"""Each load mode keeps exactly what it says when the run moves to the next phase."""

from __future__ import annotations

import pytest
import torch
from train_helpers import losses, recipe, two_phases

from gaperon.config import ConfigError
from gaperon.io.dcp import load_run_model
from gaperon.model.presets import build, get_preset
from gaperon.train import train
from gaperon.train.checkpoint import load
from gaperon.train.config import OptimSpec
from gaperon.train.data import SyntheticSampler
from gaperon.train.loop import TrainState, enter_phase, micro_loss
from gaperon.train.metrics import read_metrics
from gaperon.train.optim import build_optimizer


def _optimizer_step_count(ckpt_dir) -> float:
    model = build(get_preset("micro"))
    opt = build_optimizer(model, OptimSpec(), lr=0.0)
    load(ckpt_dir, model, opt)
    return float(opt.state[model.lm_head.weight]["step"])


# phase b: 3 steps, peak 1e-3 with 2 warmup steps; phase a ends at lr 3e-3 after 4 steps.
EXPECTED_FIRST_LR = {"continue": 1e-3, "model_optimizer": 5e-4, "model": 5e-4, "cooldown": 3e-3}
EXPECTED_OPT_STEP = {"continue": 5, "model_optimizer": 5, "model": 1, "cooldown": 5}


@pytest.mark.parametrize("mode", ["continue", "model_optimizer", "model", "cooldown"])
def test_load_modes(tmp_path, mode):
    out = tmp_path / "run"
    res = train(recipe(tmp_path, phases=two_phases(mode), checkpoint={"every": 5, "keep_last": 5}), out)
    assert res.status == "complete" and res.state.global_step == 7
    recs = [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
    lrs = [r["lr"] for r in recs]
    assert lrs[:4] == pytest.approx([1.5e-3, 3e-3, 3e-3, 3e-3])
    assert lrs[4] == pytest.approx(EXPECTED_FIRST_LR[mode])
    if mode == "cooldown":
        assert lrs[4:] == pytest.approx([3e-3, 2e-3, 1e-3])  # linear from the previous LR toward 0
    ck = out / "checkpoints"
    # Phase b's first step starts from phase a's final weights, whatever the mode.
    model, _ = load_run_model(ck / "step_00000004")
    batch = SyntheticSampler(512, 64, 8, seed=2, total_steps=3).batch(0)
    with torch.no_grad():
        first = (
            sum(float(micro_loss(model, batch.tokens[i : i + 2], None, False)) for i in range(0, 8, 2)) / 4
        )
    assert recs[4]["loss"] == pytest.approx(first, rel=1e-5)
    # The optimizer: kept (its step counter goes on) except in transfer mode.
    assert _optimizer_step_count(ck / "step_00000005") == EXPECTED_OPT_STEP[mode]
    # Phase-end checkpoints are kept as branch points even beyond keep_last.
    assert (ck / "step_00000004").exists() and (ck / "step_00000007").exists()


def test_enter_phase_counters():
    s = TrainState(
        phase_index=0,
        phase_step=4,
        global_step=4,
        sched_step=4,
        tokens_seen=99,
        last_lr=3e-3,
        phase_complete=True,
    )
    for mode, sched, fresh in [
        ("continue", 4, False),
        ("model_optimizer", 0, False),
        ("model", 0, True),
        ("cooldown", 0, False),
    ]:
        new, fresh_optim = enter_phase(s, 1, mode)
        assert (new.phase_index, new.phase_step, new.global_step, new.tokens_seen) == (1, 0, 4, 99)
        assert new.sched_step == sched and fresh_optim == fresh and new.phase_start_lr == 3e-3
        assert not new.phase_complete


def test_resume_at_a_phase_boundary_is_exact(tmp_path, monkeypatch):
    from gaperon.train.loop import Trainer

    path = recipe(tmp_path, phases=two_phases("model"), checkpoint={"every": 100, "keep_last": 2})
    train(path, tmp_path / "ref")
    real_step = Trainer.train_step

    def stop_at_4(self, state):
        rec = real_step(self, state)
        if state.global_step == 4:
            self.stop.flag = True
        return rec

    monkeypatch.setattr(Trainer, "train_step", stop_at_4)
    assert train(path, tmp_path / "run").status == "preempted"
    monkeypatch.setattr(Trainer, "train_step", real_step)
    assert train(path, tmp_path / "run").status == "complete"
    assert losses(tmp_path / "run") == losses(tmp_path / "ref")


def test_checkpoint_from_another_recipe_with_fewer_phases(tmp_path):
    out = tmp_path / "run"
    train(recipe(tmp_path, phases=two_phases("continue")), out)
    with pytest.raises(ConfigError, match="phases: the checkpoint"):
        train(recipe(tmp_path, name="one.yaml"), out)


@pytest.mark.parametrize(("mode", "first_lr", "opt_step"), [("cooldown", 3e-3, 5), ("model", 5e-4, 1)])
def test_branch_from_another_run(tmp_path, mode, first_lr, opt_step):
    """Black Pepper / Garlic style: a new run starting from another run's last checkpoint."""
    parent = tmp_path / "parent"
    train(recipe(tmp_path, name="parent.yaml", phases=two_phases("continue")[:1]), parent)
    child_phase = two_phases(mode)[1]
    child = tmp_path / "child"
    r = recipe(
        tmp_path,
        name="child.yaml",
        phases=[child_phase],
        init_from=str(parent),
        checkpoint={"every": 1, "keep_last": 5},
    )
    res = train(r, child)
    assert res.status == "complete" and res.state.global_step == 3
    recs = [x for x in read_metrics(child / "metrics.jsonl") if "loss" in x]
    assert recs[0]["lr"] == pytest.approx(first_lr)
    assert _optimizer_step_count(child / "checkpoints" / "step_00000001") == opt_step
    parent_model, _ = load_run_model(parent)
    batch = SyntheticSampler(512, 64, 8, seed=2, total_steps=3).batch(0)
    with torch.no_grad():
        first = (
            sum(float(micro_loss(parent_model, batch.tokens[i : i + 2], None, False)) for i in range(0, 8, 2))
            / 4
        )
    assert recs[0]["loss"] == pytest.approx(first, rel=1e-5)


def test_branch_needs_an_existing_source(tmp_path):
    r = recipe(tmp_path, init_from=str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match="init_from: no such run"):
        train(r, tmp_path / "run")
