"""MixtureSampler: batches are a pure function of (seed, phase, step), rank-independent, well mixed."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from data_helpers import ByteTokenizer, make_docs, write_jsonl

from gaperon.data.mixture import load_phase
from gaperon.data.pack import TokenizeOptions, tokenize
from gaperon.data.readers import DataError
from gaperon.data.sampler import Batch, MixtureSampler, _Schedule, feistel_permute
from gaperon.data.shards import load_manifest

SEQ = 32


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Three byte-tokenized sources of very different sizes."""
    root = tmp_path_factory.mktemp("tokens")
    out = {}
    for name, n, lang in (("fr", 120, "fr"), ("en", 60, "en"), ("tiny", 3, "code")):
        src = write_jsonl(root / f"{name}.jsonl", make_docs(n, lang, seed=len(name)))
        tokenize(
            [src],
            root / name,
            TokenizeOptions(tokenizer=ByteTokenizer(), shard_tokens=5000, val_fraction=0.05),
            progress=False,
        )
        out[name] = root / name
    return out


def _phase(folders, weights=None, tokens=200_000, seed=3, name="p", seq=SEQ):
    weights = weights or {"fr": 5, "en": 3, "tiny": 2}
    return load_phase(
        {
            "name": name,
            "seq_len": seq,
            "tokens": tokens,
            "seed": seed,
            "sources": [{"name": n, "path": str(folders[n]), "weight": w} for n, w in weights.items()],
        }
    )


def _train_stream(folder, split="train"):
    m = load_manifest(folder)
    return np.concatenate([np.fromfile(folder / s["bin"], dtype="<u4") for s in m["splits"][split]["shards"]])


def test_batch_rows_are_aligned_windows_with_document_ids(folders):
    s = MixtureSampler(_phase(folders), global_batch=8)
    b = s.batch(5)
    assert isinstance(b, Batch) and b.tokens.dtype == torch.int64 and b.doc_ids.dtype == torch.int32
    assert b.tokens.shape == b.doc_ids.shape == (8, SEQ + 1) and len(b.source_ids) == 8
    assert torch.equal(b.inputs, b.tokens[:, :-1]) and torch.equal(b.targets, b.tokens[:, 1:])
    streams = {i: _train_stream(folders[n]) for i, n in enumerate(s.names)}
    for row, ids, src in zip(b.tokens.numpy(), b.doc_ids.numpy(), b.source_ids):
        st = streams[src]
        hits = [a for a in range(0, len(st) - SEQ, SEQ) if np.array_equal(st[a : a + SEQ + 1], row)]
        assert hits, "each row is a seq_len-aligned window of its source's train tokens"
        # a new document starts right after each EOS (id 256)
        expected = np.concatenate([[0], np.cumsum(row[:-1] == ByteTokenizer.eos_id)])
        assert np.array_equal(ids, expected)


def test_same_step_same_batch_after_restart_and_in_any_call_order(folders):
    a = MixtureSampler(_phase(folders), global_batch=8)
    seq = [a.batch(k) for k in range(12)]
    state = a.state_dict()
    assert state["step"] == 12 and state["phase"] == "p" and state["seed"] == 3
    b = MixtureSampler(_phase(folders), global_batch=8)  # "killed at step 7": a new object
    b.load_state_dict(state)
    for k in (7, 11, 8, 9, 10):
        assert torch.equal(b.batch(k).tokens, seq[k].tokens)
        assert torch.equal(b.batch(k).doc_ids, seq[k].doc_ids)
    other_seed = MixtureSampler(_phase(folders, seed=4), global_batch=8)
    assert not torch.equal(other_seed.batch(3).tokens, seq[3].tokens)


@pytest.mark.parametrize("world", [2, 4, 8])
def test_ranks_split_the_same_global_batch(folders, world):
    s = MixtureSampler(_phase(folders), global_batch=8)
    for step in (0, 3, 17):
        whole = s.batch(step)
        parts = [s.batch(step, rank=r, world_size=world) for r in range(world)]
        assert torch.equal(torch.cat([p.tokens for p in parts]), whole.tokens)
        assert torch.equal(torch.cat([p.doc_ids for p in parts]), whole.doc_ids)
        assert sum((p.source_ids for p in parts), []) == whole.source_ids
    with pytest.raises(ValueError, match="divisible"):
        s.batch(0, rank=0, world_size=3)
    with pytest.raises(ValueError, match="rank"):
        s.batch(0, rank=2, world_size=2)


def test_realised_proportions_track_the_weights_at_every_prefix():
    weights = [0.406, 0.357, 0.089, 0.137, 0.0, 0.011]
    sch = _Schedule(weights, seed=1, phase="naive")
    slots = sch.slots(0, 20_000)
    src = np.array([i for i, _ in slots])
    for t in (64, 1000, 4096, 20_000):
        counts = np.bincount(src[:t], minlength=len(weights))
        assert np.all(np.abs(counts - np.array(weights) * t) <= 1.0 + 1e-9), (t, counts)
    # per source, sequence numbers k come in order 0, 1, 2, ... (each window used once per epoch)
    for i in range(len(weights)):
        ks = [k for j, k in slots if j == i]
        assert ks == list(range(len(ks)))
    # counts at any slot have a closed form that agrees with the enumeration
    for t in (0, 1, 777, 19_999):
        assert sch.counts(t) == np.bincount(src[:t], minlength=len(weights)).tolist()
    big = sch.counts(10**13)  # weights are held in 32-bit fixed point: relative error <= 2^-32
    assert sum(big) == 10**13 and all(abs(c - w * 10**13) <= 1 + 10**13 / 2**32 for c, w in zip(big, weights))


