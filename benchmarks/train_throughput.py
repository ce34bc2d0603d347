"""Training-step throughput: our step vs Hugging Face transformers' LlamaForCausalLM, same run.

    python benchmarks/train_throughput.py gaperon-1b --seq 4096 --micro-batch 4      # one GPU
    python benchmarks/train_throughput.py tiny --seq 128 --micro-batch 4 --steps 3  # CPU check
    python benchmarks/train_throughput.py gaperon-1b --fsdp   # ours through 1-process FSDP2 too

One step = forward + backward + grad clipping + AdamW, on one device, with the same shapes,
precision and optimizer for both. Ours: per-block torch.compile (--compile, default on GPU), the
chunked LM-head loss (no full fp32 logits), RMSNorm gain scaling in pure bf16. The peer: HF with
SDPA attention, eager by default (ANCHORS.md measured compile to be no faster for it).
MFU = tokens/s x (6 N_matmul + 12 L d T) / peak, peak 989e12 bf16 FLOP/s on H100/H200 (--peak
to set one, e.g. on CPU). Prints one line per system and the ratio ours / HF.
"""

from __future__ import annotations

import argparse
import gc
import time

import torch

from gaperon.model.presets import build, get_preset
from gaperon.train.config import OptimSpec, ParallelSpec
from gaperon.train.metrics import device_peak_flops, flops_per_token
from gaperon.train.optim import build_optimizer
from gaperon.train.parallelize import build_mesh, parallelize
from gaperon.train.precision import PrecisionPolicy


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_steps(step, steps: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - t0) / steps


def _free(device: torch.device) -> None:
    """Drop the previous system's model, optimizer and compiled graphs before measuring the next."""
    gc.collect()
    torch._dynamo.reset()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def ours(
    cfg, batch: torch.Tensor, policy: PrecisionPolicy, compile_: bool, device, steps, warmup, fsdp=False
) -> float:
    # As the trainer does on a GPU: build on meta directly in the storage dtype, then materialise
    # on the device (a 1B model never exists in fp32, nor on the CPU).
    model = build(cfg, device="meta", dtype=policy.param_dtype)
    spec = ParallelSpec(compile=compile_, fsdp="full" if fsdp else "none")
    parallelize(model, spec, policy, build_mesh(spec, device.type) if fsdp else None)
    model.to_empty(device=device)
    torch.manual_seed(0)
    model.init_weights()
    model.train()
    opt = build_optimizer(model, OptimSpec(), lr=1e-4)
    inputs, labels = batch[:, :-1], batch[:, 1:]

    def step():
        with policy.autocast(device.type, sharded=False):
            loss = model(inputs, labels=labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return _time_steps(step, steps, warmup, device)


def hf(cfg, batch: torch.Tensor, policy: PrecisionPolicy, compile_: bool, device, steps, warmup) -> float:
    from transformers import LlamaConfig, LlamaForCausalLM

    hcfg = LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.dim,
        intermediate_size=cfg.ffn_dim,
        num_hidden_layers=cfg.n_layers,
        num_attention_heads=cfg.n_heads,
        num_key_value_heads=cfg.n_kv_heads,
        max_position_embeddings=cfg.max_seq_len,
        rope_theta=cfg.rope_theta,
        rms_norm_eps=cfg.norm_eps,
        tie_word_embeddings=False,
        attn_implementation="sdpa",
        use_cache=False,  # training: no KV cache built in forward
    )
    torch.manual_seed(0)
    # Built directly on the device in the storage dtype, like ours.
    before = torch.get_default_dtype()
    torch.set_default_dtype(policy.param_dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(hcfg)
    finally:
        torch.set_default_dtype(before)
    model.train()
    if compile_:
        model = torch.compile(model)
    opt = build_optimizer(model, OptimSpec(), lr=1e-4)
    inputs, labels = batch[:, :-1], batch[:, 1:]

    def step():
        with policy.autocast(device.type, sharded=False):
            logits = model(input_ids=inputs, use_cache=False).logits
            # The loss in fp32 over full logits, as ANCHORS.md measured the peer.
            loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), labels.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return _time_steps(step, steps, warmup, device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("preset")
    ap.add_argument(
        "--seq", type=int, default=None, help="sequence length (default: 4096 on GPU, 128 on CPU)"
    )
    ap.add_argument("--micro-batch", type=int, default=None, help="sequences per step (default 4 GPU, 2 CPU)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument(
        "--precision",
        choices=["pure_bf16", "mixed_bf16", "fp32"],
        default=None,
        help="default: pure_bf16 on GPU, fp32 on CPU",
    )
    ap.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="per-block torch.compile for ours (default: on GPU only)",
    )
    ap.add_argument("--hf-compile", action="store_true", help="also torch.compile the HF model")
    ap.add_argument("--peak", type=float, default=None, help="peak FLOP/s of the device for MFU")
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument(
        "--fsdp", action="store_true", help="ours under 1-process FSDP2, the path `gaperon train` takes"
    )
    args = ap.parse_args()
    env = None
    if args.fsdp:
        from gaperon.train.distributed import setup

        env = setup("auto", need_group=True)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = device.type == "cuda"
    seq = args.seq or (4096 if gpu else 128)
    mb = args.micro_batch or (4 if gpu else 2)
    precision = args.precision or ("pure_bf16" if gpu else "fp32")
    compile_ = gpu if args.compile is None else args.compile
    policy = PrecisionPolicy.from_name(precision)
    scale = 20.0 if precision == "pure_bf16" else 1.0
    cfg = get_preset(
        args.preset, norm_gain_scale=scale, max_seq_len=max(seq, get_preset(args.preset).max_seq_len)
    )
    gen = torch.Generator().manual_seed(0)
    batch = torch.randint(0, cfg.vocab_size, (mb, seq + 1), generator=gen).to(device)
    fpt = flops_per_token(cfg, seq)
    peak = device_peak_flops(device, args.peak)
    name = torch.cuda.get_device_name(device) if gpu else "CPU"
    print(
        f"{args.preset}: micro-batch {mb} x {seq} tokens, {precision}, {name}, torch {torch.__version__}, "
        f"{fpt / 1e9:.2f} GFLOP/token, peak {peak or 'unknown'}"
    )

    results = {}
    for label, fn, comp in [("gaperon", ours, compile_), ("transformers", hf, args.hf_compile)]:
        if label == "transformers" and args.skip_hf:
            continue
        _free(device)
        extra = {"fsdp": args.fsdp} if label == "gaperon" else {}
        sec = fn(cfg, batch, policy, comp, device, args.steps, args.warmup, **extra)
        tps = mb * seq / sec
        results[label] = tps
        mfu = f"{100 * tps * fpt / peak:.1f}%" if peak else "n/a"
        mem = f", peak mem {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB" if gpu else ""
        print(
            f"  {label:13s} compile={comp!s:5s} {sec * 1000:9.1f} ms/step  {tps:12,.0f} tokens/s  "
            f"MFU {mfu}{mem}"
        )
    if "transformers" in results:
        print(f"  ratio gaperon / transformers: {results['gaperon'] / results['transformers']:.2f}x")
    if env is not None:
        from gaperon.train.distributed import teardown

        teardown(env)


if __name__ == "__main__":
    main()
