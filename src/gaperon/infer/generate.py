"""The simple generator: one sequence, a growing (concatenating) KV cache, streaming text.

It is the reference (the test oracle) that the fast engine is checked against; the verbs run the
engine. `Generation` turns any token source into streamed text with the stop rules applied.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence

from gaperon.infer.requests import (
    DynamicKVCache,
    GenerationResult,
    TokenLogprob,
    check_prompt_ids,
    chunk_logits,
    context_budget,
    model_device,
)
from gaperon.infer.sampling import Sampling, adjust_logits, make_generator, sample, token_logprobs
from gaperon.infer.speculative import SpeculativeDecoder
from gaperon.infer.text import TextAssembler
from gaperon.model.protocol import CausalLM
from gaperon.tokenizer.protocol import TextTokenizer

Token = tuple[int, TokenLogprob | None]


def plain_tokens(
    model: CausalLM, prompt_ids: Sequence[int], params: Sampling, use_cache: bool = True
) -> Iterator[Token]:
    """Endless (token, logprob) pairs of one sequence; the caller stops pulling when it is done."""
    gen = make_generator(params.seed, model_device(model))
    prompt = list(prompt_ids)
    seq = list(prompt)
    cache = DynamicKVCache() if use_cache else None
    logits = chunk_logits(model, seq, 0, cache)
    while True:
        raw = logits
        logits = adjust_logits(logits, [params], [prompt], [seq[len(prompt) :]])
        token = sample(logits, [params], [gen])
        lp = token_logprobs(raw, token, params.logprobs)[0] if params.logprobs is not None else None
        yield int(token[0]), lp
        seq.append(int(token[0]))
        if cache is not None:
            logits = chunk_logits(model, seq[-1:], len(seq) - 1, cache)
        else:
            logits = chunk_logits(model, seq, 0, None)


class Generation:
    """Iterating yields text deltas (whole characters, stop strings held back); then `.result`."""

    def __init__(
        self,
        tokens: Iterator[Token],
        tok: TextTokenizer,
        *,
        prompt_tokens: int,
        max_new_tokens: int,
        stop_ids: Collection[int],
        stop_strings: Sequence[str] = (),
        acceptance: Callable[[], float] | None = None,
    ) -> None:
        self._tokens = tokens
        self._tok = tok
        self._prompt_tokens = prompt_tokens
        self._max_new = max_new_tokens
        self._stop_ids = frozenset(int(i) for i in stop_ids)
        self._stop_strings = tuple(stop_strings)
        self._acceptance = acceptance  # speculative decoding's acceptance rate
        self.result: GenerationResult | None = None

    def __iter__(self) -> Iterator[str]:
        asm = TextAssembler(self._tok, self._stop_strings)
        ids: list[int] = []
        logprobs: list[TokenLogprob] = []
        finish = "length"
        try:
            if self._max_new > 0:
                for token, lp in self._tokens:
                    if token in self._stop_ids:
                        finish = "stop"
                        break
                    ids.append(token)
                    if lp is not None:
                        logprobs.append(lp)
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
        self.result = GenerationResult(
            ids, asm.text, finish, self._prompt_tokens, rate, logprobs if logprobs else None
        )


def stream(
    model: CausalLM,
    tok: TextTokenizer,
    prompt_ids: Sequence[int],
    sampling: Sampling = Sampling(),
    *,
    stop_ids: Collection[int] | None = None,
    cache: bool = True,
    draft: CausalLM | None = None,
    draft_k: int = 4,
) -> Generation:
    """Like `generate`, but returns a `Generation` to iterate for text deltas as they come."""
    budget = context_budget(model, len(prompt_ids), sampling.max_new_tokens)
    check_prompt_ids(model, prompt_ids)
    stops = tok.stop_ids if stop_ids is None else stop_ids
    acceptance = None
    tokens: Iterator[Token]
    if draft is not None:
        spec = SpeculativeDecoder(model, draft, k=draft_k)
        tokens = ((t, None) for t in spec.tokens(prompt_ids, sampling))
        acceptance = spec.acceptance_rate
    else:
        tokens = plain_tokens(model, prompt_ids, sampling, use_cache=cache)
    return Generation(
        tokens,
        tok,
        prompt_tokens=len(prompt_ids),
        max_new_tokens=budget,
        stop_ids=stops,
        stop_strings=sampling.stop,
        acceptance=acceptance,
    )


def generate(
    model: CausalLM,
    tok: TextTokenizer,
    prompt_ids: Sequence[int],
    sampling: Sampling = Sampling(),
    *,
    stop_ids: Collection[int] | None = None,
    cache: bool = True,
    draft: CausalLM | None = None,
    draft_k: int = 4,
) -> GenerationResult:
    """Generate a continuation of `prompt_ids`.

    stop_ids defaults to the tokenizer's end-of-turn/end-of-text ids; stop strings are cut from the
    text. `cache=False` recomputes the whole sequence every token (the reference the KV cache is
    tested against).
    """
    gen = stream(
        model, tok, prompt_ids, sampling, stop_ids=stop_ids, cache=cache, draft=draft, draft_k=draft_k
    )
    for _ in gen:
        pass
    assert gen.result is not None  # iterating to the end sets it
    return gen.result