def test_steps_of_the_sampler_mix_sources_by_weight(folders):
    s = MixtureSampler(_phase(folders, {"fr": 6, "en": 2}, tokens=10**6), global_batch=16)
    ids = sum((s.batch(k).source_ids for k in range(40)), [])
    frac = ids.count(0) / len(ids)
    assert abs(frac - 0.75) <= 1 / len(ids)
    # interleaved inside a step, not grouped by source
    first = s.batch(0).source_ids
    assert first != sorted(first)


def test_exhausted_source_is_repeated_with_a_warning_and_a_new_order(folders, caplog):
    with caplog.at_level(logging.WARNING, logger="gaperon.data.sampler"):
        s = MixtureSampler(_phase(folders), global_batch=8)
    assert "repeated" in caplog.text and "tiny" in caplog.text and "epochs" in caplog.text
    tiny = s.names.index("tiny")
    n = s.windows[tiny]
    starts, step = [], 0
    while len(starts) < 2 * n:
        src, at = s.windows_at(step)
        starts += at[src == tiny].tolist()
        step += 1
    assert sorted(starts[:n]) == [w * SEQ for w in range(n)]  # one epoch sees every window once
    assert sorted(starts[n : 2 * n]) == sorted(starts[:n]) and starts[n : 2 * n] != starts[:n]  # reshuffled
    ep = s.epochs(step)
    assert ep["tiny"] >= 2 and ep["fr"] < ep["tiny"]
    assert s.epochs(0) == {"fr": 0.0, "en": 0.0, "tiny": 0.0}
    assert s.total_steps == 200_000 // (8 * SEQ)


def test_feistel_is_a_bijection():
    for n in (1, 2, 3, 10, 257, 1000, 4099):
        p = feistel_permute(np.arange(n), n, [1, 2, 3, 4, 5, 6])
        assert sorted(p.tolist()) == list(range(n))
    a = feistel_permute(np.arange(1000), 1000, [1, 2, 3, 4, 5, 6])
    b = feistel_permute(np.arange(1000), 1000, [1, 2, 3, 4, 5, 7])
    assert not np.array_equal(a, b) and not np.array_equal(a, np.arange(1000))


def test_tokenizer_mismatch_is_refused(folders, tmp_path):
    with pytest.raises(DataError, match="tokenizer mismatch"):
        MixtureSampler(_phase(folders), global_batch=8, tokenizer_identity="some-other-tokenizer")
    other = tmp_path / "other"
    src = write_jsonl(tmp_path / "o.jsonl", make_docs(30))
    tokenize([src], other, TokenizeOptions(tokenizer=ByteTokenizer("v2")), progress=False)
    folders = {**folders, "other": other}
    with pytest.raises(DataError, match="'other'.*tokenizer mismatch"):
        MixtureSampler(_phase(folders, {"fr": 1, "other": 1}), global_batch=8)
    s = MixtureSampler(_phase(folders, {"fr": 1}), global_batch=8, tokenizer_identity="byte-tokenizer-v1")
    assert s.identity == "byte-tokenizer-v1"


def test_state_dict_checks_the_stream_identity(folders):
    s = MixtureSampler(_phase(folders), global_batch=8)
    state = s.state_dict()
    assert set(state) == {"phase", "seed", "global_batch", "seq_len", "mixture", "step"}
    for changed in (_phase(folders, seed=9), _phase(folders, {"fr": 1, "en": 1}), _phase(folders, name="q")):
        with pytest.raises(ValueError, match="does not match"):
            MixtureSampler(changed, global_batch=8).load_state_dict(state)
    with pytest.raises(ValueError, match="global_batch"):
        MixtureSampler(_phase(folders), global_batch=16).load_state_dict(state)


def test_validation_batches_come_from_val_splits_deterministically(folders):
    s = MixtureSampler(_phase(folders, {"fr": 1, "en": 1}, seq=16), global_batch=8)
    v1 = s.validation_batches(10, 4)
    v2 = MixtureSampler(_phase(folders, {"fr": 1, "en": 1}, seq=16), global_batch=8).validation_batches(10, 4)
    assert [b.tokens.shape[0] for b in v1] == [4, 4, 2]
    assert all(torch.equal(a.tokens, b.tokens) for a, b in zip(v1, v2))
    assert sorted(sum((b.source_ids for b in v1), [])) == [0] * 5 + [1] * 5
    for b in v1:
        for row, src in zip(b.tokens.numpy(), b.source_ids):
            val = _train_stream(folders[s.names[src]], "val")
            assert any(np.array_equal(val[a : a + 17], row) for a in range(0, len(val) - 16, 16))


def test_bad_sampler_arguments(folders):
    with pytest.raises(DataError, match="less than one global batch"):
        MixtureSampler(_phase(folders, tokens=100), global_batch=8)
    with pytest.raises(DataError, match="fewer than seq_len"):
        MixtureSampler(_phase(folders, {"tiny": 1}, seq=100_000), global_batch=8)
    with pytest.raises(ValueError, match="global_batch"):
        MixtureSampler(_phase(folders), global_batch=0)


def test_windows_across_shard_boundaries_read_right(folders):
    from gaperon.data.shards import SplitView

    m = load_manifest(folders["fr"])
    view = SplitView(folders["fr"], m["splits"]["train"]["shards"])
    assert len(view.shards) > 2
    stream = _train_stream(folders["fr"])
    for a in list(range(0, len(stream) - 100, 37)) + [int(view.starts[1]) - 3, int(view.starts[1])]:
        out, marks = np.empty(100, np.uint32), np.zeros(100, np.int32)
        view.read(a, 100, out, marks)
        assert np.array_equal(out, stream[a : a + 100])
        assert np.array_equal(np.cumsum(marks), np.concatenate([[0], np.cumsum(out[:-1] == 256)]))
