"""The OLMo-2 switch (gaperon-24b's shape) <-> transformers' Olmo2ForCausalLM: same logits both ways."""

from __future__ import annotations

import json

import pytest
import torch
from io_helpers import random_llama
from transformers import AutoModelForCausalLM, Olmo2Config, Olmo2ForCausalLM

from gaperon.errors import ModelFormatError
from gaperon.io.hf import load_hf, save_hf
from gaperon.model import build, get_preset

OLMO2 = dict(qk_norm=True, post_norm=True, norm_eps=1e-6)


def tokens(vocab: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (2, 23), generator=torch.Generator().manual_seed(seed))


def _perturb_gains(model: torch.nn.Module) -> None:
    """Random gains, so a norm applied in the wrong place (or not at all) changes the logits."""
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)


@pytest.mark.parametrize(
    "shape",
    [
        dict(n_heads=4, n_kv_heads=2),
        dict(n_heads=4, n_kv_heads=2, attn_head_dim=8, norm_gain_scale=20.0),  # head dim != dim / heads
        dict(n_heads=4, n_kv_heads=4, tie_embeddings=True),
    ],
)
def test_ours_to_transformers_olmo2_same_logits(tmp_path, shape):
    model = random_llama("micro", rope_theta=500_000.0, **OLMO2, **shape)  # random gains already
    save_hf(model, None, tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert config["architectures"] == ["Olmo2ForCausalLM"] and config["model_type"] == "olmo2"
    theirs = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    assert type(theirs).__name__ == "Olmo2ForCausalLM"
    x = tokens(model.cfg.vocab_size)
    with torch.no_grad():
        diff = (model(x) - theirs(x).logits).abs().max().item()
    assert diff < 1e-5, diff


def test_transformers_olmo2_to_ours_same_logits(tmp_path):
    cfg = Olmo2Config(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-6,
        rope_theta=500_000.0,
        tie_word_embeddings=False,
    )
    torch.manual_seed(3)
    theirs = Olmo2ForCausalLM(cfg).eval()
    _perturb_gains(theirs)
    theirs.save_pretrained(tmp_path / "tf")
    ours, _ = load_hf(tmp_path / "tf", norm_gain_scale=20.0)
    assert ours.cfg.qk_norm and ours.cfg.post_norm and ours.cfg.architecture == "olmo2"
    x = tokens(300)
    with torch.no_grad():
        diff = (ours(x) - theirs(x).logits).abs().max().item()
    assert diff < 1e-5, diff
    # and back out: the re-exported folder is an OLMo-2 folder with the same function
    save_hf(ours, None, tmp_path / "again")
    again = AutoModelForCausalLM.from_pretrained(tmp_path / "again", dtype=torch.float32).eval()
    with torch.no_grad():
        assert (again(x).logits - theirs(x).logits).abs().max().item() < 1e-5


def test_olmo2_is_not_llama(tmp_path):
    """The switches change the function: a model with them is not a Llama with the same weights."""
    olmo = random_llama("micro", **OLMO2)
    names = {n for n, _ in olmo.named_parameters()}
    assert (
        "layers.0.self_attn.q_norm.weight" in names and "layers.0.post_feedforward_layernorm.weight" in names
    )
    assert "layers.0.input_layernorm.weight" not in names


def test_mixed_switches_cannot_be_exported(tmp_path):
    model = random_llama("micro", qk_norm=True)
    assert model.cfg.architecture == "custom"
    with pytest.raises(ModelFormatError, match="matches no Hugging Face architecture"):
        save_hf(model, None, tmp_path / "hf")


def test_gaperon_24b_preset_on_meta():
    cfg = get_preset("gaperon-24b")
    model = build(cfg, device="meta")
    assert (cfg.dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.ffn_dim) == (
        5120,
        40,
        32,
        8,
        128,
        32768,
    )
    assert cfg.architecture == "olmo2" and cfg.rope_theta == 500_000.0 and cfg.vocab_size == 128_256
    # embeddings + head + 40 x (attention + qk-norms + MLP + 2 norms) + final norm, by hand
    d, h, kv, f, v = 5120, 32 * 128, 8 * 128, 32768, 128_256
    per_layer = d * h + 2 * d * kv + h * d + h + kv + 3 * d * f + 2 * d
    assert model.num_params() == 2 * v * d + 40 * per_layer + d
