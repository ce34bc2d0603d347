"""Our model <-> transformers' LlamaForCausalLM through HF folders: same logits both ways."""

from __future__ import annotations

import json

import pytest
import torch
from io_helpers import random_llama
from safetensors import safe_open
from transformers import LlamaConfig, LlamaForCausalLM

from gaperon.io.hf import load_hf, save_hf

SHAPES = {
    "gqa-untied": dict(n_heads=4, n_kv_heads=2, tie_embeddings=False),
    "mha-tied": dict(n_heads=4, n_kv_heads=4, tie_embeddings=True),
    "gqa-untied-gain20": dict(n_heads=4, n_kv_heads=1, norm_gain_scale=20.0),
    "gqa-tied-gain20": dict(n_heads=8, n_kv_heads=2, tie_embeddings=True, norm_gain_scale=20.0),
    "head-dim-not-dim-over-heads": dict(n_heads=4, n_kv_heads=2, attn_head_dim=32),
}


def tokens(vocab: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, vocab, (2, 23), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("shape", SHAPES)
def test_ours_to_transformers_same_logits(tmp_path, shape):
    model = random_llama("micro", rope_theta=500_000.0, **SHAPES[shape])
    save_hf(model, None, tmp_path / "hf")
    theirs = LlamaForCausalLM.from_pretrained(tmp_path / "hf", dtype=torch.float32).eval()
    x = tokens(model.cfg.vocab_size)
    with torch.no_grad():
        diff = (model(x) - theirs(x).logits).abs().max().item()
    assert diff < 1e-5
    assert theirs.config.tie_word_embeddings == model.cfg.tie_embeddings
    assert theirs.config.num_key_value_heads == model.cfg.n_kv_heads


@pytest.mark.parametrize("tie", [False, True])
@pytest.mark.parametrize("scale", [1.0, 20.0])
def test_transformers_to_ours_same_logits(tmp_path, tie, scale):
    cfg = LlamaConfig(
        vocab_size=300,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        rms_norm_eps=1e-6,
        tie_word_embeddings=tie,
        rope_theta=10_000.0,
    )
    torch.manual_seed(3)
    theirs = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    theirs.save_pretrained(tmp_path / "tf")
    ours, tok = load_hf(tmp_path / "tf", norm_gain_scale=scale)
    assert tok is None
    assert ours.cfg.tie_embeddings == tie and ours.cfg.n_kv_heads == 2 and ours.cfg.norm_gain_scale == scale
    assert (ours.lm_head.weight is ours.embed_tokens.weight) == tie
    # stored gains are true gains divided by the scale
    true = theirs.model.norm.weight.detach()
    assert torch.allclose(ours.norm.weight.detach() * scale, true)
    x = tokens(300)
    with torch.no_grad():
        diff = (ours(x) - theirs(x).logits).abs().max().item()
    assert diff < 1e-5


def test_sharded_round_trip_and_true_gains(tmp_path):
    model = random_llama("micro", norm_gain_scale=20.0)
    out = save_hf(model, None, tmp_path / "hf", max_shard_size="50KB")
    index = json.loads((out / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    assert len(files) > 2 and all((out / f).is_file() for f in files)
    assert not (out / "model.safetensors").exists()
    file = out / index["weight_map"]["model.norm.weight"]
    with safe_open(str(file), "pt") as f:
        stored = f.get_tensor("model.norm.weight")
    assert torch.allclose(stored, model.norm.weight.detach() * 20.0)  # the file holds the true gain
    back, _ = load_hf(out, norm_gain_scale=20.0)
    for (name, a), (name_b, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert name == name_b and torch.equal(a, b), name
    assert not list(tmp_path.glob(".hf.tmp-*"))  # the temporary folder is gone


def test_single_file_when_small_and_tied_has_no_lm_head(tmp_path):
    model = random_llama("micro", tie_embeddings=True)
    out = save_hf(model, None, tmp_path / "hf")
    assert (out / "model.safetensors").is_file() and not (out / "model.safetensors.index.json").exists()
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "lm_head.weight" not in keys and "model.embed_tokens.weight" in keys
    assert all(k.startswith("model.") for k in keys)
    config = json.loads((out / "config.json").read_text())
    assert config["tie_word_embeddings"] is True
    assert config["architectures"] == ["LlamaForCausalLM"] and config["model_type"] == "llama"
    assert (
        config["rope_scaling"] is None and config["attention_bias"] is False and config["mlp_bias"] is False
    )
    assert config["head_dim"] == model.cfg.head_dim and config["hidden_act"] == "silu"


@pytest.mark.parametrize("dtype", ["bf16", "fp16"])
def test_half_precision_export(tmp_path, dtype):
    model = random_llama("micro")
    out = save_hf(model, None, tmp_path / "hf", dtype=dtype)
    want = {"bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    config = json.loads((out / "config.json").read_text())
    assert config["torch_dtype"] == str(want).removeprefix("torch.")
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert f.get_tensor("model.layers.0.mlp.up_proj.weight").dtype == want
    back, _ = load_hf(out)  # dtype None = the folder's dtype
    assert next(back.parameters()).dtype == want
    assert back.rope_cos.dtype == torch.float32  # RoPE tables stay fp32
    forced, _ = load_hf(out, dtype="fp32")
    assert torch.equal(forced.lm_head.weight, model.lm_head.weight.to(want).float())


def test_existing_folder_replaced_atomically(tmp_path):
    out = tmp_path / "hf"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    save_hf(random_llama("micro"), None, out)
    assert not (out / "stale.txt").exists() and (out / "config.json").is_file()


def test_tokenizer_and_generation_config(tmp_path):
    from gaperon.tokenizer import llama3_tokenizer

    tok = llama3_tokenizer()
    model = random_llama("tiny")
    out = save_hf(model, tok, tmp_path / "hf", dtype="bf16")
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["bos_token_id"] == 128000
    assert gen["eos_token_id"] == [128001, 128008, 128009]  # eos, then eom/eot: a chat turn ends generation
    assert gen["do_sample"] is True and 0 < gen["temperature"] <= 1 and 0 < gen["top_p"] <= 1
    config = json.loads((out / "config.json").read_text())
    assert config["bos_token_id"] == 128000 and config["eos_token_id"] == 128001
    _, back = load_hf(out)
    assert back is not None and back.identity() == tok.identity() and back.stop_ids == tok.stop_ids
    assert back.chat_template == tok.chat_template


def test_transformers_4x_style_folder(tmp_path):
    """A folder as the published Gaperon checkpoints are: transformers-4.x config keys, bf16, no head_dim."""
    model = random_llama("micro", rope_theta=500_000.0)
    out = save_hf(model, None, tmp_path / "hf", dtype="bf16")
    config = {
        "_name_or_path": "almanach/Gaperon-1125-8B-SFT",
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": [2, 3],
        "hidden_act": "silu",
        "hidden_size": 64,
        "initializer_range": 0.02,
        "intermediate_size": 192,
        "max_position_embeddings": 256,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": 4,
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-05,
        "rope_scaling": None,
        "rope_theta": 500000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.46.0",
        "use_cache": True,
        "vocab_size": 512,
    }
    (out / "config.json").write_text(json.dumps(config))
    back, _ = load_hf(out)
    assert back.cfg.rope_theta == 500_000.0 and back.cfg.eos_token_id == [2, 3]
    assert back.lm_head.weight.dtype == torch.bfloat16
    x = tokens(512)
    with torch.no_grad():
        for p in model.parameters():  # the weights as the bf16 folder holds them (RoPE tables stay fp32)
            p.copy_(p.bfloat16().float())
        want = model(x)
        got = load_hf(out, dtype="fp32")[0](x)
    assert (got - want).abs().max().item() < 1e-5
