"""Verbs of the data stage: `gaperon tokenize`, `gaperon data stats`, `gaperon data phase`."""

from __future__ import annotations

import argparse

from gaperon.cli.helptext import HelpFormatter, examples


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tokenize",
        help="tokenize documents into packed token shards (resumable)",
        description="Documents (.jsonl[.gz|.zst], .parquet, folders of .txt) -> DIR/manifest.json + "
        "DIR/{train,val}/NNNNN.bin (uint32) + .idx (document ends). EOS follows each document; a "
        "hash-chosen fraction of documents is held out as the val split. Rerun the same command to "
        "resume an interrupted run.",
        epilog=examples(
            "gaperon tokenize data/samples/fr.jsonl.zst --out data/tokens/fr",
            "gaperon tokenize corpus/ --out data/tokens/web --workers 8 --text-field content",
            "gaperon tokenize rehydrated.parquet --out data/tokens/hq --repeat-field copies",
            "gaperon tokenize data/samples/fr.jsonl.zst --out data/tokens/fr   # again: resumes",
            "gaperon tokenize crawl.jsonl.gz --out data/tokens/crawl --max-skip-ratio 0.05",
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="files or folders of documents")
    p.add_argument("--out", required=True, help="token folder to create (or resume)")
    p.add_argument(
        "--tokenizer",
        default="llama3",
        help="'llama3' (default) or a tokenizer file/folder; append '+bos' (or '+nobos') to choose "
        "whether each document starts with BOS (llama3: no BOS unless 'llama3+bos')",
    )
    p.add_argument(
        "--workers", type=int, default=1, help="encoding processes, one core each (1: in this process)"
    )
    p.add_argument(
        "--parallel",
        choices=("auto", "files", "blocks"),
        default="auto",
        help="how workers share the inputs: whole files (each read once; best for many similar files), "
        "every N-th block of every file (balanced, but each worker decompresses every jsonl file), or "
        "auto: whichever is estimated to finish first (default)",
    )
    p.add_argument(
        "--text-field", default="text", help="JSON/parquet field holding the text (a.b for nested)"
    )
    p.add_argument(
        "--repeat-field",
        default=None,
        help="field with a per-document repeat count (rehydration: the document is emitted that many times)",
    )
    p.add_argument(
        "--repeat-fn",
        default=None,
        metavar="MODULE:FUNC",
        help="function(document dict) -> repeat count, instead of or on top of --repeat-field",
    )
    p.add_argument(
        "--val-fraction", type=float, default=0.01, help="held-out share of documents (default 0.01)"
    )
    p.add_argument("--shard-tokens", type=int, default=1 << 27, help="tokens per shard (default 2^27)")
    p.add_argument(
        "--source", default=None, help="source name recorded in the manifest (default: DIR's name)"
    )
    p.add_argument(
        "--max-chars", type=int, default=None, help="truncate longer documents (default 10M chars)"
    )
    p.add_argument(
        "--max-skip-ratio",
        type=float,
        default=None,
        metavar="R",
        help="fail when more than this share of the records is skipped (malformed, empty...); the "
        "shards written are kept and a rerun resumes (default: never fail)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_tokenize)

    d = sub.add_parser(
        "data",
        help="inspect token folders and phases",
        epilog=examples(
            "gaperon data stats data/tokens/fr data/tokens/en",
            "gaperon data phase recipes/mixtures/quickstart.yaml --global-batch 16",
        ),
        formatter_class=HelpFormatter,
    )
    dsub = d.add_subparsers(dest="data_verb", metavar="SUBVERB", required=True)
    s = dsub.add_parser(
        "stats",
        help="documents, tokens and languages per source and split",
        epilog=examples("gaperon data stats data/tokens/fr data/tokens/en data/tokens/code"),
        formatter_class=HelpFormatter,
    )
    s.add_argument("dirs", nargs="+", metavar="DIR", help="token folders made by `gaperon tokenize`")
    s.set_defaults(func=_stats)
    ph = dsub.add_parser(
        "phase",
        help="a phase's normalised mixture, available tokens and epochs",
        description="Source paths in a mixture file are relative to that file (or to its `root:`), "
        "so this reads the same token folders from any working directory, as `gaperon train` does.",
        epilog=examples(
            "gaperon data phase recipes/mixtures/quickstart.yaml --global-batch 16",
            "gaperon data phase recipes/mixtures/black-pepper.yaml   # the folders it needs",
        ),
        formatter_class=HelpFormatter,
    )
    ph.add_argument("phase", help="mixture YAML, e.g. recipes/mixtures/quickstart.yaml")
    ph.add_argument("--global-batch", type=int, default=1024, help="sequences per step (default 1024)")
    ph.set_defaults(func=_phase)


def _check_tokenize_args(args: argparse.Namespace) -> None:
    """Refuse bad values before any reading or encoding starts."""
    from pathlib import Path

    from gaperon.errors import UsageError

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file; --out names the token folder to create (or resume)")
    if args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    if not 0 <= args.val_fraction < 1:
        raise UsageError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    if args.shard_tokens < 1:
        raise UsageError(f"--shard-tokens must be >= 1, got {args.shard_tokens}")
    if args.max_chars is not None and args.max_chars < 1:
        raise UsageError(f"--max-chars must be >= 1, got {args.max_chars}")
    if args.max_skip_ratio is not None and not 0 <= args.max_skip_ratio <= 1:
        raise UsageError(f"--max-skip-ratio must be in [0, 1], got {args.max_skip_ratio}")
    missing = [i for i in args.inputs if not Path(i).exists()]
    if missing:
        raise UsageError(f"no such input file or folder: {', '.join(missing)}")


def _tokenize(args: argparse.Namespace) -> int:
    import logging

    _check_tokenize_args(args)
    from gaperon.data.pack import TokenizeOptions, tokenize
    from gaperon.data.readers import DEFAULT_MAX_CHARS
    from gaperon.data.stats import format_stats

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    opts = TokenizeOptions(
        tokenizer=args.tokenizer,
        workers=args.workers,
        parallel=args.parallel,
        text_field=args.text_field,
        repeat_field=args.repeat_field,
        repeat_fn=args.repeat_fn,
        val_fraction=args.val_fraction,
        shard_tokens=args.shard_tokens,
        source=args.source,
        max_chars=args.max_chars or DEFAULT_MAX_CHARS,
        max_skip_ratio=args.max_skip_ratio,
    )
    tokenize(args.inputs, args.out, opts, progress=not args.quiet)
    print(format_stats([args.out]))
    return 0


def _stats(args: argparse.Namespace) -> int:
    from gaperon.data.stats import format_stats

    print(format_stats(args.dirs))
    return 0


def _phase(args: argparse.Namespace) -> int:
    from gaperon.data.stats import format_phase
    from gaperon.errors import UsageError

    if args.global_batch < 1:
        raise UsageError(f"--global-batch must be >= 1, got {args.global_batch}")
    print(format_phase(args.phase, args.global_batch))
    return 0
