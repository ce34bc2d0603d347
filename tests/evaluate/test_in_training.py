"""Recipe `eval.tasks`: a micro training run scores a tiny task file and logs it to metrics.jsonl."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml
from eval_helpers import FIXTURES

sys.path.insert(0, str(Path(__file__).parents[1] / "train"))
from train_helpers import BASE  # noqa: E402


def test_micro_run_logs_benchmark_scores(tmp_path, monkeypatch):
    from gaperon.train.loop import train
    from gaperon.train.metrics import read_metrics

    monkeypatch.setenv("GAPERON_EVAL_DATA", f"arc_easy={FIXTURES / 'arc_easy.jsonl'}")
    vocab = {"vocab_size": 128_256, "bos_token_id": 128_000, "eos_token_id": 128_001}
    recipe = dict(BASE, tokenizer="llama3", model={"preset": "micro", "overrides": vocab})
    recipe["eval"] = {"every": 100, "sequences": 0, "tasks": ["arc_easy"], "task_every": 3, "task_limit": 2}
    recipe["phases"] = [dict(BASE["phases"][0], steps=3)]
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    res = train(path, tmp_path / "run")
    assert res.status == "complete"
    recs = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "eval/arc_easy/acc" in r]
    assert len(recs) == 1 and recs[0]["step"] == 3
    assert recs[0]["eval/arc_easy/acc"] in (0.0, 0.5, 1.0)  # 2 items
