"""What the trainer needs for SFT phases: their batch source, the loss weights of a step's
micro-batches, and starting from an imported model (a Hugging Face folder or a GGUF file).

Loss normalisation: the model returns the mean loss of a micro-batch over its learned targets.
Weighting micro-batch m of rank r by n_mr * world / N (n_mr its learned targets, N those of the
global batch) makes the summed gradient, after FSDP's mean over ranks, the gradient of
sum(losses) / N: the mean over trained tokens of the global batch, whatever the split into
micro-batches and ranks (a mean of per-micro-batch means would weight short answers more).
"""

from __future__ import annotations

import dataclasses
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from gaperon.errors import ConfigError


def init_source_kind(path: Path) -> str | None:
    """'gguf', 'hf' or 'run' for an existing `init_from`; None when it does not exist."""
    from gaperon.io.loading import model_kind

    if not path.exists():
        return None
    try:
        return model_kind(path)
    except ValueError:  # neither a model file nor an HF folder: a run or a checkpoint folder
        return "run"


@lru_cache(maxsize=8)
def _source_config(path: str):
    p = Path(path)
    kind = init_source_kind(p)
    if kind == "hf":
        from gaperon.io.hf import read_hf_config

        return read_hf_config(p)[0]
    if kind == "gguf":
        from gaperon.io.gguf import gguf_model_config, open_gguf

        file = open_gguf(p)
        try:
            cfg = gguf_model_config(file, str(p))
            cfg.tie_embeddings = not any(t.name == "output.weight" for t in file.tensors)
        finally:
            file.close()
        return cfg
    return None


def imported_model_config(path: Path, overrides: dict[str, Any]):
    """The ModelConfig of an HF folder / GGUF file `init_from` (recipe overrides applied), else None."""
    cfg = _source_config(str(path))
    if cfg is None:
        return None
    return dataclasses.replace(cfg, **overrides)


def imported_tokenizer(path: Path):
    """The tokenizer (and chat template) of an HF folder or GGUF file."""
    if init_source_kind(path) == "hf":
        from gaperon.tokenizer import load_tokenizer

        return load_tokenizer(path)
    return _gguf_tokenizer(path)


def _gguf_tokenizer(path: Path):
    from gaperon.io.gguf import gguf_tokenizer, open_gguf

    cfg = _source_config(str(path))
    file = open_gguf(path)
    try:
        return gguf_tokenizer(file, str(path), str(file.get("general.name") or path.stem), cfg.max_seq_len)
    finally:
        file.close()


def load_imported_weights(model: nn.Module, path: Path, sharded: bool) -> None:
    """Copy an HF folder's or GGUF file's weights into the (possibly FSDP-sharded) model."""
    from gaperon.io.loading import load_model

    src = load_model(path, dtype=torch.float32).model.state_dict()
    if sharded:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(model, src, options=StateDictOptions(full_state_dict=True, strict=True))
        return
    missing, unexpected = model.load_state_dict(src, strict=False)
    missing = [k for k in missing if "rope" not in k]
    if missing or unexpected:
        raise ConfigError(
            f"init_from {path}: weights do not match the model (missing {missing}, extra {unexpected})"
        )


def build_phase_sampler(recipe, index: int, tokenizer):
    """The SFT sampler of phase `index` (data errors name the recipe field)."""
    from gaperon.data.sft.dataset import build_sft_sampler
    from gaperon.errors import DataError
    from gaperon.train.config import resolve_path

    phase = recipe.phases[index]
    if tokenizer is None:
        raise ConfigError(f"{recipe.source}: tokenizer: SFT phases need a tokenizer")
    try:
        sampler = build_sft_sampler(
            phase.sft,
            tokenizer,
            phase.seq_len,
            recipe.batch.global_batch,
            phase.seed or 0,
            resolve=lambda p: str(resolve_path(recipe, p)),
        )
    except DataError as e:
        raise type(e)(f"{recipe.source}: phases[{index}].sft: {e}") from None
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"phase {phase.name}: SFT data: {sampler.report.summary()}", flush=True)
    return sampler


def micro_weights(labels: Tensor, micro_batch: int, world_size: int, global_trained: int) -> list[float]:
    """Per micro-batch factor n_m * world / N for the loss of each micro-batch (see the module doc)."""
    if global_trained <= 0:
        raise ValueError("a global batch without any trained token")
    counts = (labels != -100).reshape(-1, micro_batch, labels.shape[-1]).sum(dim=(1, 2)).tolist()
    return [c * world_size / global_trained for c in counts]
