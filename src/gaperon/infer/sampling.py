"""Turn next-token logits into tokens: penalties, logit bias, greedy, temperature, top-k, top-p.

`Sampling` (defined in options.py, re-exported here) is the one description of how to generate a
reply: the CLI, chat, `generate`, the engine and the server all build it and pass it down unchanged.

Every request owns its own seeded `torch.Generator` and draws exactly one uniform number per
sampled token from it, so what a request generates depends on its seed and its logits only,
never on which other requests share its batch.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import torch
from torch import Tensor

from gaperon.infer.options import Sampling

__all__ = [
    "Sampling",
    "adjust_logits",
    "filtered_probs",
    "make_generator",
    "sample",
    "sample_from_probs",
    "token_logprobs",
]


def make_generator(seed: int | None, device: torch.device | str) -> torch.Generator:
    """A generator for one request; an unseeded request gets fresh OS entropy."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed if seed is not None else secrets.randbits(63))
    return gen


def adjust_logits(
    logits: Tensor,
    params: Sequence[Sampling],
    prompts: Sequence[Sequence[int]],
    outputs: Sequence[Sequence[int]],
) -> Tensor:
    """Penalties and logit bias, per row (a no-op without them). Returns fp32 logits (B, V)."""
    if not any(p.penalized or p.logit_bias for p in params):
        return logits
    x = logits.float().clone()
    v = x.shape[-1]
    for i, p in enumerate(params):
        if p.repetition_penalty != 1:
            seen = torch.tensor(
                sorted({t for t in [*prompts[i], *outputs[i]] if 0 <= t < v}), dtype=torch.long
            )
            if len(seen):
                seen = seen.to(x.device)
                row = x[i, seen]
                x[i, seen] = torch.where(row > 0, row / p.repetition_penalty, row * p.repetition_penalty)
        if (p.presence_penalty or p.frequency_penalty) and outputs[i]:
            counts = torch.bincount(torch.tensor(list(outputs[i]), dtype=torch.long), minlength=v)[:v]
            counts = counts.to(x.device, torch.float32)
            x[i] -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0).float()
        for token, bias in p.logit_bias:
            if 0 <= token < v:
                x[i, token] += bias
    return x


def filtered_probs(logits: Tensor, params: Sequence[Sampling]) -> Tensor:
    """Per-row next-token distribution (B, V) in fp32 after temperature, top-k and top-p.

    A greedy row is a one-hot on its argmax: that makes speculative decoding's acceptance test
    reduce exactly to "draft token == target argmax".
    """
    logits = logits.float()
    dev = logits.device
    greedy = torch.tensor([p.greedy for p in params], device=dev)
    temp = torch.tensor([p.temperature if not p.greedy else 1.0 for p in params], device=dev)
    x = logits / temp[:, None]
    v = logits.shape[-1]
    if any(not p.greedy and (0 < p.top_k < v or p.top_p < 1) for p in params):
        x = _top_k_top_p(x, params)
    probs = torch.softmax(x, dim=-1)
    if bool(greedy.any()):
        onehot = torch.zeros_like(probs).scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
        probs = torch.where(greedy[:, None], onehot, probs)
    return probs


def _top_k_top_p(x: Tensor, params: Sequence[Sampling]) -> Tensor:
    """Mask (to -inf) what top-k and top-p exclude; each row uses its own k and p."""
    v = x.shape[-1]
    dev = x.device
    k = torch.tensor([p.top_k if 0 < p.top_k < v else v for p in params], device=dev)
    top_p = torch.tensor([float(p.top_p) for p in params], device=dev)
    sorted_x, order = x.sort(dim=-1, descending=True)
    ranks = torch.arange(v, device=dev)
    remove = ranks[None, :] >= k[:, None]
    sorted_x = sorted_x.masked_fill(remove, float("-inf"))
    sp = torch.softmax(sorted_x, dim=-1)
    # Keep the smallest prefix whose mass reaches top_p (the first token is always kept).
    remove |= (sp.cumsum(-1) - sp) >= top_p[:, None]
    sorted_x = sorted_x.masked_fill(remove, float("-inf"))
    return torch.full_like(x, float("-inf")).scatter(-1, order, sorted_x)


def sample_from_probs(probs: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
    """Inverse-CDF sampling: one uniform draw per row, from that row's own generator."""
    u = torch.stack([torch.rand((), generator=g, device=probs.device) for g in generators])
    cdf = probs.cumsum(-1)
    target = (u * cdf[:, -1]).unsqueeze(-1)
    idx = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    return idx.clamp_(max=probs.shape[-1] - 1)


def sample(logits: Tensor, params: Sequence[Sampling], generators: Sequence[torch.Generator]) -> Tensor:
    """Next token per row (B,) from logits (B, V). Greedy rows ignore their draw."""
    if all(p.greedy for p in params):
        return logits.argmax(-1)
    probs = filtered_probs(logits, params)
    sampled = sample_from_probs(probs, generators)
    greedy = torch.tensor([p.greedy for p in params], device=logits.device)
    return torch.where(greedy, logits.argmax(-1), sampled)


def token_logprobs(logits: Tensor, tokens: Tensor, top: int) -> list[tuple[float, list[tuple[int, float]]]]:
    """Per row: log-probability of `tokens[row]` under the model's (unfiltered) distribution, and the
    `top` most likely ids with theirs. Reported from the raw logits, as vLLM does by default."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    chosen = logp.gather(-1, tokens[:, None].to(logp.device))[:, 0].tolist()
    if top > 0:
        vals, ids = logp.topk(min(top, logp.shape[-1]), dim=-1)
        tops = [list(zip(i, v)) for i, v in zip(ids.tolist(), vals.tolist())]
    else:
        tops = [[] for _ in chosen]
    return list(zip(chosen, tops))
