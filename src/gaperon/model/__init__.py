"""The model family: plain PyTorch, no parallelism or precision policy inside."""

from gaperon.model.llama import Llama, ModelConfig, causal_doc_mask, is_norm_gain
from gaperon.model.presets import PRESETS, build, describe, get_preset

__all__ = [
    "Llama",
    "ModelConfig",
    "PRESETS",
    "build",
    "causal_doc_mask",
    "describe",
    "get_preset",
    "is_norm_gain",
]
