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
