"""Argument parsing shared by the verbs."""

from __future__ import annotations

import argparse


class IntermixedParser(argparse.ArgumentParser):
    """A parser where `key=value` overrides may follow options (`gaperon train R --out D a=1`):
    argparse mixes options and positionals only in its "intermixed" mode."""

    _inner = False

    def parse_known_args(self, args=None, namespace=None):
        if self._inner:
            return super().parse_known_args(args, namespace)
        self._inner = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inner = False


def allow_intermixed(parser: argparse.ArgumentParser) -> None:
    """Make a sub-parser (made by `add_parser`) an `IntermixedParser`."""
    parser.__class__ = IntermixedParser


def check_overrides(overrides: list[str]) -> None:
    """Refuse a malformed `key.sub=value` override as a usage error, before any heavy work starts
    (the recipe loaders check them again with the file's name, as ConfigError)."""
    from gaperon.config import parse_override
    from gaperon.errors import ConfigError, UsageError

    for text in overrides:
        try:
            parse_override(text)
        except ConfigError as e:
            raise UsageError(str(e)) from None
