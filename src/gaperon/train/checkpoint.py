"""Saving and resuming run checkpoints with `torch.distributed.checkpoint` (DCP): the policy.

The on-disk format (layout, COMPLETE marker, meta.json, validation) is `gaperon.io.run_format`,
shared with the readers. Every rank writes its shards (fsynced) into a hidden temporary folder;
after a barrier, rank 0 fsyncs the folder, writes meta.json (counters, sampler state, RNG states,
recipe digest and the size of every file) and the COMPLETE marker, then renames the folder into
place and moves `latest`. A crash at any moment leaves either the old checkpoints or the new one,
never a half one under a final name. On resume a checkpoint that fails is reported and the previous
one is tried; when none loads the run stops with a CheckpointError (it never silently restarts).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint import FileSystemWriter
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from gaperon.atomic import write_json, write_text
from gaperon.errors import CheckpointError
from gaperon.io.run_format import (
    COMPLETE,
    LATEST,
    META,
    checkpoint_dir,
    checkpoint_name,
    list_checkpoints,
    validate,
)


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def rng_state() -> dict:
    """This process's RNG states, JSON-able (torch CPU, and CUDA when present)."""
    state = {"torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = base64.b64encode(torch.cuda.get_rng_state().numpy().tobytes()).decode()
    return state


def set_rng_state(state: dict) -> None:
    import numpy as np

    raw = np.frombuffer(base64.b64decode(state["torch"]), dtype=np.uint8).copy()
    torch.set_rng_state(torch.from_numpy(raw))
    if "cuda" in state and torch.cuda.is_available():
        raw = np.frombuffer(base64.b64decode(state["cuda"]), dtype=np.uint8).copy()
        torch.cuda.set_rng_state(torch.from_numpy(raw))


def save(
    run_dir: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    meta: dict,
    keep_last: int,
) -> Path:
    """Collective: every rank calls it. Returns the final checkpoint folder."""
    root = checkpoint_dir(run_dir)
    name = checkpoint_name(step)
    final = root / name
    tmp = root / f".tmp-{name}"
    if _rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    state = _dcp_state(model, optimizer)
    with _quiet_dcp():
        # sync_files: each rank fsyncs the shards it wrote (on its own node) before the barrier.
        dcp.save(state, storage_writer=FileSystemWriter(str(tmp), sync_files=True))
    _barrier()
    if _rank() == 0:
        # Shards and folder durable first, then meta.json and COMPLETE: after a power loss the
        # marker never vouches for files that did not reach the disk.
        fsync_tree(tmp)
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        write_json(tmp / META, {**meta, "step": step, "has_optimizer": optimizer is not None, "files": files})
        write_text(tmp / COMPLETE, "ok\n")
        if final.exists():  # a re-save of the same step (e.g. after a resume): replace it whole
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_tree(root, files=False)
        write_text(root / LATEST, name + "\n")
        _prune(root, keep_last)
    _barrier()
    return final


def fsync_tree(folder: Path, files: bool = True) -> None:
    """fsync every file directly in `folder` (when `files`), then the folder itself (its entries)."""
    if files:
        for f in sorted(folder.iterdir()):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _prune(root: Path, keep_last: int) -> None:
    """Keep the newest `keep_last` checkpoints, plus every phase's final one: those are the
    branch points later phases (and other runs) start from."""
    done = [p for p in list_checkpoints(root) if (p / COMPLETE).exists()]
    for old in done[:-keep_last]:
        try:
            if json.loads((old / META).read_text(encoding="utf-8"))["state"]["phase_complete"]:
                continue
        except (OSError, ValueError, KeyError, TypeError):
            pass
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob(".tmp-step_*"):
        shutil.rmtree(stale, ignore_errors=True)


def load(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
    """Collective: load model (and optimizer, when given) state in place, whatever the sharding."""
    state = _dcp_state(model, optimizer)
    with _quiet_dcp():
        dcp.load(state, checkpoint_id=str(path))
    set_state_dict(
        model,
        optimizer if optimizer is not None else [],
        model_state_dict=state["model"],
        optim_state_dict=state.get("optim", {}),
    )


def _dcp_state(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict:
    """What a checkpoint holds, as plain-named (possibly sharded) state dicts: saved and loaded alike.
    One get_state_dict call: each walks every parameter (and, for the optimizer, every state)."""
    msd, osd = get_state_dict(model, optimizer if optimizer is not None else [])
    return {"model": msd} if optimizer is None else {"model": msd, "optim": osd}


@contextlib.contextmanager
def _quiet_dcp() -> Iterator[None]:
    """DCP warns on every single-process save/load that it assumes no process group is wanted."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to")
        yield


def load_from(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None, log=print) -> Loaded:
    """Load another run's latest usable checkpoint (or one checkpoint folder): for branching."""
    path = Path(path)
    if (path / META).exists() or (path / COMPLETE).exists():
        try:
            meta = validate(path)
        except ValueError as e:
            raise CheckpointError(f"{path}: {e}") from None
        reason = _try_load(path, model, optimizer)
        if reason is not None:
            raise CheckpointError(f"{path}: {reason}")
        return Loaded(path, meta)
    loaded = load_latest(path, model, optimizer, log=log)
    if loaded is None:
        raise CheckpointError(f"{path}: no checkpoint to start from under {checkpoint_dir(path)}")
    return loaded


@dataclass
class Loaded:
    path: Path
    meta: dict


def _try_load(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> str | None:
    """Load one checkpoint; None on success, else why it failed (one line)."""
    try:
        load(path, model, optimizer)
    except (Exception, CheckpointException) as e:  # noqa: BLE001 - DCP raises many types (one a BaseException); the reason goes into a CheckpointError or a loud fallback, never dropped
        first = (str(e).strip().splitlines() or [""])[0][:300]
        return f"cannot be read ({type(e).__name__}: {first})"
    return None


def load_latest(
    run_dir: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None, log=print
) -> Loaded | None:
    """Load the newest checkpoint that validates and reads; None only when the run has none at all.

    Checkpoints exist but none loads -> CheckpointError naming each one and why, before anything in
    the run folder is touched: a run is never silently restarted (which would truncate its metrics
    and, as the new run reaches their step numbers, replace its checkpoints). A newer checkpoint
    skipped for an older one is reported loudly."""
    root = checkpoint_dir(run_dir)
    failures: list[str] = []
    for path in reversed(list_checkpoints(root)):
        try:
            meta = validate(path)
            reason = _try_load(path, model, optimizer)
        except ValueError as e:
            reason = str(e)
        if reason is not None:
            failures.append(f"{path.name}: {reason}")
            continue
        if failures:
            log(
                f"warning: skipped {len(failures)} newer checkpoint(s) that cannot be resumed "
                f"({'; '.join(failures)}); falling back to the earlier {path}"
            )
        return Loaded(path, meta)
    if failures:
        raise CheckpointError(
            f"{root}: none of the {len(failures)} checkpoint(s) can be resumed: {'; '.join(failures)}. "
            "Nothing in the run folder was changed. Fix the cause and run again, or pass --restart to "
            "start over (the old checkpoints and metrics are then moved aside, not deleted)"
        )
    return None
