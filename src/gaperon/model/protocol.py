"""`CausalLM`: what inference code uses of a model, so engines accept any object shaped like it.

`Llama` satisfies it; so do the scripted stand-ins of the tests. Engines read the config (vocabulary,
layers, KV heads, head size, context), run the trunk (`hidden_states`) and the head separately (only
the rows they need go through a vocabulary-wide head), or both at once (`__call__`) with positions,
an attention mask and a KV cache.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn

from gaperon.model.llama import KVCache, ModelConfig


@runtime_checkable
class CausalLM(Protocol):
    @property
    def cfg(self) -> ModelConfig: ...

    @property
    def lm_head(self) -> nn.Module: ...

    def hidden_states(
        self,
        tokens: Tensor,
        positions: Tensor | None = ...,
        mask: Tensor | None = ...,
        cache: KVCache | None = ...,
    ) -> Tensor:
        """Final-normed hidden states (B, T, dim) of `tokens` at `positions`."""
        ...

    def __call__(self, tokens: Tensor, *args: Any, **kwargs: Any) -> Any:
        """Logits (B, T, V); keyword arguments positions, mask and cache as in `hidden_states`."""
        ...

    def parameters(self, recurse: bool = ...) -> Iterator[nn.Parameter]: ...

    def eval(self) -> Any: ...
