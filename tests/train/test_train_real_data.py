"""The trainer on real token folders (gaperon tokenize + the mixture sampler), llama3 tokenizer."""

from __future__ import annotations

import json

import pytest
from train_helpers import recipe

from gaperon.io.dcp import load_run_model
from gaperon.train import train
from gaperon.train.metrics import read_metrics

FR = "Le chat dort sur le canapé pendant que la pluie tombe doucement sur Paris. "
EN = "The cat sleeps on the sofa while the rain falls gently over London. "


@pytest.fixture(scope="module")
def token_dirs(tmp_path_factory):
    from gaperon.data.pack import TokenizeOptions, tokenize

    tmp = tmp_path_factory.mktemp("tokens")
    out = {}
    for lang, text in (("fr", FR), ("en", EN)):
        src = tmp / f"{lang}.jsonl"
        src.write_text("".join(json.dumps({"text": text * (3 + i % 4)}) + "\n" for i in range(60)))
        tokenize([src], tmp / lang, TokenizeOptions(val_fraction=0.2), progress=False)
        out[lang] = tmp / lang
    return out


@pytest.mark.slow
def test_two_phases_on_tokenized_folders(tmp_path, token_dirs):
    mix = tmp_path / "mix.yaml"
    mix.write_text(
        json.dumps(
            {
                "name": "mix",
                "seq_len": 999,
                "tokens": 1,
                "sources": [
                    {"name": k, "path": str(v), "weight": w} for (k, v), w in zip(token_dirs.items(), (1, 3))
                ],
            }
        )
    )
    phases = [
        {"name": "one", "mixture": "mix.yaml", "seq_len": 32, "steps": 3, "seed": 1, "lr": {"peak": 3e-3}},
        {"name": "two", "mixture": str(mix), "seq_len": 64, "steps": 2, "seed": 2, "load": "cooldown"},
    ]
    r = recipe(
        tmp_path,
        phases=phases,
        tokenizer="llama3",
        doc_masking=True,
        model={"preset": "micro", "overrides": {"vocab_size": 128256}},
        batch={"global_batch": 4, "micro_batch": 2},
        eval={"every": 3, "sequences": 4, "batch_size": 2},
        checkpoint={"every": 1, "keep_last": 5},
    )
    res = train(r, tmp_path / "run")
    assert res.status == "complete" and res.state.tokens_seen == 3 * 4 * 32 + 2 * 4 * 64
    recs = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [x["phase"] for x in recs if "loss" in x] == ["one"] * 3 + ["two"] * 2
    assert len([x for x in recs if "val_loss" in x]) == 2
    meta = json.loads((tmp_path / "run" / "checkpoints" / "step_00000005" / "meta.json").read_text())
    assert meta["sampler"]["phase"] == "two" and meta["sampler"]["seed"] == 2
    assert meta["sampler"]["step"] == 2
    # Mid-phase: the next step's batch was already read (prefetch), yet the state is the step's own.
    mid = json.loads((tmp_path / "run" / "checkpoints" / "step_00000004" / "meta.json").read_text())
    assert mid["state"]["phase_step"] == 1 and mid["sampler"]["step"] == 1
    model, tok = load_run_model(tmp_path / "run")
    from gaperon.tokenizer import load_tokenizer

    assert tok is not None and tok.identity() == load_tokenizer("llama3").identity()
    assert model.cfg.vocab_size == 128256
