"""Turn next-token logits into tokens: greedy, temperature, top-k, top-p.

Every request owns its own seeded `torch.Generator` and draws exactly one uniform number per
sampled token from it, so what a request generates depends on its seed and its logits only,
never on which other requests share its batch.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Sampling:
    """What a caller (CLI verb, chat session) asks of the sampler for one reply."""

    max_new_tokens: int = 128
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None


@dataclass(frozen=True)
class SamplingParams:
    """How to pick the next token. temperature 0 means greedy (top_k/top_p are then ignored)."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t < 0:
            raise ValueError(f"temperature must be a finite number >= 0, got {t!r}")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be an integer >= 0 (0 = off), got {self.top_k!r}")
        p = self.top_p
        if isinstance(p, bool) or not isinstance(p, int | float) or not (0 < p <= 1):
            raise ValueError(f"top_p must be in (0, 1], got {p!r}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


def make_generator(seed: int | None, device: torch.device | str) -> torch.Generator:
    """A generator for one request; an unseeded request gets fresh OS entropy."""
    gen = torch.Generator(device=device)
    gen.manual_seed(seed if seed is not None else secrets.randbits(63))
    return gen


def filtered_probs(logits: Tensor, params: Sequence[SamplingParams]) -> Tensor:
    """Per-row next-token distribution (B, V) in fp32 after temperature, top-k and top-p.

    A greedy row is a one-hot on its argmax: that makes speculative decoding's acceptance test
    reduce exactly to "draft token == target argmax".
    """
    logits = logits.float()
    b, v = logits.shape
    dev = logits.device
    greedy = torch.tensor([p.greedy for p in params], device=dev)
    temp = torch.tensor([p.temperature if not p.greedy else 1.0 for p in params], device=dev)
    x = logits / temp[:, None]
    if any(not p.greedy and (0 < p.top_k < v or p.top_p < 1) for p in params):
        x = _top_k_top_p(x, params)
    probs = torch.softmax(x, dim=-1)
    if bool(greedy.any()):
        onehot = torch.zeros_like(probs).scatter_(-1, logits.argmax(-1, keepdim=True), 1.0)
        probs = torch.where(greedy[:, None], onehot, probs)
    return probs


def _top_k_top_p(x: Tensor, params: Sequence[SamplingParams]) -> Tensor:
    """Mask (to -inf) what top-k and top-p exclude; each row uses its own k and p."""
    b, v = x.shape
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


def sample(logits: Tensor, params: Sequence[SamplingParams], generators: Sequence[torch.Generator]) -> Tensor:
    """Next token per row (B,) from logits (B, V). Greedy rows ignore their draw."""
    if all(p.greedy for p in params):
        return logits.argmax(-1)
    probs = filtered_probs(logits, params)
    sampled = sample_from_probs(probs, generators)
    greedy = torch.tensor([p.greedy for p in params], device=logits.device)
    return torch.where(greedy, logits.argmax(-1), sampled)
