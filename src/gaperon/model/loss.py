"""Cross-entropy through the LM head without materialising all logits at once.

For a 128k vocabulary, the fp32 logits of a 16k-token micro-batch are 8 GB. We walk the tokens in
chunks and, when gradients are needed, compute them inside the forward pass (as Liger-Kernel's
fused linear cross-entropy does): per chunk, logits -> softmax - one-hot -> grad of the hidden
states and of the head weight; then the chunk's logits are dropped. At most one chunk of logits is
alive at any time and the head matmul is not recomputed in backward (3 head matmuls per step
instead of 4 with activation checkpointing). Exact: the same gradients, not an approximation.

Memory and speed on a GPU (128k vocab, chunk 4096 tokens): one chunk is 1 GB of bf16 logits.
The element-wise part (fp32 upcast, logsumexp, softmax - one-hot, scaling, cast back) is one
torch.compile'd kernel on CUDA (eager it is ~6 passes over 2 GB of fp32 per chunk, ~10% of a
gaperon-1b step); on CPU it runs eagerly, in place. The head-weight gradient is accumulated across
chunks with `addmm_` in the weight's dtype, as Liger does (bf16 in pure bf16, where the parameter
gradient is bf16 anyway): no V x D fp32 buffer (1 GB for gaperon-1b, 2 GB for 8B) lives through
the whole backward pass, and no V x D temporary is made per chunk.
"""

from __future__ import annotations

import os

import torch
from torch import Tensor


def _chunk_logits(h: Tensor, weight: Tensor) -> Tensor:
    return (h @ weight.t()).float()


def ce_chunk_grad(logits: Tensor, safe_y: Tensor, valid: Tensor, inv_denom: Tensor, out_dtype: torch.dtype):
    """(sum of the chunk's valid losses, d(mean loss)/d logits in `out_dtype`), out of place.

    The functional form the compiler fuses into one pass; `_ce_chunk_grad_inplace` is the eager twin."""
    x = logits.float()
    lse = torch.logsumexp(x, dim=-1)
    target = x.gather(1, safe_y.unsqueeze(1)).squeeze(1)
    vf = valid.to(torch.float32)
    loss_sum = ((lse - target) * vf).sum()
    onehot = torch.arange(x.shape[1], device=x.device).unsqueeze(0) == safe_y.unsqueeze(1)
    g = (torch.exp(x - lse.unsqueeze(1)) - onehot.to(torch.float32)) * (vf * inv_denom).unsqueeze(1)
    return loss_sum, g.to(out_dtype)


def _ce_chunk_grad_inplace(
    logits: Tensor, safe_y: Tensor, valid: Tensor, inv_denom: Tensor, out_dtype: torch.dtype
):
    """Eager version that reuses the fp32 logits buffer (few temporaries, more passes)."""
    logits = logits.float()
    lse = torch.logsumexp(logits, dim=-1)
    target = logits.gather(1, safe_y.unsqueeze(1)).squeeze(1)
    loss_sum = ((lse - target) * valid).sum()
    # d(sum of losses)/d logits = softmax - one_hot, on valid rows; scaled by 1/n_valid.
    g = logits.sub_(lse.unsqueeze(1)).exp_()
    g[torch.arange(g.shape[0], device=g.device), safe_y] -= 1.0
    g.mul_((valid.to(torch.float32) * inv_denom).unsqueeze(1))
    return loss_sum, g.to(out_dtype)


_COMPILED = None


def _chunk_fn(device: torch.device):
    """The compiled chunk kernel on CUDA (GAPERON_COMPILE_LOSS=0 turns it off), eager elsewhere."""
    global _COMPILED
    if device.type != "cuda" or os.environ.get("GAPERON_COMPILE_LOSS", "1") == "0":
        return _ce_chunk_grad_inplace
    if _COMPILED is None:
        _COMPILED = torch.compile(ce_chunk_grad, dynamic=False)
    return _COMPILED


