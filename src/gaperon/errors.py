"""The one family of user errors.

A `GaperonError` is a problem with what the user gave us (a file, a field, an argument, a
checkpoint): the CLI prints its message as one line and exits with its `exit_code`. Any other
exception is a bug in gaperon and keeps its traceback. Messages name the file, line or field.

Subclasses keep `ValueError` as a second base where callers (and the server's request checks)
catch bad values that way.
"""

from __future__ import annotations

# Exit codes of the `gaperon` command, in one place.
EXIT_OK = 0
EXIT_ERROR = 1  # a user error: bad file, bad config, unreadable model...
EXIT_USAGE = 2  # a bad command-line argument, refused before any work (argparse uses 2 too)
EXIT_DIVERGED = 3  # training stopped on repeated non-finite losses
EXIT_REQUEUE = 75  # training checkpointed on a stop request (SLURM requeue / Ctrl-C): rerun to resume
EXIT_INTERRUPTED = 130  # interrupted with nothing to save


class GaperonError(Exception):
    """Base of every error the user can fix; shown without a traceback."""

    exit_code = EXIT_ERROR


class UsageError(GaperonError, ValueError):
    """A bad command-line argument or option value, detected before any heavy work."""

    exit_code = EXIT_USAGE


class ConfigError(GaperonError, ValueError):
    """A bad recipe or config value. The message names the file and the field path one way everywhere,
    `FILE: phases[0].lr.peak: reason` (built by `gaperon.config.config_error`, which also keeps the
    parts, so an error raised inside a field can be re-spelled with the full path)."""

    def __init__(self, message: str, *, source: str = "", path: str = "", reason: str | None = None) -> None:
        super().__init__(message)
        self.source, self.path = source, path
        self.reason = message if reason is None else reason


class DataError(GaperonError, ValueError):
    """Bad data input (unreadable file, malformed records, wrong token folder); names file:line."""


class ModelFormatError(GaperonError, ValueError):
    """A model file or folder we cannot read; names the file and, where it applies, the tensor."""


class ChatFormatError(GaperonError, ValueError):
    """Messages the model's chat template cannot render (its own check, or no template at all)."""


class CheckpointError(GaperonError):
    """A run's checkpoints exist but cannot be resumed; names each checkpoint and why."""


class EndpointError(GaperonError):
    """A remote model endpoint (an LLM judge) failed after its retries; names the URL and the reason."""


class TrainingDiverged(GaperonError):
    """Too many consecutive non-finite steps; the last good checkpoint is left as the latest."""

    exit_code = EXIT_DIVERGED
