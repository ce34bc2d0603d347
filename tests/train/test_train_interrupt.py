"""Ctrl-C keeps progress: the first one checkpoints at the step boundary and exits 75 (like SIGTERM),
a second aborts at once; the rerun says where it resumes."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from train_helpers import GAPERON, env1, losses, recipe

from gaperon.errors import EXIT_REQUEUE

N = 20


def test_first_ctrl_c_checkpoints_and_the_rerun_resumes(tmp_path):
    phases = [
        {"name": "a", "mixture": "synthetic", "seq_len": 32, "steps": N, "seed": 1, "lr": {"peak": 3e-3}}
    ]
    path = recipe(tmp_path, phases=phases, checkpoint={"every": 4, "keep_last": 2}, eval={"every": 100})
    out = tmp_path / "run"
    cmd = [GAPERON, "train", str(path), "--out", str(out)]
    proc = subprocess.Popen(
        cmd,
        env=env1(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a shell's background job would otherwise inherit SIGINT ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    latest = out / "checkpoints" / "latest"
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None and not latest.exists():
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=90)
    assert proc.returncode == EXIT_REQUEUE, stdout + stderr
    assert "Ctrl-C: checkpointing at the end of this step" in stderr
    assert "stop requested: checkpointed at step" in stdout
    stopped = len(losses(out))
    assert stopped < N, "the run finished before the Ctrl-C"
    assert (out / "checkpoints" / f"step_{stopped:08d}" / "COMPLETE").exists()  # nothing lost
    res = subprocess.run(cmd, env=env1(), capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"resuming at step {stopped} of {N}: {stopped} steps done, {N - stopped} to go" in res.stdout
    assert [s for s, _ in losses(out)] == list(range(1, N + 1))


def test_second_ctrl_c_aborts_at_once(tmp_path):
    from gaperon.train.distributed import StopRequest

    outer = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in an interactive process
    stop = StopRequest(tmp_path)
    stop.install()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.01)  # the handler runs at the next bytecode boundary
        assert stop.flag and stop.interrupts == 1
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.5)
    finally:
        stop.uninstall()
        restored = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, outer)
    assert restored is signal.default_int_handler


def test_quickstart_checkpoints_inside_every_phase():
    from pathlib import Path

    from gaperon.train.config import load_recipe, phase_steps

    r = load_recipe(Path(__file__).resolve().parents[2] / "recipes" / "quickstart.yaml")
    start = 0
    for p in r.phases:
        n = phase_steps(p, r.batch.global_batch)
        inside = [g for g in range(start + 1, start + n) if g % r.checkpoint.every == 0]
        assert inside, f"phase {p.name} (steps {start + 1}-{start + n}) only checkpoints at its end"
        start += n
