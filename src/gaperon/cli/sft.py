"""Verbs of the SFT stage: `gaperon sft preview DATA --model MODEL` and `gaperon sft identity`.

Training itself is `gaperon train` with a recipe whose phases have `sft:` data."""

from __future__ import annotations

import argparse

from gaperon.cli.helptext import HelpFormatter, examples


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sft", help="supervised fine-tuning data: preview the loss mask, make identity data")
    verbs = p.add_subparsers(dest="sft_verb", metavar="SFT_VERB")
    pv = verbs.add_parser(
        "preview",
        help="render conversations with a model's chat template, learned spans marked",
        description="Show how the first N conversations of DATA render with MODEL's chat template; the "
        "tokens the model learns (assistant turns and their end-of-turn token) are between [[ and ]].",
    )
    pv.add_argument(
        "data", help="jsonl / jsonl.zst / parquet conversations, or pkg:chitchat, pkg:chatterbot/LANG"
    )
    pv.add_argument("--model", required=True, help="llama3, an HF folder, a GGUF file or a run folder")
    pv.add_argument("--n", type=int, default=3, help="examples to show (default 3)")
    pv.add_argument("--format", default="auto", choices=["auto", "messages", "prompt_completion", "sharegpt"])
    pv.add_argument("--json", action="store_true", help="one JSON object per example: input_ids, loss_mask")
    pv.set_defaults(func=_preview)
    idt = verbs.add_parser(
        "identity",
        help="write a bilingual (FR/EN) identity dataset",
        description="Write N conversations where the assistant says who it is and who made it, in French and "
        "English (deterministic for a seed).",
        epilog=examples(
            'gaperon sft identity --name Gapy --maker "the Gaperon team" --out runs/sft-identity.jsonl',
        ),
        formatter_class=HelpFormatter,
    )
    idt.add_argument("--name", required=True, help="the model's name")
    idt.add_argument("--maker", required=True, help="who made it")
    idt.add_argument("--out", required=True, help="output .jsonl")
    idt.add_argument("--n", type=int, default=300, help="conversations (default 300)")
    idt.add_argument("--seed", type=int, default=0)
    idt.set_defaults(func=_identity)
    p.set_defaults(func=lambda _args: p.print_help() or 2)


def _preview(args: argparse.Namespace) -> int:
    from gaperon.errors import UsageError

    if args.n <= 0:
        raise UsageError(f"--n must be > 0, got {args.n}")
    from gaperon.data.sft.preview import load_chat_tokenizer, preview

    tok = load_chat_tokenizer(args.model)
    for line in preview(args.data, tok, args.n, args.format, args.json):
        print(line)
    return 0


def _identity(args: argparse.Namespace) -> int:
    from gaperon.errors import UsageError

    if args.n <= 0 or not args.name.strip() or not args.maker.strip():
        raise UsageError("--n must be > 0 and --name / --maker non-empty")
    from gaperon.data.sft.identity import write_identity

    n = write_identity(args.out, args.name, args.maker, args.n, args.seed)
    print(f"wrote {n} identity conversations to {args.out}")
    return 0
