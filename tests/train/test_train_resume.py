"""Crash safety: a run killed at any point resumes and reproduces the uninterrupted losses exactly."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from train_helpers import GAPERON, env1, losses, recipe

N1, N2 = 24, 16


def _recipe(tmp: Path) -> Path:
    phases = [
        {
            "name": "a",
            "mixture": "synthetic",
            "seq_len": 32,
            "steps": N1,
            "seed": 1,
            "lr": {"peak": 3.0e-3, "warmup_steps": 3, "schedule": "cosine"},
        },
        {"name": "b", "mixture": "synthetic", "seq_len": 64, "steps": N2, "seed": 2, "load": "cooldown"},
    ]
    return recipe(tmp, phases=phases, checkpoint={"every": 5, "keep_last": 2}, doc_masking=True)


def _run(path: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [GAPERON, "train", str(path), "--out", str(out)],
        env=env1(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def _start_and_interrupt(path: Path, out: Path, sig: int, after_step: int) -> subprocess.Popen:
    """Start a run; once a checkpoint at >= after_step is complete, send `sig`."""
    proc = subprocess.Popen(
        [GAPERON, "train", str(path), "--out", str(out)],
        env=env1(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    latest = out / "checkpoints" / "latest"
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None:
        if latest.exists() and int(latest.read_text().strip().split("_")[1]) >= after_step:
            proc.send_signal(sig)
            break
        time.sleep(0.002)
    proc.wait(timeout=60)
    return proc


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    path = _recipe(tmp)
    res = _run(path, tmp / "run")
    assert res.returncode == 0, res.stdout + res.stderr
    got = losses(tmp / "run")
    assert [s for s, _ in got] == list(range(1, N1 + N2 + 1))
    return path, got


@pytest.mark.slow
def test_sigkill_then_resume_is_exact(reference, tmp_path):
    path, ref = reference
    out = tmp_path / "run"
    proc = _start_and_interrupt(path, out, signal.SIGKILL, after_step=5)
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read()
    killed_at = len(losses(out))
    assert killed_at < N1 + N2, "the run finished before it could be killed"
    res = _run(path, out)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "resuming at step" in res.stdout
    assert losses(out) == ref  # bit for bit, every step once


@pytest.mark.slow
def test_sigterm_checkpoints_exits_75_and_resumes_exactly(reference, tmp_path):
    path, ref = reference
    out = tmp_path / "run"
    proc = _start_and_interrupt(path, out, signal.SIGTERM, after_step=N1 + 5)  # inside phase b
    output = proc.stdout.read()
    assert proc.returncode == 75, output
    assert "stop requested: checkpointed at step" in output
    stopped_at = len(losses(out))
    assert (out / "checkpoints" / f"step_{stopped_at:08d}" / "COMPLETE").exists()
    res = _run(path, out)
    assert res.returncode == 0, res.stdout + res.stderr
    assert losses(out) == ref


def test_stop_file_is_a_stop_request(tmp_path, monkeypatch):
    """What the SLURM script does on the walltime signal: touch RUN_DIR/STOP (in-process run)."""
    from gaperon.train import EXIT_REQUEUE, train
    from gaperon.train.loop import Trainer

    path, out = _recipe(tmp_path), tmp_path / "run"
    real_step = Trainer.train_step

    def step_then_stop(self, state):
        rec = real_step(self, state)
        if state.global_step == 7:
            (out / "STOP").touch()
        return rec

    monkeypatch.setattr(Trainer, "train_step", step_then_stop)
    res = train(path, out)
    assert (res.status, res.exit_code, res.state.global_step) == ("preempted", EXIT_REQUEUE, 7)
    assert (out / "checkpoints" / "step_00000007" / "COMPLETE").exists()
    monkeypatch.setattr(Trainer, "train_step", real_step)
    res = train(path, out)
    assert res.status == "complete" and not (out / "STOP").exists()
    assert [s for s, _ in losses(out)] == list(range(1, N1 + N2 + 1))
