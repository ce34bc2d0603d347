"""Verbs about models: info, import, export."""

from __future__ import annotations

import argparse

_DTYPES = ("bf16", "fp16", "fp32")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="print a preset's parameter count and shapes")
    p.add_argument("preset", help="a preset name, e.g. gaperon-1b, gaperon-8b, tiny")
    p.set_defaults(func=_info)

    p = sub.add_parser(
        "import",
        help="convert a GGUF file or a Hugging Face Llama folder into a gaperon-normalised HF folder",
        description="Read a llama.cpp GGUF file (weights dequantised, tokenizer and chat template rebuilt "
        "from its metadata) or any Hugging Face LlamaForCausalLM folder (1 or many safetensors shards), "
        "and write a normalised Hugging Face folder that gaperon and transformers both load.",
        epilog="example: gaperon import SmolLM2-135M-Instruct.Q4_1.gguf models/smollm2 --dtype bf16",
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
        epilog="example: gaperon export runs/quickstart exports/quickstart --dtype bf16",
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
        choices=_DTYPES,
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
    from gaperon.errors import UsageError
    from gaperon.model import describe

    try:
        print(describe(args.preset))
    except KeyError as e:  # describe() names the known presets
        raise UsageError(e.args[0]) from None
    return 0


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
