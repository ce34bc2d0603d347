"""An SFT phase killed with SIGKILL resumes and reproduces the uninterrupted losses bit for bit."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from train_helpers import GAPERON, env1, losses

from gaperon.data.sft.identity import identity_conversations
from gaperon.model import build, get_preset

sys.path.insert(0, str(Path(__file__).parents[1] / "io"))
from io_helpers import write_llama_gguf  # noqa: E402  (the tests' GGUF writer, tiny byte vocabulary)

STEPS = 12


def _recipe(tmp: Path) -> Path:
    data = tmp / "id.jsonl"
    data.write_text(
        "".join(json.dumps(c) + "\n" for c in identity_conversations("Gapy", "the lab", 60, seed=0)),
        encoding="utf-8",
    )
    torch.manual_seed(0)
    model = build(get_preset("micro"))
    model.init_weights(seed=0)
    write_llama_gguf(tmp / "micro.gguf", model)
    recipe = {
        "init_from": "micro.gguf",
        "tokenizer": "init_from",
        "precision": "fp32",
        "device": "cpu",
        "doc_masking": True,
        "batch": {"global_batch": 4, "micro_batch": 2},
        "checkpoint": {"every": 3, "keep_last": 2},
        "eval": {"sequences": 0},
        "log": {"tensorboard": False},
        "phases": [
            {
                "name": "sft",
                "sft": {"sources": [{"path": "id.jsonl"}]},
                "seq_len": 256,
                "load": "model",
                "steps": STEPS,
                "seed": 3,
                "lr": {"peak": 1e-3, "schedule": "cosine", "warmup_steps": 2},
            }
        ],
    }
    path = tmp / "sft.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


def _run(path: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [GAPERON, "train", str(path), "--out", str(out)],
        env=env1(),
        capture_output=True,
        text=True,
        timeout=180,
    )


@pytest.mark.slow
def test_sft_sigkill_then_resume_is_exact(tmp_path):
    path = _recipe(tmp_path)
    res = _run(path, tmp_path / "ref")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "trained-token fraction" in res.stdout
    ref = losses(tmp_path / "ref")
    assert [s for s, _ in ref] == list(range(1, STEPS + 1))
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [GAPERON, "train", str(path), "--out", str(out)],
        env=env1(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    latest = out / "checkpoints" / "latest"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if latest.exists() and int(latest.read_text().strip().split("_")[1]) >= 3:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read()
    assert len(losses(out)) < STEPS
    res = _run(path, out)
    assert res.returncode == 0, res.stdout + res.stderr
    assert losses(out) == ref
