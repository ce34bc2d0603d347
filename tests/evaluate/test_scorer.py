"""The scorer against plain full-sequence forwards, transformers, and itself at other batch sizes."""

from __future__ import annotations

import torch
from eval_helpers import micro_model, random_requests

from gaperon.evaluate import scorer


def direct(model, ctx, cont):
    """log P(cont | ctx) from one unmasked causal forward of ctx + cont (the textbook way)."""
    ids = torch.tensor([(ctx + cont)[:-1]])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids)[0].float(), -1)
    rows = logp[len(ctx) - 1 :]
    want = torch.tensor(cont)
    return float(rows.gather(1, want[:, None]).sum()), bool((rows.argmax(-1) == want).all())


def test_matches_unpacked_forward_and_is_batch_invariant():
    model = micro_model()
    reqs = random_requests()
    ref = [direct(model, c, k) for c, k in reqs]
    by_batch = {bs: scorer.score(model, reqs, batch_size=bs) for bs in (1, 3, 64)}
    for bs, got in by_batch.items():
        for (lp, greedy), s in zip(ref, got):
            assert abs(s.logprob - lp) < 1e-4, bs
            assert s.is_greedy == greedy
    for a, b in zip(by_batch[1], by_batch[64]):
        assert abs(a.logprob - b.logprob) < 1e-5
        assert a.is_greedy == b.is_greedy


def test_prefix_sharing_equals_unshared_scoring():
    model = micro_model(1)
    reqs = random_requests(seed=1)
    shared = scorer.score(model, reqs, batch_size=16)
    alone = scorer.score(model, reqs, batch_size=16, share=False)

    def tokens(share):
        return sum(p.length for batch in scorer.plan(reqs, 16, 256, share) for p in batch)

    assert tokens(True) < tokens(False)  # contexts are fed once per group, not once per request
    for a, b in zip(shared, alone):
        assert abs(a.logprob - b.logprob) < 1e-5
        assert a.is_greedy == b.is_greedy


def test_is_greedy_exact():
    model = micro_model(2)
    ctx = [7, 8, 9, 10]
    ids = torch.tensor([ctx])
    greedy = []
    with torch.no_grad():
        for _ in range(5):
            nxt = int(model(ids)[0, -1].argmax())
            greedy.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], 1)
    other = greedy[:-1] + [(greedy[-1] + 1) % 512]
    got = scorer.score(model, [(ctx, greedy), (ctx, other)])
    assert got[0].is_greedy and not got[1].is_greedy
    assert got[0].logprob > got[1].logprob


def test_truncation_keeps_continuation_and_context_tail():
    model = micro_model()
    ctx, cont = list(range(5, 305)), [11, 12, 13]  # 303 tokens > max_seq_len 256
    got = scorer.score(model, [(ctx, cont)])[0]
    keep = ctx[-(257 - len(cont)) :]
    assert abs(got.logprob - direct(model, keep, cont)[0]) < 1e-4


def test_agrees_with_transformers(tmp_path):
    from transformers import LlamaForCausalLM

    from gaperon.io.hf import save_hf

    model = micro_model(3)
    save_hf(model, None, tmp_path)
    hf = LlamaForCausalLM.from_pretrained(tmp_path, torch_dtype=torch.float32).eval()
    reqs = random_requests(n_groups=4, seed=3)
    got = scorer.score(model, reqs)
    for (ctx, cont), s in zip(reqs, got):
        with torch.no_grad():
            logits = hf(torch.tensor([ctx + cont])).logits[0, :-1]
        rows = torch.log_softmax(logits.float(), -1)[len(ctx) - 1 :]
        want = torch.tensor(cont)
        assert abs(float(rows.gather(1, want[:, None]).sum()) - s.logprob) < 1e-4
        assert bool((rows.argmax(-1) == want).all()) == s.is_greedy


def test_rolling_windows_cover_each_token_once():
    ids = list(range(10, 30))
    windows = scorer.rolling_windows(ids, max_len=8, prefix_id=1)
    assert [t for _, pred in windows for t in pred] == ids
    for ctx, pred in windows:
        assert len(ctx) + len(pred) - 1 <= 8
    assert windows[0][0] == [1]
