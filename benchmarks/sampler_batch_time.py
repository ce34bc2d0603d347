"""Time of MixtureSampler.batch() (global batch 64 x 4096 tokens) against nanoGPT's get_batch.

The peer, measured in the same run on the same memory-mapped tokens: nanoGPT's loader (iid random
offsets, one slice per row, torch.stack), which has no mixture, no epochs, no document ids and
no exact resume. Also prints the batch time as a share of one H100 training step of gaperon-1b
at the measured 52.6k tokens/s (ANCHORS.md), to show the sampler cannot bottleneck the GPU.
Usage: python benchmarks/sampler_batch_time.py [--batch 64] [--seq 4096] [--steps 30]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

H100_TOKENS_PER_S = 52_623  # minimal plain-PyTorch Llama + compile, gaperon-1b shape (ANCHORS.md)


def make_source(root: Path, name: str, tokens: int, seed: int) -> Path:
    """A token folder of random documents (lengths 50-4000), written with the real shard writer."""
    from gaperon import atomic
    from gaperon.data import shards as fmt

    rng = np.random.default_rng(seed)
    folder = root / name
    w = fmt.SplitWriter(folder, "train", 1 << 24, [])
    val = fmt.SplitWriter(folder, "val", 1 << 24, [])
    n = 0
    while n < tokens:
        doc = rng.integers(0, 128_000, size=int(rng.integers(50, 4000)), dtype=np.uint32)
        doc[-1] = 128_001
        (val if rng.random() < 0.01 else w).add(doc, "xx", n, 0)
        n += len(doc)
    w.close_shard()
    val.close_shard()
    atomic.write_json(
        folder / fmt.MANIFEST,
        {
            "format": fmt.FORMAT,
            "version": fmt.VERSION,
            "source": name,
            "tokenizer": {"name": "random", "identity": "random", "vocab_size": 128_256, "eos_id": 128_001},
            "splits": {"train": fmt.split_summary(w.done), "val": fmt.split_summary(val.done)},
        },
    )
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--tokens", type=int, default=30_000_000, help="tokens per source (3 sources)")
    args = ap.parse_args()

    from gaperon.data.mixture import load_phase
    from gaperon.data.sampler import MixtureSampler

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        srcs = [make_source(root, n, args.tokens, i) for i, n in enumerate(("web", "code", "books"))]
        phase = load_phase(
            {
                "name": "bench",
                "seq_len": args.seq,
                "tokens": 10**12,
                "seed": 1,
                "sources": [
                    {"name": p.name, "path": str(p), "weight": w} for p, w in zip(srcs, (0.6, 0.3, 0.1))
                ],
            }
        )
        t0 = time.perf_counter()
        sampler = MixtureSampler(phase, global_batch=args.batch)
        t_init = time.perf_counter() - t0
        steps = [10**6 + 7919 * i for i in range(args.steps)]  # far into the stream, out of order
        sampler.batch(steps[0])  # first touch of the memmaps
        t0 = time.perf_counter()
        for s in steps:
            b = sampler.batch(s)
        t_ours = (time.perf_counter() - t0) / len(steps)
        assert b.tokens.shape == (args.batch, args.seq + 1)

        data = np.memmap(srcs[0] / "train" / "00000.bin", dtype=np.uint32, mode="r")
        rng = np.random.default_rng(0)

        def get_batch():  # nanoGPT train.py's loader
            ix = rng.integers(0, len(data) - args.seq - 1, size=args.batch)
            x = torch.stack([torch.from_numpy(data[i : i + args.seq].astype(np.int64)) for i in ix])
            y = torch.stack([torch.from_numpy(data[i + 1 : i + 1 + args.seq].astype(np.int64)) for i in ix])
            return x, y

        get_batch()
        t0 = time.perf_counter()
        for _ in steps:
            get_batch()
        t_peer = (time.perf_counter() - t0) / len(steps)

    step_s = args.batch * args.seq / H100_TOKENS_PER_S
    print(
        f"global batch {args.batch} x {args.seq} tokens, 3 sources x {args.tokens / 1e6:.0f}M tokens; "
        f"sampler init {t_init * 1e3:.1f} ms"
    )
    print(
        f"MixtureSampler.batch(step)        {t_ours * 1e3:8.2f} ms  "
        f"({args.batch * args.seq / t_ours / 1e6:.0f}M tok/s)"
    )
    print(
        f"nanoGPT get_batch (iid, no mix)    {t_peer * 1e3:8.2f} ms  ours / peer = "
        f"{t_ours / t_peer:.2f}x time"
    )
    print(
        f"share of one H100 gaperon-1b step ({step_s:.2f} s at {H100_TOKENS_PER_S:,} tok/s): "
        f"{t_ours / step_s:.4%}"
    )


if __name__ == "__main__":
    main()
