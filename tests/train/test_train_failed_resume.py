"""A failed resume never restarts a run: it is an error that names every checkpoint and touches
nothing; --restart starts over but moves the old run aside; a bad latest falls back loudly."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from train_helpers import losses, recipe

from gaperon.cli import main
from gaperon.train import train

CKPTS = ["step_00000002", "step_00000004", "step_00000006"]


def _snapshot(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under root: (content hash, mtime in ns)."""
    return {
        str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _garble(ckpt: Path) -> None:
    """Same sizes, marker and meta intact: only reading the shards can tell."""
    for f in ckpt.glob("*.distcp"):
        f.write_bytes(b"\x07" * f.stat().st_size)
    (ckpt / ".metadata").write_bytes(b"\0" * (ckpt / ".metadata").stat().st_size)


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("done")
    path = recipe(tmp, checkpoint={"every": 2, "keep_last": 10})
    train(path, tmp / "run")
    return path, tmp / "run"


def _copy_run(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("damage", ["no_marker", "garbage_shards"])
def test_no_loadable_checkpoint_is_an_error_and_touches_nothing(done, tmp_path, capsys, damage):
    path, ref_run = done
    out = _copy_run(ref_run, tmp_path / "run")
    for name in CKPTS:
        if damage == "no_marker":
            (out / "checkpoints" / name / "COMPLETE").unlink()
        else:
            _garble(out / "checkpoints" / name)
    before = _snapshot(out)
    code = main(["train", str(path), "--out", str(out)])
    err = capsys.readouterr().err
    assert code != 0
    assert "\n" not in err.strip() and "none of the 3 checkpoint(s) can be resumed" in err
    reason = "no COMPLETE marker" if damage == "no_marker" else "cannot be read"
    for name in CKPTS:
        assert f"{name}: {reason}" in err
    assert "--restart" in err
    assert _snapshot(out) == before  # metrics, run.yaml, checkpoints: not one byte or mtime changed


def test_restart_moves_the_old_run_aside(done, tmp_path, capsys):
    path, ref_run = done
    out = _copy_run(ref_run, tmp_path / "run")
    for name in CKPTS:
        (out / "checkpoints" / name / "COMPLETE").unlink()
    before = _snapshot(out)
    assert main(["train", str(path), "--out", str(out), "--restart"]) == 0
    assert "restart: moved the previous run's" in capsys.readouterr().out
    (aside,) = list(out.glob("restarted-*"))
    # Everything the old run had is kept, byte for byte, under the dated folder.
    moved = _snapshot(aside)
    for rel, (digest, _) in before.items():
        assert moved[rel][0] == digest, rel
    assert losses(out) == losses(ref_run)  # the new run is a clean run from step 1
    assert (out / "checkpoints" / "step_00000006" / "COMPLETE").exists()


def test_corrupt_latest_falls_back_loudly(done, tmp_path, capsys):
    path, ref_run = done
    out = _copy_run(ref_run, tmp_path / "run")
    _garble(out / "checkpoints" / "step_00000006")
    assert main(["train", str(path), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "warning: skipped 1 newer checkpoint(s) that cannot be resumed" in text
    assert "step_00000006: cannot be read" in text and "falling back to the earlier" in text
    assert "step_00000004" in text
    assert losses(out) == losses(ref_run)


def test_shards_and_folder_are_fsynced_before_complete(tmp_path, monkeypatch):
    """Every shard file and the checkpoint folder reach the disk before COMPLETE is written.
    (torch's FileSystemWriter syncs by default today; this pins it against a default change.)"""
    import gaperon.train.checkpoint as ckpt

    synced: list[tuple[Path, bool]] = []  # (what was fsynced, COMPLETE already there)
    real = os.fsync

    def spy(fd):
        p = Path(os.readlink(f"/proc/self/fd/{fd}"))
        folder = p if p.is_dir() else p.parent
        synced.append((p, (folder / ckpt.COMPLETE).exists()))
        return real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    train(recipe(tmp_path, checkpoint={"every": 6, "keep_last": 1}), tmp_path / "run")
    tmp_dir = tmp_path / "run" / "checkpoints" / ".tmp-step_00000006"
    before_marker = {p for p, marked in synced if not marked}
    assert tmp_dir in before_marker  # the folder's entries
    for name in ("__0_0.distcp", ".metadata"):
        assert tmp_dir / name in before_marker, name
