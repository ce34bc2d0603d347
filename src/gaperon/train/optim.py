"""AdamW as Gaperon trains with it (SPEC §4).

β (0.9, 0.95), ε 1e-8, weight decay 0.1 on the matrices only: the input embeddings and every
RMSNorm gain are not decayed. The LM head *is* decayed (`decay_lm_head: true`), as in Gapetron,
which puts every parameter except the embeddings and gains in the decayed group. Optimizer states
take the parameters' dtype, so pure-bf16 training keeps bf16 moments.
"""

from __future__ import annotations

import torch
from torch import nn

from gaperon.model.llama import is_norm_gain
from gaperon.train.config import OptimSpec


def param_groups(model: nn.Module, spec: OptimSpec) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        clean = _canonical(name)
        is_gain = is_norm_gain(clean)
        is_embed = clean.startswith("embed_tokens.")
        is_head = clean.startswith("lm_head.")
        if is_gain or is_embed or (is_head and not spec.decay_lm_head):
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "weight_decay": spec.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def build_optimizer(model: nn.Module, spec: OptimSpec, lr: float) -> torch.optim.Optimizer:
    """Fused AdamW on GPU, foreach on CPU (both deterministic for a fixed setup)."""
    on_cuda = next(model.parameters()).device.type == "cuda"
    kwargs = {"fused": True} if on_cuda else {"foreach": True}
    return torch.optim.AdamW(
        param_groups(model, spec), lr=lr, betas=(spec.betas[0], spec.betas[1]), eps=spec.eps, **kwargs
    )


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


def _canonical(name: str) -> str:
    """Drop the wrapper prefixes that compile/activation checkpointing add to parameter names."""
    for junk in ("_orig_mod.", "_checkpoint_wrapped_module.", "_fsdp_wrapped_module."):
        name = name.replace(junk, "")
    return name
