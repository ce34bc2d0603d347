"""What `gaperon generate`, `gaperon chat` and `gaperon serve` do, as plain functions.

Each loads the model (and the optional draft) through `gaperon.io.loading.load_model`, so every
accepted source works: a GGUF file, a Hugging Face folder, a training run.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

import torch

from gaperon.infer.sampling import Sampling


def pick_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load(path: str | Path, device: str | None = None, dtype: str | None = None):
    """(model, tokenizer) ready for inference; bf16 on GPU unless told otherwise."""
    from gaperon.io.loading import load_model

    dev = pick_device(device)
    if dtype is None and dev.type == "cuda":
        dtype = "bfloat16"
    loaded = load_model(path, device=dev, dtype=dtype)
    if loaded.tokenizer is None:
        raise ValueError(f"{path}: the model has no tokenizer, so it cannot generate text")
    return loaded.model.eval(), loaded.tokenizer


def load_draft(path: str | Path | None, device: str | None, dtype: str | None):
    return None if path is None else load(path, device, dtype)[0]


def encode_prompt(tok, text: str, chat: bool, system: str | None = None) -> list[int]:
    if chat:
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": text}
        ]
        return tok.encode_chat(messages, add_generation_prompt=True)
    from gaperon.infer.openai_api import _adds_bos

    return tok.encode(text, bos=_adds_bos(tok) and getattr(tok, "bos_id", None) is not None)


def generate_command(
    model_path: str,
    prompt: str,
    *,
    chat: bool = False,
    system: str | None = None,
    sampling: Sampling,
    stop: list[str] | None = None,
    draft_path: str | None = None,
    draft_k: int = 4,
    device: str | None = None,
    dtype: str | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Stream the continuation of `prompt` to `out` (default stdout)."""
    out, err = out or sys.stdout, err or sys.stderr
    from gaperon.infer.generate import stream

    model, tok = load(model_path, device, dtype)
    draft = load_draft(draft_path, device, dtype)
    ids = encode_prompt(tok, prompt, chat, system)
    gen = stream(
        model,
        tok,
        ids,
        max_new_tokens=sampling.max_new_tokens,
        temperature=sampling.temperature,
        top_k=sampling.top_k,
        top_p=sampling.top_p,
        seed=sampling.seed,
        stop_strings=stop or (),
        draft=draft,
        draft_k=draft_k,
    )
    for delta in gen:
        out.write(delta)
        out.flush()
    out.write("\n")
    result = gen.result
    if result is not None and result.acceptance_rate is not None:
        err.write(f"speculative decoding: acceptance rate {result.acceptance_rate:.3f}\n")
    return 0


def chat_command(
    model_path: str,
    *,
    system: str | None = None,
    messages: list[str] | None = None,
    messages_json: str | None = None,
    sampling: Sampling,
    draft_path: str | None = None,
    draft_k: int = 4,
    device: str | None = None,
    dtype: str | None = None,
    stdin: TextIO | None = None,
    out: TextIO | None = None,
) -> int:
    """Interactive chat; or, with `messages` (successive user turns) or `messages_json` (a file or '-'
    holding a [{role, content}, ...] list), print the replies and exit."""
    from gaperon.infer.chat import ChatOptions, ChatSession, run_interactive

    stdin, out = stdin or sys.stdin, out or sys.stdout
    history = _read_messages(messages_json, stdin) if messages_json is not None else None
    model, tok = load(model_path, device, dtype)
    draft = load_draft(draft_path, device, dtype)
    options = ChatOptions(**asdict(sampling), draft_k=draft_k)
    session = ChatSession(model, tok, system=system, draft=draft, options=options)
    if history is not None:
        out.write(session.complete(history) + "\n")
        return 0
    if messages:
        for text in messages:
            for delta in session.reply(text):
                out.write(delta)
                out.flush()
            out.write("\n")
        return 0
    return run_interactive(session, stdin, out)


def _read_messages(source: str, stdin: TextIO) -> list[dict]:
    name = "standard input" if source == "-" else source
    text = stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{name}: not valid JSON ({e})") from None
    if isinstance(data, dict) and "messages" in data:
        data = data["messages"]
    if not isinstance(data, list) or not data:
        raise ValueError(f"{name}: expected a non-empty JSON list of {{'role', 'content'}} messages")
    for i, m in enumerate(data):
        if (
            not isinstance(m, dict)
            or not isinstance(m.get("role"), str)
            or not isinstance(m.get("content"), str)
        ):
            raise ValueError(f"{name}: message {i} must be an object with string 'role' and 'content'")
    return data


def serve_command(
    model_path: str,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    draft_path: str | None = None,
    draft_k: int = 4,
    max_batch: int = 8,
    max_len: int | None = None,
    model_name: str | None = None,
    device: str | None = None,
    dtype: str | None = None,
    max_pending: int = 1024,
) -> int:
    """Serve the model over the OpenAI-compatible API until interrupted."""
    if max_batch < 1 or max_pending < 1:
        raise ValueError(f"--max-batch and --max-queue must be >= 1, got {max_batch} and {max_pending}")
    from gaperon.infer.server import build_engine, create_app, serve

    model, tok = load(model_path, device, dtype)
    draft = load_draft(draft_path, device, dtype)
    engine = build_engine(model, tok, max_batch=max_batch, max_len=max_len, draft=draft, draft_k=draft_k)
    name = model_name or Path(model_path).stem
    print(
        f"serving {name} on http://{host}:{port}/v1 (max batch {max_batch}, context {engine.max_len})",
        file=sys.stderr,
    )
    serve(
        create_app(engine, tok, model_name=name, api_key=api_key, max_pending=max_pending),
        host=host,
        port=port,
    )
    return 0
