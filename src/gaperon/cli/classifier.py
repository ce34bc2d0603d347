"""`gaperon classifier labels|train|score|annotate`: the Gaperon quality classifier."""

from __future__ import annotations

import argparse
from pathlib import Path

from gaperon.cli.helptext import HelpFormatter, examples
from gaperon.cli.parsing import allow_intermixed, check_overrides

_SAMPLES = Path("data/samples")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "classifier",
        help="quality classifier: offline labels, judge labels, train, score",
        description="The Gaperon quality classifier (low/medium/high; score = P(high) + 0.5 P(medium)).",
    )
    verbs = p.add_subparsers(dest="classifier_verb", metavar="SUBVERB", required=True)

    q = verbs.add_parser(
        "labels",
        help="build the offline synthetic labelled set from the bundled corpus",
        description="Clean bundled documents as 'high', mildly degraded copies as 'medium', heavily "
        "degraded ones as 'low' (balanced, per language), split train/validation/test. For tests and "
        "the demo only: real labels come from a judge (`gaperon classifier annotate`).",
        epilog=examples(
            "gaperon classifier labels --out data/clf-labels --per-class 200",
        ),
        formatter_class=HelpFormatter,
    )
    q.add_argument(
        "--out", required=True, help="folder for train/validation/test.jsonl, stats.json, README.md"
    )
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--per-class", type=int, default=200, help="documents per label per language")
    q.add_argument("--fr", nargs="+", default=[str(_SAMPLES / "fr.jsonl.zst")], help="French source files")
    q.add_argument("--en", nargs="+", default=[str(_SAMPLES / "en.jsonl.zst")], help="English source files")
    q.set_defaults(func=_labels)

    t = verbs.add_parser(
        "train",
        help="train a classifier (ngram, embedding or encoder backend) and report macro-F1",
        description="RECIPE (recipes/classifier/*.yaml) names the backend and its options. DATA is a "
        "folder with train/validation/test.jsonl or labelled jsonl files (text, label, language), "
        "split here stratified by language and label. Writes OUT/model, OUT/metrics.json, "
        "OUT/report.md and OUT/confusion.png.",
        epilog=examples(
            "gaperon classifier train recipes/classifier/ngram.yaml --data data/clf-labels --out runs/clf",
            "gaperon classifier train recipes/classifier/encoder.yaml --data labels.jsonl --out runs/xlmv",
        ),
        formatter_class=HelpFormatter,
    )
    t.add_argument("recipe", help="YAML recipe")
    t.add_argument("--data", action="append", required=True, help="labelled folder or file (repeatable)")
    t.add_argument("--out", required=True, help="output folder")
    t.add_argument("overrides", nargs="*", help="key=value overrides (options.epochs=3, model=PATH)")
    t.set_defaults(func=_train)
    allow_intermixed(t)  # key=value overrides may follow the options

    s = verbs.add_parser(
        "score",
        help="add quality_score and quality_label to every document",
        description="MODEL is a classifier folder (any backend, or a Hugging Face sequence-classification "
        "folder such as a local copy of almanach/gaperon-quality-classifier). Input truncated to 512 tokens.",
        epilog=examples(
            "gaperon classifier score runs/clf/model docs.jsonl.zst --out scored.jsonl",
        ),
        formatter_class=HelpFormatter,
    )
    s.add_argument("model")
    s.add_argument("inputs", nargs="+", metavar="INPUT", help="jsonl[.gz|.zst] files")
    s.add_argument("--out", required=True, help="jsonl file to write")
    s.add_argument("--batch-size", type=int, default=32)
    s.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1...")
    s.add_argument("--text-field", default="text")
    s.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16", "int8-dynamic"],
        help="fp32 gives transformers' scores; bf16 (GPU, CPUs with bf16 units) or int8-dynamic (CPU) "
        "may be faster, and move scores by ~1e-3",
    )
    s.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    s.set_defaults(func=_score)

    a = verbs.add_parser(
        "annotate",
        help="label documents with an LLM judge behind an OpenAI-compatible endpoint",
        description="Writes jsonl lines {id, text, language, label, reason}; resumes after a kill.",
        epilog=examples(
            "gaperon classifier annotate docs.jsonl --out labels.jsonl --endpoint http://HOST/v1 --model M",
        ),
        formatter_class=HelpFormatter,
    )
    a.add_argument("inputs", nargs="+", metavar="INPUT")
    a.add_argument("--out", required=True)
    a.add_argument("--endpoint", required=True, help="base URL, e.g. http://localhost:8000/v1")
    a.add_argument("--model", required=True)
    a.add_argument("--api-key", default=None)
    a.add_argument("--concurrency", type=int, default=4)
    a.add_argument("--limit", type=int, default=None)
    a.set_defaults(func=_annotate)


def _labels(args: argparse.Namespace) -> int:
    from gaperon.curate.classifier.labels import build_labels
    from gaperon.errors import UsageError

    if args.per_class < 1:
        raise UsageError(f"--per-class must be >= 1, got {args.per_class}")
    stats = build_labels({"fr": args.fr, "en": args.en}, args.out, per_class=args.per_class, seed=args.seed)
    for split, counts in stats["splits"].items():
        print(f"{split}: {sum(counts.values())} documents {counts}")
    print(f"wrote {args.out}/{{train,validation,test}}.jsonl, stats.json, README.md")
    return 0


def _train(args: argparse.Namespace) -> int:
    from gaperon.config import apply_overrides, from_dict, load_yaml
    from gaperon.curate.classifier.train import TrainConfig, train

    check_overrides(args.overrides)
    cfg = from_dict(TrainConfig, apply_overrides(load_yaml(args.recipe), args.overrides), args.recipe)
    result = train(args.data, args.out, cfg)
    for subset, m in result["test"].items():
        print(f"test {subset}: macro-F1 {m['macro_f1']:.3f} accuracy {m['accuracy']:.3f} (n={m['n']})")
    print(f"wrote {args.out}/model, metrics.json, report.md, confusion.png")
    return 0


def _score(args: argparse.Namespace) -> int:
    from gaperon.curate.classifier.score import score_files
    from gaperon.errors import UsageError

    if args.batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    r = score_files(
        args.model,
        args.inputs,
        args.out,
        batch_size=args.batch_size,
        device=args.device,
        text_field=args.text_field,
        precision=args.precision,
        threads=args.threads,
    )
    print(
        f"scored {r.documents} documents in {r.seconds:.1f} s ({r.docs_per_s:.1f} docs/s); labels {r.labels}"
    )
    return 0


def _annotate(args: argparse.Namespace) -> int:
    from gaperon.curate.annotate import annotate  # built with the judge client

    report = annotate(
        args.inputs,
        args.out,
        endpoint=args.endpoint,
        model=args.model,
        api_key=args.api_key,
        concurrency=args.concurrency,
        limit=args.limit,
    )
    print(report)
    return 0
