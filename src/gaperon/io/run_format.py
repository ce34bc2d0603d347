"""The on-disk format of a training run's checkpoints, shared by the trainer and the readers.

Layout under RUN_DIR/checkpoints/:

    step_00001000/        one checkpoint: DCP shards + .metadata, meta.json, COMPLETE
    latest                the name of the newest complete checkpoint (a convenience pointer)

A checkpoint is usable when its COMPLETE marker exists and every file listed in meta.json has the
recorded size. This module only reads: the trainer (`gaperon.train.checkpoint`) writes and
resumes, exporters and inference (`gaperon.io.dcp`) load weights; neither knows the other.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

COMPLETE = "COMPLETE"
META = "meta.json"
CHECKPOINTS = "checkpoints"
LATEST = "latest"
STEP_NAME = re.compile(r"^step_(\d{8,})$")


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def checkpoint_name(step: int) -> str:
    return f"step_{step:08d}"


def list_checkpoints(root: Path) -> list[Path]:
    """Checkpoint folders (complete or not) sorted by step, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if p.is_dir() and (m := STEP_NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def read_meta(path: Path) -> dict:
    """meta.json of a checkpoint folder; ValueError saying what is wrong."""
    try:
        meta = json.loads((path / META).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"unreadable {META} ({e})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{META} is not a mapping")
    return meta


def validate(path: Path) -> dict:
    """The metadata of a complete, intact checkpoint; ValueError saying what is wrong otherwise."""
    if not (path / COMPLETE).is_file():
        raise ValueError("no COMPLETE marker (partial write)")
    meta = read_meta(path)
    if "files" not in meta or "step" not in meta:
        raise ValueError(f"{META} lacks 'files'/'step'")
    for fname, size in meta["files"].items():
        f = path / fname
        if not f.is_file():
            raise ValueError(f"missing file {fname}")
        if f.stat().st_size != size:
            raise ValueError(f"file {fname} has {f.stat().st_size} bytes, expected {size} (truncated?)")
    return meta


def is_checkpoint_folder(path: Path) -> bool:
    """One checkpoint folder (rather than a run folder)."""
    path = Path(path)
    return (path / COMPLETE).exists() or (path / META).exists() or path.parent.name == CHECKPOINTS


def find_latest(run_dir: Path, log: Callable[[str], object] = print) -> tuple[Path, dict] | None:
    """The newest checkpoint that validates, reporting each one skipped and why."""
    for path in reversed(list_checkpoints(checkpoint_dir(run_dir))):
        try:
            return path, validate(path)
        except ValueError as e:
            log(f"checkpoint {path} is unusable: {e}; trying the previous one")
    return None


MODEL_CONFIG = "model_config.json"


def read_model_config(run_dir: Path) -> tuple[dict, str]:
    """(ModelConfig fields, precision) of a run folder; ModelFormatError naming the file if unreadable."""
    from gaperon.errors import ModelFormatError

    cfg_file = Path(run_dir) / MODEL_CONFIG
    try:
        raw = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelFormatError(f"{cfg_file}: unreadable model config ({e})") from None
    if not isinstance(raw, dict):
        raise ModelFormatError(f"{cfg_file}: expected a JSON object")
    precision = str(raw.pop("precision", "fp32"))
    return raw, precision
