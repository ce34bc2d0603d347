"""scripts/slurm/train.sbatch with fake srun/scontrol: the walltime signal checkpoints and requeues,
and the requeued job (same command) resumes and finishes."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from train_helpers import env1, losses, recipe

ROOT = Path(__file__).resolve().parents[2]
SBATCH = ROOT / "scripts" / "slurm" / "train.sbatch"


def _fakes(tmp: Path) -> Path:
    bin_ = tmp / "bin"
    bin_.mkdir()
    (bin_ / "srun").write_text('#!/usr/bin/env bash\nwhile [[ "$1" == --* ]]; do shift; done\nexec "$@"\n')
    (bin_ / "scontrol").write_text(
        "#!/usr/bin/env bash\n"
        'if [ "$1" = show ]; then echo 127.0.0.1; else echo "$@" >> "$FAKE_SLURM_LOG"; fi\n'
    )
    for f in bin_.iterdir():
        f.chmod(0o755)
    return bin_


def _env(tmp: Path, bin_: Path) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = env1()
    env.update(
        PATH=f"{bin_}:{env['PATH']}",
        VENV=str(Path(sys.executable).parent.parent),
        GPUS_PER_NODE="1",
        SLURM_JOB_ID="42",
        SLURM_JOB_NODELIST="node1",
        SLURM_JOB_NUM_NODES="1",
        MASTER_PORT=str(port),
        FAKE_SLURM_LOG=str(tmp / "slurm.log"),
    )
    return env


@pytest.mark.slow
def test_walltime_signal_requeues_and_the_requeued_job_resumes(tmp_path):
    phases = [
        {"name": "a", "mixture": "synthetic", "seq_len": 32, "steps": 40, "seed": 1, "lr": {"peak": 3e-3}}
    ]
    path = recipe(tmp_path, phases=phases, checkpoint={"every": 5, "keep_last": 2})
    out = tmp_path / "run"
    env = _env(tmp_path, _fakes(tmp_path))
    job = subprocess.Popen(
        ["bash", str(SBATCH), str(path), str(out)],
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline and job.poll() is None and not (out / "checkpoints" / "latest").exists():
        time.sleep(0.01)
    job.send_signal(signal.SIGUSR1)
    log = job.communicate(timeout=120)[0]
    assert job.returncode == 0, log
    assert "requeue 42" in (tmp_path / "slurm.log").read_text(), log
    stopped = len(losses(out))
    assert stopped < 40 and (out / "checkpoints" / f"step_{stopped:08d}" / "COMPLETE").exists()
    # The requeued job: the same command; it resumes and finishes without asking for a requeue.
    (tmp_path / "slurm.log").unlink()
    res = subprocess.run(
        ["bash", str(SBATCH), str(path), str(out)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert res.returncode == 0, res.stdout[-3000:]
    assert not (tmp_path / "slurm.log").exists()
    assert [s for s, _ in losses(out)] == list(range(1, 41))
