"""AdamW groups: no decay on embeddings and norm gains; the LM head is decayed (as Gapetron)."""

from __future__ import annotations

import torch

from gaperon.model.presets import build, get_preset
from gaperon.train.config import OptimSpec, ParallelSpec
from gaperon.train.optim import build_optimizer, param_groups
from gaperon.train.parallelize import parallelize
from gaperon.train.precision import PrecisionPolicy


def _names(model, group):
    ids = {id(p) for p in group["params"]}
    return {n for n, p in model.named_parameters() if id(p) in ids}


def test_groups_and_hyperparameters():
    model = build(get_preset("micro"))
    decay, no_decay = param_groups(model, OptimSpec())
    dn, nn_ = _names(model, decay), _names(model, no_decay)
    assert "lm_head.weight" in dn and "layers.0.mlp.down_proj.weight" in dn
    assert "embed_tokens.weight" in nn_ and "norm.weight" in nn_ and "layers.1.input_layernorm.weight" in nn_
    assert not dn & nn_ and len(dn | nn_) == len(list(model.parameters()))
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    off = param_groups(model, OptimSpec(decay_lm_head=False))
    assert "lm_head.weight" in _names(model, off[1])
    opt = build_optimizer(model, OptimSpec(), lr=1e-3)
    assert opt.defaults["betas"] == (0.9, 0.95) and opt.defaults["eps"] == 1e-8


def test_wrapped_names_are_recognised():
    model = build(get_preset("micro"))
    parallelize(model, ParallelSpec(activation_checkpointing=True), PrecisionPolicy.from_name("fp32"))
    assert any("_checkpoint_wrapped_module" in n for n, _ in model.named_parameters())
    _, no_decay = param_groups(model, OptimSpec())
    assert len(no_decay["params"]) == 1 + 2 * 2 + 1  # embeddings, 2 gains x 2 layers, final norm


def test_pure_bf16_keeps_bf16_moments():
    model = build(get_preset("micro", norm_gain_scale=20.0), dtype=torch.bfloat16)
    opt = build_optimizer(model, OptimSpec(), lr=1e-3)
    x = torch.randint(0, 512, (2, 9))
    model(x[:, :-1], labels=x[:, 1:]).backward()
    opt.step()
    st = opt.state[model.lm_head.weight]
    assert model.lm_head.weight.grad.dtype == torch.bfloat16
    assert st["exp_avg"].dtype == torch.bfloat16 and st["exp_avg_sq"].dtype == torch.bfloat16
