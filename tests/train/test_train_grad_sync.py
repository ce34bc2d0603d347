"""FSDP2 with gradient accumulation reduces gradients once per optimizer step, not once per
micro-batch, and trains to the same weights (2 CPU processes, gloo)."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import pytest
import torch
from train_helpers import TORCHRUN, env1, recipe

STEPS = 3
WORKER = Path(__file__).with_name("fsdp_sync_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(path: Path, out: Path, grad_sync: str) -> int:
    cmd = [
        TORCHRUN,
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
    ]
    cmd += [str(WORKER), str(path), str(out), "parallel.fsdp=full", f"parallel.grad_sync={grad_sync}"]
    env = env1()
    env["PYTHONPATH"] = str(WORKER.parent)
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    counts = {json.loads((out / f"reduce_scatters.{r}.json").read_text())["calls"] for r in (0, 1)}
    assert len(counts) == 1  # both ranks take part in every collective
    return counts.pop()


@pytest.mark.slow
def test_one_reduce_scatter_per_step_same_weights(tmp_path):
    from gaperon.io.dcp import load_run_model

    phases = [
        {"name": "a", "mixture": "synthetic", "seq_len": 32, "steps": STEPS, "seed": 1, "lr": {"peak": 3e-3}}
    ]
    # global batch 8 = micro batch 2 x 2 ranks x 2 micro-batches per step
    path = recipe(tmp_path, phases=phases, eval={"every": 100, "sequences": 0}, checkpoint={"every": STEPS})
    once = _run(path, tmp_path / "once", "per_step")
    every = _run(path, tmp_path / "every", "per_micro_batch")
    groups = 2 + 1  # micro preset: 2 blocks, each its own FSDP group, plus the root
    n_micro = 8 // (2 * 2)
    assert once == STEPS * groups
    assert every == STEPS * groups * n_micro
    a, _ = load_run_model(tmp_path / "once")
    b, _ = load_run_model(tmp_path / "every")
    sb = b.state_dict()
    for name, w in a.state_dict().items():
        torch.testing.assert_close(w, sb[name], rtol=1e-5, atol=1e-6, msg=name)
    # Not vacuous: the weights did move away from their initialisation.
    from gaperon.model.presets import build, get_preset

    init = build(get_preset("micro"), device="cpu")
    init.init_weights(seed=0)
    moved = max((w - init.state_dict()[n]).abs().max().item() for n, w in a.state_dict().items())
    assert moved > 1e-3
