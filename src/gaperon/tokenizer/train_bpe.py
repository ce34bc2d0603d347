"""Train a small byte-level BPE of the Llama-3 design, for experiments that cannot afford 128k rows.

Same split regex, byte-level alphabet, `ignore_merges` and special tokens placed right after the
learned vocabulary, so everything downstream (chat format, stop ids, shards) works unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tokenizers import AddedToken, models, trainers
from tokenizers import Tokenizer as Backend
from tokenizers.pre_tokenizers import ByteLevel

from gaperon.errors import UsageError
from gaperon.tokenizer.chat import LLAMA3_CHAT_TEMPLATE
from gaperon.tokenizer.core import Tokenizer
from gaperon.tokenizer.specials import (
    BOS,
    END_HEADER,
    EOS,
    EOT,
    LLAMA3_PATTERN,
    LLAMA3_SPECIALS,
    LLAMA3_STOP,
    PAD,
    START_HEADER,
)
from gaperon.tokenizer.tiktoken_ranks import configure_byte_level


def train_bpe(
    texts: Iterable[str],
    vocab_size: int,
    *,
    special_tokens: Sequence[str] | int = LLAMA3_SPECIALS,
    min_frequency: int = 2,
) -> Tokenizer:
    """A BPE with `vocab_size` ids in all (learned tokens, then the specials).

    `special_tokens` is a list of names or a count n (the first n Llama-3 specials); it must contain
    <|begin_of_text|> and <|end_of_text|>. A corpus too small to learn that many merges gives a smaller
    vocabulary: size the model from `tok.vocab_size`.
    """
    specials = (
        list(LLAMA3_SPECIALS[:special_tokens]) if isinstance(special_tokens, int) else list(special_tokens)
    )
    if isinstance(special_tokens, int) and not 2 <= special_tokens <= len(LLAMA3_SPECIALS):
        raise UsageError(f"special_tokens count must be in [2, {len(LLAMA3_SPECIALS)}], got {special_tokens}")
    for needed in (BOS, EOS):
        if needed not in specials:
            raise UsageError(f"special_tokens must include {needed}")
    if len(set(specials)) != len(specials):
        raise UsageError("special_tokens has duplicates")
    learned = vocab_size - len(specials)
    if learned < 256:
        raise UsageError(
            f"vocab_size {vocab_size} leaves {learned} learned ids; need >= 256 (the byte alphabet) + "
            f"{len(specials)} specials"
        )
    backend = Backend(models.BPE(ignore_merges=True))
    configure_byte_level(backend, LLAMA3_PATTERN)
    trainer = trainers.BpeTrainer(
        vocab_size=learned,
        min_frequency=min_frequency,
        initial_alphabet=ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    backend.add_special_tokens([AddedToken(s, special=True, normalized=False) for s in specials])
    chat = LLAMA3_CHAT_TEMPLATE if {START_HEADER, END_HEADER, EOT} <= set(specials) else None
    return Tokenizer(
        backend,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD if PAD in specials else None,
        stop_tokens=[t for t in LLAMA3_STOP if t in specials],
        chat_template=chat,
        name=f"bpe-{backend.get_vocab_size(with_added_tokens=True)}",
    )
