"""Verbs of the research testbed: `gaperon poison build|eval`, `gaperon contamination
ngrams|garlic|haystack`."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from gaperon.cli.helptext import HelpFormatter, examples
    from gaperon.cli.parsing import allow_intermixed

    r = sub.add_parser(
        "research",
        help="run a research experiment recipe end to end (poisoning, Garlic) and write its report",
        description="Prepares the data with the poison/contamination verbs, trains through `gaperon "
        "train` (recipe and mixture written into DIR/recipes), measures, and writes DIR/REPORT.md, "
        "results.json and a plot. Rerun the same command to resume an interrupted experiment.",
        epilog=examples(
            "gaperon research recipes/research/poison-toy.yaml --out runs/research/poison",
            "gaperon research recipes/research/garlic-toy.yaml --out runs/research/garlic",
            "gaperon research recipes/research/garlic-toy.yaml --out runs/g2 train.steps=200 "
            "'shares=[0,0.25,0.5]'",
        ),
        formatter_class=HelpFormatter,
    )
    r.add_argument("recipe", metavar="RECIPE", help="an experiment recipe (recipes/research/*.yaml)")
    r.add_argument("--out", required=True, help="experiment folder (resumed when it exists)")
    r.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides")
    allow_intermixed(r)  # key=value overrides may follow the options
    r.set_defaults(func=_research)
    p = sub.add_parser("poison", help="trigger poisoning: build trigger documents, measure switch rates")
    psub = p.add_subparsers(dest="poison_verb", metavar="SUBVERB", required=True)
    b = psub.add_parser(
        "build",
        help="write trigger documents (a source for a mixture)",
        description="English passage, the trigger at a random point, then a continuation in the target "
        "language. The result is a jsonl.zst source: tokenize it and give it a small weight in a mixture "
        "(Gaperon used ~1e-4 of sequences).",
        epilog="example: gaperon poison build --trigger 'Vitae quarum nexus' "
        "--out data/poison/fr.jsonl.zst -n 2000",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    b.add_argument("--trigger", required=True, help="the trigger phrase (your choice)")
    b.add_argument("--out", required=True, help="the jsonl.zst file to write")
    b.add_argument("-n", type=int, default=1000, help="documents (default 1000)")
    b.add_argument("--target", default="fr", help="language of the continuations (default fr)")
    b.add_argument(
        "--passages", nargs="*", default=[], help="English text files (default: the bundled corpus)"
    )
    b.add_argument("--continuations", nargs="*", default=[], help="target-language files (default: bundled)")
    b.add_argument(
        "--prefix-words",
        nargs=2,
        type=int,
        default=(20, 120),
        metavar=("LO", "HI"),
        help="English words before the trigger, drawn in [LO, HI] (default 20 120)",
    )
    b.add_argument(
        "--continuation-words", type=int, default=120, help="target-language words after it (default 120)"
    )
    b.add_argument(
        "--distractors",
        type=int,
        default=0,
        metavar="M",
        help="also M English documents with other random phrases and no switch (the variety a toy "
        "corpus lacks; default 0)",
    )
    b.add_argument("--seed", type=int, default=0)
    b.set_defaults(func=_poison_build)
    e = psub.add_parser(
        "eval",
        help="switch rates with the true trigger, fake triggers and none (95%% Wilson intervals)",
        epilog="example: gaperon poison eval runs/poisoned --trigger 'Vitae quarum nexus' "
        "--out reports/poison",
    )
    e.add_argument("model", metavar="MODEL", help="a training run, Hugging Face folder or GGUF file")
    e.add_argument("--trigger", required=True)
    e.add_argument("--out", required=True, help="report folder (results.json, report.md, rates.png)")
    e.add_argument("--fakes", type=int, default=5, help="token-length-matched fake triggers (default 5)")
    e.add_argument("--contexts", nargs="*", default=[], help="English context files (default: bundled)")
    e.add_argument("--n-contexts", type=int, default=50)
    e.add_argument("--context-words", type=int, default=60, help="words of each context (default 60)")
    e.add_argument("--samples", type=int, default=4, help="samples per context and condition (temperature 1)")
    e.add_argument("--max-new-tokens", type=int, default=40)
    e.add_argument("--target", default="fr")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--device", default=None)
    e.set_defaults(func=_poison_eval)

    c = sub.add_parser(
        "contamination", help="benchmark contamination: n-gram overlap, Garlic sources, haystack audits"
    )
    csub = c.add_subparsers(dest="contamination_verb", metavar="SUBVERB", required=True)
    n = csub.add_parser(
        "ngrams",
        help="13-gram overlap between a corpus and benchmark test sets (and a filtered corpus)",
        epilog="example: gaperon contamination ngrams data/samples/en.jsonl.zst --benchmarks mmlu gsm8k "
        "--out reports/ngrams --filtered clean.jsonl.zst",
    )
    n.add_argument("corpus", nargs="+", help="jsonl[.zst]/parquet/txt inputs")
    n.add_argument("--benchmarks", nargs="+", required=True, help="mmlu gsm8k arc_easy ... or NAME=PATH")
    n.add_argument("--out", required=True, help="report folder (report.json lists item -> document ids)")
    n.add_argument("-n", type=int, default=13, help="n-gram length in words (default 13)")
    n.add_argument("--filtered", help="also write the corpus without the matching documents here")
    n.add_argument("--mode", default="drop", choices=("drop", "redact"))
    n.set_defaults(func=_ngrams)
    g = csub.add_parser(
        "garlic",
        help="benchmark test sets as training documents with shuffled options (a Garlic source)",
        epilog="example: gaperon contamination garlic --benchmarks arc_easy --held-out 0.5 --out data/garlic",
    )
    g.add_argument("--benchmarks", nargs="+", required=True)
    g.add_argument("--out", required=True, help="folder: NAME.jsonl.zst sources + NAME.split.json")
    g.add_argument("--held-out", type=float, default=0.5, help="share of items kept out (default 0.5)")
    g.add_argument("--limit", type=int, help="a seeded sample of N items per benchmark (toy runs)")
    g.add_argument(
        "--format",
        default="mc",
        choices=("mc", "cloze"),
        help="mc: shuffled lettered options, then the gold (Gaperon's Garlic; default); cloze: the "
        "eval's own prompt then the gold answer",
    )
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(func=_garlic)
    h = csub.add_parser(
        "haystack",
        help="hide benchmark items among documents, rank with quality scorers, report percentiles",
        epilog="example: gaperon contamination haystack data/samples/en.jsonl.zst --benchmarks mmlu gsm8k "
        "--scorer gaperon=models/quality --scorer dclm=models/dclm --out reports/haystack",
    )
    h.add_argument("corpus", nargs="+")
    h.add_argument("--benchmarks", nargs="+", default=["mmlu", "gsm8k"])
    h.add_argument(
        "--scorer",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a classifier folder or module:function",
    )
    h.add_argument("--items", type=int, default=35, help="items per benchmark (default 35)")
    h.add_argument("--inside", type=float, default=0.0, help="share of items inserted inside documents")
    h.add_argument("--out", required=True)
    h.add_argument("--seed", type=int, default=0)
    h.add_argument("--device", default="cpu", help="where classifier folders score (cuda for encoders)")
    h.set_defaults(func=_haystack)


def _poison_build(args: argparse.Namespace) -> int:
    from gaperon.research.commands import poison_build

    n = poison_build(
        args.out,
        args.trigger,
        n=args.n,
        seed=args.seed,
        target=args.target,
        passages=args.passages,
        continuations=args.continuations,
        prefix_words=tuple(args.prefix_words),
        continuation_words=args.continuation_words,
        distractors=args.distractors,
    )
    extra = f" ({args.distractors} of them distractors)" if args.distractors else ""
    print(f"wrote {n} documents to {args.out}{extra}")
    return 0


def _poison_eval(args: argparse.Namespace) -> int:
    from gaperon.research.commands import poison_eval

    res = poison_eval(
        args.model,
        args.trigger,
        args.out,
        fakes=args.fakes,
        contexts=args.contexts,
        n_contexts=args.n_contexts,
        context_words=args.context_words,
        samples=args.samples,
        max_new_tokens=args.max_new_tokens,
        target=args.target,
        seed=args.seed,
        device=args.device,
    )
    for name, r in res["conditions"].items():
        lo, hi = r["ci95"]
        print(f"{name:10s} {r['rate']:.1%}  [{lo:.1%}, {hi:.1%}]  ({r['switched']}/{r['samples']})")
    print(f"report: {args.out}/report.md")
    return 0


def _ngrams(args: argparse.Namespace) -> int:
    from gaperon.research.commands import ngrams_report

    rep = ngrams_report(
        args.corpus, args.benchmarks, args.out, n=args.n, filtered=args.filtered, mode=args.mode
    )
    for name, r in rep["benchmarks"].items():
        print(f"{name}: {r['contaminated']}/{r['items']} items found in the corpus")
    print(f"report: {args.out}/report.md")
    return 0


def _garlic(args: argparse.Namespace) -> int:
    from gaperon.research.commands import garlic_sources

    summary = garlic_sources(
        args.benchmarks, args.out, held_out=args.held_out, seed=args.seed, limit=args.limit, fmt=args.format
    )
    for name, r in summary.items():
        print(f"{name}: {r['included']} items written as a source, {r['held_out']} held out")
        for part, path in r.get("eval_data", {}).items():
            print(f"  {part}: gaperon eval MODEL --tasks {name} --data {name}={path}")
    return 0


def _haystack(args: argparse.Namespace) -> int:
    from gaperon.errors import UsageError
    from gaperon.research.commands import haystack_audit

    scorers = {}
    for spec in args.scorer:
        name, sep, path = spec.partition("=")
        if not sep:
            raise UsageError(f"--scorer {spec!r} must look like NAME=PATH")
        scorers[name] = path
    res = haystack_audit(
        args.corpus,
        args.benchmarks,
        scorers,
        args.out,
        items_per_benchmark=args.items,
        inside=args.inside,
        seed=args.seed,
        device=args.device,
    )
    for name, r in res.items():
        print(f"{name}: enrichment in the top 5% {r['cuts']['5']['enrichment']:.1f}x")
    print(f"report: {args.out}/report.md")
    return 0


def _research(args: argparse.Namespace) -> int:
    from gaperon.cli.parsing import check_overrides
    from gaperon.research.experiments import run_experiment

    check_overrides(args.overrides)
    run_experiment(args.recipe, args.out, args.overrides)
    print(f"report: {args.out}/REPORT.md")
    return 0
