"""Both encoders of a Llama-3.1 Tokenizer give exactly tiktoken's ids on the same ranks and regex:
the Rust HF backend (what save() exports for transformers) and the tiktoken fast path used by encode*.
"""

from __future__ import annotations

import random
import unicodedata

import pytest

EDGE_CASES = [
    "",
    " ",
    "Hello world.",
    " Hello world.",
    "Bonjour à tous ! C'est l'été, on va à la plage… « Génial », dit-elle.",
    "L'œuvre d'Æsop coûte 12,50 € ; aujourd'hui ça n'a pas d'intérêt.",
    "The quick brown fox jumps over the lazy dog.",
    "def f(x):\n    return x ** 2  # square\n\n\nclass A:\n\tpass\n",
    'if (a && b) { printf("%d\\n", a[i]); }',
    "emoji 🙂👍🏽🇫🇷 👨‍👩‍👧‍👦 and ✨",
    "a  b   c    d     e",
    "     leading and trailing     ",
    "line\nline\n\nline\n\n\n\nend\n",
    "tabs\t\t\tand\t \t mixed",
    "crlf\r\nline\r\n\r\nend\r\n",
    "\r\r\n\n\r",
    "trailing space ",
    "trailing spaces   ",
    "trailing newline\n",
    " \n \n  \n",
    "\u00a0nbsp\u00a0\u00a0x\u2009thin\u3000ideographic\u2028sep",
    "1 12 123 1234 12345 123456 3.14159 -42 1e10 0x1F",
    "numbers12345and678",
    "It's they're we've I'm you'll he'd don't",
    "IT'S THEY'RE WE'VE I'M YOU'LL HE'D DON'T",
    "It'S tHey'Re wE'vE i'M yoU'Ll hE'D",
    "'s 't 're 've 'm 'll 'd",
    "l'\u2019apostrophe courbe \u2019s",
    "<|eot_id|> is only text here <|begin_of_text|>",
    "日本語のテキストと中文文本",
    "Ελληνικά, русский текст, العربية, עברית, हिन्दी",
    "x" * 300,
    "ab" * 200 + " " * 50 + "\n" * 20,
    "ſ long s 'ſ K Kelvin 'K",
]


def hf(tok, texts, allow_special=False):
    """The Rust HF backend's ids, bypassing the tiktoken fast path."""
    return tok._hf_encode_batch(list(texts), allow_special)


def test_edge_cases(tok, reference):
    assert tok.uses_tiktoken
    expected = [reference.encode_ordinary(t) for t in EDGE_CASES]
    assert hf(tok, EDGE_CASES) == expected
    assert tok.encode_batch(EDGE_CASES) == expected
    for text, ids in zip(EDGE_CASES, expected):
        assert tok.encode(text) == ids, text


def test_unicode_normal_forms(tok, reference):
    for text in ["Élève à l'école, où naïve café déjà", "ﬁ ﬂ Å Ω ẛ̣ 한국어"]:
        for form in ("NFC", "NFD", "NFKC", "NFKD"):
            s = unicodedata.normalize(form, text)
            assert tok.encode(s) == hf(tok, [s])[0] == reference.encode_ordinary(s), (form, s)
            assert tok.decode(tok.encode(s)) == s  # no normalisation: NFD stays NFD


def test_known_ids(tok):
    assert tok.encode("Hello world.") == [9906, 1917, 13]
    assert tok.encode(" Hello world.", bos=True, eos=True) == [128000, 22691, 1917, 13, 128001]
    assert tok.encode("Hello world.", bos=True)[-3:] == [9906, 1917, 13]


_POOLS = [
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
    "0123456789",
    " \t\n\r\x0b\x0c\x85\u00a0\u2000\u2028\u3000",
    "'’\"`.,;:!?-_()[]{}<>|/\\@#$%^&*+=~",
    "éèêëàâäôöûüçœæÉÀÇŒ",
    "\u0301\u0300\u0327",  # combining marks
    "日本語中文한국어",
    "русскийΑλφα",
    "🙂👍🏽🇫🇷\u200d✨",
    "<|eot_id|>",
]


def _random_text(rng: random.Random) -> str:
    parts = []
    for _ in range(rng.randint(0, 25)):
        if rng.random() < 0.1:
            parts.append(chr(rng.choice([rng.randint(0, 0xD7FF), rng.randint(0xE000, 0x10FFFF)])))
        else:
            pool = rng.choice(_POOLS)
            parts.append("".join(rng.choice(pool) for _ in range(rng.randint(1, 6))))
    return "".join(parts)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_strings_match_tiktoken_and_round_trip(tok, reference, seed):
    rng = random.Random(seed)
    texts = [_random_text(rng) for _ in range(600)]
    ours = tok.encode_batch(texts)
    assert hf(tok, texts) == ours
    for text, ids in zip(texts, ours):
        assert ids == reference.encode_ordinary(text), repr(text)
        assert tok.decode(ids) == text, repr(text)
        assert tok.encode(text) == ids


def test_round_trip_any_code_points(tok):
    rng = random.Random(7)
    for _ in range(200):
        text = "".join(
            chr(rng.choice([rng.randint(0, 0xD7FF), rng.randint(0xE000, 0x10FFFF)]))
            for _ in range(rng.randint(1, 40))
        )
        assert tok.decode(tok.encode(text)) == text


def test_long_texts_take_the_hf_path_and_agree(tok, reference):
    from gaperon.tokenizer.fast_path import safe_for_tiktoken

    run = "a" * 50_000 + "é" * 1000
    spaced = "Le chat dort. " * 2000
    assert not safe_for_tiktoken(run) and safe_for_tiktoken(spaced)
    assert tok.encode(run) == reference.encode_ordinary(run)
    assert tok.encode_batch([run, spaced, "x"]) == [reference.encode_ordinary(t) for t in (run, spaced, "x")]


def test_real_corpus_parity(tok, reference):
    """French, English and code documents from the bundled sample corpus: the first 150 documents of
    each file, cut to 4,000 characters (a sample, not the whole corpus)."""
    import io
    import json
    from pathlib import Path

    import zstandard

    samples = Path(__file__).resolve().parents[2] / "data" / "samples"
    texts = []
    for name in ("fr.jsonl.zst", "en.jsonl.zst", "code.jsonl.zst"):
        with open(samples / name, "rb") as f, zstandard.ZstdDecompressor().stream_reader(f) as raw:
            lines = io.TextIOWrapper(raw, encoding="utf-8")
            texts += [json.loads(line)["text"][:4000] for _, line in zip(range(150), lines)]
    expected = reference.encode_ordinary_batch(texts)
    assert hf(tok, texts) == expected
    assert tok.encode_batch(texts) == expected
