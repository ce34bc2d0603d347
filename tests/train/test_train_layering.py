"""Reading a run's weights does not import the trainer: `io` knows nothing of `train`."""

from __future__ import annotations

import subprocess
import sys


def _imported_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return set(out.stdout.split())


def test_io_dcp_does_not_import_the_trainer():
    mods = _imported_after("import gaperon.io.dcp, gaperon.io.run_format")
    assert "gaperon.io.dcp" in mods
    assert not {m for m in mods if m == "gaperon.train" or m.startswith("gaperon.train.")}


def test_loading_a_run_does_not_import_the_trainer(tmp_path):
    """The lazy path too: load_run_model on a real (micro) run."""
    from train_helpers import recipe

    from gaperon.train import train

    out = tmp_path / "run"
    train(recipe(tmp_path, checkpoint={"every": 6, "keep_last": 1}), out, ["phases.0.steps=2"])
    mods = _imported_after(f"from gaperon.io.dcp import load_run_model\nload_run_model({str(out)!r})")
    assert not {m for m in mods if m.startswith("gaperon.train")}
