"""The three precision modes, as one small policy object.

- pure_bf16 (Gaperon): parameters, gradients and AdamW moments all bf16; RMSNorm gains stored
  divided by `norm_gain_scale` (20) so updates near 1.0 survive bf16 rounding (the recipe turns
  the scale on; see `Recipe.model_config`). Losses are computed in fp32 per chunk.
- mixed_bf16: fp32 master weights and optimizer states; compute in bf16, through FSDP2's
  MixedPrecisionPolicy when sharded, through autocast otherwise; gradients reduced in fp32.
- fp32: everything fp32 (CPU tests, exact-resume checks).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PrecisionPolicy:
    mode: str
    param_dtype: torch.dtype  # storage of weights, grads and optimizer states
    compute_dtype: torch.dtype

    @classmethod
    def from_name(cls, mode: str) -> PrecisionPolicy:
        if mode == "pure_bf16":
            return cls(mode, torch.bfloat16, torch.bfloat16)
        if mode == "mixed_bf16":
            return cls(mode, torch.float32, torch.bfloat16)
        if mode == "fp32":
            return cls(mode, torch.float32, torch.float32)
        raise ValueError(f"unknown precision {mode!r}")

    def fsdp_mp_policy(self):
        """FSDP2 policy: only the mixed mode casts (pure bf16 params are already bf16)."""
        from torch.distributed.fsdp import MixedPrecisionPolicy

        if self.mode == "mixed_bf16":
            return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        return MixedPrecisionPolicy()

    def autocast(self, device_type: str, sharded: bool):
        """bf16 autocast for the unsharded mixed mode; a no-op otherwise."""
        if self.mode == "mixed_bf16" and not sharded:
            return torch.autocast(device_type=device_type, dtype=torch.bfloat16)
        return contextlib.nullcontext()
