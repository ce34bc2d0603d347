"""IFBench through lm-eval's simple_evaluate with a canned LM: compliant answers score 1, others 0."""

from __future__ import annotations

import importlib.util
import json
import socket

import pytest
from judge_fake_lm import CannedLM, evaluate, tasks_dir


def _utils():
    path = tasks_dir() / "ifbench" / "ifbench_utils.py"
    spec = importlib.util.spec_from_file_location("ifbench_utils", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ifbench_utils = _utils()


def giggle_answer(position: int) -> str:
    sentences = [f"This is sentence number {i}." for i in range(1, 22)]
    words = [f"w{i}" for i in range(1, 40)]
    words[position - 1] = "giggle"
    return " ".join(sentences) + " " + " ".join(words) + "."


# key -> (compliant, non-compliant); instructions: keywords x1 x2 x3 x5 x7, stop words <= 23%,
# no whitespace, keyword as the 33rd word of the 22nd sentence (needs the offline word tokenizer).
CANNED = {
    "2": (
        "door bread bread blue blue blue lamp lamp lamp lamp lamp " + "river " * 7,
        "door bread blue lamp river",
    ),
    "172": (
        "Use os.path.basename: filename = os.path.basename(filepath) returns final component.",
        "It is the one that is in the path of the file and it is what you want to have.",
    ),
    "296": ("No,properclassesarenotsets.", "No, they are not."),
    "10": (giggle_answer(33), giggle_answer(32)),
}


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    path = tmp_path_factory.mktemp("ifbench") / "subset.jsonl"
    with open(ifbench_utils.packaged_data(), encoding="utf-8") as f, open(path, "w", encoding="utf-8") as out:
        for line in f:
            if json.loads(line)["key"] in CANNED:
                out.write(line)
    return path


def test_packaged_prompts_load_without_the_model_instruction():
    rows = ifbench_utils.read_prompts(ifbench_utils.packaged_data())
    assert len(rows) == 288  # 294 minus the 6 words:start_verb prompts
    assert not any("words:start_verb" in r["instruction_id_list"] for r in rows)


def test_compliant_answers_pass_and_others_fail(subset, monkeypatch):
    def no_network(*a, **k):
        raise AssertionError("the scorer tried the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)

    def run(which: int):
        lm = CannedLM(lambda doc, _i: CANNED[doc["key"]][which])
        res = evaluate(lm, "ifbench", data_files=str(subset))["results"]["ifbench"]
        return lm, res

    lm, good = run(0)
    assert len(lm.seen) == 4
    assert lm.seen[0][1]["max_gen_toks"] == 1280 and lm.seen[0][1]["until"] == []
    for metric in (
        "prompt_level_strict_acc",
        "inst_level_strict_acc",
        "prompt_level_loose_acc",
        "inst_level_loose_acc",
    ):
        assert good[f"{metric},none"] == 1.0
    _, bad = run(1)
    assert bad["prompt_level_strict_acc,none"] == 0.0 and bad["inst_level_loose_acc,none"] == 0.0


def test_loose_scoring_forgives_a_preamble_line():
    doc = next(r for r in ifbench_utils.read_prompts(ifbench_utils.packaged_data()) if r["key"] == "296")
    res = ifbench_utils.process_results(doc, ["Sure! Here it is:\n**No,properclassesarenotsets.**"])
    assert res["prompt_level_strict_acc"] is False and res["prompt_level_loose_acc"] is True


def test_bad_rows_name_the_line(tmp_path):
    from gaperon.errors import DataError

    p = tmp_path / "x.jsonl"
    p.write_text('{"key": 1, "prompt": "p", "instruction_id_list": ["a"], "kwargs": []}\n')
    with pytest.raises(DataError, match="x.jsonl:1: instruction_id_list and kwargs"):
        ifbench_utils.read_prompts(p)
