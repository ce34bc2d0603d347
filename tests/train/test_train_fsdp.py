"""Two CPU processes (gloo) under torchrun with FSDP2 train like one process."""

from __future__ import annotations

import socket
import subprocess

import pytest
from train_helpers import GAPERON, TORCHRUN, env1, losses, recipe


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("single")
    path = recipe(tmp)
    res = subprocess.run(
        [GAPERON, "train", str(path), "--out", str(tmp / "run")],
        env=env1(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    return path, losses(tmp / "run")


@pytest.mark.slow
@pytest.mark.parametrize(
    "overrides",
    [
        ["parallel.fsdp=full", "parallel.activation_checkpointing=true"],
        ["parallel.fsdp=hybrid", "parallel.shard_size=1"],  # 2-D mesh: 2 replicas x 1 shard
    ],
    ids=["full+ac", "hybrid"],
)
def test_two_processes_match_one(single, tmp_path, overrides):
    path, ref = single
    out = tmp_path / "run"
    cmd = [
        TORCHRUN,
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        GAPERON,
        "train",
        str(path),
        "--out",
        str(out),
        *overrides,
    ]
    res = subprocess.run(cmd, env=env1(), capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    got = losses(out)
    assert [s for s, _ in got] == [s for s, _ in ref]
    for (_, a), (_, b) in zip(got, ref):
        assert a == pytest.approx(b, rel=1e-4)
    # The sharded checkpoint reloads into one plain model.
    from gaperon.io.dcp import load_run_model

    model, tok = load_run_model(out)
    assert tok is None and model.embed_tokens.weight.shape == (512, 64)


def test_fsdp_in_one_process_without_torchrun(single, tmp_path):
    """fsdp: full with no torchrun makes a 1-process group (e.g. one GPU) and trains the same."""
    import torch.distributed as dist

    from gaperon.train import train

    path, ref = single
    train(path, tmp_path / "run", ["parallel.fsdp=full"])
    assert not dist.is_initialized()
    got = losses(tmp_path / "run")
    assert [s for s, _ in got] == [s for s, _ in ref]
    for (_, a), (_, b) in zip(got, ref):
        assert a == pytest.approx(b, rel=1e-4)
