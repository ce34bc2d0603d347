"""Text -> token ids on one core, as `gaperon tokenize` and each of its workers do it.

Also the hash that puts a document in the held-out split: computed wherever the text is read (the
main process with one worker, each worker with N), so it lives beside the encoder.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import numpy as np

from gaperon.data import shards as fmt
from gaperon.data.readers import DataError
from gaperon.tokenizer.fast_path import MAX_CHARS, safe_for_tiktoken
from gaperon.tokenizer.protocol import prompt_bos


def text_hash(text: str) -> float:
    """A document's place in [0, 1): the held-out split is every document under val_fraction."""
    h = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(h, "little") / 2.0**64


class Encoder:
    """Turns a batch of texts into (flat ids with EOS after each document, and BOS before it when the
    tokenizer's rule says so; per-document lengths).

    Same ids as `tok.encode_batch(texts)`, but cheaper: for a tiktoken-backed Tokenizer each text
    goes through tiktoken's `encode_to_numpy` (a uint32 buffer: no Python int per token) on the
    calling thread only, so one worker is one core; tiktoken releases the GIL while it encodes, so
    the reading thread runs beside it. Texts that the tokenizer would not give to tiktoken, and
    tokenizers without a tiktoken path, go through encode_batch.
    """

    def __init__(self, tok: Any):
        self.tok = tok
        self.eos = np.array([tok.eos_id], dtype=fmt.TOKEN_DTYPE)
        self.bos = np.array([tok.bos_id] if prompt_bos(tok) else [], dtype=fmt.TOKEN_DTYPE)
        # The tiktoken Encoding itself when the tokenizer provably runs on it (one core per worker).
        self.fast = tok.fast_encoder() if getattr(tok, "uses_tiktoken", False) else None
        self.to_numpy = getattr(self.fast, "encode_to_numpy", None)  # tiktoken >= 0.8

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        if self.fast is None:
            parts = [np.asarray(ids, dtype=fmt.TOKEN_DTYPE) for ids in self.tok.encode_batch(texts)]
        else:
            parts = [self._one(t) for t in texts]
        lengths = np.fromiter(map(len, parts), dtype=np.int64, count=len(parts)) + 1 + len(self.bos)
        around = (self.bos, self.eos) if len(self.bos) else (None, self.eos)
        pieces = [x for p in parts for x in (around[0], p, around[1]) if x is not None]
        flat = np.concatenate(pieces)
        return flat.astype(fmt.TOKEN_DTYPE, copy=False), lengths

    def _one(self, text: str) -> np.ndarray:
        if not _safe_for_tiktoken(text):
            return np.asarray(self.tok.encode_batch([text])[0], dtype=fmt.TOKEN_DTYPE)
        if self.to_numpy is not None:
            try:
                # allowed=disallowed=nothing: special-token text is ordinary text, as in encode_ordinary
                return self.to_numpy(text, allowed_special=set(), disallowed_special=())
            except UnicodeEncodeError:  # lone surrogates: encode_ordinary repairs them, this does not
                pass
        assert self.fast is not None  # _one is only called on the tiktoken path
        return np.asarray(self.fast.encode_ordinary(text), dtype=fmt.TOKEN_DTYPE)


# fast_path's rule (a run of >= 20,000 whitespace or non-whitespace characters goes to the HF backend)
# costs ~12% of the encode time on long documents; this proves "no such run" in O(len / 10,000) steps
# and asks the tokenizer's own check only when it cannot (tests/data/test_data_pack.py compares them).
_RUN = 20_000
_SPACE, _NON_SPACE = re.compile(r"\s"), re.compile(r"\S")


def _safe_for_tiktoken(text: str) -> bool:
    """`fast_path.safe_for_tiktoken(text)`, faster: every run of 20,000 characters contains a whole
    aligned window of 10,000, so if every window holds both kinds of character there is no long run."""
    n, step = len(text), _RUN // 2
    if n < _RUN or n > MAX_CHARS:
        return safe_for_tiktoken(text)
    for k in range(0, n - step + 1, step):
        if _SPACE.search(text, k, k + step) is None or _NON_SPACE.search(text, k, k + step) is None:
            return safe_for_tiktoken(text)
    return True


def tokenizer_from_spec(spec: Any) -> Any:
    """A Tokenizer given as itself, or by name or path ("llama3", a folder): workers get the spec."""
    if not isinstance(spec, str | Path):
        return spec
    from gaperon.tokenizer import load_tokenizer

    try:
        return load_tokenizer(spec)
    except ValueError as e:
        raise DataError(f"tokenizer {spec}: {e}") from None
