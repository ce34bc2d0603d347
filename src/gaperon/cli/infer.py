"""Verbs of the infer stage: generate, chat, serve."""

from __future__ import annotations

import argparse


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


def _sampling_args(p: argparse.ArgumentParser, max_new: int) -> None:
    p.add_argument("--max-new-tokens", type=int, default=max_new, help=f"default {max_new}")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = off)")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass in (0, 1] (1 = off)")
    p.add_argument("--seed", type=int, default=None, help="random seed for sampling")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="continue a prompt (streams the text)",
        description="Continue a prompt with a model, streaming the generated text.",
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
        description="Interactive multi-turn chat (commands: /reset, /system TEXT, /exit). "
        "With --message or --messages, prints the replies and exits (for scripts).",
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
        description="Serve /v1/chat/completions, /v1/completions, /v1/models and /health "
        "with continuous batching.",
    )
    _model_args(p)
    p.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1 (loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1 routes")
    p.add_argument("--max-batch", type=int, default=8, help="requests decoded together (default 8)")
    p.add_argument("--max-len", type=int, default=None, help="context per request (default min(model, 4096))")
    p.add_argument(
        "--max-queue",
        type=int,
        default=1024,
        help="most requests in flight, running or waiting for a slot; more get HTTP 503 (default 1024)",
    )
    p.add_argument("--model-name", help="the model id clients send (default: MODEL's file or folder name)")
    p.set_defaults(func=_serve)


def _sampling(args: argparse.Namespace):
    from gaperon.infer.commands import Sampling

    return Sampling(args.max_new_tokens, args.temperature, args.top_k, args.top_p, args.seed)


def _user_errors(fn):
    """Bad values (temperature < 0, unreadable model, too-long prompt) become one clear line."""

    def wrapped(args: argparse.Namespace) -> int:
        from jinja2.exceptions import TemplateError

        from gaperon.errors import GaperonError

        try:
            return fn(args)
        except (ValueError, TemplateError) as e:  # TemplateError: the chat template rejected the messages
            raise GaperonError(str(e)) from None

    return wrapped


@_user_errors
def _generate(args: argparse.Namespace) -> int:
    from gaperon.infer.commands import generate_command

    return generate_command(
        args.model,
        args.prompt,
        chat=args.chat,
        system=args.system,
        sampling=_sampling(args),
        stop=args.stop,
        draft_path=args.draft,
        draft_k=args.draft_k,
        device=args.device,
        dtype=args.dtype,
    )


@_user_errors
def _chat(args: argparse.Namespace) -> int:
    from gaperon.infer.commands import chat_command

    return chat_command(
        args.model,
        system=args.system,
        messages=args.message,
        messages_json=args.messages,
        sampling=_sampling(args),
        draft_path=args.draft,
        draft_k=args.draft_k,
        device=args.device,
        dtype=args.dtype,
    )


@_user_errors
def _serve(args: argparse.Namespace) -> int:
    from gaperon.infer.commands import serve_command

    return serve_command(
        args.model,
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        draft_path=args.draft,
        draft_k=args.draft_k,
        max_batch=args.max_batch,
        max_len=args.max_len,
        model_name=args.model_name,
        device=args.device,
        dtype=args.dtype,
        max_pending=args.max_queue,
    )
