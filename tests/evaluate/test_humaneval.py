"""HumanEval through lm-eval's simple_evaluate with a canned LM: the scoring alone, no model."""

from __future__ import annotations

import importlib.util
import math

import pytest
from judge_fake_lm import CannedLM, evaluate, tasks_dir


def _utils():
    spec = importlib.util.spec_from_file_location(
        "humaneval_utils", tasks_dir() / "humaneval" / "humaneval_utils.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


humaneval_utils = _utils()


def test_canonical_solutions_pass_and_wrong_ones_fail():
    right = CannedLM(lambda doc, _i: doc["canonical_solution"])
    res = evaluate(right, "humaneval", limit=6)
    assert res["results"]["humaneval"]["pass@1,sandbox"] == 1.0
    context, kwargs = right.seen[0]
    assert context.startswith("from typing import List") and "def has_close_elements" in context
    assert kwargs["until"] == ["\nclass", "\ndef", "\n#", "\nif", "\nprint"] and kwargs["do_sample"] is False

    wrong = CannedLM(lambda _doc, _i: "    return None\n")
    assert evaluate(wrong, "humaneval", limit=6)["results"]["humaneval"]["pass@1,sandbox"] == 0.0


def test_pass_at_k_with_n_samples():
    # Sample i is right when i % 4 == 0: c = 16 of n = 64.
    def answer(doc, i):
        return doc["canonical_solution"] if i % 4 == 0 else "    raise ValueError('no')\n"

    lm = CannedLM(answer)
    res = evaluate(lm, "humaneval_64", limit=1)["results"]["humaneval_64"]
    assert len(lm.seen) == 64 and lm.seen[0][1]["do_sample"] is True and lm.seen[0][1]["temperature"] == 0.2
    for k in (1, 2, 8, 16, 32, 64):
        assert res[f"pass@{k},sandbox"] == pytest.approx(humaneval_utils.pass_at_k(64, 16, k))
    assert res["pass@1,sandbox"] == pytest.approx(0.25)
    assert res["pass@64,sandbox"] == 1.0
    assert 0.25 < res["pass@2,sandbox"] < res["pass@8,sandbox"] < 1.0


def test_unbiased_estimator_against_brute_force():
    from itertools import combinations

    for n, c in [(5, 0), (5, 2), (6, 3), (4, 4)]:
        samples = [1] * c + [0] * (n - c)
        for k in range(1, n + 1):
            combos = list(combinations(samples, k))
            assert humaneval_utils.pass_at_k(n, c, k) == pytest.approx(
                sum(any(s) for s in combos) / len(combos)
            )
    assert math.isnan(humaneval_utils.pass_at_k(1, 1, 2))


def test_escaping_completions_score_zero(monkeypatch):
    monkeypatch.setattr(humaneval_utils, "TIMEOUT_S", 2.0)
    escapes = [
        "    import socket; socket.create_connection(('1.1.1.1', 53), timeout=1); return []\n",
        "    import time; time.sleep(60)\n",
    ]
    doc = humaneval_utils.read_problems(humaneval_utils.packaged_data())[0]
    statuses = humaneval_utils.execute([escapes], [doc])[0]
    assert statuses[0] == "failed" and statuses[1] in ("timeout", "killed")


def test_problems_file_errors_name_the_line(tmp_path):
    from gaperon.errors import DataError

    p = tmp_path / "he.jsonl"
    p.write_text(
        '{"task_id": "t", "prompt": "def f():\\n", "test": "", "entry_point": "f"}\n{"task_id": 3}\n'
    )
    with pytest.raises(DataError, match="he.jsonl:2: field 'task_id'"):
        humaneval_utils.read_problems(p)


def test_a_local_copy_of_the_problems_is_read(tmp_path):
    import gzip
    import json

    src = humaneval_utils.read_problems(humaneval_utils.packaged_data())[:3]
    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in src))
    for given in (str(path), [str(path)], {"test": str(path)}):
        assert humaneval_utils.load(data_files=given)["test"]["task_id"] == [r["task_id"] for r in src]
    with gzip.open(humaneval_utils.packaged_data(), "rt") as f:
        assert sum(1 for _ in f) == len(humaneval_utils.load()["test"]) == 164
