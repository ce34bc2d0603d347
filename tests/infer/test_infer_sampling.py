import pytest
import torch

from gaperon.infer.sampling import Sampling, filtered_probs, make_generator, sample


@pytest.mark.parametrize(
    "kwargs",
    [
        {"temperature": -0.1},
        {"temperature": float("nan")},
        {"top_k": -1},
        {"top_p": 0.0},
        {"top_p": 1.5},
        {"seed": 1.5},
        {"temperature": True},
    ],
)
def test_bad_params_are_rejected(kwargs):
    with pytest.raises(ValueError):
        Sampling(**kwargs)


def _logits(b=3, v=50, seed=0):
    return torch.randn(b, v, generator=torch.Generator().manual_seed(seed)) * 3


def test_greedy_is_argmax_and_ignores_randomness():
    logits = _logits()
    params = [Sampling()] * 3
    gens = [make_generator(i, "cpu") for i in range(3)]
    assert torch.equal(sample(logits, params, gens), logits.argmax(-1))


def test_top_k_one_and_tiny_top_p_are_greedy():
    logits = _logits()
    gens = [make_generator(i, "cpu") for i in range(3)]
    for p in (Sampling(temperature=1.0, top_k=1), Sampling(temperature=1.0, top_p=1e-6)):
        assert torch.equal(sample(logits, [p] * 3, gens), logits.argmax(-1))


def test_filtered_probs_top_k_and_top_p_per_row():
    logits = _logits(v=20)
    params = [
        Sampling(temperature=1.0, top_k=5),
        Sampling(temperature=1.0, top_p=0.5),
        Sampling(temperature=0.7),
    ]
    probs = filtered_probs(logits, params)
    assert torch.allclose(probs.sum(-1), torch.ones(3))
    assert int((probs[0] > 0).sum()) == 5
    assert set(probs[0].nonzero().flatten().tolist()) == set(logits[0].topk(5).indices.tolist())
    # top-p keeps the smallest prefix reaching 0.5 of the (unfiltered) mass
    full = torch.softmax(logits[1], -1).sort(descending=True).values
    n_keep = int((full.cumsum(0) - full < 0.5).sum())
    assert int((probs[1] > 0).sum()) == n_keep
    assert torch.allclose(probs[2], torch.softmax(logits[2] / 0.7, -1), atol=1e-6)


def test_seeded_sampling_is_reproducible_and_independent_of_batch_mates():
    logits = _logits(b=4, v=100)
    p = Sampling(temperature=1.0, top_p=0.9)
    alone = [int(sample(logits[2:3], [p], [make_generator(7, "cpu")])) for _ in range(2)]
    assert alone[0] == alone[1]
    # Same row, same seed, different batch mates (with different params and seeds): same token, many steps.
    g_alone, g_batch = make_generator(7, "cpu"), make_generator(7, "cpu")
    mates = [
        Sampling(temperature=0.5, seed=1),
        Sampling(),
        Sampling(temperature=2.0, top_k=3),
    ]
    mate_gens = [make_generator(i, "cpu") for i in (1, 2, 3)]
    for _ in range(20):
        a = int(sample(logits[2:3], [p], [g_alone])[0])
        b = sample(
            logits, [mates[0], mates[1], p, mates[2]], [mate_gens[0], mate_gens[1], g_batch, mate_gens[2]]
        )
        assert a == int(b[2])


def test_sampling_follows_the_distribution():
    logits = torch.tensor([[0.0, 1.0, 2.0, -30.0]])
    gen = make_generator(0, "cpu")
    p = Sampling(temperature=1.0)
    draws = torch.stack([sample(logits, [p], [gen]) for _ in range(4000)]).flatten()
    freq = torch.bincount(draws, minlength=4).float() / len(draws)
    assert torch.allclose(freq, torch.softmax(logits[0], -1), atol=0.03)
    assert freq[3] == 0


def test_repetition_penalty_equals_transformers():
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    from gaperon.infer.sampling import adjust_logits

    logits = _logits(b=2, v=50, seed=3) * 3
    prompts, outputs = [[1, 2, 3], [7]], [[3, 4, 4], [7, 9]]
    params = [Sampling(repetition_penalty=1.3), Sampling(repetition_penalty=0.7)]
    got = adjust_logits(logits, params, prompts, outputs)
    for i, p in enumerate(params):
        seen = torch.tensor([prompts[i] + outputs[i]])
        want = RepetitionPenaltyLogitsProcessor(p.repetition_penalty)(seen, logits[i : i + 1].clone())
        assert torch.allclose(got[i], want[0])
    assert not torch.equal(got, logits)


def test_presence_and_frequency_penalties_follow_the_openai_formula():
    from gaperon.infer.sampling import adjust_logits

    logits = _logits(b=1, v=20, seed=4)
    out = [5, 5, 5, 9]
    p = Sampling(presence_penalty=0.5, frequency_penalty=0.25, logit_bias=((2, -3.0),))
    got = adjust_logits(logits, [p], [[5, 6]], [out])[0]
    want = logits[0].clone()
    for token, count in ((5, 3), (9, 1)):
        want[token] -= count * 0.25 + 0.5  # mu - c * alpha_frequency - (c > 0) * alpha_presence
    want[2] -= 3.0
    assert torch.allclose(got, want)
    assert adjust_logits(logits, [Sampling()], [[1]], [[1]]) is logits  # no options: untouched


def test_sampling_values_are_usage_errors():
    from gaperon.errors import UsageError

    for bad in ({"temperature": -1}, {"top_p": 0}, {"top_k": -3}, {"frequency_penalty": 3}, {"logprobs": -1}):
        with pytest.raises(UsageError, match=next(iter(bad))):
            Sampling(**bad)


def test_generation_config_defaults():
    cfg = {"do_sample": True, "temperature": 0.6, "top_p": 0.9, "top_k": 50, "repetition_penalty": 1.1}
    s = Sampling.from_generation_config(cfg, max_new_tokens=7)
    assert (s.temperature, s.top_p, s.top_k, s.repetition_penalty, s.max_new_tokens) == (0.6, 0.9, 50, 1.1, 7)
    assert Sampling.from_generation_config({"do_sample": False, "temperature": 0.6}).greedy
