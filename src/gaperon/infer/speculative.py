"""Speculative decoding: a small draft model proposes k tokens, the target checks them in one forward.

Greedy output is exactly the target's own greedy output; with sampling, the standard rejection
scheme (Leviathan et al. 2023; Chen et al. 2023) keeps the target's distribution. Both models must
share the tokenizer: this is why Gaperon kept the Llama-3.1 one (small Llama-3.x models can draft).
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Collection, Hashable, Iterator, Sequence

import torch
from torch import Tensor

from gaperon.errors import UsageError
from gaperon.infer.requests import (
    DynamicKVCache,
    RequestState,
    StepOutput,
    chunk_logits,
    engine_max_len,
    model_device,
    new_request,
)
from gaperon.infer.sampling import Sampling, filtered_probs, make_generator, sample_from_probs
from gaperon.model.protocol import CausalLM
from gaperon.tokenizer.protocol import TextTokenizer


def check_draft_tokenizer(
    tok: TextTokenizer, draft_tok: TextTokenizer | None, draft_name: str = "draft"
) -> None:
    """Refuse a draft whose tokenizer maps text to other ids than the target's (its identity hashes
    the vocabulary, merges and added tokens: an equal vocabulary size is not enough)."""
    if draft_tok is None:
        raise UsageError(
            f"the draft model {draft_name} has no tokenizer: cannot check it shares the target's"
        )
    if draft_tok.identity() != tok.identity():
        raise UsageError(
            f"the draft model {draft_name} uses another tokenizer than the target (different token ids): "
            "speculative decoding needs both models to share one tokenizer"
        )


def check_speculative_sampling(params: Sampling) -> None:
    """What the draft-then-verify loop does not implement is refused, not silently ignored."""
    if params.penalized or params.logit_bias or params.logprobs is not None:
        raise UsageError(
            "penalties, logit_bias and logprobs are not supported with a draft model (speculative decoding)"
        )


class SpeculativeDecoder:
    """Draft-then-verify token source for one sequence; counts proposed and accepted draft tokens."""

    def __init__(self, target: CausalLM, draft: CausalLM, k: int = 4) -> None:
        tv, dv = target.cfg.vocab_size, draft.cfg.vocab_size
        if tv != dv:
            raise UsageError(
                f"the draft model's vocabulary ({dv} tokens) differs from the target's ({tv} tokens): "
                "speculative decoding needs both models to share one tokenizer"
            )
        if k < 1:
            raise UsageError(f"the number of draft tokens per step must be >= 1, got {k}")
        self.target, self.draft, self.k = target, draft, k
        self.proposed = 0
        self.accepted = 0

    def acceptance_rate(self) -> float:
        """Accepted draft tokens / proposed draft tokens (0.0 before any proposal)."""
        return self.accepted / self.proposed if self.proposed else 0.0

    def tokens(self, prompt_ids: Sequence[int], params: Sampling) -> Iterator[int]:
        """Endless next tokens (the caller stops pulling); each round yields 1..k+1 tokens."""
        check_speculative_sampling(params)
        device = model_device(self.target)
        gen = make_generator(params.seed, device)
        seq = list(prompt_ids)
        tcache, dcache = DynamicKVCache(), DynamicKVCache()
        # Invariant: each cache holds keys/values for a prefix of seq[:-1].
        if len(seq) > 1:
            chunk_logits(self.target, seq[:-1], 0, tcache)
            chunk_logits(self.draft, seq[:-1], 0, dcache)
        ctx = min(self.target.cfg.max_seq_len, self.draft.cfg.max_seq_len)
        while True:
            k = max(0, min(self.k, ctx - len(seq)))
            drafts: list[int] = []
            qs: list[Tensor] = []
            feed = seq[len(dcache) :]
            for _ in range(k):
                logits = chunk_logits(self.draft, feed, len(dcache), dcache).to(device)
                # Greedy needs only argmaxes; sampling needs the filtered distributions.
                q = logits if params.greedy else filtered_probs(logits, [params])
                d = int(q.argmax(-1)) if params.greedy else int(sample_from_probs(q, [gen]))
                drafts.append(d)
                qs.append(q[0])
                feed = [d]
            block = [seq[-1], *drafts]
            logits = chunk_logits(self.target, block, len(seq) - 1, tcache, last_only=False)
            p = logits if params.greedy else filtered_probs(logits, [params] * len(block))
            out = self._accept(drafts, qs, p, params, gen)
            n = len(out) - 1
            self.proposed += k
            self.accepted += n
            tcache.crop(len(seq) + n)
            dcache.crop(min(len(dcache), len(seq) + n))
            for token in out:
                seq.append(token)
                yield token

    @staticmethod
    def _accept(
        drafts: list[int], qs: list[Tensor], p: Tensor, params: Sampling, gen: torch.Generator
    ) -> list[int]:
        """The accepted draft prefix plus one token from the target (correction or bonus)."""
        out: list[int] = []
        for i, x in enumerate(drafts):
            if params.greedy:
                best = int(p[i].argmax())
                if best != x:
                    return [*out, best]
            else:
                u = float(torch.rand((), generator=gen, device=p.device))
                ratio = float(p[i, x]) / max(float(qs[i][x]), 1e-20)
                if u >= min(1.0, ratio):
                    residual = (p[i] - qs[i]).clamp_min(0)
                    if float(residual.sum()) <= 0:
                        residual = p[i]
                    return [*out, int(sample_from_probs(residual[None], [gen]))]
            out.append(x)
        last = p[len(drafts)]
        bonus = int(last.argmax()) if params.greedy else int(sample_from_probs(last[None], [gen]))
        return [*out, bonus]


class SpeculativeEngine:
    """The engine API (`add_request`, `step`, `cancel`) over speculative decoding.

    It serves ONE request at a time (others wait in order): speculation pays off when the target is
    memory-bound at batch 1, which batching would undo. Each step yields up to k+1 tokens of the
    running request.
    """

    max_batch = 1

    def __init__(
        self,
        target: CausalLM,
        draft: CausalLM,
        tok: TextTokenizer,
        *,
        k: int = 4,
        max_len: int | None = None,
    ) -> None:
        SpeculativeDecoder(target, draft, k)  # fail early on a vocabulary mismatch
        self.target, self.draft, self.tok, self.k = target, draft, tok, k
        self.device = model_device(target)
        self.max_len = min(engine_max_len(target, max_len), draft.cfg.max_seq_len)
        self._waiting: deque[RequestState] = deque()
        self._current: tuple[RequestState, Iterator[int], SpeculativeDecoder] | None = None
        self._ids = itertools.count()
        self._pending_out: list[StepOutput] = []
        self.proposed = 0
        self.accepted = 0

    def add_request(
        self,
        prompt_ids: Sequence[int],
        sampling: Sampling = Sampling(),
        *,
        stop_ids: Collection[int] | None = None,
        request_id: Hashable | None = None,
        echo_logprobs: int | None = None,
    ) -> Hashable:
        check_speculative_sampling(sampling)
        if echo_logprobs is not None:
            raise UsageError("echo with logprobs is not supported with a draft model")
        rid = next(self._ids) if request_id is None else request_id
        if any(r.id == rid for r in self._all()):
            raise UsageError(f"request id {rid!r} is already in use")
        req = new_request(rid, prompt_ids, self.tok, self.target, self.max_len, sampling, stop_ids)
        if req.max_new == 0:
            self._pending_out.append(StepOutput(rid, [], "", True, "length"))
        else:
            self._waiting.append(req)
        return rid

    def cancel(self, request_id: Hashable) -> bool:
        for req in list(self._waiting):
            if req.id == request_id:
                self._waiting.remove(req)
                return True
        if self._current is not None and self._current[0].id == request_id:
            self._close_current()
            return True
        return False

    @property
    def num_active(self) -> int:
        return len(self._waiting) + (self._current is not None)

    def has_work(self) -> bool:
        return bool(self._waiting or self._current or self._pending_out)

    def acceptance_rate(self) -> float:
        return self.accepted / self.proposed if self.proposed else 0.0

    def step(self) -> list[StepOutput]:
        outputs, self._pending_out = self._pending_out, []
        if self._current is None and self._waiting:
            req = self._waiting.popleft()
            spec = SpeculativeDecoder(self.target, self.draft, self.k)
            self._current = (req, spec.tokens(req.prompt, req.params), spec)
        if self._current is not None:
            req, tokens, _ = self._current
            out = StepOutput(req.id, [], "")
            for _ in range(self.k + 1):
                req.accept(next(tokens), out)
                if req.finished:
                    self._close_current()
                    break
            outputs.append(out)
        return outputs

    def _close_current(self) -> None:
        assert self._current is not None
        _, tokens, spec = self._current
        close = getattr(tokens, "close", None)
        if close is not None:
            close()
        self.proposed += spec.proposed
        self.accepted += spec.accepted
        self._current = None

    def _all(self) -> list[RequestState]:
        return [*self._waiting, *([self._current[0]] if self._current else [])]
