"""The fast engine: batched generation over a pre-allocated KV cache, with continuous batching.

Every request owns one row ("slot") of a static cache (slots, kv_heads, max_len, head_dim) per layer
and writes its keys/values at its own positions, so requests of any lengths share a batch without
padding their past. A step first decodes one token for every running request, then admits waiting
requests into free slots (one batched prefill, which also yields their first token). On CUDA the
decode step is compiled (`torch.compile`, which fuses the small element-wise kernels) and captured
once per (batch bucket, KV-length bucket) as a CUDA graph and replayed: at 1B scale a decode step is
~1 ms, so kernel launches, not FLOPs, bound eager decoding. The function compiled and captured is
`Engine.decode_logits`, the very function run eagerly on CPU (and in the tests); it reads only the
static input buffers (`Engine.step_inputs`) and the static KV cache, and samples nothing: sampling
(per-request generators, fp32) happens after the replay, outside the graph.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections import deque
from collections.abc import Callable, Collection, Hashable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

import torch
from torch import Tensor

from gaperon.errors import UsageError
from gaperon.infer.requests import (
    GenerationResult,
    RequestState,
    StepOutput,
    TokenLogprob,
    engine_max_len,
    model_device,
    new_request,
)
from gaperon.infer.sampling import Sampling, adjust_logits, sample, token_logprobs
from gaperon.infer.speculative import SpeculativeEngine
from gaperon.model.protocol import CausalLM
from gaperon.tokenizer.protocol import TextTokenizer

log = logging.getLogger(__name__)


def buckets(limit: int, first: int) -> list[int]:
    """first, 2*first, 4*first, ... capped by (and ending at) limit."""
    out, n = [], first
    while n < limit:
        out.append(n)
        n *= 2
    return [*out, limit]


def bucket_for(n: int, sizes: Sequence[int]) -> int:
    return next(s for s in sizes if s >= n)


class StaticKVCache:
    """Pre-allocated keys/values; `bind` says which slots and positions the next forward writes."""

    def __init__(
        self, model: CausalLM, slots: int, max_len: int, device: torch.device, dtype: torch.dtype
    ) -> None:
        cfg = model.cfg
        shape = (slots, cfg.n_kv_heads, max_len, cfg.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        self.slots, self.max_len = slots, max_len
        self._rows: Tensor | None = None
        self._positions: Tensor | None = None
        self._kv_len = 0
        self._contiguous = True

    def bind(self, rows: Tensor, positions: Tensor, kv_len: int, contiguous: bool) -> None:
        """rows: (B,) slot index of each batch row; positions: (B, T) where each new token goes;
        contiguous: rows are 0..B-1, so reads are views (no copy, CUDA-graph friendly)."""
        self._rows, self._positions, self._kv_len, self._contiguous = rows, positions, kv_len, contiguous

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        kb, vb = self.k[layer], self.v[layer]
        rows, pos = self._rows, self._positions
        assert rows is not None and pos is not None, "bind() comes before a forward"
        # Index (B,1) x slice x (B,T) -> a (B, T, kv_heads, D) target: one scatter per tensor.
        kb[rows[:, None], :, pos] = k.transpose(1, 2).to(kb.dtype)
        vb[rows[:, None], :, pos] = v.transpose(1, 2).to(vb.dtype)
        if self._contiguous:
            b = rows.shape[0]
            return kb[:b, :, : self._kv_len], vb[:b, :, : self._kv_len]
        return kb[rows, :, : self._kv_len], vb[rows, :, : self._kv_len]


DecodeFn = Callable[[Tensor, Tensor, int], Tensor]


class _DecodeGraphs:
    """One captured CUDA graph per (batch bucket, KV bucket), replayed on the engine's static inputs.

    Every graph reads the same static input buffers (views [:b] of `Engine._step_in`), writes the
    same static KV cache, and allocates from ONE shared memory pool. Sharing a pool is safe here
    because graphs are replayed one at a time on one stream and each output is consumed (copied by
    the argmax/gather that follows) before any other graph replays: an output is only valid until
    the next replay of any graph.
    """

    WARMUP = 3  # eager (or first compiled) runs before capture: lazy init, cuBLAS workspaces, autotune

    def __init__(self, engine: Engine, fn: DecodeFn) -> None:
        self.engine, self.fn = engine, fn
        self.graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, Tensor]] = {}
        self.pool = torch.cuda.graph_pool_handle()

    def run(self, b: int, kv_len: int) -> Tensor:
        """Replay (capturing first if needed) the step for batch bucket b and KV bucket kv_len."""
        key = (b, kv_len)
        if key not in self.graphs:
            self.graphs[key] = self._capture(b, kv_len)
        graph, out = self.graphs[key]
        graph.replay()
        return out

    def _capture(self, b: int, kv_len: int) -> tuple[torch.cuda.CUDAGraph, Tensor]:
        tokens, positions = self.engine.step_inputs(b)
        # Warm-up on a side stream (as torch.cuda.graphs requires). Its cache writes are the very
        # ones this step makes (same tokens, same positions), so running it is harmless.
        stream = torch.cuda.Stream(device=self.engine.device)
        stream.wait_stream(torch.cuda.current_stream(self.engine.device))
        with torch.cuda.stream(stream):
            for _ in range(self.WARMUP):
                self.fn(tokens, positions, kv_len)
        torch.cuda.current_stream(self.engine.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        # thread_local: the server captures on its engine thread while other threads may touch CUDA.
        with torch.cuda.graph(graph, pool=self.pool, capture_error_mode="thread_local"):
            out = self.fn(tokens, positions, kv_len)
        return graph, out


class Engine:
    """Batched, continuously batched generation for one model.

    `add_request` queues a prompt; each `step` advances every running request by one token and
    returns what each produced; finished or cancelled requests free their slot at once and the
    next waiting request takes it at the following step.

    max_len: positions per slot (default min(4096, the model's context)); cuda_graphs: capture the
    decode step (default: on CUDA); compile: run the decode step through `torch.compile` (default:
    on CUDA; it fuses the ~30 small element-wise kernels per layer that otherwise cost more than the
    weight reads at batch 1; the compiled step is what the CUDA graphs capture); prefill_tokens: most
    padded prompt tokens prefilled in one step.
    """

    def __init__(
        self,
        model: CausalLM,
        tok: TextTokenizer,
        *,
        max_batch: int = 8,
        max_len: int | None = None,
        cuda_graphs: bool | None = None,
        compile: bool | None = None,
        prefill_tokens: int = 16384,
    ) -> None:
        if max_batch < 1:
            raise UsageError(f"max_batch must be >= 1, got {max_batch}")
        self.model, self.tok = model, tok
        self.device = model_device(model)
        dtype = next(model.parameters()).dtype
        # The cache is (max_batch x max_len) per layer: default to at most 4096 positions.
        self.max_len = engine_max_len(model, max_len)
        self.max_batch = max_batch
        self.prefill_tokens = prefill_tokens
        self.cache = StaticKVCache(model, max_batch, self.max_len, self.device, dtype)
        self.batch_buckets = buckets(max_batch, 1)
        self.kv_buckets = buckets(self.max_len, 64)
        self._slot_index = torch.arange(max_batch, device=self.device)
        self._kv_range = torch.arange(self.max_len, device=self.device)
        # Static decode inputs, one (token, position) row per slot: what CUDA graphs read. The host
        # fills a (pinned, on CUDA) staging copy and ships rows 0..b-1 in ONE contiguous async copy
        # per step; reusing the staging buffer is safe because every step ends with a host sync
        # (reading the sampled ids), so the previous copy has landed.
        self._step_in = torch.zeros(max_batch, 2, dtype=torch.long, device=self.device)
        pin = self.device.type == "cuda"
        self._step_host = torch.zeros(max_batch, 2, dtype=torch.long, pin_memory=pin)
        on_cuda = self.device.type == "cuda"
        if cuda_graphs is None:
            cuda_graphs = on_cuda
        elif cuda_graphs and not on_cuda:
            raise UsageError(f"CUDA graphs need the model on a CUDA device, not {self.device}")
        # dynamic=None: the first recompile (a new KV or batch bucket) makes that size symbolic, so
        # all buckets share ~3 compiled variants, well under dynamo's recompile limit.
        self._compiled = bool(compile if compile is not None else on_cuda)
        self._decode_fn = (
            torch.compile(self.decode_logits, dynamic=None) if self._compiled else self.decode_logits
        )
        self._graphs = _DecodeGraphs(self, self._decode_fn) if cuda_graphs else None
        self._waiting: deque[RequestState] = deque()
        self._running: dict[int, RequestState] = {}  # slot -> request
        self._ids = itertools.count()
        self._pending_out: list[StepOutput] = []

    # ---- public API -------------------------------------------------------------------------
    def add_request(
        self,
        prompt_ids: Sequence[int],
        sampling: Sampling = Sampling(),
        *,
        stop_ids: Collection[int] | None = None,
        request_id: Hashable | None = None,
        echo_logprobs: int | None = None,
    ) -> Hashable:
        """Queue a prompt; it joins the batch at the next step. Returns its id.

        echo_logprobs: also score the prompt itself (each token's log-probability given the ones
        before it, with that many alternatives), delivered with the request's first output."""
        rid = next(self._ids) if request_id is None else request_id
        if any(r.id == rid for r in self._all()):
            raise UsageError(f"request id {rid!r} is already in use")
        req = new_request(rid, prompt_ids, self.tok, self.model, self.max_len, sampling, stop_ids)
        req.echo_top = echo_logprobs  # scored from the prefill's own hidden states at admission
        if req.max_new == 0 and echo_logprobs is None:
            self._pending_out.append(StepOutput(rid, [], "", True, "length"))
        else:
            self._waiting.append(req)
        return rid

    def cancel(self, request_id: Hashable) -> bool:
        """Drop a waiting or running request (its slot is free at once). False if unknown."""
        for req in list(self._waiting):
            if req.id == request_id:
                self._waiting.remove(req)
                return True
        for slot, req in list(self._running.items()):
            if req.id == request_id:
                del self._running[slot]
                return True
        return False

    @property
    def num_active(self) -> int:
        """Requests waiting or running."""
        return len(self._waiting) + len(self._running)

    @property
    def num_running(self) -> int:
        return len(self._running)

    def has_work(self) -> bool:
        return bool(self._waiting or self._running or self._pending_out)

    def step(self) -> list[StepOutput]:
        """Decode one token for every running request, then admit and prefill waiting ones."""
        outputs, self._pending_out = self._pending_out, []
        if self._running:
            outputs += self._decode()
        if self._waiting and len(self._running) < self.max_batch:
            outputs += self._admit()
        return outputs

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        sampling: Sampling = Sampling(),
        *,
        stop_ids: Collection[int] | None = None,
    ) -> list[GenerationResult]:
        """Run several prompts to completion together."""
        ids = [self.add_request(p, sampling, stop_ids=stop_ids) for p in prompts]
        return collect(self, ids, [len(p) for p in prompts])

    # ---- the two forwards ---------------------------------------------------------------------
    def decode_logits(self, tokens: Tensor, positions: Tensor, kv_len: int) -> Tensor:
        """One decode step for slots 0..B-1 (static shapes: what the CUDA graph captures)."""
        b = tokens.shape[0]
        self.cache.bind(self._slot_index[:b], positions, kv_len, contiguous=True)
        mask = self._kv_range[:kv_len][None, None, None, :] <= positions[:, None, :, None]
        return self.model(tokens, positions=positions, mask=mask, cache=self.cache)[:, -1]

    def step_inputs(self, b: int) -> tuple[Tensor, Tensor]:
        """The static (b, 1) token and position buffers of slots 0..b-1 (views, fixed addresses)."""
        return self._step_in[:b, 0:1], self._step_in[:b, 1:2]

    def plan_decode(self) -> tuple[list[RequestState], int, int]:
        """Running requests (by slot), the batch bucket and the KV bucket of the next decode step,
        and their inputs staged in the static buffers (free slots in the bucket decode token 0 at
        position 0: harmless, a free slot's cache is overwritten by the prefill that claims it)."""
        reqs = sorted(self._running.values(), key=lambda r: r.slot)
        b = bucket_for(reqs[-1].slot + 1, self.batch_buckets)
        rows = [[0, 0] for _ in range(b)]
        for r in reqs:
            rows[r.slot] = [r.last, r.next_position]
        self._step_host[:b] = torch.tensor(rows, dtype=torch.long)
        kv_len = bucket_for(max(r.next_position for r in reqs) + 1, self.kv_buckets)
        self._step_in[:b].copy_(self._step_host[:b], non_blocking=True)
        return reqs, b, kv_len

    @torch.inference_mode()
    def _decode(self) -> list[StepOutput]:
        reqs, b, kv_len = self.plan_decode()
        logits = self._graph_step(b, kv_len) if self._graphs is not None else self._eager_step(b, kv_len)
        slots = [r.slot for r in reqs]
        if slots != list(range(len(slots))):  # holes in the bucket: gather the running rows
            logits = logits.index_select(0, torch.tensor(slots).to(self.device, non_blocking=True))
        elif len(slots) < b:
            logits = logits[: len(slots)]
        return self._emit(reqs, logits)

    def _graph_step(self, b: int, kv_len: int) -> Tensor:
        graphs = self._graphs
        assert graphs is not None
        try:
            with self._on_device():  # capture and replay on the model's GPU, not the current one
                return graphs.run(b, kv_len)
        except RuntimeError:  # dynamo/inductor errors are RuntimeErrors too
            if self._compiled and (b, kv_len) not in graphs.graphs:
                # Compiling failed while capturing: capture the uncompiled step instead.
                log.warning("torch.compile of the decode step failed; capturing it uncompiled", exc_info=True)
                self._decode_fn = graphs.fn = self.decode_logits
                self._compiled = False
                try:
                    with self._on_device():
                        return graphs.run(b, kv_len)
                except RuntimeError:
                    pass
            # Capture unsupported here: decoding without graphs is slower, not wrong.
            log.warning("CUDA graph capture failed; decoding without graphs from now on", exc_info=True)
            self._graphs = None
            return self._eager_step(b, kv_len)

    def _on_device(self) -> AbstractContextManager[object]:
        return torch.cuda.device(self.device) if self.device.type == "cuda" else contextlib.nullcontext()

    def _eager_step(self, b: int, kv_len: int) -> Tensor:
        tokens, positions = self.step_inputs(b)
        try:
            return self._decode_fn(tokens, positions, kv_len)
        except Exception:  # noqa: BLE001 - dynamo/inductor raise many types; re-raised unless compiling
            if not self._compiled:
                raise
            # torch.compile unavailable here (no compiler, unsupported op): slower, not wrong.
            log.warning("torch.compile of the decode step failed; decoding uncompiled", exc_info=True)
            self._decode_fn, self._compiled = self.decode_logits, False
            return self._decode_fn(tokens, positions, kv_len)

    @torch.inference_mode()
    def _admit(self) -> list[StepOutput]:
        free = [s for s in range(self.max_batch) if s not in self._running]
        new: list[RequestState] = []
        longest = 0
        while self._waiting and free:
            # Bound one prefill's padded size (activations, mask); the rest join at the next step.
            grown = max(longest, len(self._waiting[0].prompt))
            if new and grown * (len(new) + 1) > self.prefill_tokens:
                break
            req = self._waiting.popleft()
            req.slot = free.pop(0)
            new.append(req)
            longest = grown
        # Right-pad to the longest prompt: a pad writes garbage past its row's end, which the causal
        # mask hides until that row's own decode overwrites the position.
        tokens = torch.zeros(len(new), longest, dtype=torch.long)
        for i, r in enumerate(new):
            tokens[i, : len(r.prompt)] = torch.tensor(r.prompt)
        tokens = tokens.to(self.device)
        positions = torch.arange(longest, device=self.device).expand(len(new), longest)
        rows = torch.tensor([r.slot for r in new], device=self.device)
        kv_len = bucket_for(longest, self.kv_buckets)
        self.cache.bind(rows, positions, kv_len, contiguous=False)
        mask = self._kv_range[:kv_len][None, None, None, :] <= positions[:, None, :, None]
        h = self.model.hidden_states(tokens, positions=positions, mask=mask, cache=self.cache)
        scoring_only = self._score_prompts(new, h)
        keep = [i for i, r in enumerate(new) if r.max_new > 0]
        if len(keep) < len(new):
            new, h = [new[i] for i in keep], h[torch.tensor(keep, dtype=torch.long, device=self.device)]
        if not new:
            return scoring_only
        last = torch.tensor([len(r.prompt) - 1 for r in new], device=self.device)
        logits = self.model.lm_head(h[torch.arange(len(new), device=self.device), last])
        for r in new:
            self._running[r.slot] = r
        return scoring_only + self._emit(new, logits)

    def _score_prompts(self, new: list[RequestState], h: Tensor) -> list[StepOutput]:
        """Prompt logprobs (echo) from the prefill's hidden states: no second forward. Requests that
        only score (no token to generate) finish here and never hold their slot."""
        done = []
        for i, r in enumerate(new):
            if r.echo_top is None:
                continue
            n = len(r.prompt)
            scored: list[TokenLogprob | None] = [None]
            if n > 1:
                logits = self.model.lm_head(h[i, : n - 1])
                targets = torch.tensor(r.prompt[1:], device=self.device)
                scored += token_logprobs(logits, targets, r.echo_top)
            r.prompt_logprobs = scored
            if r.max_new == 0:
                r.finished = True
                done.append(StepOutput(r.id, [], "", True, "length", prompt_logprobs=scored))
        return done

    def _emit(self, reqs: list[RequestState], logits: Tensor) -> list[StepOutput]:
        """Sample one token per request, apply the stop rules, free finished slots. Logits may be
        bf16: greedy takes the argmax as is (exact), sampling works on an fp32 copy."""
        params = [r.params for r in reqs]
        raw = logits
        logits = adjust_logits(logits, params, [r.prompt for r in reqs], [r.ids for r in reqs])
        chosen = sample(logits, params, [r.generator for r in reqs])
        tokens = chosen.tolist()
        wanted = [r.params.logprobs for r in reqs if r.params.logprobs is not None]
        lps: list[TokenLogprob | None] = [None] * len(reqs)
        if wanted:
            scored = token_logprobs(raw, chosen, max(wanted))
            lps = [
                (lp, top[: r.params.logprobs]) if r.params.logprobs is not None else None
                for r, (lp, top) in zip(reqs, scored)
            ]
        outputs = []
        for r, t, lp in zip(reqs, tokens, lps):
            out = r.accept(t, logprob=lp)
            if r.prompt_logprobs is not None:
                out.prompt_logprobs, r.prompt_logprobs = r.prompt_logprobs, None
            outputs.append(out)
            if r.finished:
                del self._running[r.slot]
        return outputs

    def _all(self) -> list[RequestState]:
        return [*self._waiting, *self._running.values()]


class EngineLike(Protocol):
    """What drives a request through an engine: the plain `Engine` and `SpeculativeEngine` both."""

    max_len: int

    def add_request(
        self,
        prompt_ids: Sequence[int],
        sampling: Sampling = ...,
        *,
        stop_ids: Collection[int] | None = ...,
        request_id: Hashable | None = ...,
        echo_logprobs: int | None = ...,
    ) -> Hashable: ...

    def step(self) -> list[StepOutput]: ...

    def cancel(self, request_id: Hashable) -> bool: ...

    def has_work(self) -> bool: ...

    @property
    def num_active(self) -> int: ...


def collect(
    engine: EngineLike, ids: Sequence[Hashable], prompt_lens: Sequence[int]
) -> list[GenerationResult]:
    """Step `engine` until the requests `ids` finish; their results in that order."""
    done: dict[Hashable, GenerationResult] = {}
    results = {i: GenerationResult([], "", "stop", n) for i, n in zip(ids, prompt_lens)}
    while len(done) < len(ids):
        for out in engine.step():
            res = results.get(out.request_id)
            if res is None:
                continue
            res.ids += out.token_ids
            res.text += out.text
            if out.logprobs:
                res.logprobs = (res.logprobs or []) + out.logprobs
            if out.finished:
                res.finish_reason = out.finish_reason or "stop"
                done[out.request_id] = res
    return [done[i] for i in ids]


def stream_request(
    engine: EngineLike,
    prompt_ids: Sequence[int],
    sampling: Sampling,
    *,
    stop_ids: Collection[int] | None = None,
) -> Iterator[StepOutput]:
    """One request's outputs as the engine produces them (the engine must be idle otherwise: this
    is the single-user path of `generate` and `chat`). Closing the iterator early cancels it."""
    rid = engine.add_request(prompt_ids, sampling, stop_ids=stop_ids)  # refuses bad prompts now
    return _follow(engine, rid)


def _follow(engine: EngineLike, rid: Hashable) -> Iterator[StepOutput]:
    finished = False
    try:
        while not finished:
            for out in engine.step():
                if out.request_id == rid:
                    finished = out.finished
                    yield out
    finally:
        if not finished:
            engine.cancel(rid)


def build_engine(
    model: CausalLM,
    tok: TextTokenizer,
    *,
    max_batch: int = 8,
    max_len: int | None = None,
    draft: CausalLM | None = None,
    draft_k: int = 4,
) -> EngineLike:
    """The plain batched engine, or the (one request at a time) speculative one with a draft."""
    if draft is not None:
        return SpeculativeEngine(model, draft, tok, k=draft_k, max_len=max_len)
    return Engine(model, tok, max_batch=max_batch, max_len=max_len)
