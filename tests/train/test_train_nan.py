"""A non-finite loss skips the update; repeated ones stop the run, the last good checkpoint intact."""

from __future__ import annotations

import pytest
import torch
from train_helpers import recipe

import gaperon.train.loop as loop
from gaperon.io.run_format import find_latest
from gaperon.train import TrainingDiverged, train
from gaperon.train.metrics import read_metrics


def _poison(monkeypatch, bad_steps):
    real = loop.micro_loss
    calls = {"n": 0}

    def fake(model, tokens, doc_ids, doc_masking, *rest):
        loss = real(model, tokens, doc_ids, doc_masking, *rest)
        if model.training:
            calls["n"] += 1
            step = (calls["n"] - 1) // 4 + 1  # 4 micro-batches per step
            if step in bad_steps:
                return loss * float("nan")
        return loss

    monkeypatch.setattr(loop, "micro_loss", fake)


def test_nan_step_is_skipped(tmp_path, monkeypatch, capsys):
    _poison(monkeypatch, {3})
    out = tmp_path / "run"
    res = train(recipe(tmp_path, checkpoint={"every": 2, "keep_last": 5}), out)
    assert res.status == "complete"
    recs = {r["step"]: r for r in read_metrics(out / "metrics.jsonl") if "skipped" in r}
    assert recs[3]["skipped"] and recs[3]["loss"] is None
    assert not recs[4]["skipped"] and recs[4]["loss"] == pytest.approx(recs[4]["loss"])
    assert "non-finite loss or gradient, update skipped (1/5 in a row)" in capsys.readouterr().out
    # No update happened at step 3: the optimizer made 5 updates in 6 steps.
    from gaperon.model.presets import build, get_preset
    from gaperon.train.checkpoint import load
    from gaperon.train.config import OptimSpec
    from gaperon.train.optim import build_optimizer

    model = build(get_preset("micro"))
    opt = build_optimizer(model, OptimSpec(), lr=0.0)
    load(out / "checkpoints" / "step_00000006", model, opt)
    assert float(opt.state[model.lm_head.weight]["step"]) == 5
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_repeated_nans_stop_the_run(tmp_path, monkeypatch):
    _poison(monkeypatch, {3, 4, 5, 6})
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="3 consecutive non-finite steps"):
        train(recipe(tmp_path, checkpoint={"every": 2, "keep_last": 5}, max_nan_skips=3), out)
    # Step 4 was skipped too: its checkpoint holds step 2's weights, finite; nothing was written after.
    assert find_latest(out)[0].name == "step_00000004"
    from gaperon.io.dcp import load_run_model

    w2, _ = load_run_model(out / "checkpoints" / "step_00000002")
    w4, _ = load_run_model(out / "checkpoints" / "step_00000004")
    for a, b in zip(w2.parameters(), w4.parameters()):
        assert torch.equal(a, b) and torch.isfinite(a).all()
