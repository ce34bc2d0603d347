import pytest
import torch
from infer_helpers import micro_model

from gaperon.infer.generate import generate
from gaperon.infer.sampling import Sampling, make_generator
from gaperon.infer.speculative import SpeculativeDecoder, SpeculativeEngine

PROMPTS = ["Once upon a time", "x", "Quelle heure est-il ?"]


@pytest.fixture(scope="module")
def small_draft():
    return micro_model(1, dim=32, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=64)


@pytest.mark.parametrize("k", [1, 4])
def test_greedy_speculative_equals_target_alone(micro, small_draft, tok, k):
    for text in PROMPTS:
        prompt = tok.encode(text)
        plain = generate(micro, tok, prompt, Sampling(max_new_tokens=30), stop_ids=())
        spec = generate(
            micro, tok, prompt, Sampling(max_new_tokens=30), stop_ids=(), draft=small_draft, draft_k=k
        )
        assert spec.ids == plain.ids
        assert spec.acceptance_rate is not None and 0.0 <= spec.acceptance_rate <= 1.0


def test_model_as_its_own_draft_accepts_everything(micro, tok):
    prompt = tok.encode("self draft")
    plain = generate(micro, tok, prompt, Sampling(max_new_tokens=30), stop_ids=())
    spec = generate(micro, tok, prompt, Sampling(max_new_tokens=30), stop_ids=(), draft=micro, draft_k=4)
    assert spec.ids == plain.ids
    assert spec.acceptance_rate == 1.0


def test_draft_that_agrees_with_the_target_is_accepted_and_ends_at_context(tok):
    target = micro_model(0, max_seq_len=40)
    prompt = tok.encode("edge of the context")
    plain = generate(target, tok, prompt, Sampling(max_new_tokens=100), stop_ids=())
    spec = generate(target, tok, prompt, Sampling(max_new_tokens=100), stop_ids=(), draft=target, draft_k=4)
    assert spec.ids == plain.ids and len(spec.ids) == 40 - len(prompt)


def test_vocabulary_mismatch_is_a_clear_error(micro, tok):
    other = micro_model(2, vocab_size=300)
    with pytest.raises(ValueError, match="vocabulary"):
        generate(micro, tok, [5, 6], draft=other)


def test_rejection_sampling_preserves_the_target_distribution():
    """The first token out of one verify round is distributed as the target's p, whatever q."""
    torch.manual_seed(0)
    p_logits = torch.tensor([[1.0, 0.2, -1.0, 0.5, 0.0]] * 3)
    q = torch.softmax(torch.tensor([0.0, 2.0, 0.5, -1.0, 0.3]), -1)
    params = Sampling(temperature=1.0)
    p = torch.softmax(p_logits, -1)
    gen = make_generator(0, "cpu")
    counts = torch.zeros(5)
    n = 6000
    for _ in range(n):
        x = int(torch.multinomial(q, 1, generator=gen))
        out = SpeculativeDecoder._accept([x, x], [q, q], p, params, gen)
        counts[out[0]] += 1
    assert torch.allclose(counts / n, p[0], atol=0.025)


def test_sampled_speculative_is_seeded(micro, small_draft, tok):
    s = Sampling(max_new_tokens=20, temperature=1.0, seed=4)
    a = generate(micro, tok, tok.encode("sample"), s, stop_ids=(), draft=small_draft)
    assert a.ids == generate(micro, tok, tok.encode("sample"), s, stop_ids=(), draft=small_draft).ids
    assert 0.0 < a.acceptance_rate <= 1.0


def test_speculative_engine_equals_plain_greedy(micro, small_draft, tok):
    engine = SpeculativeEngine(micro, small_draft, tok, k=3)
    prompts = [tok.encode(t) for t in PROMPTS]
    ids = [engine.add_request(p, Sampling(max_new_tokens=12), stop_ids=()) for p in prompts]
    cancelled = engine.add_request(tok.encode("never mind"), Sampling(max_new_tokens=12))
    assert engine.cancel(cancelled)
    got = {i: [] for i in ids}
    while engine.has_work():
        for o in engine.step():
            got[o.request_id] += o.token_ids
    for i, p in zip(ids, prompts):
        assert got[i] == generate(micro, tok, p, Sampling(max_new_tokens=12), stop_ids=()).ids
    assert engine.num_active == 0
