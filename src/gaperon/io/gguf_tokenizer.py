"""Rebuild a byte-level BPE tokenizer from a GGUF file's `tokenizer.ggml.*` metadata.

A GGUF carries the vocabulary, merges, token types and special ids, but not the pre-tokenizer: only
a name (`tokenizer.ggml.pre`) that llama.cpp maps to split regexes. We map the names we know to the
same splits as the model's original tokenizer.json. For SmolLM ("smollm") that is digits split one
by one, then GPT-2's byte-level regex; transformers' GGUF converter uses GPT-2's regex alone, which
gives the same ids because the SmolLM vocabulary has no multi-digit tokens (the tests check it).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

from gaperon.tokenizer.specials import LLAMA3_PATTERN
from gaperon.tokenizer.tiktoken_ranks import byte_to_unicode

_LLAMA3_NAMES = {"llama3", "llama-v3", "llama-bpe", "smaug-bpe", "dbrx", "falcon3"}
_GPT2_NAMES = {"gpt2", "gpt-2", "default", None}
# Token types in llama.cpp's vocabulary: 3 = control (special), 4 = user-defined (added, not special).
CONTROL, USER_DEFINED = 3, 4
# Turn-ending tokens of common chat formats; generation stops on whichever the vocabulary has.
END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")


def pre_tokenizer_for(name: str | None) -> pre_tokenizers.PreTokenizer:
    if name in _LLAMA3_NAMES:
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    if name == "smollm":
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Digits(individual_digits=True),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
            ]
        )
    if name not in _GPT2_NAMES:
        warnings.warn(
            f"GGUF tokenizer.ggml.pre {name!r} is not known here; using GPT-2's split (as transformers does)",
            stacklevel=3,
        )
    return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)


@dataclass
class GGUFTokenizerSpec:
    backend: Tokenizer
    bos_token: str | None
    eos_token: str
    pad_token: str | None
    stop_tokens: list[str]
    chat_template: str | None
    add_bos: bool = False


def build_byte_level_bpe(meta: Mapping[str, Any], where: str) -> GGUFTokenizerSpec:
    """`meta`: the file's `tokenizer.*` fields as plain Python values (lists, ints, strings)."""
    from gaperon.io.errors import ModelFormatError

    kind = meta.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise ModelFormatError(
            f"{where}: tokenizer.ggml.model is {kind!r}; only byte-level BPE ('gpt2') tokenizers "
            f"are supported"
        )
    tokens: list[str] = meta.get("tokenizer.ggml.tokens") or []
    merges: list[str] = meta.get("tokenizer.ggml.merges") or []
    if not tokens or not merges:
        raise ModelFormatError(f"{where}: tokenizer.ggml.tokens / tokenizer.ggml.merges missing")
    types = meta.get("tokenizer.ggml.token_type") or [1] * len(tokens)
    alphabet = set(byte_to_unicode().values())
    spell = byte_to_unicode()
    # Whole-list checks first: per-token Python work only where a file needs it (it is most of the
    # tokenizer's build time on a 50k vocabulary otherwise).
    keys = tokens
    if not set("".join(tokens)) <= alphabet:
        keys = [t if set(t) <= alphabet else "".join(spell[b] for b in t.encode("utf-8")) for t in tokens]
    vocab = dict(zip(keys, range(len(keys))))
    if len(vocab) != len(keys):  # repeated spellings: the first id wins
        vocab = {}
        for i, key in enumerate(keys):
            vocab.setdefault(key, i)
    pairs = cast("list[tuple[str, str]]", [tuple(m.split(" ", 1)) for m in merges])  # checked next
    if sum(map(len, pairs)) != 2 * len(pairs):
        bad = next(m for m, pair in zip(merges, pairs) if len(pair) != 2)
        raise ModelFormatError(f"{where}: bad merge {bad!r} in tokenizer.ggml.merges")
    backend = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=pairs,
            dropout=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
        )
    )
    backend.pre_tokenizer = pre_tokenizer_for(meta.get("tokenizer.ggml.pre"))
    backend.decoder = decoders.ByteLevel()
    # Control tokens spelled outside the byte alphabet are llama.cpp mislabels; skip them (as transformers
    # does).
    control = [t for t, ty in zip(tokens, types) if ty == CONTROL and set(t) <= alphabet]
    backend.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in control])
    user = [t for t, ty in zip(tokens, types) if ty == USER_DEFINED and t in vocab]
    if user:
        backend.add_tokens([AddedToken(t, normalized=False, special=False) for t in user])

    def token(key: str) -> str | None:
        idx = meta.get(f"tokenizer.ggml.{key}")
        if idx is None:
            return None
        if not 0 <= int(idx) < len(tokens):
            raise ModelFormatError(f"{where}: tokenizer.ggml.{key} = {idx} is outside the vocabulary")
        return tokens[int(idx)]

    eos = token("eos_token_id")
    if eos is None:
        raise ModelFormatError(f"{where}: tokenizer.ggml.eos_token_id missing")
    stops = [eos] + [t for t in (token("eot_token_id"), token("eom_token_id")) if t]
    stops += [t for t in END_OF_TURN if t in control]
    bos = token("bos_token_id")
    return GGUFTokenizerSpec(
        backend=backend,
        bos_token=bos,
        eos_token=eos,
        pad_token=token("padding_token_id"),
        stop_tokens=list(dict.fromkeys(stops)),
        chat_template=meta.get("tokenizer.chat_template"),
        add_bos=gguf_bos_rule(meta),
    )


def gguf_bos_rule(meta: Mapping[str, Any]) -> bool:
    """Whether the tokenizer loaded from this file starts prompts with BOS (as build_byte_level_bpe
    decides, without building the tokenizer)."""
    return meta.get("tokenizer.ggml.bos_token_id") is not None and gguf_add_bos(meta)


def gguf_add_bos(meta: Mapping[str, Any]) -> bool:
    """The file's own BOS rule (`tokenizer.ggml.add_bos_token`, which llama.cpp follows); a file
    without it gets BOS only for a Llama-3 pre-tokenizer, whose models were trained that way."""
    flag = meta.get("tokenizer.ggml.add_bos_token")
    if flag is not None:
        return bool(flag)
    return meta.get("tokenizer.ggml.pre") in _LLAMA3_NAMES
