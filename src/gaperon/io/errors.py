"""Re-export: the interchange error lives in `gaperon.errors` with the other user errors."""

from gaperon.errors import ModelFormatError

__all__ = ["ModelFormatError"]
