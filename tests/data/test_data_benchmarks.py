"""The tokenize benchmarks run at CI size and print what their notes in benchmarks/RESULTS.md quote
(the GIL-wait diagnostic patches `gaperon.data.pack` internals: this catches it falling out of step)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _run(*args: str) -> str:
    res = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


@pytest.mark.slow
def test_tokenize_throughput_compares_worker_counts_and_file_modes():
    out = _run(
        str(BENCH / "tokenize_throughput.py"),
        *(
            "--mb",
            "0.3",
            "--workers",
            "1",
            "2",
            "--repeat",
            "1",
            "--files",
            "2",
            "--parallel",
            "files",
            "blocks",
        ),
    )
    assert "in 2 file(s)" in out
    for row in ("1 worker, end to end", "2 workers (files), end to end", "2 workers (blocks), end to end"):
        assert f"gaperon tokenize, {row}" in out
    assert "/ raw tiktoken encode_to_numpy -> array: wall" in out


@pytest.mark.slow
def test_tokenize_gil_waits_times_every_variant():
    out = _run(str(BENCH / "tokenize_gil_waits.py"), "--mb", "0.3", "--repeat", "1")
    rows = [line for line in out.splitlines() if line.startswith(("raw ", "tokenize"))]
    assert [r.split("  ")[0] for r in rows] == [
        "raw encode_to_numpy",
        "raw encode_to_numpy, a second thread",
        "tokenize (reader + writer threads)",
        "tokenize, no writer",
        "tokenize, pre-read",
        "tokenize, neither",
    ]
    assert all("raw / this = " in r for r in rows[2:])
