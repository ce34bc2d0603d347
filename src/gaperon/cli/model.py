"""Verbs about models: info, import, export."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="print a preset's parameter count and shapes")
    p.add_argument("preset", help="a preset name, e.g. gaperon-1b, gaperon-8b, tiny")
    p.set_defaults(func=_info)


def _info(args: argparse.Namespace) -> int:
    from gaperon.cli import UserError
    from gaperon.model import describe

    try:
        print(describe(args.preset))
    except KeyError as e:
        raise UserError(e.args[0]) from None
    return 0
