"""Log-likelihood scoring that is fast and does not depend on the batch.

Requests are grouped by context: one context and its continuations are packed into one row as a
small tree (the context once, then each continuation at the positions right after it, seeing only
the context and itself), so a HellaSwag item costs one context plus four endings instead of four
full sequences. Contexts that begin alike (the few-shot examples of a 5-shot task, a HellaSwag
activity label) go one step further: the shared beginning is computed once, in the first row of
its cluster, and its keys and values are kept and prepended to the cluster's later rows. Groups are
sorted by length and packed one after another in a single row under a block mask: no padding ever
enters a computation, and a request's value is the same whatever it was packed with (up to float
summation order). Logits are computed only where a continuation token is predicted, which spares
the full-vocabulary projection of every context token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

# Tokens per forward pass. The packed row attends through a dense (T, T) mask, so attention grows
# with T squared, mostly spent on pairs the mask drops: 256 tokens keep matrix products efficient and
# attention cheap on CPU (a HellaSwag subset on SmolLM2-135M, 1 thread: 8.7 requests/CPU-s with
# these defaults, 8.1 at 512, 7.5 at 1024). A context's group is split into several pieces (its
# context then computed once per piece) only when its continuations pass SPLIT_TOKENS, so a long
# item still shares its context.
MAX_TOKENS = 256
SPLIT_TOKENS = 512


@dataclass(frozen=True)
class Scored:
    logprob: float
    is_greedy: bool


@dataclass
class _Piece:
    """One context with some of its continuations (request indices), laid out as a tree. The first
    `shared` context tokens belong to its cluster's prefix, computed once for the whole cluster."""

    context: list[int]
    items: list[tuple[int, list[int]]]  # (request index, continuation ids)
    shared: int = 0

    @property
    def branch_tokens(self) -> int:
        """Tokens its continuations feed (each one's last token predicts nothing)."""
        return sum(len(c) - 1 for _, c in self.items)

    @property
    def length(self) -> int:
        return len(self.context) - self.shared + self.branch_tokens


@dataclass
class Batch:
    """Pieces scored in one forward pass. `prefix` > 0: they share their first `prefix` context
    tokens; `record`: this row computes that prefix (at its start) and keeps its keys and values
    for the next rows of the cluster, which read them from the cache instead."""

    pieces: list[_Piece]
    prefix: int = 0
    record: bool = False

    @property
    def length(self) -> int:
        return (self.prefix if self.record else 0) + sum(p.length for p in self.pieces)

    @property
    def n_requests(self) -> int:
        return sum(len(p.items) for p in self.pieces)


def _truncate(context: list[int], continuation: list[int], max_len: int) -> tuple[list[int], list[int]]:
    """Keep the continuation whole and the end of the context, as lm-eval's hf model does: the last
    token of the full sequence is never fed, so context + continuation may reach max_len + 1."""
    if not continuation:
        raise ValueError("a loglikelihood request needs a non-empty continuation")
    keep = max_len + 1 - len(continuation)
    if keep < 1:
        # Only the continuation's tail fits: its first tokens become context, as lm-eval does.
        full = (context + continuation)[-(max_len + 1) :]
        return full[:1], full[1:]
    return context[-keep:], continuation


