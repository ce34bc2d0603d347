"""Every verb explains itself: its --help ends with example command lines."""

from __future__ import annotations

import argparse

from gaperon.cli import build_parser


def _parsers(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*path, name))


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
    for action in subs:
        for name, sub in action.choices.items():
            yield from _leaves(sub, (*path, name))


def test_every_verb_help_ends_with_examples():
    leaves = list(_leaves(build_parser()))
    assert len(leaves) >= 20
    missing = [" ".join(p) for p, parser in leaves if "example" not in parser.format_help().lower()]
    assert missing == []


def test_every_parser_formats_its_help():
    """A stray '%' in a sub-verb's help only breaks its parent's --help (argparse %-formats it)."""
    for _path, parser in _parsers(build_parser()):
        assert parser.format_help()
