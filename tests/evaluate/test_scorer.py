"""The scorer against plain full-sequence forwards, transformers, and itself at other batch sizes."""

from __future__ import annotations

import random

import pytest
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
        return sum(b.length for b in scorer.plan(reqs, 16, 256, share))

    assert tokens(True) < tokens(False)  # contexts are fed once per group, not once per request
    for a, b in zip(shared, alone):
        assert abs(a.logprob - b.logprob) < 1e-5
        assert a.is_greedy == b.is_greedy


def few_shot_requests(seed: int = 3) -> list[tuple[list[int], list[int]]]:
    """Two "subjects", each a long few-shot block behind a description both begin alike, then its
    own questions (some a prefix of another), with one-token letters and longer continuations."""
    rng = random.Random(seed)
    reqs = []
    for _ in range(2):
        block = [11, 12, 13] + [rng.randrange(5, 500) for _ in range(40)]
        questions = [[rng.randrange(5, 500) for _ in range(rng.randrange(1, 15))] for _ in range(6)]
        questions.append(questions[0] + [rng.randrange(5, 500) for _ in range(4)])
        for q in questions:
            for letter in (30, 31, 32, 33):
                reqs.append((block + q, [letter]))
            reqs.append((block + q, [rng.randrange(5, 500) for _ in range(rng.randrange(2, 6))]))
    rng.shuffle(reqs)
    return reqs


def test_shared_beginnings_are_computed_once_and_change_nothing():
    model = micro_model(4)
    reqs = few_shot_requests()
    ref = [direct(model, c, k) for c, k in reqs]
    alone = scorer.score(model, reqs, batch_size=16, share=False)
    by_batch = {bs: scorer.score(model, reqs, batch_size=bs) for bs in (1, 3, 64)}
    for bs, got in by_batch.items():
        for (lp, greedy), a, s in zip(ref, alone, got):
            assert abs(s.logprob - lp) < 1e-4, bs
            assert abs(s.logprob - a.logprob) < 1e-5, bs
            assert s.is_greedy == greedy == a.is_greedy
    for a, b in zip(by_batch[1], by_batch[64]):
        assert abs(a.logprob - b.logprob) < 1e-5
    # each subject's 43-token block is fed once, whatever the cut into batches
    batches = scorer.plan(reqs, 64, 256)
    assert [b.prefix for b in batches if b.record] == [43, 43]
    conts = sum(len(k) - 1 for _, k in reqs)
    fed_64 = sum(len(c) - 43 for c in {tuple(c) for c, _ in reqs}) + 2 * 43 + conts
    assert sum(b.length for b in batches) == fed_64
    fed_1 = sum(len(c) - 43 for c, _ in reqs) + 2 * 43 + conts  # one request per batch
    assert sum(b.length for b in scorer.plan(reqs, 1, 256)) == fed_1


def test_a_long_context_is_fed_once_for_all_its_continuations():
    ctx = list(range(5, 5 + scorer.SPLIT_TOKENS + 100))
    reqs = [(ctx, [7, 8]), (ctx, [9]), (ctx, [10, 11, 12]), (ctx, [13])]
    (batch,) = scorer.plan(reqs, 64, 2048)
    assert len(batch.pieces) == 1 and batch.length == len(ctx) + 1 + 0 + 2 + 0
    many = [(ctx[:10], [20 + i] * 200) for i in range(6)]  # long continuations still split the group
    assert len([p for b in scorer.plan(many, 64, 2048) for p in b.pieces]) > 1


def test_each_predicting_row_goes_through_the_head_once():
    """A context's last token predicts every continuation's first token: one vocabulary row for it."""
    model = micro_model(3)
    ctx = [5, 6, 7, 8]
    reqs = [(ctx, [9, 10, 11]), (ctx, [12]), (ctx, [13, 14]), (ctx, [15])]
    rows = []
    hook = model.lm_head.register_forward_hook(lambda _m, args, _o: rows.append(args[0].shape[0]))
    try:
        got = scorer.score(model, reqs, batch_size=64)
    finally:
        hook.remove()
    assert rows == [1 + 2 + 0 + 1 + 0]  # the context's last token, then each continuation's own rows
    for (c, k), s in zip(reqs, got):
        lp, greedy = direct(model, c, k)
        assert abs(s.logprob - lp) < 1e-4 and s.is_greedy == greedy


def test_a_bf16_model_scores_as_its_fp32_self():
    """A bf16 model (the dtype GPU evaluation runs in) through the same packed rows and additive mask."""
    reqs = random_requests(n_groups=4, seed=5) + few_shot_requests()
    fp32 = scorer.score(micro_model(6), reqs, batch_size=8)
    bf16 = scorer.score(micro_model(6).to(torch.bfloat16), reqs, batch_size=8)
    for a, b in zip(fp32, bf16):
        assert abs(a.logprob - b.logprob) < 0.05 * max(1.0, abs(a.logprob))


def test_a_cluster_batch_without_its_prefix_is_refused():
    model = micro_model(4)
    later = [b for b in scorer.plan(few_shot_requests(), 4, 256) if b.prefix and not b.record]
    with pytest.raises(ValueError, match="prefix"):
        scorer.score_batch(model, later[0])


def test_clusters_pick_the_saving_level_and_leave_each_context_a_token():
    a, b = (1, 2, 3, 4, 5, 6), (1, 2, 3, 4, 5, 7)
    c, d = (1, 2, 9, 9, 9, 9), (1, 2, 9, 9, 9, 8)
    # the two deep pairs save 5 + 5 tokens, more than (1, 2) shared by all four: 3 x 2
    assert scorer.clusters([a, b, c, d]) == {a: 5, b: 5, c: 5, d: 5}
    e = (1, 2, 3)
    got = scorer.clusters([e, e + (4,), e + (4, 5)])
    assert got == {e: 2, e + (4,): 2, e + (4, 5): 2}  # a context that is another's beginning keeps a token
    assert scorer.clusters([(5,), (5, 6)]) == {}  # nothing to share once each keeps a token
    assert scorer.clusters([]) == {}


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
