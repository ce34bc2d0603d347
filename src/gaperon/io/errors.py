"""The one error type of model interchange, so callers (the CLI) can show it as a single clear line."""

from __future__ import annotations


class ModelFormatError(ValueError):
    """A model file or folder we cannot read; the message names the file and, where it applies, the tensor."""
