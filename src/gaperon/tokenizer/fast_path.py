"""An exact tiktoken encoder for backends that are a tiktoken rank table in disguise.

Why: on this corpus tiktoken encodes the Llama-3.1 BPE 3-5x faster than the Rust HF backend
(benchmarks/tokenizer_throughput.py) and gives identical ids (tests/tokenizer/test_parity.py), so
`Tokenizer.encode*` uses it when the backend is provably the same BPE: byte-level, the Llama-3 split
regex, `ignore_merges`, and exactly the merges that the ranks imply. Anything else (trained BPEs,
GGUF vocabularies, other regexes) stays on the HF backend. Texts that could make tiktoken's regex
engine overflow (very long, or long runs without a whitespace change) go to the HF backend too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

import tiktoken
from tokenizers import Tokenizer as Backend

from gaperon.tokenizer.specials import LLAMA3_PATTERN
from gaperon.tokenizer.tiktoken_ranks import ranks_to_vocab_merges, token_to_bytes

# Meta's wrapper notes tiktoken panics beyond ~400k characters or 25k-character runs of (non-)whitespace.
MAX_CHARS = 400_000
_LONG_RUN = re.compile(r"\S{20000}|\s{20000}")


def safe_for_tiktoken(text: str) -> bool:
    return len(text) < 20_000 or (len(text) <= MAX_CHARS and _LONG_RUN.search(text) is None)


def tiktoken_encoding(
    name: str, ranks: Mapping[bytes, int], specials: Mapping[str, int], pattern: str = LLAMA3_PATTERN
) -> tiktoken.Encoding:
    return tiktoken.Encoding(
        name, pat_str=pattern, mergeable_ranks=dict(ranks), special_tokens=dict(specials)
    )


def ranks_if_equivalent(backend: Backend) -> dict[bytes, int] | None:
    """The rank table a backend is equivalent to, or None if tiktoken would not give the same ids."""
    data = json.loads(backend.to_str())
    model = data.get("model") or {}
    if data.get("normalizer") is not None or model.get("type") != "BPE" or not model.get("ignore_merges"):
        return None
    if model.get("dropout") or model.get("byte_fallback") or model.get("continuing_subword_prefix"):
        return None
    if model.get("end_of_word_suffix"):
        return None
    pre = data.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [])
    if pre.get("type") != "Sequence" or len(steps) != 2:
        return None
    split, byte_level = steps
    if (
        split.get("type") != "Split"
        or split.get("pattern") != {"Regex": LLAMA3_PATTERN}
        or split.get("behavior") != "Isolated"
        or split.get("invert")
        or byte_level.get("type") != "ByteLevel"
        or byte_level.get("use_regex")
        or byte_level.get("add_prefix_space")
    ):
        return None
    for added in data.get("added_tokens", []):
        # tiktoken matches only special tokens, exactly: HF options that change matching disqualify.
        if not added.get("special") or added.get("lstrip") or added.get("rstrip") or added.get("single_word"):
            return None
    ranks: dict[bytes, int] = {}
    for token, i in model.get("vocab", {}).items():
        raw = token_to_bytes(token)
        if raw is None:
            return None
        ranks[raw] = i
    if sorted(ranks.values()) != list(range(len(ranks))) or any(bytes([b]) not in ranks for b in range(256)):
        return None
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model.get("merges", [])]
    if merges != ranks_to_vocab_merges(ranks)[1]:
        return None
    return ranks
