"""Decode throughput of our engine against Hugging Face `generate()` on the same shapes, same run.

Random weights (copied into transformers' LlamaForCausalLM so both models are the same), random
prompts, greedy, a fixed number of new tokens (no early stop). Reports tokens/s at each batch size
and the ratio ours/HF. On CUDA our decode step is compiled (`torch.compile`) and replayed as captured
CUDA graphs (`--no-compile` / `--no-graphs` to measure without); `--hf-static` adds HF with a static
cache, which transformers compiles on its own on GPU (the stronger peer). Both models are built
directly on the device in the target dtype (no CPU copy: gaperon-8b is 16 GB in bf16, twice).
Timings synchronise the device before starting and before stopping the clock; every timed run
follows an untimed full-length run of the same shapes (compilation and graph capture happen there).
Usage: python benchmarks/decode_throughput.py PRESET [--batch 1 32] [--new-tokens 128] [--prompt-len 32]
e.g.   python benchmarks/decode_throughput.py tiny                 (CPU, ~1 min)
       python benchmarks/decode_throughput.py gaperon-1b --hf-static  (GPU)
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from gaperon.infer.sampling import Sampling


class _SilentTokenizer:
    """The engine assembles text; throughput does not need it."""

    stop_ids = frozenset()
    vocab_size = 1 << 30

    def decode(self, _ids, *, skip_special: bool = True) -> str:  # noqa: ARG002 - the engine passes it
        return ""


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def hf_twin(model, dtype):
    """transformers' LlamaForCausalLM with our config and our weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    c = model.cfg
    cfg = LlamaConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.dim,
        intermediate_size=c.ffn_dim,
        num_hidden_layers=c.n_layers,
        num_attention_heads=c.n_heads,
        num_key_value_heads=c.n_kv_heads,
        max_position_embeddings=c.max_seq_len,
        rope_theta=c.rope_theta,
        rms_norm_eps=c.norm_eps,
        tie_word_embeddings=c.tie_embeddings,
        attn_implementation="sdpa",
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=0,
    )
    device = next(model.parameters()).device
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build directly in the target dtype: half the peak memory at 8B
    try:
        with torch.device(device):
            hf = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(default)
    state = {
        ("lm_head.weight" if k == "lm_head.weight" else f"model.{k}"): v
        for k, v in model.state_dict().items()
    }
    missing, unexpected = hf.load_state_dict(state, strict=False)
    missing = [k for k in missing if "rotary_emb" not in k]
    if missing or unexpected:  # a silent mismatch would benchmark a different model
        raise RuntimeError(f"HF twin: missing {missing[:4]}, unexpected {unexpected[:4]}")
    return hf.eval()


def ours(engine, prompts, new_tokens: int, device) -> float:
    for p in prompts:
        engine.add_request(p, Sampling(max_new_tokens=new_tokens), stop_ids=())
    sync(device)
    t0 = time.perf_counter()
    n = 0
    while engine.has_work():
        n += sum(len(o.token_ids) for o in engine.step())
    sync(device)
    dt = time.perf_counter() - t0
    assert n == len(prompts) * new_tokens, n
    return n / dt


@torch.no_grad()
def hf(model, prompts, new_tokens: int, device, **extra) -> float:
    x = torch.tensor(prompts, device=device)
    kw = dict(
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        do_sample=False,
        pad_token_id=0,
        eos_token_id=None,
        attention_mask=torch.ones_like(x),
        **extra,
    )
    sync(device)
    t0 = time.perf_counter()
    out = model.generate(x, **kw)
    sync(device)
    dt = time.perf_counter() - t0
    assert out.shape[1] == x.shape[1] + new_tokens
    return len(prompts) * new_tokens / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("preset")
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default=None, help="default bfloat16 on GPU, float32 on CPU")
    ap.add_argument("--hf-static", action="store_true", help="also HF static cache + torch.compile (GPU)")
    ap.add_argument("--no-hf", action="store_true", help="skip the peer (ours only)")
    ap.add_argument("--no-compile", action="store_true", help="our decode step uncompiled (ablation)")
    ap.add_argument("--no-graphs", action="store_true", help="our decode step without CUDA graphs (ablation)")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch (1 avoids OpenMP stalls on a busy machine)",
    )
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from gaperon.infer.engine import Engine
    from gaperon.model import build, get_preset

    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    dtype = (
        getattr(torch, args.dtype)
        if args.dtype
        else (torch.bfloat16 if device.type == "cuda" else torch.float32)
    )
    cfg = get_preset(args.preset)
    model = build(cfg, device="meta").to(dtype)  # meta: free; then allocate once, in the target dtype
    model.to_empty(device=device)
    model.init_weights(seed=0)
    model.eval()
    hf_model = None if args.no_hf else hf_twin(model, dtype)
    max_len = args.prompt_len + args.new_tokens
    on_cuda = device.type == "cuda"
    # ONE engine for every batch size (a batch of b uses slots 0..b-1): one compilation, and the
    # CUDA graphs of each (batch, KV-length) bucket are captured once.
    engine = Engine(
        model,
        _SilentTokenizer(),
        max_batch=max(args.batch),
        max_len=max_len,
        cuda_graphs=on_cuda and not args.no_graphs,
        compile=on_cuda and not args.no_compile,
    )
    gen = torch.Generator().manual_seed(0)
    print(
        json.dumps(
            {
                "kind": "env",
                "device": str(device),
                "dtype": str(dtype),
                "preset": args.preset,
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "compile": engine._compiled,
                "cuda_graphs": engine._graphs is not None,
                "gpu": torch.cuda.get_device_name() if device.type == "cuda" else None,
            }
        )
    )
    print(
        f"{'batch':>5} {'ours tok/s':>11} {'HF tok/s':>10} {'ours/HF':>8}"
        + ("  HF static+compile" if args.hf_static else "")
    )
    for b in args.batch:
        prompts = torch.randint(0, cfg.vocab_size, (b, args.prompt_len), generator=gen).tolist()
        ours(engine, prompts, args.new_tokens, device)  # warm-up: compiles, captures every KV bucket
        a = ours(engine, prompts, args.new_tokens, device)
        row = {
            "kind": "decode",
            "preset": args.preset,
            "batch": b,
            "new_tokens": args.new_tokens,
            "ours_tok_s": round(a, 1),
            "compiled": engine._compiled,
            "graphs": len(engine._graphs.graphs) if engine._graphs is not None else 0,
        }
        line = f"{b:>5} {a:>11.1f}"
        if hf_model is not None:
            hf(hf_model, prompts, args.new_tokens, device)
            h = hf(hf_model, prompts, args.new_tokens, device)
            row.update(hf_tok_s=round(h, 1), ratio=round(a / h, 2))
            line += f" {h:>10.1f} {a / h:>8.2f}"
            if args.hf_static:
                hf(hf_model, prompts, args.new_tokens, device, cache_implementation="static")
                s = hf(hf_model, prompts, args.new_tokens, device, cache_implementation="static")
                row.update(hf_static_tok_s=round(s, 1), ratio_static=round(a / s, 2))
                line += f"  {s:.1f} (ours/that {a / s:.2f})"
        print(line)
        print(json.dumps(row))


if __name__ == "__main__":
    main()
