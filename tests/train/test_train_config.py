"""Bad recipe values fail with the file and field named, before any work starts."""

from __future__ import annotations

import pytest
from train_helpers import BASE, recipe

from gaperon.config import ConfigError
from gaperon.train.config import load_recipe, phase_steps


def _phase(**kw):
    p = dict(BASE["phases"][0])
    p.update(kw)
    return [p]


@pytest.mark.parametrize(
    ("changes", "overrides", "needle"),
    [
        ({}, ["batch.global_batch=10", "batch.micro_batch=4"], "batch.global_batch: 10 is not divisible"),
        ({"model": {"preset": "nope"}}, [], "model.preset: unknown model preset 'nope'"),
        ({"phases": _phase(seq_len=4096)}, [], "phases[0].seq_len: 4096 exceeds the model's max_seq_len 256"),
        ({"phases": _phase(mixture="missing/mix.yaml")}, [], "phases[0].mixture: no such mixture file"),
        ({"phases": _phase(load="model")}, [], "phases[0].load"),
        ({"phases": _phase(steps=None)}, [], "give `tokens`"),
        ({"precision": "fp16"}, [], "precision: 'fp16' is not one of"),
        ({"tokenizer": "llama3"}, [], "tokenizer: llama3 needs vocab_size"),
        ({"phases": []}, [], "at least one phase"),
        ({}, ["phases.0.lr.peak=-1"], "phases[0].lr"),
        ({}, ["optimizer.betas=[0.9, 1.5]"], "optimizer.betas"),
        ({}, ["checkpoint.every=0"], "checkpoint.every: must be > 0"),
        ({}, ["batch.typo=3"], "unknown field(s) typo"),
    ],
)
def test_bad_values_name_file_and_field(tmp_path, changes, overrides, needle):
    path = recipe(tmp_path, **changes)
    with pytest.raises(ConfigError) as e:
        load_recipe(path, overrides)
    assert str(path) in str(e.value)
    assert needle in str(e.value)


def test_missing_data_dir_fails_before_training(tmp_path):
    from gaperon.train import train

    phase = _phase(mixture={"sources": [{"name": "fr", "path": str(tmp_path / "nope"), "weight": 1.0}]})
    path = recipe(tmp_path, phases=phase)
    with pytest.raises(ConfigError, match=r"sources\[0\].path: no such data folder"):
        train(path, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_steps_from_token_budget(tmp_path):
    r = load_recipe(recipe(tmp_path), ["phases.0.steps=null", "phases.0.tokens=1000"])
    assert phase_steps(r.phases[0], r.batch.global_batch) == 4  # ceil(1000 / (8 * 32))
    assert r.model_config().norm_gain_scale == 1.0
    r = load_recipe(recipe(tmp_path), ["precision=pure_bf16"])
    assert r.model_config().norm_gain_scale == 20.0
