"""Small recipes on the synthetic source and the micro model, for fast CPU trainer tests."""

from __future__ import annotations

import copy
import os
import sys
from pathlib import Path

import yaml

GAPERON = str(Path(sys.executable).with_name("gaperon"))
TORCHRUN = str(Path(sys.executable).with_name("torchrun"))

BASE = {
    "model": {"preset": "micro"},
    "tokenizer": None,
    "precision": "fp32",
    "device": "cpu",
    "batch": {"global_batch": 8, "micro_batch": 2},
    "checkpoint": {"every": 3, "keep_last": 2},
    "eval": {"every": 4, "sequences": 8, "batch_size": 4},
    "log": {"tensorboard": False},
    "phases": [
        {
            "name": "a",
            "mixture": "synthetic",
            "seq_len": 32,
            "steps": 6,
            "seed": 1,
            "lr": {"peak": 3.0e-3, "warmup_steps": 2},
        },
    ],
}


def recipe(tmp: Path, name: str = "recipe.yaml", **changes) -> Path:
    """Write BASE updated with top-level `changes` to tmp/name; returns the path."""
    data = copy.deepcopy(BASE)
    data.update(copy.deepcopy(changes))
    path = tmp / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def two_phases(load: str, steps: tuple[int, int] = (4, 3)) -> list[dict]:
    return [
        {
            "name": "a",
            "mixture": "synthetic",
            "seq_len": 32,
            "steps": steps[0],
            "seed": 1,
            "lr": {"peak": 3.0e-3, "warmup_steps": 2},
        },
        {
            "name": "b",
            "mixture": "synthetic",
            "seq_len": 64,
            "steps": steps[1],
            "seed": 2,
            "load": load,
            "lr": {"peak": 1.0e-3, "warmup_steps": 2},
        },
    ]


def env1() -> dict:
    """Subprocess environment: one thread each, so 2-core CI machines are not oversubscribed."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return env


def losses(run_dir: Path) -> list[tuple[int, float]]:
    from gaperon.train.metrics import read_metrics

    return [(r["step"], r["loss"]) for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]
