"""The fused chunked LM-head loss equals full-logits cross-entropy, values and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from gaperon.model.loss import linear_cross_entropy


@pytest.mark.parametrize("chunk", [5, 4096])
def test_fused_loss_and_grads_match_full_logits(chunk):
    torch.manual_seed(0)
    h = torch.randn(2, 13, 16, dtype=torch.float64, requires_grad=True)
    w = torch.randn(40, 16, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 40, (2, 13))
    y[0, :5] = -100
    ref = F.cross_entropy((h @ w.t()).reshape(-1, 40), y.reshape(-1), ignore_index=-100)
    gh, gw = torch.autograd.grad(3.0 * ref, (h, w))
    got = linear_cross_entropy(h, w, y, chunk_tokens=chunk)
    fh, fw = torch.autograd.grad(3.0 * got, (h, w))
    assert got.item() == pytest.approx(ref.item(), rel=1e-6)
    torch.testing.assert_close(fh, gh, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fw, gw.to(fw.dtype), rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        assert linear_cross_entropy(h, w, y, chunk_tokens=chunk).item() == pytest.approx(ref.item(), rel=1e-6)


def test_only_weight_or_only_hidden_needs_grad():
    torch.manual_seed(1)
    h = torch.randn(6, 8)
    w = torch.randn(10, 8, requires_grad=True)
    y = torch.randint(0, 10, (6,))
    (gw,) = torch.autograd.grad(linear_cross_entropy(h, w, y, chunk_tokens=4), (w,))
    (rw,) = torch.autograd.grad(F.cross_entropy(h @ w.t(), y), (w,))
    torch.testing.assert_close(gw, rw)
    assert linear_cross_entropy(h, w, torch.full((6,), -100)).item() == 0.0
