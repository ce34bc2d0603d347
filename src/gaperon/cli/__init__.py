"""`gaperon <verb>`: the only place that knows every verb.

Each stage has a small module here that declares its verbs' arguments and calls one library
function per verb; heavy imports happen inside the handlers so `gaperon --help` stays instant.
"""

from __future__ import annotations

import argparse
import sys

from gaperon import __version__
from gaperon.cli import classifier, curate, data, evaluate, infer, judge, model, research, sft, train
from gaperon.cli.helptext import HelpFormatter, examples
from gaperon.errors import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, GaperonError

STAGES = (model, data, train, sft, infer, judge, curate, research, classifier, evaluate)
__all__ = ["HelpFormatter", "STAGES", "build_parser", "examples", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gaperon",
        description="Build bilingual French-English(-code) language models the Gaperon way: "
        "tokenize, pretrain, export, generate and serve.",
    )
    parser.add_argument("--version", action="version", version=f"gaperon {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for stage in STAGES:
        stage.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `gaperon ... | head`: the reader left, nothing is wrong
        sys.stderr.close()
        return 0
    except GaperonError as e:  # the one place a user error becomes a message and an exit code
        print(f"gaperon {args.verb}: error: {e}", file=sys.stderr)
        return e.exit_code
    except FileNotFoundError as e:  # a path the user named; the message names it
        print(f"gaperon {args.verb}: error: {e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
