"""A small benchmark evaluation the trainer runs every `eval.task_every` steps (recipe `eval.tasks`)."""

from __future__ import annotations

from typing import Any

from torch import nn


def evaluate_during_training(
    model: nn.Module, tokenizer: Any, tasks: list[str], limit: int | None, batch_size: int = 32
) -> dict[str, float]:
    """Scores of `model` as it is now on the first `limit` items of each task, as flat
    `{"eval/<task>/<metric>": value}` (acc and acc_norm): what metrics.jsonl and TensorBoard log.
    The model is put in eval mode and given back in the mode it came in."""
    from gaperon.evaluate.run import run_eval

    was_training = model.training
    try:
        results = run_eval(
            model, list(tasks), shots=0, limit=limit, batch_size=batch_size, tokenizer=tokenizer
        )
    finally:
        model.train(was_training)
    out: dict[str, float] = {}
    for task, res in results["results"].items():
        for key, value in res.items():
            metric = key.split(",")[0]
            if metric in ("acc", "acc_norm") and isinstance(value, int | float):
                out[f"eval/{task}/{metric}"] = float(value)
    return out
