"""`run_eval`: one model, a list of tasks, offline, through lm-eval's own evaluator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gaperon.errors import UsageError


def run_eval(
    model: str | Path | Any,
    tasks: list[str],
    *,
    shots: int | None = 0,
    limit: int | None = None,
    data: dict[str, str] | None = None,
    batch_size: int = 64,
    out: str | Path | None = None,
    apply_chat_template: bool = False,
    device: str | None = None,
    tokenizer: Any = None,
) -> dict[str, Any]:
    """Evaluate `model` (a path `load_model` accepts, or a built model with `tokenizer`) and return
    lm-eval's results dict; with `out`, also write results.json/.md/.png there."""
    if not tasks:
        raise UsageError("no tasks given; e.g. --tasks arc_easy,hellaswag")
    if shots is not None and shots < 0:
        raise UsageError(f"--shots must be >= 0, got {shots}")
    if limit is not None and limit < 1:
        raise UsageError(f"--limit must be >= 1, got {limit}")
    from lm_eval import simple_evaluate

    from gaperon.evaluate.data import set_data_overrides
    from gaperon.evaluate.lm import GaperonLM
    from gaperon.evaluate.registry import check_tasks, task_manager

    if data:
        set_data_overrides(data)
    manager = task_manager()
    check_tasks(tasks, manager)
    if isinstance(model, (str, Path)):
        lm = GaperonLM(str(model), batch_size=batch_size, device=device)
        name = Path(model).name
    else:
        lm = GaperonLM(model=model, tokenizer=tokenizer, batch_size=batch_size)
        name = "model"
    results = simple_evaluate(
        model=lm,
        tasks=tasks,
        num_fewshot=shots,
        limit=limit,
        task_manager=manager,
        apply_chat_template=apply_chat_template,
        log_samples=False,
        bootstrap_iters=0,
        verbosity="WARNING",
    )
    assert results is not None  # only None on non-zero ranks of a distributed run
    results["config"]["model"] = name
    if out is not None:
        from gaperon.evaluate.report import write_report

        write_report(results, Path(out), f"{name} ({shots or 0}-shot)")
    return results
