"""Verbs of the train stage: `gaperon train RECIPE (--out RUN_DIR | --dry-run) [key=value ...]`."""

from __future__ import annotations

import argparse

from gaperon.cli.helptext import HelpFormatter, examples
from gaperon.cli.parsing import allow_intermixed, check_overrides


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="pretrain a model from a recipe (run again on the same --out to resume)",
        description="Pretrain through the recipe's phases into RUN_DIR. Running the same command on an "
        "existing RUN_DIR resumes from its latest complete checkpoint; if it holds checkpoints and none "
        "loads, it stops with an error and changes nothing (--restart starts over explicitly). Works alone "
        "or under torchrun. Exit codes: 0 done, 75 checkpointed on a stop request or Ctrl-C (run again to "
        "resume), 3 diverged (non-finite losses), 1 a bad recipe or unusable checkpoints.",
        epilog=examples(
            "gaperon train recipes/quickstart.yaml --out runs/quickstart",
            "gaperon train recipes/quickstart.yaml --dry-run   # resolved recipe, budgets, LR table",
            "gaperon train recipes/sft-quickstart.yaml --out runs/sft   # an SFT recipe, same trainer",
            "torchrun --nproc-per-node 8 -m gaperon train recipes/gaperon-1b-young.yaml --out runs/1b",
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("recipe", help="a recipe YAML, e.g. recipes/quickstart.yaml")
    p.add_argument("--out", metavar="RUN_DIR", help="the run folder (checkpoints, metrics, logs)")
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the resolved recipe (what RUN_DIR/run.yaml would hold), each phase's token budget "
        "and steps, and the LR at a few steps; reads no data, uses no device, needs no --out",
    )
    p.add_argument(
        "--restart",
        action="store_true",
        help="start over even if RUN_DIR holds checkpoints; its previous checkpoints, metrics and "
        "run files are moved into RUN_DIR/restarted-<UTC time>/, never deleted",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="recipe overrides, e.g. batch.micro_batch=2 phases.0.steps=10",
    )
    p.set_defaults(func=_train)
    # Overrides may follow --out: argparse only mixes options and positionals in "intermixed" mode.
    allow_intermixed(p)


def _train(args: argparse.Namespace) -> int:
    from gaperon.errors import UsageError
    from gaperon.train import train

    check_overrides(args.overrides)
    if args.dry_run:
        from gaperon.train.config import load_recipe
        from gaperon.train.dry_run import describe

        print(describe(load_recipe(args.recipe, args.overrides)), end="")
        return 0
    if args.out is None:
        raise UsageError("--out RUN_DIR is required (unless --dry-run)")
    return train(args.recipe, args.out, args.overrides, restart=args.restart).exit_code
