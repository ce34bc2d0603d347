"""Helpers for tokenizer tests: a tiny tiktoken-format rank table."""

from __future__ import annotations

SMALL_TOKENS = [bytes([b]) for b in range(256)] + [
    b"ab",
    b"abc",
    b" a",
    b"cd",
    b"abcd",
    b"  ",
    b"    ",
    b"hi",
    b" hi",
    b"\n\n",
    b"er",
    b" ch",
    b" cher",
]


def write_ranks(path, tokens) -> None:
    import base64

    path.write_text("".join(f"{base64.b64encode(t).decode()} {i}\n" for i, t in enumerate(tokens)))
