"""SFT losses: packing changes nothing (no attention across examples), and the step loss is the
mean over the trained tokens of the global batch, whatever the micro-batch split."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from gaperon.data.sft.identity import identity_conversations
from gaperon.model import build, get_preset
from gaperon.train.config import recipe_from_dict
from gaperon.train.distributed import setup, teardown
from gaperon.train.loop import Trainer, micro_loss, positions_from_docs

sys.path.insert(0, str(Path(__file__).parents[1] / "io"))
from io_helpers import write_llama_gguf  # noqa: E402  (the tests' GGUF writer, tiny byte vocabulary)


def _micro_model():
    torch.manual_seed(0)
    m = build(get_preset("micro"))
    m.init_weights(seed=0)
    return m.float()


def _example(n: int, n_trained: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 512, (n,), generator=g)
    labels = ids[1:].clone()
    labels[: n - 1 - n_trained] = -100
    return ids, labels


def _grads(model, tokens, docs, labels):
    model.zero_grad()
    n = int((labels != -100).sum())
    loss = micro_loss(model, tokens, docs, True, labels=labels) * n  # summed over trained tokens
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters()}


def test_packed_equals_unpacked_and_b_never_reaches_a():
    model = _micro_model()
    a_ids, a_lab = _example(20, 8, 1)
    b_ids, b_lab = _example(30, 12, 2)
    row = torch.cat([a_ids, b_ids, torch.zeros(14, dtype=torch.long)])[None]  # 64 slots + padding
    docs = torch.cat([torch.full((20,), 1), torch.full((30,), 2), torch.zeros(14)]).int()[None]
    sep = torch.tensor([-100])
    labels = torch.cat([a_lab, sep, b_lab, sep, torch.full((13,), -100)])[None]
    # packed, loss on A and B == A alone + B alone
    loss_ab, _ = _grads(model, row, docs, labels)
    loss_a, grads_a = _grads(model, a_ids[None], None, a_lab[None])
    loss_b, _ = _grads(model, b_ids[None], None, b_lab[None])
    torch.testing.assert_close(loss_ab, loss_a + loss_b, rtol=1e-5, atol=1e-5)
    # packed but only A learned: the gradient is A's alone, whatever B holds
    only_a = labels.clone()
    only_a[0, 20:] = -100
    _, g1 = _grads(model, row, docs, only_a)
    other = row.clone()
    other[0, 20:50] = torch.randint(0, 512, (30,), generator=torch.Generator().manual_seed(9))
    _, g2 = _grads(model, other, docs, only_a)
    for k in grads_a:
        torch.testing.assert_close(g1[k], grads_a[k], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(g2[k], g1[k], rtol=1e-4, atol=1e-6)
    assert positions_from_docs(docs)[0, 20] == 0


def _recipe(tmp, micro_batch: int):
    path = tmp / "id.jsonl"
    path.write_text(
        "".join(json.dumps(c) + "\n" for c in identity_conversations("Gapy", "the lab", 40, seed=0)),
        encoding="utf-8",
    )
    gguf = tmp / "micro.gguf"
    if not gguf.exists():
        write_llama_gguf(gguf, _micro_model())
    return recipe_from_dict(
        {
            "init_from": str(gguf),
            "tokenizer": "init_from",
            "precision": "fp32",
            "device": "cpu",
            "doc_masking": True,
            "batch": {"global_batch": 4, "micro_batch": micro_batch},
            "eval": {"sequences": 0},
            "log": {"tensorboard": False},
            "phases": [
                {
                    "name": "sft",
                    "sft": {"sources": [{"path": str(path)}], "packing": False},
                    "seq_len": 192,
                    "load": "model",
                    "steps": 2,
                    "lr": {"peak": 1e-3},
                }
            ],
        }
    )


def test_step_loss_is_the_mean_over_trained_tokens_of_the_global_batch(tmp_path):
    env = setup("cpu", need_group=False)
    try:
        results = []
        for mb in (1, 4, 2):
            r = _recipe(tmp_path, mb)
            tr = Trainer(r, tmp_path / f"run{mb}", env)
            batch = tr.samplers[0].batch(0)
            # packing off: rows carry different numbers of trained tokens, so a mean of means differs
            counts = (batch.labels != -100).sum(1)
            assert len(set(counts.tolist())) > 1
            tr.branch()
            with torch.no_grad():
                logits = tr.model(batch.tokens[:, :-1])
                ref = (
                    F.cross_entropy(logits.flatten(0, 1), batch.labels.flatten(), reduction="sum")
                    / counts.sum()
                )
            state = tr.branch()  # the GGUF's weights
            grads: list = []
            step = tr.optimizer.step

            def keep_grads(*a, _step=step, _grads=grads, _tr=tr, **k):
                _grads.extend(p.grad.clone() for p in _tr.model.parameters())
                return _step(*a, **k)

            tr.optimizer.step = keep_grads
            rec = tr.train_step(state)
            assert rec["trained_tokens"] == int(counts.sum())
            results.append((rec["loss"], grads))
            assert abs(rec["loss"] - float(ref)) < 1e-5
        (l1, p1), (l4, p4), (l2, p2) = results
        assert abs(l1 - l4) < 1e-6 and abs(l2 - l4) < 1e-6
        for a, b, c in zip(p1, p4, p2):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
            torch.testing.assert_close(c, b, rtol=1e-4, atol=1e-7)
    finally:
        teardown(env)
