"""The throughput benchmark runs on CPU at CI size and prints the ratio against transformers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from train_helpers import env1

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "train_throughput.py"


@pytest.mark.slow
def test_benchmark_runs_on_cpu():
    pytest.importorskip("transformers")
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "micro", "--seq", "32", "--steps", "1", "--warmup", "1"],
        env=env1(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "gaperon" in res.stdout and "transformers" in res.stdout
    assert "ratio gaperon / transformers:" in res.stdout
