"""Our task configs as an lm-eval include folder.

`src/gaperon/evaluate/tasks/<task>/` holds every task we define (YAML plus small .py helpers). Ours
reuse lm-eval's own YAML through `include: LM_EVAL_TASKS/...`; lm-eval resolves includes only by
file path, so `task_folder()` renders the tree into the cache with that placeholder replaced by the
installed lm-eval's tasks folder (and the 57 MMLU subjects expanded from one template). Use
`task_manager()` in Python, or `lm_eval --include_path $(gaperon eval tasks-path)` from the shell.
"""

from __future__ import annotations

import functools
import hashlib
import shutil
from pathlib import Path

from gaperon.errors import UsageError

TASKS_SRC = Path(__file__).parent / "tasks"
PLACEHOLDER = "LM_EVAL_TASKS"


def lm_eval_tasks_dir() -> Path:
    import lm_eval.tasks

    return Path(lm_eval.tasks.__file__).parent


def mmlu_subjects() -> list[str]:
    folder = lm_eval_tasks_dir() / "mmlu" / "default"
    return sorted(p.stem.removeprefix("mmlu_") for p in folder.glob("mmlu_*.yaml"))


def _render(src: Path, dst: Path, lm_tasks: Path) -> None:
    for path in sorted(src.rglob("*")):
        if "__pycache__" in path.parts or path.is_dir():
            continue
        rel = path.relative_to(src)
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.name.endswith(".yaml.in"):
            template = path.read_text(encoding="utf-8").replace(PLACEHOLDER, str(lm_tasks))
            for subject in mmlu_subjects():
                name = path.name.removesuffix(".in").replace("SUBJECT", subject)
                (target.parent / name).write_text(template.replace("SUBJECT", subject), encoding="utf-8")
        elif path.suffix == ".yaml":
            target.write_text(path.read_text(encoding="utf-8").replace(PLACEHOLDER, str(lm_tasks)), "utf-8")
        else:
            shutil.copyfile(path, target)


def task_folder() -> Path:
    """The rendered include folder (rebuilt when our configs or the lm-eval install change)."""
    from gaperon.evaluate.data import cache_dir

    lm_tasks = lm_eval_tasks_dir()
    digest = hashlib.sha256(str(lm_tasks).encode())
    for path in sorted(TASKS_SRC.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(TASKS_SRC)).encode() + path.read_bytes())
    out = cache_dir() / f"tasks-{digest.hexdigest()[:12]}"
    if not out.is_dir():
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        _render(TASKS_SRC, tmp, lm_tasks)
        try:
            tmp.rename(out)
        except OSError:  # another process rendered it first
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def our_tasks() -> list[str]:
    """Names of the tasks and groups our folder defines (mmlu as its group)."""
    names = [p.name for p in sorted(TASKS_SRC.iterdir()) if p.is_dir() and not p.name.startswith("_")]
    return sorted(names)


def task_manager():
    """lm-eval's TaskManager over its own tasks plus ours (ours win on equal names). Indexing every
    lm-eval YAML takes seconds, so one manager is kept per rendered folder."""
    return _manager(str(task_folder()))


@functools.cache
def _manager(folder: str):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=folder)


def check_tasks(tasks: list[str], manager=None) -> None:
    """Refuse names lm-eval does not know, before anything heavy runs."""
    manager = manager or task_manager()
    known = set(manager.all_subtasks) | set(manager.all_groups) | set(manager.all_tags)
    unknown = [t for t in tasks if t not in known]
    if unknown:
        ours = ", ".join(our_tasks())
        raise UsageError(f"unknown task(s): {', '.join(unknown)}; offline tasks: {ours}")
