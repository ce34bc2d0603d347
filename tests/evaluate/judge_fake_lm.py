"""A fake lm-eval LM that answers from a function of the request's document: scoring is then tested
independently of any model."""

from __future__ import annotations

from collections.abc import Callable

from lm_eval.api.model import LM


class CannedLM(LM):
    def __init__(self, answer: Callable[[dict, int], str]) -> None:
        super().__init__()
        self.answer = answer
        self.seen: list[tuple[str, dict]] = []
        self._count: dict[str, int] = {}

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        out = []
        for req in requests:
            context, gen_kwargs = req.args
            self.seen.append((context, gen_kwargs))
            key = context
            i = self._count.get(key, 0)
            self._count[key] = i + 1
            out.append(self.answer(req.doc, i))
        return out

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        raise NotImplementedError


def tasks_dir():
    from pathlib import Path

    import gaperon

    return Path(gaperon.__file__).parent / "evaluate" / "tasks"


def evaluate(lm: LM, task: str, limit: int | None = None, data_files: str | None = None) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    return simple_evaluate(
        model=lm,
        tasks=[task],
        limit=limit,
        task_manager=TaskManager(
            include_path=str(tasks_dir()),
            include_defaults=False,
            metadata={"data_files": data_files} if data_files else None,
        ),
        log_samples=True,
        bootstrap_iters=0,
    )