class _FusedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h: Tensor, weight: Tensor, labels: Tensor, ignore_index: int, chunk_tokens: int):
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        valid_all = labels != ignore_index
        denom = valid_all.sum().clamp(min=1).to(torch.float32)
        inv_denom = 1.0 / denom
        grad_h = torch.empty_like(h) if need_h else None
        # Same dtype as h and weight in every precision mode we use; fp32 if they ever differ.
        acc = weight.dtype if weight.dtype == h.dtype else torch.float32
        grad_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
        w_h = weight.to(h.dtype)
        fn = _chunk_fn(h.device)
        total = torch.zeros((), dtype=torch.float32, device=h.device)
        for start in range(0, h.shape[0], chunk_tokens):
            hc = h[start : start + chunk_tokens]
            yc = labels[start : start + chunk_tokens]
            valid = valid_all[start : start + chunk_tokens]
            safe_y = torch.where(valid, yc, torch.zeros_like(yc))
            loss_sum, g = fn(hc @ w_h.t(), safe_y, valid, inv_denom, h.dtype)
            total += loss_sum
            if grad_h is not None:
                grad_h[start : start + chunk_tokens] = g @ w_h
            if grad_w is not None:
                grad_w.addmm_(g.t().to(acc), hc.to(acc))  # in place: no V x D temporary
        ctx.save_for_backward(grad_h, grad_w)
        ctx.dtypes = (h.dtype, weight.dtype)
        return total / denom

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        grad_h, grad_w = ctx.saved_tensors
        h_dtype, w_dtype = ctx.dtypes
        gh = (grad_h * grad_out.to(h_dtype)) if grad_h is not None else None
        gw = (grad_w * grad_out.to(grad_w.dtype)).to(w_dtype) if grad_w is not None else None
        return gh, gw, None, None, None


def linear_cross_entropy(
    hidden: Tensor, weight: Tensor, labels: Tensor, ignore_index: int = -100, chunk_tokens: int = 4096
) -> Tensor:
    """Mean token cross-entropy of `hidden @ weight.T` against `labels` (ignored ids excluded).

    hidden: (..., D); weight: (V, D); labels: (...). Logits are upcast to fp32 per chunk.
    """
    h = hidden.reshape(-1, hidden.shape[-1])
    y = labels.reshape(-1)
    if torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad):
        return _FusedLinearCrossEntropy.apply(h, weight, y, ignore_index, chunk_tokens)
    valid = y != ignore_index
    total = h.new_zeros((), dtype=torch.float32)
    for start in range(0, h.shape[0], chunk_tokens):
        logits = _chunk_logits(h[start : start + chunk_tokens], weight)
        yc, vc = y[start : start + chunk_tokens], valid[start : start + chunk_tokens]
        safe = torch.where(vc, yc, torch.zeros_like(yc))
        lse = torch.logsumexp(logits, dim=-1)
        total = total + ((lse - logits.gather(1, safe.unsqueeze(1)).squeeze(1)) * vc).sum()
    return total / valid.sum().clamp(min=1)


# ------------------------------------------------------------------- headless (contrastive weight tying)

# Largest in-batch logits block (rows x columns) alive at once: 2^26 fp32 values = 256 MB.
CWT_MAX_BLOCK = 1 << 26


def _cwt_rows(h: Tensor, e: Tensor, rows: Tensor, col_valid: Tensor) -> Tensor:
    """Sum over `rows` of -log softmax_j(h_i . e_j)[i], the columns being every valid target."""
    acc = torch.promote_types(h.dtype, torch.float32)  # at least fp32 (bf16 in pure bf16)
    logits = (h[rows].to(acc) @ e.to(acc).t()).masked_fill(~col_valid.unsqueeze(0), float("-inf"))
    positive = logits.gather(1, rows.unsqueeze(1)).squeeze(1)
    return (torch.logsumexp(logits, dim=-1) - positive).sum()


def cwt_loss(
    hidden: Tensor, target_embeddings: Tensor, valid: Tensor, max_block: int = CWT_MAX_BLOCK
) -> Tensor:
    """Contrastive Weight Tying: mean over valid positions of cross-entropy of h_t . e(y_t) against
    the input embeddings of the micro-batch's other targets (temperature 1; a repeated token is
    a separate column, as in the headless-LM formulation). hidden, target_embeddings: (..., D);
    valid: (...) bool (False = ignored label, neither a row nor a negative).

    Rows go in chunks so at most `max_block` logits exist at once, in forward and backward (each
    chunk is recomputed in backward rather than stored): N x N is 1 GB at 16k tokens."""
    h = hidden.reshape(-1, hidden.shape[-1])
    e = target_embeddings.reshape(-1, target_embeddings.shape[-1])
    col_valid = valid.reshape(-1)
    rows_all = col_valid.nonzero().squeeze(1)
    n = rows_all.numel()
    if n == 0:
        return (h.sum() + e.sum()) * 0.0  # keeps the graph (and FSDP's hooks) alive
    chunk = max(1, max_block // max(e.shape[0], 1))
    total = h.new_zeros((), dtype=torch.float32)
    for start in range(0, n, chunk):
        rows = rows_all[start : start + chunk]
        if torch.is_grad_enabled() and (h.requires_grad or e.requires_grad):
            from torch.utils.checkpoint import checkpoint

            total = total + checkpoint(_cwt_rows, h, e, rows, col_valid, use_reentrant=False)
        else:
            total = total + _cwt_rows(h, e, rows, col_valid)
    return total / n
