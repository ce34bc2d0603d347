"""The Llama-3 architecture in plain PyTorch, with the OLMo-2 variant as a config switch.

One readable file, in the spirit of nanoGPT's model.py. Weight names and the RoPE layout
(rotate-half, as in Hugging Face checkpoints) match `transformers`' LlamaForCausalLM one to one,
so interchange is a rename, never a permutation. The Gaperon 24B is OLMo-2-shaped: `qk_norm`
(RMSNorm on the projected queries and keys, before RoPE) and `post_norm` (each sublayer's output is
normalised before the residual add, and there is no norm before the sublayers); with both on, the
names match `transformers`' Olmo2ForCausalLM. Parallelism, compilation and precision are
applied from outside (see `gaperon.train.parallelize`); nothing here knows about them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gaperon.model.loss import cwt_loss, linear_cross_entropy


@dataclass
class ModelConfig:
    vocab_size: int = 128_256
    dim: int = 2048
    n_layers: int = 16
    n_heads: int = 32
    n_kv_heads: int = 8
    ffn_dim: int = 8192
    max_seq_len: int = 4096
    rope_theta: float = 500_000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    # Pure-bf16 trick of Gaperon: RMSNorm gains are stored divided by this factor and multiplied
    # back in forward, so updates near 1.0 are not lost to bf16 rounding. 1.0 = plain storage.
    norm_gain_scale: float = 1.0
    init_std: float = 0.02
    # Token ids the tokenizer uses; carried so an exported folder is self-describing.
    bos_token_id: int = 128_000
    eos_token_id: int | list[int] = field(default_factory=lambda: 128_001)
    # OLMo-2 switches (both on for gaperon-24b): RMSNorm on q and k, norms after the sublayers.
    qk_norm: bool = False
    post_norm: bool = False
    # Per-head width when it is not dim / n_heads (gaperon-24b: 5120 / 32 heads of 128).
    attn_head_dim: int | None = None
    # "lm": a softmax head over the vocabulary. "cwt": headless, trained with Contrastive Weight
    # Tying (h . e(y) against the micro-batch's target embeddings); its readout is the input
    # embedding matrix, so a headless model is tied (and exports as a tied Llama).
    head: str = "lm"

    def __post_init__(self) -> None:
        for name in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim", "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"ModelConfig.{name} must be a positive integer, got {value!r}")
        if self.attn_head_dim is not None and (
            not isinstance(self.attn_head_dim, int) or self.attn_head_dim <= 0
        ):
            raise ValueError(
                f"ModelConfig.attn_head_dim must be a positive integer, got {self.attn_head_dim!r}"
            )
        if self.attn_head_dim is None and self.dim % self.n_heads:
            raise ValueError(f"ModelConfig.dim ({self.dim}) must be divisible by n_heads ({self.n_heads})")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(
                f"ModelConfig.n_heads ({self.n_heads}) must be divisible by n_kv_heads ({self.n_kv_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(f"ModelConfig head_dim ({self.head_dim}) must be even for RoPE")
        if self.head not in ("lm", "cwt"):
            raise ValueError(f"ModelConfig.head must be 'lm' or 'cwt', got {self.head!r}")
        if self.head == "cwt" and not self.tie_embeddings:
            raise ValueError(
                "ModelConfig.head 'cwt' (headless) reads out through the embeddings: set tie_embeddings"
            )
        if not self.norm_gain_scale > 0:
            raise ValueError(f"ModelConfig.norm_gain_scale must be > 0, got {self.norm_gain_scale!r}")
        if not self.rope_theta > 0:
            raise ValueError(f"ModelConfig.rope_theta must be > 0, got {self.rope_theta!r}")

    @property
    def head_dim(self) -> int:
        return self.attn_head_dim or self.dim // self.n_heads

    @property
    def architecture(self) -> str:
        """'llama', 'olmo2', or 'custom' (a mix no Hugging Face class computes)."""
        if not self.qk_norm and not self.post_norm:
            return "llama"
        return "olmo2" if self.qk_norm and self.post_norm else "custom"

    def to_dict(self) -> dict:
        return asdict(self)


class KVCache(Protocol):
    """What attention needs from a cache: store this step's keys/values, return all of them."""

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]: ...


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float, gain_scale: float = 1.0) -> None:
        super().__init__()
        self.eps = eps
        self.gain_scale = gain_scale
        self.weight = nn.Parameter(torch.empty(dim))

    def reset_parameters(self) -> None:
        nn.init.constant_(self.weight, 1.0 / self.gain_scale)

    def gain(self) -> Tensor:
        """The effective gain, whatever the storage scale."""
        return self.weight * self.gain_scale if self.gain_scale != 1.0 else self.weight

    def forward(self, x: Tensor) -> Tensor:
        # Normalise in fp32 even when weights and activations are bf16 (as transformers does).
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.gain() * h.to(dtype)


NORM_MODULES = frozenset(
    {"input_layernorm", "post_attention_layernorm", "post_feedforward_layernorm", "q_norm", "k_norm", "norm"}
)


