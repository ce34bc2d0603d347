"""Verb of the curation stage: `gaperon curate RECIPE`."""

from __future__ import annotations

import argparse

from gaperon.cli.helptext import HelpFormatter, examples
from gaperon.cli.parsing import allow_intermixed


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "curate",
        help="curate web documents: language ID, heuristics, MinHash dedup, quality selection (datatrove)",
        description="Run a curation recipe (recipes/curate/*.yaml) as datatrove pipelines: inputs "
        "(.jsonl[.gz|.zst], .parquet) -> steps in order -> DIR/output/*.jsonl.zst (what `gaperon tokenize` "
        "reads) + DIR/report.{json,md} + PNG histograms. Rerun the same command to resume: completed "
        "tasks are skipped.",
        epilog=examples(
            "gaperon curate recipes/curate/gaperon-web.yaml --input web/ --output out/web",
            "gaperon curate recipes/curate/gaperon-web.yaml --output out/web executor.kind=slurm",
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("recipe", help="curation recipe YAML, e.g. recipes/curate/gaperon-web.yaml")
    p.add_argument(
        "--input",
        action="append",
        default=None,
        metavar="PATH",
        help="input file or folder (repeatable; replaces the recipe's)",
    )
    p.add_argument("--output", default=None, metavar="DIR", help="output folder (replaces the recipe's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="recipe overrides, e.g. executor.tasks=4"
    )
    p.set_defaults(func=_curate)
    # Overrides may follow options: argparse mixes options and positionals only in "intermixed" mode.
    allow_intermixed(p)


def _curate(args: argparse.Namespace) -> int:
    from gaperon.errors import UsageError

    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        raise UsageError(f"expected key=value overrides, got {' '.join(bad)}")
    from gaperon.curate.pipeline import load_recipe, run_recipe
    from gaperon.curate.report import to_markdown

    recipe = load_recipe(args.recipe, args.overrides, inputs=args.input, output=args.output)
    rep = run_recipe(recipe, progress=not args.quiet)
    if "steps" in rep:
        print(to_markdown(rep))
        print(f"report: {recipe.output}/report.md; documents: {recipe.output}/output/")
    else:
        print(f"submitted; logs under {rep['logs']}")
    return 0
