"""`TextTokenizer`: what inference code uses of a tokenizer, and the BOS rule for plain prompts.

`gaperon.tokenizer.Tokenizer` satisfies it; the test doubles do too. `identity()` names the id
mapping (two tokenizers with the same identity give the same ids), which is what speculative
decoding needs of a draft: the same vocabulary size is not enough.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class TextTokenizer(Protocol):
    @property
    def bos_id(self) -> int | None: ...

    @property
    def eos_id(self) -> int: ...

    @property
    def stop_ids(self) -> Collection[int]:
        """Ids that end a reply (end of text, end of turn)."""
        ...

    @property
    def vocab_size(self) -> int: ...

    @property
    def chat_template(self) -> str | None: ...

    def encode(
        self, text: str, *, bos: bool = ..., eos: bool = ..., allow_special: bool = ...
    ) -> list[int]: ...

    def decode(self, ids: Iterable[int], *, skip_special: bool = ...) -> str: ...

    def encode_chat(
        self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = ...
    ) -> list[int]: ...

    def identity(self) -> str: ...


def prompt_bos(tok: TextTokenizer) -> bool:
    """Whether a plain-text prompt (`generate`, `/v1/completions`) starts with BOS.

    The rule: a prompt starts the way the model's own documents started in training. A tokenizer
    that states it (an `add_bos` attribute) is believed; otherwise a tokenizer whose chat template
    writes BOS (Llama-3) was trained on BOS-prefixed text and gets one, and any other gets none.
    """
    declared = getattr(tok, "add_bos", None)
    if isinstance(declared, bool):
        return declared and tok.bos_id is not None
    template = tok.chat_template or ""
    wrote_bos = "bos_token" in template or "<|begin_of_text|>" in template
    return wrote_bos and tok.bos_id is not None
