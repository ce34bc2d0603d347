"""Supervised fine-tuning data: chat datasets, rendering with an assistant-only mask, packing."""

from gaperon.data.sft.spec import SFTDataSpec, SFTSource

__all__ = ["SFTDataSpec", "SFTSource"]
