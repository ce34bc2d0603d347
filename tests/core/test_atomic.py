"""gaperon.atomic: a failed write never replaces or damages what was there."""

from __future__ import annotations

import json
import logging
import os

import pytest

from gaperon.atomic import atomic_path, write_json, write_text


def test_file_written_then_renamed(tmp_path):
    target = tmp_path / "sub" / "a.json"
    write_json(target, {"x": "é"})
    assert json.loads(target.read_text(encoding="utf-8")) == {"x": "é"}
    assert [p.name for p in target.parent.iterdir()] == ["a.json"]  # no temporary left behind


def test_failure_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_folders_are_replaced_whole(tmp_path):
    target = tmp_path / "model"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "w.bin").write_bytes(b"1")
    with pytest.raises(ValueError), atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "w.bin").write_bytes(b"2")
        raise ValueError("export failed")
    assert (target / "w.bin").read_bytes() == b"1"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "other.bin").write_bytes(b"3")
    assert sorted(p.name for p in target.iterdir()) == ["other.bin"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


DEAD_PID = 4_194_304 + 7  # above Linux's largest pid_max: no such process


def test_leftovers_of_killed_writers_are_removed_and_reported(tmp_path, caplog):
    target = tmp_path / "model"
    dead = tmp_path / f".model.tmp-{DEAD_PID}-0badf00d"  # a killed import's half-written folder
    (dead / "sub").mkdir(parents=True)
    (dead / "sub" / "w.safetensors").write_bytes(b"x" * 1000)
    legacy = tmp_path / ".model.tmp-deadbeef"  # the name older versions used
    legacy.write_bytes(b"half")
    live = tmp_path / f".model.tmp-{os.getpid()}-12345678"  # a write in progress (this process)
    live.mkdir()
    other = tmp_path / ".model2.tmp-deadbeef"  # another target's: not ours to touch
    other.write_bytes(b"x")
    with caplog.at_level(logging.WARNING, logger="gaperon.atomic"), atomic_path(target) as tmp:
        tmp.mkdir()
    assert not dead.exists() and not legacy.exists() and live.exists() and other.exists()
    assert str(dead) in caplog.text and "interrupted write" in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model", live.name, other.name])
