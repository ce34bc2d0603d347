"""`TextTokenizer`: what inference code uses of a tokenizer, and THE BOS rule (`prompt_bos`).

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

    @property
    def add_bos(self) -> bool:
        """Documents started with BOS when the model was trained (see `prompt_bos`)."""
        ...

    def encode(
        self, text: str, *, bos: bool = ..., eos: bool = ..., allow_special: bool = ...
    ) -> list[int]: ...

    def decode(self, ids: Iterable[int], *, skip_special: bool = ...) -> str: ...

    def encode_chat(
        self, messages: Sequence[Mapping[str, Any]], *, add_generation_prompt: bool = ...
    ) -> list[int]: ...

    def identity(self) -> str: ...


def prompt_bos(tok: TextTokenizer) -> bool:
    """Whether a document (`gaperon tokenize`) or a plain-text prompt (`generate`, `/v1/completions`,
    evaluation contexts) starts with BOS: exactly when the tokenizer records that its model was
    trained so (`add_bos`: False for our llama3 pretraining, the source's own rule for an imported
    folder or GGUF). Chat prompts leave BOS to the chat template. A tokenizer that records nothing
    gets no BOS.
    """
    return getattr(tok, "add_bos", False) is True and tok.bos_id is not None
