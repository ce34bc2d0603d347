"""How the GPU path composes AC, compile and FSDP2, checked on CPU (gloo, one process)."""

from __future__ import annotations

import pytest
import torch
from train_helpers import losses, recipe

from gaperon.train.metrics import peak_for_name


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    from gaperon.train import train

    tmp = tmp_path_factory.mktemp("ref")
    path = recipe(tmp)
    train(path, tmp / "run")
    return path, losses(tmp / "run")


def _match(got, ref):
    assert [s for s, _ in got] == [s for s, _ in ref]
    for (_, a), (_, b) in zip(got, ref):
        assert a == pytest.approx(b, rel=1e-4)


@pytest.mark.slow
def test_compiled_checkpointed_sharded_blocks_train_the_same(reference, tmp_path):
    """fullgraph per-block compile inside checkpoint wrappers inside FSDP2: no graph break, same losses."""
    from gaperon.train import train

    path, ref = reference
    overrides = ["parallel.fsdp=full", "parallel.compile=true", "parallel.activation_checkpointing=true"]
    train(path, tmp_path / "run", overrides)
    _match(losses(tmp_path / "run"), ref)
    # The wrappers' name prefixes (_orig_mod., _checkpoint_wrapped_module.) never reach the checkpoint.
    from gaperon.io.dcp import load_run_model

    model, _ = load_run_model(tmp_path / "run")
    assert model.layers["1"].mlp.down_proj.weight.shape == (64, 192)


def test_hybrid_accumulation_defers_the_replica_all_reduce(reference, tmp_path, monkeypatch):
    """Hybrid sharding all-reduces across replicas only on the last micro-batch of a step, and
    the gradients (hence losses) are those of the plain run; reshard_after_forward=false too."""
    from gaperon.train import loop, train

    calls: list[bool] = []
    real = loop.Trainer._set_grad_sync

    def spy(self, last):
        calls.append(last)
        real(self, last)

    monkeypatch.setattr(loop.Trainer, "_set_grad_sync", spy)
    path, ref = reference
    overrides = ["parallel.fsdp=hybrid", "parallel.reshard_after_forward=false", "batch.micro_batch=1"]
    train(path, tmp_path / "run", overrides)
    _match(losses(tmp_path / "run"), ref)
    assert calls[:8] == [False] * 7 + [True]  # 8 micro-batches per step


def test_compile_block_is_static_and_fullgraph(monkeypatch):
    from gaperon.train import parallelize as par

    seen = {}

    def fake_compile(module, **kw):
        seen.update(kw)
        return module

    monkeypatch.setattr(torch, "compile", fake_compile)
    block = torch.nn.Linear(2, 2)
    assert par.compile_block(block) is block
    assert seen == {"fullgraph": True, "dynamic": False}


@pytest.mark.parametrize(
    "name,peak",
    [
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H100 NVL", 835e12),
        ("NVIDIA H200", 989e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("Tesla T4", None),
    ],
)
def test_peak_flops_by_device_name(name, peak):
    assert peak_for_name(name) == peak


def test_mfu_is_per_device(tmp_path):
    """MFU divides the global tokens/s by the world size; both rates are logged."""
    from gaperon.train import train
    from gaperon.train.metrics import read_metrics

    path = recipe(tmp_path, log={"tensorboard": False, "peak_flops": 1e9})
    train(path, tmp_path / "run")
    rec = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "loss" in r][-1]
    from gaperon.model.presets import get_preset
    from gaperon.train.metrics import flops_per_token

    fpt = flops_per_token(get_preset("micro"), 32)
    assert rec["tokens_per_s_per_gpu"] == pytest.approx(rec["tokens_per_s"])
    assert rec["mfu"] == pytest.approx(rec["tokens_per_s"] * fpt / 1e9)


def test_flex_document_mask_matches_the_dense_one():
    """The BlockMask used on CUDA masks exactly as the dense mask used on CPU (forward only:
    flex_attention has no CPU backward), and only CUDA + compile selects it."""
    from gaperon.model.presets import build, get_preset
    from gaperon.train.loop import micro_loss, use_flex_attention

    torch.manual_seed(0)
    model = build(get_preset("micro"))
    tokens = torch.randint(0, 512, (2, 41))
    docs = torch.zeros(2, 41, dtype=torch.long)
    docs[0, 7:] = 1
    docs[1, 20:] = 1
    docs[1, 33:] = 2
    with torch.no_grad():
        dense = micro_loss(model, tokens, docs, True, flex=False)
        flex = micro_loss(model, tokens, docs, True, flex=True)
        plain = micro_loss(model, tokens, docs, False)
    assert flex.item() == pytest.approx(dense.item(), rel=1e-5)
    assert abs(plain.item() - dense.item()) > 1e-4  # the mask matters on this batch
    assert use_flex_attention(torch.device("cuda"), compiled=True)
    assert not use_flex_attention(torch.device("cuda"), compiled=False)
    assert not use_flex_attention(torch.device("cpu"), compiled=True)