def _common(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """Length of the common prefix, leaving each side at least one token of its own (the row that
    predicts a continuation's first token is its context's last token, which must be in the row)."""
    lo, hi = 0, min(len(a), len(b)) - 1
    while lo < hi:  # binary search on C-speed tuple slice comparisons
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


@dataclass
class _Interval:
    lcp: int
    lb: int
    rb: int = -1
    children: list[_Interval] = field(default_factory=list)
    best: int = 0
    take: bool = False


def clusters(contexts: Sequence[tuple[int, ...]], min_prefix: int = 1) -> dict[tuple[int, ...], int]:
    """Context -> length of the prefix it shares with its cluster (absent: computed alone).

    One level of sharing, chosen to save the most tokens: over the internal nodes of the contexts'
    trie (the LCP intervals of the sorted contexts), a node either is a cluster, saving
    (members - 1) x its depth, or leaves the choice to its children. On a 5-shot task that picks
    the few-shot block of each subject, not the few words every subject's description begins with.
    """
    keys = sorted(set(contexts))
    n = len(keys)
    lcp = [_common(keys[i - 1], keys[i]) for i in range(1, n)] + [0]  # lcp[i-1]: keys[i-1] vs keys[i]
    root = _Interval(0, 0)
    stack = [root]
    for i in range(1, n + 1):  # bottom-up traversal of the LCP intervals (Abouelhoda et al. 2004)
        h, lb, last = lcp[i - 1], i - 1, None
        while h < stack[-1].lcp:
            top = stack.pop()
            top.rb = i - 1
            own = (top.rb - top.lb) * top.lcp if top.lcp >= min_prefix else 0
            kids = sum(c.best for c in top.children)
            top.best, top.take = (own, True) if own > kids else (kids, False)
            lb = top.lb
            if h <= stack[-1].lcp:
                stack[-1].children.append(top)
            else:
                last = top
        if h > stack[-1].lcp:
            stack.append(_Interval(h, lb, children=[last] if last else []))
    out: dict[tuple[int, ...], int] = {}
    todo = list(root.children)
    while todo:
        node = todo.pop()
        if node.take:
            out.update((keys[j], node.lcp) for j in range(node.lb, node.rb + 1))
        else:
            todo.extend(node.children)
    return out


def _pack(pieces: list[_Piece], batch_size: int, budget: int, prefix: int = 0) -> list[Batch]:
    """Longest first, into batches of at most `batch_size` requests and `budget` tokens (a longer
    piece goes alone); with a prefix, the first batch also computes it."""
    pieces.sort(key=lambda p: (-p.length, p.items[0][0]))
    batches: list[Batch] = []
    batch = Batch([], prefix, record=prefix > 0)
    for p in pieces:
        if batch.pieces and (
            batch.n_requests + len(p.items) > batch_size or batch.length + p.length > budget
        ):
            batches.append(batch)
            batch = Batch([], prefix)
        batch.pieces.append(p)
    if batch.pieces:
        batches.append(batch)
    return batches


def plan(
    requests: Sequence[tuple[Sequence[int], Sequence[int]]],
    batch_size: int,
    max_len: int,
    share: bool = True,
    max_tokens: int = MAX_TOKENS,
) -> list[Batch]:
    """Group requests by context, cluster contexts by shared beginnings, split groups to fit, and
    pack pieces into batches.

    A batch holds at most `batch_size` requests and `max_tokens` tokens (a longer piece goes alone).
    Clusters are scored batch after batch, their first batch computing the shared prefix; order is
    longest first so memory peaks come early. Nothing here depends on the batch size but the cut
    into batches, so a request's value does not either."""
    split_at = max(SPLIT_TOKENS, max_tokens)
    groups: dict[tuple[int, ...], list[tuple[int, list[int]]]] = {}
    for i, (ctx, cont) in enumerate(requests):
        if not ctx:
            raise ValueError(f"request {i}: empty context; pass the prefix (BOS/EOT) token as context")
        c, k = _truncate(list(ctx), list(cont), max_len)
        key = tuple(c) if share else (*c, -1 - i)  # a unique key disables sharing
        groups.setdefault(key, []).append((i, k))
    shared = clusters(list(groups)) if share else {}
    by_cluster: dict[tuple[int, ...], list[_Piece]] = {}
    for key, items in groups.items():
        context = [t for t in key if t >= 0]
        n_shared = shared.get(key, 0)
        cluster = tuple(context[:n_shared])
        current = _Piece(context, [], n_shared)
        for item in items:
            # split on the continuations' tokens only: a second piece would feed the context again,
            # so a long context alone is never a reason to split (5-shot prompts are ~600 tokens)
            longer = current.branch_tokens + len(item[1]) > split_at
            if current.items and (len(current.items) >= batch_size or longer):
                by_cluster.setdefault(cluster, []).append(current)
                current = _Piece(context, [], n_shared)
            current.items.append(item)
        by_cluster.setdefault(cluster, []).append(current)
    units = [[b] for b in _pack(by_cluster.pop((), []), batch_size, max_tokens)]
    units += [_pack(pieces, batch_size, max_tokens, len(c)) for c, pieces in by_cluster.items()]
    units.sort(key=lambda u: (-max(b.length for b in u), u[0].pieces[0].items[0][0]))
    return [b for u in units for b in u]


def _layout(
    batch: Batch,
) -> tuple[list[int], list[int], list[int], list[int], list[tuple[int, list[int], list[int]]]]:
    """Flatten a batch into one row: tokens, positions, each token's tree node, each node's parent
    (-1: none in the row), and per request the rows that predict its tokens."""
    tokens: list[int] = []
    positions: list[int] = []
    owner: list[int] = []  # which tree node a token belongs to: the prefix, a context, a branch
    parent: list[int] = []  # per node: the node it also sees, with that node's own parent
    targets: list[tuple[int, list[int], list[int]]] = []
    top = -1
    if batch.record:
        top = 0
        parent.append(-1)
        tokens += batch.pieces[0].context[: batch.prefix]
        positions += range(batch.prefix)
        owner += [0] * batch.prefix
    for piece in batch.pieces:
        ctx_node = len(parent)
        parent.append(top)
        own = piece.context[piece.shared :]
        tokens += own
        positions += range(piece.shared, len(piece.context))
        owner += [ctx_node] * len(own)
        last_ctx = len(tokens) - 1
        for idx, cont in piece.items:
            branch = len(parent)
            parent.append(ctx_node)
            first = len(tokens)
            fed = cont[:-1]  # the last token predicts nothing we need
            tokens += fed
            positions += range(len(piece.context), len(piece.context) + len(fed))
            owner += [branch] * len(fed)
            rows = [last_ctx] + list(range(first, first + len(fed)))
            targets.append((idx, rows, cont))
    return tokens, positions, owner, parent, targets


def tree_mask(owner: Tensor, parent: Sequence[int], positions: Tensor) -> Tensor:
    """(T, T) bool: query i sees key j when j's node is i's node or one of its ancestors, causally.

    `owner`: each token's node; `parent`: each node's parent (-1 for none). Positions grow along
    every root-to-leaf path, so "causally" is a comparison of positions."""
    n = len(parent)
    rows, cols = [], []
    for node in range(n):
        up = node
        while up >= 0:  # trees here are at most 3 levels deep: prefix, context, continuation
            rows.append(node)
            cols.append(up)
            up = parent[up]
    sees = torch.zeros(n, n, dtype=torch.bool, device=owner.device)
    sees[torch.tensor(rows, device=owner.device), torch.tensor(cols, device=owner.device)] = True
    return sees[owner][:, owner] & (positions.unsqueeze(0) <= positions.unsqueeze(1))


class _PrefixKV:
    """The keys and values of a cluster's shared prefix: recorded from the row that computes them
    (at its start), then prepended to each later row's own (the model's `KVCache` protocol)."""

    def __init__(self, length: int) -> None:
        self.length = length
        self.recording = True
        self.kv: dict[int, tuple[Tensor, Tensor]] = {}

    def update(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        if self.recording:
            self.kv[layer] = (k[:, :, : self.length].clone(), v[:, :, : self.length].clone())
            return k, v
        pk, pv = self.kv[layer]
        return torch.cat([pk, k], dim=2), torch.cat([pv, v], dim=2)


@torch.inference_mode()
def score_batch(model: Any, batch: Batch, cache: _PrefixKV | None = None) -> dict[int, Scored]:
    """Score one batch; a batch of a cluster that does not record reads its prefix from `cache`."""
    if (
        batch.prefix
        and not batch.record
        and (cache is None or cache.recording or cache.length != batch.prefix)
    ):
        raise ValueError("a batch of a cluster needs the prefix its first batch recorded (score() keeps it)")
    tokens, positions, owner, parent, targets = _layout(batch)
    weight = next(model.parameters())
    device = weight.device
    tok = torch.tensor([tokens], device=device)
    pos = torch.tensor(positions, device=device)
    mask = tree_mask(torch.tensor(owner, device=device), parent, pos)
    if cache is not None and not cache.recording:
        # every token of the row descends from the cached prefix: all of it is visible
        mask = torch.cat([mask.new_ones(len(tokens), cache.length), mask], dim=1)
    # An additive mask, in the queries' dtype: SDPA would otherwise turn the boolean one into this in
    # every layer.
    bias = torch.zeros(mask.shape, dtype=weight.dtype, device=device).masked_fill_(~mask, float("-inf"))
    hidden = model.hidden_states(tok, pos.unsqueeze(0), bias.unsqueeze(0).unsqueeze(0), cache)[0]
    # A context's last token predicts the first token of each of its continuations: project each
    # distinct row onto the vocabulary once, then pick every request's targets from those rows.
    flat_rows = torch.tensor([r for _, rs, _ in targets for r in rs], device=device)
    rows, which = torch.unique(flat_rows, return_inverse=True)
    logprobs = torch.log_softmax(model.lm_head(hidden[rows]).float(), dim=-1)
    want = torch.tensor([t for _, _, cont in targets for t in cont], device=device)
    # each request's targets are consecutive: one segment sum gives its total and its misses
    lengths = torch.tensor([len(rs) for _, rs, _ in targets], device=device)
    owner_of = torch.repeat_interleave(torch.arange(len(targets), device=device), lengths)
    totals = torch.zeros(len(targets), device=device).index_add_(0, owner_of, logprobs[which, want])
    wrong = (logprobs.argmax(dim=-1)[which] != want).long()
    misses = torch.zeros(len(targets), dtype=torch.long, device=device).index_add_(0, owner_of, wrong)
    return {
        idx: Scored(total, missed == 0)
        for (idx, _, _), total, missed in zip(targets, totals.tolist(), misses.tolist())
    }


def score(
    model: Any,
    requests: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    batch_size: int = 64,
    max_len: int | None = None,
    share: bool = True,
    max_tokens: int = MAX_TOKENS,
    progress: Callable[[int], None] | None = None,
) -> list[Scored]:
    """(context ids, continuation ids) -> log P(continuation | context) and whether greedy decoding
    would produce it. `share=False` scores each request on its own copy of the context (the reference
    that prefix sharing is tested against)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    limit = int(max_len or model.cfg.max_seq_len)
    results: dict[int, Scored] = {}
    cache: _PrefixKV | None = None  # the current cluster's prefix; batches of a cluster come in a row
    for batch in plan(requests, batch_size, limit, share, max_tokens):
        if batch.record:
            cache = _PrefixKV(batch.prefix)
        got = score_batch(model, batch, cache if batch.prefix else None)
        if cache is not None:
            cache.recording = False
        results.update(got)
        if progress is not None:
            progress(len(got))
    return [results[i] for i in range(len(requests))]


def rolling_windows(ids: Sequence[int], max_len: int, prefix_id: int) -> list[tuple[list[int], list[int]]]:
    """Disjoint windows covering every token of a document once, each conditioned on as much of
    the preceding text as fits (lm-eval's rolling log-likelihood, context length 1 overlap)."""
    ids = list(ids)
    out: list[tuple[list[int], list[int]]] = []
    start = 0
    while start < len(ids):
        end = min(start + max_len, len(ids))
        pred = ids[start:end]
        ctx_full = [prefix_id, *ids[:start]]
        ctx = ctx_full[-(max_len + 1 - len(pred)) :]
        out.append((ctx, pred))
        start = end
    return out
