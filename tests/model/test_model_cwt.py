"""Contrastive Weight Tying (headless training): the chunked loss equals a direct dense computation."""

from __future__ import annotations

import pytest
import torch

from gaperon.model import build, get_preset
from gaperon.model.loss import cwt_loss


def dense_cwt(h: torch.Tensor, e: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """The definition, written out: softmax over every valid target embedding of the batch."""
    h, e, v = h.reshape(-1, h.shape[-1]), e.reshape(-1, e.shape[-1]), valid.reshape(-1)
    h, e = h[v], e[v]
    sim = h @ e.t()
    return -torch.log(torch.exp(torch.diagonal(sim)) / torch.exp(sim).sum(-1)).mean()


@pytest.mark.parametrize("max_block", [1 << 26, 37, 1])  # one chunk, uneven chunks, one row per chunk
def test_cwt_loss_and_gradients_equal_dense(max_block):
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(3, 11, 16, generator=gen, dtype=torch.float64).requires_grad_()
    e = torch.randn(3, 11, 16, generator=gen, dtype=torch.float64).requires_grad_()
    valid = torch.rand(3, 11, generator=gen) > 0.2
    ours = cwt_loss(h, e, valid, max_block=max_block)
    ref = dense_cwt(h, e, valid)
    g_ours = torch.autograd.grad(ours, (h, e))
    g_ref = torch.autograd.grad(ref, (h, e))
    assert abs(ours.item() - ref.item()) < 1e-10
    for a, b in zip(g_ours, g_ref):
        assert (a - b).abs().max().item() < 1e-10


def test_cwt_repeated_tokens_are_separate_negatives():
    """Two positions with the same target: each sees the other's (identical) embedding as a column."""
    h = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    e = torch.tensor([[2.0, 0.0], [2.0, 0.0]])
    loss = cwt_loss(h, e, torch.tensor([True, True]))
    assert abs(loss.item() - torch.log(torch.tensor(2.0)).item()) < 1e-6


def test_headless_model_trains_on_cwt_and_reads_out_through_embeddings():
    cfg = get_preset("micro", head="cwt", tie_embeddings=True)
    torch.manual_seed(0)
    model = build(cfg)
    assert model.lm_head.weight is model.embed_tokens.weight
    x = torch.randint(0, cfg.vocab_size, (2, 9))
    loss = model(x[:, :-1], labels=x[:, 1:])
    h = model.hidden_states(x[:, :-1])
    ref = dense_cwt(h.double(), model.embed_tokens(x[:, 1:]).double(), torch.ones(2, 8, dtype=torch.bool))
    assert abs(loss.item() - ref.item()) < 1e-5
    loss.backward()
    assert model.embed_tokens.weight.grad is not None and model.embed_tokens.weight.grad.abs().sum() > 0


def test_headless_needs_a_tied_readout():
    with pytest.raises(ValueError, match="tie_embeddings"):
        get_preset("micro", head="cwt")
