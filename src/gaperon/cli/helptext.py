"""Help text shared by every verb: an `examples:` epilog that argparse prints as written.

Use: `sub.add_parser(name, ..., epilog=examples("gaperon x A B", "gaperon x A --flag"),
formatter_class=HelpFormatter)`. Descriptions still wrap to the terminal; the examples keep
their lines.
"""

from __future__ import annotations

import argparse

_MARK = "examples:\n"


def examples(*commands: str) -> str:
    """An epilog listing example command lines (a '# comment' after a command is kept)."""
    return _MARK + "\n".join(f"  {c}" for c in commands)


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, except that an `examples(...)` epilog is printed line for line."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith(_MARK):
            return "\n".join(indent + line for line in text.splitlines())
        return super()._fill_text(text, width, indent)
