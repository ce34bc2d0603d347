"""Read a training run's weights back as a plain (unsharded) model.

A run folder holds `model_config.json` (the trained ModelConfig, norm_gain_scale included),
`tokenizer/` (when the run used a real tokenizer) and `checkpoints/step_*/` in the sharded
`torch.distributed.checkpoint` format. DCP reshards on load, so a checkpoint written by any number
of ranks loads into one process. The model keeps the run's gain storage scale, so its effective
RMSNorm gains (`RMSNorm.gain()`) are the true ones; exporters multiply by the scale.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from gaperon.io import run_format
from gaperon.io.errors import ModelFormatError
from gaperon.io.run_format import MODEL_CONFIG, read_model_config
from gaperon.model.llama import Llama, ModelConfig


def _run_and_checkpoint(path: Path) -> tuple[Path, Path]:
    """(run dir, checkpoint dir) for a run folder or one checkpoint folder inside it."""
    if run_format.is_checkpoint_folder(path):
        try:
            run_format.validate(path)
        except ValueError as e:
            raise ModelFormatError(f"{path}: unusable checkpoint: {e}") from None
        return path.parent.parent, path
    skipped: list[str] = []
    found = run_format.find_latest(path, log=skipped.append)
    for msg in skipped:
        print(msg)
    if found is None:
        raise ModelFormatError(f"{path}: no complete checkpoint under {run_format.checkpoint_dir(path)}")
    return path, found[0]


def load_run_model(
    path: str | Path, *, device: str | torch.device = "cpu", dtype: torch.dtype | None = None
) -> tuple[Llama, object | None]:
    """(model, tokenizer or None) from a RUN_DIR (latest complete checkpoint) or a checkpoint dir.

    dtype None keeps the checkpoint's storage dtype (bf16 for pure-bf16 runs)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such run or checkpoint folder")
    run_dir, ckpt_dir = _run_and_checkpoint(path)
    raw, precision = read_model_config(run_dir)
    try:
        cfg = ModelConfig(**raw)
    except (TypeError, ValueError) as e:
        raise ModelFormatError(f"{run_dir / MODEL_CONFIG}: {e}") from None
    stored = torch.bfloat16 if precision == "pure_bf16" else torch.float32
    with torch.device("meta"):
        model = Llama(cfg)
    model = model.to(stored).to_empty(device=device)
    model.tie_weights()  # to_empty unties them; the checkpoint holds one tensor for both
    # Only the RoPE buffers need values: every parameter is overwritten below (a random init of
    # 8B parameters on CPU would take minutes for nothing).
    model.reset_rope()
    state = {"model": model.state_dict()}
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*assuming the intent is to")
            dcp.load(state, checkpoint_id=str(ckpt_dir))
    except (Exception, CheckpointException) as e:  # noqa: BLE001 - DCP raises many types (one a BaseException)
        raise ModelFormatError(f"{ckpt_dir}: cannot read the checkpoint's model weights ({e})") from None
    model.load_state_dict(state["model"])
    if dtype is not None:
        model = model.to(dtype)
    tok = None
    if (run_dir / "tokenizer").is_dir():
        from gaperon.tokenizer import load_tokenizer

        tok = load_tokenizer(run_dir / "tokenizer")
    return model.eval(), tok
