"""The simple generator: one sequence, a growing (concatenating) KV cache, streaming text.

It is the reference the fast engine is tested against, and the path `gaperon generate` and
`gaperon chat` use for a single conversation.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from gaperon.infer.sampling import SamplingParams, make_generator, sample
from gaperon.infer.text import TextAssembler


class DynamicKVCache:
    """Per-layer keys/values that grow by concatenation; `crop` rolls back (speculative decoding)."""

    def __init__(self) -> None:
        self.k: dict[int, Tensor] = {}
        self.v: dict[int, Tensor] = {}

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        if layer in self.k:
            k = torch.cat([self.k[layer], k], dim=2)
            v = torch.cat([self.v[layer], v], dim=2)
        self.k[layer], self.v[layer] = k, v
        return k, v

    def __len__(self) -> int:
        return next(iter(self.k.values())).shape[2] if self.k else 0

    def crop(self, length: int) -> None:
        for layer in self.k:
            self.k[layer] = self.k[layer][:, :, :length]
            self.v[layer] = self.v[layer][:, :, :length]


@dataclass
class GenerationResult:
    ids: list[int]
    text: str
    finish_reason: str  # "stop" (stop token or stop string) | "length"
    prompt_tokens: int
    acceptance_rate: float | None = None  # speculative decoding only

    @property
    def completion_tokens(self) -> int:
        return len(self.ids)


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def context_budget(model: nn.Module, prompt_len: int, max_new_tokens: int) -> int:
    """How many tokens may be generated so that prompt + output fits the model's context."""
    ctx = model.cfg.max_seq_len
    if prompt_len == 0:
        raise ValueError("the prompt is empty: give at least one token")
    if prompt_len >= ctx:
        raise ValueError(f"the prompt has {prompt_len} tokens but the model's context is {ctx} tokens")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    return min(max_new_tokens, ctx - prompt_len)


@torch.inference_mode()
def chunk_logits(
    model: nn.Module, ids: Sequence[int], start: int, cache: DynamicKVCache | None, last_only: bool = True
) -> Tensor:
    """fp32 logits (T, V) (or (1, V) with last_only) of `ids` placed at positions start.. ."""
    device = model_device(model)
    tokens = torch.tensor([list(ids)], device=device)
    positions = torch.arange(start, start + len(ids), device=device)
    h = model.hidden_states(tokens, positions=positions, cache=cache)[0]
    # Only the rows we need go through the (possibly 128k-wide) LM head.
    return model.lm_head(h[-1:] if last_only else h).float()


def plain_tokens(
    model: nn.Module, prompt_ids: Sequence[int], params: SamplingParams, use_cache: bool = True
) -> Iterator[int]:
    """Endless next tokens of one sequence; the caller stops pulling when it is done."""
    gen = make_generator(params.seed, model_device(model))
    seq = list(prompt_ids)
    cache = DynamicKVCache() if use_cache else None
    logits = chunk_logits(model, seq, 0, cache)
    while True:
        token = int(sample(logits, [params], [gen])[0])
        yield token
        seq.append(token)
        if cache is not None:
            logits = chunk_logits(model, [token], len(seq) - 1, cache)
        else:
            logits = chunk_logits(model, seq, 0, None)


class Generation:
    """Iterating yields text deltas (whole characters, stop strings held back); then `.result`."""

    def __init__(
        self,
        tokens: Iterator[int],
        tok,
        *,
        prompt_tokens: int,
        max_new_tokens: int,
        stop_ids: Collection[int],
        stop_strings: Sequence[str] = (),
        acceptance=None,
    ) -> None:
        self._tokens = tokens
        self._tok = tok
        self._prompt_tokens = prompt_tokens
        self._max_new = max_new_tokens
        self._stop_ids = frozenset(int(i) for i in stop_ids)
        self._stop_strings = tuple(stop_strings)
        self._acceptance = acceptance  # callable -> float, for speculative decoding
        self.result: GenerationResult | None = None

    def __iter__(self) -> Iterator[str]:
        asm = TextAssembler(self._tok, self._stop_strings)
        ids: list[int] = []
        finish = "length"
        try:
            if self._max_new > 0:
                for token in self._tokens:
                    if token in self._stop_ids:
                        finish = "stop"
                        break
                    ids.append(token)
                    delta = asm.push(token)
                    if delta:
                        yield delta
                    if asm.stopped:
                        finish = "stop"
                        break
                    if len(ids) >= self._max_new:
                        break
        finally:
            close = getattr(self._tokens, "close", None)
            if close is not None:
                close()
        delta = asm.flush()
        if delta:
            yield delta
        rate = self._acceptance() if self._acceptance is not None else None
        self.result = GenerationResult(ids, asm.text, finish, self._prompt_tokens, rate)


def stream(
    model: nn.Module,
    tok,
    prompt_ids: Sequence[int],
    *,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
    stop_ids: Collection[int] | None = None,
    stop_strings: Sequence[str] = (),
    cache: bool = True,
    draft: nn.Module | None = None,
    draft_k: int = 4,
) -> Generation:
    """Like `generate`, but returns a `Generation` to iterate for text deltas as they come."""
    params = SamplingParams(temperature, top_k, top_p, seed)
    budget = context_budget(model, len(prompt_ids), max_new_tokens)
    vocab = model.cfg.vocab_size
    bad = next((t for t in prompt_ids if not 0 <= t < vocab), None)
    if bad is not None:
        raise ValueError(f"prompt token id {bad} is outside the model's vocabulary [0, {vocab})")
    stops = tok.stop_ids if stop_ids is None else stop_ids
    acceptance = None
    if draft is not None:
        from gaperon.infer.speculative import SpeculativeDecoder

        spec = SpeculativeDecoder(model, draft, k=draft_k)
        tokens = spec.tokens(prompt_ids, params)
        acceptance = spec.acceptance_rate
    else:
        tokens = plain_tokens(model, prompt_ids, params, use_cache=cache)
    return Generation(
        tokens,
        tok,
        prompt_tokens=len(prompt_ids),
        max_new_tokens=budget,
        stop_ids=stops,
        stop_strings=stop_strings,
        acceptance=acceptance,
    )


def generate(model: nn.Module, tok, prompt_ids: Sequence[int], **kwargs) -> GenerationResult:
    """Generate a continuation of `prompt_ids` (keyword arguments as in `stream`).

    temperature 0 is greedy; stop_ids defaults to the tokenizer's end-of-turn/end-of-text ids;
    stop strings are cut from the text. `cache=False` recomputes the whole sequence every token
    (the reference the KV cache is tested against).
    """
    gen = stream(model, tok, prompt_ids, **kwargs)
    for _ in gen:
        pass
    assert gen.result is not None
    return gen.result
