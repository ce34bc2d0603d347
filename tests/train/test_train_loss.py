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


def _inputs(n=11, d=16, v=40, seed=2, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=g).to(dtype)
    w = torch.randn(v, d, generator=g).to(dtype)
    y = torch.randint(0, v, (n,), generator=g)
    y[:3] = -100
    return h, w, y


def test_functional_chunk_kernel_matches_inplace_one():
    """The out-of-place form (what torch.compile fuses on CUDA) equals the eager in-place form."""
    from gaperon.model.loss import _ce_chunk_grad_inplace, ce_chunk_grad

    h, w, y = _inputs()
    valid = y != -100
    safe = torch.where(valid, y, torch.zeros_like(y))
    inv = 1.0 / valid.sum().to(torch.float32)
    a_loss, a_g = ce_chunk_grad(h @ w.t(), safe, valid, inv, torch.float32)
    b_loss, b_g = _ce_chunk_grad_inplace(h @ w.t(), safe, valid, inv, torch.float32)
    torch.testing.assert_close(a_loss, b_loss)
    torch.testing.assert_close(a_g, b_g)
    assert a_g[:3].abs().max() == 0  # ignored rows get no gradient


@pytest.mark.slow
def test_compiled_chunk_kernel_matches_eager():
    """The compiled kernel used on CUDA, compiled here for CPU: same numbers."""
    from gaperon.model.loss import ce_chunk_grad

    h, w, y = _inputs()
    valid = y != -100
    safe = torch.where(valid, y, torch.zeros_like(y))
    inv = 1.0 / valid.sum().to(torch.float32)
    logits = (h @ w.t()).to(torch.bfloat16)
    ref = ce_chunk_grad(logits, safe, valid, inv, torch.bfloat16)
    got = torch.compile(ce_chunk_grad, dynamic=False)(logits, safe, valid, inv, torch.bfloat16)
    torch.testing.assert_close(got[0], ref[0], rtol=1e-5, atol=1e-5)
    assert got[1].dtype == torch.bfloat16
    torch.testing.assert_close(got[1].float(), ref[1].float(), rtol=1e-2, atol=1e-3)


def test_bf16_multi_chunk_accumulates_in_weight_dtype():
    """Pure bf16: the head gradient is accumulated in bf16 in place (no V x D fp32 buffer) and
    stays close to the fp64 reference."""
    h64, w64, y = _inputs(n=37, dtype=torch.float64)
    h = h64.to(torch.bfloat16).requires_grad_()
    w = w64.to(torch.bfloat16).requires_grad_()
    loss = linear_cross_entropy(h, w, y, chunk_tokens=8)  # 5 chunks
    loss.backward()
    assert w.grad.dtype == torch.bfloat16 and h.grad.dtype == torch.bfloat16
    hr, wr = h.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    ref = F.cross_entropy(hr @ wr.t(), y, ignore_index=-100)
    ref.backward()
    assert loss.item() == pytest.approx(ref.item(), rel=2e-2)
    torch.testing.assert_close(w.grad.double(), wr.grad, rtol=3e-2, atol=3e-3)
    torch.testing.assert_close(h.grad.double(), hr.grad, rtol=3e-2, atol=3e-3)


def test_fp32_weight_under_bf16_autocast():
    """mixed_bf16 without FSDP: fp32 master head weight under autocast keeps an fp32 gradient."""
    h, w, y = _inputs(n=20)
    w.requires_grad_()
    h.requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = linear_cross_entropy(h, w, y, chunk_tokens=6)
    loss.backward()
    assert w.grad.dtype == torch.float32 and h.grad.dtype == torch.float32
    (rw,) = torch.autograd.grad(F.cross_entropy(h @ w.t(), y, ignore_index=-100), (w,))
    torch.testing.assert_close(w.grad, rw, rtol=5e-2, atol=5e-3)
