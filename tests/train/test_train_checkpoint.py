"""Corrupt or partial checkpoints are detected and skipped for the previous one, with a message."""

from __future__ import annotations

import json

import pytest
from train_helpers import losses, recipe

from gaperon.io.run_format import find_latest, list_checkpoints
from gaperon.train import train


@pytest.fixture
def run(tmp_path):
    out = tmp_path / "run"
    path = recipe(tmp_path, checkpoint={"every": 2, "keep_last": 10})
    train(path, out)
    return path, out


def test_layout_and_pointer(run):
    _, out = run
    ck = out / "checkpoints"
    assert [p.name for p in list_checkpoints(ck)] == ["step_00000002", "step_00000004", "step_00000006"]
    assert (ck / "latest").read_text().strip() == "step_00000006"
    meta = json.loads((ck / "step_00000006" / "meta.json").read_text())
    assert meta["state"]["global_step"] == 6 and meta["state"]["phase_complete"] is True
    assert set(meta["files"]) >= {".metadata", "__0_0.distcp"} and "rng" in meta and "sampler" in meta
    assert not list(ck.glob(".tmp-*"))


def test_keep_last(tmp_path):
    out = tmp_path / "run"
    train(recipe(tmp_path, checkpoint={"every": 1, "keep_last": 2}), out)
    assert [p.name for p in list_checkpoints(out / "checkpoints")] == ["step_00000005", "step_00000006"]


@pytest.mark.parametrize("damage", ["truncate", "no_marker", "bad_meta", "garbage_same_size"])
def test_damaged_latest_is_skipped(run, damage):
    path, out = run
    ref = losses(out)
    last = out / "checkpoints" / "step_00000006"
    shard = last / "__0_0.distcp"
    if damage == "truncate":
        shard.write_bytes(shard.read_bytes()[:100])
    elif damage == "no_marker":
        (last / "COMPLETE").unlink()
    elif damage == "bad_meta":
        (last / "meta.json").write_text("{not json")
    else:
        (last / ".metadata").write_bytes(b"\0" * (last / ".metadata").stat().st_size)
    messages = []
    found = find_latest(out, log=messages.append)
    if damage != "garbage_same_size":  # sizes and marker fine: only the actual load can tell
        assert found[0].name == "step_00000004"
        assert "step_00000006 is unusable" in messages[0] and "trying the previous one" in messages[0]
    # Re-running resumes from step 4, redoes steps 5-6 identically and rewrites a good step 6.
    (out / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": v}) + "\n" for s, v in ref))
    res = train(path, out)
    assert res.status == "complete"
    assert losses(out) == ref
    assert find_latest(out)[0].name == "step_00000006"
