"""One spelling of dtypes everywhere: bf16, fp16, fp32 (the long names are accepted too).

Help texts, error messages and written files use the short names; `parse_dtype` and `dtype_arg`
accept either. Importing this module does not import torch (the CLI uses it to check arguments).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gaperon.errors import UsageError

if TYPE_CHECKING:
    import torch

DTYPE_NAMES = ("bf16", "fp16", "fp32")
# Every accepted spelling -> its short name.
ALIASES = {
    "bf16": "bf16",
    "bfloat16": "bf16",
    "fp16": "fp16",
    "float16": "fp16",
    "half": "fp16",
    "fp32": "fp32",
    "float32": "fp32",
    "float": "fp32",
}
_ACCEPTED = "bf16, fp16 or fp32 (or bfloat16, float16, float32)"


def short_name(dtype: str | torch.dtype) -> str:
    """'bfloat16' / torch.bfloat16 / 'bf16' -> 'bf16'; anything else is a UsageError naming it."""
    key = str(dtype).lower().removeprefix("torch.")
    if key not in ALIASES:
        raise UsageError(f"unknown dtype {str(dtype)!r}; use {_ACCEPTED}")
    return ALIASES[key]


def parse_dtype(dtype: str | torch.dtype | None) -> torch.dtype | None:
    """'bf16' / 'bfloat16' / torch.bfloat16 -> torch.bfloat16; None stays None."""
    if dtype is None:
        return None
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[short_name(dtype)]


def long_name(dtype: str | torch.dtype) -> str:
    """The name transformers writes in config.json: 'bfloat16', 'float16', 'float32'."""
    return {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}[short_name(dtype)]


def dtype_arg(text: str) -> str:
    """argparse `type=`: normalises any accepted spelling to its short name, refuses the rest."""
    import argparse

    try:
        return short_name(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
