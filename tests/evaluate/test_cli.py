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
