"""Verbs of the infer stage: generate, chat, serve."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from gaperon.cli.helptext import HelpFormatter, examples

if TYPE_CHECKING:
    from gaperon.infer.options import Sampling


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model", metavar="MODEL", help="a .gguf file, a Hugging Face Llama folder or a training run"
    )
    p.add_argument(
        "--draft", metavar="DRAFT", help="a smaller model with the same tokenizer, for speculative decoding"
    )
    p.add_argument("--draft-k", type=int, default=4, help="draft tokens proposed per step (default 4)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--dtype", default=None, help="float32, bfloat16, float16 (default: bfloat16 on GPU)")


SAMPLING_NOTE = (
    "Sampling options left out come from the model's generation_config.json (a Hugging Face folder's), "
    "else greedy decoding."
)


def _sampling_args(p: argparse.ArgumentParser, max_new: int) -> None:
    p.add_argument("--max-new-tokens", type=int, default=None, help=f"default {max_new}")
    p.add_argument("--temperature", type=float, default=None, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=None, help="keep the k most likely tokens (0 = off)")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass in (0, 1] (1 = off)")
    p.add_argument("--seed", type=int, default=None, help="random seed for sampling")
    p.add_argument("--repetition-penalty", type=float, default=None, help="> 0; 1 = off (e.g. 1.1)")
    p.add_argument("--presence-penalty", type=float, default=None, help="in [-2, 2]; 0 = off")
    p.add_argument("--frequency-penalty", type=float, default=None, help="in [-2, 2]; 0 = off")
    p.set_defaults(max_new_default=max_new)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="continue a prompt (streams the text)",
        description="Continue a prompt with a model, streaming the generated text. " + SAMPLING_NOTE,
        epilog=examples(
            'gaperon generate runs/quickstart --prompt "La capitale de la France est"',
            'gaperon generate model.gguf --chat --prompt "Quelle est la capitale ?" --temperature 0.7',
        ),
        formatter_class=HelpFormatter,
    )
    _model_args(p)
    p.add_argument("--prompt", required=True, help="the text to continue")
    p.add_argument(
        "--chat", action="store_true", help="wrap the prompt as a user message in the chat template"
    )
    p.add_argument("--system", help="system prompt (with --chat)")
    p.add_argument("--stop", action="append", default=[], metavar="TEXT", help="stop string (repeatable)")
    _sampling_args(p, 128)
    p.set_defaults(func=_generate)

    p = sub.add_parser(
        "chat",
        help="chat with a model in the terminal",
        description="Interactive multi-turn chat (commands: /help, /reset, /system TEXT, /exit). "
        "With --message or --messages, prints the replies and exits (for scripts). " + SAMPLING_NOTE,
        epilog=examples(
            'gaperon chat model.gguf --system "Answer briefly."',
            'gaperon chat runs/sft-quickstart --message "Who are you?" --message "Qui es-tu ?"',
        ),
        formatter_class=HelpFormatter,
    )
    _model_args(p)
    p.add_argument("--system", help="system prompt")
    p.add_argument(
        "--message",
        action="append",
        metavar="TEXT",
        help="a user turn; repeat for a multi-turn exchange; prints each reply",
    )
    p.add_argument(
        "--messages",
        metavar="FILE",
        help="a JSON list of {role, content} messages ('-' = stdin); prints the reply to the last one",
    )
    _sampling_args(p, 512)
    p.set_defaults(func=_chat)

    p = sub.add_parser(
        "serve",
        help="serve a model over an OpenAI-compatible HTTP API",
        description="Serve /v1/chat/completions, /v1/completions, /v1/models, /tokenize, /detokenize, "
        "/metrics and /health with continuous batching (one request at a time with --draft). The API key "
        "may also come from $GAPERON_API_KEY. Requests that leave sampling options out get the model's "
        "generation_config.json values, else the OpenAI defaults.",
        epilog=examples(
            "gaperon serve model.gguf --port 8000 --api-key-file key.txt",
            "curl localhost:8000/v1/models",
        ),
        formatter_class=HelpFormatter,
    )
    _model_args(p)
    p.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--api-key",
        help="require 'Authorization: Bearer KEY' on /v1 routes (visible in `ps`: prefer the two below)",
    )
    p.add_argument("--api-key-file", metavar="FILE", help="read the API key from the first line of FILE")
    p.add_argument("--max-batch", type=int, default=8, help="requests decoded together (default 8)")
    p.add_argument(
        "--max-len",
        type=int,
        default=None,
        help="context per request, at most the model's (default min(model, 4096))",
    )
    p.add_argument(
        "--max-queue",
        type=int,
        default=1024,
        help="most requests in flight, running or waiting for a slot; more get HTTP 503 (default 1024)",
    )
    p.add_argument("--model-name", help="the model id clients send (default: MODEL's file or folder name)")
    p.set_defaults(func=_serve)


def _sampling(args: argparse.Namespace, stop: list[str] | None = None) -> Sampling:
    """The one Sampling of this invocation, validated before anything loads (UsageError, exit 2)."""
    from gaperon.infer.commands import resolve_sampling

    given = {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "seed": args.seed,
        "repetition_penalty": args.repetition_penalty,
        "presence_penalty": args.presence_penalty,
        "frequency_penalty": args.frequency_penalty,
        "stop": tuple(stop) if stop else None,
    }
    return resolve_sampling(args.model, given, args.max_new_default)


def _check_model_args(args: argparse.Namespace) -> None:
    from gaperon.infer.commands import check_device, check_draft_k, check_dtype

    check_dtype(args.dtype)
    check_draft_k(args.draft_k)
    if args.device not in (None, "auto"):  # "auto" is resolved at load time; it needs torch
        check_device(args.device)


def _generate(args: argparse.Namespace) -> int:
    from gaperon.infer.commands import generate_command

    sampling = _sampling(args, args.stop)
    _check_model_args(args)
    return generate_command(
        args.model,
        args.prompt,
        chat=args.chat,
        system=args.system,
        sampling=sampling,
        draft_path=args.draft,
        draft_k=args.draft_k,
        device=args.device,
        dtype=args.dtype,
    )


def _chat(args: argparse.Namespace) -> int:
    from gaperon.infer.commands import chat_command

    sampling = _sampling(args)
    _check_model_args(args)
    return chat_command(
        args.model,
        system=args.system,
        messages=args.message,
        messages_json=args.messages,
        sampling=sampling,
        draft_path=args.draft,
        draft_k=args.draft_k,
        device=args.device,
        dtype=args.dtype,
    )


def _serve(args: argparse.Namespace) -> int:
    import os

    from gaperon.errors import UsageError
    from gaperon.infer.commands import bind_socket, generation_defaults, read_api_key, serve_command
    from gaperon.infer.options import Sampling

    for flag, value in (("--max-batch", args.max_batch), ("--max-queue", args.max_queue)):
        if value < 1:
            raise UsageError(f"{flag} must be >= 1, got {value}")
    if args.max_len is not None and args.max_len < 2:
        raise UsageError(f"--max-len must be >= 2, got {args.max_len}")
    api_key = read_api_key(args.api_key, args.api_key_file, dict(os.environ))
    # What a request leaves out: the model's generation_config.json, else the OpenAI defaults.
    defaults = Sampling.from_generation_config(
        generation_defaults(args.model), temperature=1.0, max_new_tokens=16
    )
    _check_model_args(args)
    sock = bind_socket(args.host, args.port)
    try:
        return serve_command(
            args.model,
            sock=sock,
            api_key=api_key,
            draft_path=args.draft,
            draft_k=args.draft_k,
            max_batch=args.max_batch,
            max_len=args.max_len,
            model_name=args.model_name,
            device=args.device,
            dtype=args.dtype,
            max_pending=args.max_queue,
            defaults=defaults,
        )
    finally:
        sock.close()
