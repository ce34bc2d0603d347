"""What every decoder shares: request validation and state, results, the growing KV cache, one forward.

The reference generator (`generate.py`), the batched engine (`engine.py`) and speculative decoding
(`speculative.py`) all import from here and never from each other's internals, so the dependency
runs one way: requests <- generate, engine <- speculative.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from gaperon.errors import UsageError
from gaperon.infer.sampling import Sampling, make_generator, token_logprobs
from gaperon.infer.text import TextAssembler
from gaperon.model.protocol import CausalLM
from gaperon.tokenizer.protocol import TextTokenizer

# One generated token's log-probability and its most likely alternatives [(id, logprob), ...].
TokenLogprob = tuple[float, list[tuple[int, float]]]


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
    logprobs: list[TokenLogprob] | None = None  # with Sampling.logprobs set

    @property
    def completion_tokens(self) -> int:
        return len(self.ids)


@dataclass
class StepOutput:
    """What one request got from one engine step."""

    request_id: Hashable
    token_ids: list[int]
    text: str
    finished: bool = False
    finish_reason: str | None = None  # "stop" (stop token or string) | "length"
    logprobs: list[TokenLogprob] = field(default_factory=list)  # one per token_ids entry, when asked
    prompt_logprobs: list[TokenLogprob | None] | None = None  # echo: with the first output only


def model_device(model: CausalLM) -> torch.device:
    return next(model.parameters()).device


def context_budget(model: CausalLM, prompt_len: int, max_new_tokens: int, max_len: int | None = None) -> int:
    """How many tokens may be generated so that prompt + output fits the context (refuses prompts
    that leave no room)."""
    ctx = model.cfg.max_seq_len if max_len is None else min(max_len, model.cfg.max_seq_len)
    if prompt_len == 0:
        raise UsageError("the prompt is empty: give at least one token")
    if prompt_len >= ctx:
        raise UsageError(f"the prompt has {prompt_len} tokens but the context is {ctx} tokens")
    return min(max_new_tokens, ctx - prompt_len)


def check_prompt_ids(model: CausalLM, prompt: Sequence[int]) -> None:
    vocab = model.cfg.vocab_size
    bad = next((t for t in prompt if not 0 <= t < vocab), None)
    if bad is not None:  # checked here: inside a batched step it would fail every request
        raise UsageError(f"prompt token id {bad} is outside the model's vocabulary [0, {vocab})")


@torch.inference_mode()
def chunk_logits(
    model: CausalLM, ids: Sequence[int], start: int, cache: DynamicKVCache | None, last_only: bool = True
) -> Tensor:
    """fp32 logits (T, V) (or (1, V) with last_only) of `ids` placed at positions start.. ."""
    device = model_device(model)
    tokens = torch.tensor([list(ids)], device=device)
    positions = torch.arange(start, start + len(ids), device=device)
    h = model.hidden_states(tokens, positions=positions, cache=cache)[0]
    # Only the rows we need go through the (possibly 128k-wide) LM head.
    return model.lm_head(h[-1:] if last_only else h).float()


@dataclass
class RequestState:
    """One request's progress and stop rules; shared by the engine and the speculative engine."""

    id: Hashable
    prompt: list[int]
    params: Sampling
    max_new: int
    stop_ids: frozenset[int]
    asm: TextAssembler
    generator: torch.Generator
    ids: list[int] = field(default_factory=list)
    slot: int = -1
    last: int = -1  # the token to feed next
    finished: bool = False
    prompt_logprobs: list[TokenLogprob | None] | None = None  # computed at admission when asked
    echo_top: int | None = None  # score the prompt, with this many alternatives per token

    @property
    def next_position(self) -> int:
        return len(self.prompt) + len(self.ids) - 1

    def accept(
        self, token: int, out: StepOutput | None = None, logprob: TokenLogprob | None = None
    ) -> StepOutput:
        """Take one generated token; says (in the returned output) whether the request finished."""
        out = out or StepOutput(self.id, [], "")
        if token in self.stop_ids:
            self._finish(out, "stop")
            return out
        self.ids.append(token)
        self.last = token
        out.token_ids.append(token)
        if logprob is not None:
            out.logprobs.append(logprob)
        out.text += self.asm.push(token)
        if self.asm.stopped:
            self._finish(out, "stop")
        elif len(self.ids) >= self.max_new:
            self._finish(out, "length")
        return out

    def _finish(self, out: StepOutput, reason: str) -> None:
        out.text += self.asm.flush()
        out.finished, out.finish_reason = True, reason
        self.finished = True


def new_request(
    rid: Hashable,
    prompt_ids: Sequence[int],
    tok: TextTokenizer,
    model: CausalLM,
    max_len: int,
    params: Sampling,
    stop_ids: Collection[int] | None = None,
) -> RequestState:
    """Validate a request and build its state (budget clipped so prompt + output fit max_len)."""
    prompt = [int(t) for t in prompt_ids]
    budget = context_budget(model, len(prompt), params.max_new_tokens, max_len)
    check_prompt_ids(model, prompt)
    stops = tok.stop_ids if stop_ids is None else stop_ids
    return RequestState(
        rid,
        prompt,
        params,
        budget,
        frozenset(int(s) for s in stops),
        TextAssembler(tok, params.stop),
        make_generator(params.seed, model_device(model)),
    )


def engine_max_len(model: CausalLM, max_len: int | None) -> int:
    """Positions per request: max_len if the model's context allows it (else an error, never a
    silent clamp), by default min(4096, the model's context)."""
    ctx = model.cfg.max_seq_len
    if max_len is None:
        return min(4096, ctx)
    if max_len < 2:
        raise UsageError(f"--max-len must be >= 2, got {max_len}")
    if max_len > ctx:
        raise UsageError(f"--max-len {max_len} is longer than the model's context ({ctx} tokens)")
    return max_len


@torch.inference_mode()
def prompt_logprobs(model: CausalLM, prompt_ids: Sequence[int], top: int = 0) -> list[TokenLogprob | None]:
    """Log-probability of every prompt token given the ones before it (None for the first), with the
    `top` most likely alternatives: what `echo` with `logprobs` reports on /v1/completions."""
    check_prompt_ids(model, prompt_ids)
    context_budget(model, len(prompt_ids), 0)
    ids = list(prompt_ids)
    if len(ids) == 1:
        return [None]
    logits = chunk_logits(model, ids[:-1], 0, None, last_only=False)
    scored = token_logprobs(logits, torch.tensor(ids[1:], device=logits.device), top)
    return [None, *scored]
