"""Every task loads offline, in lm-eval's own prompt format, from our exports or the user's files."""

from __future__ import annotations

import json

import pytest
from eval_helpers import FIXTURES

from gaperon.errors import DataError, UsageError
from gaperon.evaluate import data, registry

EXPORTED = {"arc_easy": 2376, "arc_challenge": 1172, "hellaswag": 10042, "commonsense_qa": 1221}
FRENCH = [
    "belebele_fra_Latn",
    "belebele_eng_Latn",
    "french_bench_arc_challenge",
    "french_bench_hellaswag",
    "arc_fr",
    "hellaswag_fr",
    "m_mmlu_fr",
]


def eval_docs(task):
    docs = task.test_docs() if task.has_test_docs() else task.validation_docs()
    return list(docs)


@pytest.fixture(scope="module")
def manager():
    return registry.task_manager()


def test_exported_tasks_load_offline_with_lm_eval_prompts(manager):
    tasks = manager.load(list(EXPORTED))["tasks"]
    for name, n in EXPORTED.items():
        docs = eval_docs(tasks[name])
        assert len(docs) == n, name
    arc = tasks["arc_easy"]
    doc = eval_docs(arc)[0]
    assert arc.doc_to_text(doc) == f"Question: {doc['question']}\nAnswer:"
    assert arc.doc_to_choice(doc) == doc["choices"]["text"]
    assert arc.config.metric_list[1]["metric"] == "acc_norm"  # lm-eval's metrics, not ours
    hs = eval_docs(tasks["hellaswag"])[0]
    assert len(hs["choices"]) == 4 and hs["query"]  # lm-eval's hellaswag process_docs ran


def test_arc_test_rebuilt_from_olmes_requests_matches_validation_schema():
    rows = [json.loads(x) for x in data.task_data("arc_challenge")["test"].read_text().splitlines()]
    assert len({r["id"] for r in rows}) == 1172
    assert all(r["answerKey"] in r["choices"]["label"] for r in rows)
    assert not any(r["question"].startswith("Question:") or r["question"].endswith("Answer:") for r in rows)


def test_mmlu_57_subjects_and_five_shots_from_dev(manager):
    assert len(registry.mmlu_subjects()) == 57
    task = manager.load(["mmlu_anatomy"])["tasks"]["mmlu_anatomy"]
    assert len(eval_docs(task)) == 135
    task.set_fewshot_seed(1234)
    shots = task.sampler.sample(5)
    dev = list(task.dataset["dev"])
    assert [s["question"] for s in shots] == [d["question"] for d in dev[:5]]  # first_n from dev
    loaded = manager.load(["mmlu"])
    assert len(loaded["tasks"]) == 57 and "mmlu" in loaded["groups"]
    assert all(t.config.custom_dataset is not None for t in loaded["tasks"].values())  # ours, not the hub's


@pytest.mark.parametrize("name", FRENCH)
def test_french_tasks_read_user_files(manager, name):
    data.set_data_overrides({name: FIXTURES / f"{name}.jsonl"})
    task = manager.load([name])["tasks"][name]
    docs = eval_docs(task)
    assert len(docs) == 3
    text, choices = task.doc_to_text(docs[0]), task.doc_to_choice(docs[0])
    assert isinstance(text, str) and text and len(choices) == 4
    target = task.doc_to_target(docs[0])
    assert target in choices if isinstance(target, str) else 0 <= target < 4


def test_user_file_replaces_an_exported_task(manager):
    data.set_data_overrides({"arc_easy": FIXTURES / "arc_easy.jsonl"})
    task = manager.load(["arc_easy"])["tasks"]["arc_easy"]
    assert [d["id"] for d in eval_docs(task)] == ["e0", "e1", "e2", "e3"]


def test_missing_data_and_unknown_tasks_are_clear_errors(tmp_path, manager):
    with pytest.raises(DataError, match="french_bench_hellaswag.*--data"):
        data.task_data("french_bench_hellaswag")
    with pytest.raises(DataError, match="nope.jsonl"):
        data.set_data_overrides({"arc_fr": tmp_path / "nope.jsonl"})
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": 1}\n{oops\n')
    data.set_data_overrides({"arc_fr": bad})
    with pytest.raises(DataError, match="bad.jsonl:2"):
        data.load_task_dataset("arc_fr")
    with pytest.raises(UsageError, match="not_a_task"):
        registry.check_tasks(["arc_easy", "not_a_task"], manager)
