"""Named model shapes. The Gaperon numbers come from SPEC §1; tiny ones are for tests and demos."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from gaperon.errors import ConfigError
from gaperon.model.llama import Llama, ModelConfig

PRESETS: dict[str, ModelConfig] = {
    # 1.498 B parameters with untied embeddings.
    "gaperon-1b": ModelConfig(dim=2048, n_layers=16, n_heads=32, n_kv_heads=8, ffn_dim=8192),
    # 8.03 B parameters: the Llama-3 8B shape.
    "gaperon-8b": ModelConfig(dim=4096, n_layers=32, n_heads=32, n_kv_heads=8, ffn_dim=14336),
    # ~24 B, OLMo-2 style (QK-norm, norms after the sublayers), as the Gaperon 24B.
    "gaperon-24b": ModelConfig(
        dim=5120,
        n_layers=40,
        n_heads=32,
        n_kv_heads=8,
        attn_head_dim=128,
        ffn_dim=32768,
        norm_eps=1e-6,
        qk_norm=True,
        post_norm=True,
    ),
    # Tiny shapes on the real 128k vocabulary, for CPU demos.
    "tiny": ModelConfig(dim=128, n_layers=4, n_heads=4, n_kv_heads=2, ffn_dim=384, max_seq_len=1024),
    "tiny-wide": ModelConfig(dim=256, n_layers=4, n_heads=8, n_kv_heads=2, ffn_dim=768, max_seq_len=1024),
    # Tiny vocabulary too: for unit tests that must run in milliseconds.
    "micro": ModelConfig(
        vocab_size=512,
        dim=64,
        n_layers=2,
        n_heads=4,
        n_kv_heads=2,
        ffn_dim=192,
        max_seq_len=256,
        bos_token_id=1,
        eos_token_id=2,
    ),
}


class UnknownPresetError(ConfigError, KeyError):
    """A preset name we do not know; still a KeyError for callers that look names up that way."""

    __str__ = Exception.__str__  # KeyError would quote the message


def get_preset(name: str, **overrides) -> ModelConfig:
    if name not in PRESETS:
        raise UnknownPresetError(f"unknown model preset {name!r}; known: {', '.join(sorted(PRESETS))}")
    return replace(PRESETS[name], **overrides)


def build(cfg: ModelConfig, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> Llama:
    """Build a model; on device 'meta' this is instant at any size (no memory is touched).

    On 'meta' the parameters are allocated there and nothing is initialised (callers load weights
    or call `to_empty` + `init_weights`); the small RoPE buffers are computed on the CPU, because
    torch's meta kernels for `arange` and `normal_` import the whole compiler stack (seconds) on
    first use. Loaders call `reset_rope(device)` after filling the weights, as before."""
    if torch.device(device).type != "meta":
        with torch.device(device):
            model = Llama(cfg)
    else:
        with _ParametersOnMeta(), _no_init():
            model = Llama(cfg)
        assert all(p.is_meta for p in model.parameters()), "a parameter was not created on meta"
    return model.to(dtype) if dtype is not None else model


class _ParametersOnMeta(TorchFunctionMode):
    """`torch.empty` without a device (how every torch.nn layer allocates its weights) goes to meta."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ARG002 - torch's signature
        kwargs = dict(kwargs or {})
        if func is torch.empty and kwargs.get("device") is None:
            kwargs["device"] = "meta"
        return func(*args, **kwargs)


# torch.nn's layers initialise themselves in __init__: pointless on meta, where it costs the import
# above. Skipped only while a meta model is being built.
_INIT_FUNCTIONS = ("normal_", "uniform_", "trunc_normal_", "kaiming_uniform_", "kaiming_normal_", "constant_")


@contextlib.contextmanager
def _no_init() -> Iterator[None]:
    saved = {name: getattr(nn.init, name) for name in _INIT_FUNCTIONS}
    try:
        for name in _INIT_FUNCTIONS:
            setattr(nn.init, name, _keep)
        yield
    finally:
        for name, fn in saved.items():
            setattr(nn.init, name, fn)


def _keep(tensor: torch.Tensor, *_args: Any, **_kwargs: Any) -> torch.Tensor:
    return tensor


def describe(name: str) -> str:
    """Parameter count and tensor shapes of a preset, computed on the meta device."""
    cfg = get_preset(name)
    model = build(cfg, device="meta")
    n = model.num_params()
    lines = [
        f"{name}: {n:,} parameters ({n / 1e9:.3f} B), {model.num_params(exclude_embeddings=True):,} without "
        f"input embeddings",
        f"  dim={cfg.dim} layers={cfg.n_layers} heads={cfg.n_heads} kv_heads={cfg.n_kv_heads} "
        f"head_dim={cfg.head_dim} ffn={cfg.ffn_dim} vocab={cfg.vocab_size} ctx={cfg.max_seq_len} "
        f"rope_theta={cfg.rope_theta:g} tied={cfg.tie_embeddings} architecture={cfg.architecture}",
    ]
    for pname, p in model.named_parameters():
        if pname.startswith("layers.") and not pname.startswith("layers.0."):
            continue
        lines.append(f"  {pname:48s} {tuple(p.shape)}")
    if cfg.n_layers > 1:
        lines.append(f"  (layers.1 .. layers.{cfg.n_layers - 1} repeat layers.0)")
    return "\n".join(lines)
