"""Cross-entropy through the LM head without materialising all logits at once.

For a 128k vocabulary, the fp32 logits of a 16k-token micro-batch are 8 GB. We walk the tokens in
chunks; each chunk's logits are recomputed in backward (activation checkpointing), so at most one
chunk of logits is alive at any time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint


def _chunk_loss_sum(h: Tensor, weight: Tensor, labels: Tensor, ignore_index: int) -> Tensor:
    logits = (h @ weight.t()).float()
    return F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum")


def linear_cross_entropy(
    hidden: Tensor, weight: Tensor, labels: Tensor, ignore_index: int = -100, chunk_tokens: int = 4096
) -> Tensor:
    """Mean token cross-entropy of `hidden @ weight.T` against `labels` (ignored ids excluded).

    hidden: (..., D); weight: (V, D); labels: (...). Logits are upcast to fp32 per chunk.
    """
    h = hidden.reshape(-1, hidden.shape[-1])
    y = labels.reshape(-1)
    n_valid = (y != ignore_index).sum()
    total = h.new_zeros((), dtype=torch.float32)
    for start in range(0, h.shape[0], chunk_tokens):
        hc, yc = h[start : start + chunk_tokens], y[start : start + chunk_tokens]
        if torch.is_grad_enabled() and (hc.requires_grad or weight.requires_grad):
            total = total + checkpoint(_chunk_loss_sum, hc, weight, yc, ignore_index, use_reentrant=False)
        else:
            total = total + _chunk_loss_sum(hc, weight, yc, ignore_index)
    return total / n_valid.clamp(min=1)
