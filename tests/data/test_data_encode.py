"""The one-core encoder of `gaperon tokenize`: the ids of the tokenizer's own encode_batch, cheaper."""

from __future__ import annotations

import numpy as np
from data_helpers import ByteTokenizer

from gaperon.data.encode import Encoder, _safe_for_tiktoken
from gaperon.tokenizer.fast_path import MAX_CHARS, safe_for_tiktoken


def test_fast_safety_check_agrees_with_the_tokenizers_own():
    texts = ["short", "x" * 19_999, " " * 19_999 + "x", "a b " * 30_000, "y" * (MAX_CHARS + 1)]
    for run in (9_999, 19_999, 20_000):  # the reference check is slow on long runs: few cases
        for at in (0, 15_000, 25_001):  # a 20,000 run at 15,000 covers no aligned 20,000 window
            for fill, ch in (("ab ", "z"), ("é\n", "\t")):
                body = (fill * 14_000)[:40_000]
                texts.append(body[:at] + ch * run + body[at:])
    for t in texts:
        assert _safe_for_tiktoken(t) == safe_for_tiktoken(t), (len(t), t[:20])
    assert {safe_for_tiktoken(t) for t in texts} == {True, False}  # both outcomes are exercised


def test_encoder_gives_the_ids_of_encode_batch(llama3):
    texts = [
        "Bonjour le monde.",
        "x <|end_of_text|> y <|begin_of_text|>",
        "lone \ud800 surrogate",
        "a" * 25_000 + " then text",
        "mot " * 6_000,
        " ",
        "def f(x):\n    return x  # code\n",
    ]
    want = [i for ids in llama3.encode_batch(texts, eos=True) for i in ids]
    encoder = Encoder(llama3)
    flat, lengths = encoder(texts)
    assert flat.dtype == np.dtype("<u4") and lengths.tolist() == [
        len(ids) + 1 for ids in llama3.encode_batch(texts)
    ]
    assert flat.tolist() == want
    encoder.to_numpy = None  # tiktoken < 0.8 has no encode_to_numpy
    assert encoder(texts)[0].tolist() == want
    byte_flat, _ = Encoder(ByteTokenizer())(["ab", "é"])  # a tokenizer without a tiktoken path
    assert byte_flat.tolist() == [97, 98, 256, 195, 169, 256]
