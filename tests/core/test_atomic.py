"""gaperon.atomic: a failed write never replaces or damages what was there."""

from __future__ import annotations

import json

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
