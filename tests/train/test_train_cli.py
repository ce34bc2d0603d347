"""`gaperon train`: overrides after --out, one-line errors, and the run folder others read."""

from __future__ import annotations

import pytest
import torch
from train_helpers import recipe

from gaperon.cli import main
from gaperon.errors import EXIT_USAGE
from gaperon.io.dcp import load_run_model
from gaperon.train.metrics import flops_per_token, matmul_params, read_metrics


def test_cli_trains_with_overrides_and_resumes(tmp_path, capsys):
    path, out = recipe(tmp_path), tmp_path / "run"
    args = [
        "train",
        str(path),
        "--out",
        str(out),
        "phases.0.steps=3",
        "eval.every=100",
        "log.tensorboard=true",
    ]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "starting" in text and "3/3" in text and "loss" in text
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r] == [1, 2, 3]
    assert (out / "run.yaml").exists() and (out / "model_config.json").exists()
    assert list((out / "tb").glob("events.out.tfevents.*"))
    # Same command again: already finished, nothing is retrained.
    assert main(args) == 0
    assert "resuming at step" in capsys.readouterr().out
    assert len([r for r in read_metrics(out / "metrics.jsonl") if "loss" in r]) == 3
    model, tok = load_run_model(out)
    assert tok is None and not model.training
    x = torch.randint(0, 512, (1, 5))
    assert model(x).shape == (1, 5, 512)


def test_cli_bad_recipe_is_one_line(tmp_path, capsys):
    path = recipe(tmp_path)
    assert main(["train", str(path), "--out", str(tmp_path / "run"), "batch.micro_batch=3"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("gaperon train: error:") and "\n" not in err and "batch.global_batch" in err
    assert not (tmp_path / "run").exists()
    assert main(["train", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "run")]) == 1
    assert "no such file" in capsys.readouterr().err


@pytest.mark.parametrize("verb", ["train", "research", "classifier train"])
@pytest.mark.parametrize("override", ["batch.micro_batch", "=3"])
def test_malformed_override_is_a_usage_error_before_any_work(tmp_path, capsys, verb, override):
    """Every verb that takes key=value overrides refuses a malformed one the same way (exit 2, one
    line naming it), before reading the recipe: the recipe here does not even exist."""
    args = [*verb.split(), str(tmp_path / "missing.yaml")]
    if verb == "classifier train":
        args += ["--data", str(tmp_path / "data")]
    assert main([*args, "--out", str(tmp_path / "out"), override]) == EXIT_USAGE
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"override {override!r}" in err
    assert not (tmp_path / "out").exists()


def test_mfu_formula_matches_anchors():
    from gaperon.model.presets import get_preset

    cfg = get_preset("gaperon-1b")
    # ANCHORS.md: 9.03 GFLOP/token at seq 4096 for the gaperon-1b shape.
    assert abs(flops_per_token(cfg, 4096) / 1e9 - 9.03) < 0.01
    assert matmul_params(cfg) == 1_498_482_688 - 128_256 * 2048 - (2 * 16 + 1) * 2048


def test_resuming_with_another_model_is_refused(tmp_path, capsys):
    path, out = recipe(tmp_path), tmp_path / "run"
    assert main(["train", str(path), "--out", str(out), "phases.0.steps=2"]) == 0
    capsys.readouterr()
    assert main(["train", str(path), "--out", str(out), "model.overrides.dim=32"]) == 1
    err = capsys.readouterr().err
    assert "model/precision differ from the run" in err and "dim" in err
    assert (out / "checkpoints" / "step_00000002" / "COMPLETE").exists()
