"""`load_model(path)`: one entry point for every model source gaperon reads.

A `.gguf` file, a Hugging Face folder (has config.json), a training run directory (has run.yaml,
checkpoints/ or model_config.json) or one checkpoint inside it: generation, serving, evaluation and
export all start here, so they accept the same paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch

from gaperon.dtypes import parse_dtype
from gaperon.errors import ModelFormatError, UsageError
from gaperon.model.llama import Llama, ModelConfig

if TYPE_CHECKING:
    from gaperon.tokenizer import Tokenizer

# What makes a folder a training run (RUN_DIR) rather than an HF folder;
# RUN_DIR/checkpoints/<step> is one too.
RUN_MARKERS = ("run.yaml", "checkpoints", "model_config.json")
ACCEPTED = (
    "a .gguf file, a Hugging Face model folder (with config.json), "
    "or a training run directory (with run.yaml or checkpoints/)"
)


@dataclass
class LoadedModel:
    model: Llama
    tokenizer: Tokenizer | None
    config: ModelConfig
    source: str  # "gguf" | "hf" | "run"


def model_kind(path: Path) -> str:
    """Which of the accepted kinds `path` is: 'gguf', 'hf' or 'run'."""
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return "gguf"
        with open(path, "rb") as f:
            if f.read(4) == b"GGUF":
                return "gguf"
        raise ModelFormatError(f"{path}: not a model; expected {ACCEPTED}")
    if path.is_dir():
        if (path / "config.json").is_file():
            return "hf"
        if any((path / marker).exists() for marker in RUN_MARKERS) or path.parent.name == "checkpoints":
            return "run"
        raise ModelFormatError(f"{path}: not a model folder; expected {ACCEPTED}")
    raise FileNotFoundError(f"{path}: no such file or folder; expected {ACCEPTED}")


def load_model(
    path: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype | str | None = None
) -> LoadedModel:
    """Load any accepted model source; dtype None keeps the source's own (fp32 for GGUF)."""
    path = Path(path)
    kind = model_kind(path)
    target = parse_dtype(dtype)
    model: Llama
    tok: Tokenizer | None
    if kind == "gguf":
        from gaperon.io.gguf import load_gguf

        model, tok = load_gguf(path, device=device, dtype=target or torch.float32)
    elif kind == "hf":
        from gaperon.io.hf import load_hf

        model, tok = load_hf(path, device=device, dtype=target)
    else:
        try:
            from gaperon.io.dcp import load_run_model
        except ImportError as e:
            raise ModelFormatError(
                f"{path}: looks like a training run, but run loading (gaperon.io.dcp) is unavailable: {e}"
            ) from None
        model, run_tok = load_run_model(path, device=device, dtype=target)
        tok = cast("Tokenizer | None", run_tok)  # load_run_model returns its tokenizer as `object`
    return LoadedModel(model=model, tokenizer=tok, config=model.cfg, source=kind)


def convert_to_hf(
    src: str | Path,
    out: str | Path,
    *,
    dtype: torch.dtype | str | None = None,
    max_shard_size: int | str = "2GB",
    overwrite: bool = False,
) -> LoadedModel:
    """Load anything `load_model` accepts and write it as our normalised HF folder at `out`
    (what `gaperon import` and `gaperon export` do). An existing non-empty `out` is refused unless
    `overwrite`; the folder is replaced atomically, so a failure leaves the old one intact."""
    from gaperon.io.hf import save_hf
    from gaperon.io.safetensors_files import parse_size

    try:
        parse_size(max_shard_size)  # before the (possibly long) load, not after
    except ValueError as e:
        raise UsageError(f"max shard size: {e}") from None
    src, out = Path(src), Path(out)
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise ModelFormatError(f"{out}: the output must not be the source {src} or inside it")
    if out.exists() and not (out.is_dir() and not any(out.iterdir())) and not overwrite:
        raise UsageError(f"{out}: already exists; choose another folder or pass --force to replace it")
    loaded = load_model(src, dtype=dtype)
    save_hf(loaded.model, loaded.tokenizer, out, dtype=dtype, max_shard_size=max_shard_size)
    return loaded
