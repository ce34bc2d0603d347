"""Verbs about models: info, import, export."""

from __future__ import annotations

import argparse

from gaperon.cli.helptext import HelpFormatter, examples
from gaperon.dtypes import dtype_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "info",
        help="list the presets, or describe a preset, model folder, GGUF file or training run",
        description="Without an argument, list the model presets. With one, describe it without "
        "loading weights: parameter count, shapes, dtypes, tokenizer and whether it has a chat template.",
        epilog=examples(
            "gaperon info                     # the presets",
            "gaperon info gaperon-8b          # a preset's parameter count and tensor shapes",
            "gaperon info models/smollm2      # a Hugging Face folder",
            "gaperon info SmolLM2-135M-Instruct.Q4_1.gguf",
            "gaperon info runs/quickstart     # a training run and its checkpoints",
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("model", nargs="?", metavar="MODEL", help="a preset name, model folder, .gguf or run")
    p.set_defaults(func=_info)

    p = sub.add_parser(
        "import",
        help="convert a GGUF file or a Hugging Face Llama folder into a gaperon-normalised HF folder",
        description="Read a llama.cpp GGUF file (weights dequantised, tokenizer and chat template rebuilt "
        "from its metadata) or any Hugging Face LlamaForCausalLM folder (1 or many safetensors shards), "
        "and write a normalised Hugging Face folder that gaperon and transformers both load.",
        epilog=examples(
            "gaperon import SmolLM2-135M-Instruct.Q4_1.gguf models/smollm2 --dtype bf16",
            "gaperon import path/to/hf-llama-folder models/mine --max-shard-size 500MB",
            "gaperon import models/smollm2 models/smollm2 --force   # refused: OUT may not be SRC",
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument("src", metavar="SRC", help="a .gguf file or a Hugging Face model folder")
    _add_output_args(p)
    p.set_defaults(func=_convert)

    p = sub.add_parser(
        "export",
        help="write a training run (or any loadable model) as a Hugging Face folder",
        description="Export the latest complete checkpoint of a training run directory (or a checkpoint "
        "directory inside it, a GGUF file or an HF folder) as a Hugging Face LlamaForCausalLM folder: "
        "config.json, sharded safetensors with true RMSNorm gains, generation_config.json and the "
        "tokenizer with its chat template. Load it with transformers' AutoModelForCausalLM.from_pretrained.",
        epilog=examples(
            "gaperon export runs/quickstart exports/quickstart --dtype bf16",
            "gaperon export runs/quickstart/checkpoints/000120 exports/step120",
            "gaperon export runs/quickstart exports/quickstart --force   # replace an earlier export",
        ),
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "checkpoint",
        metavar="CHECKPOINT",
        help="a training RUN_DIR, a checkpoint dir, a .gguf or an HF folder",
    )
    _add_output_args(p)
    p.set_defaults(func=_convert)


def _add_output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", metavar="OUT", help="the Hugging Face folder to write (written atomically)")
    p.add_argument(
        "--dtype",
        type=dtype_arg,
        metavar="{bf16,fp16,fp32}",
        default=None,
        help="weight dtype to write (default: the source's own; GGUF dequantises to fp32)",
    )
    p.add_argument(
        "--max-shard-size",
        default="2GB",
        help="split weights into safetensors shards of at most this size (default 2GB)",
    )
    p.add_argument("--force", action="store_true", help="replace OUT if it already exists")


def _info(args: argparse.Namespace) -> int:
    from pathlib import Path

    from gaperon.errors import UsageError
    from gaperon.model import PRESETS, describe

    if args.model is None:
        print("presets (gaperon info NAME for shapes):")
        for name, cfg in PRESETS.items():
            n = describe_size(cfg)
            size = f"{n / 1e9:.3f} B" if n >= 1e8 else f"{n / 1e6:.2f} M"
            print(f"  {name:14s} {size:>9s} parameters, dim {cfg.dim}, {cfg.n_layers} layers")
        return 0
    if args.model in PRESETS:
        print(describe(args.model))
        return 0
    if not Path(args.model).exists():
        raise UsageError(f"{args.model}: neither a preset ({', '.join(PRESETS)}) nor an existing model path")
    from gaperon.io.describe import describe_model

    print(describe_model(args.model))
    return 0


def describe_size(cfg) -> int:
    from gaperon.model import build

    return build(cfg, device="meta").num_params()


def _convert(args: argparse.Namespace) -> int:
    from gaperon.io.loading import convert_to_hf

    src = getattr(args, "src", None) or args.checkpoint
    loaded = convert_to_hf(
        src, args.out, dtype=args.dtype, max_shard_size=args.max_shard_size, overwrite=args.force
    )
    n = loaded.model.num_params()
    print(
        f"wrote {args.out}: {loaded.source} model, {n:,} parameters, "
        f"tokenizer {'included' if loaded.tokenizer is not None else 'absent'}"
    )
    return 0
