"""Headless pretraining (CWT) then the conversion run that adds a fresh LM head (Gapetron's
cooldown from a headless checkpoint); the converted model exports and generates."""

from __future__ import annotations

import json
import math

import torch
from train_helpers import losses, recipe

from gaperon.io.dcp import load_run_model
from gaperon.io.hf import load_hf, save_hf
from gaperon.train import train


def test_headless_run_converts_to_an_lm_head_and_generates(tmp_path):
    headless = recipe(tmp_path, "headless.yaml", model={"preset": "micro", "head": "cwt"})
    train(headless, tmp_path / "headless")
    first = [loss for _, loss in losses(tmp_path / "headless")]
    assert all(math.isfinite(x) for x in first) and first[-1] < first[0]
    cfg = json.loads((tmp_path / "headless" / "model_config.json").read_text())
    assert cfg["head"] == "cwt" and cfg["tie_embeddings"] is True
    body, _ = load_run_model(tmp_path / "headless")
    # A tied run loads tied (materialising a meta-built model used to untie them: twice the params).
    assert body.lm_head.weight is body.embed_tokens.weight
    assert body.num_params() == sum(p.numel() for n, p in body.named_parameters() if n != "lm_head.weight")

    convert = recipe(
        tmp_path,
        "convert.yaml",
        init_from=str(tmp_path / "headless"),
        phases=[
            {
                "name": "add-head",
                "mixture": "synthetic",
                "seq_len": 32,
                "steps": 4,
                "seed": 3,
                "load": "cooldown",
                "lr": {"peak": 3.0e-3},
            }
        ],
    )
    train(convert, tmp_path / "converted")
    second = [loss for _, loss in losses(tmp_path / "converted")]
    assert all(math.isfinite(x) for x in second)
    # A fresh head starts near uniform: cross-entropy ~ log(vocab), then falls.
    assert abs(second[0] - math.log(512)) < 1.0 and second[-1] < second[0]
    model, _ = load_run_model(tmp_path / "converted")
    assert model.cfg.head == "lm" and model.lm_head.weight is not model.embed_tokens.weight
    assert not torch.equal(model.lm_head.weight, body.embed_tokens.weight)

    save_hf(model, None, tmp_path / "hf", dtype="fp32")
    from transformers import AutoModelForCausalLM

    theirs = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    ours, _ = load_hf(tmp_path / "hf")
    got = greedy(lambda x: ours(x), [5, 17, 42, 7], 6)
    assert got == greedy(lambda x: theirs(x).logits, [5, 17, 42, 7], 6)


@torch.no_grad()
def greedy(logits_of, prompt: list[int], n: int) -> list[int]:
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(logits_of(torch.tensor([ids]))[0, -1].argmax()))
    return ids[len(prompt) :]