def is_norm_gain(name: str) -> bool:
    """Whether a parameter name is an RMSNorm gain (not decayed; stored scaled in pure bf16)."""
    parts = name.rsplit(".", 2)
    return len(parts) >= 2 and parts[-1] == "weight" and parts[-2] in NORM_MODULES


def rope_tables(head_dim: int, max_len: int, theta: float, device=None) -> tuple[Tensor, Tensor]:
    """cos/sin of shape (max_len, head_dim) in fp32, rotate-half layout."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
    t = torch.arange(max_len, dtype=torch.float32, device=device)
    freqs = torch.outer(t, inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x: (B, H, T, D); cos/sin: (B, 1, T, D) already gathered at the tokens' positions."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat((-x2, x1), dim=-1)
    return x * cos + rotated * sin


def grouped_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    """SDPA for grouped-query attention without copying keys/values per query head.

    q: (B, H, T, D); k, v: (B, H_kv, T_kv, D). Without a mask (training, plain prefill) SDPA's
    `enable_gqa` keeps the flash kernel. With a mask (document masking, cached decoding) the query
    heads sharing a KV head are folded into the query-length axis, (B, H_kv, rep*T, D), and the mask
    rows repeated: the KV cache is read once per KV head, which is what bounds decoding speed.
    """
    b, h, t, d = q.shape
    rep = h // k.shape[1]
    if mask is not None and not isinstance(mask, Tensor):
        # A flex_attention BlockMask (document masking under torch.compile on GPU): a fused kernel
        # that skips cross-document blocks, where a dense mask would rule out flash attention.
        from torch.nn.attention.flex_attention import flex_attention

        return flex_attention(q, k, v, block_mask=mask, enable_gqa=rep > 1)
    if mask is None:
        return F.scaled_dot_product_attention(q, k, v, is_causal=t > 1, enable_gqa=rep > 1)
    if rep == 1:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    while mask.dim() < 4:
        mask = mask.unsqueeze(0)
    if mask.shape[1] != 1:  # a per-head mask cannot be folded: expand keys/values instead
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    mb, _, mt, mk = mask.shape
    mask = mask.unsqueeze(2).expand(mb, 1, rep, mt, mk).reshape(mb, 1, rep * mt, mk)
    y = F.scaled_dot_product_attention(q.reshape(b, h // rep, rep * t, d), k, v, attn_mask=mask)
    return y.view(b, h, t, d)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.n_heads, self.n_kv_heads, self.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, cfg.n_heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.dim, cfg.n_kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.dim, bias=False)
        if cfg.qk_norm:  # OLMo-2: over all heads at once, as transformers' Olmo2Attention
            self.q_norm = RMSNorm(cfg.n_heads * cfg.head_dim, cfg.norm_eps, cfg.norm_gain_scale)
            self.k_norm = RMSNorm(cfg.n_kv_heads * cfg.head_dim, cfg.norm_eps, cfg.norm_gain_scale)
        self.qk_norm = cfg.qk_norm

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None, cache: KVCache | None
    ) -> Tensor:
        b, t, _ = x.shape
        q, k = self.q_proj(x), self.k_proj(x)
        if self.qk_norm:
            q, k = self.q_norm(q), self.k_norm(k)
        q = q.view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = k.view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(self.layer, k, v)
        if mask is None and cache is not None and t > 1 and k.shape[2] > t:
            # A chunk appended to a non-empty cache: causal, aligned to the cache's end (bottom-right).
            # (A fresh prefill, keys as long as the chunk, stays maskless: the flash kernel's case.)
            mask = torch.ones(t, k.shape[2], dtype=torch.bool, device=x.device).tril(k.shape[2] - t)
        y = grouped_attention(q, k, v, mask)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.up_proj = nn.Linear(cfg.dim, cfg.ffn_dim, bias=False)
        self.down_proj = nn.Linear(cfg.ffn_dim, cfg.dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """Pre-norm (Llama): x + f(norm(x)). Post-norm (OLMo-2): x + norm(f(x)). The names are the
    Hugging Face ones of each family, so `post_attention_layernorm` is the pre-MLP norm in Llama and
    the norm of the attention output in OLMo-2."""

    def __init__(self, cfg: ModelConfig, layer: int) -> None:
        super().__init__()
        self.post_norm = cfg.post_norm
        if not cfg.post_norm:
            self.input_layernorm = RMSNorm(cfg.dim, cfg.norm_eps, cfg.norm_gain_scale)
        self.self_attn = Attention(cfg, layer)
        self.post_attention_layernorm = RMSNorm(cfg.dim, cfg.norm_eps, cfg.norm_gain_scale)
        if cfg.post_norm:
            self.post_feedforward_layernorm = RMSNorm(cfg.dim, cfg.norm_eps, cfg.norm_gain_scale)
        self.mlp = MLP(cfg)

    def forward(
        self, x: Tensor, cos: Tensor, sin: Tensor, mask: Tensor | None = None, cache: KVCache | None = None
    ) -> Tensor:
        if self.post_norm:
            x = x + self.post_attention_layernorm(self.self_attn(x, cos, sin, mask, cache))
            return x + self.post_feedforward_layernorm(self.mlp(x))
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class Llama(nn.Module):
    """Decoder-only Llama-3. `forward` returns logits, or the mean loss when `labels` are given.

    The loss path never materialises the full-vocabulary logits in fp32 at once: it goes through
    `gaperon.model.loss.linear_cross_entropy`, which works chunk by chunk.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.dim)
        # A ModuleDict keyed by str(i) keeps state-dict names "layers.i." and lets FSDP/AC wrap blocks.
        self.layers = nn.ModuleDict({str(i): Block(cfg, i) for i in range(cfg.n_layers)})
        self.norm = RMSNorm(cfg.dim, cfg.norm_eps, cfg.norm_gain_scale)
        self.lm_head = nn.Linear(cfg.dim, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        cos, sin = rope_tables(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        if self.embed_tokens.weight.device.type != "meta":
            self.init_weights()

    @torch.no_grad()
    def init_weights(self, seed: int | None = None) -> None:
        """(Re)initialise every parameter and buffer: also the way to materialise a meta-built model
        after `to_empty(device=...)`. Output projections are scaled by 1/sqrt(2 * n_layers)."""
        gen = None
        if seed is not None:
            gen = torch.Generator(device=self.embed_tokens.weight.device).manual_seed(seed)
        std = self.cfg.init_std
        out_std = std / math.sqrt(2 * self.cfg.n_layers)
        for name, p in self.named_parameters():
            if is_norm_gain(name):
                continue
            s = out_std if name.endswith(("o_proj.weight", "down_proj.weight")) else std
            nn.init.trunc_normal_(p, mean=0.0, std=s, a=-3 * s, b=3 * s, generator=gen)
        for m in self.modules():
            if isinstance(m, RMSNorm):
                m.reset_parameters()
        self.reset_rope()

    def tie_weights(self) -> None:
        """Share the LM head with the input embeddings when the config says so. `to_empty` (the way
        a meta-built model is materialised) gives each parameter its own storage and so unties
        them: loaders call this after it."""
        if self.cfg.tie_embeddings:
            self.lm_head.weight = self.embed_tokens.weight

    @torch.no_grad()
    def reset_rope(self, device: torch.device | str | None = None) -> None:
        """Fill the RoPE tables (non-persistent buffers, so no checkpoint holds them): what a loader
        calls after materialising a meta-built model. Computed in fp32."""
        device = device if device is not None else self.embed_tokens.weight.device
        cos, sin = rope_tables(self.cfg.head_dim, self.cfg.max_seq_len, self.cfg.rope_theta, device)
        self.rope_cos = cos
        self.rope_sin = sin

    def hidden_states(
        self,
        tokens: Tensor,
        positions: Tensor | None = None,
        mask: Tensor | None = None,
        cache: KVCache | None = None,
    ) -> Tensor:
        """Final-normed hidden states (B, T, dim).

        positions: (B, T) or (T,) absolute positions (default 0..T-1); mask: an SDPA attention mask
        broadcastable to (B, 1, T, T_kv), bool (True = attend) or additive float; None = causal.
        """
        b, t = tokens.shape
        if positions is None:
            positions = torch.arange(t, device=tokens.device)
        if positions.dim() == 1:
            positions = positions.unsqueeze(0).expand(b, t)
        h = self.embed_tokens(tokens)
        cos = self.rope_cos[positions].unsqueeze(1).to(h.dtype)
        sin = self.rope_sin[positions].unsqueeze(1).to(h.dtype)
        for block in self.layers.values():
            h = block(h, cos, sin, mask, cache)
        return self.norm(h)

    def forward(
        self,
        tokens: Tensor,
        positions: Tensor | None = None,
        mask: Tensor | None = None,
        cache: KVCache | None = None,
        labels: Tensor | None = None,
        ignore_index: int = -100,
    ) -> Tensor:
        h = self.hidden_states(tokens, positions, mask, cache)
        if labels is None:
            return self.lm_head(h)
        if self.cfg.head == "cwt":
            valid = labels != ignore_index
            return cwt_loss(h, self.embed_tokens(labels.masked_fill(~valid, 0)), valid)
        return linear_cross_entropy(h, self.lm_head.weight, labels, ignore_index=ignore_index)

    def num_params(self, exclude_embeddings: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= self.embed_tokens.weight.numel()
        return n


def causal_doc_mask(doc_ids: Tensor) -> Tensor:
    """Block-diagonal causal mask (B, 1, T, T) for packed sequences: a token sees only earlier
    tokens of its own document. doc_ids: (B, T) integers, equal within a document."""
    t = doc_ids.shape[-1]
    same_doc = doc_ids.unsqueeze(-1) == doc_ids.unsqueeze(-2)
    causal = torch.ones(t, t, dtype=torch.bool, device=doc_ids.device).tril()
    return (same_doc & causal).unsqueeze(1)
