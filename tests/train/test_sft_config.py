"""SFT recipes: the mistakes that would silently train on the wrong tokens are refused up front."""

from __future__ import annotations

import pytest

from gaperon.errors import ConfigError
from gaperon.train.config import load_recipe, recipe_from_dict


def _sft(**changes):
    r = {
        "model": {"preset": "micro"},
        "tokenizer": "llama3",
        "doc_masking": True,
        "phases": [{"name": "s", "seq_len": 64, "steps": 2, "sft": {"sources": [{"path": "x.jsonl"}]}}],
    }
    r.update(changes)
    return r


def test_sft_phase_checks():
    with pytest.raises(ConfigError, match="llama3 needs vocab_size"):
        recipe_from_dict(_sft())
    ok = _sft(model={"preset": "tiny"})
    assert recipe_from_dict(ok).phases[0].sft.truncation == "right"
    with pytest.raises(ConfigError, match="doc_masking: .*attend to each other"):
        recipe_from_dict({**ok, "doc_masking": False})
    both = _sft(model={"preset": "tiny"})
    both["phases"][0]["mixture"] = "synthetic"
    with pytest.raises(ConfigError, match="not both"):
        recipe_from_dict(both)
    with pytest.raises(ConfigError, match="SFT phases render conversations"):
        recipe_from_dict({**ok, "tokenizer": None})
    with pytest.raises(ConfigError, match="'init_from' needs"):
        recipe_from_dict({**ok, "tokenizer": "init_from"})
    bad = _sft(model={"preset": "tiny"})
    bad["phases"][0]["sft"]["truncation"] = "left"
    with pytest.raises(ConfigError, match=r"phases\[0\]\.sft\.truncation"):
        recipe_from_dict(bad)


def test_the_8b_sft_recipe_carries_the_card(tmp_path, monkeypatch):
    from pathlib import Path

    recipe = Path(__file__).parents[2] / "recipes" / "gaperon-8b-sft.yaml"
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "8b").mkdir(parents=True)  # the Black Pepper run it starts from
    r = load_recipe(recipe)
    p = r.phases[0]
    assert (p.lr.peak, p.lr.schedule, p.lr.warmup_steps, p.steps) == (3e-5, "cosine", 736, 7364)
    assert r.optimizer.betas == (0.9, 0.999) and r.optimizer.eps == 1e-8
    assert r.batch.global_batch == 64 and r.doc_masking and p.sft is not None
