"""Model-level facts: preset sizes, the gain-scale trick, KV-cache decoding, document masking, config
checks."""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F

from gaperon.model.llama import Llama, ModelConfig, causal_doc_mask
from gaperon.model.presets import build, get_preset


def random_model(seed: int = 0, **overrides) -> Llama:
    torch.manual_seed(seed)
    model = build(get_preset("micro", **overrides))
    scale = model.cfg.norm_gain_scale
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_((0.5 + torch.rand_like(p)) / scale)
    return model.eval()


class ListCache:
    """The smallest KV cache: append each step's keys/values per layer, return everything so far."""

    def __init__(self) -> None:
        self.k: dict[int, torch.Tensor] = {}
        self.v: dict[int, torch.Tensor] = {}

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if layer in self.k:
            k = torch.cat([self.k[layer], k], dim=2)
            v = torch.cat([self.v[layer], v], dim=2)
        self.k[layer], self.v[layer] = k, v
        return k, v


@pytest.mark.parametrize(
    "name, exact, billions", [("gaperon-8b", 8_030_261_248, 8.03), ("gaperon-1b", 1_498_482_688, 1.498)]
)
def test_preset_sizes_on_meta_are_instant(name, exact, billions):
    start = time.perf_counter()
    model = build(get_preset(name), device="meta")
    n = model.num_params()
    assert time.perf_counter() - start < 5.0
    assert n == exact and round(n / 1e9, len(str(billions).split(".")[1])) == billions
    assert model.embed_tokens.weight.device.type == "meta"
    assert not model.cfg.tie_embeddings and model.lm_head.weight is not model.embed_tokens.weight


def test_gain_scale_20_computes_the_same_function():
    plain = random_model(norm_gain_scale=1.0)
    scaled = build(get_preset("micro", norm_gain_scale=20.0)).eval()
    state = {k: (v / 20.0 if k.endswith("norm.weight") else v) for k, v in plain.state_dict().items()}
    scaled.load_state_dict(state)
    for a, b in zip(plain.modules(), scaled.modules()):
        if hasattr(a, "gain"):
            assert torch.allclose(a.gain(), b.gain())  # the same true gains
    x = torch.randint(0, 512, (2, 16))
    with torch.no_grad():
        assert torch.allclose(plain(x), scaled(x), atol=1e-5)
    fresh = build(get_preset("micro", norm_gain_scale=20.0))
    assert torch.allclose(fresh.norm.weight, torch.full_like(fresh.norm.weight, 1 / 20))  # init = gain 1.0
    assert torch.allclose(fresh.norm.gain(), torch.ones_like(fresh.norm.weight))


def test_kv_cache_incremental_equals_full_forward():
    model = random_model(seed=1)
    x = torch.randint(0, 512, (2, 12))
    with torch.no_grad():
        full = model(x)
        cache = ListCache()
        steps = [model(x[:, :5], cache=cache)]  # prefill
        steps += [model(x[:, t : t + 1], positions=torch.tensor([t]), cache=cache) for t in range(5, 9)]
        steps.append(model(x[:, 9:], positions=torch.arange(9, 12), cache=cache))  # a chunk after the cache
    incremental = torch.cat(steps, dim=1)
    assert torch.allclose(incremental, full, atol=1e-5)
    assert cache.k[0].shape[2] == 12


def test_causal_doc_mask_blocks_cross_document_attention():
    doc_ids = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2]])
    mask = causal_doc_mask(doc_ids)
    assert mask.shape == (1, 1, 8, 8) and mask.dtype == torch.bool
    assert mask[0, 0, 4, 3] and not mask[0, 0, 3, 4]  # causal inside a document
    assert not mask[0, 0, 3, 2] and not mask[0, 0, 5, 4]  # never across documents
    # Functionally: a document packed after another computes what it computes alone.
    model = random_model(seed=2)
    a, b = torch.randint(0, 512, (1, 6)), torch.randint(0, 512, (1, 5))
    packed = torch.cat([a, b], dim=1)
    docs = torch.tensor([[0] * 6 + [1] * 5])
    positions = torch.tensor([list(range(6)) + list(range(5))])
    with torch.no_grad():
        out = model(packed, positions=positions, mask=causal_doc_mask(docs))
        assert torch.allclose(out[:, 6:], model(b), atol=1e-5)
        assert torch.allclose(out[:, :6], model(a), atol=1e-5)
        leaky = model(packed, positions=positions)  # plain causal: b sees a
        assert not torch.allclose(leaky[:, 6:], model(b), atol=1e-3)


def test_loss_equals_cross_entropy_of_logits():
    model = random_model(seed=3)
    x = torch.randint(0, 512, (2, 10))
    labels = torch.randint(0, 512, (2, 10))
    labels[0, :3] = -100
    with torch.no_grad():
        want = F.cross_entropy(model(x).flatten(0, 1), labels.flatten(), ignore_index=-100)
        assert torch.allclose(model(x, labels=labels), want, atol=1e-5)


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(dim=100, n_heads=3), "divisible by n_heads"),
        (dict(n_heads=4, n_kv_heads=3), "divisible by n_kv_heads"),
        (dict(dim=12, n_heads=4, n_kv_heads=2), "must be even for RoPE"),
        (dict(n_layers=0), "n_layers must be a positive integer"),
        (dict(vocab_size=-5), "vocab_size must be a positive integer"),
        (dict(ffn_dim=1.5), "ffn_dim must be a positive integer"),
        (dict(norm_gain_scale=0.0), "norm_gain_scale must be > 0"),
        (dict(rope_theta=-1.0), "rope_theta must be > 0"),
    ],
)
def test_bad_config_values_raise(bad, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**{**get_preset("micro").to_dict(), **bad})


def test_unknown_preset_names_the_known_ones():
    from gaperon.errors import ConfigError

    with pytest.raises(ConfigError, match="gaperon-8b") as e:
        get_preset("gaperon-70b")
    assert isinstance(e.value, KeyError)  # callers that look names up with `except KeyError` still work
    assert str(e.value).startswith("unknown model preset 'gaperon-70b'")  # not quoted as KeyError does
