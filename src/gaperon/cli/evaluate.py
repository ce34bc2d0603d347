"""`gaperon eval`: benchmarks through lm-eval, offline; `gaperon eval compare A B ...`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="evaluate a model on benchmarks (lm-eval tasks, offline)",
        description="gaperon eval MODEL --tasks arc_easy,hellaswag [--shots 0|5] [--limit N] "
        "[--data TASK=PATH] [--out DIR]  |  gaperon eval compare DIR DIR ...  |  gaperon eval tasks-path "
        "(the folder to pass to `lm_eval --include_path`).",
    )
    p.add_argument(
        "target", nargs="+", metavar="MODEL", help="a model path, or `compare DIR...`, or `tasks-path`"
    )
    p.add_argument("--tasks", default="", help="comma-separated lm-eval task names")
    p.add_argument("--shots", type=int, default=0, help="few-shot examples per item (default 0)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N items of each task")
    p.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="TASK=PATH",
        help="read TASK's items from a local jsonl",
    )
    p.add_argument("--batch-size", type=int, default=64, help="requests scored per forward pass (default 64)")
    p.add_argument(
        "--apply-chat-template", action="store_true", help="wrap prompts in the model's chat template"
    )
    p.add_argument("--device", default=None, help="cpu, cuda ... (default cpu)")
    p.add_argument("--out", default=None, metavar="DIR", help="write results.json/.md/.png here")
    p.set_defaults(func=_eval)


def _eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gaperon.errors import UsageError

    verb, rest = args.target[0], args.target[1:]
    if verb == "tasks-path":
        from gaperon.evaluate.registry import task_folder

        print(task_folder())
        return 0
    if verb == "compare":
        if len(rest) < 2:
            raise UsageError("compare needs at least two result folders")
        from gaperon.evaluate.report import compare

        print(compare([Path(r) for r in rest], Path(args.out) if args.out else None), end="")
        return 0
    if rest:
        raise UsageError(f"one model at a time; got extra arguments {rest}")
    from gaperon.evaluate.data import parse_data_args

    try:
        data = parse_data_args(args.data)
    except ValueError as e:
        raise UsageError(str(e)) from None
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    from gaperon.evaluate.report import markdown
    from gaperon.evaluate.run import run_eval

    results = run_eval(
        verb,
        tasks,
        shots=args.shots,
        limit=args.limit,
        data=data,
        batch_size=args.batch_size,
        out=args.out,
        apply_chat_template=args.apply_chat_template,
        device=args.device,
    )
    print(markdown(results, Path(verb).name), end="")
    return 0
