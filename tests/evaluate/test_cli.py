"""`gaperon eval`: results in lm-eval's layout plus Markdown and PNG; compare; clear errors."""

from __future__ import annotations

import json

from eval_helpers import FIXTURES, micro_hf_folder

from gaperon.cli import main


def test_eval_writes_lm_eval_results_markdown_and_png_then_compares(tmp_path, capsys):
    model = micro_hf_folder(tmp_path / "model")
    outs = []
    for bs in (1, 8):
        out = tmp_path / f"run{bs}"
        rc = main(
            [
                "eval",
                str(model),
                "--tasks",
                "arc_easy,arc_fr",
                "--data",
                f"arc_easy={FIXTURES / 'arc_easy.jsonl'}",
                "--data",
                f"arc_fr={FIXTURES / 'arc_fr.jsonl'}",
                "--batch-size",
                str(bs),
                "--out",
                str(out),
            ]
        )
        assert rc == 0
        outs.append(out)
    res = [json.loads((o / "results.json").read_text()) for o in outs]
    assert res[0]["results"]["arc_easy"]["acc,none"] == res[1]["results"]["arc_easy"]["acc,none"]
    assert res[0]["n-samples"]["arc_easy"]["effective"] == 4
    md = (outs[0] / "results.md").read_text()
    assert "| arc_easy | acc_norm |" in md and "81.99" in md  # the card number beside the task
    assert (outs[0] / "results.png").read_bytes()[:4] == b"\x89PNG"
    capsys.readouterr()
    assert main(["eval", "compare", str(outs[0]), str(outs[1]), "--out", str(tmp_path / "cmp")]) == 0
    table = capsys.readouterr().out
    assert "| arc_fr |" in table and str(outs[1]) in table
    assert (tmp_path / "cmp" / "compare.png").is_file()


def test_errors_name_the_task_and_path(tmp_path, capsys):
    model = tmp_path / "nowhere"
    assert main(["eval", str(model), "--tasks", "arc_easy,bogus_task"]) == 2
    assert "bogus_task" in capsys.readouterr().err
    assert main(["eval", str(model), "--tasks", "arc_fr", "--data", f"arc_fr={tmp_path / 'x.jsonl'}"]) != 0
    assert "x.jsonl" in capsys.readouterr().err
    assert main(["eval", "compare", str(tmp_path)]) == 2


def test_lm_eval_command_line_with_the_gaperon_model(tmp_path):
    """lm-eval's own CLI (`python -m gaperon.evaluate` = lm_eval with our model registered)."""
    import os
    import subprocess
    import sys

    from gaperon.evaluate.registry import task_folder

    model = micro_hf_folder(tmp_path / "model")
    env = dict(os.environ, GAPERON_EVAL_DATA=f"arc_easy={FIXTURES / 'arc_easy.jsonl'}", OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "gaperon.evaluate", "run", "--model", "gaperon", "--model_args",
           f"pretrained={model}", "--tasks", "arc_easy", "--include_path", str(task_folder()),
           "--limit", "2", "--output_path", str(tmp_path / "lm")]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (path,) = (tmp_path / "lm").rglob("results_*.json")
    assert "acc,none" in json.loads(path.read_text())["results"]["arc_easy"]
