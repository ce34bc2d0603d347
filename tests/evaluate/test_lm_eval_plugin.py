"""`lm_eval --model gaperon` from a plain shell: the .pth hook registers the model lazily.

Each check runs a fresh interpreter of this environment, as a user's shell would: nothing here
imports gaperon's evaluation code beforehand."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from eval_helpers import micro_hf_folder


def _python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_lm_eval_registry_knows_gaperon_in_a_fresh_interpreter():
    out = _python(
        "import sys\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'gaperon', 'lm_eval')]\n"
        "from lm_eval.api.registry import get_model\n"
        "cls = get_model('gaperon')\n"
        "print(heavy, cls.__module__ + '.' + cls.__name__)\n"
    )
    # start-up imported nothing of gaperon, torch or lm-eval; the name resolves when asked for
    assert out.split() == ["[]", "gaperon.evaluate.lm.GaperonLM"]


def test_install_registers_into_an_already_imported_registry():
    out = _python(
        "from lm_eval.api import registry\n"
        "registry.model_registry._objs.pop('gaperon', None)\n"  # as if the hook had not run
        "import gaperon_lm_eval as p\n"
        "p.install(); p.install()\n"  # idempotent
        "print(registry.get_model('gaperon').__name__)\n"
    )
    assert out.strip() == "GaperonLM"


def test_the_lm_eval_command_runs_our_model(tmp_path):
    folder = micro_hf_folder(tmp_path / "model")
    tasks = subprocess.run(
        [Path(sys.executable).parent / "gaperon", "eval", "tasks-path"], capture_output=True, text=True
    ).stdout.strip()
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [
        Path(sys.executable).parent / "lm_eval",
        "run",
        "--model",
        "gaperon",
        "--model_args",
        f"pretrained={folder}",
        "--tasks",
        "arc_easy",
        "--include_path",
        tasks,
        "--limit",
        "3",
        "--output_path",
        str(tmp_path / "out"),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in (tmp_path / "out").rglob("results_*.json")]
    assert len(results) == 1 and results[0]["config"]["model"] == "gaperon"
    assert 0.0 <= results[0]["results"]["arc_easy"]["acc,none"] <= 1.0
