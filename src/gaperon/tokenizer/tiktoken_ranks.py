"""tiktoken BPE ranks -> a byte-level BPE `tokenizers.Tokenizer` (vocab + merges), the way
transformers' TikTokenConverter does it.

Why: tiktoken is the reference (Meta ships the Llama-3 ranks in that format), but the Rust HF
`tokenizers` library gives us multi-threaded batch encoding and a tokenizer.json that transformers
loads directly. A rank table defines BPE as "repeatedly merge the adjacent pair whose
concatenation has the lowest rank"; listing, for every token in rank order, each split of it into
two existing tokens gives a merge list that reproduces it. `ignore_merges=True` mirrors tiktoken's
shortcut of emitting a whole pre-token directly when it is itself in the vocabulary.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from functools import cache
from pathlib import Path

from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors
from tokenizers import Tokenizer as Backend

from gaperon.errors import ModelFormatError


@cache
def byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used by byte-level BPE vocabularies."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars)}


@cache
def _to_unicode_table() -> dict[int, str]:
    return {b: c for b, c in byte_to_unicode().items()}


@cache
def _to_bytes_table() -> dict[int, str]:
    """Inverse map as a str.translate table; chars that are not byte-level symbols become U+FFFF."""
    table: dict[int, str] = {i: "\uffff" for i in range(256)}
    table.update({ord(c): chr(b) for b, c in byte_to_unicode().items()})
    return table


def bytes_to_token(data: bytes) -> str:
    """Bytes -> the byte-level vocabulary string (latin-1 decode then translate: all in C)."""
    return data.decode("latin-1").translate(_to_unicode_table())


def token_to_bytes(token: str) -> bytes | None:
    """Inverse of bytes_to_token; None if `token` is not made of byte-level symbols."""
    try:
        return token.translate(_to_bytes_table()).encode("latin-1")
    except UnicodeEncodeError:
        return None


def read_tiktoken_ranks(path: str | Path) -> dict[bytes, int]:
    """Read a tiktoken `tokenizer.model` (lines `base64 rank`); errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: tokenizer file not found")
    raw = path.read_bytes()
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise ModelFormatError(
            f"{path}: not a tiktoken ranks file (binary content; a SentencePiece .model is not supported)"
        ) from None
    ranks: dict[bytes, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            if len(parts) != 2:
                raise ValueError("expected 'base64 rank'")
            token, rank = base64.b64decode(parts[0], validate=True), int(parts[1])
        except (ValueError, binascii.Error) as e:
            raise ModelFormatError(
                f"{path}:{lineno}: not a tiktoken ranks line ({e}): {line[:60]!r}"
            ) from None
        if token in ranks:
            raise ModelFormatError(f"{path}:{lineno}: token {parts[0]} appears twice")
        ranks[token] = rank
    if not ranks:
        raise ModelFormatError(f"{path}: empty tiktoken ranks file")
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ModelFormatError(f"{path}: ranks are not 0..{len(ranks) - 1} without gaps")
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise ModelFormatError(
            f"{path}: {len(missing)} single bytes have no rank (byte-level BPE needs all 256)"
        )
    return ranks


def ranks_to_vocab_merges(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocab (byte-level strings -> id = rank) and merges ordered by the rank of their result."""
    vocab: dict[str, int] = {}
    ordered: list[tuple[int, int, int, bytes, bytes]] = []
    for token, rank in ranks.items():
        vocab[bytes_to_token(token)] = rank
        for i in range(1, len(token)):
            left, right = token[:i], token[i:]
            rl, rr = ranks.get(left), ranks.get(right)
            if rl is not None and rr is not None:
                ordered.append((rank, rl, rr, left, right))
    ordered.sort()
    merges = [(bytes_to_token(left), bytes_to_token(right)) for _, _, _, left, right in ordered]
    return vocab, merges


def byte_level_backend(
    vocab: dict[str, int], merges: list[tuple[str, str]], pattern: str, specials: Sequence[str]
) -> Backend:
    """A byte-level BPE backend: regex split, byte->unicode mapping, specials appended after the vocab."""
    backend = Backend(models.BPE(vocab, merges, ignore_merges=True))
    configure_byte_level(backend, pattern)
    backend.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    return backend


def configure_byte_level(backend: Backend, pattern: str) -> None:
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    # Offsets only; deliberately no BOS template: BOS is added explicitly (encode(bos=True) or the chat
    # template).
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
