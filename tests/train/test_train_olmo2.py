"""OLMo-2-shaped training (gaperon-24b's switches on the micro model): pure bf16 trains, the run
exports as an Olmo2ForCausalLM folder that transformers computes the same function from."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from train_helpers import losses, recipe

from gaperon.io.dcp import load_run_model
from gaperon.io.hf import save_hf
from gaperon.train import load_recipe, train

ROOT = Path(__file__).resolve().parents[2]


def test_olmo2_micro_trains_in_pure_bf16_and_exports(tmp_path):
    r = recipe(
        tmp_path,
        model={"preset": "micro", "overrides": {"qk_norm": True, "post_norm": True}},
        precision="pure_bf16",
    )
    train(r, tmp_path / "run")
    got = [loss for _, loss in losses(tmp_path / "run")]
    assert got and all(math.isfinite(x) for x in got) and got[-1] < got[0]
    model, _ = load_run_model(tmp_path / "run", dtype=torch.float32)
    assert model.cfg.architecture == "olmo2" and model.cfg.norm_gain_scale == 20.0
    save_hf(model, None, tmp_path / "hf", dtype="fp32")
    from transformers import AutoModelForCausalLM

    theirs = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    assert type(theirs).__name__ == "Olmo2ForCausalLM"
    x = torch.randint(0, model.cfg.vocab_size, (2, 17), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (model(x) - theirs(x).logits).abs().max().item() < 1e-4


def test_gaperon_24b_recipe_loads():
    r = load_recipe(ROOT / "recipes" / "gaperon-24b.yaml")
    cfg = r.model_config()
    assert cfg.architecture == "olmo2" and cfg.head_dim == 128 and cfg.norm_gain_scale == 20.0
